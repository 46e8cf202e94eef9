import Foundation

/// The built `moe` executable next to the test bundle (or `.build/debug/moe` when the bundle
/// lives elsewhere), for the suites that run it as a user does.
public let moeExecutable: URL = {
    var dir = Bundle.main.bundleURL
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("moe")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/debug/moe")
}()
