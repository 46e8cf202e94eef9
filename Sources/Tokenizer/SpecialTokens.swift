extension Tokenizer {
    enum Fragment {
        case text(Int, Int)   // byte range of the input
        case token(Int32)
    }

    /// Splits the input around special tokens written in it, as llama.cpp's
    /// `tokenizer_st_partition`: tokens are tried longest first; each claims, left to right,
    /// its occurrences that lie wholly inside text not yet claimed. Control and unknown tokens
    /// take part only with `parseSpecial`. LSTRIP/RSTRIP tokens swallow adjacent ASCII space.
    func partition(_ text: UnsafeBufferPointer<UInt8>, parseSpecial: Bool) -> [Fragment] {
        let n = text.count
        if n == 0 { return [] }
        guard !specialTokens.isEmpty else { return [.text(0, n)] }

        // All occurrences of every eligible special token, by matching order.
        var occurrences: [Int32: [Int]] = [:]
        let base = text.baseAddress!
        for i in 0..<n {
            let lengths = specialLengths[Int(text[i])]
            if lengths.isEmpty { continue }
            for len in lengths where i + Int(len) <= n {
                let k = specialIndex.find(UnsafeBufferPointer(start: base + i, count: Int(len)))
                if k < 0 { continue }
                let a = attributes[Int(specialTokens[Int(k)])]
                if !parseSpecial && !a.isDisjoint(with: [.control, .unknown]) { continue }
                occurrences[k, default: []].append(i)
            }
        }
        if occurrences.isEmpty { return [.text(0, n)] }

        var fragments: [Fragment] = [.text(0, n)]
        for k in occurrences.keys.sorted() {
            let positions = occurrences[k]!
            let id = specialTokens[Int(k)]
            let a = attributes[Int(id)]
            let len = Int(textStart[Int(id) + 1] - textStart[Int(id)])
            var next: [Fragment] = []
            next.reserveCapacity(fragments.count + 2 * positions.count)
            var cursor = 0
            for f in fragments {
                guard case let .text(lo, hi) = f else { next.append(f); continue }
                var from = lo
                while true {
                    while cursor < positions.count && positions[cursor] < from { cursor += 1 }
                    guard cursor < positions.count, positions[cursor] + len <= hi else {
                        if from < hi { next.append(.text(from, hi)) }
                        break
                    }
                    let match = positions[cursor]
                    if match > from {
                        var leftEnd = match
                        if a.contains(.lstrip) { while leftEnd > from && isCSpace(text[leftEnd - 1]) { leftEnd -= 1 } }
                        if leftEnd > from { next.append(.text(from, leftEnd)) }
                    }
                    next.append(.token(id))
                    var rightStart = match + len
                    if rightStart >= hi { break }
                    if a.contains(.rstrip) { while rightStart < hi && isCSpace(text[rightStart]) { rightStart += 1 } }
                    if rightStart >= hi { break }
                    from = rightStart
                }
            }
            fragments = next
        }
        return fragments
    }
}

