import Foundation
import Models
import Storage
import Testing
@testable import Experts

/// A prefetched expert is kept from the cache policy until a layer uses it: a wrong
/// prediction must not cost the experts the policy would have kept.
@Suite("Prefetch staging", .serialized)
struct PrefetchStagingTests {
    /// One decode step through the first two MoE layers with the given selections, after
    /// hinting `predicted` for the second one.
    static func step(_ provider: OffloadedExpertProvider, _ first: [Int], _ second: [Int], predicted: [Int]? = nil) throws {
        let layers = provider.layout.layers
        let n = provider.layout.expertCount, k = provider.layout.expertsPerToken
        provider.beginBatch(tokens: 1)
        if let predicted {
            var probabilities = [Float](repeating: 0, count: n)
            for (rank, e) in predicted.enumerated() { probabilities[e] = 1 / Float(rank + 2) }
            provider.hint(GatePrediction(layer: layers[1], expertCount: n, expertsPerToken: k,
                                         experts: predicted, probabilities: probabilities))
        }
        let importance = [Float](repeating: 1 / Float(k), count: k)
        try provider.withExperts(layer: layers[0], experts: first, importance: importance) { _, _ in }
        try provider.withExperts(layer: layers[1], experts: second, importance: importance) { _, _ in }
    }

    @Test("a wrong prediction gives up its slot before any expert the policy keeps", arguments: ["lru", "arc", "lfu"])
    func wrongPredictionIsEvictedFirst(policy: String) throws {
        // Plain reads: each lands when the provider next looks, so which reads have landed
        // when a layer begins does not depend on the disk's timing.
        let path = Shared.model("tiny-qwen3moe.q8_0.gguf")
        let reads = try PReadBackend(path: path)
        let (_, provider) = try offloaded(path, slots: 8, policy: policy, prefetch: .gate, expertReads: { _ in reads })
        let k = provider.layout.expertsPerToken
        try #require(k == 4 && provider.pool.slotCount == 8 && provider.layout.expertCount >= 12)
        let first = Array(0..<4), second = Array(4..<8), wrong = Array(8..<12)
        try Self.step(provider, first, second)                    // 8 misses fill the pool
        try Self.step(provider, first, second)                    // 8 hits
        #expect(provider.stats.totalMisses == 8)
        // The prediction for the second layer is wrong: its reads take the second layer's
        // slots (nothing else is free), and the second layer reads its experts back into the
        // slots of the wrong prediction, not into the first layer's.
        try Self.step(provider, first, second, predicted: wrong)
        #expect(provider.stats.prefetchesIssued == 4)
        #expect(provider.stats.prefetchesWasted == 4)
        #expect(provider.stats.prefetchesUsed == 0)
        let missesBefore = provider.stats.totalMisses
        try Self.step(provider, first, second)
        #expect(provider.stats.totalMisses == missesBefore, "\(policy): the experts both layers use stayed resident")
        for e in first + second {
            let layer = provider.layout.layers[e < 4 ? 0 : 1]
            #expect(provider.isResident(layer: layer, expert: e % 4 + (e < 4 ? 0 : 4)))
        }
    }

    @Test("right predictions leave the pool as loading on demand does: the policy sees each use once", arguments: ["lru", "lfu", "arc"])
    func rightPredictionsKeepThePolicysChoice(policy: String) throws {
        let path = Shared.model("tiny-qwen3moe.q8_0.gguf")
        let (_, onDemand) = try offloaded(path, slots: 8, policy: policy, prefetch: .none)
        let reads = try PReadBackend(path: path)
        let (_, ahead) = try offloaded(path, slots: 8, policy: policy, prefetch: .gate, expertReads: { _ in reads })
        // Step 1 reads the second layer's 8-11 ahead, into the slots of 4-7 (as their misses
        // would); step 2 then evicts by what the policy made of that: for ARC, a first use
        // counted as a hit would have put 8-11 among the frequent experts.
        let steps: [(first: [Int], second: [Int], predicted: [Int]?)] = [
            (Array(0..<4), Array(4..<8), nil), (Array(0..<4), Array(8..<12), Array(8..<12)), (Array(12..<16), Array(4..<8), nil)]
        for (i, step) in steps.enumerated() {
            try Self.step(onDemand, step.first, step.second)
            try Self.step(ahead, step.first, step.second, predicted: step.predicted)
            #expect(Set(ahead.residentSlots.keys) == Set(onDemand.residentSlots.keys), "\(policy), step \(i)")
        }
        #expect(ahead.stats.prefetchesUsed == 4 && ahead.stats.prefetchesWasted == 0)
    }
}
