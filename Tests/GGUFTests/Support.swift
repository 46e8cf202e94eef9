import Foundation
import TestSupport
import GGUF
import Storage

/// `../shared/` beside the repository (or `MOE_SHARED_DIR`): llama.cpp-made reference data.
enum Shared {
    static let root = SharedData.root

    static func files(in folder: String, suffix: String = ".gguf") -> [String] {
        let dir = root.appendingPathComponent(folder)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(suffix) }.sorted().map { dir.appendingPathComponent($0).path }
    }

    static var models: [String] { files(in: "models") }
    static var vocabs: [String] { files(in: "vocab") }
    static var all: [String] { models + vocabs }

    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }
    static func vocab(_ name: String) -> String { root.appendingPathComponent("vocab/\(name)").path }
}

func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

func parse(_ bytes: [UInt8]) throws -> GGUFFile {
    try GGUFFile.read(from: MemoryBackend(bytes: bytes))
}

func temporaryPath(_ name: String) -> String {
    NSTemporaryDirectory() + "moe-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-\(name)"
}
