/// `qwen2moe`: NeoX RoPE, q/k/v biases, softmax top-k experts without renormalization,
/// plus a shared expert on every token scaled by a sigmoid gate.
enum Qwen2MoE: Architecture {
    static let name = "qwen2moe"

    static func build(_ hp: HyperParameters, _ w: WeightStore) throws(ModelError) -> DecoderModel {
        guard hp.isMoE else { throw .missingHyperParameter("qwen2moe.expert_count") }
        let rope = RoPE(layout: .neox, dimensions: hp.ropeDimensionCount, base: hp.ropeFrequencyBase,
                        frequencyScale: hp.ropeFrequencyScale)
        var layers: [DecoderLayer] = []
        for l in 0..<hp.blockCount {
            layers.append(DecoderLayer(
                attentionNorm: try w.vector("blk.\(l).attn_norm.weight", count: hp.embeddingLength),
                attention: try Attention(w, layer: l, hp, rope: rope, biases: true),
                feedForwardNorm: try w.vector("blk.\(l).ffn_norm.weight", count: hp.embeddingLength),
                feedForward: .experts(try MixtureOfExperts(w, layer: l, hp, normalizeWeights: false, sharedExpert: true))))
        }
        return try DecoderModel(hp, w, layers: layers, rope: rope)
    }
}
