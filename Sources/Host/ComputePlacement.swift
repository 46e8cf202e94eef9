import CMoeLinux
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Which CPUs compute, how many the process may use, and which NUMA node is theirs.
public enum ComputePlacement {
    /// Restricts this process's threads (those created afterwards, so call it before the
    /// thread pool exists) to `cpus`.
    public static func restrict(to cpus: [Int]) throws(HostError) {
        guard !cpus.isEmpty else { throw .noCPUs }
        let rc = cpus.map(Int32.init).withUnsafeBufferPointer { moe_set_cpu_affinity($0.baseAddress, Int32($0.count)) }
        guard rc == 0 else { throw .affinityRefused(cpus: cpus, reason: String(cString: strerror(-rc))) }
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

    /// The number of CPUs this process may run on: its affinity mask, further limited by a
    /// cgroup v2 CPU quota (`cpu.max`) when one is set; at least 1.
    public static var usableCPUCount: Int {
        var count = 0
        #if os(Linux)
        // The affinity mask as the kernel reports it for the process (sched_getaffinity needs
        // _GNU_SOURCE, which Swift's Glibc module does not define): "Cpus_allowed:\tff,ffffffff".
        if let status = readSmallFile("/proc/self/status") {
            for line in status.split(separator: "\n") where line.hasPrefix("Cpus_allowed:") {
                count = line.dropFirst("Cpus_allowed:".count).reduce(0) { sum, ch in
                    sum + (ch.hexDigitValue ?? 0).nonzeroBitCount
                }
            }
        }
        if let quota = cgroupCPUQuota(), quota > 0 {
            count = count > 0 ? min(count, quota) : quota
        }
        #endif
        if count <= 0 {
            count = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        }
        return max(1, count)
    }

    /// Reads cgroup v2 `cpu.max` ("quota period" or "max period") for this process's cgroup,
    /// rounded up to whole CPUs.
    static func cgroupCPUQuota() -> Int? {
        #if os(Linux)
        var path = "/sys/fs/cgroup/cpu.max"
        if let text = readSmallFile("/proc/self/cgroup") {
            // v2 line: "0::/some/path"
            for line in text.split(separator: "\n") where line.hasPrefix("0::") {
                let rel = line.dropFirst(3)
                if rel != "/" && !rel.isEmpty {
                    let candidate = "/sys/fs/cgroup" + rel + "/cpu.max"
                    if access(candidate, R_OK) == 0 { path = candidate }
                }
            }
        }
        guard let text = readSmallFile(path) else { return nil }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count >= 2, parts[0] != "max", let quota = Double(parts[0]), let period = Double(parts[1]),
              quota > 0, period > 0 else { return nil }
        return max(1, Int((quota / period).rounded(.up)))
        #else
        return nil
        #endif
    }

    private static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 16384)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, 16384) }
        guard n > 0 else { return nil }
        return String(decoding: bytes[0..<n], as: UTF8.self)
    }

    /// Parses "0-3,6,8-9".
    public static func parseCPUList(_ text: String) throws(HostError) -> [Int] {
        var out: [Int] = []
        for part in text.split(separator: ",") {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard bounds.count <= 2, let lo = Int(bounds[0].trimmingCharacters(in: .whitespaces)), lo >= 0,
                  let hi = bounds.count == 2 ? Int(bounds[1].trimmingCharacters(in: .whitespaces)) : lo, hi >= lo, hi < 4096 else {
                throw .unreadableCPUList(text)
            }
            out += Array(lo...hi)
        }
        guard !out.isEmpty else { throw .unreadableCPUList(text) }
        return Array(Set(out)).sorted()
    }
}
