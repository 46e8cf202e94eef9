import Foundation
import TestSupport
import Testing

/// The `moe` executable as a user runs it: the command names, flags and output formats
/// are the interface, and bad input is one clear line on stderr with exit status 1.
@Suite("moe command line")
struct CLITests {
    static let shared = SharedData.root

    /// The built `moe` next to this test bundle.
    static let executable = moeExecutable

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `moe` with `arguments`, `input` (if any) piped to its standard input.
    func run(_ arguments: [String], input: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let stdin = input.map { _ in Pipe() }
        if let stdin { process.standardInput = stdin }
        try process.run()
        if let stdin, let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try stdin.fileHandleForWriting.close()
        }
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

/// `moe chat` in a real terminal: a pseudo-terminal made by util-linux's `script`, so
/// Ctrl-C goes through the terminal's line discipline as SIGINT, as when a person presses it.
@Suite("moe chat in a terminal")
struct ChatTerminalTests {
    /// Collects everything the terminal shows, from a background reader.
    final class Screen: @unchecked Sendable {
        private let lock = NSLock()
        private var data = Data()
        func append(_ d: Data) { lock.lock(); data.append(d); lock.unlock() }
        var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }

        /// Waits until `predicate` holds for the screen text (false after `seconds`).
        func wait(seconds: Double = 30, _ predicate: (String) -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if predicate(text) { return true }
                usleep(20_000)
            }
            return predicate(text)
        }
    }

    @Test func ctrlCStopsTheReplyNotTheProgram() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { return }
        let model = CLITests.shared.appendingPathComponent("models/tiny-qwen3moe.f16.gguf").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        // `exec`: script runs the command through $SHELL; a shell left waiting in between (dash
        // as /bin/sh) also gets the terminal's SIGINT and would end with status 130 after us.
        process.arguments = ["-qfec", "exec '\(CLITests.executable.path)' chat -m '\(model)' -n 400 --temp 0", "/dev/null"]
        var environment = ProcessInfo.processInfo.environment
        environment["MOE_CHAT_PIECE_DELAY_MS"] = "20"
        process.environment = environment
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        let screen = Screen()
        output.fileHandleForReading.readabilityHandler = { h in screen.append(h.availableData) }
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        let keys = input.fileHandleForWriting

        #expect(screen.wait { $0.contains("> ") }, "no prompt: \(screen.text)")
        keys.write(Data("Hello\r".utf8))
        // The reply streams (the echo of "Hello" plus more text), then Ctrl-C stops it.
        let before = screen.text.count
        #expect(screen.wait { $0.count > before + 40 }, "no reply: \(screen.text)")
        keys.write(Data([0x03]))
        #expect(screen.wait { $0.contains("[stopped]") }, "Ctrl-C did not stop the reply: \(screen.text)")
        #expect(process.isRunning, "Ctrl-C ended the program")

        keys.write(Data("/reset\r".utf8))
        #expect(screen.wait { $0.contains("[conversation reset]") }, "\(screen.text)")
        keys.write(Data([0x04]))  // Ctrl-D at an empty prompt: end of input
        let deadline = Date().addingTimeInterval(20)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!process.isRunning)
        #expect(process.terminationStatus == 0)
    }

    /// Piped input works too: one line per message, replies on stdout.
    @Test func pipedConversation() throws {
        let model = CLITests.shared.appendingPathComponent("models/tiny-qwen3moe.f16.gguf").path
        let process = Process()
        process.executableURL = CLITests.executable
        process.arguments = ["chat", "-m", model, "-n", "8", "--temp", "0"]
        let input = Pipe(), out = Pipe(), err = Pipe()
        process.standardInput = input
        process.standardOutput = out
        process.standardError = err
        try process.run()
        input.fileHandleForWriting.write(Data("Hello\n/bogus\nSecond message\n/reset\nThird\n".utf8))
        try input.fileHandleForWriting.close()
        let o = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(e)")
        #expect(o.split(separator: "\n", omittingEmptySubsequences: false).count >= 3, "three replies: \(o)")
        #expect(e.contains("unknown command /bogus"))
        #expect(e.contains("[conversation reset]"))
    }
}
