/// `qwen3moe`: qwen3's attention (per-head q/k RMSNorm, NeoX RoPE) with softmax top-k
/// experts whose selected weights are renormalized to sum to 1.
enum Qwen3MoE: Architecture {
    static let name = "qwen3moe"

    static func build(_ hp: HyperParameters, _ w: WeightStore) throws(ModelError) -> DecoderModel {
        guard hp.isMoE else { throw .missingHyperParameter("qwen3moe.expert_count") }
        let rope = RoPE(layout: .neox, dimensions: hp.ropeDimensionCount, base: hp.ropeFrequencyBase,
                        frequencyScale: hp.ropeFrequencyScale)
        var layers: [DecoderLayer] = []
        for l in 0..<hp.blockCount {
            layers.append(DecoderLayer(
                attentionNorm: try w.vector("blk.\(l).attn_norm.weight", count: hp.embeddingLength),
                attention: try Attention(w, layer: l, hp, rope: rope, qkNorm: .perHead),
                feedForwardNorm: try w.vector("blk.\(l).ffn_norm.weight", count: hp.embeddingLength),
                feedForward: .experts(try MixtureOfExperts(w, layer: l, hp, normalizeWeights: true))))
        }
        return try DecoderModel(hp, w, layers: layers, rope: rope)
    }
}
