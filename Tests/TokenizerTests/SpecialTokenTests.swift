import Foundation
import GGUF
import Testing
import Tokenizer

@Suite("BOS, EOS and special tokens")
struct SpecialTokenTests {
    @Test("ids and flags from metadata, with llama.cpp's defaults")
    func ids() throws {
        let expected: [(String, bos: Int?, eos: Int?, eot: Int?, addsBOS: Bool, eog: [Int])] = [
            ("llama-spm", 1, 2, nil, true, [2]),
            ("phi-3", 1, 32000, 32007, true, [2, 32000, 32007]),
            ("llama-bpe", 128000, 128001, 128009, true, [128001, 128009]),
            ("qwen2", 151643, 151643, 151645, false, [128247, 151643, 151645]),   // 128247 is "</s>"
            ("gpt-2", 50256, 50256, 50256, false, [50256]),
            ("deepseek-llm", 100000, 100001, 100001, true, [100001]),
        ]
        for e in expected {
            let tok = try TokenizerCache.shared.vocab(e.0)
            #expect(tok.bos == e.bos, "\(e.0) bos")
            #expect(tok.eos == e.eos, "\(e.0) eos")
            #expect(tok.eot == e.eot, "\(e.0) eot")
            #expect(tok.addsBOS == e.addsBOS, "\(e.0) add_bos")
            #expect(!tok.addsEOS)
            #expect(tok.endOfGenerationTokens == e.eog, "\(e.0) eog")
            for id in e.eog { #expect(tok.isEndOfGeneration(id)) }
            #expect(!tok.isEndOfGeneration(0) && !tok.isEndOfGeneration(-1) && !tok.isEndOfGeneration(Int.max))
        }
        #expect(try TokenizerCache.shared.vocab("gpt-2").vocabularySize == 50257)
        #expect(try TokenizerCache.shared.vocab("llama-bpe").vocabularySize == 128256)
    }

    @Test("BOS is added on request only, and EOS likewise")
    func bos() throws {
        let spm = try TokenizerCache.shared.vocab("llama-spm")
        #expect(spm.encode("Hello world", addBOS: true) == [1, 15043, 3186])
        #expect(spm.encode("Hello world", addBOS: false) == [15043, 3186])
        #expect(spm.encode("Hello world", addBOS: true, addEOS: true, parseSpecial: true) == [1, 15043, 3186, 2])
        #expect(spm.encode("", addBOS: true) == [1])
        #expect(spm.encode("", addBOS: false) == [])
        let llama3 = try TokenizerCache.shared.vocab("llama-bpe")
        #expect(llama3.encode("Hello world", addBOS: llama3.addsBOS) == [128000, 9906, 1917])
        let qwen = try TokenizerCache.shared.vocab("qwen2")
        #expect(qwen.encode("Hello world", addBOS: qwen.addsBOS) == [9707, 1879])
    }

    @Test("special tokens written in text (ids from llama.cpp)")
    func parsing() throws {
        let qwen = try TokenizerCache.shared.vocab("qwen2")
        let chat = "<|im_start|>user\nHi there<|im_end|>\n"
        #expect(qwen.encode(chat, addBOS: false, parseSpecial: true) == [151644, 872, 198, 13048, 1052, 151645, 198])
        #expect(qwen.encode(chat, addBOS: false, parseSpecial: false)
                == [27, 91, 318, 4906, 91, 29, 872, 198, 13048, 1052, 27, 91, 318, 6213, 91, 397])

        let llama3 = try TokenizerCache.shared.vocab("llama-bpe")
        #expect(llama3.encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", addBOS: true)
                == [128000, 128006, 882, 128007, 271, 13347, 128009])

        // SentencePiece: a space prefix after each special token; "<s>"/"</s>" only with parseSpecial.
        let spm = try TokenizerCache.shared.vocab("llama-spm")
        #expect(spm.encode("<s>Hello</s> world", addBOS: false, parseSpecial: true) == [1, 15043, 2, 29871, 3186])
        #expect(spm.encode("<s>Hello</s> world", addBOS: false, parseSpecial: false)
                == [529, 29879, 29958, 10994, 829, 29879, 29958, 3186])

        // Phi-3: llama.cpp strips white space to the right of its special tokens.
        let phi3 = try TokenizerCache.shared.vocab("phi-3")
        let prompt = "<|user|>\n  Hello</s> <|end|>\n<|assistant|>"
        #expect(phi3.encode(prompt, addBOS: true, parseSpecial: true) == [1, 32010, 15043, 2, 32007, 32001])
        #expect(phi3.encode(prompt, addBOS: false, parseSpecial: false)
                == [529, 29989, 1792, 29989, 29958, 13, 29871, 15043, 829, 29879, 29958, 529, 29989, 355, 29989,
                    29958, 13, 29966, 29989, 465, 22137, 29989, 29958])

        // deepseek-llm's user-defined tokens ("ö", "ü") are matched even without parseSpecial.
        let deepseek = try TokenizerCache.shared.vocab("deepseek-llm")
        #expect(deepseek.encode("öl und über", addBOS: false, parseSpecial: false) == [100003, 75, 7487, 207, 100014, 701])
        #expect(deepseek.decode([100003, 75, 7487, 207, 100014, 701]) == "öl und über")
    }

    @Test("tiny model vocabularies load and work (ids from llama.cpp)")
    func tinyModels() throws {
        let paths = Shared.models
        #expect(paths.count >= 6)
        let text = "Hello world, 123!"
        for path in paths {
            let name = URL(fileURLWithPath: path).lastPathComponent
            let tok = try Tokenizer(metadata: GGUFFile.open(path: path).metadata)
            #expect(tok.vocabularySize == 512, "\(name)")
            let ids = tok.encode(text, addBOS: tok.addsBOS)
            switch tok.kind {
            case .sentencePiece:
                // 512 pieces leave out "▁" itself, so the space before "123" falls back to bytes.
                #expect(tok.addsBOS && tok.bos == 1 && tok.eos == 2, "\(name)")
                #expect(ids == [1, 379, 295, 417, 281, 272, 430, 47, 229, 153, 132, 52, 53, 54, 36], "\(name)")
                #expect(tok.decode(ids) == " Hello world,▁123!", "\(name)")
            case .bytePairEncoding:
                #expect(!tok.addsBOS && tok.bos == 511 && tok.eos == 511 && tok.preTokenizerName == "gpt-2", "\(name)")
                #expect(ids == [39, 68, 297, 78, 476, 335, 11, 352, 17, 18, 0], "\(name)")
                #expect(tok.decode(ids) == text, "\(name)")
            }
            if let eos = tok.eos { #expect(tok.isEndOfGeneration(eos)) }
        }
    }
}
