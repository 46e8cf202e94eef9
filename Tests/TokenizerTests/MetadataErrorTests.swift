import GGUF
import Testing
import Tokenizer

/// A small SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens, then pieces.
func tinySPM(pieces: [(String, Float)] = [("▁", -1), ("▁a", -2), ("b", -3), ("▁ab", -1.5), ("ab", -0.5)]) -> GGUFMetadata {
    var md = GGUFMetadata()
    var tokens = ["<unk>", "<s>", "</s>"]
    var types: [Int32] = [2, 3, 3]
    var scores: [Float] = [0, 0, 0]
    for b in 0..<256 { tokens.append(String(format: "<0x%02X>", b)); types.append(6); scores.append(0) }
    for (p, s) in pieces { tokens.append(p); types.append(1); scores.append(s) }
    md["tokenizer.ggml.model"] = .string(GGUFString("llama"))
    md["tokenizer.ggml.tokens"] = .array(.string(tokens.map { GGUFString($0) }))
    md["tokenizer.ggml.token_type"] = .array(.int32(types))
    md["tokenizer.ggml.scores"] = .array(.float32(scores))
    return md
}

@Suite("Building from metadata")
struct MetadataErrorTests {
    @Test("a hand-made SentencePiece vocabulary")
    func handMade() throws {
        let tok = try Tokenizer(metadata: tinySPM())
        let base = 259
        // "ab" (-0.5) is merged before "▁a" (-2); "▁" + "ab" → "▁ab" (-1.5).
        #expect(tok.encode("ab", addBOS: false) == [base + 3])
        #expect(tok.encode("ab", addBOS: true) == [1, base + 3])
        // Unknown characters fall back to byte tokens: "é" = C3 A9.
        #expect(tok.encode("é", addBOS: false) == [base + 0, 3 + 0xC3, 3 + 0xA9])
        #expect(tok.decode([base + 0, 3 + 0xC3, 3 + 0xA9]) == "é")
        #expect(tok.bos == 1 && tok.eos == 2 && tok.unknown == 0 && tok.eot == nil)
        #expect(tok.addsBOS && !tok.addsEOS && tok.addsSpacePrefix)
    }

    @Test("errors name the key")
    func errors() {
        var md = tinySPM()
        md.remove("tokenizer.ggml.model")
        #expect(throws: TokenizerError.missingKey("tokenizer.ggml.model")) { try Tokenizer(metadata: md) }

        md = tinySPM()
        md.remove("tokenizer.ggml.tokens")
        #expect(throws: TokenizerError.missingKey("tokenizer.ggml.tokens")) { try Tokenizer(metadata: md) }

        md = tinySPM()
        md["tokenizer.ggml.tokens"] = .array(.int32([1, 2, 3]))
        #expect(throws: TokenizerError.invalidValue(key: "tokenizer.ggml.tokens", detail: "expected an array of strings, found array of i32")) {
            try Tokenizer(metadata: md)
        }

        md = tinySPM()
        md["tokenizer.ggml.scores"] = .array(.float32([0, 1]))
        #expect(throws: TokenizerError.invalidValue(key: "tokenizer.ggml.scores", detail: "2 scores for 264 tokens")) {
            try Tokenizer(metadata: md)
        }

        md = tinySPM()
        md["tokenizer.ggml.token_type"] = .array(.float32([0]))
        #expect(throws: TokenizerError.invalidValue(key: "tokenizer.ggml.token_type", detail: "expected an array of i32, found array of f32")) {
            try Tokenizer(metadata: md)
        }

        md = tinySPM()
        md["tokenizer.ggml.add_bos_token"] = .uint8(1)
        #expect(throws: TokenizerError.invalidValue(key: "tokenizer.ggml.add_bos_token", detail: "expected a bool, found u8")) {
            try Tokenizer(metadata: md)
        }

        md = tinySPM()
        md["tokenizer.ggml.model"] = .string(GGUFString("bert"))
        #expect(throws: TokenizerError.unsupportedModel("bert")) { try Tokenizer(metadata: md) }

        md = tinySPM()
        md["tokenizer.ggml.model"] = .string(GGUFString("gpt2"))
        md["tokenizer.ggml.pre"] = .string(GGUFString("gpt-2"))
        #expect(throws: TokenizerError.missingKey("tokenizer.ggml.merges")) { try Tokenizer(metadata: md) }

        md["tokenizer.ggml.merges"] = .array(.string([GGUFString("▁ a")]))
        md["tokenizer.ggml.pre"] = .string(GGUFString("falcon"))
        #expect(throws: TokenizerError.unsupportedPreTokenizer("falcon")) { try Tokenizer(metadata: md) }
        md["tokenizer.ggml.pre"] = .string(GGUFString("llama3"))
        #expect((try? Tokenizer(metadata: md)) != nil)
    }

    @Test("pre-tokenizer aliases llama.cpp accepts")
    func aliases() {
        for name in ["default", "", "llama3", "llama-bpe", "llama-v3", "smaug-bpe", "dbrx", "qwen2", "deepseek-r1-qwen",
                     "megrez", "stablelm2", "gpt-2", "phi-2", "olmo", "mpt", "deepseek-llm", "starcoder", "command-r", "smollm"] {
            #expect(Tokenizer.supportsPreTokenizer(name), "\(name)")
        }
        for name in ["falcon", "deepseek-coder", "tekken", "gpt-4o", "chameleon", "bogus"] {
            #expect(!Tokenizer.supportsPreTokenizer(name), "\(name)")
        }
    }

    @Test("ids outside the vocabulary in metadata keep llama.cpp's defaults")
    func outOfRangeIDs() throws {
        var md = tinySPM()
        md["tokenizer.ggml.bos_token_id"] = .uint32(100_000)
        md["tokenizer.ggml.eos_token_id"] = .uint32(5)
        md["tokenizer.ggml.add_bos_token"] = .bool(false)
        md["tokenizer.ggml.add_space_prefix"] = .bool(false)
        let tok = try Tokenizer(metadata: md)
        #expect(tok.bos == 1 && tok.eos == 5 && tok.isEndOfGeneration(5))
        #expect(!tok.addsBOS && !tok.addsSpacePrefix)
        #expect(tok.encode("ab", addBOS: false) == [263])   // no "▁" prefix: "ab"
    }
}
