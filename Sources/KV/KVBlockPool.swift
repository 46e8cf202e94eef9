/// A pool of fixed-size KV blocks bounded by bytes, shared by the sequences made from it,
/// with reference counts, copy-on-write (done by `KVSequence`) and automatic prefix caching.
///
/// ## Block tables, not contiguous virtual memory
///
/// vLLM keeps a table of block numbers per sequence and attention follows it; vAttention
/// keeps each sequence's KV contiguous in virtual memory and maps physical pages on demand.
/// On this CPU runtime block tables win:
/// - the indirection costs one table load per block of 16 positions: attention walks a
///   block's rows at a fixed stride, so its inner loop is the same as over contiguous
///   memory (the reference logits are bit-identical to the contiguous cache's). Measured
///   once (4096 positions, 8 KV heads of 128, scattered blocks, one query head's scores):
///   paged F16 42-69 ns per position and head, contiguous F16 58-62, the old contiguous F32
///   80-90 (a shared 2-core VM, so noisy): the table costs nothing measurable, halving the
///   bytes read helps;
/// - sharing a prefix between sequences and copy-on-write are a reference count and a
///   memcpy of one block, where vAttention would need a memfd, one `mmap` per shared page
///   per sequence and TLB shootdowns on every remap;
/// - the unit of sharing is a block of tokens across all layers, which is what prefix
///   caching keys on; a 4 KiB page holds a varying number of positions of one layer (two
///   for a 1 KiB-per-position layer), and quantized rows (34-byte Q8_0 groups) do not
///   align with pages at all;
/// - no kernel help is needed (no `MAP_FIXED` games, no overcommit), which matters on the
///   small devices this runtime targets.
///
/// ## Prefix caching
///
/// A full block is keyed by a 64-bit FNV-1a hash of its tokens chained with its parent's
/// key (`chainKey`); the key, the parent key and the tokens are kept with the block and
/// checked on lookup, so a hash collision can never hand out wrong keys and values.
/// When its last reference goes, a cached block is not freed but becomes evictable; the
/// least recently released is evicted first when the pool needs a block. A referenced
/// block is never evicted. Sequences release their blocks last to first, so a chain's tail
/// goes before its head.
///
/// Not thread-safe: one thread allocates, forks and truncates (the engine's loop); the
/// attention threads only read block contents between those calls.
public final class KVBlockPool: @unchecked Sendable {
    public let layout: KVLayout
    /// What the keys and values were computed by (the model object), when the maker says:
    /// a pool serves one model, since its prefix cache keys on tokens alone.
    public let owner: ObjectIdentifier?
    /// Number of blocks.
    public let capacity: Int
    /// Bytes of block storage (`capacity * layout.blockBytes`).
    public var bytes: Int { capacity * layout.blockBytes }

    let storage: UnsafeMutableRawPointer
    private var refCounts: [Int32]
    private var freeList: [Int32]
    /// What a cached block holds, nil when the block is not in the prefix cache.
    private var cached: [CachedBlock?]
    private var cacheIndex: [UInt64: Int32] = [:]
    /// Unreferenced cached blocks, least recently released first (a doubly linked list).
    private var lruPrevious: [Int32]
    private var lruNext: [Int32]
    private var lruHead: Int32 = -1
    private var lruTail: Int32 = -1
    public private(set) var evictableBlocks = 0
    /// Blocks evicted from the prefix cache so far.
    public private(set) var evictions = 0
    /// Blocks handed to sequences from the prefix cache so far.
    public private(set) var prefixHits = 0

    struct CachedBlock {
        var key: UInt64
        var parent: UInt64
        var tokens: [Int]
    }

    /// The chain key of the first block's parent.
    public static let rootKey: UInt64 = 0xcbf2_9ce4_8422_2325

    /// A pool of as many blocks as `memoryBytes` holds.
    public convenience init(layout: KVLayout, memoryBytes: Int, owner: ObjectIdentifier? = nil) throws(KVError) {
        guard memoryBytes >= layout.blockBytes else {
            throw .memoryTooSmall(bytes: memoryBytes, blockBytes: layout.blockBytes)
        }
        self.init(layout: layout, blocks: memoryBytes / layout.blockBytes, owner: owner)
    }

    /// A pool of `blocks` blocks.
    public init(layout: KVLayout, blocks: Int, owner: ObjectIdentifier? = nil) {
        precondition(blocks > 0)
        self.layout = layout
        self.owner = owner
        capacity = blocks
        // Large allocations are mmap'd by malloc: untouched blocks take no memory. Page
        // alignment lets a session's blocks be read straight into the pool with O_DIRECT.
        storage = .allocate(byteCount: blocks * layout.blockBytes, alignment: 4096)
        refCounts = Array(repeating: 0, count: blocks)
        freeList = (0..<Int32(blocks)).reversed()
        cached = Array(repeating: nil, count: blocks)
        lruPrevious = Array(repeating: -1, count: blocks)
        lruNext = Array(repeating: -1, count: blocks)
    }

    deinit { storage.deallocate() }

    /// A new, empty sequence of at most `capacity` positions drawing on this pool.
    public func makeSequence(capacity: Int) -> KVSequence { KVSequence(pool: self, capacity: capacity) }

    // MARK: Figures

    /// Blocks on the free list.
    public var freeBlocks: Int { freeList.count }
    /// Blocks a sequence could get now: free plus evictable.
    public var availableBlocks: Int { freeList.count + evictableBlocks }
    /// Blocks some sequence references.
    public var referencedBlocks: Int { capacity - freeList.count - evictableBlocks }
    /// Blocks in the prefix cache, referenced or not.
    public var cachedBlocks: Int { cacheIndex.count }

    public func referenceCount(_ block: Int) -> Int { Int(refCounts[block]) }
    public func isCached(_ block: Int) -> Bool { cached[block] != nil }

    /// Unreferenced cached blocks in eviction order (first goes first).
    public var evictionOrder: [Int] {
        var order: [Int] = []
        var b = lruHead
        while b >= 0 { order.append(Int(b)); b = lruNext[Int(b)] }
        return order
    }

    /// The start of a block's bytes.
    @inline(__always)
    public func base(of block: Int) -> UnsafeMutableRawPointer { storage + block &* layout.blockBytes }

    // MARK: Allocation

    /// Throws unless `count` blocks can be allocated now.
    public func ensureAvailable(_ count: Int) throws(KVError) {
        guard count <= availableBlocks else {
            throw .memoryExhausted(neededBlocks: count, availableBlocks: availableBlocks, totalBlocks: capacity,
                                   blockBytes: layout.blockBytes, blockPositions: layout.blockSize)
        }
    }

    /// A block with one reference: a free one, else the least recently released cached one.
    func allocate() throws(KVError) -> Int32 {
        if let b = freeList.popLast() {
            refCounts[Int(b)] = 1
            return b
        }
        guard lruHead >= 0 else {
            throw .memoryExhausted(neededBlocks: 1, availableBlocks: 0, totalBlocks: capacity,
                                   blockBytes: layout.blockBytes, blockPositions: layout.blockSize)
        }
        let b = lruHead
        unlink(b)
        uncache(b)
        evictions += 1
        refCounts[Int(b)] = 1
        return b
    }

    func retain(_ b: Int32) {
        if refCounts[Int(b)] == 0 { unlink(b) }
        refCounts[Int(b)] += 1
    }

    func release(_ b: Int32) {
        let i = Int(b)
        precondition(refCounts[i] > 0, "block \(b) released more often than retained")
        refCounts[i] -= 1
        guard refCounts[i] == 0 else { return }
        if cached[i] != nil {
            append(b)
        } else {
            freeList.append(b)
        }
    }

    /// Copies a block's bytes (copy-on-write).
    func copy(_ source: Int32, to destination: Int32) {
        base(of: Int(destination)).copyMemory(from: base(of: Int(source)), byteCount: layout.blockBytes)
    }

    // MARK: Prefix cache

    /// FNV-1a over the parent's key and the block's tokens: the key of a full block.
    public static func chainKey(parent: UInt64, tokens: ArraySlice<Int>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        @inline(__always) func mix(_ v: UInt64) {
            var v = v
            for _ in 0..<8 {
                h = (h ^ (v & 0xFF)) &* 0x0000_0100_0000_01B3
                v >>= 8
            }
        }
        mix(parent)
        for t in tokens { mix(UInt64(bitPattern: Int64(t))) }
        return h
    }

    /// Enters a full block in the prefix cache under `key`, unless the key is taken (another
    /// sequence computed the same tokens) or the block is already cached.
    func register(_ b: Int32, key: UInt64, parent: UInt64, tokens: ArraySlice<Int>) {
        guard cached[Int(b)] == nil, cacheIndex[key] == nil else { return }
        cached[Int(b)] = CachedBlock(key: key, parent: parent, tokens: Array(tokens))
        cacheIndex[key] = b
    }

    /// The cached block holding `tokens` after the block keyed `parent`, if any.
    func lookup(key: UInt64, parent: UInt64, tokens: ArraySlice<Int>) -> Int32? {
        guard let b = cacheIndex[key], let entry = cached[Int(b)],
              entry.parent == parent, entry.tokens.elementsEqual(tokens) else { return nil }
        prefixHits += 1
        return b
    }

    private func uncache(_ b: Int32) {
        if let entry = cached[Int(b)] {
            cacheIndex[entry.key] = nil
            cached[Int(b)] = nil
        }
    }

    // MARK: LRU list of unreferenced cached blocks

    private func append(_ b: Int32) {
        lruPrevious[Int(b)] = lruTail
        lruNext[Int(b)] = -1
        if lruTail >= 0 { lruNext[Int(lruTail)] = b } else { lruHead = b }
        lruTail = b
        evictableBlocks += 1
    }

    private func unlink(_ b: Int32) {
        let p = lruPrevious[Int(b)], n = lruNext[Int(b)]
        if p >= 0 { lruNext[Int(p)] = n } else { lruHead = n }
        if n >= 0 { lruPrevious[Int(n)] = p } else { lruTail = p }
        lruPrevious[Int(b)] = -1
        lruNext[Int(b)] = -1
        evictableBlocks -= 1
    }
}
