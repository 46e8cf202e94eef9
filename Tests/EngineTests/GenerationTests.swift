import Engine
import Foundation
import TestSupport
import Models
import Testing
import Tokenizer

enum Shared {
    static let root = SharedData.root
    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }
}

@Suite("Generation")
struct GenerationTests {
    /// Greedy decoding continues the reference prompt exactly as llama.cpp did on F16
    /// files (no near-ties there in practice), through the session's generation loop.
    @Test(arguments: ["tiny-qwen3moe.f16", "tiny-llama.f32", "tiny-qwen3.f16"])
    func greedyContinuationMatchesLlamaCpp(stem: String) throws {
        let reference = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: Shared.path("reference/\(stem).json")))) as! [String: Any]
        let tokens = (reference["tokens"] as! [NSNumber]).map(\.intValue)
        let greedy = (reference["greedy"] as! [NSNumber]).map(\.intValue)
        let model = try DecoderModel.load(path: Shared.path("models/\(stem).gguf"))
        let session = Session(model: model, contextLength: 128, threads: 2)
        var sampler = Sampler(.greedy)
        var produced: [Int] = []
        let stats = try session.generate(prompt: tokens, maxTokens: greedy.count, sampler: &sampler,
                                         isEndOfGeneration: { _ in false }) { produced.append($0); return true }
        #expect(stats.promptTokens == 32)
        #expect(stats.generatedTokens == greedy.count)
        let common = zip(produced, greedy).prefix { $0 == $1 }.count
        print("\(stem): greedy agrees on the first \(common) of \(greedy.count) tokens")
        #expect(common >= 8, "\(stem): greedy parted after \(common) tokens: \(produced) vs \(greedy)")
    }

    @Test func seededSamplingIsReproducibleAndStreamsText() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.q8_0.gguf"))
        let tokenizer = try Tokenizer(metadata: model.weights.file.metadata)
        let prompt = tokenizer.encode("The quick brown fox", addBOS: tokenizer.addsBOS)
        #expect(!prompt.isEmpty)
        func run(seed: UInt64) throws -> (ids: [Int], text: String) {
            let session = Session(model: model, contextLength: 64, threads: 2)
            var p = SamplingParameters()
            p.seed = seed
            p.temperature = 1.0
            var sampler = Sampler(p)
            var decoder = StreamingDecoder(tokenizer: tokenizer, stripLeadingSpace: false)
            var ids: [Int] = []
            var text = ""
            _ = try session.generate(prompt: prompt, maxTokens: 12, sampler: &sampler,
                                     isEndOfGeneration: tokenizer.isEndOfGeneration) { id in
                ids.append(id)
                text += decoder.append(id)
                return true
            }
            text += decoder.finish()
            return (ids, text)
        }
        let a = try run(seed: 1), b = try run(seed: 1), c = try run(seed: 2)
        #expect(a.ids == b.ids && a.text == b.text)
        #expect(a.ids != c.ids)
        #expect(a.ids.count <= 12 && !a.ids.isEmpty)
        #expect(a.text == tokenizer.decode(a.ids))
    }

    @Test func generationStopsWhenTheContextIsFull() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.q8_0.gguf"))
        let session = Session(model: model, contextLength: 10, threads: 1)
        var sampler = Sampler(.greedy)
        var count = 0
        let stats = try session.generate(prompt: [1, 2, 3, 4], maxTokens: 100, sampler: &sampler,
                                         isEndOfGeneration: { _ in false }) { _ in count += 1; return true }
        #expect(session.position == 10)
        #expect(stats.generatedTokens == 7)   // 6 evaluated after the prompt, the last one sampled only
        #expect(count == 7)
    }
}
