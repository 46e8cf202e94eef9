import Foundation
import Testing

/// `moe trace tune` as a user meets it: the split adds up, the candidates are ranked by the
/// prediction they list, and the flags it prints run.
@Suite("moe trace tune on the command line")
struct TraceTuneCLITests {
    private let cli = CLITests()

    @Test("a record and a pack: every policy with and without gate read-ahead and fallback, best first, and its flags run")
    func recordAndPack() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moe-tune-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pack = dir.appendingPathComponent("tiny.pack.gguf").path
        let p = try cli.run(["pack", cli.model("tiny-qwen3moe.q8_0.gguf"), pack, "--low-precision", "q4_0"])
        #expect(p.status == 0, "\(p.stderr)")
        let record = dir.appendingPathComponent("r.jsonl").path
        let g = try cli.run(["generate", "-m", pack, "-p", "The history of the world in a few words", "-n", "24", "--temp", "0",
                             "--record-routing", record])
        #expect(g.status == 0, "\(g.stderr)")
        let r = try cli.run(["trace", "tune", record, "--memory", "100M", "-m", pack, "--disk-gbps", "1.5", "--compute-ms", "2",
                             "--ctx", "512", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let split = try #require(o["split"] as? [String: Int])
        #expect(split["dense_bytes"]! + split["kv_bytes"]! + split["reserve_bytes"]! + split["process_bytes"]! + split["expert_pool_bytes"]!
                == 100 << 20)
        let candidates = try #require(o["candidates"] as? [[String: Any]])
        // Every policy × (none, gate) × (off + 3 thresholds × 2 shares).
        let policies = Set(candidates.compactMap { $0["policy"] as? String })
        #expect(policies.isSuperset(of: ["lru", "lfu", "arc", "fate", "hobbit", "cycle"]))
        #expect(candidates.count == policies.count * 2 * 7)
        let speeds = candidates.compactMap { $0["predicted_tokens_per_second"] as? Double }
        #expect(speeds == speeds.sorted(by: >))
        #expect(Set(candidates.compactMap { $0["prefetch"] as? String }) == ["none", "gate"])
        #expect(candidates.contains { $0["fallback_threshold"] != nil && ($0["low_precision_uses"] as? Int ?? 0) > 0 })
        // Without read-ahead a token waits for its reads: 1 / (bytes / disk + compute).
        for c in candidates where c["prefetch"] as? String == "none" {
            let bytes = c["bytes_read_per_token"] as! Double
            let expected = 1 / (bytes / 1.5e9 + 0.002)
            #expect(abs(c["predicted_tokens_per_second"] as! Double - expected) < 1e-6 * expected)
        }
        let gate = try #require(o["gate_recall"] as? Double)
        #expect(gate > 0 && gate < 1)
        #expect((o["leaves_out"] as? [String])?.isEmpty == false)
        // The flags run.
        let flags = try #require(o["flags"] as? [String])
        #expect(flags.contains("--expert-memory") && flags.contains("--kv-memory") && flags.contains("--expert-policy"))
        let run = try cli.run(["generate", "-m", pack, "-p", "Hello", "-n", "4", "--ctx", "512"] + flags)
        #expect(run.status == 0, "\(flags): \(run.stderr)")

        let text = try cli.run(["trace", "tune", record, "--memory", "100M", "-m", pack, "--disk-gbps", "1.5", "--compute-ms", "2"])
        #expect(text.stdout.contains("run with: --expert-memory") && text.stdout.contains("the prediction leaves out:"), "\(text.stdout)")
        let tooSmall = try cli.run(["trace", "tune", record, "--memory", "70M", "-m", pack, "--disk-gbps", "1", "--compute-ms", "1"])
        #expect(tooSmall.status != 0 && tooSmall.stderr.contains("below the pool's minimum"), "\(tooSmall.stderr)")
    }

    @Test("the shared trace: the split from its dense_bytes, no read-ahead or fallback candidates, and --kv-memory counted")
    func sharedTrace() throws {
        let path = CLITests.shared.appendingPathComponent("traces/gemma-4-26b-a4b.route.csv").path
        let r = try cli.run(["trace", "tune", path, "--memory", "6G", "--kv-memory", "256M", "--disk-gbps", "1", "--compute-ms", "60",
                             "--policy", "lru,lfu", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let split = try #require(o["split"] as? [String: Int])
        #expect(split["dense_bytes"] == 1_283_484_792 && split["kv_bytes"] == 256 << 20)
        #expect((o["candidates"] as? [[String: Any]])?.count == 2)
        let noCost = try cli.run(["trace", "tune", path, "--memory", "6G"])
        #expect(noCost.status != 0 && noCost.stderr.contains("--disk-gbps and --compute-ms"), "\(noCost.stderr)")
    }
}
