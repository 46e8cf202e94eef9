import Foundation
import Testing
import Tokenizer

/// Optional cross-check against llama.cpp itself: set `MOE_TOKENIZER_REFERENCE` to a JSON-lines
/// file written with llama.cpp's library (one header line per vocabulary with every token's
/// piece, BOS/EOS/EOT, EOG ids and add-BOS/EOS flags; then one line per text with the ids of
/// `llama_tokenize` for given add_special/parse_special and the text of `llama_detokenize`).
/// Skipped when the variable is unset.
@Suite("llama.cpp library cross-check")
struct ReferenceCrossCheck {
    static let path = ProcessInfo.processInfo.environment["MOE_TOKENIZER_REFERENCE"]

    @Test(.enabled(if: path != nil))
    func agreesWithLibrary() throws {
        let data = try String(contentsOfFile: Self.path!, encoding: .utf8)
        var checked = 0, failures = 0
        var perVocab: [String: (ok: Int, all: Int)] = [:]
        for line in data.split(separator: "\n") {
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let vocabPath = obj["vocab"] as! String
            let name = URL(fileURLWithPath: vocabPath).lastPathComponent
            let tok = try TokenizerCache.shared.tokenizer(path: vocabPath)
            func b64(_ key: String) -> [UInt8] { [UInt8](Data(base64Encoded: obj[key] as! String)!) }
            func fail(_ msg: String) {
                failures += 1
                if failures <= 40 { Issue.record("\(name): \(msg)") }
            }
            if let pieces = obj["pieces"] as? [String] {
                let special = obj["pieces_special"] as! [String]
                #expect(pieces.count == tok.vocabularySize)
                for id in 0..<pieces.count {
                    if tok.pieceBytes(id) != [UInt8](Data(base64Encoded: pieces[id])!) { fail("piece \(id)") }
                    if tok.pieceBytes(id, special: true) != [UInt8](Data(base64Encoded: special[id])!) { fail("special piece \(id)") }
                }
                let llamaBOS = obj["bos"] as! Int, llamaEOS = obj["eos"] as! Int, llamaEOT = obj["eot"] as! Int
                if (tok.bos ?? -1) != llamaBOS { fail("bos \(String(describing: tok.bos)) vs \(llamaBOS)") }
                if (tok.eos ?? -1) != llamaEOS { fail("eos \(String(describing: tok.eos)) vs \(llamaEOS)") }
                if (tok.eot ?? -1) != llamaEOT { fail("eot \(String(describing: tok.eot)) vs \(llamaEOT)") }
                if tok.endOfGenerationTokens != (obj["eog"] as! [Int]) { fail("eog \(tok.endOfGenerationTokens) vs \(obj["eog"]!)") }
                if tok.addsBOS != (obj["add_bos"] as! Bool) { fail("add_bos") }
                if tok.addsEOS != (obj["add_eos"] as! Bool) { fail("add_eos") }
                continue
            }
            let text = b64("text")
            let parseSpecial = obj["parse_special"] as! Bool
            let addSpecial = obj["add_special"] as! Bool
            let expected = obj["ids"] as! [Int]
            let got = tok.encode(utf8: text, addBOS: addSpecial && tok.addsBOS, addEOS: addSpecial && tok.addsEOS,
                                 parseSpecial: parseSpecial)
            checked += 1
            var ok = got == expected
            if !ok {
                fail("encode(parseSpecial: \(parseSpecial), addSpecial: \(addSpecial)) \(describe(Array(text.prefix(200)))): expected \(expected.prefix(60)), got \(got.prefix(60))")
            }
            if obj["detok"] != nil {
                if tok.decodeBytes(expected) != b64("detok") { ok = false; fail("decode \(expected.prefix(40)): \(describe(tok.decodeBytes(expected))) vs \(describe(b64("detok")))") }
                if tok.decodeBytes(expected, special: true) != b64("detok_special") { ok = false; fail("decode special \(expected.prefix(40))") }
            }
            if let bosIDs = obj["bos_ids"] as? [Int] {
                if tok.decodeBytes(bosIDs) != b64("bos_detok") { ok = false; fail("decode with BOS \(bosIDs.prefix(20))") }
            }
            perVocab[name, default: (0, 0)].all += 1
            if ok { perVocab[name, default: (0, 0)].ok += 1 }
        }
        for (name, r) in perVocab.sorted(by: { $0.key < $1.key }) {
            print("[tokenizer] library cross-check \(name): \(r.ok)/\(r.all)")
        }
        print("[tokenizer] library cross-check: \(checked) encodings, \(failures) failures")
        #expect(failures == 0)
    }
}
