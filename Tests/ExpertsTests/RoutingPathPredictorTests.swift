import Foundation
import TestSupport
import Testing
import Trace
@testable import Experts

/// The routing-path predictor: counts, prediction, seeding from a record, the gate mix, and
/// the recall measurement over a record file.
@Suite("Routing-path predictor")
struct RoutingPathPredictorTests {
    /// A deterministic routing: a token picks x in 0..<4 and then, at MoE layer i, experts
    /// {(x + i) % 4, (x + i) % 4 + 4}: each expert of a layer says exactly which two come next.
    static let layers = [0, 1, 2, 3]
    static func path(_ x: Int) -> [[Int]] { layers.indices.map { i in [(x + i) % 4, (x + i) % 4 + 4] } }
    static let header = RoutingRecordHeader(model: "synthetic", architecture: "test", layers: 4, moeLayers: layers,
                                            experts: 8, expertsPerToken: 2)

    static func records(tokens: [Int], gate: (Int, Int) -> [Float] = { _, _ in Array(repeating: 0.125, count: 8) }) -> [RoutingRecord] {
        var out: [RoutingRecord] = []
        for (t, x) in tokens.enumerated() {
            for (i, experts) in path(x).enumerated() {
                var r = RoutingRecord(batch: t, position: t, token: x, layer: layers[i], experts: experts, weights: [0.5, 0.5])
                if i > 0 {
                    let g = gate(x, i)
                    r.predictedProbabilities = g
                    r.predicted = Array(RoutingPathPredictor.rank(gate: g, path: g, weight: 0).prefix(2))
                }
                out.append(r)
            }
        }
        return out
    }

    @Test func transitionsAndPopularityAreCounted() {
        var p = RoutingPathPredictor(expertCount: 4, moeLayers: [1, 3])
        p.observe(layer: 1, experts: [0, 2])
        p.observe(layer: 3, experts: [1, 2])
        p.observe(layer: 1, experts: [0, 3])
        p.observe(layer: 3, experts: [1, 0])
        #expect(p.popularity == [[2, 0, 1, 1], [1, 2, 1, 0]])
        // Layer 1 → 3: 0→1 twice, 0→2, 2→1, 2→2, 0→0, 3→1, 3→0.
        var expected = Array(repeating: 0, count: 16)
        for (a, b) in [(0, 1), (0, 2), (2, 1), (2, 2), (0, 1), (0, 0), (3, 1), (3, 0)] { expected[a * 4 + b] += 1 }
        #expect(p.transitions == [expected])
        // Layers outside the model are ignored; a batch pairs tokens by their place in it.
        p.observe(layer: 2, experts: [1, 1])
        var q = RoutingPathPredictor(expertCount: 4, moeLayers: [1, 3])
        q.observe(layer: 1, batch: [[0, 2], [0, 3]])
        q.observe(layer: 3, batch: [[1, 2], [1, 0]])
        #expect(p == q)
        // The same as whole paths.
        var r = RoutingPathPredictor(expertCount: 4, moeLayers: [1, 3])
        for (a, b) in [([0, 2], [1, 2]), ([0, 3], [1, 0])] {
            r.observe(path: [RoutingRecord(batch: 0, position: 0, token: 0, layer: 1, experts: a, weights: [1, 0]),
                             RoutingRecord(batch: 0, position: 0, token: 0, layer: 3, experts: b, weights: [1, 0])])
        }
        #expect(r == q)
    }

    @Test func scoresAreADistribution() {
        let p = RoutingPathPredictor(expertCount: 8, moeLayers: Self.layers)
        let cold = p.scores(nextLayer: 2, given: [1, 5])
        #expect(cold.allSatisfy { abs($0 - 0.125) < 1e-6 }, "no statistics: uniform")
        var q = p
        for x in 0..<4 { q.observe(path: Self.records(tokens: [x]).map { $0 }) }
        let s = q.scores(nextLayer: 2, given: [1, 5])
        #expect(abs(s.reduce(0, +) - 1) < 1e-5)
        #expect(s.indices.max { s[$0] < s[$1] }.map { [2, 6].contains($0) } == true)
    }

    @Test("a deterministic routing path is predicted with 100% recall once seen")
    func deterministicPathFullRecall() {
        var p = RoutingPathPredictor(expertCount: 8, moeLayers: Self.layers)
        var rng = SplitMix64(seed: 5)
        for _ in 0..<200 {
            let path = Self.path(Int.random(in: 0..<4, using: &rng))
            for (i, experts) in path.enumerated() { p.observe(layer: Self.layers[i], experts: experts) }
        }
        var hits = 0, total = 0
        for _ in 0..<100 {
            let path = Self.path(Int.random(in: 0..<4, using: &rng))
            for i in 1..<path.count {
                let predicted = p.predict(nextLayer: Self.layers[i], given: path[i - 1], count: 2)
                hits += Set(predicted).intersection(path[i]).count
                total += 2
            }
        }
        #expect(hits == total)
    }

    @Test("statistics read from a record equal those learned while routing")
    func recordFileSeedsTheSameStatistics() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var rng = SplitMix64(seed: 11)
        let tokens = (0..<50).map { _ in Int.random(in: 0..<4, using: &rng) }
        let records = Self.records(tokens: tokens)
        let file = dir.path("r.jsonl")
        let w = try RoutingRecordWriter(path: file, header: Self.header)
        for r in records { try w.append(r) }
        try w.close()

        var online = RoutingPathPredictor(header: Self.header)
        for x in tokens {
            for (i, experts) in Self.path(x).enumerated() { online.observe(layer: Self.layers[i], experts: experts) }
        }
        let loaded = try RoutingPathPredictor(recordFile: file)
        #expect(loaded == online)
        #expect(RoutingPathPredictor(header: Self.header, records: records) == online)
        #expect(loaded.popularity[0].reduce(0, +) == 2 * tokens.count)
    }

    @Test func theMixRanksAsWeighted() {
        let gate: [Float] = [0.6, 0.3, 0.1, 0.0]
        let path: [Float] = [0.0, 0.1, 0.3, 0.6]
        #expect(RoutingPathPredictor.rank(gate: gate, path: path, weight: 0) == [0, 1, 2, 3])
        #expect(RoutingPathPredictor.rank(gate: gate, path: path, weight: 1) == [3, 2, 1, 0])
        // a = 0.5: every expert scores 0.3 but the middle ones 0.2: ties go to the lower id.
        #expect(RoutingPathPredictor.rank(gate: gate, path: path, weight: 0.5) == [0, 3, 1, 2])
        #expect(RoutingPathPredictor.rank(gate: gate, path: path, weight: 0.2) == [0, 1, 2, 3])
        #expect(RoutingPathPredictor.rank(gate: gate, path: path, weight: 0.8) == [3, 2, 1, 0])
        // Where the path favours the gate's second choice, a little weight brings it first.
        let other: [Float] = [0.0, 0.5, 0.3, 0.2]
        #expect(RoutingPathPredictor.rank(gate: gate, path: other, weight: 0.1) == [0, 1, 2, 3])
        #expect(RoutingPathPredictor.rank(gate: gate, path: other, weight: 0.4) == [1, 0, 2, 3])
        #expect(RoutingPathPredictor.rank(gate: gate, path: other, weight: 1) == [1, 2, 3, 0])
        // predict(): the gate mixed in with the weight.
        var p = RoutingPathPredictor(expertCount: 4, moeLayers: [0, 1])
        for _ in 0..<20 { p.observe(path: [
            RoutingRecord(batch: 0, position: 0, token: 0, layer: 0, experts: [0], weights: [1]),
            RoutingRecord(batch: 0, position: 0, token: 0, layer: 1, experts: [3], weights: [1]),
        ]) }
        #expect(p.predict(nextLayer: 1, given: [0], count: 1) == [3])
        #expect(p.predict(nextLayer: 1, given: [0], gate: gate, weight: 0, count: 1) == [0])
        #expect(p.predict(nextLayer: 1, given: [0], gate: gate, weight: 0.9, count: 2) == [3, 0])
    }

    @Test("recall over a record: gate as recorded, path learned online, and their mix")
    func recallMeasurement() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var rng = SplitMix64(seed: 3)
        let tokens = (0..<100).map { _ in Int.random(in: 0..<4, using: &rng) }
        // The gate is right about the first expert of each layer and wrong about the second.
        let records = Self.records(tokens: tokens) { x, i in
            var g = [Float](repeating: 0.02, count: 8)
            g[(x + i) % 4] = 0.5
            g[((x + i) % 4 + 1) % 4] = 0.38
            return g
        }
        let file = dir.path("r.jsonl")
        let w = try RoutingRecordWriter(path: file, header: Self.header)
        for r in records { try w.append(r) }
        try w.close()

        let r = try RoutingRecall.measure(recordFile: file, weights: [0, 0.5, 1])
        #expect(r.tokens == 100 && r.predictions == 300)
        #expect(r.layers.map(\.layer) == [1, 2, 3])
        #expect(r.overall.selected == 600)
        #expect(r.overall.gateHits == 300, "half right: the gate's first expert only")
        #expect(r.overall.combinedHits[0] == r.overall.gateHits, "weight 0 is the gate")
        #expect(r.overall.combinedHits[2] == r.overall.pathHits, "weight 1 is the path")
        // The path is deterministic: once each of the 4 starts has been seen, every prediction
        // is right, so at most the first few tokens miss.
        #expect(r.overall.pathHits >= 600 - 4 * 3 * 2, "\(r.overall.pathHits)")
        #expect(r.overall.combinedHits[1] > r.overall.gateHits)
        #expect(r.bestWeight != 0)

        // Seeded with the same statistics, the path predictor misses nothing; more predicted
        // experts raise the gate's recall.
        let seeded = try RoutingRecall.measure(recordFile: file, weights: [], seed: try RoutingPathPredictor(recordFile: file))
        #expect(seeded.overall.pathHits == 600)
        let wider = try RoutingRecall.measure(recordFile: file, weights: [], predictCount: 3)
        #expect(wider.predictCount == 3 && wider.overall.gateHits == 300)
        let widest = try RoutingRecall.measure(recordFile: file, weights: [], predictCount: 8)
        #expect(widest.overall.gateHits == 600)
    }
}
