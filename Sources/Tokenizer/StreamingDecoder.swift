/// Turns token ids, one at a time, into text that is always complete, valid UTF-8.
///
/// Bytes of a character split across tokens (byte-fallback or byte-level pieces) are held
/// back until the character is complete; bytes that can never form a character come out
/// as U+FFFD. `finish()` flushes what is left.
///
/// Leading space: SentencePiece vocabularies put a space before the first word of a text
/// (the "dummy prefix"). Like `llama_detokenize`, the decoder removes one leading space from
/// the first token of the stream; unlike it, a leading BOS token does not stop the removal,
/// so `[BOS, "▁Hello"]` streams as "Hello" (llama.cpp's `llama_detokenize` would give
/// " Hello"). Pass `stripLeadingSpace: false` when the stream continues text already shown.
/// No clean-up of spaces before punctuation is done (llama.cpp does not do it when
/// streaming either).
public struct StreamingDecoder {
    public let tokenizer: Tokenizer
    public var stripLeadingSpace: Bool
    public var renderSpecial: Bool
    private var pending: [UInt8] = []
    private var atStart = true

    public init(tokenizer: Tokenizer) {
        self.init(tokenizer: tokenizer, stripLeadingSpace: tokenizer.addsSpacePrefix, renderSpecial: false)
    }

    public init(tokenizer: Tokenizer, stripLeadingSpace: Bool, renderSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.stripLeadingSpace = stripLeadingSpace
        self.renderSpecial = renderSpecial
    }

    /// Adds one token; returns the text that is now complete (possibly "").
    public mutating func append(_ id: Int) -> String {
        var piece = tokenizer.pieceBytes(id, special: renderSpecial)
        if atStart {
            if let bos = tokenizer.bos, id == bos {
                // A leading BOS keeps the stream "at start" for the space removal.
            } else {
                if stripLeadingSpace, piece.first == 0x20 { piece.removeFirst() }
                atStart = false
            }
        }
        pending.append(contentsOf: piece)
        return drain(final: false)
    }

    /// Appends several tokens; returns the text completed by them.
    public mutating func append(contentsOf ids: [Int]) -> String {
        var s = ""
        for id in ids { s += append(id) }
        return s
    }

    /// Everything still held back (an incomplete character becomes U+FFFD), and a reset.
    public mutating func finish() -> String {
        let s = drain(final: true)
        atStart = true
        return s
    }

    private mutating func drain(final: Bool) -> String {
        if pending.isEmpty { return "" }
        let cut = final ? pending.count : StreamingDecoder.completeLength(pending)
        if cut == 0 { return "" }
        let s = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return s
    }

    /// Length of the prefix that does not end inside a character that could still be
    /// completed by more bytes.
    static func completeLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        var j = n - 1
        let stop = max(0, n - 4)
        while j >= stop && bytes[j] & 0xC0 == 0x80 { j -= 1 }
        guard j >= stop else { return n }   // only continuation bytes: nothing can complete them
        let lead = bytes[j]
        let need = utf8ExpectedLength(lead)
        let have = n - j
        if need <= 1 || have >= need { return n }
        for k in 1..<have where !utf8ContinuationOK(lead: lead, index: k, bytes[j + k]) { return n }
        return j
    }
}
