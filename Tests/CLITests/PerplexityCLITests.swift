import Foundation
import TestSupport
import Testing

/// `moe perplexity --kl-base` and `--kl-compare` as a user runs them.
@Suite("moe perplexity KL divergence")
struct PerplexityKLCLITests {
    private let cli = CLITests()
    static let heldOut = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("models/heldout.txt")

    /// A directory holding `text.txt` (a slice of models/heldout.txt) and `other.txt` (the next slice).
    func withDirectory(_ body: (URL) throws -> Void) throws {
        try TemporaryDirectory.with(prefix: "moe-kl-cli") { dir in
            let text = try Data(contentsOf: Self.heldOut)
            try text.subdata(in: 0..<3000).write(to: dir.appendingPathComponent("text.txt"))
            try text.subdata(in: 3000..<6000).write(to: dir.appendingPathComponent("other.txt"))
            try body(dir)
        }
    }

    func contents(_ dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
    }

    func perplexity(_ model: String, _ dir: URL, text: String = "text.txt", _ extra: [String]) throws -> CLITests.Result {
        try cli.run(["perplexity", "-m", cli.model(model), "-f", dir.appendingPathComponent(text).path,
                     "--ctx", "32", "--chunks", "3", "--threads", "2"] + extra)
    }

    func json(_ r: CLITests.Result) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    }

    /// A base, then the same model compared with it, resident and offloaded: KL ~0, the same
    /// top token everywhere, the base's perplexity recomputed.
    @Test func aRunComparedWithItsOwnBase() throws {
        try withDirectory { dir in
            let base = dir.appendingPathComponent("base.klb").path
            let made = try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-base", base])
            #expect(made.status == 0, "\(made.stderr)")
            #expect(made.stdout.contains("saved base:     45 positions to \(base) ("), "\(made.stdout)")
            #expect(contents(dir) == ["base.klb", "other.txt", "text.txt"])

            for offload in [[], ["--expert-memory", "1M"]] {
                let r = try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-compare", base, "--json"] + offload)
                #expect(r.status == 0, "\(r.stderr)")
                let o = try json(r)
                let kl = try #require(o["kl_divergence"] as? [String: Any])
                #expect(kl["positions"] as? Int == 45)
                #expect((kl["mean"] as? Double).map { $0 >= 0 && $0 < 1e-4 } == true, "\(kl)")
                #expect((kl["max"] as? Double).map { $0 < 1e-4 } == true, "\(kl)")
                #expect(kl["same_top_token"] as? Double == 1)
                #expect(kl["base_model"] as? String == "tiny-qwen3moe.q8_0.gguf")
                #expect((kl["perplexity_change_percent"] as? Double).map { abs($0) < 0.1 } == true, "\(kl)")
                let ppl = try #require(o["perplexity"] as? Double), basePPL = try #require(kl["base_perplexity"] as? Double)
                #expect(abs(ppl - basePPL) / ppl < 1e-3)
                for key in ["mean_error", "median", "p99", "base_perplexity_error"] { #expect(kl[key] is Double, "\(key)") }
            }
        }
    }

    /// A base made from the f16 file, the q4_0 file compared with it; both flags at once
    /// (the new base replaces the old file), text output.
    @Test func anotherQuantizationAgainstTheF16Base() throws {
        try withDirectory { dir in
            let base = dir.appendingPathComponent("f16.klb").path
            #expect(try perplexity("tiny-qwen3moe.f16.gguf", dir, ["--kl-base", base]).status == 0)
            let r = try perplexity("tiny-qwen3moe.q4_0.gguf", dir, ["--kl-compare", base, "--kl-base", base])
            #expect(r.status == 0, "\(r.stderr)")
            let lines = r.stdout.split(separator: "\n").map(String.init)
            #expect(lines.contains { $0.hasPrefix("kl base:        \(base) (made by tiny-qwen3moe.f16.gguf, ") }, "\(r.stdout)")
            #expect(lines.contains { $0.hasPrefix("base perplexity: ") && $0.contains("; change ") }, "\(r.stdout)")
            #expect(lines.contains { $0.hasPrefix("same top token: ") }, "\(r.stdout)")
            let klLine = try #require(lines.first { $0.hasPrefix("KL divergence:  mean ") }, "\(r.stdout)")
            let mean = try #require(Double(klLine.dropFirst("KL divergence:  mean ".count).prefix { $0 != " " }))
            #expect(mean > 1e-4 && mean < 0.1, "\(klLine)")
            #expect(contents(dir) == ["f16.klb", "other.txt", "text.txt"])

            // The base now holds the q4_0 run: compared with it, q4_0 is at KL ~0.
            let again = try perplexity("tiny-qwen3moe.q4_0.gguf", dir, ["--kl-compare", base, "--json"])
            #expect(again.status == 0, "\(again.stderr)")
            let kl = try #require(try json(again)["kl_divergence"] as? [String: Any])
            #expect((kl["mean"] as? Double).map { $0 < 1e-4 } == true, "\(kl)")
            #expect(kl["base_model"] as? String == "tiny-qwen3moe.q4_0.gguf")
        }
    }

    /// Each refusal is one line on stderr naming the file and the problem.
    @Test func mismatchesAndDamageAreOneClearLine() throws {
        try withDirectory { dir in
            let base = dir.appendingPathComponent("base.klb").path
            #expect(try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-base", base]).status == 0)
            let good = try Data(contentsOf: URL(fileURLWithPath: base))
            func refused(_ r: CLITests.Result, _ mention: String) {
                #expect(r.status == 1)
                #expect(r.stderr.hasPrefix("error: \(base): ") && r.stderr.contains(mention), "stderr: \(r.stderr)")
                #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
                #expect(r.stdout.isEmpty)
            }
            refused(try perplexity("tiny-qwen3moe.q8_0.gguf", dir, text: "other.txt", ["--kl-compare", base]),
                    "the base was made on other tokens")
            refused(try cli.run(["perplexity", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-f", dir.appendingPathComponent("text.txt").path,
                                 "--ctx", "16", "--chunks", "3", "--kl-compare", base]),
                    "the base was made with --ctx 32, this run uses --ctx 16")
            refused(try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-compare", base, "--chunks", "2"]),
                    "the base has 3 chunks, this run evaluates 2")

            var corrupted = [UInt8](good)
            corrupted[1000] ^= 0x40
            try Data(corrupted).write(to: URL(fileURLWithPath: base))
            refused(try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-compare", base]), "checksum mismatch")
            try good.prefix(5000).write(to: URL(fileURLWithPath: base))
            refused(try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-compare", base]), "truncated: 5000 bytes where the header announces \(good.count)")
            try Data("not a base".utf8).write(to: URL(fileURLWithPath: base))
            refused(try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-compare", base]), "not a KL base file")
            try FileManager.default.removeItem(atPath: base)
            refused(try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-compare", base]), "cannot open")
        }
    }

    /// A run that fails leaves an existing file as it was and no temporary file.
    @Test func aFailedRunLeavesTheOldBase() throws {
        try withDirectory { dir in
            let base = dir.appendingPathComponent("base.klb").path
            let old = Data("an older base".utf8)
            try old.write(to: URL(fileURLWithPath: base))
            // Too short a text for --ctx 1024: refused before anything is written.
            let r = try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-base", base, "--ctx", "1024"])
            #expect(r.status == 1 && r.stderr.hasPrefix("error: "), "\(r.stderr)")
            // A comparison that cannot start: the base to write is left alone.
            let missing = dir.appendingPathComponent("missing.klb").path
            let r2 = try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-compare", missing, "--kl-base", base])
            #expect(r2.status == 1 && r2.stderr.contains("cannot open"), "\(r2.stderr)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: base)) == old)
            #expect(contents(dir) == ["base.klb", "other.txt", "text.txt"])
            let nowhere = try perplexity("tiny-qwen3moe.q8_0.gguf", dir, ["--kl-base", dir.appendingPathComponent("no/base.klb").path])
            #expect(nowhere.status == 1 && nowhere.stderr.contains("cannot create"), "\(nowhere.stderr)")
        }
    }
}
