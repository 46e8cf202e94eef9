import CMoeLinux
#if canImport(Glibc)
import Glibc
#endif

/// Page-aligned memory that this object owns and frees: the destination for O_DIRECT
/// reads (which need 4096-aligned addresses) and the backing store of pools.
///
/// `@unchecked Sendable`: the object's own state is immutable after init; the bytes
/// behind `bytes` are shared raw memory exactly like an `UnsafeMutableRawBufferPointer`,
/// so callers that write from several threads synchronize that themselves.
public final class AlignedBuffer: @unchecked Sendable {
    /// Where the memory came from.
    public enum Placement: Equatable, Sendable {
        /// posix_memalign on the default (first-touch) policy.
        case standard
        /// libnuma's numa_alloc_onnode: pages bound to this node.
        case numaNode(Int)
    }

    /// Smallest alignment handed out: O_DIRECT and io_uring fixed buffers want whole pages.
    public static let minimumAlignment = 4096
    /// Buffers at least this large are 2 MiB aligned and advised for transparent huge pages,
    /// which cuts TLB misses when the expert pool is streamed through.
    public static let hugePageThreshold = 4 << 20
    static let hugePageSize = 2 << 20

    /// The usable bytes (exactly the `byteCount` asked for).
    public let bytes: UnsafeMutableRawBufferPointer
    /// Bytes actually allocated (rounded up to the alignment); all of them are usable
    /// by O_DIRECT reads that round a length up to a block.
    public let allocatedCount: Int
    public let alignment: Int
    public let placement: Placement
    /// Whether madvise(MADV_HUGEPAGE) was accepted for this buffer.
    public let hugePagesAdvised: Bool

    public var baseAddress: UnsafeMutableRawPointer { base }
    public var count: Int { bytes.count }

    private let base: UnsafeMutableRawPointer

    /// - Parameters:
    ///   - byteCount: usable size; 0 is allowed (one page is still allocated so the
    ///     base address is valid and aligned).
    ///   - alignment: a power of two; raised to at least 4096.
    ///   - numaNode: bind the pages to this NUMA node via libnuma. When the machine has
    ///     no NUMA support the buffer falls back to `.standard` placement (check `placement`).
    ///   - adviseHugePages: ask for transparent huge pages on buffers ≥ `hugePageThreshold`.
    public init(byteCount: Int, alignment: Int = AlignedBuffer.minimumAlignment,
                numaNode: Int? = nil, adviseHugePages: Bool = true) throws(StorageError) {
        guard byteCount >= 0 else { throw StorageError.invalidRequest("negative buffer size \(byteCount)") }
        guard alignment > 0, alignment & (alignment - 1) == 0 else {
            throw StorageError.invalidRequest("alignment \(alignment) is not a power of two")
        }
        var align = max(alignment, Self.minimumAlignment)
        let wantsHuge = adviseHugePages && byteCount >= Self.hugePageThreshold
        if wantsHuge && numaNode == nil { align = max(align, Self.hugePageSize) }
        let (rounded, overflow) = max(byteCount, 1).addingReportingOverflow(align - 1)
        guard !overflow else { throw StorageError.allocationFailed(bytes: byteCount) }
        let capacity = rounded & ~(align - 1)

        var pointer: UnsafeMutableRawPointer?
        var where_: Placement = .standard
        if let node = numaNode {
            guard node >= 0 else { throw StorageError.invalidRequest("NUMA node \(node) is negative") }
            if moe_numa_available() >= 0 {
                guard node <= Int(moe_numa_max_node()) else {
                    throw StorageError.invalidRequest("NUMA node \(node) does not exist (max \(moe_numa_max_node()))")
                }
                // numa_alloc_onnode mmaps, so the result is page aligned; larger alignments
                // cannot be promised on that path.
                guard align <= Int(sysconf(Int32(_SC_PAGESIZE))) else {
                    throw StorageError.invalidRequest("alignment \(align) exceeds the page size on a NUMA allocation")
                }
                guard let p = moe_numa_alloc_onnode(capacity, Int32(node)) else {
                    throw StorageError.allocationFailed(bytes: capacity)
                }
                pointer = p
                where_ = .numaNode(node)
            }
        }
        if pointer == nil {
            var p: UnsafeMutableRawPointer?
            guard posix_memalign(&p, align, capacity) == 0, let p else {
                throw StorageError.allocationFailed(bytes: capacity)
            }
            pointer = p
        }
        // Both branches above either set pointer or threw.
        guard let pointer else { throw StorageError.allocationFailed(bytes: capacity) }

        var advised = false
        if wantsHuge {
            // Advisory: THP may be disabled system-wide; the buffer works either way.
            advised = moe_madvise_hugepage(pointer, capacity) == 0
        }
        self.base = pointer
        self.bytes = UnsafeMutableRawBufferPointer(start: pointer, count: byteCount)
        self.allocatedCount = capacity
        self.alignment = align
        self.placement = where_
        self.hugePagesAdvised = advised
    }

    deinit {
        switch placement {
        case .standard: free(base)
        case .numaNode: moe_numa_free(base, allocatedCount)
        }
    }

    /// Touches every page (writing, so each is really backed) so that later reads and
    /// compute do not take page faults, and so NUMA-bound pages land on their node now.
    /// The contents of the buffer are unspecified afterwards, as before.
    public func prefault() {
        // One madvise is far cheaper than a fault per page; older kernels refuse it.
        if moe_madvise_populate_write(base, allocatedCount) == 0 { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let step = page > 0 ? page : 4096
        var offset = 0
        while offset < allocatedCount {
            // A volatile-like store: the compiler cannot drop writes through a raw pointer
            // it does not see read back before the memory escapes.
            (base + offset).storeBytes(of: 0, as: UInt8.self)
            offset += step
        }
    }

    /// Sets all allocated bytes to zero.
    public func zero() {
        memset(base, 0, allocatedCount)
    }

    /// The NUMA node that holds the page at `offset` (after it has been touched), or nil
    /// when the kernel cannot say (no NUMA support, page not present).
    public func numaNode(ofByteAt offset: Int = 0) -> Int? {
        guard offset >= 0, offset < allocatedCount else { return nil }
        let node = moe_numa_node_of_address(base + offset)
        return node >= 0 ? Int(node) : nil
    }
}
