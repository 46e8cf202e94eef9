import Engine
import Foundation
import KV
import Kernels
import Models
import TestSupport
import Testing

/// The paged KV manager under real models: a dense and a MoE one (and a dense one with
/// per-head q/k norms), from the shared tiny models.
@Suite("KV with models")
struct ModelKVTests {
    static let stems = ["tiny-llama.q8_0", "tiny-qwen3.f16", "tiny-qwen3moe.q8_0"]

    static func tokens(_ stem: String) throws -> [Int] {
        let url = URL(fileURLWithPath: SharedData.path("reference/\(stem).json"))
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return (object["tokens"] as! [NSNumber]).map(\.intValue) + (object["greedy"] as! [NSNumber]).map(\.intValue)
    }

    static func model(_ stem: String) throws -> DecoderModel {
        try DecoderModel.load(path: SharedData.path("models/\(stem).gguf"))
    }

    @Test("a reused cached prefix gives the logits of a fresh run", arguments: stems)
    func prefixReuseMatchesFreshRun(stem: String) throws {
        let model = try Self.model(stem)
        let tokens = Array(try Self.tokens(stem).prefix(40))
        let pool = try model.makeKVPool(memoryBytes: 16 * model.kvLayout().blockBytes)

        // The first run computes 40 positions: blocks 0 and 1 fill and enter the cache.
        let first = Session(model: model, contextLength: 64, threads: 2, kvPool: pool)
        _ = try first.evaluate(Array(tokens.prefix(32)), logits: .none)
        let freshTail = try first.evaluate(Array(tokens[32...]), logits: .all)

        // The second run takes those 32 positions from the cache, computes only the rest.
        let second = Session(model: model, contextLength: 64, threads: 2, kvPool: pool)
        #expect(second.reuseCachedPrefix(of: tokens) == 32)
        #expect(second.cache.blocks == Array(first.cache.blocks.prefix(2)))
        #expect(pool.referenceCount(first.cache.blocks[0]) == 2)
        let reusedTail = try second.evaluate(Array(tokens[32...]), logits: .all)
        #expect(reusedTail == freshTail, "\(stem): logits after a reused prefix differ")
        #expect(second.cache.blocks[2] != first.cache.blocks[2])

        // And against a session of its own that sees all 40 tokens in one batch (matrix
        // products of other batch sizes may round differently, so a bound, not equality).
        let alone = Session(model: model, contextLength: 64, threads: 2)
        let all = try alone.evaluate(tokens, logits: .all)
        let v = model.vocabularySize
        let tail = Array(all.suffix(8 * v))
        var diff = 0.0, norm = 0.0
        for (a, b) in zip(tail, reusedTail) {
            diff += Double(a - b) * Double(a - b)
            norm += Double(a) * Double(a)
        }
        #expect((diff / norm).squareRoot() < 1e-4)
    }

    @Test("sequences diverging after copy-on-write each get their own logits", arguments: stems)
    func divergenceAfterCopyOnWrite(stem: String) throws {
        let model = try Self.model(stem)
        let tokens = try Self.tokens(stem)
        let prompt = Array(tokens.prefix(20)), left = Array(tokens[20..<26]), right = Array(tokens[26..<30])
        let workspace = Workspace(), threads = ThreadPool(threadCount: 2)
        func run(_ s: KVSequence, _ t: [Int]) throws -> [Float] {
            try model.forward(t, cache: s, logits: .all, workspace: workspace, pool: threads)
        }
        let pool = try model.makeKVPool(memoryBytes: 12 * model.kvLayout().blockBytes)
        let a = pool.makeSequence(capacity: 64)
        _ = try run(a, prompt)
        let b = a.fork()
        #expect(b.blocks == a.blocks)
        let bLogits = try run(b, right)   // b copies the shared partial block 1
        let aLogits = try run(a, left)
        #expect(a.blocks[0] == b.blocks[0] && a.blocks[1] != b.blocks[1])
        // Rewind b into the shared full block 0 and diverge there too.
        b.truncate(to: 10)
        let bRewound = try run(b, left)
        #expect(a.blocks[0] != b.blocks[0])

        // The same batches on a sequence of its own (a MoE layer's results may depend on
        // which tokens share a batch, so the batches are kept).
        func fresh(_ then: [Int], rewindTo position: Int? = nil) throws -> [Float] {
            let s = model.makeCache(capacity: 64)
            _ = try run(s, prompt)
            if let position { s.truncate(to: position) }
            return try run(s, then)
        }
        #expect(aLogits == (try fresh(left)))
        #expect(bLogits == (try fresh(right)))
        #expect(bRewound == (try fresh(left, rewindTo: 10)))
        #expect(a.count == 26 && b.count == 16)
    }

    @Test func exhaustedKVMemoryIsAModelError() throws {
        let model = try Self.model("tiny-qwen3moe.q8_0")
        let layout = model.kvLayout()
        let pool = try model.makeKVPool(memoryBytes: 2 * layout.blockBytes)
        let session = Session(model: model, contextLength: 64, threads: 2, kvPool: pool)
        let tokens = try Self.tokens("tiny-qwen3moe.q8_0")
        _ = try session.evaluate(Array(tokens.prefix(20)))
        let expected = ModelError.kvCache(.memoryExhausted(neededBlocks: 1, availableBlocks: 0, totalBlocks: 2,
                                                           blockBytes: layout.blockBytes, blockPositions: 16))
        #expect(throws: expected) { try session.evaluate(Array(tokens[20..<40])) }
        #expect(session.position == 20)
        // The session goes on where it was.
        _ = try session.evaluate(Array(tokens[20..<30]))
        #expect(session.position == 30)
        print(expected.description)
    }
}
