/// Splitting of text into words before byte-level BPE, one scheme per `tokenizer.ggml.pre`
/// family. Each scheme reproduces what llama.cpp computes for the corresponding regex list,
/// including where llama.cpp's hand-written matchers depart from the regex (see the notes
/// at each scanner), so that token ids agree.
///
/// Scanners work on code points; a split is returned as the ascending list of word end
/// indices (the first word starts at 0).
enum PreTokenizer: Sendable, Equatable {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// Llama 3: case-insensitive contractions, `[^\r\n\p{L}\p{N}]?\p{L}+`, `\p{N}{1,3}`,
    /// ` ?[^\s\p{L}\p{N}]+[\r\n]*`, `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`.
    case llama3
    /// Qwen2: as Llama 3 but single digits (`\p{N}`).
    case qwen2
    /// deepseek-llm: a sequence of six isolating regexes.
    case deepseekLLM
    /// No/`default` pre-tokenizer: punctuation runs, then GPT-2, then number runs, then digit triples.
    case standard
    /// starcoder family: isolated single numbers, then GPT-2.
    case starcoder

    func split(_ cps: UnsafeBufferPointer<UInt32>, _ cls: UnsafeBufferPointer<CodepointClass>) -> [Int] {
        let n = cps.count
        if n == 0 { return [] }
        var ends: [Int] = []
        ends.reserveCapacity(n / 3 + 4)
        let text = Scan(cps: cps, cls: cls)
        switch self {
        case .gpt2:
            text.gpt2(0, n, into: &ends)
        case .llama3:
            text.llamaStyle(0, n, digitGroup: 3, into: &ends)
        case .qwen2:
            text.llamaStyle(0, n, digitGroup: 1, into: &ends)
        case .standard:
            var cur = [n]
            cur = text.refine(cur) { lo, hi, out in
                text.isolate(lo, hi, into: &out) { p, hi in text.run(p, hi) { text.isStandardPunct($0) } }
            }
            cur = text.refine(cur) { lo, hi, out in text.gpt2(lo, hi, into: &out) }
            cur = text.refine(cur) { lo, hi, out in
                text.isolate(lo, hi, into: &out) { p, hi in text.run(p, hi) { text.isNumberCollapsed($0) } }
            }
            cur = text.refine(cur) { lo, hi, out in
                text.isolate(lo, hi, into: &out) { p, hi in
                    p + 3 <= hi && text.isASCIIDigit(p) && text.isASCIIDigit(p + 1) && text.isASCIIDigit(p + 2) ? p + 3 : nil
                }
            }
            ends = cur
        case .starcoder:
            var cur = [n]
            cur = text.refine(cur) { lo, hi, out in
                text.isolate(lo, hi, into: &out) { p, _ in text.isNumberCollapsed(p) ? p + 1 : nil }
            }
            cur = text.refine(cur) { lo, hi, out in text.gpt2(lo, hi, into: &out) }
            ends = cur
        case .deepseekLLM:
            var cur = [n]
            // [\r\n]
            cur = text.refine(cur) { lo, hi, out in
                text.isolate(lo, hi, into: &out) { p, _ in
                    let c = cps[p]
                    return c == 0x0D || c == 0x0A ? p + 1 : nil
                }
            }
            // \s?[cased letters]+
            cur = text.refine(cur) { lo, hi, out in
                text.isolate(lo, hi, into: &out) { p, hi in
                    text.optionalSpaceRun(p, hi) { DeepSeekClasses.isCasedLetter(cps[$0]) }
                }
            }
            // \s?[ASCII and full-width punctuation, quotes, CJK full stops]+
            cur = text.refine(cur) { lo, hi, out in
                text.isolate(lo, hi, into: &out) { p, hi in
                    text.optionalSpaceRun(p, hi) { q in
                        // std::wregex sees non-ASCII white space as U+000B, so U+3000 never
                        // reaches the class even though the class names it.
                        !cls[q].isWhitespace && DeepSeekClasses.isPunct(cps[q])
                    }
                }
            }
            // \s+$ (end of the piece being split)
            cur = text.refine(cur) { lo, hi, out in
                var t = hi
                while t > lo && cls[t - 1].isWhitespace { t -= 1 }
                if t < hi {
                    if t > lo { out.append(t) }
                    out.append(hi)
                } else {
                    out.append(hi)
                }
            }
            // [一-龥ࠀ-一가-퟿]+
            cur = text.refine(cur) { lo, hi, out in
                text.isolate(lo, hi, into: &out) { p, hi in
                    text.run(p, hi) { DeepSeekClasses.isCJK(cps[$0]) }
                }
            }
            // \p{N}+
            cur = text.refine(cur) { lo, hi, out in
                text.isolate(lo, hi, into: &out) { p, hi in text.run(p, hi) { text.isNumberCollapsed($0) } }
            }
            ends = cur
        }
        return ends
    }
}

/// Code-point view of one text fragment with the scanners over it.
struct Scan {
    let cps: UnsafeBufferPointer<UInt32>
    let cls: UnsafeBufferPointer<CodepointClass>

    static let none: UInt32 = 0xFFFF_FFFF

    @inline(__always) func cp(_ i: Int, _ lo: Int, _ hi: Int) -> UInt32 {
        i >= lo && i < hi ? cps[i] : Scan.none
    }

    @inline(__always) func cl(_ i: Int, _ lo: Int, _ hi: Int) -> CodepointClass {
        i >= lo && i < hi ? cls[i] : .outside
    }

    @inline(__always) func isASCIIDigit(_ i: Int) -> Bool { cps[i] >= 0x30 && cps[i] <= 0x39 }

    /// `\p{N}` as llama.cpp's byte-collapsed std::regex sees it: ASCII digits, or a
    /// non-ASCII, non-space code point of category N.
    @inline(__always) func isNumberCollapsed(_ i: Int) -> Bool {
        let c = cps[i]
        if c < 0x80 { return c >= 0x30 && c <= 0x39 }
        let k = cls[i]
        return !k.isWhitespace && k.isNumber
    }

    /// `[\p{P}\$\+<=>\^~\|]` after collapsing: every ASCII punctuation or symbol except
    /// the backtick, and non-ASCII, non-space code points of category P.
    @inline(__always) func isStandardPunct(_ i: Int) -> Bool {
        let c = cps[i]
        if c < 0x80 {
            switch c {
            case 0x21...0x2F, 0x3A...0x40, 0x5B...0x5F, 0x7B...0x7E: return true
            default: return false
            }
        }
        let k = cls[i]
        return !k.isWhitespace && k.contains(.punctuation)
    }

    /// End of the run of `pred` starting at `p`, or nil when `p` does not match.
    @inline(__always)
    func run(_ p: Int, _ hi: Int, _ pred: (Int) -> Bool) -> Int? {
        guard pred(p) else { return nil }
        var q = p + 1
        while q < hi && pred(q) { q += 1 }
        return q
    }

    /// `\s?X+` at `p` with ECMAScript backtracking: take the space only if a run follows.
    @inline(__always)
    func optionalSpaceRun(_ p: Int, _ hi: Int, _ pred: (Int) -> Bool) -> Int? {
        if cls[p].isWhitespace, p + 1 < hi, pred(p + 1) { return run(p + 1, hi, pred) }
        return run(p, hi, pred)
    }

    /// std::regex_iterator splitting: the leftmost match from each position, with the text
    /// between matches kept as pieces of its own.
    @inline(__always)
    func isolate(_ lo: Int, _ hi: Int, into out: inout [Int], _ match: (Int, Int) -> Int?) {
        var cur = lo
        var p = lo
        while p < hi {
            if let e = match(p, hi) {
                if p > cur { out.append(p) }
                out.append(e)
                cur = e
                p = e
            } else {
                p += 1
            }
        }
        if cur < hi { out.append(hi) }
    }

    /// Applies a splitter to each piece of an existing split.
    func refine(_ ends: [Int], _ body: (Int, Int, inout [Int]) -> Void) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(ends.count * 2)
        var lo = 0
        for hi in ends {
            if hi > lo { body(lo, hi, &out) }
            lo = hi
        }
        return out
    }

    @inline(__always) static func isContractionLetter1(_ c: UInt32) -> Bool {
        c == 0x73 || c == 0x74 || c == 0x6D || c == 0x64   // s t m d
    }

    @inline(__always) static func isContractionPair(_ a: UInt32, _ b: UInt32) -> Bool {
        (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C)   // re ve ll
    }

    @inline(__always) static func asciiLower(_ c: UInt32) -> UInt32 {
        c >= 0x41 && c <= 0x5A ? c + 0x20 : c
    }

    /// GPT-2 scanner (llama.cpp's hand-written version of the GPT-2 regex).
    func gpt2(_ lo: Int, _ hi: Int, into out: inout [Int]) {
        var pos = lo
        var last = lo
        @inline(__always) func emit(_ end: Int) {
            if end > last { out.append(end) }
            last = end
        }
        while pos < hi {
            let c = cps[pos]
            let k = cls[pos]
            // 's 't 're 've 'm 'll 'd (case-sensitive)
            if c == 0x27 && pos + 1 < hi {
                let n1 = cps[pos + 1]
                if Scan.isContractionLetter1(n1) { pos += 2; emit(pos); continue }
                if pos + 2 < hi && Scan.isContractionPair(n1, cps[pos + 2]) { pos += 3; emit(pos); continue }
            }
            var k2 = c == 0x20 ? cl(pos + 1, lo, hi) : k
            // ' ?\p{L}+'
            if k2.isLetter {
                if c == 0x20 { pos += 1 }
                while k2.isLetter { pos += 1; k2 = cl(pos, lo, hi) }
                emit(pos); continue
            }
            // ' ?\p{N}+'
            if k2.isNumber {
                if c == 0x20 { pos += 1 }
                while k2.isNumber { pos += 1; k2 = cl(pos, lo, hi) }
                emit(pos); continue
            }
            // ' ?[^\s\p{L}\p{N}]+'
            if !(k2.isWhitespace || k2.isLetter || k2.isNumber) && k2.exists {
                if c == 0x20 { pos += 1 }
                while !(k2.isWhitespace || k2.isLetter || k2.isNumber) && k2.exists { pos += 1; k2 = cl(pos, lo, hi) }
                emit(pos); continue
            }
            var spaces = 0
            while cl(pos + spaces, lo, hi).isWhitespace { spaces += 1 }
            // '\s+(?!\S)': leave the last space to prefix the next word (not at the end)
            if spaces > 1 && cp(pos + spaces, lo, hi) != Scan.none {
                pos += spaces - 1; emit(pos); continue
            }
            if spaces > 0 { pos += spaces; emit(pos); continue }
            pos += 1; emit(pos)
        }
    }

    /// Llama 3 / Qwen2 scanner (llama.cpp's hand-written version). `digitGroup` is 3 for
    /// `\p{N}{1,3}` and 1 for `\p{N}`.
    ///
    /// Like llama.cpp, the punctuation rule requires only that the current code point exists,
    /// so a space before an end of text or before an unassigned code point is its own word.
    func llamaStyle(_ lo: Int, _ hi: Int, digitGroup: Int, into out: inout [Int]) {
        var pos = lo
        var last = lo
        @inline(__always) func emit(_ end: Int) {
            if end > last { out.append(end) }
            last = end
        }
        while pos < hi {
            let c = cps[pos]
            let k = cls[pos]
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if c == 0x27 && pos + 1 < hi {
                let n1 = Scan.asciiLower(cps[pos + 1])
                if Scan.isContractionLetter1(n1) { pos += 2; emit(pos); continue }
                if pos + 2 < hi && Scan.isContractionPair(n1, Scan.asciiLower(cps[pos + 2])) { pos += 3; emit(pos); continue }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(c == 0x0D || c == 0x0A || k.isNumber) {
                if k.isLetter || cl(pos + 1, lo, hi).isLetter {
                    pos += 1
                    while cl(pos, lo, hi).isLetter { pos += 1 }
                    emit(pos); continue
                }
            }
            // \p{N}{1,digitGroup}
            if k.isNumber {
                var start = pos
                while cl(pos, lo, hi).isNumber {
                    pos += 1
                    if pos - start >= digitGroup { emit(pos); start = pos }
                }
                emit(pos); continue
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            var k2 = c == 0x20 ? cl(pos + 1, lo, hi) : k
            if !(k2.isWhitespace || k2.isLetter || k2.isNumber) && k.exists {
                if c == 0x20 { pos += 1 }
                while !(k2.isWhitespace || k2.isLetter || k2.isNumber) && k2.exists { pos += 1; k2 = cl(pos, lo, hi) }
                var c2 = cp(pos, lo, hi)
                while c2 == 0x0D || c2 == 0x0A { pos += 1; c2 = cp(pos, lo, hi) }
                emit(pos); continue
            }
            var spaces = 0
            var afterLastNewline = 0
            while cl(pos + spaces, lo, hi).isWhitespace {
                let c2 = cps[pos + spaces]
                if c2 == 0x0D || c2 == 0x0A { afterLastNewline = pos + spaces + 1 }
                spaces += 1
            }
            // \s*[\r\n]+
            if afterLastNewline > 0 { pos = afterLastNewline; emit(pos); continue }
            // \s+(?!\S)
            if spaces > 1 && cp(pos + spaces, lo, hi) != Scan.none {
                pos += spaces - 1; emit(pos); continue
            }
            // \s+
            if spaces > 0 { pos += spaces; emit(pos); continue }
            pos += 1; emit(pos)
        }
    }
}

/// Character classes spelled out in the deepseek-llm pre-tokenizer regexes.
enum DeepSeekClasses {
    /// The letter class of `\s?[A-Za-zµÀ-Ö…]+` (cased letters), as inclusive ranges.
    static let casedLetterRanges: [ClosedRange<UInt32>] = [
        0x41...0x5A, 0x61...0x7A, 0xB5...0xB5, 0xC0...0xD6, 0xD8...0xF6, 0xF8...0x1BA,
        0x1BC...0x1BF, 0x1C4...0x293, 0x295...0x2AF, 0x370...0x373, 0x376...0x377,
        0x37B...0x37D, 0x37F...0x37F, 0x386...0x386, 0x388...0x38A, 0x38C...0x38C,
        0x38E...0x3A1, 0x3A3...0x3F5, 0x3F7...0x481, 0x48A...0x52F, 0x531...0x556,
        0x10A0...0x10C5, 0x13A0...0x13F5, 0x13F8...0x13FD, 0x1C90...0x1CBA, 0x1CBD...0x1CBF,
        0x1D00...0x1D2B, 0x1D6B...0x1D77, 0x1D79...0x1D9A, 0x1E00...0x1F15, 0x1F18...0x1F1D,
        0x1F20...0x1F45, 0x1F48...0x1F4D, 0x1F50...0x1F57, 0x1F59...0x1F59, 0x1F5B...0x1F5B,
        0x1F5D...0x1F5D, 0x1F5F...0x1F7D, 0x1F80...0x1FB4, 0x1FB6...0x1FBC, 0x1FBE...0x1FBE,
        0x1FC2...0x1FC4, 0x1FC6...0x1FCC, 0x1FD0...0x1FD3, 0x1FD6...0x1FDB, 0x1FE0...0x1FEC,
        0x1FF2...0x1FF4, 0x1FF6...0x1FFC, 0x2102...0x2102, 0x2107...0x2107, 0x210A...0x2113,
        0x2115...0x2115, 0x2119...0x211D, 0x2124...0x2124, 0x2126...0x2126, 0x2128...0x2128,
        0x212A...0x212D, 0x212F...0x2134, 0x2139...0x2139, 0x213C...0x213F, 0x2145...0x2149,
        0x214E...0x214E, 0x2183...0x2184, 0x2C00...0x2C7B, 0x2C7E...0x2CE4, 0x2CEB...0x2CEE,
        0x2CF2...0x2CF3, 0xA640...0xA66D, 0xA680...0xA69B, 0xA722...0xA76F, 0xA771...0xA787,
        0xA78B...0xA78E, 0xAB70...0xABBF, 0xFB00...0xFB06, 0xFB13...0xFB17, 0xFF21...0xFF3A,
        0xFF41...0xFF5A, 0x10400...0x1044F, 0x104B0...0x104D3, 0x104D8...0x104FB,
        0x10C80...0x10CB2, 0x10CC0...0x10CF2, 0x118A0...0x118DF, 0x1E900...0x1E943,
    ]

    /// Membership bitmap for U+0000…U+FFFF; the few ranges above it are checked directly.
    private static let bmpBits: [UInt64] = {
        var bits = [UInt64](repeating: 0, count: 0x1_0000 / 64)
        for r in casedLetterRanges where r.lowerBound < 0x1_0000 {
            for c in r { bits[Int(c >> 6)] |= 1 << UInt64(c & 63) }
        }
        return bits
    }()

    @inline(__always)
    static func isCasedLetter(_ c: UInt32) -> Bool {
        if c < 0x80 { return (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) }
        if c < 0x1_0000 { return bmpBits[Int(c >> 6)] & (1 << UInt64(c & 63)) != 0 }
        return (0x10400...0x1044F).contains(c) || (0x104B0...0x104D3).contains(c)
            || (0x104D8...0x104FB).contains(c) || (0x10C80...0x10CB2).contains(c)
            || (0x10CC0...0x10CF2).contains(c) || (0x118A0...0x118DF).contains(c)
            || (0x1E900...0x1E943).contains(c)
    }

    /// `[!-/:-~！-／：-～‘-‟　-。]`
    @inline(__always)
    static func isPunct(_ c: UInt32) -> Bool {
        (0x21...0x2F).contains(c) || (0x3A...0x7E).contains(c) || (0xFF01...0xFF0F).contains(c)
            || (0xFF1A...0xFF5E).contains(c) || (0x2018...0x201F).contains(c) || (0x3000...0x3002).contains(c)
    }

    /// `[一-龥ࠀ-一가-퟿]`
    @inline(__always)
    static func isCJK(_ c: UInt32) -> Bool {
        (0x4E00...0x9FA5).contains(c) || (0x0800...0x4E00).contains(c) || (0xAC00...0xD7FF).contains(c)
    }
}
