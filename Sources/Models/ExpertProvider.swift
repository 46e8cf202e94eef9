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
/// assumes experts are resident: it asks for exactly the experts it needs and hands them
/// back when done, so an offloading provider can load missing experts and never evict one
/// that is in use.
public protocol ExpertProvider: AnyObject {
    /// Makes `experts` of `layer` available and returns their weights in the same order.
    /// They stay valid until `release(layer:experts:)`.
    func acquire(layer: Int, experts: [Int]) throws(ModelError) -> [ExpertWeights]
    /// Hands back what `acquire` returned.
    func release(layer: Int, experts: [Int])
}

/// Every expert already in memory (the whole file was read): acquiring is a lookup.
public final class ResidentExpertProvider: ExpertProvider {
    private let layers: [[ExpertWeights]]

    public init(layers: [[ExpertWeights]]) { self.layers = layers }

    /// Views the stacked `blk.N.ffn_{gate,up,down}_exps.weight` tensors of every layer.
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

    public func acquire(layer: Int, experts: [Int]) throws(ModelError) -> [ExpertWeights] {
        experts.map { layers[layer][$0] }
    }

    public func release(layer: Int, experts: [Int]) {}
}
