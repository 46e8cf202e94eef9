import Engine
import Foundation
import GGUF
import Models
import Storage
import Testing

/// Broken model files and bad requests give typed errors naming the problem.
@Suite("Bad model input")
struct BadInputTests {
    static let base = Shared.model("tiny-qwen3moe.q8_0.gguf")

    /// Rewrites `base` with `edit` applied to a copy of its tensor list and metadata.
    func rewritten(_ name: String, edit: (inout GGUFMetadata, inout [GGUFWriter.Tensor]) throws -> Void) throws -> String {
        let backend = try StorageFile.open(path: Self.base, backend: .pread, direct: false)
        let file = try GGUFFile.read(from: backend)
        let copy = GGUFWriter(copying: file, from: backend)
        var metadata = copy.metadata
        var tensors = copy.tensors
        try edit(&metadata, &tensors)
        var writer = GGUFWriter()
        writer.metadata = metadata
        for t in tensors { try writer.addTensor(name: t.name, dimensions: t.dimensions, type: t.type, source: t.source) }
        let path = NSTemporaryDirectory() + "moe-bad-\(getpid())-\(name).gguf"
        try writer.write(to: path)
        return path
    }

    func loadError(_ path: String) -> ModelError? {
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try DecoderModel.load(path: path)
            return nil
        } catch {
            return error
        }
    }

    @Test func unknownArchitecture() throws {
        let path = try rewritten("arch") { m, _ in m["general.architecture"] = .string(GGUFString("gptj")) }
        let e = loadError(path)
        #expect(e == .unknownArchitecture("gptj"))
        #expect(e?.description.contains("qwen3moe") == true)
    }

    @Test func missingHyperParameter() throws {
        let path = try rewritten("hp") { m, _ in m.remove("qwen3moe.embedding_length") }
        #expect(loadError(path) == .missingHyperParameter("qwen3moe.embedding_length"))
    }

    @Test func missingTensor() throws {
        let path = try rewritten("missing") { _, t in t.removeAll { $0.name == "blk.1.attn_v.weight" } }
        #expect(loadError(path) == .missingTensor("blk.1.attn_v.weight"))
    }

    @Test func wrongShape() throws {
        let path = try rewritten("shape") { _, t in
            let i = t.firstIndex { $0.name == "blk.0.attn_k.weight" }!
            t[i].dimensions = [t[i].dimensions[1], t[i].dimensions[0]]
        }
        #expect(loadError(path) == .wrongShape(tensor: "blk.0.attn_k.weight", expected: [256, 128], actual: [128, 256]))
    }

    @Test func unsupportedType() throws {
        let path = try rewritten("type") { _, t in
            let i = t.firstIndex { $0.name == "blk.2.attn_output.weight" }!
            t[i].type = .i32
            t[i].source = .bytes([UInt8](repeating: 0, count: 256 * 256 * 4))
        }
        #expect(loadError(path) == .unsupportedType(tensor: "blk.2.attn_output.weight", type: .i32))
    }

    @Test func badRequests() throws {
        let model = try DecoderModel.load(path: Self.base)
        let session = Session(model: model, contextLength: 8, threads: 1)
        #expect(throws: ModelError.emptyInput) { try session.evaluate([]) }
        #expect(throws: ModelError.tokenOutOfRange(token: 512, vocabularySize: 512)) { try session.evaluate([1, 512]) }
        #expect(throws: ModelError.tokenOutOfRange(token: -1, vocabularySize: 512)) { try session.evaluate([-1]) }
        #expect(throws: ModelError.contextOverflow(needed: 9, capacity: 8)) { try session.evaluate(Array(repeating: 1, count: 9)) }
        // A failed request leaves the session usable.
        #expect(session.position == 0)
        _ = try session.evaluate([1, 2, 3])
        #expect(session.position == 3)
    }

    @Test func notAModel() throws {
        let path = NSTemporaryDirectory() + "moe-bad-\(getpid())-text.gguf"
        try Data("hello, not a model".utf8).write(to: URL(fileURLWithPath: path))
        // The GGUF reader's own error, carried as it is, with the path.
        guard let error = loadError(path), case let .format(named, _) = error else {
            Issue.record("expected a GGUF format error, got \(String(describing: loadError(path)))")
            return
        }
        #expect(named == path)
        #expect(error.description.hasPrefix(path + ": "))
    }
}
