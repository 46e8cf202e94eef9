/// GGUF metadata value types as stored on disk.
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5
    case float32 = 6, bool = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// Encoded size of one scalar; nil for string and array (variable length).
    public var fixedSize: Int? {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        case .string, .array: return nil
        }
    }

    /// Smallest possible encoding of one element, used to bound counts before allocating.
    var minimumEncodedSize: Int {
        switch self {
        case .string: return 8          // length prefix
        case .array: return 12          // element type + count
        default: return fixedSize!
        }
    }

    public var name: String {
        switch self {
        case .uint8: return "u8"
        case .int8: return "i8"
        case .uint16: return "u16"
        case .int16: return "i16"
        case .uint32: return "u32"
        case .int32: return "i32"
        case .float32: return "f32"
        case .bool: return "bool"
        case .string: return "str"
        case .array: return "arr"
        case .uint64: return "u64"
        case .int64: return "i64"
        case .float64: return "f64"
        }
    }
}

/// A GGUF string: length-prefixed bytes. Kept as raw bytes because real vocabularies
/// hold pieces that are not valid UTF-8 on their own, and round trips must be exact.
public struct GGUFString: Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]
    public init(bytes: [UInt8]) { self.bytes = bytes }
    public init(_ string: String) { self.bytes = Array(string.utf8) }
    /// The text, with invalid UTF-8 replaced by U+FFFD.
    public var string: String { String(decoding: bytes, as: UTF8.self) }
    public var description: String { string }
}

/// A homogeneous GGUF array. Arrays of arrays hold each inner array with its own type.
public enum GGUFArray: Equatable, Sendable {
    case uint8([UInt8])
    case int8([Int8])
    case uint16([UInt16])
    case int16([Int16])
    case uint32([UInt32])
    case int32([Int32])
    case float32([Float])
    case bool([Bool])
    case string([GGUFString])
    case array([GGUFArray])
    case uint64([UInt64])
    case int64([Int64])
    case float64([Double])

    public var elementType: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    public var count: Int {
        switch self {
        case let .uint8(a): return a.count
        case let .int8(a): return a.count
        case let .uint16(a): return a.count
        case let .int16(a): return a.count
        case let .uint32(a): return a.count
        case let .int32(a): return a.count
        case let .float32(a): return a.count
        case let .bool(a): return a.count
        case let .string(a): return a.count
        case let .array(a): return a.count
        case let .uint64(a): return a.count
        case let .int64(a): return a.count
        case let .float64(a): return a.count
        }
    }

    /// Integer elements widened to Int64 (nil for non-integer arrays or a u64 that does not fit).
    public var integers: [Int64]? {
        switch self {
        case let .uint8(a): return a.map { Int64($0) }
        case let .int8(a): return a.map { Int64($0) }
        case let .uint16(a): return a.map { Int64($0) }
        case let .int16(a): return a.map { Int64($0) }
        case let .uint32(a): return a.map { Int64($0) }
        case let .int32(a): return a.map { Int64($0) }
        case let .uint64(a):
            var out: [Int64] = []
            out.reserveCapacity(a.count)
            for v in a { guard let x = Int64(exactly: v) else { return nil }; out.append(x) }
            return out
        case let .int64(a): return a
        default: return nil
        }
    }

    /// Floating-point (or integer) elements as Float.
    public var floats: [Float]? {
        switch self {
        case let .float32(a): return a
        case let .float64(a): return a.map { Float($0) }
        default: return integers?.map { Float($0) }
        }
    }

    public var strings: [GGUFString]? {
        if case let .string(a) = self { return a }
        return nil
    }
}

/// One metadata value.
public enum GGUFValue: Equatable, Sendable, CustomStringConvertible {
    case uint8(UInt8)
    case int8(Int8)
    case uint16(UInt16)
    case int16(Int16)
    case uint32(UInt32)
    case int32(Int32)
    case float32(Float)
    case bool(Bool)
    case string(GGUFString)
    case array(GGUFArray)
    case uint64(UInt64)
    case int64(Int64)
    case float64(Double)

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    /// Any integer type, widened (nil if a u64 does not fit in Int64 or not an integer).
    public var integer: Int64? {
        switch self {
        case let .uint8(v): return Int64(v)
        case let .int8(v): return Int64(v)
        case let .uint16(v): return Int64(v)
        case let .int16(v): return Int64(v)
        case let .uint32(v): return Int64(v)
        case let .int32(v): return Int64(v)
        case let .uint64(v): return Int64(exactly: v)
        case let .int64(v): return v
        default: return nil
        }
    }

    /// Any numeric type as Double.
    public var number: Double? {
        switch self {
        case let .float32(v): return Double(v)
        case let .float64(v): return v
        default: return integer.map { Double($0) }
        }
    }

    public var string: String? {
        if case let .string(s) = self { return s.string }
        return nil
    }

    public var bool: Bool? {
        if case let .bool(b) = self { return b }
        return nil
    }

    public var array: GGUFArray? {
        if case let .array(a) = self { return a }
        return nil
    }

    /// A short human-readable rendering; long arrays are elided.
    public var description: String { render(limit: 8) }

    public func render(limit: Int) -> String {
        switch self {
        case let .uint8(v): return "\(v)"
        case let .int8(v): return "\(v)"
        case let .uint16(v): return "\(v)"
        case let .int16(v): return "\(v)"
        case let .uint32(v): return "\(v)"
        case let .int32(v): return "\(v)"
        case let .uint64(v): return "\(v)"
        case let .int64(v): return "\(v)"
        case let .float32(v): return "\(v)"
        case let .float64(v): return "\(v)"
        case let .bool(v): return "\(v)"
        case let .string(s): return quoted(s.string, limit: 120)
        case let .array(a): return renderArray(a, limit: limit)
        }
    }
}

private func quoted(_ s: String, limit: Int) -> String {
    var body = ""
    for ch in s.unicodeScalars {
        switch ch {
        case "\n": body += "\\n"
        case "\t": body += "\\t"
        case "\"": body += "\\\""
        case "\\": body += "\\\\"
        default:
            if ch.value < 0x20 { body += "\\u{\(String(ch.value, radix: 16))}" } else { body.unicodeScalars.append(ch) }
        }
        if body.count > limit { return "\"" + body + "\"…" }
    }
    return "\"" + body + "\""
}

private func renderArray(_ a: GGUFArray, limit: Int) -> String {
    func join<T>(_ xs: [T], _ f: (T) -> String) -> String {
        let shown = xs.prefix(limit).map(f).joined(separator: ", ")
        return xs.count > limit ? "[\(shown), … (\(xs.count) items)]" : "[\(shown)]"
    }
    switch a {
    case let .uint8(x): return join(x) { "\($0)" }
    case let .int8(x): return join(x) { "\($0)" }
    case let .uint16(x): return join(x) { "\($0)" }
    case let .int16(x): return join(x) { "\($0)" }
    case let .uint32(x): return join(x) { "\($0)" }
    case let .int32(x): return join(x) { "\($0)" }
    case let .uint64(x): return join(x) { "\($0)" }
    case let .int64(x): return join(x) { "\($0)" }
    case let .float32(x): return join(x) { "\($0)" }
    case let .float64(x): return join(x) { "\($0)" }
    case let .bool(x): return join(x) { "\($0)" }
    case let .string(x): return join(x) { quoted($0.string, limit: 40) }
    case let .array(x): return join(x) { renderArray($0, limit: limit) }
    }
}
