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
    /// and no prediction is computed unless the expert provider makes one.
    public var routingObserver: (any RoutingObserver)?
    public var vocabularySize: Int { hyperParameters.vocabularySize }
    public var hidden: Int { hyperParameters.embeddingLength }

    /// The routing parts of layer `l` (read-only), nil when it is not a MoE layer or there is none.
    public func moeLayerView(_ l: Int) -> MoELayerView? {
        guard l >= 0, l < layers.count, case let .experts(moe) = layers[l].feedForward else { return nil }
        return MoELayerView(layer: l, norm: layers[l].feedForwardNorm, router: moe.router, expertCount: moe.expertCount,
                            expertsPerToken: moe.expertsPerToken, epsilon: hyperParameters.rmsEpsilon)
    }

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
        try forward([SequenceChunk(tokens: tokens, cache: cache, logits: selection)],
                    workspace: workspace, pool: pool)[0]
    }

    /// Runs several sequences' tokens as one batch: every chunk's tokens go at positions
    /// `chunk.cache.count...` of its own sequence, store their keys and values there and
    /// attend only over that sequence (causally). The matrix products (projections, router,
    /// experts, output) run over all the batch's tokens at once, so an expert chosen by
    /// several sequences is read and computed once. Returns each chunk's logits
    /// (vocabularySize per selected position), in the batch's order.
    ///
    /// Every chunk's positions are reserved before any is computed; when a reservation (or
    /// anything after it) fails, every sequence is left as it was: its count, its tokens and
    /// no extra block (one exception: a shared block that a sequence copied for writing
    /// before the failure stays its own copy, with the same contents). A sequence may appear
    /// only once in a batch.
    public func forward(_ batch: [SequenceChunk], workspace: Workspace, pool: ThreadPool) throws(ModelError) -> [[Float]] {
        guard !batch.isEmpty else { throw .emptyInput }
        var segments: [AttentionSegment] = []
        segments.reserveCapacity(batch.count)
        var n = 0
        for chunk in batch {
            guard !chunk.tokens.isEmpty else { throw .emptyInput }
            for t in chunk.tokens where t < 0 || t >= vocabularySize {
                throw .tokenOutOfRange(token: t, vocabularySize: vocabularySize)
            }
            let cache = chunk.cache
            guard cache.count + chunk.tokens.count <= cache.capacity else {
                throw .contextOverflow(needed: cache.count + chunk.tokens.count, capacity: cache.capacity)
            }
            segments.append(AttentionSegment(cache: cache, firstRow: n, rows: chunk.tokens.count, start: cache.count))
            n += chunk.tokens.count
        }
        if batch.count > 1 {
            precondition(Set(batch.map { ObjectIdentifier($0.cache) }).count == batch.count,
                         "a sequence appears twice in one batch")
        }
        // All or nothing: a reservation that fails undoes the ones before it.
        for (i, chunk) in batch.enumerated() {
            do {
                try chunk.cache.reserve(appending: chunk.tokens)
            } catch {
                for earlier in batch[..<i] { earlier.cache.cancelReservation() }
                throw .kvCache(error)
            }
        }
        do {
            let hiddenStates = try run(batch, segments: segments, tokens: n, workspace: workspace, pool: pool)
            for chunk in batch { chunk.cache.commit() }
            return logits(of: batch, hiddenStates: hiddenStates, workspace: workspace, pool: pool)
        } catch {
            for chunk in batch { chunk.cache.cancelReservation() }
            throw error
        }
    }

    /// Every layer over the batch's `n` tokens (their positions reserved); returns the final
    /// hidden states (n × hidden, in the workspace).
    private func run(_ batch: [SequenceChunk], segments: [AttentionSegment], tokens n: Int,
                     workspace: Workspace, pool: ThreadPool) throws(ModelError) -> UnsafeMutablePointer<Float> {
        experts?.beginBatch(tokens: n)
        let h = hidden
        let x = workspace.floats(Slot.hidden, count: n * h)
        let normed = workspace.floats(Slot.normed, count: n * h)
        let blockOut = workspace.floats(Slot.blockOut, count: n * h)
        let table = workspace.floats(Slot.ropeTable, count: n * rope.dimensions)

        let observer = routingObserver
        var allTokens: [Int] = []
        var positions: [Int] = []
        if observer != nil {
            allTokens.reserveCapacity(n)
            positions.reserveCapacity(n)
        }
        for (chunk, segment) in zip(batch, segments) {
            for (j, t) in chunk.tokens.enumerated() {
                let i = segment.firstRow + j
                Dequantize.row(tokenEmbedding.type, from: tokenEmbedding.row(t), to: x + i * h, count: h)
                rope.angles(position: segment.start + j, into: table + i * rope.dimensions)
                if observer != nil {
                    allTokens.append(t)
                    positions.append(segment.start + j)
                }
            }
        }

        observer?.beginBatch(tokens: allTokens, positions: positions)
        // The cross-layer gate's prediction for the layer about to run, made at the layer
        // before (kept only for the observer).
        var carried: GatePrediction?
        for (l, layer) in layers.enumerated() {
            if let experts, case .experts = layer.feedForward {
                _ = experts.observe(LayerObservation(stage: .beforeAttention, layer: l, tokens: n, hidden: h, hiddenState: x,
                                                     routerLogits: nil, recordsPrediction: false, workspace: workspace,
                                                     pool: pool, model: self))
            }
            for i in 0..<n {
                VectorMath.rmsNorm(x + i * h, weight: layer.attentionNorm, count: h,
                                   epsilon: hyperParameters.rmsEpsilon, into: normed + i * h)
            }
            layer.attention.forward(normed, tokens: n, layer: l, segments: segments, ropeTable: table,
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
                // The provider may read ahead from this point (and learn from the router's
                // logits); a routing observer records the next layer's prediction it made
                // here, or else the plain cross-layer gate's.
                let logits = moe.routerLogits(normed, tokens: n, workspace: workspace, pool: pool)
                let next = experts.observe(LayerObservation(stage: .beforeFeedForward, layer: l, tokens: n, hidden: h,
                                                            hiddenState: x, routerLogits: logits,
                                                            recordsPrediction: observer != nil, workspace: workspace,
                                                            pool: pool, model: self))
                if observer != nil {
                    carried = next ?? moeLayerView(l + 1)?.predict(x, tokens: n, hidden: h, workspace: workspace, pool: pool)
                }
                let routes = try moe.forward(normed, routerLogits: logits, tokens: n, hidden: h, provider: experts, workspace: workspace,
                                             pool: pool, out: blockOut)
                observer?.didRoute(layer: l, routes: routes, prediction: predictedHere)
            }
            VectorMath.add(blockOut, into: x, count: n * h)
        }
        try observer?.endBatch()
        return x
    }

    /// The logits each chunk selects, from the final hidden states `x`: one output product
    /// over all selected rows of the batch.
    private func logits(of batch: [SequenceChunk], hiddenStates x: UnsafeMutablePointer<Float>,
                        workspace: Workspace, pool: ThreadPool) -> [[Float]] {
        let h = hidden
        // Rows of the selected positions, in the final norm's buffer (as large as the batch).
        let normed = workspace.floats(Slot.normed, count: batch.reduce(0) { $0 + $1.tokens.count } * h)
        var selected = 0
        var first = 0
        for chunk in batch {
            let rows: Range<Int>
            switch chunk.logits {
            case .none: rows = first..<first
            case .last: rows = (first + chunk.tokens.count - 1)..<(first + chunk.tokens.count)
            case .all: rows = first..<(first + chunk.tokens.count)
            }
            for i in rows {
                VectorMath.rmsNorm(x + i * h, weight: outputNorm, count: h, epsilon: hyperParameters.rmsEpsilon,
                                   into: normed + selected * h)
                selected += 1
            }
            first += chunk.tokens.count
        }
        guard selected > 0 else { return batch.map { _ in [] } }
        var all = [Float](repeating: 0, count: selected * vocabularySize)
        all.withUnsafeMutableBufferPointer { out in
            MatMul.multiply(output, input: normed, tokens: selected, output: out.baseAddress!, pool: pool)
        }
        if batch.count == 1 { return [all] }
        var result: [[Float]] = []
        result.reserveCapacity(batch.count)
        var row = 0
        for chunk in batch {
            let count: Int
            switch chunk.logits {
            case .none: count = 0
            case .last: count = 1
            case .all: count = chunk.tokens.count
            }
            result.append(Array(all[(row * vocabularySize)..<((row + count) * vocabularySize)]))
            row += count
        }
        return result
    }
}

/// One sequence's part of a batch (`DecoderModel.forward(_:workspace:pool:)`): tokens
/// appended to `cache` at positions `cache.count...`, and which of them get logits.
public struct SequenceChunk: @unchecked Sendable {
    public var tokens: [Int]
    public let cache: KVSequence
    public var logits: LogitsSelection

    public init(tokens: [Int], cache: KVSequence, logits: LogitsSelection = .last) {
        self.tokens = tokens
        self.cache = cache
        self.logits = logits
    }
}

