import Engine
import Foundation
import KV
import Models
import TestSupport
import Testing

/// Several sequences generating together (`BatchGenerator`) against each one generating
/// alone (`Session.generate`).
@Suite("Batch generation")
struct BatchGeneratorTests {
    static func reference(_ stem: String) throws -> [Int] {
        let object = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: Shared.path("reference/\(stem).json")))) as! [String: Any]
        return (object["tokens"] as! [NSNumber]).map(\.intValue)
    }

    static func alone(_ model: DecoderModel, prompt: [Int], maxTokens: Int, parameters: SamplingParameters,
                      stop: @escaping (Int) -> Bool = { _ in false }) throws -> [Int] {
        let session = Session(model: model, contextLength: 128, threads: 2)
        var sampler = Sampler(parameters)
        var out: [Int] = []
        _ = try session.generate(prompt: prompt, maxTokens: maxTokens, sampler: &sampler, isEndOfGeneration: stop) {
            out.append($0)
            return true
        }
        return out
    }

    /// Steps until every sequence finished; each sequence's tokens and how it finished.
    static func drain(_ generator: BatchGenerator) throws
        -> [BatchGenerator.SequenceID: (tokens: [Int], finished: BatchGenerator.FinishReason?)] {
        var result: [BatchGenerator.SequenceID: (tokens: [Int], finished: BatchGenerator.FinishReason?)] = [:]
        while !generator.isEmpty {
            for t in try generator.step() {
                result[t.sequence, default: ([], nil)].tokens.append(t.token)
                result[t.sequence]!.finished = t.finished
            }
        }
        return result
    }

    @Test("greedy generation of several prompts together equals each one alone",
          arguments: ["tiny-qwen3moe.f16", "tiny-llama.f32", "tiny-qwen3.f16"])
    func greedyMatchesAlone(stem: String) throws {
        let model = try DecoderModel.load(path: Shared.path("models/\(stem).gguf"))
        let tokens = try Self.reference(stem)
        let prompts = [Array(tokens.prefix(7)), Array(tokens[2..<32]), Array(tokens[20..<23]), Array(tokens[5..<21])]
        let expected = try prompts.map { try Self.alone(model, prompt: $0, maxTokens: 12, parameters: .greedy) }
        let generator = BatchGenerator(model: model, contextLength: 128, threads: 2, sequences: prompts.count)
        generator.maxBatch = 24  // the long prompt takes two steps, the others ride along
        let ids = try prompts.map { try generator.add(prompt: $0, sampler: Sampler(.greedy), maxTokens: 12) { _ in false } }
        let got = try Self.drain(generator)
        for (i, id) in ids.enumerated() {
            #expect(got[id]?.tokens == expected[i], "\(stem) prompt \(i)")
            #expect(got[id]?.finished == .maxTokens)
        }
        // Every sequence left and released its blocks (full ones stay in the prefix cache).
        #expect(generator.kvPool.referencedBlocks == 0)
    }

    @Test("forks of one prompt, each with its own seed, sample what each seed samples alone")
    func seededForksMatchAlone() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.f16.gguf"))
        let prompt = Array(try Self.reference("tiny-qwen3moe.f16").prefix(20))
        let generator = BatchGenerator(model: model, contextLength: 128, threads: 2, sequences: 3)
        let shared = try generator.prefill(prompt)
        var parameters = SamplingParameters()
        parameters.temperature = 1
        var ids: [BatchGenerator.SequenceID] = []
        for seed in 0..<3 {
            parameters.seed = UInt64(100 + seed)
            ids.append(generator.add(continuing: shared, sampler: Sampler(parameters), maxTokens: 10) { _ in false })
        }
        let got = try Self.drain(generator)
        var distinct = Set<[Int]>()
        for (seed, id) in ids.enumerated() {
            parameters.seed = UInt64(100 + seed)
            let expected = try Self.alone(model, prompt: prompt, maxTokens: 10, parameters: parameters)
            #expect(got[id]?.tokens == expected, "seed \(100 + seed)")
            distinct.insert(got[id]?.tokens ?? [])
        }
        #expect(distinct.count == 3, "the seeds should part the continuations")
        // Only the shared prompt's blocks stay referenced (by `shared`).
        #expect(generator.kvPool.referencedBlocks == generator.kvPool.layout.blocks(forPositions: 20))
    }

    @Test("sequences finish on their own: end of generation, token limit, full context; others join between steps")
    func finishingAndJoining() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3.f16.gguf"))
        let tokens = try Self.reference("tiny-qwen3.f16")
        let prompt = Array(tokens.prefix(10))
        let greedy = try Self.alone(model, prompt: prompt, maxTokens: 8, parameters: .greedy)
        let stopAt = greedy[3]
        let generator = BatchGenerator(model: model, contextLength: 14, threads: 2, sequences: 4)
        let stops = try generator.add(prompt: prompt, sampler: Sampler(.greedy), maxTokens: 8) { $0 == stopAt }
        let limited = try generator.add(prompt: prompt, sampler: Sampler(.greedy), maxTokens: 2) { _ in false }
        let full = try generator.add(prompt: prompt, sampler: Sampler(.greedy), maxTokens: 100) { _ in false }
        var got: [BatchGenerator.SequenceID: [Int]] = [:]
        var finished: [BatchGenerator.SequenceID: BatchGenerator.FinishReason] = [:]
        var late: BatchGenerator.SequenceID?
        var steps = 0
        while !generator.isEmpty {
            for t in try generator.step() {
                got[t.sequence, default: []].append(t.token)
                if let f = t.finished { finished[t.sequence] = f }
            }
            steps += 1
            if steps == 2 { late = try generator.add(prompt: Array(tokens.prefix(12)), sampler: Sampler(.greedy), maxTokens: 3) { _ in false } }
        }
        #expect(got[stops] == Array(greedy.prefix(greedy.firstIndex(of: stopAt)! + 1)))
        #expect(finished[stops] == .endOfGeneration)
        #expect(got[limited] == Array(greedy.prefix(2)) && finished[limited] == .maxTokens)
        // 10 prompt positions + 4 evaluated tokens fill the context of 14; the 5th is sampled
        // from the last logits and reported, never evaluated.
        #expect(got[full] == Array(greedy.prefix(5)) && finished[full] == .contextFull)
        let lateExpected = try Self.alone(model, prompt: Array(tokens.prefix(12)), maxTokens: 3, parameters: .greedy)
        #expect(got[late!] == lateExpected && finished[late!] == .maxTokens)
        #expect(generator.kvPool.referencedBlocks == 0)
    }

    @Test("a KV pool too small for every sequence is a typed error that changes nothing; cancelling one lets the rest go on")
    func kvPoolTooSmall() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.q8_0.gguf"))
        let tokens = try Self.reference("tiny-qwen3moe.q8_0")
        let layout = model.kvLayout()
        let pool = try model.makeKVPool(memoryBytes: 3 * layout.blockBytes)
        let generator = BatchGenerator(model: model, contextLength: 64, threads: 2, kvPool: pool)
        let a = try generator.add(prompt: Array(tokens.prefix(20)), sampler: Sampler(.greedy), maxTokens: 4) { _ in false }
        let b = try generator.add(prompt: Array(tokens[1..<21]), sampler: Sampler(.greedy), maxTokens: 4) { _ in false }
        let expected = ModelError.kvCache(.memoryExhausted(neededBlocks: 2, availableBlocks: 1, totalBlocks: 3,
                                                           blockBytes: layout.blockBytes, blockPositions: 16))
        #expect(throws: expected) { try generator.step() }
        #expect(generator.position(of: a) == 0 && generator.position(of: b) == 0)
        #expect(throws: expected) { try generator.step() }
        generator.cancel(b)
        #expect(generator.activeSequences == [a])
        let got = try Self.drain(generator)
        #expect(got[a]?.tokens.count == 4)
        print(expected.description)
    }

    @Test("bad requests are typed errors")
    func badRequests() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-llama.q8_0.gguf"))
        let generator = BatchGenerator(model: model, contextLength: 16, threads: 2)
        #expect(throws: ModelError.emptyInput) { try generator.add(prompt: [], sampler: Sampler(.greedy), maxTokens: 1) { _ in false } }
        #expect(throws: ModelError.contextOverflow(needed: 17, capacity: 16)) {
            try generator.add(prompt: Array(repeating: 1, count: 17), sampler: Sampler(.greedy), maxTokens: 1) { _ in false }
        }
        #expect(throws: ModelError.tokenOutOfRange(token: model.vocabularySize, vocabularySize: model.vocabularySize)) {
            try generator.add(prompt: [model.vocabularySize], sampler: Sampler(.greedy), maxTokens: 1) { _ in false }
        }
        #expect(generator.isEmpty)
        #expect(try generator.step().isEmpty)
    }

    @Test("add(prompt:samplers:) evaluates the prompt once, in chunks among other sequences, then forks: each fork samples what its seed samples alone")
    func forksOfOneEvaluation() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.f16.gguf"))
        let tokens = try Self.reference("tiny-qwen3moe.f16")
        let prompt = Array(tokens.prefix(30))
        let generator = BatchGenerator(model: model, contextLength: 128, threads: 2, sequences: 5)
        generator.maxBatch = 8  // the prompt takes four steps, beside another sequence decoding
        let other = try generator.add(prompt: Array(tokens[3..<7]), sampler: Sampler(.greedy), maxTokens: 10) { _ in false }
        var parameters = SamplingParameters()
        parameters.temperature = 1
        let samplers = (0..<3).map { i -> Sampler in
            var p = parameters
            p.seed = UInt64(7 + i)
            return Sampler(p)
        }
        let (ids, reused) = try generator.add(prompt: prompt, samplers: samplers, maxTokens: 6) { _ in false }
        #expect(reused == 0 && ids.count == 3)
        #expect(generator.activeSequences == [other] + ids)
        let got = try Self.drain(generator)
        for (i, id) in ids.enumerated() {
            var p = parameters
            p.seed = UInt64(7 + i)
            #expect(got[id]?.tokens == (try Self.alone(model, prompt: prompt, maxTokens: 6, parameters: p)), "fork \(i)")
        }
        #expect(got[other]?.tokens == (try Self.alone(model, prompt: Array(tokens[3..<7]), maxTokens: 10, parameters: .greedy)))
        #expect(generator.kvPool.referencedBlocks == 0)
        // The same prompt again: its full blocks come from the prefix cache.
        let again = try generator.add(prompt: prompt, samplers: [Sampler(.greedy)], maxTokens: 1) { _ in false }
        #expect(again.reusedTokens == 16)
    }

    @Test("cancelling the first of several forks before its prompt is evaluated hands the evaluation to the next")
    func cancellingTheEvaluatingFork() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.f16.gguf"))
        let prompt = Array(try Self.reference("tiny-qwen3moe.f16").prefix(20))
        let generator = BatchGenerator(model: model, contextLength: 64, threads: 2, sequences: 3)
        generator.maxBatch = 8
        let (ids, _) = try generator.add(prompt: prompt, samplers: [Sampler(.greedy), Sampler(.greedy), Sampler(.greedy)],
                                         maxTokens: 4) { _ in false }
        _ = try generator.step()
        generator.cancel(ids[0])
        generator.cancel(ids[2])
        #expect(generator.activeSequences == [ids[1]])
        let got = try Self.drain(generator)
        #expect(got[ids[1]]?.tokens == (try Self.alone(model, prompt: prompt, maxTokens: 4, parameters: .greedy)))
        #expect(got[ids[0]] == nil && got[ids[2]] == nil)
        #expect(generator.kvPool.referencedBlocks == 0)
    }
}
