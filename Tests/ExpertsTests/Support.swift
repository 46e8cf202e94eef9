import Foundation
import TestSupport

/// `../shared/` beside the repository (or `MOE_SHARED_DIR`): llama.cpp-made tiny models.
enum Shared {
    static let root = SharedData.root

    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }

    /// The MoE models, one of each architecture and a spread of types.
    static let moeModels = ["tiny-qwen3moe.q8_0.gguf", "tiny-qwen2moe.q4_k_m.gguf", "tiny-mixtral.q4_0.gguf",
                            "tiny-olmoe.q6_k.gguf", "tiny-qwen3moe.f16.gguf"]
}
