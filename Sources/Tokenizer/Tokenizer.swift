import GGUF

/// Token attributes, as llama.cpp derives them from `tokenizer.ggml.token_type`.
struct TokenAttributes: OptionSet, Sendable {
    let rawValue: UInt16
    static let unknown     = TokenAttributes(rawValue: 1 << 0)
    static let unused      = TokenAttributes(rawValue: 1 << 1)
    static let normal      = TokenAttributes(rawValue: 1 << 2)
    static let control     = TokenAttributes(rawValue: 1 << 3)
    static let userDefined = TokenAttributes(rawValue: 1 << 4)
    static let byte        = TokenAttributes(rawValue: 1 << 5)
    static let lstrip      = TokenAttributes(rawValue: 1 << 7)
    static let rstrip      = TokenAttributes(rawValue: 1 << 8)

    /// From a GGUF token type (0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    init(tokenType: Int32) {
        switch tokenType {
        case 1: self = .normal
        case 2: self = .unknown
        case 3: self = .control
        case 4: self = .userDefined
        case 5: self = .unused
        case 6: self = .byte
        default: self = []
        }
    }

    init(rawValue: UInt16) { self.rawValue = rawValue }
}

/// A tokenizer built from GGUF metadata that produces the same token ids as llama.cpp.
///
/// Two tokenizer models are supported: `llama` (SentencePiece with byte fallback, merged by
/// piece score) and `gpt2` (byte-level BPE with merge ranks) with the pre-tokenizers
/// `default`, `gpt-2`, `llama-bpe`/`llama3`, `qwen2`, `deepseek-llm` and the names llama.cpp
/// treats as aliases of those (see `Tokenizer.preTokenizer(named:)`).
public final class Tokenizer: Sendable {
    public enum Kind: String, Sendable {
        case sentencePiece = "llama"
        case bytePairEncoding = "gpt2"
    }

    /// `tokenizer.ggml.model`, resolved.
    public let kind: Kind
    /// `tokenizer.ggml.pre` as written in the file ("" when absent or for SentencePiece).
    public let preTokenizerName: String
    let preTokenizer: PreTokenizer?

    /// Number of tokens (`count` is the internal spelling).
    public var vocabularySize: Int { count }
    let count: Int

    /// Token text → id (last id wins for duplicate texts, as llama.cpp's map does). For BPE
    /// vocabularies it also holds merge results that are not tokens, with ids ≥ `count`.
    let vocab: ByteStringMap
    let textPool: [UInt8]
    let textStart: [Int32]     // count + 1 offsets into textPool
    let scores: [Float]
    let attributes: [TokenAttributes]
    /// Rendering of each token with special tokens shown (llama.cpp's piece cache).
    let piecePool: [UInt8]
    let pieceStart: [Int32]

    /// SentencePiece byte fallback token per byte (or -1).
    let byteFallback: [Int32]
    /// SentencePiece only: no token has "▁" right after another character than "▁", so no
    /// token can span the start of such a "▁" in the text, and the text may be merged in
    /// independent chunks cut there (same result, far smaller merge queues).
    let chunksAtWordStarts: Bool
    /// Token whose text is exactly this one byte (or -1); BPE's last resort.
    let singleByteToken: [Int32]
    let bpe: BPEMerges?

    /// Control, user-defined and unknown tokens in matching order (longest text first).
    let specialTokens: [Int32]
    /// Text → index into `specialTokens` (first in matching order).
    let specialIndex: ByteStringMap
    /// Distinct special-token text lengths per first byte, longest first.
    let specialLengths: [[Int32]]

    let bosID: Int32, eosID: Int32, eotID: Int32, eomID: Int32
    let unkID: Int32, sepID: Int32, padID: Int32, maskID: Int32
    let fimIDs: [Int32]  // pre, suf, mid, pad, rep, sep
    let endOfGeneration: Set<Int32>

    /// Whether the model expects a BOS token before a prompt (`tokenizer.ggml.add_bos_token`,
    /// defaulting as llama.cpp does per model and pre-tokenizer).
    public let addsBOS: Bool
    /// Whether the model expects an EOS token after a prompt.
    public let addsEOS: Bool
    /// SentencePiece dummy prefix: a space is put before text at the start and after special
    /// tokens, and removed again from the first decoded token.
    public let addsSpacePrefix: Bool
    /// llama.cpp's `clean_up_tokenization_spaces` for decoding.
    let cleanSpaces: Bool

    public var bos: Int? { bosID < 0 ? nil : Int(bosID) }
    public var eos: Int? { eosID < 0 ? nil : Int(eosID) }
    public var eot: Int? { eotID < 0 ? nil : Int(eotID) }
    public var eom: Int? { eomID < 0 ? nil : Int(eomID) }
    public var unknown: Int? { unkID < 0 ? nil : Int(unkID) }
    public var padding: Int? { padID < 0 ? nil : Int(padID) }
    public var separator: Int? { sepID < 0 ? nil : Int(sepID) }
    /// All ids that end generation (EOS, EOT, EOM and the end markers llama.cpp recognises by text), sorted.
    public var endOfGenerationTokens: [Int] { endOfGeneration.map { Int($0) }.sorted() }

    public func isEndOfGeneration(_ id: Int) -> Bool {
        guard let t = Int32(exactly: id) else { return false }
        return endOfGeneration.contains(t)
    }

    /// True for control tokens (BOS, EOS, chat markers...), which are hidden when decoding.
    public func isControl(_ id: Int) -> Bool {
        guard id >= 0 && id < count else { return false }
        return attributes[id].contains(.control)
    }

    /// The stored text of a token (pieces, not decoded: "▁Hello", "Ġworld", "<0x0A>").
    public func tokenText(_ id: Int) -> [UInt8]? {
        guard id >= 0 && id < count else { return nil }
        return Array(textPool[Int(textStart[id])..<Int(textStart[id + 1])])
    }

    /// The id of the token whose stored text is exactly `text`.
    public func tokenID(forText text: String) -> Int? {
        let id = vocab.find(Array(text.utf8))
        return id >= 0 && Int(id) < count ? Int(id) : nil
    }

    // MARK: - Building from metadata

    public convenience init(metadata: GGUFMetadata) throws(TokenizerError) {
        try self.init(reading: MetadataReader(metadata))
    }

    private init(reading md: MetadataReader) throws(TokenizerError) {
        guard let modelName = try md.string(Keys.model) else { throw .missingKey(Keys.model) }
        let preName = try md.string(Keys.pre) ?? ""

        guard let kind = Kind(rawValue: modelName) else { throw .unsupportedModel(modelName) }
        self.kind = kind

        // Per-model defaults (llama.cpp llama_vocab::impl::load).
        var bos: Int32, eos: Int32, unk: Int32
        var addBOS = false, addEOS = false, addSpacePrefix = false, cleanSpaces = false
        var ignoreMerges = false
        switch kind {
        case .sentencePiece:
            bos = 1; eos = 2; unk = 0
            addSpacePrefix = true; addBOS = true
            preTokenizer = nil
        case .bytePairEncoding:
            bos = 11; eos = 11; unk = -1
            cleanSpaces = true
            guard let family = Tokenizer.preTokenizer(named: preName) else { throw .unsupportedPreTokenizer(preName) }
            preTokenizer = family.pre
            if let v = family.cleanSpaces { cleanSpaces = v }
            ignoreMerges = family.ignoreMerges
            addBOS = family.addBOS
            if family.noBOS { bos = -1 }
        }
        preTokenizerName = preName
        if let v = try md.bool(Keys.addSpacePrefix) { addSpacePrefix = v }

        // Tokens, scores, types.
        guard let tokenValue = md.metadata[Keys.tokens] else { throw .missingKey(Keys.tokens) }
        guard case let .array(.string(tokenStrings)) = tokenValue else {
            throw .invalidValue(key: Keys.tokens, detail: "expected an array of strings, found \(typeName(tokenValue))")
        }
        let n = tokenStrings.count
        guard n > 0 else { throw .invalidValue(key: Keys.tokens, detail: "the vocabulary is empty") }
        guard n < Int(Int32.max) / 2 else { throw .invalidValue(key: Keys.tokens, detail: "too many tokens (\(n))") }
        count = n

        var scores = [Float](repeating: 0, count: n)
        if let v = md.metadata[Keys.scores] {
            switch v {
            case let .array(.float32(a)) where a.count >= n: scores = Array(a.prefix(n))
            case let .array(.int32(a)) where a.count >= n: scores = a.prefix(n).map { Float($0) }
            case let .array(a) where a.elementType == .float32 || a.elementType == .int32:
                throw .invalidValue(key: Keys.scores, detail: "\(a.count) scores for \(n) tokens")
            default:
                throw .invalidValue(key: Keys.scores, detail: "expected an array of f32 or i32, found \(typeName(v))")
            }
        }
        self.scores = scores

        var attrs = [TokenAttributes](repeating: .normal, count: n)
        if let v = md.metadata[Keys.tokenType] {
            guard case let .array(.int32(types)) = v else {
                throw .invalidValue(key: Keys.tokenType, detail: "expected an array of i32, found \(typeName(v))")
            }
            guard types.count >= n else {
                throw .invalidValue(key: Keys.tokenType, detail: "\(types.count) token types for \(n) tokens")
            }
            for i in 0..<n { attrs[i] = TokenAttributes(tokenType: types[i]) }
        }

        var pool: [UInt8] = []
        var starts: [Int32] = []
        starts.reserveCapacity(n + 1)
        pool.reserveCapacity(n * 8)
        var table = ByteStringMap(expectedCount: n)
        for i in 0..<n {
            var text = tokenStrings[i].bytes
            if text.isEmpty { text = Array("[EMPTY_\(i)]".utf8) }
            starts.append(Int32(pool.count))
            pool.append(contentsOf: text)
            table.insert(text, value: Int32(i), replace: true)
        }
        starts.append(Int32(pool.count))
        textPool = pool
        textStart = starts

        @inline(__always) func text(_ id: Int) -> ArraySlice<UInt8> {
            pool[Int(starts[id])..<Int(starts[id + 1])]
        }
        func lookup(_ s: String) -> Int32 {
            let id = table.find(Array(s.utf8))
            return id >= 0 && Int(id) < n ? id : -1
        }

        // BPE merges: symbol ids for both halves and for their concatenation.
        if kind == .bytePairEncoding {
            guard let mv = md.metadata[Keys.merges] else { throw .missingKey(Keys.merges) }
            guard case let .array(.string(mergeStrings)) = mv else {
                throw .invalidValue(key: Keys.merges, detail: "expected an array of strings, found \(typeName(mv))")
            }
            var pairs = PairMap(expectedCount: mergeStrings.count)
            var nextSymbol = Int32(n)
            var joined: [UInt8] = []
            func symbol(_ bytes: ArraySlice<UInt8>, _ table: inout ByteStringMap) -> Int32 {
                let id = bytes.withUnsafeBufferPointer { table.insert($0, value: nextSymbol, replace: false) }
                if id == nextSymbol { nextSymbol += 1 }
                return id
            }
            for (rank, merge) in mergeStrings.enumerated() {
                let b = merge.bytes
                guard b.count >= 3, let space = b[1...].firstIndex(of: 0x20) else { continue }
                let first = b[..<space], second = b[(space + 1)...]
                if second.isEmpty { continue }
                let l = symbol(first, &table)
                let r = symbol(second, &table)
                joined.removeAll(keepingCapacity: true)
                joined.append(contentsOf: first)
                joined.append(contentsOf: second)
                let m = symbol(joined[...], &table)
                pairs.insertIfAbsent(UInt64(UInt32(l)) << 32 | UInt64(UInt32(r)), UInt64(rank) << 32 | UInt64(UInt32(m)))
            }
            var byteSymbol = [Int32](repeating: -1, count: 256)
            for b in 0..<256 { byteSymbol[b] = table.find(ByteUnicode.utf8[b]) }
            bpe = BPEMerges(merges: pairs, byteSymbol: byteSymbol, ignoreMerges: ignoreMerges)
        } else {
            bpe = nil
        }
        vocab = table

        var single = [Int32](repeating: -1, count: 256)
        for b in 0..<256 { let id = table.find([UInt8(b)]); if id >= 0 && Int(id) < n { single[b] = id } }
        singleByteToken = single

        // Special token ids: defaults that fall outside the vocabulary are dropped; ids from
        // the file replace them when they are inside it.
        var eot: Int32 = -1, eom: Int32 = -1, sep: Int32 = -1, pad: Int32 = -1, mask: Int32 = -1
        var fim = [Int32](repeating: -1, count: 6)
        func resolve(_ key: String, _ id: inout Int32) {
            if id >= 0 && Int(id) >= n { id = -1 }
            if let v = md.metadata[key]?.integer, v >= 0, v < Int64(n) { id = Int32(v) }
        }
        resolve(Keys.bos, &bos); resolve(Keys.eos, &eos); resolve(Keys.eot, &eot); resolve(Keys.eom, &eom)
        resolve(Keys.unk, &unk); resolve(Keys.sep, &sep); resolve(Keys.pad, &pad); resolve(Keys.mask, &mask)
        for (i, key) in Keys.fim.enumerated() { resolve(key, &fim[i]) }
        resolve(Keys.prefix, &fim[0]); resolve(Keys.suffix, &fim[1]); resolve(Keys.middle, &fim[2])

        if let v = try md.bool(Keys.addBOS) { addBOS = v }
        if let v = try md.bool(Keys.addEOS) { addEOS = v }

        // Markers llama.cpp recognises by their text; a match not typed as control becomes control.
        func detect(_ id: inout Int32, _ names: [String]) {
            guard id < 0 else { return }
            for name in names {
                let t = lookup(name)
                if t >= 0 { id = t; attrs[Int(t)].insert(.control); return }
            }
        }
        detect(&eot, KnownTexts.eot)
        detect(&eom, KnownTexts.eom)
        for i in 0..<6 { detect(&fim[i], KnownTexts.fim[i]) }

        var eog = Set<Int32>()
        for i in 3..<6 where fim[i] >= 0 { eog.insert(fim[i]) }   // fim pad, rep, sep
        for name in KnownTexts.eog {
            let t = lookup(name)
            if t >= 0 { eog.insert(t); attrs[Int(t)].insert(.control) }
        }
        for name in KnownTexts.alwaysRendered {
            let t = lookup(name)
            if t >= 0 { attrs[Int(t)] = .userDefined }
        }
        for id in [eos, eot, eom] where id >= 0 { eog.insert(id) }

        // "<|end|>" is not an end of generation when the vocabulary has the harmony-style
        // "<|return|>"/"<|call|>" (or "<|calls|>"/"<|flush|>") markers.
        do {
            var hasReturn = false, hasCall = false, hasFlush = false
            var endID: Int32 = -1
            for id in eog {
                switch Array(text(Int(id))) {
                case Array("<|return|>".utf8): hasReturn = true
                case Array("<|call|>".utf8), Array("<|calls|>".utf8): hasCall = true
                case Array("<|flush|>".utf8): hasFlush = true
                case Array("<|end|>".utf8): endID = id
                default: break
                }
            }
            if endID >= 0 && ((hasReturn && hasCall) || (hasCall && hasFlush)) {
                eog.remove(endID)
                attrs[Int(endID)] = .userDefined
            }
        }
        // "</s>" is an ordinary token where "<|tool_response>" or "<|plamo:eos|>" end turns.
        do {
            var hasMarker = false
            var sID: Int32 = -1
            for id in eog {
                switch Array(text(Int(id))) {
                case Array("<|tool_response>".utf8), Array("<|plamo:eos|>".utf8): hasMarker = true
                case Array("</s>".utf8): sID = id
                default: break
                }
            }
            if hasMarker && sID >= 0 {
                eog.remove(sID)
                attrs[Int(sID)] = .normal
            }
        }

        // Special tokens, longest first (ties by id, for a deterministic order).
        var special: [Int32] = []
        for i in 0..<n where !attrs[i].isDisjoint(with: [.control, .userDefined, .unknown]) { special.append(Int32(i)) }
        special.sort { a, b in
            let la = starts[Int(a) + 1] - starts[Int(a)], lb = starts[Int(b) + 1] - starts[Int(b)]
            return la != lb ? la > lb : a < b
        }
        var sIndex = ByteStringMap(expectedCount: special.count)
        var lengthsByByte = [[Int32]](repeating: [], count: 256)
        for (k, id) in special.enumerated() {
            let t = Array(text(Int(id)))
            sIndex.insert(t, value: Int32(k), replace: false)
            if !lengthsByByte[Int(t[0])].contains(Int32(t.count)) { lengthsByByte[Int(t[0])].append(Int32(t.count)) }
        }
        for b in 0..<256 { lengthsByByte[b].sort(by: >) }
        specialTokens = special
        specialIndex = sIndex
        specialLengths = lengthsByByte

        // Rendered pieces (special tokens shown), from the attributes as they stand now.
        var pp: [UInt8] = []
        var ps: [Int32] = []
        pp.reserveCapacity(pool.count)
        ps.reserveCapacity(n + 1)
        for i in 0..<n {
            ps.append(Int32(pp.count))
            Tokenizer.render(kind: kind, attributes: attrs[i], text: text(i), into: &pp)
        }
        ps.append(Int32(pp.count))
        piecePool = pp
        pieceStart = ps

        // Per-model strip attributes for special-token matching.
        let generalName = (md.metadata["general.name"]?.string ?? "").lowercased()
        let architecture = md.metadata["general.architecture"]?.string ?? ""
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"].contains(where: { preName.contains($0) })
            || ["nomic-bert-moe", "jina-bert-v3"].contains(where: { architecture.contains($0) }) {
            let t = lookup("<mask>")
            if t >= 0 { attrs[Int(t)].insert(.lstrip) }
        } else if generalName.contains("phi-3") || generalName.contains("phi3") {
            for id in special { attrs[Int(id)].insert(.rstrip) }
            let s = lookup("</s>")
            if s >= 0 { attrs[Int(s)].insert(.rstrip) }
            for name in ["<unk>", "<s>", "<|endoftext|>"] {
                let t = lookup(name)
                if t >= 0 { attrs[Int(t)].remove(.rstrip) }
            }
        } else if generalName.contains("modern-bert") {
            let t = lookup("[MASK]")
            if t >= 0 { attrs[Int(t)].insert(.lstrip) }
        }
        attributes = attrs

        // SentencePiece byte fallback: "<0xXX>", else the byte itself as a token.
        var fallback = [Int32](repeating: -1, count: 256)
        if kind == .sentencePiece {
            let hex = Array("0123456789ABCDEF".utf8)
            for b in 0..<256 {
                var id = table.find([0x3C, 0x30, 0x78, hex[b >> 4], hex[b & 15], 0x3E])
                if id < 0 || Int(id) >= n { id = single[b] }
                if id < 0 { id = unk }   // llama.cpp would fail here; the unknown token is the closest
                fallback[b] = id
            }
        }
        byteFallback = fallback

        var chunkable = kind == .sentencePiece
        if chunkable {
            scan: for id in 0..<n {
                let t = text(id)
                var k = t.startIndex + 1
                while k + 2 < t.endIndex {
                    if t[k] == 0xE2 && t[k + 1] == 0x96 && t[k + 2] == 0x81 {
                        let offset = k - t.startIndex
                        if offset < 3 || !(t[k - 3] == 0xE2 && t[k - 2] == 0x96 && t[k - 1] == 0x81) {
                            chunkable = false
                            break scan
                        }
                    }
                    k += 1
                }
            }
        }
        chunksAtWordStarts = chunkable

        bosID = bos; eosID = eos; eotID = eot; eomID = eom
        unkID = unk; sepID = sep; padID = pad; maskID = mask
        fimIDs = fim
        endOfGeneration = eog
        addsBOS = addBOS
        addsEOS = addEOS
        addsSpacePrefix = addSpacePrefix
        self.cleanSpaces = cleanSpaces
    }

    /// A token's text as output (llama.cpp token_to_piece with special tokens shown).
    static func render(kind: Kind, attributes a: TokenAttributes, text: ArraySlice<UInt8>, into out: inout [UInt8]) {
        if !a.isDisjoint(with: [.unknown, .control, .userDefined]) {
            out.append(contentsOf: text)
        } else if a.contains(.normal) {
            switch kind {
            case .sentencePiece:
                // "▁" (E2 96 81) → " "
                var i = text.startIndex
                while i < text.endIndex {
                    if text[i] == 0xE2, i + 2 < text.endIndex, text[i + 1] == 0x96, text[i + 2] == 0x81 {
                        out.append(0x20); i += 3
                    } else {
                        out.append(text[i]); i += 1
                    }
                }
            case .bytePairEncoding:
                let cps = UTF8Scan.decode(Array(text))
                var decoded: [UInt8] = []
                for cp in cps {
                    if cp < 0x144, ByteUnicode.byteOf[Int(cp)] >= 0 {
                        decoded.append(UInt8(ByteUnicode.byteOf[Int(cp)]))
                    } else {
                        // llama.cpp's marker for a code point outside the byte map.
                        var utf8: [UInt8] = []
                        UTF8Scan.append(cp, to: &utf8)
                        decoded.append(contentsOf: "[UNK_BYTE_0x".utf8)
                        for b in utf8 { decoded.append(contentsOf: hex2(b)) }
                        decoded.append(contentsOf: text)
                        decoded.append(0x5D)
                    }
                }
                out.append(contentsOf: decoded)
            }
        } else if a.contains(.byte) {
            // "<0xXX>": the two characters after "<0x", read as hex up to the first non-digit.
            var value = 0
            var i = text.startIndex + 3
            while i < min(text.startIndex + 5, text.endIndex), let d = hexDigit(text[i]) { value = value * 16 + d; i += 1 }
            out.append(UInt8(truncatingIfNeeded: value))
        }
    }

    // MARK: - Encoding

    /// Token ids for `text`, as llama.cpp's `llama_tokenize`. With `parseSpecial`, control
    /// tokens written in the text (e.g. "<|im_start|>") become those tokens; user-defined
    /// tokens are always matched, as in llama.cpp.
    public func encode(_ text: String, addBOS: Bool, parseSpecial: Bool = true) -> [Int] {
        encode(utf8: Array(text.utf8), addBOS: addBOS, addEOS: false, parseSpecial: parseSpecial)
    }

    /// As `encode(_:addBOS:parseSpecial:)`, optionally appending EOS.
    public func encode(_ text: String, addBOS: Bool, addEOS: Bool, parseSpecial: Bool) -> [Int] {
        encode(utf8: Array(text.utf8), addBOS: addBOS, addEOS: addEOS, parseSpecial: parseSpecial)
    }

    /// Tokenizes raw bytes; invalid UTF-8 is handled as llama.cpp does (U+FFFD per bad byte).
    public func encode(utf8 bytes: [UInt8], addBOS: Bool, addEOS: Bool = false, parseSpecial: Bool = true) -> [Int] {
        var out: [Int32] = []
        out.reserveCapacity(bytes.count / 3 + 4)
        if addBOS && bosID >= 0 { out.append(bosID) }
        let scratch = MergeScratch()
        bytes.withUnsafeBufferPointer { buf in
            let chunk = kind == .sentencePiece && chunksAtWordStarts && validUTF8(buf)
            let fragments = partition(buf, parseSpecial: parseSpecial)
            switch kind {
            case .sentencePiece:
                var previousWasSpecial = true
                var escaped: [UInt8] = []
                for f in fragments {
                    switch f {
                    case let .token(id):
                        out.append(id)
                        previousWasSpecial = true
                    case let .text(lo, hi):
                        escaped.removeAll(keepingCapacity: true)
                        if addsSpacePrefix && previousWasSpecial { escaped.append(contentsOf: [0xE2, 0x96, 0x81]) }
                        for i in lo..<hi {
                            if buf[i] == 0x20 { escaped.append(contentsOf: [0xE2, 0x96, 0x81]) } else { escaped.append(buf[i]) }
                        }
                        escaped.withUnsafeBufferPointer { e in
                            guard chunk else { sentencePiece(e, into: &out, scratch: scratch); return }
                            // Cut before each "▁" that follows another character.
                            var start = 0
                            var k = 1
                            while k + 2 < e.count {
                                if e[k] == 0xE2 && e[k + 1] == 0x96 && e[k + 2] == 0x81
                                    && (k < 3 || !(e[k - 3] == 0xE2 && e[k - 2] == 0x96 && e[k - 1] == 0x81)) {
                                    sentencePiece(UnsafeBufferPointer(rebasing: e[start..<k]), into: &out, scratch: scratch)
                                    start = k
                                    k += 3
                                } else {
                                    k += 1
                                }
                            }
                            sentencePiece(UnsafeBufferPointer(rebasing: e[start...]), into: &out, scratch: scratch)
                        }
                        previousWasSpecial = false
                    }
                }
            case .bytePairEncoding:
                for f in fragments {
                    switch f {
                    case let .token(id):
                        out.append(id)
                    case let .text(lo, hi):
                        bytePairFragment(UnsafeBufferPointer(rebasing: buf[lo..<hi]), into: &out, scratch: scratch)
                    }
                }
            }
        }
        if addEOS && eosID >= 0 { out.append(eosID) }
        return out.map { Int($0) }
    }

    /// Pre-tokenizes one text fragment and runs BPE on each word.
    private func bytePairFragment(_ text: UnsafeBufferPointer<UInt8>, into out: inout [Int32], scratch: MergeScratch) {
        var cps = scratch.codepoints, starts = scratch.starts, classes = scratch.classes
        scratch.codepoints = []; scratch.starts = []; scratch.classes = []
        cps.removeAll(keepingCapacity: true)
        starts.removeAll(keepingCapacity: true)
        classes.removeAll(keepingCapacity: true)
        defer { scratch.codepoints = cps; scratch.starts = starts; scratch.classes = classes }
        UTF8Scan.decode(text, into: &cps, starts: &starts)
        classes.reserveCapacity(cps.count)
        for c in cps { classes.append(c < 0x80 ? asciiClasses[Int(c)] : CodepointClass.of(c)) }
        // Words are re-encoded from code points (as llama.cpp does) only when the bytes were
        // not valid UTF-8; otherwise the original bytes are the same thing.
        let valid = validUTF8(text)
        let ends = cps.withUnsafeBufferPointer { c in
            classes.withUnsafeBufferPointer { k in preTokenizer!.split(c, k) }
        }
        var word: [UInt8] = []
        var lo = 0
        for hi in ends {
            if valid {
                bytePairWord(UnsafeBufferPointer(rebasing: text[Int(starts[lo])..<Int(starts[hi])]), into: &out, scratch: scratch)
            } else {
                word.removeAll(keepingCapacity: true)
                for i in lo..<hi { UTF8Scan.append(cps[i], to: &word) }
                word.withUnsafeBufferPointer { bytePairWord($0, into: &out, scratch: scratch) }
            }
            lo = hi
        }
    }

    // MARK: - Decoding

    /// Bytes of one token as text (llama.cpp `token_to_piece`, no space stripping). Control
    /// and unknown tokens are empty unless `special`. Out-of-range ids give no bytes.
    public func pieceBytes(_ id: Int, special: Bool = false) -> [UInt8] {
        guard id >= 0 && id < count else { return [] }
        if !special && !attributes[id].isDisjoint(with: [.unknown, .control]) { return [] }
        return Array(piecePool[Int(pieceStart[id])..<Int(pieceStart[id + 1])])
    }

    /// One token as text; throws for ids outside the vocabulary.
    public func piece(for id: Int, special: Bool = false) throws(TokenizerError) -> String {
        guard id >= 0 && id < count else { throw .tokenOutOfRange(id) }
        return String(decoding: pieceBytes(id, special: special), as: UTF8.self)
    }

    /// Text of a token sequence, as llama.cpp's `llama_detokenize` (nothing removed, special
    /// tokens rendered only if `special`): the first token loses one leading space when the
    /// vocabulary uses a space prefix, and BPE vocabularies with clean-up enabled drop spaces
    /// before punctuation and contractions. Invalid UTF-8 is replaced by U+FFFD.
    public func decode(_ ids: [Int], special: Bool = false) -> String {
        String(decoding: decodeBytes(ids, special: special), as: UTF8.self)
    }

    /// As `decode`, without UTF-8 validation.
    public func decodeBytes(_ ids: [Int], special: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        var stripSpace = addsSpacePrefix
        for id in ids {
            let piece = pieceBytes(id, special: special)
            if stripSpace, piece.first == 0x20 {
                out.append(contentsOf: piece.dropFirst())
            } else {
                out.append(contentsOf: piece)
            }
            stripSpace = false
        }
        if cleanSpaces { Tokenizer.cleanUpSpaces(&out) }
        return out
    }

    /// llama.cpp's three clean-up passes over the decoded bytes, with the same in-place
    /// indexing (the second pass overwrites the space after a lone apostrophe with NUL, which
    /// the next step then sees).
    static func cleanUpSpaces(_ text: inout [UInt8]) {
        let space: UInt8 = 0x20, quote: UInt8 = 0x27
        // " ?", " !", " .", " ," → drop the space
        var n = text.count
        var total = n > 0 ? 1 : 0
        var i = 1
        while i < n {
            let x = text[i]
            if text[i - 1] == space && (x == 0x3F || x == 0x21 || x == 0x2E || x == 0x2C) { total -= 1 }
            text[total] = x; total += 1
            i += 1
        }
        // " ' " → "'"
        n = total
        total = n > 0 ? 1 : 0
        i = 1
        while i < n {
            let x = text[i]
            if x == quote && i + 1 < n && text[i - 1] == space && text[i + 1] == space {
                total -= 1
                i += 1
                text[i] = 0
            }
            text[total] = x; total += 1
            i += 1
        }
        // " 's", " 'm", " 're", " 've" → drop the space
        n = total
        total = n > 0 ? 1 : 0
        i = 1
        while i < n {
            let x = text[i]
            if text[i - 1] == space && x == quote && i + 1 < n {
                let x1 = text[i + 1]
                if x1 == 0x74 || x1 == 0x64 {
                    // " 't", " 'd": kept
                } else if x1 == 0x73 || x1 == 0x6D {
                    total -= 1
                } else if i + 2 < n {
                    let x2 = text[i + 2]
                    if (x1 == 0x72 && x2 == 0x65) || (x1 == 0x76 && x2 == 0x65) { total -= 1 }
                }
            }
            text[total] = x; total += 1
            i += 1
        }
        text.removeSubrange(total...)
    }
}
