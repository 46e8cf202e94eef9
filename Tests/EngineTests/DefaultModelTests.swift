import ChatTemplate
import Engine
import Foundation
import GGUF
import Models
import Testing
import Tokenizer

/// The trained model that ships in models/ (see models/README.md).
@Suite("Default model")
struct DefaultModelTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let modelPath = repository.appendingPathComponent("models/moe-default.q8_0.gguf").path
    static let heldOutPath = repository.appendingPathComponent("models/heldout.txt").path

    /// `moe perplexity` on models/heldout.txt at --ctx 512, as measured when the model was
    /// trained (llama.cpp's llama-perplexity agrees; see the model card).
    static let heldOutPerplexity = 71.8318
    /// Allowed drift: kernels may change rounding, not quality.
    static let perplexityTolerance = 0.01

    @Test func loadsAndGeneratesText() throws {
        let model = try DecoderModel.load(path: Self.modelPath)
        #expect(model.hyperParameters.architecture == "qwen3moe")
        let tokenizer = try Tokenizer(metadata: model.weights.file.metadata)
        let session = Session(model: model, threads: 2)
        var sampler = Sampler(.greedy)
        var produced: [Int] = []
        let prompt = tokenizer.encode("In the beginning God created", addBOS: tokenizer.addsBOS)
        _ = try session.generate(prompt: prompt, maxTokens: 12, sampler: &sampler,
                                 isEndOfGeneration: tokenizer.isEndOfGeneration) { produced.append($0); return true }
        let text = tokenizer.decode(produced)
        print("default model: \"In the beginning God created\" → \"\(text)\"")
        #expect(produced.count >= 4)
        // A trained model continues with words, not byte soup.
        let letters = text.unicodeScalars.filter { CharacterSet.letters.contains($0) || $0 == " " }.count
        #expect(Double(letters) >= 0.6 * Double(text.unicodeScalars.count), "\(text)")
    }

    /// Any UTF-8 text encodes to tokens that decode to the same text.
    @Test func tokenizerRoundTripsArbitraryUTF8() throws {
        let file = try GGUFFile.open(path: Self.modelPath)
        let tokenizer = try Tokenizer(metadata: file.metadata)
        var rng = SystemRandomNumberGenerator()
        let pools: [ClosedRange<UInt32>] = [0x20...0x7E, 0x09...0x0D, 0xC0...0x24F, 0x370...0x3FF, 0x400...0x4FF,
                                            0x590...0x6FF, 0x3040...0x30FF, 0x4E00...0x9FFF, 0xAC00...0xD7A3,
                                            0x1F300...0x1FAFF, 0x0300...0x036F, 0x1...0x1F]
        for _ in 0..<300 {
            var scalars = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 1...60, using: &rng) {
                let pool = pools.randomElement(using: &rng)!
                if let s = Unicode.Scalar(UInt32.random(in: pool, using: &rng)) { scalars.append(s) }
            }
            let text = String(scalars)
            let ids = tokenizer.encode(text, addBOS: false, parseSpecial: false)
            #expect(tokenizer.decode(ids) == text, "round trip of \(text.debugDescription)")
        }
        for fixed in ["<|im_start|>user\nHi<|im_end|>", "Grüße, señor! Così è. 👋🏽 日本語", "\u{0}\u{1}tab\tnew\nline"] {
            let ids = tokenizer.encode(fixed, addBOS: false, parseSpecial: false)
            #expect(tokenizer.decode(ids) == fixed)
        }
    }

    /// The GGUF carries a ChatML template; a known conversation renders to the exact text.
    @Test func chatTemplateRendersAKnownConversation() throws {
        let file = try GGUFFile.open(path: Self.modelPath)
        let source = try #require(file.metadata["tokenizer.chat_template"]?.string)
        let rendered = try ChatTemplate(source).render(
            messages: [.system("Be brief."), .user("Define the word \"ark\"."), .assistant("ark: A chest or coffer."),
                       .user("Tell me a fortune.")],
            addGenerationPrompt: true)
        #expect(rendered == """
            <|im_start|>system
            Be brief.<|im_end|>
            <|im_start|>user
            Define the word "ark".<|im_end|>
            <|im_start|>assistant
            ark: A chest or coffer.<|im_end|>
            <|im_start|>user
            Tell me a fortune.<|im_end|>
            <|im_start|>assistant

            """)
    }

    @Test func heldOutPerplexityStaysWithinBound() throws {
        let model = try DecoderModel.load(path: Self.modelPath)
        let tokenizer = try Tokenizer(metadata: model.weights.file.metadata)
        let text = try Data(contentsOf: URL(fileURLWithPath: Self.heldOutPath))
        let tokens = tokenizer.encode(utf8: Array(text), addBOS: tokenizer.addsBOS, parseSpecial: false)
        let session = Session(model: model, contextLength: 512, threads: 2)
        let result = try PerplexityEvaluator(contextLength: 512).evaluate(tokens, session: session)
        print("default model: held-out perplexity \(result.perplexity) over \(result.scoredTokens) tokens")
        let bound = Self.heldOutPerplexity * Self.perplexityTolerance
        #expect(abs(result.perplexity - Self.heldOutPerplexity) <= bound,
                "perplexity \(result.perplexity), recorded \(Self.heldOutPerplexity)")
    }
}
