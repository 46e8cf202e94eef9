import Foundation
import TestSupport
import Testing

/// `--parallel N` of `moe generate` and `moe bench`: several sequences decoding together.
@Suite("Parallel decoding flags")
struct ParallelCLITests {
    let cli = CLITests()

    @Test func generateParallelPrintsEachContinuationLabelled() throws {
        let m = cli.model("tiny-qwen3moe.q8_0.gguf")
        let r = try cli.run(["generate", "-m", m, "-p", "The quick brown fox", "-n", "8", "--parallel", "2", "--seed", "5",
                             "--threads", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count >= 2 && lines[0].hasPrefix("[1/2, seed 5] ") && lines[1].hasPrefix("[2/2, seed 6] "), "\(r.stdout)")
        #expect(r.stderr.contains("generation: 2 sequences, 16 tokens, "), "\(r.stderr)")
        #expect(r.stderr.contains("tokens/s aggregate"))
        // Continuation i samples with seed S+i, as a run of its own with that seed does.
        for (i, seed) in ["5", "6"].enumerated() {
            let alone = try cli.run(["generate", "-m", m, "-p", "The quick brown fox", "-n", "8", "--seed", seed, "--threads", "2"])
            #expect(alone.status == 0)
            #expect(String(lines[i].drop { $0 != "]" }.dropFirst(2)) == alone.stdout.dropLast(), "seed \(seed)")
        }
    }

    @Test func generateParallelWithTooLittleKVMemoryNamesTheFigures() throws {
        let r = try cli.run(["generate", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-p", "The quick brown fox", "-n", "40",
                             "--parallel", "4", "--seed", "5", "--kv-memory", "100K"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("error: KV memory exhausted: 1 blocks of 16 positions (24576 bytes each) needed, 0 can be had"),
                "\(r.stderr)")
        #expect(r.stderr.contains("4 sequences of up to 52 positions need up to 384.0 KiB of KV blocks: give --kv-memory 384.0 KiB or more"),
                "\(r.stderr)")
    }

    @Test func benchParallelReportsAggregateDecode() throws {
        let r = try cli.run(["bench", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-p", "0", "-n", "4", "-r", "1",
                             "--parallel", "3", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect((object["parallel"] as? NSNumber)?.intValue == 3)
        #expect(((object["decode_tokens_per_second"] as? NSNumber)?.doubleValue ?? 0) > 0)
        let text = try cli.run(["bench", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-p", "0", "-n", "4", "-r", "1", "--parallel", "2"])
        #expect(text.stdout.contains("decode     4 tokens × 2 sequences (aggregate): "), "\(text.stdout)")
        let bad = try cli.run(["bench", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "--parallel", "0"])
        #expect(bad.status != 0 && bad.stderr.contains("--parallel must be ≥ 1"))
    }
}
