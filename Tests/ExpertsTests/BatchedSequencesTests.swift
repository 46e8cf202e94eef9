import Foundation
import KV
import Kernels
import Models
import Testing
import TestSupport
@testable import Experts

/// Per forward pass: how many distinct (layer, expert) pairs it routed to, and how many
/// lookups and reads the provider made for it.
final class RouteCounter: RoutingObserver {
    struct Batch { var distinct: Int; var lookups: Int; var reads: Int }
    private var current = Set<Int>()
    private var before = (lookups: 0, reads: 0)
    private(set) var batches: [Batch] = []
    let provider: OffloadedExpertProvider
    init(provider: OffloadedExpertProvider) { self.provider = provider }
    func beginBatch(tokens: [Int], positions: [Int]) {
        current.removeAll()
        before = (provider.stats.expertUses, provider.stats.expertsRead)
    }
    func didRoute(layer: Int, routes: [MixtureOfExperts.Route], prediction: GatePrediction?) {
        for r in routes { for e in r.experts { current.insert(layer * provider.layout.expertCount + e) } }
    }
    func endBatch() throws(ModelError) {
        batches.append(Batch(distinct: current.count, lookups: provider.stats.expertUses - before.lookups,
                             reads: provider.stats.expertsRead - before.reads))
    }
}

/// Several sequences in one batch on an offloaded model: the batch's tokens are grouped by
/// expert, so an expert several sequences chose is looked up and read once per batch, and
/// a selection larger than the pool runs in waves with the resident model's logits.
@Suite("Several sequences on offloaded experts", .serialized)
struct BatchedSequencesTests {
    /// Three sequences: prompts of 5, 11 and 17 tokens in one batch, then 6 steps of one
    /// decode token each (the tokens of the previous step's greedy picks). Every chunk's
    /// logits, in order.
    static func script(_ model: DecoderModel) throws -> [[Float]] {
        let pool = try model.makeKVPool(memoryBytes: 12 * model.kvLayout().blockBytes)
        let caches = (0..<3).map { _ in pool.makeSequence(capacity: 64) }
        let workspace = Workspace()
        let vocab = model.vocabularySize
        let prompts = [5, 11, 17].enumerated().map { i, n in (0..<n).map { (($0 &* 7919) &+ 13 &* (i + 1)) % vocab } }
        var all = try model.forward((0..<3).map { SequenceChunk(tokens: prompts[$0], cache: caches[$0]) },
                                    workspace: workspace, pool: OffloadingTests.pool)
        var last = all
        for _ in 0..<6 {
            let next = last.map { l in l.indices.max { l[$0] < l[$1] }! }
            last = try model.forward((0..<3).map { SequenceChunk(tokens: [next[$0]], cache: caches[$0]) },
                                     workspace: workspace, pool: OffloadingTests.pool)
            all += last
        }
        return all
    }

    @Test("logits match the resident model and each expert is looked up and read at most once per batch",
          arguments: ["tiny-qwen3moe.q8_0.gguf", "tiny-mixtral.q4_0.gguf", "tiny-olmoe.q6_k.gguf"])
    func offloadedBatch(_ name: String) throws {
        let path = Shared.model(name)
        let resident = try DecoderModel.load(path: path)
        let expected = try Self.script(resident)
        let (_, probe) = try offloaded(path, slots: nil)
        let k = probe.layout.expertsPerToken
        // The smallest pool (k slots: a batch of three tokens needs waves) and one of twice that.
        for slots in [k, 2 * k] {
            let (model, provider) = try offloaded(path, slots: slots, prefetch: .none)
            let counter = RouteCounter(provider: provider)
            model.routingObserver = counter
            let got = try Self.script(model)
            #expect(got.count == expected.count)
            #expect(zip(got, expected).allSatisfy { $0 == $1 }, "\(name), \(slots) slots: logits differ from the resident model")
            // Each of the 7 batches: one lookup per distinct (layer, expert) it routed to, at
            // most one read of each, and some batch needed reads.
            #expect(counter.batches.count == 7)
            for (i, batch) in counter.batches.enumerated() {
                #expect(batch.lookups == batch.distinct && batch.reads <= batch.distinct,
                        "\(name), \(slots) slots, batch \(i): \(batch)")
            }
            #expect(counter.batches.contains { $0.reads > 0 })
            // Decode batches of three sequences share experts: fewer lookups than tokens × k per layer.
            let layers = provider.layout.layers.count
            #expect(counter.batches.dropFirst().contains { $0.distinct < 3 * k * layers })
        }
    }
}
