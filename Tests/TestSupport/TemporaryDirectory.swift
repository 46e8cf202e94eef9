import Foundation

/// A fresh directory under the system's temporary directory, for a test's files; `remove()`
/// deletes it with everything in it. One definition for every test target.
public struct TemporaryDirectory {
    public let url: URL

    /// `prefix` names the directory (`PREFIX-UUID`), so a leftover says which tests made it.
    public init(prefix: String = "moe-test") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    public func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    public func remove() { try? FileManager.default.removeItem(at: url) }

    /// Runs `body` with a fresh directory and removes it afterwards.
    public static func with<T>(prefix: String = "moe-test", _ body: (URL) throws -> T) throws -> T {
        let dir = try TemporaryDirectory(prefix: prefix)
        defer { dir.remove() }
        return try body(dir.url)
    }
}
