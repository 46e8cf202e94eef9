/// `qwen2`: dense, NeoX RoPE, biases on the q/k/v projections.
enum Qwen2: Architecture {
    static let name = "qwen2"

    static func build(_ hp: HyperParameters, _ w: WeightStore) throws(ModelError) -> DecoderModel {
        let rope = RoPE(layout: .neox, dimensions: hp.ropeDimensionCount, base: hp.ropeFrequencyBase,
                        frequencyScale: hp.ropeFrequencyScale)
        var layers: [DecoderLayer] = []
        for l in 0..<hp.blockCount {
            layers.append(DecoderLayer(
                attentionNorm: try w.vector("blk.\(l).attn_norm.weight", count: hp.embeddingLength),
                attention: try Attention(w, layer: l, hp, rope: rope, biases: true),
                feedForwardNorm: try w.vector("blk.\(l).ffn_norm.weight", count: hp.embeddingLength),
                feedForward: .dense(try FeedForward(w, layer: l, hidden: hp.embeddingLength, width: hp.feedForwardLength))))
        }
        return try DecoderModel(hp, w, layers: layers, rope: rope)
    }
}
