import GGUF

/// The numbers that shape a decoder-only transformer, read from `ARCH.*` metadata keys.
public struct HyperParameters: Sendable, Equatable {
    public var architecture: String
    public var embeddingLength: Int
    public var blockCount: Int
    public var headCount: Int
    public var headCountKV: Int
    public var keyLength: Int
    public var valueLength: Int
    public var ropeDimensionCount: Int
    public var ropeFrequencyBase: Float
    public var ropeFrequencyScale: Float
    public var rmsEpsilon: Float
    public var contextLength: Int
    public var feedForwardLength: Int
    public var expertCount: Int
    public var expertUsedCount: Int
    public var expertFeedForwardLength: Int
    public var sharedExpertFeedForwardLength: Int
    /// Scale applied to the routing weights after selection (0 or 1: none).
    public var expertWeightsScale: Float
    public var vocabularySize: Int

    public var isMoE: Bool { expertCount > 0 }
    public var queryWidth: Int { headCount * keyLength }
    public var keyWidth: Int { headCountKV * keyLength }
    public var valueWidth: Int { headCountKV * valueLength }

    /// Reads the keys for `metadata`'s architecture. Required keys that are missing, and
    /// values that cannot describe a working model, are typed errors naming the key.
    public init(metadata: GGUFMetadata) throws(ModelError) {
        guard let arch = metadata["general.architecture"]?.string else { throw .missingArchitecture }
        architecture = arch
        func int(_ key: String, default value: Int? = nil) throws(ModelError) -> Int {
            let full = "\(arch).\(key)"
            guard let v = metadata[full] else {
                if let value { return value }
                throw .missingHyperParameter(full)
            }
            // Some converters store per-layer arrays; we need one value for every layer.
            if let array = v.array?.integers {
                guard let first = array.first, array.allSatisfy({ $0 == first }) else {
                    throw .invalidHyperParameter(key: full, detail: "per-layer values differ")
                }
                return Int(first)
            }
            guard let n = v.integer, n >= 0, n <= Int64(Int32.max) else {
                throw .invalidHyperParameter(key: full, detail: "not a small non-negative integer: \(v)")
            }
            return Int(n)
        }
        func float(_ key: String, default value: Float) throws(ModelError) -> Float {
            let full = "\(arch).\(key)"
            guard let v = metadata[full] else { return value }
            guard let d = v.number, d.isFinite else {
                throw .invalidHyperParameter(key: full, detail: "not a number: \(v)")
            }
            return Float(d)
        }
        embeddingLength = try int("embedding_length")
        blockCount = try int("block_count")
        headCount = try int("attention.head_count")
        headCountKV = try int("attention.head_count_kv", default: headCount)
        let defaultHead = headCount > 0 ? embeddingLength / headCount : 0
        keyLength = try int("attention.key_length", default: defaultHead)
        valueLength = try int("attention.value_length", default: defaultHead)
        ropeDimensionCount = try int("rope.dimension_count", default: keyLength)
        ropeFrequencyBase = try float("rope.freq_base", default: 10_000)
        let scale = try float("rope.scale_linear", default: 1)
        ropeFrequencyScale = scale == 0 ? 1 : 1 / scale
        rmsEpsilon = try float("attention.layer_norm_rms_epsilon", default: 1e-5)
        contextLength = try int("context_length", default: 4096)
        expertCount = try int("expert_count", default: 0)
        expertUsedCount = try int("expert_used_count", default: 0)
        feedForwardLength = try int("feed_forward_length", default: 0)
        expertFeedForwardLength = try int("expert_feed_forward_length", default: feedForwardLength)
        sharedExpertFeedForwardLength = try int("expert_shared_feed_forward_length", default: 0)
        expertWeightsScale = try float("expert_weights_scale", default: 0)
        if let tokens = metadata["tokenizer.ggml.tokens"]?.array {
            vocabularySize = tokens.count
        } else {
            vocabularySize = try int("vocab_size", default: 0)
        }

        func check(_ ok: Bool, _ key: String, _ detail: String) throws(ModelError) {
            if !ok { throw .invalidHyperParameter(key: "\(arch).\(key)", detail: detail) }
        }
        try check(embeddingLength > 0, "embedding_length", "must be positive")
        try check(blockCount > 0, "block_count", "must be positive")
        try check(headCount > 0, "attention.head_count", "must be positive")
        try check(headCountKV > 0 && headCount % headCountKV == 0, "attention.head_count_kv",
                  "\(headCountKV) does not divide the \(headCount) query heads")
        try check(keyLength > 0 && keyLength % 2 == 0, "attention.key_length", "must be positive and even")
        try check(valueLength > 0, "attention.value_length", "must be positive")
        try check(ropeDimensionCount % 2 == 0 && ropeDimensionCount <= keyLength, "rope.dimension_count",
                  "\(ropeDimensionCount) must be even and at most the head size \(keyLength)")
        try check(contextLength > 0, "context_length", "must be positive")
        if expertCount > 0 {
            try check(expertUsedCount > 0 && expertUsedCount <= expertCount, "expert_used_count",
                      "\(expertUsedCount) experts per token out of \(expertCount)")
            try check(expertFeedForwardLength > 0, "expert_feed_forward_length", "must be positive")
        }
        try check(vocabularySize > 0, "vocab_size", "no vocabulary (tokenizer.ggml.tokens)")
    }
}
