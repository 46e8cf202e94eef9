import Foundation
import Testing

/// The `moe` executable as a user runs it: the command names, flags and output formats
/// are the interface, and bad input is one clear line on stderr with exit status 1.
@Suite("moe command line")
struct CLITests {
    static let shared: URL = {
        if let env = ProcessInfo.processInfo.environment["MOE_SHARED_DIR"] { return URL(fileURLWithPath: env) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared")
    }()

    /// The built `moe` next to this test bundle.
    static let executable: URL = {
        var dir = Bundle.main.bundleURL
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("moe")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/moe")
    }()

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    func run(_ arguments: [String]) throws -> Result {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: e, as: UTF8.self))
    }

    func model(_ name: String) -> String { Self.shared.appendingPathComponent("models/\(name)").path }

    @Test func logitsPrintsTheReferenceSchema() throws {
        let refURL = Self.shared.appendingPathComponent("reference/tiny-qwen3.f16.json")
        let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: refURL)) as! [String: Any]
        let tokens = (ref["tokens"] as! [NSNumber]).map(\.intValue)
        let r = try run(["logits", "-m", model("tiny-qwen3.f16.gguf"), "--tokens",
                         tokens.map(String.init).joined(separator: " "), "--greedy", "4", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let ours = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let logits = (ours["logits"] as! [[NSNumber]]).map { $0.map(\.floatValue) }
        let refLogits = (ref["logits"] as! [[NSNumber]]).map { $0.map(\.floatValue) }
        #expect(logits.count == 32 && logits.allSatisfy { $0.count == 512 })
        for (a, b) in zip(logits, refLogits) {
            let diff = zip(a, b).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
            let norm = b.reduce(0.0) { $0 + Double($1) * Double($1) }
            #expect((diff / norm).squareRoot() < 0.002)
        }
        #expect((ours["greedy"] as! [NSNumber]).map(\.intValue) == Array((ref["greedy"] as! [NSNumber]).map(\.intValue).prefix(4)))
    }

    @Test func tokenizePrintsIdsOnOneLine() throws {
        let vocab = Self.shared.appendingPathComponent("vocab/ggml-vocab-qwen2.gguf").path
        let r = try run(["tokenize", "-m", vocab, "--text", "Hello world"])
        #expect(r.status == 0, "\(r.stderr)")
        let line = r.stdout.trimmingCharacters(in: .newlines)
        #expect(!line.contains("\n"))
        #expect(line.split(separator: " ").allSatisfy { Int($0) != nil })
        #expect(!line.isEmpty)
    }

    @Test func generateStreamsTextAndStats() throws {
        let r = try run(["generate", "-m", model("tiny-qwen3moe.q8_0.gguf"), "-p", "Hello", "-n", "8", "--seed", "3", "--threads", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("tokens/s") && r.stderr.contains("peak memory"))
        let again = try run(["generate", "-m", model("tiny-qwen3moe.q8_0.gguf"), "-p", "Hello", "-n", "8", "--seed", "3", "--threads", "1"])
        #expect(again.stdout == r.stdout, "same seed, same text (thread count does not change results)")
    }

    @Test func benchPrintsJSON() throws {
        let r = try run(["bench", "-m", model("tiny-mixtral.q4_0.gguf"), "-p", "16", "-n", "4", "-r", "1", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect((o["prefill_tokens_per_second"] as? NSNumber)?.doubleValue ?? 0 > 0)
        #expect((o["decode_tokens_per_second"] as? NSNumber)?.doubleValue ?? 0 > 0)
        #expect((o["peak_rss_bytes"] as? NSNumber)?.intValue ?? 0 > 0)
        let decodeOnly = try run(["bench", "-m", model("tiny-mixtral.q4_0.gguf"), "-p", "0", "-n", "4", "-r", "1", "--json"])
        let d = try JSONSerialization.jsonObject(with: Data(decodeOnly.stdout.utf8)) as! [String: Any]
        #expect(d["prefill_tokens_per_second"] == nil && d["decode_tokens_per_second"] != nil)
    }

    @Test(arguments: [
        (["logits", "-m", "/nonexistent.gguf", "--tokens", "1 2"], "/nonexistent.gguf"),
        (["logits", "-m", "MODEL", "--tokens", "1 99999"], "out of range"),
        (["logits", "-m", "MODEL", "--tokens", "1 x"], "'x'"),
        (["logits", "-m", "MODEL", "--tokens", ""], "no input tokens"),
        (["generate", "-m", "MODEL", "-p", ""], "empty"),
        (["logits", "-m", "MODEL", "--ctx", "4", "--tokens", "1 2 3 4 5"], "context overflow"),
        (["bench", "-m", "MODEL", "-p", "0", "-n", "0"], "-p"),
    ])
    func badInputIsOneClearLine(arguments: [String], mention: String) throws {
        let args = arguments.map { $0 == "MODEL" ? model("tiny-llama.q4_0.gguf") : $0 }
        let r = try run(args)
        #expect(r.status != 0)
        #expect(r.stderr.contains(mention), "stderr: \(r.stderr)")
        #expect(!r.stderr.contains("Fatal error"), "crashed: \(r.stderr)")
    }
}
