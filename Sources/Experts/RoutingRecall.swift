import Trace

/// How well a MoE layer's experts can be predicted before it runs, measured on a routing
/// record: the top-k recall (of the experts a layer chose, the share among the k predicted)
/// per layer and overall, of
///   (a) the cross-layer gate, as recorded;
///   (b) a `RoutingPathPredictor` learned online over the file: each token's layer is
///       predicted from its experts at the MoE layer before, with the statistics of the
///       tokens before it (and of `seed`, if given), then the token's path is learned;
///   (c) their mix `(1 - a) · gate + a · path` for each weight a.
/// Each predictor names `predictCount` experts (by default the router's k): naming more
/// raises recall at the cost of reading experts that are not used.
/// Only layers the gate predicted (those with a MoE layer just before) are counted, so the
/// three share one denominator.
public struct RoutingRecall: Sendable {
    public struct Row: Sendable, Equatable {
        /// The layer; nil for the overall row.
        public var layer: Int?
        /// Experts chosen in all (tokens × k): the denominator.
        public var selected = 0
        public var gateHits = 0
        public var pathHits = 0
        /// Hits of the mix, one per weight.
        public var combinedHits: [Int]

        public var gate: Double { ratio(gateHits) }
        public var path: Double { ratio(pathHits) }
        public var combined: [Double] { combinedHits.map(ratio) }
        private func ratio(_ hits: Int) -> Double { selected > 0 ? Double(hits) / Double(selected) : 0 }
    }

    public var header: RoutingRecordHeader
    public var weights: [Float]
    /// Experts each predictor named per token and layer.
    public var predictCount: Int
    public var layers: [Row]
    public var overall: Row
    /// Token paths read, and token-layers counted.
    public var tokens = 0
    public var predictions = 0

    /// The weight whose mix has the best overall recall (the first of equals).
    public var bestWeight: Float? {
        guard !weights.isEmpty else { return nil }
        let hits = overall.combinedHits
        return weights[hits.indices.max { hits[$0] < hits[$1] || (hits[$0] == hits[$1] && $0 > $1) }!]
    }

    public static let defaultWeights: [Float] = [0.1, 0.25, 0.5, 0.75, 0.9]

    /// Measures the record at `path`. `seed` starts the path predictor from earlier
    /// statistics (of another record of the same model); its layers must match the file's.
    public static func measure(recordFile path: String, weights: [Float] = defaultWeights,
                               seed: RoutingPathPredictor? = nil, predictCount: Int? = nil) throws(RoutingRecordError) -> RoutingRecall {
        let reader = try RoutingRecordReader(path: path)
        let header = reader.header
        var predictor = seed ?? RoutingPathPredictor(header: header)
        if let seed, seed.expertCount != header.experts || seed.moeLayers != header.moeLayers {
            throw .notARoutingRecord(path: path, detail: "its model has \(header.experts) experts on layers \(header.moeLayers); "
                                     + "the seed statistics are for \(seed.expertCount) on \(seed.moeLayers)")
        }
        let k = min(max(predictCount ?? header.expertsPerToken, 1), header.experts)
        var rows = Dictionary(uniqueKeysWithValues: header.moeLayers.map {
            ($0, Row(layer: $0, combinedHits: Array(repeating: 0, count: weights.count)))
        })
        var result = RoutingRecall(header: header, weights: weights, predictCount: k, layers: [],
                                   overall: Row(layer: nil, combinedHits: Array(repeating: 0, count: weights.count)))
        while let token = try reader.nextPath() {
            result.tokens += 1
            var previous: RoutingRecord?
            for r in token.layers {
                defer { previous = r }
                guard let predicted = r.predicted, let gate = r.predictedProbabilities else { continue }
                let actual = Set(r.experts)
                var row = rows[r.layer]!
                row.selected += actual.count
                // The recorded top k, or the gate's probabilities when more are named.
                let gateNamed = k == predicted.count ? predicted : Array(RoutingPathPredictor.rank(gate: gate, path: gate, weight: 0).prefix(k))
                row.gateHits += gateNamed.filter(actual.contains).count
                var before: [Int] = []
                if let p = previous, let i = header.moeLayers.firstIndex(of: r.layer), i > 0, header.moeLayers[i - 1] == p.layer {
                    before = p.experts
                }
                let path = predictor.scores(nextLayer: r.layer, given: before)
                row.pathHits += RoutingPathPredictor.rank(gate: path, path: path, weight: 1).prefix(k)
                    .filter(actual.contains).count
                for (w, a) in weights.enumerated() {
                    row.combinedHits[w] += RoutingPathPredictor.rank(gate: gate, path: path, weight: a).prefix(k)
                        .filter(actual.contains).count
                }
                rows[r.layer] = row
                result.predictions += 1
            }
            predictor.observe(path: token.layers)
        }
        result.layers = header.moeLayers.compactMap { rows[$0] }.filter { $0.selected > 0 }
        for row in result.layers {
            result.overall.selected += row.selected
            result.overall.gateHits += row.gateHits
            result.overall.pathHits += row.pathHits
            for w in weights.indices { result.overall.combinedHits[w] += row.combinedHits[w] }
        }
        return result
    }
}
