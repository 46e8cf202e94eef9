import Foundation
import Testing

/// `moe trace replay` as a user meets it: on this runtime's records (with -m) and on
/// route_trace files, in text and JSON, and its errors.
@Suite("moe trace replay on the command line")
struct TraceReplayCLITests {
    private let cli = CLITests()

    private func temporaryFile(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("moe-cli-\(UUID().uuidString)-\(name)").path
    }

    @Test("replaying a recorded offloaded run with its policy and budget gives the hits its --stats counted",
          arguments: ["lru", "lfu", "arc", "fate", "hobbit", "cycle"], ["2M", "5M"])
    func reproducesTheRuntimesHits(policy: String, budget: String) throws {
        let file = temporaryFile("routing.jsonl")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let model = cli.model("tiny-qwen3moe.q8_0.gguf")
        let r = try cli.run(["generate", "-m", model, "-p", "The history of the world in a few words", "-n", "24", "--temp", "0",
                             "--expert-memory", budget, "--expert-policy", policy, "--prefetch", "none", "--io-backend", "pread",
                             "--stats", "--record-routing", file])
        #expect(r.status == 0, "\(r.stderr)")
        let stats = try #require(r.stderr.firstMatch(of: /hit rate [0-9.]+% \((\d+) of (\d+) lookups\)/), "\(r.stderr)")
        let replay = try cli.run(["trace", "replay", file, "-m", model, "--budget", budget, "--policy", policy, "--json"])
        #expect(replay.status == 0, "\(replay.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(replay.stdout.utf8)) as? [String: Any])
        let row = try #require((o["results"] as? [[String: Any]])?.first)
        #expect(row["hits"] as? Int == Int(stats.1)!, "\(row)")
        #expect(row["lookups"] as? Int == Int(stats.2)!)
        #expect(o["experts"] as? Int == 16 && o["experts_per_token"] as? Int == 4 && o["layers"] as? Int == 3)
    }

    @Test("the shared trace's table in text, every policy and Belady, and a JSON row per policy and budget")
    func sharedTrace() throws {
        let path = CLITests.shared.appendingPathComponent("traces/gemma-4-26b-a4b.route.csv").path
        let text = try cli.run(["trace", "replay", path, "--budget", "4000M", "--policy", "lru,belady", "--decode-only"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("one token's experts over all layers: 676.4 MiB"), "\(text.stdout)")
        #expect(text.stdout.contains("lru") && text.stdout.contains("81.9%") && text.stdout.contains("92.9%"), "\(text.stdout)")
        let json = try cli.run(["trace", "replay", path, "--budget", "300M,3000M", "--policy", "lru,belady", "--json",
                                "--disk-gbps", "2", "--compute-ms", "50"])
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let rows = try #require(o["results"] as? [[String: Any]])
        #expect(rows.count == 4)
        #expect(rows.map { $0["policy"] as? String } == ["lru", "belady", "lru", "belady"])
        #expect(rows.map { $0["budget_bytes"] as? Int } == [300 << 20, 300 << 20, 3000 << 20, 3000 << 20])
        for row in rows {
            for key in ["lookups", "hits", "hit_rate", "decode_lookups", "decode_hits", "decode_hit_rate", "bytes_read",
                        "bytes_read_per_token", "tokens_per_second"] {
                #expect(row[key] != nil, "\(key) missing")
            }
        }
        #expect(rows[0]["decode_hit_rate"] as? Double == 0, "below one token's cycle LRU hits nothing")
    }

    @Test("a record without -m, a bad budget or policy, and a broken file are one clear error each")
    func errors() throws {
        let record = temporaryFile("r.jsonl")
        defer { try? FileManager.default.removeItem(atPath: record) }
        let model = cli.model("tiny-qwen3moe.q8_0.gguf")
        _ = try cli.run(["generate", "-m", model, "-p", "Hi", "-n", "2", "--record-routing", record])
        let noModel = try cli.run(["trace", "replay", record])
        #expect(noModel.status != 0 && noModel.stderr.contains("give -m MODEL"), "\(noModel.stderr)")
        let badBudget = try cli.run(["trace", "replay", record, "-m", model, "--budget", "lots"])
        #expect(badBudget.status != 0 && badBudget.stderr.contains("cannot read --budget 'lots'"), "\(badBudget.stderr)")
        let badPolicy = try cli.run(["trace", "replay", record, "-m", model, "--policy", "mru"])
        #expect(badPolicy.status != 0 && badPolicy.stderr.contains("no policy 'mru'"), "\(badPolicy.stderr)")
        let tooSmall = try cli.run(["trace", "replay", record, "-m", model, "--budget", "1K"])
        #expect(tooSmall.status != 0 && tooSmall.stderr.contains("below the pool's minimum"), "\(tooSmall.stderr)")
        let broken = temporaryFile("broken.csv")
        defer { try? FileManager.default.removeItem(atPath: broken) }
        try "# route_trace v1\n# model=m n_layer=1 n_expert=2 n_expert_used=1\n# layer=0 expert_bytes=10\nturn,phase,step,layer,slot,expert,weight,residency,expert_bytes\n0,0,0,0,0,9,0.5,0,10\n"
            .write(toFile: broken, atomically: true, encoding: .utf8)
        let bad = try cli.run(["trace", "replay", broken])
        #expect(bad.status == 1 && bad.stderr.contains("line 5: expert 9 is out of range (n_expert 2)"), "\(bad.stderr)")
    }
}

/// The replay against the runtime where fallback and warm-up come in.
@Suite("moe trace replay with fallback and warm-up")
struct TraceReplayFallbackCLITests {
    private let cli = CLITests()

    private func temporaryFile(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("moe-cli-\(UUID().uuidString)-\(name)").path
    }

    static let pack: String = {
        let cli = CLITests()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moe-cli-\(UUID().uuidString)-tiny.pack.gguf").path
        let r = try! cli.run(["pack", cli.model("tiny-qwen3moe.q8_0.gguf"), path, "--low-precision", "q4_0"])
        precondition(r.status == 0, r.stderr)
        return path
    }()

    @Test("with a pack's copies: the hits and the copies used are the runtime's for every policy",
          arguments: ["lru", "lfu", "arc", "fate", "hobbit"], ["3M", "6M"])
    func fallback(policy: String, budget: String) throws {
        let record = temporaryFile("fb.jsonl")
        defer { try? FileManager.default.removeItem(atPath: record) }
        let r = try cli.run(["generate", "-m", Self.pack, "-p", "The history of the world in a few words", "-n", "24", "--temp", "0",
                             "--expert-memory", budget, "--expert-policy", policy, "--prefetch", "none", "--io-backend", "pread",
                             "--fallback-threshold", "0.3", "--fallback-share", "0.3", "--stats", "--record-routing", record])
        #expect(r.status == 0, "\(r.stderr)")
        let hits = try #require(r.stderr.firstMatch(of: /hit rate [0-9.]+% \((\d+) of (\d+) lookups\)/), "\(r.stderr)")
        let low = try #require(r.stderr.firstMatch(of: /(\d+) of \d+ expert uses from low-precision copies/), "\(r.stderr)")
        let replay = try cli.run(["trace", "replay", record, "-m", Self.pack, "--budget", budget, "--policy", policy,
                                  "--fallback-threshold", "0.3", "--fallback-share", "0.3", "--disk-gbps", "1", "--compute-ms", "1", "--json"])
        #expect(replay.status == 0, "\(replay.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(replay.stdout.utf8)) as? [String: Any])
        let row = try #require((o["results"] as? [[String: Any]])?.first)
        #expect(row["hits"] as? Int == Int(hits.1)! && row["lookups"] as? Int == Int(hits.2)!, "\(row)")
        #expect(row["low_precision_uses"] as? Int == Int(low.1)!, "\(row)")
    }

    @Test("moe bench's figures (its timed runs, after the warm-up) are the replay's with --warmup its -n")
    func warmup() throws {
        let record = temporaryFile("bench.jsonl")
        defer { try? FileManager.default.removeItem(atPath: record) }
        let model = cli.model("tiny-qwen3moe.q8_0.gguf")
        let b = try cli.run(["bench", "-m", model, "-p", "0", "-n", "16", "-r", "2", "--expert-memory", "3M", "--expert-policy", "lfu",
                             "--prefetch", "none", "--io-backend", "pread", "--record-routing", record, "--json"])
        #expect(b.status == 0, "\(b.stderr)")
        let bench = try #require(try JSONSerialization.jsonObject(with: Data(b.stdout.utf8)) as? [String: Any])
        let replay = try cli.run(["trace", "replay", record, "-m", model, "--budget", "3M", "--policy", "lfu", "--warmup", "16",
                                  "--disk-gbps", "1", "--compute-ms", "1", "--json"])
        let o = try #require(try JSONSerialization.jsonObject(with: Data(replay.stdout.utf8)) as? [String: Any])
        let row = try #require((o["results"] as? [[String: Any]])?.first)
        #expect(row["decode_lookups"] as? Int == 2 * 16 * 3 * 4, "2 timed runs × 16 tokens × 3 layers × 4 experts")
        let rate = try #require(bench["expert_hit_rate"] as? Double)
        #expect(abs((row["decode_hit_rate"] as? Double ?? -1) - rate) < 0.00006, "\(row) against \(rate)")
        #expect(abs((row["bytes_read_per_token"] as? Double ?? -1) - Double(bench["expert_bytes_read_per_token"] as? Int ?? -1)) < 1)
    }
}
