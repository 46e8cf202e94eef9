import Foundation
import GGUF
import Storage
import Testing

/// `--kv-type` and `--kv-memory` as a user meets them.
@Suite("KV flags")
struct KVCLITests {
    private let cli = CLITests()

    @Test func quantizedBlocksInAGivenMemoryReportTheirFigures() throws {
        // tiny-qwen3moe: 3 layers, keys and values 128 wide: Q8_0 is 816 bytes per token, a
        // block of 16 positions 13,056 bytes, so 1 MiB holds 80 blocks, 1280 positions.
        let r = try cli.run(["generate", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-p", "Hello world", "-n", "6",
                             "--temp", "0", "--ctx", "256", "--kv-type", "q8_0", "--kv-memory", "1M"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("kv: q8_0, 816 bytes per token (f16: 1536); pool of 1020.0 KiB (--kv-memory) "
                                  + "holds a context of up to 1280 tokens; context 256"), "\(r.stderr)")
    }

    @Test func statsAloneReportTheDefaultPool() throws {
        let r = try cli.run(["logits", "-m", cli.model("tiny-llama.q8_0.gguf"), "--tokens", "1 2 3", "--ctx", "64",
                             "--stats", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        // 64 positions and the spare block: 5 blocks of 16 × 1536 bytes.
        #expect(r.stderr.contains("kv: f16, 1536 bytes per token (f16: 1536); pool of 120.0 KiB (sized for the context) "
                                  + "holds a context of up to 80 tokens; context 64"), "\(r.stderr)")
    }

    @Test(arguments: ["q8_0", "q4_0"])
    func everyModelCommandTakesTheType(type: String) throws {
        let logits = try cli.run(["logits", "-m", cli.model("tiny-qwen3.f16.gguf"), "--tokens", "1 2 3 4", "--json",
                                  "--kv-type", type])
        #expect(logits.status == 0, "\(logits.stderr)")
        #expect(logits.stderr.contains("kv: \(type), "))
        let bench = try cli.run(["bench", "-m", cli.model("tiny-olmoe.q8_0.gguf"), "-p", "16", "-n", "4", "-r", "1",
                                 "--ctx", "64", "--kv-type", type, "--kv-memory", "256K"])
        #expect(bench.status == 0, "\(bench.stderr)")
    }

    @Test func perplexityWithQuantizedBlocks() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moe-kv-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = dir.appendingPathComponent("text.txt")
        try String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 40).write(to: text, atomically: true, encoding: .utf8)
        let r = try cli.run(["perplexity", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-f", text.path, "--ctx", "64",
                             "--chunks", "2", "--kv-type", "q4_0", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("kv: q4_0, 432 bytes per token"), "\(r.stderr)")
    }

    @Test func memoryTooSmallForTheContextStatesTheFigures() throws {
        // F16: 1536 bytes per token, blocks of 24 KiB: 64 KiB holds 2 blocks, 32 positions.
        let r = try cli.run(["generate", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "-p", "Hi", "--ctx", "100",
                             "--kv-memory", "64K"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("error: --kv-memory 64.0 KiB holds 32 positions of this model in f16 (1536 bytes per position, "
                                  + "blocks of 16 positions of 24.0 KiB), but the context asked for is 100 positions; "
                                  + "give --kv-memory 168.0 KiB or more, or --ctx 32 or less"), "\(r.stderr)")
        #expect(!r.stderr.contains("Fatal error"))
        // Without --ctx the context is the model's (512 here); below one block nothing fits.
        let tiny = try cli.run(["chat", "-m", cli.model("tiny-qwen3moe.q8_0.gguf"), "--kv-type", "q4_0", "--kv-memory", "1K"])
        #expect(tiny.status == 1)
        #expect(tiny.stderr.contains("error: --kv-memory 1.0 KiB holds 0 positions of this model in q4_0"), "\(tiny.stderr)")
        #expect(tiny.stderr.contains("the context asked for is 512 positions"), "\(tiny.stderr)")
    }

    @Test(arguments: [
        (["--kv-type", "q5_0"], "The value 'q5_0' is invalid for '--kv-type <type>'. Please provide one of 'f16', 'q8_0' or 'q4_0'."),
        (["--kv-type", "f32"], "The value 'f32' is invalid for '--kv-type <type>'"),
        (["--kv-memory", "lots"], "cannot read --kv-memory 'lots'"),
        (["--kv-memory", "0"], "cannot read --kv-memory '0'"),
    ])
    func badValuesAreNamed(_ flag: [String], _ message: String) throws {
        let r = try cli.run(["generate", "-m", cli.model("tiny-llama.q8_0.gguf"), "-p", "Hi"] + flag)
        #expect(r.status != 0)
        #expect(r.stderr.contains(message), "\(r.stderr)")
    }
}

/// A model whose heads are not a multiple of 32 wide: tiny-llama (F32) with heads of 48.
@Suite("KV flags on odd head sizes")
struct KVOddHeadTests {
    private let cli = CLITests()

    static func writeModel() throws -> String {
        let backend = try StorageFile.open(path: CLITests().model("tiny-llama.f32.gguf"), backend: .pread, direct: false)
        let file = try GGUFFile.read(from: backend)
        let copy = GGUFWriter(copying: file, from: backend)
        var writer = GGUFWriter()
        writer.metadata = copy.metadata
        writer.metadata["llama.attention.key_length"] = .uint32(48)
        writer.metadata["llama.attention.value_length"] = .uint32(48)
        writer.metadata["llama.rope.dimension_count"] = .uint32(48)
        var rng = UInt64(12345)
        func weights(_ count: Int) -> [UInt8] {
            var out = [UInt8]()
            out.reserveCapacity(count * 4)
            for _ in 0..<count {
                rng = rng &* 6364136223846793005 &+ 1442695040888963407
                let v = (Float(rng >> 40) / Float(1 << 24) - 0.5) * 0.1
                withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 }
            }
            return out
        }
        for t in copy.tensors {
            let shape: [UInt64]? = t.name.hasSuffix("attn_q.weight") ? [256, 192]
                : t.name.hasSuffix("attn_k.weight") || t.name.hasSuffix("attn_v.weight") ? [256, 96]
                : t.name.hasSuffix("attn_output.weight") ? [192, 256] : nil
            if let shape {
                try writer.addTensor(name: t.name, dimensions: shape, type: .f32,
                                     source: .bytes(weights(Int(shape[0] * shape[1]))))
            } else {
                try writer.addTensor(name: t.name, dimensions: t.dimensions, type: t.type, source: t.source)
            }
        }
        let path = NSTemporaryDirectory() + "moe-kv-heads48-\(getpid()).gguf"
        try writer.write(to: path)
        return path
    }

    @Test func aTypeTheHeadsDoNotFitIsRefused() throws {
        let path = try Self.writeModel()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let f16 = try cli.run(["generate", "-m", path, "-p", "Hi", "-n", "2", "--kv-type", "f16"])
        #expect(f16.status == 0, "\(f16.stderr)")
        #expect(f16.stderr.contains("kv: f16, 1152 bytes per token"), "\(f16.stderr)")
        let q8 = try cli.run(["generate", "-m", path, "-p", "Hi", "-n", "2", "--kv-type", "q8_0"])
        #expect(q8.status == 1)
        #expect(q8.stderr.contains("error: --kv-type q8_0: KV type q8_0 stores rows in blocks of 32 values per head, "
                                   + "but this model's heads are 48 (keys) and 48 (values) wide; use f16"), "\(q8.stderr)")
        #expect(!q8.stderr.contains("Fatal error"))
    }
}
