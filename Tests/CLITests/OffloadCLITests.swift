import Foundation
import Testing

/// The offloading flags as a user meets them.
@Suite("Offloading flags")
struct OffloadCLITests {
    private let cli = CLITests()

    @Test func statsReportHitRatesBytesAndTheDiskBound() throws {
        let r = try cli.run(["generate", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-p", "Hello world", "-n", "8",
                             "--temp", "0", "--expert-memory", "1M", "--expert-policy", "lru", "--stats"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("experts: 4 of 48 (216.0 KiB each) fit in 864.0 KiB"), "\(r.stderr)")
        #expect(r.stderr.contains("policy lru, prefetch none, plain GGUF"))
        #expect(r.stderr.contains("hit rate per layer: 0:"))
        #expect(r.stderr.contains("per token), ") && r.stderr.contains("GB/s while reading, I/O stall"))
        #expect(r.stderr.contains("disk bound: "))
    }

    @Test func sameTextAsTheResidentRun() throws {
        let args = ["generate", "-m", cli.model("tiny-olmoe.q8_0.gguf"), "-p", "Once upon", "-n", "12", "--temp", "0"]
        let resident = try cli.run(args)
        let offloaded = try cli.run(args + ["--expert-memory", "2M", "--expert-policy", "fate", "--prefetch", "gate", "--stats"])
        #expect(resident.status == 0 && offloaded.status == 0, "\(offloaded.stderr)")
        #expect(offloaded.stdout == resident.stdout)
        #expect(offloaded.stderr.contains("prediction: recall "), "\(offloaded.stderr)")
        #expect(offloaded.stderr.contains("prefetch gate (learning rate 0.3)"), "\(offloaded.stderr)")
        let plain = try cli.run(args + ["--expert-memory", "2M", "--prefetch", "gate", "--gate-learning", "0", "--stats"])
        #expect(plain.stdout == resident.stdout)
        #expect(plain.stderr.contains("prefetch gate, "), "\(plain.stderr)")
    }

    @Test func budgetBelowTheMinimumStatesIt() throws {
        let r = try cli.run(["generate", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-p", "Hi", "--expert-memory", "64K"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("error: --expert-memory 64.0 KiB is below the minimum of 864.0 KiB"), "\(r.stderr)")
    }

    @Test(arguments: [
        (["--expert-policy", "mru"], "The value 'mru' is invalid for '--expert-policy <expert-policy>'"),
        (["--expert-memory", "lots"], "cannot read --expert-memory 'lots'"),
        (["--prefetch", "always"], "The value 'always' is invalid for '--prefetch <prefetch>'. Please provide one of 'none', 'gate', 'adaptive', 'path' or 'near'."),
        (["--io-backend", "disk"], "The value 'disk' is invalid for '--io-backend <io-backend>'. Please provide one of 'auto', 'io_uring' or 'pread'."),
        (["--cpus", "3-1"], "cannot read CPU list '3-1'"),
        (["--fallback-threshold=-1"], "--fallback-threshold must be a routing weight >= 0"),
        (["--fallback-share", "1.5"], "--fallback-share must be between 0 and 1"),
        (["--gate-learning", "2"], "--gate-learning must be at least 0 and below 2, not 2.0"),
        (["--gate-learning=-0.1"], "--gate-learning must be at least 0 and below 2, not -0.1"),
        (["--fallback-type", "q9_9"], "--fallback-type q9_9 is not a type precision fallback can make copies in"),
        (["--fallback-type", "q8_0"], "--fallback-type q8_0 is already the type of every expert matrix"),
    ])
    func badFlagValuesAreNamed(_ flag: [String], _ message: String) throws {
        let r = try cli.run(["bench", "-m", cli.model("tiny-qwen3moe.q8_0.gguf")] + flag)
        #expect(r.status != 0)
        #expect(r.stderr.contains(message), "\(r.stderr)")
    }

    @Test func fallbackOnAPlainFileMakesCopiesInMemory() throws {
        let r = try cli.run(["generate", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-p", "Hello world", "-n", "8",
                             "--temp", "0", "--expert-memory", "2M", "--fallback-threshold", "0.3", "--fallback-share", "0.5",
                             "--stats"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("q4_0 copies made in memory"), "\(r.stderr)")
        #expect(r.stderr.contains("from copies made in memory") && r.stderr.contains("copies made in "), "\(r.stderr)")
    }

    @Test func denseModelsIgnoreTheBudgetWithANote() throws {
        let r = try cli.run(["generate", "-m", cli.model("tiny-qwen3.q8_0.gguf"), "-p", "Hi", "-n", "2",
                             "--expert-memory", "1M"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("has no routed experts; --expert-memory is ignored"))
    }

    @Test func benchJSONCarriesTheExpertFigures() throws {
        let r = try cli.run(["bench", "-m", cli.model("tiny-mixtral.q8_0.gguf"), "-p", "0", "-n", "4", "-r", "1",
                             "--expert-memory", "1M", "--stats", "--json", "--cpus", "0"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(o["decode_tokens_per_second"] is Double)
        #expect(o["expert_hit_rate"] is Double)
        #expect((o["expert_bytes_read_per_token"] as? Int).map { $0 > 0 } == true)
        #expect(o["disk_bound_tokens_per_second"] is Double)
        #expect(o["threads"] as? Int == 1, "--cpus 0 leaves one CPU, so one thread")
    }
}
