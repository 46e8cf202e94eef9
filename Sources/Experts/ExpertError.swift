import Models

/// Why expert offloading could not be set up or continue.
public enum ExpertError: Error, Equatable, CustomStringConvertible {
    case invalidOption(String)
    /// The budget holds fewer experts than one token needs in one layer.
    /// `lowCopyBytes`: with precision fallback, a low-precision copy's slot (the minimum
    /// holds a token's worth of each).
    case budgetTooSmall(budget: Int, minimum: Int, expertBytes: Int, lowCopyBytes: Int = 0)
    /// Memory left for experts once the rest is loaded is below the minimum.
    case notEnoughMemory(available: Int, minimum: Int)

    public var description: String {
        switch self {
        case let .invalidOption(why): return why
        case let .budgetTooSmall(budget, minimum, expertBytes, lowCopyBytes):
            let k = minimum / max(expertBytes + lowCopyBytes, 1)
            let what = lowCopyBytes > 0
                ? "\(k) experts of \(formatBytes(expertBytes)) and \(k) low-precision copies of \(formatBytes(lowCopyBytes)): the experts one token uses in one layer, at each precision"
                : "\(k) experts of \(formatBytes(expertBytes)): the experts one token uses in one layer"
            return "--expert-memory \(formatBytes(budget)) is below the minimum of \(formatBytes(minimum)) (\(what))"
        case let .notEnoughMemory(available, minimum):
            return "only \(formatBytes(available)) of memory is left for experts; at least \(formatBytes(minimum)) is needed "
                + "(set --expert-memory, or free memory)"
        }
    }
}

/// "1.5 GiB", "320 MiB", "12 KiB", "100 B".
public func formatBytes<T: BinaryInteger>(_ n: T) -> String {
    let v = Double(n)
    if v >= 1_073_741_824 { return String(format: "%.2f GiB", v / 1_073_741_824) }
    if v >= 1_048_576 { return String(format: "%.1f MiB", v / 1_048_576) }
    if v >= 1024 { return String(format: "%.1f KiB", v / 1024) }
    return "\(n) B"
}

/// Parses "800M", "1.5G", "4096", "64K" (binary units).
public func parseByteCount(_ text: String) -> Int? {
    let t = text.trimmingCharacters(in: .whitespaces)
    guard let last = t.last else { return nil }
    let units: [Character: Double] = ["K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024, "T": 1024 * 1024 * 1024 * 1024]
    var number = Substring(t)
    var scale = 1.0
    if let u = units[Character(last.uppercased())] {
        scale = u
        number = t.dropLast()
        if number.last == "i" || number.last == "I" { return nil }
    } else if last == "B" || last == "b", t.count > 1, let u = units[Character(t[t.index(t.endIndex, offsetBy: -2)].uppercased())] {
        scale = u
        number = t.dropLast(2)
    }
    guard let v = Double(number), v.isFinite, v >= 0, v * scale < Double(Int.max / 2) else { return nil }
    return Int(v * scale)
}

import Foundation
