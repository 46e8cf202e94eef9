import Foundation
import Testing

/// `--record-routing` and `moe trace routing-recall` as a user meets them.
@Suite("Routing records on the command line")
struct TraceCLITests {
    private let cli = CLITests()

    private func temporaryFile(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("moe-cli-\(UUID().uuidString)-\(name)").path
    }

    @Test func generateRecordsEveryTokenAtEveryLayerAndTraceReadsIt() throws {
        let file = temporaryFile("routing.jsonl")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let args = ["generate", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-p", "Hello world", "-n", "6", "--temp", "0"]
        let plain = try cli.run(args)
        let r = try cli.run(args + ["--record-routing", file])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == plain.stdout, "recording changes nothing generated")

        let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map(String.init)
        let header = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(header["format"] as? String == "moe-routing" && header["version"] as? Int == 1)
        #expect(header["model"] as? String == cli.model("tiny-qwen3moe.q8_0.gguf"))
        #expect(header["moe_layers"] as? [Int] == [0, 1, 2] && header["experts"] as? Int == 16
                && header["experts_per_token"] as? Int == 4 && header["architecture"] as? String == "qwen3moe")
        // The prompt's tokens, then each generated token but the last (which is never fed
        // back), at each of the 3 layers.
        let prompt = try #require(r.stderr.firstMatch(of: /prompt: (\d+) tokens/).map { Int($0.1)! })
        let generated = try #require(r.stderr.firstMatch(of: /generation: (\d+) tokens/).map { Int($0.1)! })
        let evaluated = prompt + generated - 1
        #expect(lines.count - 1 == 3 * evaluated)
        let last = try #require(try JSONSerialization.jsonObject(with: Data(lines.last!.utf8)) as? [String: Any])
        #expect(last["pos"] as? Int == evaluated - 1 && last["layer"] as? Int == 2)
        #expect((last["predicted"] as? [Int])?.count == 4 && (last["predicted_probs"] as? [Double])?.count == 16)

        let table = try cli.run(["trace", "routing-recall", file])
        #expect(table.status == 0, "\(table.stderr)")
        #expect(table.stdout.contains("\(evaluated) tokens, \(2 * evaluated) layer predictions"), "\(table.stdout)")
        #expect(table.stdout.contains("layer    gate    path  a=0.10"))
        #expect(table.stdout.contains("  all ") && table.stdout.contains("best mix: a = "))

        let json = try cli.run(["trace", "routing-recall", file, "--json", "--weights", "0.5", "--predict", "16"])
        #expect(json.status == 0, "\(json.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(o["weights"] as? [Double] == [0.5] && o["predicted_per_token"] as? Int == 16)
        let overall = try #require(o["overall"] as? [String: Any])
        #expect(overall["gate"] as? Double == 1, "naming every expert finds every one")
        #expect((o["layers"] as? [[String: Any]])?.compactMap { $0["layer"] as? Int } == [1, 2])
    }

    @Test func perplexityAndBenchTakeTheFlagToo() throws {
        let file = temporaryFile("bench.jsonl")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = try cli.run(["bench", "-m", cli.model("tiny-olmoe.q8_0.gguf"), "-p", "4", "-n", "2", "-r", "1",
                             "--expert-memory", "2M", "--record-routing", file])
        #expect(r.status == 0, "\(r.stderr)")
        // Warm-up and one timed run: 2 × (4 + 2) tokens at 3 layers, and the header.
        let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 1 + 2 * 6 * 3)
    }

    @Test func recordsSeedThePathPrefetchOfTheSameModelOnly() throws {
        let file = temporaryFile("seed.jsonl")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let model = cli.model("tiny-qwen3moe.q8_0.gguf")
        let record = try cli.run(["generate", "-m", model, "-p", "Once upon a time", "-n", "8", "--temp", "0", "--record-routing", file])
        #expect(record.status == 0, "\(record.stderr)")
        let resident = try cli.run(["generate", "-m", model, "-p", "Hello", "-n", "6", "--temp", "0"])
        let seeded = try cli.run(["generate", "-m", model, "-p", "Hello", "-n", "6", "--temp", "0", "--expert-memory", "2M",
                                  "--prefetch", "path", "--path-records", file, "--stats"])
        #expect(seeded.status == 0, "\(seeded.stderr)")
        #expect(seeded.stdout == resident.stdout)
        #expect(seeded.stderr.contains("prediction: recall "), "\(seeded.stderr)")
        let other = try cli.run(["generate", "-m", cli.model("tiny-olmoe.q8_0.gguf"), "-p", "Hello", "-n", "2",
                                 "--expert-memory", "2M", "--prefetch", "path", "--path-records", file])
        #expect(other.status == 1)
        #expect(other.stderr.contains("records another model's routing"), "\(other.stderr)")
        let unused = try cli.run(["generate", "-m", model, "-p", "Hi", "-n", "1", "--path-records", file])
        #expect(unused.status != 0)
        #expect(unused.stderr.contains("--path-records seeds --prefetch path"), "\(unused.stderr)")
    }

    @Test func denseModelsRecordNothingWithANote() throws {
        let file = temporaryFile("dense.jsonl")
        let r = try cli.run(["generate", "-m", cli.model("tiny-qwen3.q8_0.gguf"), "-p", "Hi", "-n", "2", "--record-routing", file])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("has no routed experts; --record-routing is ignored"))
        #expect(!FileManager.default.fileExists(atPath: file))
    }

    @Test(arguments: [
        (["generate", "-m", "MODEL", "-p", "Hi", "-n", "1", "--record-routing", "/nonexistent-dir/r.jsonl"],
         "error: cannot create routing record '/nonexistent-dir/r.jsonl': No such file or directory"),
        (["generate", "-m", "MODEL", "-p", "Hi", "-n", "4", "--record-routing", "/dev/full"],
         "error: writing routing record '/dev/full' failed: No space left on device"),
        (["trace", "routing-recall", "/nonexistent.jsonl"], "error: cannot read routing record '/nonexistent.jsonl'"),
        (["trace", "routing-recall", "MODEL"], "is not a routing record"),
        (["trace", "routing-recall", "RECORD", "--weights", "2"], "--weights: '2' is not a number in [0, 1]"),
    ])
    func badRecordsAndFlagsAreOneClearLine(arguments: [String], message: String) throws {
        let record = temporaryFile("ok.jsonl")
        defer { try? FileManager.default.removeItem(atPath: record) }
        try Data("{\"format\":\"moe-routing\",\"version\":1,\"model\":\"m\",\"architecture\":\"a\",\"layers\":2,\"moe_layers\":[0,1],\"experts\":4,\"experts_per_token\":1}\n".utf8)
            .write(to: URL(fileURLWithPath: record))
        let args = arguments.map { $0 == "MODEL" ? cli.model("tiny-qwen3moe.q8_0.gguf") : $0 == "RECORD" ? record : $0 }
        let r = try cli.run(args)
        #expect(r.status != 0)
        #expect(r.stderr.contains(message), "stderr: \(r.stderr)")
        #expect(!r.stderr.contains("Fatal error"), "crashed: \(r.stderr)")
    }
}
