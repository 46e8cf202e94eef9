import Foundation

/// Memory figures of this process from /proc/self/status.
public enum ProcessMemory {
    /// VmHWM: the peak resident set size, in bytes (0 where /proc is unavailable).
    public static func peakResidentBytes() -> Int { field("VmHWM:") }
    /// VmRSS: the current resident set size, in bytes.
    public static func residentBytes() -> Int { field("VmRSS:") }

    private static func field(_ name: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return 0
    }
}
