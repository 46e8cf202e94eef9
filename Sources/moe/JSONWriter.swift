import GGUF

/// Minimal streaming JSON emitter (keeps key order, escapes strings per RFC 8259).
final class JSONWriter {
    var output = ""
    private var needsComma: [Bool] = []

    private func separate() {
        if let last = needsComma.last {
            if last { output += "," }
            needsComma[needsComma.count - 1] = true
        }
    }

    func object(_ body: () -> Void) {
        separate(); output += "{"; needsComma.append(false); body(); needsComma.removeLast(); output += "}"
    }

    func array<S: Sequence>(_ items: S, _ each: (S.Element) -> Void) {
        separate(); output += "["; needsComma.append(false)
        for x in items { each(x) }
        needsComma.removeLast(); output += "]"
    }

    func field(_ key: String, _ body: () -> Void) {
        separate()
        output += jsonEscape(key) + ":"
        needsComma.append(false) // the value follows the colon without a comma
        body()
        needsComma.removeLast()
    }

    func string(_ s: String) { separate(); output += jsonEscape(s) }
    func number(_ n: UInt64) { separate(); output += String(n) }
    func number(_ n: Int64) { separate(); output += String(n) }
    func double(_ d: Double) { separate(); output += d.isFinite ? "\(d)" : "null" }
    func bool(_ b: Bool) { separate(); output += b ? "true" : "false" }
    func null() { separate(); output += "null" }

    func value(_ v: GGUFValue) {
        switch v {
        case let .string(s): string(s.string)
        case let .bool(b): bool(b)
        case let .float32(f): double(Double(f))
        case let .float64(d): double(d)
        case let .array(a): arrayValue(a)
        case let .uint64(u): number(u)
        default: number(v.integer ?? 0)
        }
    }

    /// Long arrays (vocabularies) are summarized rather than dumped.
    func arrayValue(_ a: GGUFArray) {
        if a.count > 64 {
            object {
                field("type") { string(a.elementType.name) }
                field("count") { number(UInt64(a.count)) }
            }
            return
        }
        switch a {
        case let .string(x): array(x) { string($0.string) }
        case let .bool(x): array(x) { bool($0) }
        case let .float32(x): array(x) { double(Double($0)) }
        case let .float64(x): array(x) { double($0) }
        case let .uint64(x): array(x) { number($0) }
        case let .array(x): array(x) { arrayValue($0) }
        default: array(a.integers ?? []) { number($0) }
        }
    }
}

func jsonEscape(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}
