import Foundation

/// Memory this process may still use: the smaller of the system's MemAvailable and the
/// room left under the cgroup's memory.max (which counts page cache too).
public enum AvailableMemory {
    public static func bytes() -> Int {
        var best = Int.max
        if let meminfo = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) {
            for line in meminfo.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
                let parts = line.split(separator: " ")
                if parts.count >= 2, let kb = Int(parts[1]) { best = min(best, kb * 1024) }
            }
        }
        if let (limit, current) = cgroupMemory() { best = min(best, max(limit - current, 0)) }
        return best == Int.max ? 0 : best
    }

    /// The tightest memory limit over this process's cgroup and its ancestors, and the usage
    /// charged against it (cgroup v2's memory.max/memory.current, or v1's
    /// memory.limit_in_bytes/memory.usage_in_bytes); nil when no limit is set.
    /// `root` and `membership` stand for /sys/fs/cgroup and /proc/self/cgroup (tests pass a
    /// made-up tree).
    static func cgroupMemory(root: String = "/sys/fs/cgroup", membership: String? = nil) -> (Int, Int)? {
        guard let cgroup = membership ?? (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) else { return nil }
        var best: (limit: Int, usage: Int)?
        func consider(_ limit: Int?, _ usage: Int?) {
            // v1 reports "no limit" as a number near Int64.max.
            guard let limit, let usage, limit < 1 << 60 else { return }
            if best == nil || limit - usage < best!.limit - best!.usage { best = (limit, usage) }
        }
        for line in cgroup.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if fields[0] == "0" && fields[1].isEmpty {
                // v2: the group and every ancestor may set memory.max.
                var dir = root + (fields[2] == "/" ? "" : fields[2])
                while true {
                    consider(readNumber(dir + "/memory.max"), readNumber(dir + "/memory.current"))
                    guard dir != root, let slash = dir.lastIndex(of: "/") else { break }
                    dir = String(dir[..<slash])
                }
            } else if fields[1].split(separator: ",").contains("memory") {
                let dir = root + "/memory" + (fields[2] == "/" ? "" : fields[2])
                let usage = readNumber(dir + "/memory.usage_in_bytes")
                consider(readNumber(dir + "/memory.limit_in_bytes"), usage)
                // The limit of the nearest limited ancestor.
                if let stat = try? String(contentsOfFile: dir + "/memory.stat", encoding: .utf8) {
                    for l in stat.split(separator: "\n") where l.hasPrefix("hierarchical_memory_limit ") {
                        consider(Int(l.split(separator: " ")[1]), usage)
                    }
                }
            }
        }
        return best.map { ($0.limit, $0.usage) }
    }

    private static func readNumber(_ path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
