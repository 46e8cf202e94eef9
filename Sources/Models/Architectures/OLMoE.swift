/// `olmoe`: NeoX RoPE, RMSNorm over the whole query and key projections (not per head),
/// softmax top-k experts without renormalization.
enum OLMoE: Architecture {
    static let name = "olmoe"

    static func build(_ hp: HyperParameters, _ w: WeightStore) throws(ModelError) -> DecoderModel {
        guard hp.isMoE else { throw .missingHyperParameter("olmoe.expert_count") }
        let rope = RoPE(layout: .neox, dimensions: hp.ropeDimensionCount, base: hp.ropeFrequencyBase,
                        frequencyScale: hp.ropeFrequencyScale)
        var layers: [DecoderLayer] = []
        for l in 0..<hp.blockCount {
            layers.append(DecoderLayer(
                attentionNorm: try w.vector("blk.\(l).attn_norm.weight", count: hp.embeddingLength),
                attention: try Attention(w, layer: l, hp, rope: rope, qkNorm: .fullProjection),
                feedForwardNorm: try w.vector("blk.\(l).ffn_norm.weight", count: hp.embeddingLength),
                feedForward: .experts(try MixtureOfExperts(w, layer: l, hp, normalizeWeights: false))))
        }
        return try DecoderModel(hp, w, layers: layers, rope: rope)
    }
}
