import Foundation
import GGUF
import Storage
import Testing

@Suite("GGUF reader on llama.cpp's files")
struct ReaderTests {
    @Test("every shared model and vocab file opens and validates", arguments: Shared.all)
    func opensEveryFile(path: String) throws {
        let file = try GGUFFile.open(path: path)
        #expect(file.version == 3)
        #expect(file.fileSize == UInt64(try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int))
        #expect(file.dataOffset % UInt64(file.alignment) == 0)
        for t in file.tensors {
            #expect(t.absoluteOffset + t.byteCount <= file.fileSize)
        }
        // Described without error (its renderings are `moe inspect`'s: moeTests).
        let d = ModelDescription(file)
        #expect(d.tensors.count == file.tensors.count)
    }

    @Test("both backends parse identically", arguments: [StorageBackendPreference.ioUring, .pread])
    func backendsAgree(backend: StorageBackendPreference) throws {
        let path = Shared.model("tiny-qwen3moe.q4_k_m.gguf")
        let a = try GGUFFile.open(path: path, backend: backend)
        let b = try parse(readBytes(path))
        #expect(a.metadata == b.metadata)
        #expect(a.tensors == b.tensors)
    }

    @Test("tiny-qwen3moe metadata and tensor table hold what llama.cpp wrote")
    func qwen3moeSpotCheck() throws {
        let f = try GGUFFile.open(path: Shared.model("tiny-qwen3moe.q4_k_m.gguf"))
        #expect(f.architecture == "qwen3moe")
        #expect(f.metadata.count == 25)
        #expect(f.tensors.count == 39)
        #expect(f.metadata["qwen3moe.expert_count"] == .uint32(16))
        #expect(f.metadata["qwen3moe.expert_used_count"]?.integer == 4)
        #expect(f.metadata["qwen3moe.embedding_length"]?.integer == 256)
        #expect(f.metadata["qwen3moe.rope.freq_base"] == .float32(1_000_000))
        #expect(f.metadata["qwen3moe.attention.layer_norm_rms_epsilon"] == .float32(1e-6))
        #expect(f.metadata["general.file_type"]?.integer == 15)
        #expect(f.metadata["tokenizer.ggml.pre"]?.string == "gpt-2")
        #expect(f.metadata["tokenizer.ggml.tokens"]?.array?.count == 512)

        let norm = try #require(f.tensor(named: "blk.0.attn_norm.weight"))
        #expect(norm.type == .f32)
        #expect(norm.dimensions == [256])
        #expect(norm.absoluteOffset == 214_944)
        let storage = try StorageFile.open(path: f.path)
        let data = try f.readData(of: norm, from: storage)
        #expect(Array(data.prefix(8)) == [0x7b, 0xb0, 0x79, 0x3f, 0x31, 0x62, 0xa6, 0x3f])

        let gate = try #require(f.tensor(named: "blk.0.ffn_gate_exps.weight"))
        #expect(gate.dimensions == [256, 256, 16])
        let layout = try #require(ModelDescription(f).experts)
        #expect(layout.expertCount == 16)
        #expect(layout.expertsUsedPerToken == 4)
        #expect(layout.layers.count == 3)
        let expertTotal = f.tensors.filter { $0.name.contains("_exps.") }.reduce(0) { $0 + $1.byteCount }
        #expect(layout.totalExpertBytes == expertTotal)
        #expect(layout.totalExpertBytes + layout.nonExpertBytes == f.tensorBytes)
    }

    @Test("weights a decoded token reads: one embedding row, the used experts, every other tensor",
          arguments: ["tiny-qwen3moe.q8_0.gguf", "tiny-mixtral.q4_k_m.gguf", "tiny-qwen2moe.q8_0.gguf", "tiny-llama.q8_0.gguf"])
    func weightBytesPerDecodedToken(name: String) throws {
        let f = try GGUFFile.open(path: Shared.model(name))
        let used = UInt64(f.metadata["\(f.architecture!).expert_used_count"]?.integer ?? 0)
        var expected: UInt64 = 0
        for t in f.tensors {
            if t.name.contains("_exps.") {
                expected += t.byteCount / t.dimensions.last! * used
            } else if t.name == "token_embd.weight" && f.tensor(named: "output.weight") != nil {
                expected += t.byteCount / t.dimensions[1]
            } else {
                expected += t.byteCount
            }
        }
        #expect(ModelDescription(f).weightBytesPerDecodedToken == expected)
        #expect(expected < f.tensorBytes)
    }

    @Test("qwen2moe shared expert is counted apart from routed experts")
    func qwen2moeSharedExpert() throws {
        let f = try GGUFFile.open(path: Shared.model("tiny-qwen2moe.q8_0.gguf"))
        let layout = try #require(ModelDescription(f).experts)
        #expect(layout.expertCount == 8)
        #expect(layout.sharedExpertBytes == f.tensors.filter { $0.name.contains("_shexp") }.reduce(0) { $0 + $1.byteCount })
        #expect(layout.sharedExpertBytes > 0)
    }

    @Test("vocab files: tokenizer model, counts and special ids",
          arguments: [
              ("ggml-vocab-llama-spm.gguf", "llama", 32000, 0, Int64(1), "<0x61>"),
              ("ggml-vocab-phi-3.gguf", "llama", 32064, 0, Int64(1), "<0x61>"),
              ("ggml-vocab-llama-bpe.gguf", "gpt2", 128_256, 280_147, Int64(128_000), "§"),
              ("ggml-vocab-qwen2.gguf", "gpt2", 151_936, 151_387, Int64(151_643), "§"),
              ("ggml-vocab-gpt-2.gguf", "gpt2", 50257, 50000, Int64(50256), "§"),
              ("ggml-vocab-deepseek-llm.gguf", "gpt2", 102_400, 99757, Int64(100_000), "§"),
          ])
    func vocabSpotCheck(name: String, model: String, tokens: Int, merges: Int, bos: Int64, token100: String) throws {
        let f = try GGUFFile.open(path: Shared.vocab(name))
        #expect(f.tensors.isEmpty)
        let t = try #require(ModelDescription(f).tokenizer)
        #expect(t.model == model)
        #expect(t.tokenCount == tokens)
        #expect(t.mergeCount == merges)
        #expect(t.specialTokens.first { $0.role == "bos" }?.id == bos)
        #expect(f.metadata["tokenizer.ggml.tokens"]?.array?.strings?[100].string == token100)
    }

    @Test("type table covers every ggml type with consistent geometry")
    func typeTable() {
        #expect(GGMLType.allCases.count == 35)
        #expect(GGMLType.q8_0.bytesPerBlock == 34 && GGMLType.q8_0.blockSize == 32)
        #expect(GGMLType.q4_K.bytesPerBlock == 144 && GGMLType.q4_K.blockSize == 256)
        #expect(GGMLType.q6_K.bytesPerBlock == 210)
        #expect(GGMLType.iq4_xs.bytesPerBlock == 136)
        #expect(GGMLType(rawValue: 4) == nil)   // Q4_2, removed
        #expect(GGMLType(rawValue: 31) == nil)  // Q4_0_4_4, removed
        #expect(GGMLType(name: "Q4_K") == .q4_K)
        #expect(GGMLType.q4_0.byteCount(elements: 33) == nil)
        #expect(GGMLType.q4_0.byteCount(elements: 64) == 36)
        for t in GGMLType.allCases { #expect(GGMLType(name: t.name) == t) }
    }
}
