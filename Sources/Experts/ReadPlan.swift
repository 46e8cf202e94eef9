/// How one expert's slices are read into a slot: slices adjacent in the file (a pack's
/// bundle) form one read; each read covers whole pages, so it goes straight into the slot
/// with O_DIRECT, and the slice starts inside it at its offset within the first page.
struct ReadPlan {
    struct Read {
        var offset: UInt64
        var length: Int
        var slotOffset: Int
    }
    /// Largest single request (a multiple of the page size).
    static let pieceBytes = 512 << 10
    var reads: [Read] = []
    var sliceOffsets: [Int] = []
    var span = 0

    init(_ slices: [ExpertSlice], fileSize: UInt64) {
        let page = UInt64(PackFormat.alignment)
        var i = 0
        while i < slices.count {
            var j = i + 1
            var end = slices[i].fileOffset + UInt64(slices[i].byteCount)
            while j < slices.count && slices[j].fileOffset == end {
                end += UInt64(slices[j].byteCount)
                j += 1
            }
            let start = slices[i].fileOffset & ~(page - 1)
            let alignedEnd = (end + page - 1) & ~(page - 1)
            // Pieces of at most `pieceBytes`, all in flight together: the device serves a few
            // parallel requests faster than one long one (on this machine's virtual disk one
            // 1.6 MiB read took ~1.5x as long as three 544 KiB ones).
            let length = Int(min(alignedEnd, max(fileSize, end)) - start)
            var done = 0
            while done < length {
                let n = min(Self.pieceBytes, length - done)
                reads.append(Read(offset: start + UInt64(done), length: n, slotOffset: span + done))
                done += n
            }
            for k in i..<j { sliceOffsets.append(span + Int(slices[k].fileOffset - start)) }
            span += Int(alignedEnd - start)
            i = j
        }
    }
}
