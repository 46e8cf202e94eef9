import GGUF
import Models
import Storage
import Trace

/// Why expert offloading could not be set up or continue.
public enum ExpertError: Error, Equatable, Sendable, CustomStringConvertible, ModelComponentError {
    case invalidOption(String)
    /// The budget holds fewer experts than one token needs in one layer.
    /// `lowCopyBytes`: with precision fallback, a low-precision copy's slot (the minimum
    /// holds a token's worth of each).
    case budgetTooSmall(budget: Int, minimum: Int, expertBytes: Int, lowCopyBytes: Int = 0)
    /// Memory left for experts once the rest is loaded is below the minimum.
    case notEnoughMemory(available: Int, minimum: Int)
    /// `--fallback-type` names no type, or one the quantizer or the kernels do not support
    /// (`supported`: the names that work).
    case unsupportedFallbackType(String, supported: [String])
    /// The copies' type cannot hold `matrix`: its rows of `rowLength` values are not a whole
    /// number of the type's blocks (K-quants: 256 values).
    case fallbackTypeCannotHoldRows(type: GGMLType, matrix: String, rowLength: Int)
    /// Every expert matrix already has the copies' type: a copy would repeat the weights.
    case fallbackTypeIsNative(GGMLType, path: String)
    /// The model's expert matrices have a type that cannot be expanded to make a copy from.
    case fallbackSourceUnsupported(GGMLType, matrix: String)
    /// The file has no routed experts to offload.
    case noRoutedExperts(path: String)
    /// A pack's metadata or bundles are not what the packer writes.
    case invalidPack(path: String, problem: String)
    /// The pool's memory could not be allocated or placed.
    case poolSetup(StorageError)
    /// Every slot is held by reads in flight for other layers.
    case noFreeSlot(layer: Int, slots: Int)
    /// The model file was truncated or rewritten after it was loaded.
    case fileChangedWhileRunning(path: String, bytesWhenLoaded: UInt64, bytesNow: UInt64)
    /// The routing records seeding `--prefetch path` could not be read.
    case pathRecords(RoutingRecordError)
    /// The routing records seeding `--prefetch path` are of another model.
    case pathRecordsOfAnotherModel(path: String, experts: Int, layers: [Int], expectedExperts: Int, expectedLayers: [Int])

    public var description: String {
        switch self {
        case let .invalidOption(why): return why
        case let .budgetTooSmall(budget, minimum, expertBytes, lowCopyBytes):
            let k = minimum / max(expertBytes + lowCopyBytes, 1)
            let what = lowCopyBytes > 0
                ? "\(k) experts of \(formatBytes(expertBytes)) and \(k) low-precision copies of \(formatBytes(lowCopyBytes)): the experts one token uses in one layer, at each precision"
                : "\(k) experts of \(formatBytes(expertBytes)): the experts one token uses in one layer"
            // Exact bytes where rounding would show the two as equal ("1.0 MiB is below 1.0 MiB").
            var given = formatBytes(budget), needed = formatBytes(minimum)
            if given == needed {
                given += " (\(budget) bytes)"
                needed += " (\(minimum) bytes)"
            }
            return "--expert-memory \(given) is below the minimum of \(needed) (\(what))"
        case let .notEnoughMemory(available, minimum):
            return "only \(formatBytes(available)) of memory is left for experts; at least \(formatBytes(minimum)) is needed "
                + "(set --expert-memory, or free memory)"
        case let .unsupportedFallbackType(name, supported):
            return "--fallback-type \(name) is not a type precision fallback can make copies in (supported: "
                + supported.joined(separator: ", ") + ")"
        case let .fallbackTypeCannotHoldRows(type, matrix, rowLength):
            return "--fallback-type \(type.name) cannot hold \(matrix): its rows of \(rowLength) values are not a whole number of "
                + "\(type.name) blocks of \(type.blockSize) (choose a type with smaller blocks, e.g. q4_0)"
        case let .fallbackTypeIsNative(type, path):
            return "--fallback-type \(type.name) is already the type of every expert matrix in \(path): a copy would repeat "
                + "the weights (choose a smaller type, e.g. q2_K)"
        case let .fallbackSourceUnsupported(type, matrix):
            return "cannot make low-precision copies of \(matrix): its type \(type.name) cannot be expanded; "
                + "make a pack with them instead (moe pack --low-precision)"
        case let .noRoutedExperts(path):
            return "\(path) has no routed experts"
        case let .invalidPack(path, problem):
            return "\(path): \(problem)"
        case let .poolSetup(e):
            return "cannot set up the expert pool: \(e.description)"
        case let .noFreeSlot(layer, slots):
            return "the expert pool has no free slot for layer \(layer) (all \(slots) in use)"
        case let .fileChangedWhileRunning(path, before, now):
            if now < before {
                return "\(path) was truncated while running (\(before) bytes when loaded, \(now) now): load the model again"
            }
            return "\(path) changed while running (rewritten after the model loaded): load the model again"
        case let .pathRecords(e):
            return e.description
        case let .pathRecordsOfAnotherModel(path, experts, layers, expectedExperts, expectedLayers):
            return "\(path) records another model's routing (\(experts) experts in MoE layers \(layers), "
                + "not \(expectedExperts) in \(expectedLayers))"
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
