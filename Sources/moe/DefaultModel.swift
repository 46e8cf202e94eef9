import Foundation

/// The small trained model that ships with moe (models/moe-default.q8_0.gguf), used when a
/// command is given no `-m`.
enum DefaultModel {
    static let fileName = "moe-default.q8_0.gguf"

    /// Where the default model is: `$MOE_DEFAULT_MODEL`, next to the executable, in an
    /// installed share/moe, or in the `models/` folder of the checkout the executable was
    /// built in (found by walking up from the executable and from the working directory).
    static func locate() -> String? {
        let env = ProcessInfo.processInfo.environment
        if let path = env["MOE_DEFAULT_MODEL"], !path.isEmpty { return path }
        var candidates: [URL] = []
        let exe = URL(fileURLWithPath: CommandLine.executablePathResolved).deletingLastPathComponent()
        candidates.append(exe.appendingPathComponent(fileName))
        candidates.append(exe.appendingPathComponent("../share/moe/\(fileName)").standardized)
        for start in [exe, URL(fileURLWithPath: FileManager.default.currentDirectoryPath)] {
            var dir = start
            for _ in 0..<6 {
                candidates.append(dir.appendingPathComponent("models/\(fileName)"))
                dir = dir.deletingLastPathComponent()
            }
        }
        return candidates.first { FileManager.default.fileExists(atPath: $0.path) }?.path
    }
}

extension CommandLine {
    /// The running executable's path with symbolic links resolved (/proc/self/exe on Linux).
    static var executablePathResolved: String {
        if let p = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return p }
        return arguments.first ?? "."
    }
}
