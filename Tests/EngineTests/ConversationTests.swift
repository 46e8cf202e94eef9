import ChatTemplate
import Engine
import Foundation
import GGUF
import Models
import Testing
import TestSupport
import Tokenizer

@Suite("Conversation")
struct ConversationTests {
    static let modelPath = Shared.path("models/tiny-qwen3moe.f16.gguf")

    func makeConversation(context: Int = 256, system: String? = nil) throws -> Conversation {
        let model = try DecoderModel.load(path: Self.modelPath)
        let metadata = model.weights.file.metadata
        let tokenizer = try Tokenizer(metadata: metadata)
        let session = Session(model: model, contextLength: context, threads: 2)
        return try Conversation(session: session, tokenizer: tokenizer, metadata: metadata, systemPrompt: system)
    }

    /// A second turn keeps the first turn's tokens in the cache, and what it produces is
    /// exactly what a fresh conversation with the same history produces.
    @Test func secondTurnReusesTheCacheAndMatchesAFreshRun() throws {
        let chat = try makeConversation()
        var sampler = Sampler(.greedy)
        let first = try chat.reply(to: "Hello there", maxTokens: 6, sampler: &sampler) { _ in true }
        #expect(first.reusedTokens == 0)
        #expect(first.stats.generatedTokens > 0)
        var greedy = Sampler(.greedy)
        let second = try chat.reply(to: "And again", maxTokens: 6, sampler: &greedy) { _ in true }
        #expect(second.reusedTokens > 10, "the first turn's prompt should stay cached")
        #expect(chat.messages.map(\.role) == ["user", "assistant", "user", "assistant"])

        // The same history from scratch: render it, evaluate it in one go, continue greedily.
        let fresh = try makeConversation()
        var s1 = Sampler(.greedy)
        _ = try fresh.reply(to: "Hello there", maxTokens: 6, sampler: &s1) { _ in true }
        fresh.session.rewind(to: 0)  // drop the cache: the next reply recomputes everything
        var s2 = Sampler(.greedy)
        let recomputed = try fresh.reply(to: "And again", maxTokens: 6, sampler: &s2) { _ in true }
        #expect(recomputed.reusedTokens == 0)
        #expect(recomputed.text == second.text)
    }

    @Test func resetKeepsTheSystemPrompt() throws {
        let chat = try makeConversation(system: "Be brief.")
        var sampler = Sampler(.greedy)
        _ = try chat.reply(to: "Hi", maxTokens: 3, sampler: &sampler) { _ in true }
        #expect(chat.messages.count == 3)
        chat.reset()
        #expect(chat.messages == [.system("Be brief.")])
    }

    @Test func stoppingEarlyKeepsThePartialReply() throws {
        let chat = try makeConversation()
        var sampler = Sampler(.greedy)
        var pieces = 0
        let reply = try chat.reply(to: "Tell me more", maxTokens: 20, sampler: &sampler) { _ in
            pieces += 1
            return pieces < 2
        }
        #expect(reply.interrupted)
        #expect(reply.stats.generatedTokens <= 3)
        #expect(chat.messages.last?.role == "assistant")
    }

    /// With a small context, old turns are dropped so the new message still fits; a single
    /// message larger than the context is a clear error and leaves the history as it was.
    @Test func contextLimits() throws {
        let chat = try makeConversation(context: 64)
        var sampler = Sampler(.greedy)
        var dropped = 0
        for i in 0..<6 {
            let r = try chat.reply(to: "message number \(i) with a few words", maxTokens: 4, sampler: &sampler) { _ in true }
            dropped += r.droppedMessages
        }
        #expect(dropped > 0)
        let before = chat.messages
        #expect(throws: ConversationError.self) {
            try chat.reply(to: String(repeating: "very long text ", count: 40), maxTokens: 4, sampler: &sampler) { _ in true }
        }
        #expect(chat.messages == before)
    }
}

@Suite("Perplexity")
struct PerplexityTests {
    /// The evaluator scores the second half of every chunk, each chunk from an empty cache:
    /// checked against a direct computation from the model's logits.
    @Test func scoresTheSecondHalfOfEachChunk() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.f16.gguf"))
        let session = Session(model: model, contextLength: 32, threads: 2)
        var rng = SystemRandomNumberGenerator()
        let tokens = (0..<80).map { _ in Int.random(in: 0..<model.vocabularySize, using: &rng) }
        let result = try PerplexityEvaluator(contextLength: 32).evaluate(tokens, session: session)
        #expect(result.chunkNLL.count == 2)  // 80 tokens: two whole chunks of 32
        #expect(result.scoredTokens == 2 * (32 - 1 - 16))

        var nll = 0.0
        for chunk in 0..<2 {
            session.rewind(to: 0)
            let input = Array(tokens[(chunk * 32)..<(chunk * 32 + 32)])
            let logits = try session.evaluate(input, logits: .all)
            let v = model.vocabularySize
            for i in 16..<31 {
                let row = logits[(i * v)..<((i + 1) * v)].map(Double.init)
                let m = row.max()!
                let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
                nll -= row[tokens[chunk * 32 + i + 1]] - lse
            }
        }
        let expected = exp(nll / Double(result.scoredTokens))
        #expect(abs(result.perplexity - expected) / expected < 1e-6)  // expf in the evaluator, exp here
        #expect(result.perplexityError > 0)
    }

    /// Smaller forward passes within a chunk see the same context: the same figure, up to
    /// the rounding of batched versus single-token kernels.
    @Test func batchSizeDoesNotChangeWhatIsScored() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.f16.gguf"))
        let session = Session(model: model, contextLength: 32, threads: 2)
        var rng = SplitMix64(seed: 11)
        let tokens = (0..<64).map { _ in Int(rng.next() % UInt64(model.vocabularySize)) }
        let whole = try PerplexityEvaluator(contextLength: 32).evaluate(tokens, session: session)
        for size in [1, 5] {
            var evaluator = PerplexityEvaluator(contextLength: 32)
            evaluator.batchSize = size
            let r = try evaluator.evaluate(tokens, session: session)
            #expect(r.scoredTokens == whole.scoredTokens)
            #expect(abs(r.perplexity - whole.perplexity) / whole.perplexity < 1e-3, "batch \(size): \(r.perplexity) vs \(whole.perplexity)")
        }
    }

    @Test func tooShortTextIsAClearError() throws {
        let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.f16.gguf"))
        let session = Session(model: model, contextLength: 64, threads: 1)
        #expect(throws: PerplexityError.self) {
            try PerplexityEvaluator(contextLength: 64).evaluate(Array(repeating: 1, count: 100), session: session)
        }
        #expect(throws: PerplexityError.self) {
            try PerplexityEvaluator(contextLength: 128).evaluate(Array(repeating: 1, count: 400), session: session)
        }
    }
}

@Suite("Conversation with a strict template")
struct StrictTemplateConversationTests {
    /// A template that raises (Mistral-style role alternation) gives a clear error and leaves
    /// the history as it was, so the next message works.
    @Test func templateErrorsLeaveTheHistoryIntact() throws {
        let strict = """
        {%- for message in messages %}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}\
        {{- '[' + message['role'] + '] ' + message['content'] + '\\n' }}{%- endfor %}\
        {%- if add_generation_prompt %}{{- '[assistant] ' }}{%- endif %}
        """
        var metadata = try GGUFFile.open(path: ConversationTests.modelPath).metadata
        metadata["tokenizer.chat_template"] = .string(GGUFString(strict))
        let model = try DecoderModel.load(path: ConversationTests.modelPath)
        let tokenizer = try Tokenizer(metadata: metadata)
        let session = Session(model: model, contextLength: 256, threads: 2)
        let withSystem = try Conversation(session: session, tokenizer: tokenizer, metadata: metadata,
                                          systemPrompt: "A system prompt breaks the alternation")
        var sampler = Sampler(.greedy)
        #expect(throws: ConversationError.self) {
            try withSystem.reply(to: "Hi", maxTokens: 3, sampler: &sampler) { _ in true }
        }
        #expect(withSystem.messages == [.system("A system prompt breaks the alternation")])

        let plain = try Conversation(session: session, tokenizer: tokenizer, metadata: metadata)
        let reply = try plain.reply(to: "Hi", maxTokens: 3, sampler: &sampler) { _ in true }
        #expect(reply.stats.generatedTokens > 0)
        #expect(plain.messages.map(\.role) == ["user", "assistant"])
    }
}
