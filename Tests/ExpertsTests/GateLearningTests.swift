import Foundation
import Kernels
import Models
import Testing
@testable import Experts

/// Read-ahead with the cross-layer gate corrected online (`--gate-learning`), as a run sees it.
@Suite("Read-ahead learning", .serialized)
struct GateLearningTests {
    /// Decodes `tokens` pseudo-random tokens one at a time (as `moe bench` does) with
    /// `--prefetch gate` and the given learning rate; returns the prediction recall over the
    /// second half and the corrections' updates.
    static func recall(_ path: String, rate: Float, tokens: Int) throws -> (recall: Double, updates: Int) {
        var options = OffloadOptions()
        options.prefetch = .gate
        options.gateLearningRate = rate
        options.expertMemory = 8 << 20
        let (model, loaded) = try OffloadedModel.load(path: path, options: options)
        let provider = try #require(loaded)
        #expect(provider.gateLearningRate == rate)
        let cache = model.makeCache(capacity: tokens)
        let workspace = Workspace()
        var state: UInt64 = 12345
        for i in 0..<tokens {
            // Recall counts the second half: after the corrections had tokens to learn from.
            if i == tokens / 2 { provider.stats.reset() }
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let token = Int(state >> 33) % model.vocabularySize
            _ = try model.forward([token], cache: cache, logits: .last, workspace: workspace, pool: OffloadingTests.pool)
        }
        return (provider.stats.predictionRecall, provider.readAhead.gate.updates)
    }

    static let defaultModel = MemoryCopyTests.repository.appendingPathComponent("models/moe-default.q8_0.gguf").path

    /// The shared random-weight models gain a little (their 3 layers route on states the gate
    /// already sees well); the trained default model, whose layers change the state more,
    /// gains most.
    @Test("learning raises the gate's recall over a plain cross-layer gate",
          arguments: [("tiny-qwen3moe.q8_0.gguf", 0.01), ("tiny-mixtral.q4_0.gguf", 0.01), ("tiny-olmoe.q6_k.gguf", 0.01),
                      ("tiny-qwen2moe.q4_k_m.gguf", 0.01), ("moe-default.q8_0.gguf", 0.05)])
    func raisesRecall(_ name: String, gain: Double) throws {
        let path = name.hasPrefix("moe-default") ? Self.defaultModel : Shared.model(name)
        let plain = try Self.recall(path, rate: 0, tokens: 240)
        let learned = try Self.recall(path, rate: 0.3, tokens: 240)
        #expect(plain.updates == 0)
        #expect(learned.updates > 0)
        #expect(learned.recall >= plain.recall + gain, "\(name): recall \(plain.recall) plain, \(learned.recall) learned")
    }

    @Test("the corrections' memory comes out of the expert budget; without room for it, no learning")
    func budget() throws {
        let path = Shared.model("tiny-qwen3moe.q8_0.gguf")
        var options = OffloadOptions()
        options.prefetch = .adaptive
        let (probeModel, probe) = try offloaded(path, slots: nil, prefetch: .none)
        let bytes = OffloadedModel.predictionCorrectionBytes(probe.layout, hidden: probeModel.hidden, options: options)
        let layers = probe.layout.layers.count, e = probe.layout.expertCount, h = probeModel.hidden
        // Three distances (the adaptive look-ahead's deepest) of experts × (hidden + 1) floats.
        #expect(bytes == layers * 3 * 4 * (e * (h + 1) + h + 1 + e))
        let slots = 2 * probe.layout.expertsPerToken
        options.expertMemory = slots * probe.pool.slotBytes + bytes
        let (_, provider) = try OffloadedModel.load(path: path, options: options)
        #expect(provider?.pool.slotCount == slots)
        #expect(provider?.gateLearningRate == options.gateLearningRate)
        // At the minimum budget the experts take it all: predictions stay uncorrected.
        options.expertMemory = probe.layout.expertsPerToken * probe.pool.slotBytes
        let (_, small) = try OffloadedModel.load(path: path, options: options)
        #expect(small?.gateLearningRate == 0)
        // No read-ahead, nothing to learn and nothing taken.
        options.prefetch = .none
        #expect(OffloadedModel.predictionCorrectionBytes(probe.layout, hidden: h, options: options) == 0)
    }
}
