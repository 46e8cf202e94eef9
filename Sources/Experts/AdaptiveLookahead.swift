/// HOBBIT's adaptive layer-level prefetch: how many layers ahead to predict, and how many
/// candidates per layer to read, from what the run measures: the compute time of a layer,
/// the disk time of one expert, and the experts a layer still has to read.
///
/// - Depth: a layer's reads must land before that layer runs. If they take longer than one
///   layer computes, they have to start that many layers earlier (at the price of a less
///   accurate prediction, made from an older hidden state).
/// - Candidates: when the disk would otherwise idle during a layer, the next-ranked
///   predictions are read too (up to twice the experts per token), trading spare disk time
///   for recall.
///
/// Figures are exponential moving averages, so the choice follows the run as it changes
/// (a warm pool misses less; a busy disk reads slower).
public struct AdaptiveLookahead: Sendable {
    public var maximumDepth = 3
    /// Seconds one MoE layer computes (I/O stall excluded).
    public private(set) var layerSeconds: Double?
    /// Disk seconds per expert read (reads in flight together share them).
    public private(set) var expertReadSeconds: Double?
    /// Experts read per MoE layer (demand misses and prefetches).
    public private(set) var readsPerLayer: Double?
    /// Weight of a new measurement.
    static let smoothing = 0.2

    public init() {}

    private static func blend(_ old: Double?, _ new: Double) -> Double {
        guard let old else { return new }
        return old + smoothing * (new - old)
    }

    /// One forward pass's figures: `layers` MoE layers took `computeSeconds` (stall excluded),
    /// and `expertsRead` experts kept the disk busy `readSeconds`.
    public mutating func record(layers: Int, computeSeconds: Double, expertsRead: Int, readSeconds: Double) {
        guard layers > 0, computeSeconds > 0 else { return }
        layerSeconds = Self.blend(layerSeconds, computeSeconds / Double(layers))
        readsPerLayer = Self.blend(readsPerLayer, Double(expertsRead) / Double(layers))
        if expertsRead > 0, readSeconds > 0 {
            expertReadSeconds = Self.blend(expertReadSeconds, readSeconds / Double(expertsRead))
        }
    }

    /// Layers ahead to predict: enough that a layer's reads fit in the compute before it.
    public var depth: Int {
        guard let c = layerSeconds, let r = expertReadSeconds, let m = readsPerLayer, c > 0 else { return 1 }
        let layersOfReading = (m * r / c).rounded(.up)
        return Int(min(max(layersOfReading, 1), Double(maximumDepth)))
    }

    /// Predicted experts to read per layer: `k`, plus as many more as the disk can read in
    /// the time a layer computes beyond the reads it already does (at most `k` more).
    public func candidates(k: Int, expertCount: Int) -> Int {
        guard let c = layerSeconds, let r = expertReadSeconds, let m = readsPerLayer, r > 0 else { return k }
        let spare = c / r - m
        let extra = spare >= 1 ? min(k, Int(spare)) : 0
        return min(expertCount, k + extra)
    }
}
