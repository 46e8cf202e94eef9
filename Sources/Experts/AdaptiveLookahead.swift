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
/// - Confidence: a prefetch that is never used costs a read and evicts an expert that might
///   have been. While fewer than `targetUsefulness` of the prefetches get used, only
///   candidates the gate gives at least `minimumProbability` are read; the bar rises while
///   prefetches are wasted and falls while they are used.
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
    /// Share of prefetches used (EMA), nil before any was judged.
    public private(set) var usefulness: Double?
    /// Gate probability a candidate needs to be read.
    public private(set) var minimumProbability: Float = 0
    public var targetUsefulness = 0.8

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

    /// One forward pass's prefetches judged: `used` were asked for, `wasted` were evicted
    /// unused.
    public mutating func record(prefetchesUsed used: Int, wasted: Int) {
        guard used + wasted > 0 else { return }
        let u = Self.blend(usefulness, Double(used) / Double(used + wasted))
        usefulness = u
        if u < targetUsefulness {
            minimumProbability = min(max(minimumProbability * 1.25, 0.01), 0.5)
        } else if u > targetUsefulness + 0.1 {
            minimumProbability = minimumProbability < 0.005 ? 0 : minimumProbability * 0.8
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
