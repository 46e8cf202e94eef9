import CSystem
import Storage

/// A fixed number of equal slots, each holding one expert, in one block of memory that is
/// placed on the NUMA node of the compute threads, faulted in up front (so loading an
/// expert never takes page faults), advised for huge pages, and registered with io_uring
/// so reads land in it with READ_FIXED.
public final class ExpertPool {
    public let slotBytes: Int
    public let slotCount: Int
    public let memory: AlignedBuffer
    /// The node that was asked for (nil: no NUMA placement requested or available).
    public let requestedNode: Int?

    /// - Parameters:
    ///   - slotBytes: rounded up to whole pages, so every slot starts page aligned (O_DIRECT).
    public init(slotBytes: Int, slotCount: Int, numaNode: Int?) throws(StorageError) {
        let page = AlignedBuffer.minimumAlignment
        self.slotBytes = (slotBytes + page - 1) / page * page
        self.slotCount = slotCount
        let (total, overflow) = self.slotBytes.multipliedReportingOverflow(by: slotCount)
        guard !overflow else { throw .allocationFailed(bytes: Int.max) }
        memory = try AlignedBuffer(byteCount: total, numaNode: numaNode, adviseHugePages: true)
        memory.prefault()
        requestedNode = numaNode
    }

    public var totalBytes: Int { slotBytes * slotCount }

    public func slot(_ index: Int) -> UnsafeMutableRawPointer {
        memory.baseAddress + index * slotBytes
    }

    /// The node that actually holds the pool's pages (first, middle and last page agree on a
    /// correctly placed pool), or nil when the kernel cannot say.
    public var residentNode: Int? {
        let nodes = [0, memory.count / 2, max(memory.count - 1, 0)].compactMap { memory.numaNode(ofByteAt: $0) }
        guard let first = nodes.first, nodes.allSatisfy({ $0 == first }) else { return nil }
        return first
    }
}

/// Which CPUs compute and which NUMA node is theirs.
public enum ComputePlacement {
    /// Restricts this process's threads (those created afterwards, so call it before the
    /// thread pool exists) to `cpus`.
    public static func restrict(to cpus: [Int]) throws(ExpertError) {
        guard !cpus.isEmpty else { throw .invalidOption("--cpus lists no CPU") }
        let rc = cpus.map(Int32.init).withUnsafeBufferPointer { moe_set_cpu_affinity($0.baseAddress, Int32($0.count)) }
        guard rc == 0 else {
            throw .invalidOption("cannot run on CPUs \(cpus.map(String.init).joined(separator: ",")): \(String(cString: strerror(-rc)))")
        }
    }

    /// The CPUs this thread may run on.
    public static var allowedCPUs: [Int] {
        var cpus = [Int32](repeating: 0, count: 4096)
        let n = cpus.withUnsafeMutableBufferPointer { moe_get_cpu_affinity($0.baseAddress, Int32($0.count)) }
        return n > 0 ? cpus.prefix(Int(min(n, 4096))).map(Int.init) : []
    }

    /// The NUMA node of the first allowed CPU: where the compute threads run, so where the
    /// pool should live. nil when libnuma reports no NUMA support.
    public static var computeNode: Int? {
        guard moe_numa_available() >= 0, let cpu = allowedCPUs.first else { return nil }
        let node = moe_numa_node_of_cpu(Int32(cpu))
        return node >= 0 ? Int(node) : nil
    }

    /// Parses "0-3,6,8-9".
    public static func parseCPUList(_ text: String) throws(ExpertError) -> [Int] {
        var out: [Int] = []
        for part in text.split(separator: ",") {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard bounds.count <= 2, let lo = Int(bounds[0].trimmingCharacters(in: .whitespaces)), lo >= 0,
                  let hi = bounds.count == 2 ? Int(bounds[1].trimmingCharacters(in: .whitespaces)) : lo, hi >= lo, hi < 4096 else {
                throw .invalidOption("cannot read CPU list '\(text)' (expected e.g. 0-3,6)")
            }
            out += Array(lo...hi)
        }
        guard !out.isEmpty else { throw .invalidOption("cannot read CPU list '\(text)' (expected e.g. 0-3,6)") }
        return Array(Set(out)).sorted()
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Foundation
