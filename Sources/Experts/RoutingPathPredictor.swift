import Trace

/// Predicts a MoE layer's experts from the path tokens took so far (ExpertFlow-style): per
/// pair of consecutive MoE layers, how many tokens chose expert j at the second when they
/// chose expert i at the first, plus how many chose each expert at each layer. Learned
/// online, as tokens are routed (`observe`), or from a routing record (`init(records:)`),
/// so that statistics gathered on one run seed another.
///
/// The prediction for layer L+1 given a token's experts at L is the mean, over those
/// experts i, of the smoothed conditional distribution P(j | i) = (T[i][j] + β·prior(j)) /
/// (Σ_j T[i][j] + β), with prior(j) the layer's Laplace-smoothed popularity: a distribution
/// over the next layer's experts (it sums to 1, as the router's softmax does), so it can be
/// mixed with the cross-layer gate's probabilities (`combined`).
public struct RoutingPathPredictor: Sendable {
    public let expertCount: Int
    /// The MoE layers, ascending; transitions run from each to the next.
    public let moeLayers: [Int]
    /// Pseudo-count of the popularity prior in each conditional distribution.
    public var smoothing: Float = 1
    /// transitions[i][a * expertCount + b]: tokens that chose a at moeLayers[i] and b at
    /// moeLayers[i + 1].
    public private(set) var transitions: [[Int]]
    /// popularity[i][e]: tokens that chose e at moeLayers[i].
    public private(set) var popularity: [[Int]]
    /// The batch last observed at each MoE layer (index into moeLayers), to pair with the next.
    private var lastBatch: [[[Int]]]

    public init(expertCount: Int, moeLayers: [Int]) {
        precondition(expertCount > 0 && !moeLayers.isEmpty && moeLayers == moeLayers.sorted())
        self.expertCount = expertCount
        self.moeLayers = moeLayers
        transitions = Array(repeating: Array(repeating: 0, count: expertCount * expertCount),
                            count: max(moeLayers.count - 1, 0))
        popularity = Array(repeating: Array(repeating: 0, count: expertCount), count: moeLayers.count)
        lastBatch = Array(repeating: [], count: moeLayers.count)
    }

    public init(header: RoutingRecordHeader) {
        self.init(expertCount: header.experts, moeLayers: header.moeLayers)
    }

    /// Statistics of every token path in `records` (as a routing record lists them: each
    /// token's layers contiguous and ascending).
    public init(header: RoutingRecordHeader, records: some Sequence<RoutingRecord>) {
        self.init(header: header)
        var path: [RoutingRecord] = []
        for r in records {
            if let last = path.last, last.batch != r.batch || last.position != r.position || last.layer >= r.layer {
                observe(path: path)
                path.removeAll(keepingCapacity: true)
            }
            path.append(r)
        }
        observe(path: path)
    }

    /// Statistics of every token path in the routing record at `path`.
    public init(recordFile path: String) throws(RoutingRecordError) {
        let reader = try RoutingRecordReader(path: path)
        self.init(header: reader.header)
        while let p = try reader.nextPath() { observe(path: p.layers) }
    }

    private func index(of layer: Int) -> Int? { moeLayers.firstIndex(of: layer) }

    // MARK: Learning

    /// One token's experts at `layer`. Its experts at the previous MoE layer are the ones
    /// last observed there (call layer by layer, in order; for batches, `observe(layer:batch:)`).
    public mutating func observe(layer: Int, experts: [Int]) {
        observe(layer: layer, batch: [experts])
    }

    /// A batch's experts at `layer`, token by token: `batch[t]` is paired with token t of the
    /// batch last observed at the previous MoE layer (when it had as many tokens). Observing
    /// the first MoE layer starts a new pass.
    public mutating func observe(layer: Int, batch: [[Int]]) {
        guard let i = index(of: layer) else { return }
        if i == 0 {
            for l in lastBatch.indices { lastBatch[l] = [] }
        }
        for experts in batch {
            for e in experts where e >= 0 && e < expertCount { popularity[i][e] += 1 }
        }
        if i > 0, lastBatch[i - 1].count == batch.count {
            for (before, after) in zip(lastBatch[i - 1], batch) { count(from: before, to: after, at: i - 1) }
        }
        lastBatch[i] = batch
    }

    /// One token's whole path: its records at consecutive MoE layers.
    public mutating func observe(path: [RoutingRecord]) {
        var previous: (index: Int, experts: [Int])?
        for r in path {
            guard let i = index(of: r.layer) else { continue }
            for e in r.experts where e >= 0 && e < expertCount { popularity[i][e] += 1 }
            if let previous, previous.index == i - 1 { count(from: previous.experts, to: r.experts, at: previous.index) }
            previous = (i, r.experts)
        }
    }

    private mutating func count(from before: [Int], to after: [Int], at i: Int) {
        let n = expertCount
        for a in before where a >= 0 && a < n {
            for b in after where b >= 0 && b < n { transitions[i][a * n + b] += 1 }
        }
    }

    // MARK: Predicting

    /// A distribution over the experts of `nextLayer` for a token that chose `currentExperts`
    /// at the MoE layer before it (sums to 1; uniform with no statistics). With no MoE layer
    /// before `nextLayer`, or no current experts, the layer's popularity.
    public func scores(nextLayer: Int, given currentExperts: [Int]) -> [Float] {
        let n = expertCount
        guard let j = index(of: nextLayer) else { return Array(repeating: 1 / Float(n), count: n) }
        let pop = popularity[j]
        let popTotal = Float(pop.reduce(0, +))
        let prior = pop.map { (Float($0) + 1) / (popTotal + Float(n)) }
        let known = currentExperts.filter { $0 >= 0 && $0 < n }
        guard j > 0, !known.isEmpty else { return prior }
        let row = transitions[j - 1]
        var result = [Float](repeating: 0, count: n)
        let share = 1 / Float(known.count)
        for a in known {
            var total = 0
            for b in 0..<n { total += row[a * n + b] }
            let denominator = Float(total) + smoothing
            for b in 0..<n {
                result[b] += share * (Float(row[a * n + b]) + smoothing * prior[b]) / denominator
            }
        }
        return result
    }

    /// Experts ranked by `(1 - weight) · gate + weight · path`, best first (ties to the
    /// lower id): `gate` the cross-layer gate's probabilities for the layer, `path` this
    /// predictor's `scores`. Weight 0 is the gate alone, 1 the path alone.
    public static func rank(gate: [Float], path: [Float], weight: Float) -> [Int] {
        precondition(gate.count == path.count)
        let combined = zip(gate, path).map { (1 - weight) * $0 + weight * $1 }
        return combined.indices.sorted { combined[$0] != combined[$1] ? combined[$0] > combined[$1] : $0 < $1 }
    }

    /// The `count` most likely experts of `nextLayer` for a token that chose `currentExperts`
    /// at the layer before, mixing in the gate's probabilities with `weight` (see `rank`).
    public func predict(nextLayer: Int, given currentExperts: [Int], gate: [Float]? = nil, weight: Float = 1,
                        count: Int) -> [Int] {
        let path = scores(nextLayer: nextLayer, given: currentExperts)
        let ranked = Self.rank(gate: gate ?? path, path: path, weight: gate == nil ? 1 : weight)
        return Array(ranked.prefix(count))
    }
}

extension RoutingPathPredictor: Equatable {
    /// Same layers and same counts (what an unfinished pass left pending is not compared).
    public static func == (a: Self, b: Self) -> Bool {
        a.expertCount == b.expertCount && a.moeLayers == b.moeLayers && a.smoothing == b.smoothing
            && a.transitions == b.transitions && a.popularity == b.popularity
    }
}
