import Foundation
import TestSupport
import Testing

/// `moe pack` and `moe inspect` on its output, as a user runs them.
@Suite("moe pack command line")
struct PackCLITests {
    private let cli = CLITests()
    func run(_ arguments: [String]) throws -> CLITests.Result { try cli.run(arguments) }
    func model(_ name: String) -> String { cli.model(name) }

    func withDirectory(_ body: (URL) throws -> Void) throws {
        try TemporaryDirectory.with(prefix: "moe-pack-cli", body)
    }

    @Test func packThenRunWithPrecisionFallback() throws {
        try withDirectory { dir in
            let out = dir.appendingPathComponent("qwen3moe.pack.gguf").path
            let pack = try run(["pack", model("tiny-qwen3moe.f16.gguf"), out, "--low-precision", "q4_0"])
            #expect(pack.status == 0, "\(pack.stderr)")
            let r = try run(["generate", "-m", out, "-p", "Hello world", "-n", "8", "--temp", "0",
                             "--expert-memory", "3M", "--fallback-threshold", "0.3", "--stats"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stderr.contains("q4_0 copies") && r.stderr.contains("for weights below 0.3"), "\(r.stderr)")
            #expect(r.stderr.contains("precision fallback: "), "\(r.stderr)")
            // A type the pack lacks is made in memory.
            let other = try run(["generate", "-m", out, "-p", "Hi", "-n", "1", "--fallback-type", "q2_K",
                                 "--expert-memory", "3M", "--stats"])
            #expect(other.status == 0, "\(other.stderr)")
            #expect(other.stderr.contains("q2_K copies made in memory"), "\(other.stderr)")
        }
    }

    @Test func packThenInspect() throws {
        try withDirectory { dir in
            let out = dir.appendingPathComponent("qwen2moe.pack.gguf").path
            let r = try run(["pack", model("tiny-qwen2moe.q4_k_m.gguf"), out, "--low-precision", "q4_0,q2_K",
                             "--low-precision", "q8_0", "--threads", "2"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("experts:    24 (8 per layer in 3 layers) at 4 precisions: 96 bundles"), "\(r.stdout)")
            #expect(r.stdout.contains("layer 2:  124.50 KiB (q4_K gate, q4_K up, q6_K down)"), "\(r.stdout)")
            #expect(r.stdout.contains("q2_K:       63.00 KiB per expert (q2_K gate, q2_K up, q2_K down)"), "\(r.stdout)")
            #expect(r.stdout.contains("file:") && r.stdout.contains("time:"))
            #expect(r.stderr.isEmpty, "no progress bar when stderr is not a terminal: \(r.stderr)")
            let size = try FileManager.default.attributesOfItem(atPath: out)[.size] as! Int
            #expect(size % 4096 == 0)

            let text = try run(["inspect", out])
            #expect(text.status == 0, "\(text.stderr)")
            #expect(text.stdout.contains("pack:          version 1, 4 precisions (native, q4_0, q2_K, q8_0)"))
            #expect(text.stdout.contains("experts:     8 per layer, 4 used per token in 3 layers"))
            #expect(text.stdout.contains("alignment 4096"))

            let json = try run(["inspect", "--json", out])
            #expect(json.status == 0, "\(json.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
            let pack = try #require(object["pack"] as? [String: Any])
            #expect(pack["expert_count"] as? Int == 8)
            #expect(pack["layers"] as? [Int] == [0, 1, 2])
            let precisions = try #require(pack["precisions"] as? [[String: Any]])
            #expect(precisions.map { $0["name"] as? String } == ["native", "q4_0", "q2_K", "q8_0"])
            let q2 = try #require(precisions[2]["layers"] as? [[String: Any]])
            #expect(q2.map { $0["bytes_per_expert"] as? Int } == [64_512, 64_512, 64_512])
        }
    }

    @Test func ctrlCRemovesTheTemporaryFile() throws {
        try withDirectory { dir in
            let out = dir.appendingPathComponent("interrupted.gguf").path
            let process = Process()
            process.executableURL = CLITests.executable
            // The slowest pack the tiny models allow (about 2 s here): five K-quant copies, one thread.
            process.arguments = ["pack", model("tiny-qwen3moe.f16.gguf"), out,
                                 "--low-precision", "q2_K,q3_K,q4_K,q5_K,q6_K", "--threads", "1"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let deadline = Date().addingTimeInterval(30)
            var started = false
            while process.isRunning, Date() < deadline {
                if !PackFixtureCLI.contents(dir).isEmpty { started = true; break }
                usleep(5_000)
            }
            guard started, process.isRunning else {
                // Finished before the temporary file was seen: nothing to interrupt.
                process.waitUntilExit()
                return
            }
            process.interrupt()
            process.waitUntilExit()
            #expect(process.terminationStatus == 130)
            #expect(PackFixtureCLI.contents(dir).isEmpty, "left: \(PackFixtureCLI.contents(dir))")
        }
    }

    @Test(arguments: [
        (["pack", "DENSE", "OUT"], "is not a Mixture-of-Experts model"),
        (["pack", "MOE", "OUT", "--low-precision", "iq2_xxs"], "iq2_xxs cannot be a low precision"),
        (["pack", "MOE", "OUT", "--low-precision", "q4_0,q4_0"], "q4_0 is given more than once"),
        (["pack", "MOE", "OUT", "--low-precision", "q5"], "unknown low-precision type 'q5'"),
        (["pack", "MOE", "OUT", "--low-precision", "q8_0"], "q8_0 is already the type of every expert matrix"),
        (["pack", "MOE", "MOE"], "is the input file"),
    ])
    func badInputIsOneClearLine(arguments: [String], mention: String) throws {
        try withDirectory { dir in
            let out = dir.appendingPathComponent("out.gguf").path
            let args = arguments.map {
                switch $0 {
                case "DENSE": return model("tiny-qwen3.q8_0.gguf")
                case "MOE": return model("tiny-qwen3moe.q8_0.gguf")
                case "OUT": return out
                default: return $0
                }
            }
            let r = try run(args)
            #expect(r.status == 1)
            #expect(r.stderr.hasPrefix("error: ") && r.stderr.contains(mention), "stderr: \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
            #expect(r.stdout.isEmpty)
            #expect(!FileManager.default.fileExists(atPath: out))
        }
    }
}

private enum PackFixtureCLI {
    static func contents(_ dir: URL) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
    }
}
