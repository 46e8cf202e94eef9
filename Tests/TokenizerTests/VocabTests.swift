import Foundation
import GGUF
import Testing
import Tokenizer

/// Every line of llama.cpp's tokenizer test vectors (add_special = false, parse_special = false).
@Suite("llama.cpp vocab test vectors")
struct VocabTests {
    @Test("ids match llama.cpp", arguments: vocabNames)
    func idsMatch(name: String) throws {
        let tok = try TokenizerCache.shared.vocab(name)
        let cases = try readVocabCases(name)
        var passed = 0
        for (i, c) in cases.enumerated() {
            let got = tok.encode(utf8: c.text, addBOS: false, addEOS: false, parseSpecial: false)
            if got == c.expected {
                passed += 1
            } else {
                Issue.record("\(name) case \(i) \(describe(c.text)): expected \(c.expected), got \(got)")
            }
        }
        print("[tokenizer] \(name): \(passed)/\(cases.count) cases match llama.cpp")
        #expect(passed == cases.count)
        #expect(cases.count > 30)
    }
}
