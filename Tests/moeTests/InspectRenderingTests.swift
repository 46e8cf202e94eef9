import Experts
import Foundation
import GGUF
import Storage
import Testing
import TestSupport
@testable import moe

/// `moe inspect`'s text and JSON renderings of a file's description.
@Suite("moe inspect renderings")
struct InspectRenderingTests {
    static let models = SharedData.root.appendingPathComponent("models")
    static let vocabs = SharedData.root.appendingPathComponent("vocab")

    static func files(in dir: URL) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".gguf") }.sorted().map { dir.appendingPathComponent($0).path }
    }

    static var all: [String] { files(in: models) + files(in: vocabs) }

    static func model(_ name: String) -> String { models.appendingPathComponent(name).path }

    static func jsonObject(_ d: ModelDescription) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(d.json().utf8)) as? [String: Any])
    }

    @Test("every shared model and vocab file renders in both forms", arguments: all)
    func rendersEveryFile(path: String) throws {
        let d = ModelDescription(try GGUFFile.open(path: path))
        #expect(!d.text().isEmpty)
        #expect(try Self.jsonObject(d)["tensors"] as? [Any] != nil)
    }

    @Test("JSON description is valid JSON with the expert layout")
    func jsonDescription() throws {
        let obj = try Self.jsonObject(ModelDescription(try GGUFFile.open(path: Self.model("tiny-mixtral.q4_0.gguf"))))
        #expect(obj["architecture"] as? String == "llama")
        let experts = try #require(obj["experts"] as? [String: Any])
        #expect(experts["expert_count"] as? Int == 8)
        #expect((experts["layers"] as? [Any])?.count == 3)
        let hp = try #require(obj["hyperparameters"] as? [String: Any])
        #expect(hp["llama.expert_used_count"] as? Int == 2)
    }

    @Test("a pack is shown with its precisions; plain files have no pack field")
    func pack() throws {
        try TemporaryDirectory.with(prefix: "moe-inspect") { dir in
            let inputPath = Self.model("tiny-qwen2moe.q4_k_m.gguf")
            let outputPath = dir.appendingPathComponent("described.gguf").path
            try ExpertPacker(input: inputPath, output: outputPath, lowPrecisions: [.q4_0]).write()
            let d = ModelDescription(try GGUFFile.open(path: outputPath))
            let text = d.text()
            #expect(text.contains("pack:          version 1, 2 precisions (native, q4_0)"))
            #expect(text.contains("experts:     8 per layer, 4 used per token in 3 layers"))
            #expect(text.contains("layer 2: 8 × 124.50 KiB (q4_K gate, q4_K up, q6_K down)"))
            #expect(text.contains("q4_0:        108.00 KiB per expert (q4_0 gate, q4_0 up, q4_0 down)"))
            let packJSON = try #require(try Self.jsonObject(d)["pack"] as? [String: Any])
            let precisions = try #require(packJSON["precisions"] as? [[String: Any]])
            #expect(precisions.map { $0["name"] as? String } == ["native", "q4_0"])
            let layers = try #require(precisions[1]["layers"] as? [[String: Any]])
            #expect(layers.map { $0["bytes_per_expert"] as? Int } == [110_592, 110_592, 110_592])
            #expect(layers.allSatisfy { $0["experts"] as? Int == 8 && $0["types"] as? [String] == ["q4_0", "q4_0", "q4_0"] })
            #expect(try Self.jsonObject(ModelDescription(try GGUFFile.open(path: inputPath)))["pack"] == nil)
        }
    }

    @Test("a pack whose types key is gone shows its types as unknown")
    func damagedPack() throws {
        try TemporaryDirectory.with(prefix: "moe-inspect") { dir in
            let packPath = dir.appendingPathComponent("pack.gguf").path
            try ExpertPacker(input: Self.model("tiny-mixtral.q4_0.gguf"), output: packPath, lowPrecisions: [.q8_0]).write()
            let storage = try StorageFile.open(path: packPath)
            var writer = GGUFWriter(copying: try GGUFFile.read(from: storage), from: storage)
            writer.metadata.remove(PackFormat.typesKey(precision: 1))
            writer.metadata[PackFormat.versionKey] = .string(GGUFString("one"))
            let damaged = dir.appendingPathComponent("damaged.gguf").path
            try writer.write(to: damaged)
            let d = ModelDescription(try GGUFFile.open(path: damaged))
            #expect(d.text().contains("types unknown"))
            #expect(try Self.jsonObject(d)["pack"] is [String: Any])
        }
    }
}
