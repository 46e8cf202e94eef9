import Foundation
import Testing
import Tokenizer

@Suite("Streaming decoder")
struct StreamingTests {
    @Test("characters split across byte tokens come out whole")
    func splitCharacters() throws {
        let spm = try TokenizerCache.shared.vocab("llama-spm")
        // "🦙 ក" → ▁ <0xF0> <0x9F> <0xA6> <0x99> ▁ ក (llama.cpp's ids)
        let ids = spm.encode("🦙 ក", addBOS: false)
        #expect(ids == [29871, 243, 162, 169, 156, 29871, 31849])
        var d = StreamingDecoder(tokenizer: spm)
        let outputs = ids.map { d.append($0) }
        #expect(outputs == ["", "", "", "", "🦙", " ", "ក"])
        #expect(d.finish() == "")

        let gpt2 = try TokenizerCache.shared.vocab("gpt-2")
        var g = StreamingDecoder(tokenizer: gpt2)
        let parts = gpt2.encode("🦙 ក", addBOS: false).map { g.append($0) }
        #expect(parts == ["", "", "🦙", " ", "", "ក"])
    }

    @Test("streamed text equals the decoded text, with no replacement characters", arguments: vocabNames)
    func streamEqualsDecode(name: String) throws {
        let tok = try TokenizerCache.shared.vocab(name)
        for c in try readVocabCases(name) {
            let text = String(decoding: c.text, as: UTF8.self)
            let ids = tok.encode(text, addBOS: false, parseSpecial: false)
            var d = StreamingDecoder(tokenizer: tok)
            var streamed = ""
            for (k, id) in ids.enumerated() {
                let chunk = k == ids.count - 1 ? d.append(id) + d.finish() : d.append(id)
                #expect(!chunk.unicodeScalars.contains("\u{FFFD}"), "\(name): replacement character streaming \(describe(c.text))")
                streamed += chunk
            }
            // Streaming skips llama.cpp's decode-time space clean-up (gpt-2, llama-bpe), so
            // compare with the plain concatenation of pieces there.
            var pieces = ids.flatMap { tok.pieceBytes($0) }
            if tok.addsSpacePrefix, pieces.first == 0x20 { pieces.removeFirst() }
            #expect(Array(streamed.utf8) == pieces)
            if name != "gpt-2" && name != "llama-bpe" { #expect(streamed == tok.decode(ids)) }
            #expect(streamed == text)
        }
    }

    @Test("leading space after BOS, and mid-text streams")
    func leadingSpace() throws {
        let spm = try TokenizerCache.shared.vocab("llama-spm")
        let ids = spm.encode("Hello world", addBOS: true)
        #expect(ids == [1, 15043, 3186])
        var d = StreamingDecoder(tokenizer: spm)
        #expect(ids.map { d.append($0) }.joined() == "Hello world")
        // Continuing text already shown: keep every space.
        var mid = StreamingDecoder(tokenizer: spm, stripLeadingSpace: false)
        #expect([3186, 29991].map { mid.append($0) }.joined() == " world!")
        // BPE vocabularies have no dummy prefix: nothing is stripped.
        let llama3 = try TokenizerCache.shared.vocab("llama-bpe")
        var b = StreamingDecoder(tokenizer: llama3)
        #expect(llama3.encode(" Hi", addBOS: true).map { b.append($0) }.joined() == " Hi")
        // Control tokens are hidden unless asked for.
        var shown = StreamingDecoder(tokenizer: llama3, stripLeadingSpace: false, renderSpecial: true)
        #expect(shown.append(128009) == "<|eot_id|>")
    }

    @Test("invalid and unfinished byte sequences")
    func invalidBytes() throws {
        let spm = try TokenizerCache.shared.vocab("llama-spm")
        func byteToken(_ b: UInt8) -> Int { spm.tokenID(forText: String(format: "<0x%02X>", b))! }
        var d = StreamingDecoder(tokenizer: spm, stripLeadingSpace: false)
        // A lone continuation byte cannot start a character: replaced at once.
        #expect(d.append(byteToken(0x80)) == "\u{FFFD}")
        // E2 82 is a valid start of "€" (E2 82 AC): held back until complete.
        #expect(d.append(byteToken(0xE2)) == "")
        #expect(d.append(byteToken(0x82)) == "")
        #expect(d.append(byteToken(0xAC)) == "€")
        // A start that can no longer complete is flushed as soon as that is known.
        #expect(d.append(byteToken(0xE2)) == "")
        #expect(d.append(byteToken(0x41)) == "\u{FFFD}A")
        // finish() flushes an unfinished character.
        #expect(d.append(byteToken(0xF0)) == "")
        #expect(d.append(byteToken(0x9F)) == "")
        #expect(d.finish() == "\u{FFFD}")
        #expect(d.finish() == "")
    }
}
