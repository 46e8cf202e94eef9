// make-bench-model: writes a random-weight qwen3moe GGUF of a given size with our GGUF
// writer, for speed and memory benchmarks against llama.cpp on the same file.
//
//   make-bench-model OUT.gguf --vocab-from VOCAB.gguf [--hidden 1024] [--layers 16]
//       [--experts 64] [--expert-ff 512] [--top 8] [--heads 16] [--kv-heads 4]
//       [--head-dim 64] [--context 4096] [--seed 1]
//
// Weights are F16 (quantize the file afterwards with llama-quantize or `moe quantize`).
// The tokenizer (and so the vocabulary size) comes from VOCAB.gguf, e.g.
// ../shared/vocab/ggml-vocab-llama-spm.gguf (32000 pieces).
import GGUF
import Storage
#if canImport(Glibc)
import Glibc
#endif

struct Config {
    var out = ""
    var vocabFrom = ""
    var hidden = 1024
    var layers = 16
    var experts = 64
    var expertFF = 512
    var top = 8
    var heads = 16
    var kvHeads = 4
    var headDim = 64
    var context = 4096
    var seed: UInt64 = 1
}

func fail(_ message: String) -> Never {
    FileHandleStderr.write("make-bench-model: \(message)\n")
    exit(1)
}

enum FileHandleStderr {
    static func write(_ s: String) {
        let bytes = Array(s.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

func parse() -> Config {
    var c = Config()
    var args = CommandLine.arguments.dropFirst()
    func int(_ flag: String) -> Int {
        guard let v = args.popFirst(), let n = Int(v), n > 0 else { fail("\(flag) needs a positive integer") }
        return n
    }
    while let a = args.popFirst() {
        switch a {
        case "--vocab-from":
            guard let v = args.popFirst() else { fail("--vocab-from needs a path") }
            c.vocabFrom = v
        case "--hidden": c.hidden = int(a)
        case "--layers": c.layers = int(a)
        case "--experts": c.experts = int(a)
        case "--expert-ff": c.expertFF = int(a)
        case "--top": c.top = int(a)
        case "--heads": c.heads = int(a)
        case "--kv-heads": c.kvHeads = int(a)
        case "--head-dim": c.headDim = int(a)
        case "--context": c.context = int(a)
        case "--seed": c.seed = UInt64(int(a))
        case "-h", "--help":
            print("usage: make-bench-model OUT.gguf --vocab-from VOCAB.gguf [--hidden N] [--layers N] [--experts N] [--expert-ff N] [--top N] [--heads N] [--kv-heads N] [--head-dim N] [--context N] [--seed N]")
            exit(0)
        default:
            if a.hasPrefix("-") || !c.out.isEmpty { fail("unexpected argument \(a)") }
            c.out = a
        }
    }
    if c.out.isEmpty || c.vocabFrom.isEmpty { fail("need OUT.gguf and --vocab-from VOCAB.gguf") }
    if c.top > c.experts { fail("--top exceeds --experts") }
    if c.heads % c.kvHeads != 0 { fail("--heads must be a multiple of --kv-heads") }
    return c
}

/// splitmix64: a small, fast generator so 1.5 G weights take seconds, reproducibly.
struct SplitMix {
    var state: UInt64
    @inline(__always) mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Roughly normal (sum of four uniforms), mean 0, standard deviation 1.
    @inline(__always) mutating func gaussian() -> Float {
        let r = next()
        var s: Float = 0
        for k in 0..<4 { s += Float((r >> (UInt64(k) * 16)) & 0xFFFF) }
        return (s / 65535 - 2) * 1.7320508
    }
}

func seed(for name: String, base: UInt64) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ base
    for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    return h
}

func build(_ config: Config) {
    let vocabFile: GGUFFile
    do { vocabFile = try GGUFFile.open(path: config.vocabFrom) } catch { fail("\(config.vocabFrom): \(error)") }
    guard let tokens = vocabFile.metadata["tokenizer.ggml.tokens"]?.array, tokens.count > 0 else {
        fail("\(config.vocabFrom) has no tokenizer.ggml.tokens")
    }
    let vocab = tokens.count
    
    var w = GGUFWriter()
    let arch = "qwen3moe"
    w.metadata["general.architecture"] = .string(GGUFString(arch))
    w.metadata["general.name"] = .string(GGUFString("bench-qwen3moe-\(config.hidden)x\(config.layers)-\(config.experts)e"))
    w.metadata["general.file_type"] = .uint32(1)
    w.metadata["general.quantization_version"] = .uint32(2)
    func hp(_ key: String, _ v: Int) { w.metadata["\(arch).\(key)"] = .uint32(UInt32(v)) }
    hp("context_length", config.context)
    hp("embedding_length", config.hidden)
    hp("block_count", config.layers)
    hp("feed_forward_length", config.expertFF * config.top)
    hp("attention.head_count", config.heads)
    hp("attention.head_count_kv", config.kvHeads)
    hp("attention.key_length", config.headDim)
    hp("attention.value_length", config.headDim)
    hp("rope.dimension_count", config.headDim)
    w.metadata["\(arch).rope.freq_base"] = .float32(1_000_000)
    w.metadata["\(arch).attention.layer_norm_rms_epsilon"] = .float32(1e-6)
    hp("expert_count", config.experts)
    hp("expert_used_count", config.top)
    hp("expert_feed_forward_length", config.expertFF)
    for (key, value) in vocabFile.metadata.entries where key.hasPrefix("tokenizer.") {
        w.metadata[key] = value
    }
    
    /// F16 tensor of `dims` (ggml order) with N(0, std) entries, or all `constant`.
    func addF16(_ name: String, _ dims: [Int], std: Float) throws {
        let s = seed(for: name, base: config.seed)
        try w.addTensor(name: name, dimensions: dims.map(UInt64.init), type: .f16, source: .generator { buffer in
            var rng = SplitMix(state: s)
            let out = buffer.bindMemory(to: Float16.self)
            for i in 0..<out.count { out[i] = Float16(rng.gaussian() * std) }
        })
    }
    func addF32(_ name: String, _ dims: [Int], std: Float, mean: Float = 0) throws {
        let s = seed(for: name, base: config.seed)
        try w.addTensor(name: name, dimensions: dims.map(UInt64.init), type: .f32, source: .generator { buffer in
            var rng = SplitMix(state: s)
            let out = buffer.bindMemory(to: Float.self)
            for i in 0..<out.count { out[i] = mean + rng.gaussian() * std }
        })
    }
    
    do {
        let h = config.hidden, q = config.heads * config.headDim, kv = config.kvHeads * config.headDim
        try addF16("token_embd.weight", [h, vocab], std: 0.02)
        for l in 0..<config.layers {
            let p = "blk.\(l)."
            try addF32(p + "attn_norm.weight", [h], std: 0.05, mean: 1)
            try addF16(p + "attn_q.weight", [h, q], std: 0.02)
            try addF16(p + "attn_k.weight", [h, kv], std: 0.02)
            try addF16(p + "attn_v.weight", [h, kv], std: 0.02)
            try addF32(p + "attn_q_norm.weight", [config.headDim], std: 0.05, mean: 1)
            try addF32(p + "attn_k_norm.weight", [config.headDim], std: 0.05, mean: 1)
            try addF16(p + "attn_output.weight", [q, h], std: 0.02)
            try addF32(p + "ffn_norm.weight", [h], std: 0.05, mean: 1)
            try addF32(p + "ffn_gate_inp.weight", [h, config.experts], std: 0.05)
            try addF16(p + "ffn_gate_exps.weight", [h, config.expertFF, config.experts], std: 0.02)
            try addF16(p + "ffn_up_exps.weight", [h, config.expertFF, config.experts], std: 0.02)
            try addF16(p + "ffn_down_exps.weight", [config.expertFF, h, config.experts], std: 0.02)
        }
        try addF32("output_norm.weight", [h], std: 0.05, mean: 1)
        try addF16("output.weight", [h, vocab], std: 0.02)
        var last = -1
        try w.write(to: config.out) { done, total in
            let pct = Int(done * 100 / max(total, 1))
            if pct / 10 != last / 10 { last = pct; FileHandleStderr.write("\r\(pct)%") }
        }
        FileHandleStderr.write("\n")
    } catch {
        fail("\(error)")
    }
}

build(parse())
