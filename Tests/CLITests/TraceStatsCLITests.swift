import Foundation
import Testing

/// `moe trace stats` as a user meets it.
@Suite("moe trace stats on the command line")
struct TraceStatsCLITests {
    private let cli = CLITests()

    @Test("on this runtime's record: the gate's recall is routing-recall's, and every section is printed")
    func record() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("moe-cli-\(UUID().uuidString)-r.jsonl").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let model = cli.model("tiny-qwen3moe.q8_0.gguf")
        let g = try cli.run(["generate", "-m", model, "-p", "The history of the world in a few words", "-n", "16", "--temp", "0",
                             "--record-routing", file])
        #expect(g.status == 0, "\(g.stderr)")
        let json = try cli.run(["trace", "stats", file, "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(o["experts"] as? Int == 16 && o["experts_per_token"] as? Int == 4 && o["layers"] as? Int == 3)
        #expect(o["sequences"] as? Int == 1)
        let overall = try #require(o["overall"] as? [String: Any])
        let recall = try cli.run(["trace", "routing-recall", file, "--json"])
        let r = try #require(try JSONSerialization.jsonObject(with: Data(recall.stdout.utf8)) as? [String: Any])
        let gate = try #require((r["overall"] as? [String: Any])?["gate"] as? Double)
        #expect(abs((overall["gate_recall"] as? Double ?? -1) - gate) < 1e-12, "\(overall["gate_recall"] ?? "nil") against \(gate)")
        #expect((o["per_layer"] as? [[String: Any]])?.count == 3)
        #expect((overall["sch"] as? [[String: Any]])?.count == 5 * 3, "5 segment lengths × cache sizes 4, 8, 16")
        #expect((overall["overlap"] as? [[String: Any]])?.count == 8)

        let text = try cli.run(["trace", "stats", file, "--decode-only"])
        #expect(text.status == 0, "\(text.stderr)")
        for heading in ["use: distinct experts", "overlap:", "SRP(m):", "SCH(m, c)", "gate"] {
            #expect(text.stdout.contains(heading), "\(heading) missing: \(text.stdout)")
        }
    }

    @Test("the shared trace's stats, and bad arguments are one clear error each")
    func sharedTraceAndErrors() throws {
        let path = CLITests.shared.appendingPathComponent("traces/gemma-4-26b-a4b.route.csv").path
        let r = try cli.run(["trace", "stats", path, "--segments", "4,16", "--cache-sizes", "6,12"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("157 tokens in 1 sequence") && r.stdout.contains("c=12"), "\(r.stdout)")
        #expect(r.stdout.contains("the record holds no cross-layer predictions"))
        let small = try cli.run(["trace", "stats", path, "--cache-sizes", "2"])
        #expect(small.status != 0 && small.stderr.contains("cannot hold one token's 6"), "\(small.stderr)")
        let bad = try cli.run(["trace", "stats", path, "--segments", "0,x"])
        #expect(bad.status != 0 && bad.stderr.contains("--segments: '0' is not a whole number"), "\(bad.stderr)")
        let missing = try cli.run(["trace", "stats", "/nonexistent.jsonl"])
        #expect(missing.status != 0 && missing.stderr.contains("/nonexistent.jsonl"), "\(missing.stderr)")
    }
}
