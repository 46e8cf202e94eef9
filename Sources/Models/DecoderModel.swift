import GGUF
import KV
import Kernels
import Storage

/// The feed-forward half of a layer.
public enum FeedForwardBlock: @unchecked Sendable {
    case dense(FeedForward)
    case experts(MixtureOfExperts)
}

/// One pre-norm transformer layer: x += attn(norm(x)); x += ffn(norm(x)).
public struct DecoderLayer: @unchecked Sendable {
    public let attentionNorm: UnsafePointer<Float>
    public let attention: Attention
    public let feedForwardNorm: UnsafePointer<Float>
    public let feedForward: FeedForwardBlock

    public init(attentionNorm: UnsafePointer<Float>, attention: Attention,
                feedForwardNorm: UnsafePointer<Float>, feedForward: FeedForwardBlock) {
        self.attentionNorm = attentionNorm
        self.attention = attention
        self.feedForwardNorm = feedForwardNorm
        self.feedForward = feedForward
    }
}

/// Which positions of a batch get logits.
public enum LogitsSelection: Sendable {
    case last
    case all
    case none
}

/// A decoder-only transformer assembled by an architecture file from shared blocks.
/// Every supported architecture is this skeleton with different block options.
public final class DecoderModel: @unchecked Sendable {
    public let hyperParameters: HyperParameters
    public let weights: WeightStore
    public let tokenEmbedding: WeightMatrix
    public let layers: [DecoderLayer]
    public let outputNorm: UnsafePointer<Float>
    public let output: WeightMatrix
    public let rope: RoPE
    /// Where MoE layers get their experts; nil for dense models. Set by the loader: the
    /// resident provider, or an offloading one.
    public var experts: ExpertProvider?
    /// Told how every MoE layer routes each batch (routing records); nil: nobody watches,
    /// and no prediction is computed unless the expert provider wants one.
    public var routingObserver: (any RoutingObserver)?
    public var vocabularySize: Int { hyperParameters.vocabularySize }
    public var hidden: Int { hyperParameters.embeddingLength }

    /// Token embedding, final norm and output projection are common to every architecture;
    /// a missing `output.weight` means it is tied to the token embedding.
    public init(_ hp: HyperParameters, _ w: WeightStore, layers: [DecoderLayer], rope: RoPE) throws(ModelError) {
        hyperParameters = hp
        weights = w
        let embedding = try w.matrix("token_embd.weight", rows: hp.vocabularySize, columns: hp.embeddingLength)
        guard Dequantize.supports(embedding.type) else {
            throw .unsupportedType(tensor: "token_embd.weight", type: embedding.type)
        }
        tokenEmbedding = embedding
        self.layers = layers
        outputNorm = try w.vector("output_norm.weight", count: hp.embeddingLength)
        if w.contains("output.weight") {
            output = try w.matrix("output.weight", rows: hp.vocabularySize, columns: hp.embeddingLength)
        } else {
            output = embedding
        }
        self.rope = rope
    }

    /// Runs `tokens` at positions `cache.count...` as one batch, appends their keys and
    /// values to `cache`, and returns logits (vocabularySize per selected position).
    public func forward(_ tokens: [Int], cache: KVSequence, logits selection: LogitsSelection,
                        workspace: Workspace, pool: ThreadPool) throws(ModelError) -> [Float] {
        let n = tokens.count
        guard n > 0 else { throw .emptyInput }
        for t in tokens where t < 0 || t >= vocabularySize {
            throw .tokenOutOfRange(token: t, vocabularySize: vocabularySize)
        }
        guard cache.count + n <= cache.capacity else {
            throw .contextOverflow(needed: cache.count + n, capacity: cache.capacity)
        }
        do {
            try cache.reserve(appending: tokens)
        } catch {
            throw .kvCache(error)
        }
        experts?.beginBatch(tokens: n)
        let h = hidden
        let x = workspace.floats(Slot.hidden, count: n * h)
        let normed = workspace.floats(Slot.normed, count: n * h)
        let blockOut = workspace.floats(Slot.blockOut, count: n * h)
        let table = workspace.floats(Slot.ropeTable, count: n * rope.dimensions)

        for (i, t) in tokens.enumerated() {
            Dequantize.row(tokenEmbedding.type, from: tokenEmbedding.row(t), to: x + i * h, count: h)
            rope.angles(position: cache.count + i, into: table + i * rope.dimensions)
        }

        let prediction = experts?.wantsPrediction ?? .none
        let observer = routingObserver
        observer?.beginBatch(tokens: tokens, positions: cache.count..<(cache.count + n))
        // The cross-layer gate's prediction for the layer about to run, made at the layer
        // before (kept only for the observer).
        var carried: GatePrediction?
        for (l, layer) in layers.enumerated() {
            if prediction == .sameLayer, case let .experts(moe) = layer.feedForward {
                let predicted = moe.predict(x, tokens: n, hidden: h, norm: layer.feedForwardNorm,
                                            epsilon: hyperParameters.rmsEpsilon, workspace: workspace, pool: pool)
                experts?.hint(predicted)
            }
            for i in 0..<n {
                VectorMath.rmsNorm(x + i * h, weight: layer.attentionNorm, count: h,
                                   epsilon: hyperParameters.rmsEpsilon, into: normed + i * h)
            }
            layer.attention.forward(normed, tokens: n, layer: l, cache: cache, ropeTable: table,
                                    workspace: workspace, pool: pool, out: blockOut)
            VectorMath.add(blockOut, into: x, count: n * h)

            for i in 0..<n {
                VectorMath.rmsNorm(x + i * h, weight: layer.feedForwardNorm, count: h,
                                   epsilon: hyperParameters.rmsEpsilon, into: normed + i * h)
            }
            let predictedHere = carried
            carried = nil
            switch layer.feedForward {
            case let .dense(ffn):
                ffn.forward(normed, tokens: n, workspace: workspace, pool: pool, out: blockOut)
            case let .experts(moe):
                guard let experts else { throw .file("MoE layer \(l) has no expert provider") }
                // Predict the coming layers' experts from this layer's hidden state, so their
                // reads overlap this layer's expert compute (and the layers between); the next
                // layer's prediction is also what a routing observer records.
                var depth = observer != nil ? 1 : 0
                if case let .ahead(d) = prediction { depth = max(d, depth) }
                for ahead in (l + 1)..<min(l + 1 + depth, layers.count) {
                    guard case let .experts(next) = layers[ahead].feedForward else { continue }
                    let predicted = next.predict(x, tokens: n, hidden: h, norm: layers[ahead].feedForwardNorm,
                                                 epsilon: hyperParameters.rmsEpsilon, workspace: workspace, pool: pool)
                    if case .ahead = prediction { experts.hint(predicted) }
                    if observer != nil && ahead == l + 1 { carried = predicted }
                }
                let routes = try moe.forward(normed, tokens: n, hidden: h, provider: experts, workspace: workspace,
                                             pool: pool, out: blockOut)
                observer?.didRoute(layer: l, routes: routes, prediction: predictedHere)
            }
            VectorMath.add(blockOut, into: x, count: n * h)
        }
        try observer?.endBatch()
        cache.commit()

        let rows: Range<Int>
        switch selection {
        case .none: return []
        case .last: rows = (n - 1)..<n
        case .all: rows = 0..<n
        }
        for (j, i) in rows.enumerated() {
            VectorMath.rmsNorm(x + i * h, weight: outputNorm, count: h, epsilon: hyperParameters.rmsEpsilon,
                               into: normed + j * h)
        }
        var result = [Float](repeating: 0, count: rows.count * vocabularySize)
        result.withUnsafeMutableBufferPointer { out in
            MatMul.multiply(output, input: normed, tokens: rows.count, output: out.baseAddress!, pool: pool)
        }
        return result
    }
}
