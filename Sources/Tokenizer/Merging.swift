/// Binary min-heap of merge candidates, ordered by `key` (priority, then left position).
struct CandidateHeap {
    struct Entry {
        var key: UInt64
        var right: Int32
        var size: Int32
    }

    private(set) var items: [Entry] = []

    var isEmpty: Bool { items.isEmpty }

    mutating func removeAll() { items.removeAll(keepingCapacity: true) }

    mutating func push(_ e: Entry) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) >> 1
            if items[parent].key <= e.key { break }
            items[i] = items[parent]
            i = parent
        }
        items[i] = e
    }

    mutating func pop() -> Entry {
        let top = items[0]
        let last = items.removeLast()
        let n = items.count
        if n > 0 {
            var i = 0
            while true {
                let l = 2 * i + 1
                if l >= n { break }
                let r = l + 1
                let c = (r < n && items[r].key < items[l].key) ? r : l
                if items[c].key >= last.key { break }
                items[i] = items[c]
                i = c
            }
            items[i] = last
        }
        return top
    }
}

/// One symbol of a word being merged: a span of the word's bytes.
struct MergeSymbol {
    var start: Int32
    var length: Int32   // 0 once merged into its left neighbour
    var prev: Int32
    var next: Int32
    var id: Int32       // BPE: symbol id of the span's text (-1 if it has none)
}

/// Reusable buffers for one `encode` call.
final class MergeScratch {
    var symbols: [MergeSymbol] = []
    var heap = CandidateHeap()
    var bytes: [UInt8] = []
    var codepoints: [UInt32] = []
    var starts: [Int32] = []
    var classes: [CodepointClass] = []
}

extension Tokenizer {
    // MARK: SentencePiece (llm_tokenizer_spm)

    /// Order key: higher score first, then the leftmost pair.
    @inline(__always)
    static func scoreKey(_ score: Float, left: Int32) -> UInt64 {
        let s = score == 0 ? Float(0) : score   // -0 ties with +0
        let bits = s.bitPattern
        let ordered = bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
        return UInt64(~ordered) << 32 | UInt64(UInt32(bitPattern: left))
    }

    /// Queues the pair (left, right) if their concatenated text is a token.
    @inline(__always)
    private func queueSentencePiecePair(_ left: Int32, _ right: Int32, _ base: UnsafePointer<UInt8>,
                                        _ syms: inout [MergeSymbol], _ heap: inout CandidateHeap) {
        if left < 0 || right < 0 { return }
        let l = syms[Int(left)], r = syms[Int(right)]
        let size = Int(l.length + r.length)
        let id = vocab.find(UnsafeBufferPointer(start: base + Int(l.start), count: size))
        if id < 0 || Int(id) >= count { return }
        heap.push(.init(key: Tokenizer.scoreKey(scores[Int(id)], left: left), right: right, size: Int32(size)))
    }

    /// Merges the highest-scoring adjacent pairs whose concatenation is a token, then emits
    /// the pieces; a piece that is not a token is spelled with byte tokens.
    func sentencePiece(_ text: UnsafeBufferPointer<UInt8>, into out: inout [Int32], scratch: MergeScratch) {
        let n = text.count
        if n == 0 { return }
        // Take the buffers out of the scratch object so they are uniquely referenced.
        var syms = scratch.symbols
        scratch.symbols = []
        syms.removeAll(keepingCapacity: true)
        var heap = scratch.heap
        scratch.heap = CandidateHeap()
        heap.removeAll()

        var offset = 0
        while offset < n {
            let len = min(UTF8Scan.sequenceLength(lead: text[offset]), n - offset)
            let index = Int32(syms.count)
            syms.append(MergeSymbol(start: Int32(offset), length: Int32(len), prev: index - 1,
                                    next: offset + len == n ? -1 : index + 1, id: -1))
            offset += len
        }

        let base = text.baseAddress!
        for i in 1..<syms.count { queueSentencePiecePair(Int32(i - 1), Int32(i), base, &syms, &heap) }

        while !heap.isEmpty {
            let top = heap.pop()
            let left = Int32(truncatingIfNeeded: top.key & 0xFFFF_FFFF)
            let right = top.right
            let l = syms[Int(left)], r = syms[Int(right)]
            if l.length == 0 || r.length == 0 || l.length + r.length != top.size { continue }
            syms[Int(left)].length += r.length
            syms[Int(right)].length = 0
            syms[Int(left)].next = r.next
            if r.next >= 0 { syms[Int(r.next)].prev = left }
            queueSentencePiecePair(l.prev, left, base, &syms, &heap)
            queueSentencePiecePair(left, r.next, base, &syms, &heap)
        }

        var i: Int32 = 0
        while i != -1 {
            let s = syms[Int(i)]
            let piece = UnsafeBufferPointer(start: base + Int(s.start), count: Int(s.length))
            let id = vocab.find(piece)
            if id >= 0 && Int(id) < count {
                out.append(id)
            } else {
                for b in piece {
                    let t = byteFallback[Int(b)]
                    if t >= 0 { out.append(t) }
                }
            }
            i = s.next
        }
        scratch.symbols = syms
        scratch.heap = heap
    }

    // MARK: Byte-level BPE (llm_tokenizer_bpe_session)

    /// Queues the pair (left, right) if the merge table has it.
    @inline(__always)
    private static func queueBytePair(_ left: Int32, _ right: Int32, _ merges: borrowing PairMap,
                                      _ syms: inout [MergeSymbol], _ heap: inout CandidateHeap) {
        if left < 0 || right < 0 { return }
        let l = syms[Int(left)], r = syms[Int(right)]
        if l.id < 0 || r.id < 0 { return }
        guard let merge = merges.find(UInt64(UInt32(l.id)) << 32 | UInt64(UInt32(r.id))) else { return }
        let rank = merge >> 32
        heap.push(.init(key: rank << 32 | UInt64(UInt32(left)), right: right, size: l.length + r.length))
    }

    /// Tokenizes one pre-tokenized word given as raw bytes.
    func bytePairWord(_ word: UnsafeBufferPointer<UInt8>, into out: inout [Int32], scratch: MergeScratch) {
        let m = word.count
        if m == 0 { return }
        let bpe = self.bpe!
        if bpe.ignoreMerges {
            var encoded = scratch.bytes
            scratch.bytes = []
            encoded.removeAll(keepingCapacity: true)
            for b in word { encoded.append(contentsOf: ByteUnicode.utf8[Int(b)]) }
            let id = encoded.withUnsafeBufferPointer { vocab.find($0) }
            scratch.bytes = encoded
            if id >= 0 && Int(id) < count { out.append(id); return }
        }
        if m == 1 {
            emitSymbol(bpe.byteSymbol[Int(word[0])], word, 0, 1, into: &out)
            return
        }

        var syms = scratch.symbols
        scratch.symbols = []
        syms.removeAll(keepingCapacity: true)
        var heap = scratch.heap
        scratch.heap = CandidateHeap()
        heap.removeAll()

        for i in 0..<m {
            syms.append(MergeSymbol(start: Int32(i), length: 1, prev: Int32(i - 1),
                                    next: i + 1 == m ? -1 : Int32(i + 1), id: bpe.byteSymbol[Int(word[i])]))
        }
        for i in 1..<m { Tokenizer.queueBytePair(Int32(i - 1), Int32(i), bpe.merges, &syms, &heap) }

        while !heap.isEmpty {
            let top = heap.pop()
            let left = Int32(truncatingIfNeeded: top.key & 0xFFFF_FFFF)
            let right = top.right
            let l = syms[Int(left)], r = syms[Int(right)]
            if l.length == 0 || r.length == 0 || l.length + r.length != top.size { continue }
            let merge = bpe.merges.find(UInt64(UInt32(l.id)) << 32 | UInt64(UInt32(r.id)))!
            syms[Int(left)].id = Int32(truncatingIfNeeded: merge & 0xFFFF_FFFF)
            syms[Int(left)].length += r.length
            syms[Int(right)].length = 0
            syms[Int(left)].next = r.next
            if r.next >= 0 { syms[Int(r.next)].prev = left }
            Tokenizer.queueBytePair(l.prev, left, bpe.merges, &syms, &heap)
            Tokenizer.queueBytePair(left, r.next, bpe.merges, &syms, &heap)
        }

        var i: Int32 = 0
        while i != -1 {
            let s = syms[Int(i)]
            emitSymbol(s.id, word, Int(s.start), Int(s.length), into: &out)
            i = s.next
        }
        scratch.symbols = syms
        scratch.heap = heap
    }

    /// A merged symbol is its token; a symbol that is no token is spelled byte by byte of
    /// its byte-level text, each byte looked up alone (llama.cpp drops bytes it cannot find).
    @inline(__always)
    private func emitSymbol(_ id: Int32, _ word: UnsafeBufferPointer<UInt8>, _ start: Int, _ length: Int, into out: inout [Int32]) {
        if id >= 0 && Int(id) < count { out.append(id); return }
        for k in start..<(start + length) {
            for b in ByteUnicode.utf8[Int(word[k])] {
                let t = singleByteToken[Int(b)]
                if t >= 0 { out.append(t) }
            }
        }
    }
}

/// GPT-2's reversible map between bytes and printable code points.
enum ByteUnicode {
    /// Code point standing for each byte.
    static let codepoint: [UInt32] = {
        var map = [UInt32](repeating: 0, count: 256)
        var taken = [Bool](repeating: false, count: 256)
        for b in 0..<256 where (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) {
            map[b] = UInt32(b)
            taken[b] = true
        }
        var extra: UInt32 = 0
        for b in 0..<256 where !taken[b] {
            map[b] = 0x100 + extra
            extra += 1
        }
        return map
    }()

    /// UTF-8 of the code point standing for each byte.
    static let utf8: [[UInt8]] = codepoint.map { cp in
        var out: [UInt8] = []
        UTF8Scan.append(cp, to: &out)
        return out
    }

    /// Byte for a code point of the map, or -1.
    static let byteOf: [Int16] = {
        var inverse = [Int16](repeating: -1, count: 0x144)
        for (b, cp) in codepoint.enumerated() { inverse[Int(cp)] = Int16(b) }
        return inverse
    }()
}

/// Merge table of a byte-level BPE vocabulary.
struct BPEMerges: Sendable {
    /// (left symbol id, right symbol id) → (rank, merged symbol id).
    var merges: PairMap
    /// Symbol id of the single-byte text for each byte, or -1.
    var byteSymbol: [Int32]
    var ignoreMerges: Bool
}
