import Kernels

/// One expert's three matrices.
public struct ExpertWeights: @unchecked Sendable {
    public let gate: WeightMatrix
    public let up: WeightMatrix
    public let down: WeightMatrix

    public init(gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix) {
        self.gate = gate
        self.up = up
        self.down = down
    }
}

/// Where a MoE layer gets the weights of the experts its router selected. The layer never
/// assumes experts are resident: it names the experts it needs and computes on each group
/// the provider hands it, as soon as that group is ready. An offloading provider can so
/// compute on resident experts while the missing ones load, run a selection larger than
/// its pool in waves, and never evict an expert in use (a group is in use only during the
/// call that receives it).
public protocol ExpertProvider: AnyObject {
    /// Makes each of `experts` (distinct ids) of `layer` available and calls `compute` with
    /// groups of them: positions into `experts` and their weights, in matching order. Every
    /// position is passed exactly once; the weights are valid only during that call.
    /// `importance` holds, per position, the largest routing weight given to that expert.
    func withExperts(layer: Int, experts: [Int], importance: [Float],
                     compute: (_ positions: [Int], _ weights: [ExpertWeights]) throws(ModelError) -> Void) throws(ModelError)

    /// Called once per forward pass, before the first layer, with the number of tokens in
    /// the batch (statistics and prefetch use it).
    func beginBatch(tokens: Int)

    /// The model at MoE layer `observation.layer`, before its attention and again before its
    /// feed-forward: the provider may predict coming layers' experts from it (and read them
    /// ahead) or learn from what the router is about to see. Returns the prediction it made
    /// of the next layer's experts before this feed-forward, when it made one (a routing
    /// observer records it); nil otherwise.
    func observe(_ observation: LayerObservation) -> GatePrediction?
}

extension ExpertProvider {
    public func beginBatch(tokens: Int) {}
    public func observe(_ observation: LayerObservation) -> GatePrediction? { nil }
}

/// Every expert already in memory (the whole file was read): one group, no waiting.
public final class ResidentExpertProvider: ExpertProvider {
    private let layers: [[ExpertWeights]]

    public init(layers: [[ExpertWeights]]) { self.layers = layers }

    /// Views the stacked `blk.N.ffn_{gate,up,down}_exps.weight` tensors of every MoE layer.
    public convenience init(_ w: WeightStore, _ hp: HyperParameters) throws(ModelError) {
        var layers: [[ExpertWeights]] = []
        for l in 0..<hp.blockCount {
            let p = "blk.\(l).ffn_"
            let n = hp.expertCount, f = hp.expertFeedForwardLength, h = hp.embeddingLength
            let gate = try w.stackedMatrices(p + "gate_exps.weight", count: n, rows: f, columns: h)
            let up = try w.stackedMatrices(p + "up_exps.weight", count: n, rows: f, columns: h)
            let down = try w.stackedMatrices(p + "down_exps.weight", count: n, rows: h, columns: f)
            layers.append((0..<n).map { ExpertWeights(gate: gate[$0], up: up[$0], down: down[$0]) })
        }
        self.init(layers: layers)
    }

    public func withExperts(layer: Int, experts: [Int], importance: [Float],
                            compute: ([Int], [ExpertWeights]) throws(ModelError) -> Void) throws(ModelError) {
        try compute(Array(experts.indices), experts.map { layers[layer][$0] })
    }
}
