import Foundation

/// `../shared/` beside the repository (or `$MOE_SHARED_DIR`): the llama.cpp-made models,
/// reference logits and vocab tests that the test targets read in place. One definition for
/// every test target.
public enum SharedData {
    public static let root: URL = {
        if let env = ProcessInfo.processInfo.environment["MOE_SHARED_DIR"] { return URL(fileURLWithPath: env) }
        // Tests/TestSupport/SharedData.swift → the repository's parent folder.
        return URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("shared")
    }()

    /// A path below the root, e.g. "models/tiny-qwen3moe.q8_0.gguf".
    public static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }
}
