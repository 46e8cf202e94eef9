import Models

/// An online correction of the predictions of one MoE layer's experts.
///
/// Fate's cross-layer gate applies this layer's norm and router to an earlier layer's hidden
/// state. The state the layer really routes on differs by what the blocks in between add, so
/// the prediction misses some of the experts chosen. This learns, while the model runs, a
/// linear map added to the predicted logits: the input is the normalized hidden state the
/// prediction used, plus one constant feature (as large as the input's norm, so it learns as
/// fast as the rest) that lets it learn a bias. Each time the layer routes a single token it
/// had been predicted for, the map takes one normalized least-mean-squares step towards the
/// router's actual logits:
///
///     A -= rate · (predicted − actual) · zᵀ / |z|²
///
/// It starts at zero, so until it has seen tokens the prediction is the plain cross-layer
/// gate; it needs no file and no training pass. Predictions from different distances (the
/// layer before, two layers before, the layer's own input before its attention) see
/// different states, so each distance learns its own map, allocated when first used.
public final class GateCorrection: @unchecked Sendable {
    public let experts: Int
    public let hidden: Int
    /// Step size of each update; stable in (0, 2). 0: no correction (the plain gate).
    public var rate: Float = 0
    /// Distances a map is kept for (0 ... this); predictions from farther are not corrected.
    public static let maximumDistance = 3
    /// Updates made so far, over all distances.
    public private(set) var updates = 0

    private final class Map {
        /// experts × (hidden + 1)
        var weights: [Float]
        /// Features and corrected logits of the last single-token prediction, until the
        /// layer routes that token.
        var input: [Float]
        var logits: [Float]
        var pending = false

        init(experts: Int, width: Int) {
            weights = [Float](repeating: 0, count: experts * width)
            input = [Float](repeating: 0, count: width)
            logits = [Float](repeating: 0, count: experts)
        }
    }
    private var maps: [Map?] = Array(repeating: nil, count: maximumDistance + 1)
    private var width: Int { hidden + 1 }

    public init(experts: Int, hidden: Int) {
        self.experts = experts
        self.hidden = hidden
    }

    /// Memory the maps take when predictions come from `distances` distances.
    public static func bytes(experts: Int, hidden: Int, distances: Int) -> Int {
        distances * 4 * (experts * (hidden + 1) + hidden + 1 + experts)
    }

    /// Adds the correction for predictions made `distance` layers ahead to the logits of a
    /// single token computed from its normalized input `input` (hidden), and remembers them
    /// for `learn`. A batch (prefill) keeps the plain gate's logits: its read-ahead takes the
    /// union of its tokens' predictions, and correcting every token would cost a router's
    /// worth of multiply-adds per token, layer and distance for little.
    func apply(input: UnsafePointer<Float>, tokens: Int, logits: UnsafeMutablePointer<Float>, distance: Int) {
        guard rate > 0, distance >= 0, distance <= Self.maximumDistance else { return }
        guard tokens == 1 else {
            maps[distance]?.pending = false
            return
        }
        let map: Map
        if let m = maps[distance] {
            map = m
        } else {
            map = Map(experts: experts, width: width)
            maps[distance] = map
        }
        let w = width
        map.input.withUnsafeMutableBufferPointer { zb in
            let z = zb.baseAddress!
            z.update(from: input, count: hidden)
            z[hidden] = VectorMath.dot(input, input, count: hidden).squareRoot()
            map.weights.withUnsafeBufferPointer { a in
                for e in 0..<experts { logits[e] += VectorMath.dot(a.baseAddress! + e * w, z, count: w) }
            }
        }
        map.pending = true
        map.logits.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: logits, count: experts) }
    }

    /// Whether some distance's last prediction waits for its token to be routed.
    var isPending: Bool { maps.contains { $0?.pending == true } }

    /// The layer routed a batch: its tokens were not the ones predicted alone, nothing to learn.
    func forgetPending() {
        for case let map? in maps { map.pending = false }
    }

    /// Learns from the router's logits (before softmax) for `tokens` tokens: one step for
    /// each distance whose last prediction was of this single token.
    func learn(actual: UnsafePointer<Float>, tokens: Int) {
        for case let map? in maps where map.pending {
            map.pending = false
            guard tokens == 1 else { continue }
            step(map, actual: actual)
        }
    }

    private func step(_ map: Map, actual: UnsafePointer<Float>) {
        let w = width
        map.input.withUnsafeBufferPointer { zb in
            let z = zb.baseAddress!
            // |z|²: the input's squared norm twice over, as the bias feature is that norm.
            let energy = 2 * z[hidden] * z[hidden]
            guard energy > 0, energy.isFinite else { return }
            let scale = rate / energy
            map.weights.withUnsafeMutableBufferPointer { a in
                for e in 0..<experts {
                    let error = map.logits[e] - actual[e]
                    guard error.isFinite else { continue }
                    VectorMath.addScaled(z, scale: -scale * error, into: a.baseAddress! + e * w, count: w)
                }
            }
        }
        updates += 1
    }
}
