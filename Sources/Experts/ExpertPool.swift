import Storage

/// A fixed number of slots, each holding one expert, in one block of memory that is
/// placed on the NUMA node of the compute threads, faulted in up front (so loading an
/// expert never takes page faults), advised for huge pages, and registered with io_uring
/// so reads land in it with READ_FIXED.
///
/// Slots come in classes of equal size: class 0 holds experts at the file's own precision;
/// with precision fallback, class 1 holds the smaller low-precision copies, so a copy takes
/// only the memory it needs. Slots are numbered across classes, class 0 first.
public final class ExpertPool {
    /// Bytes of one slot of each class (whole pages).
    public let classBytes: [Int]
    /// Slots of each class.
    public let classCounts: [Int]
    public let memory: AlignedBuffer
    /// The node that was asked for (nil: no NUMA placement requested or available).
    public let requestedNode: Int?
    private let classFirstSlot: [Int]
    private let classOffset: [Int]

    /// One class of `slotCount` slots of `slotBytes` (rounded up to whole pages, so every
    /// slot starts page aligned, as O_DIRECT needs).
    public convenience init(slotBytes: Int, slotCount: Int, numaNode: Int?) throws(StorageError) {
        try self.init(classes: [(slotBytes, slotCount)], numaNode: numaNode)
    }

    public init(classes: [(bytes: Int, count: Int)], numaNode: Int?) throws(StorageError) {
        let page = AlignedBuffer.minimumAlignment
        classBytes = classes.map { ($0.bytes + page - 1) / page * page }
        classCounts = classes.map(\.count)
        var first: [Int] = [], offsets: [Int] = []
        var slots = 0, total = 0
        for (bytes, count) in zip(classBytes, classCounts) {
            first.append(slots)
            offsets.append(total)
            let (size, overflow) = bytes.multipliedReportingOverflow(by: count)
            guard !overflow, total <= Int.max - size else { throw .allocationFailed(bytes: Int.max) }
            slots += count
            total += size
        }
        classFirstSlot = first
        classOffset = offsets
        memory = try AlignedBuffer(byteCount: max(total, page), numaNode: numaNode, adviseHugePages: true)
        memory.prefault()
        requestedNode = numaNode
    }

    /// Bytes of a slot of class 0 (the file's own precision).
    public var slotBytes: Int { classBytes[0] }
    public var slotCount: Int { classCounts.reduce(0, +) }
    public var totalBytes: Int { zip(classBytes, classCounts).reduce(0) { $0 + $1.0 * $1.1 } }

    /// The slot numbers of class `c`.
    public func slots(ofClass c: Int) -> Range<Int> { classFirstSlot[c]..<(classFirstSlot[c] + classCounts[c]) }

    public func slotClass(_ index: Int) -> Int {
        var c = classFirstSlot.count - 1
        while classFirstSlot[c] > index { c -= 1 }
        return c
    }

    public func slot(_ index: Int) -> UnsafeMutableRawPointer {
        let c = slotClass(index)
        return memory.baseAddress + classOffset[c] + (index - classFirstSlot[c]) * classBytes[c]
    }

    /// The node that actually holds the pool's pages (first, middle and last page agree on a
    /// correctly placed pool), or nil when the kernel cannot say.
    public var residentNode: Int? {
        let nodes = [0, memory.count / 2, max(memory.count - 1, 0)].compactMap { memory.numaNode(ofByteAt: $0) }
        guard let first = nodes.first, nodes.allSatisfy({ $0 == first }) else { return nil }
        return first
    }
}
