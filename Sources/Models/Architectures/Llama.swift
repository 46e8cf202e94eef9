/// `llama`: Llama 1/2/3, Mistral, and Mixtral-style MoE when `llama.expert_count` is set.
/// Normal (adjacent-pair) RoPE, optional `rope_freqs` (Llama 3.1 frequency factors),
/// SwiGLU FFN or softmax top-k experts with renormalized weights.
enum Llama: Architecture {
    static let name = "llama"

    static func build(_ hp: HyperParameters, _ w: WeightStore) throws(ModelError) -> DecoderModel {
        var factors: [Float]?
        if w.contains("rope_freqs.weight") {
            let f = try w.vector("rope_freqs.weight", count: hp.ropeDimensionCount / 2)
            factors = Array(UnsafeBufferPointer(start: f, count: hp.ropeDimensionCount / 2))
        }
        let rope = RoPE(layout: .normal, dimensions: hp.ropeDimensionCount, base: hp.ropeFrequencyBase,
                        frequencyScale: hp.ropeFrequencyScale, frequencyFactors: factors)
        var layers: [DecoderLayer] = []
        for l in 0..<hp.blockCount {
            let ffn: FeedForwardBlock = hp.isMoE
                ? .experts(try MixtureOfExperts(w, layer: l, hp, normalizeWeights: true))
                : .dense(try FeedForward(w, layer: l, hidden: hp.embeddingLength, width: hp.feedForwardLength))
            layers.append(DecoderLayer(
                attentionNorm: try w.vector("blk.\(l).attn_norm.weight", count: hp.embeddingLength),
                attention: try Attention(w, layer: l, hp, rope: rope),
                feedForwardNorm: try w.vector("blk.\(l).ffn_norm.weight", count: hp.embeddingLength),
                feedForward: ffn))
        }
        return try DecoderModel(hp, w, layers: layers, rope: rope)
    }
}
