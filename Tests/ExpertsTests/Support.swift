import Experts
import Foundation
import Models
import Testing
import TestSupport

/// `../shared/` beside the repository (or `MOE_SHARED_DIR`): llama.cpp-made tiny models.
enum Shared {
    static let root = SharedData.root

    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }

    /// The MoE models, one of each architecture and a spread of types.
    static let moeModels = ["tiny-qwen3moe.q8_0.gguf", "tiny-qwen2moe.q4_k_m.gguf", "tiny-mixtral.q4_0.gguf",
                            "tiny-olmoe.q6_k.gguf", "tiny-qwen3moe.f16.gguf"]
}

/// An offloaded model with precision fallback (`--fallback-threshold`, `--fallback-type`,
/// `--fallback-share`) from a pack's copies or copies made in memory.
func withFallback(_ path: String, budget: Int, threshold: Float?, type: String? = nil, policy: String = "arc",
                  prefetch: PrefetchMode = .none, share: Double = OffloadOptions().fallbackShare) throws
    -> (DecoderModel, OffloadedExpertProvider) {
    var options = OffloadOptions()
    options.expertMemory = budget
    options.policy = policy
    options.prefetch = prefetch
    options.fallbackThreshold = threshold
    options.fallbackType = type
    options.fallbackShare = share
    let (model, provider) = try OffloadedModel.load(path: path, options: options)
    return (model, try #require(provider))
}

/// An approximate run's logits stay close to the exact ones over the prompt's first 8
/// positions (the greedy steps after it may take other tokens): at each, the largest
/// difference is under a tenth of the exact logits' spread.
func expectPromptLogitsClose(_ got: [Float], _ expected: [Float], vocabulary vocab: Int, _ what: String) {
    for position in 0..<8 {
        let g = got[(position * vocab)..<((position + 1) * vocab)], e = expected[(position * vocab)..<((position + 1) * vocab)]
        let spread = e.max()! - e.min()!
        let worst = zip(g, e).map { abs($0 - $1) }.max()!
        #expect(worst < 0.1 * spread, "\(what), position \(position): worst logit difference \(worst) (spread \(spread))")
    }
}
