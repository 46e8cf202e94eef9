import Foundation
import Models
import Testing
@testable import Experts

@Suite("Path prefetch", .serialized)
struct PathPrefetchTests {
    @Test("one token's candidates: the gate's order, or the gate mixed with what followed this layer's experts")
    func rankingMixesGateAndPath() throws {
        let (_, provider) = try offloaded(Shared.model("tiny-qwen3moe.q8_0.gguf"), slots: 8, prefetch: .path)
        let layers = provider.layout.layers
        let n = provider.layout.expertCount, k = provider.layout.expertsPerToken
        // The gate favours expert 0 a little over expert 1, and the rest less.
        var probabilities = [Float](repeating: 1 / Float(n), count: n)
        probabilities[0] += 0.02
        probabilities[1] += 0.01
        let prediction = GatePrediction(layer: layers[1], expertCount: n, expertsPerToken: k,
                                        experts: Array(0..<k), probabilities: probabilities)
        // Statistics: after experts 2 and 3 at the first layer, tokens always took 1 and 5.
        var path = RoutingPathPredictor(expertCount: n, moeLayers: layers)
        for _ in 0..<50 {
            path.observe(layer: layers[0], experts: [2, 3])
            path.observe(layer: layers[1], experts: [1, 5])
        }
        provider.pathPredictor = path
        let mixed = provider.readAhead.ranking(prediction, current: layers[0], experts: [2, 3])
        #expect(Array(mixed.prefix(2)).sorted() == [1, 5], "\(mixed)")
        #expect(mixed.count == n, "one token ranks every expert, so more than k can be read")
        // The gate alone: its order, every expert.
        provider.readAhead.pathWeight = 0
        #expect(Array(provider.readAhead.ranking(prediction, current: layers[0], experts: [2, 3]).prefix(2)) == [0, 1])
        // Statistics only apply to the layer right after the current one.
        provider.readAhead.pathWeight = 0.2
        #expect(Array(provider.readAhead.ranking(prediction, current: layers[1], experts: [2, 3]).prefix(2)) == [0, 1])
    }

    @Test("the statistics learn while decoding, and logits stay those of the resident run")
    func learnsWhileRunning() throws {
        let path = Shared.model("tiny-qwen3moe.q8_0.gguf")
        let expected = try scriptLogits(try DecoderModel.load(path: path), pool: OffloadingTests.pool)
        let (model, provider) = try offloaded(path, slots: 6, prefetch: .path)
        let got = try scriptLogits(model, pool: OffloadingTests.pool)
        #expect(zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern })
        let statistics = try #require(provider.pathPredictor)
        // 6 decode steps, each one token through every MoE layer (the batch is not learned from).
        #expect(statistics.popularity.allSatisfy { $0.reduce(0, +) == 6 * provider.layout.expertsPerToken })
        #expect(provider.stats.predictionRecall > 0)
    }
}
