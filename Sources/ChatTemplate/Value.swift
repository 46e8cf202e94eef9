/// Values while rendering: the data of `TemplateValue` plus Jinja's undefined value,
/// `namespace()` objects, functions (builtins, bound methods) and macros.
enum Value {
    /// Carries the reason, for errors when it is used: "'x' is undefined".
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([Value])
    case dict(OrderedMap<Value>)
    case namespace(Namespace)
    case function(Function)
    case macro(MacroValue)

    init(_ literal: Literal) {
        switch literal {
        case .none: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(i)
        case .double(let d): self = .double(d)
        case .string(let s): self = .string(s)
        }
    }

    var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    /// Python's truth value.
    var truthy: Bool {
        switch self {
        case .undefined, .none: false
        case .bool(let b): b
        case .int(let i): i != 0
        case .double(let d): d != 0
        case .string(let s): !s.isEmpty
        case .array(let a): !a.isEmpty
        case .dict(let d): d.count > 0
        case .namespace, .function, .macro: true
        }
    }

    /// Python's type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: "undefined"
        case .none: "NoneType"
        case .bool: "bool"
        case .int: "int"
        case .double: "float"
        case .string: "str"
        case .array: "list"
        case .dict: "dict"
        case .namespace: "Namespace"
        case .function: "builtin_function_or_method"
        case .macro: "Macro"
        }
    }

    /// Python's `str()` (undefined is empty, as Jinja renders it), or nil when longer than
    /// `limit` UTF-8 bytes.
    func text(limit: Int) -> String? {
        switch self {
        case .undefined: return ""
        case .string(let s): return s.utf8.count <= limit ? s : nil
        case .array, .dict:
            var out = ""
            return writeRepr(into: &out, limit: limit) ? out : nil
        default:
            return scalarText
        }
    }

    /// Python's `repr()`, as lists and dicts print their items, or nil when longer than
    /// `limit` UTF-8 bytes.
    func repr(limit: Int) -> String? {
        var out = ""
        return writeRepr(into: &out, limit: limit) ? out : nil
    }

    /// A short rendering for error messages.
    var brief: String { repr(limit: 200) ?? "<\(typeName) value>" }

    private var scalarText: String {
        switch self {
        case .none: "None"
        case .bool(let b): b ? "True" : "False"
        case .int(let i): String(i)
        case .double(let d): pythonFloat(d)
        case .string(let s): s
        // Not the attributes: namespaces may hold themselves.
        case .namespace: "<Namespace>"
        case .function(let f): "<built-in method \(f.name)>"
        case .macro(let m): "<Macro '\(m.macro.name)'>"
        case .undefined, .array, .dict: ""
        }
    }

    private func writeRepr(into out: inout String, limit: Int) -> Bool {
        switch self {
        case .string(let s): out += pythonRepr(s)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += ", " }
                guard item.writeRepr(into: &out, limit: limit) else { return false }
            }
            out += "]"
        case .dict(let map):
            out += "{"
            for (i, pair) in map.pairs.enumerated() {
                if i > 0 { out += ", " }
                out += pythonRepr(pair.key) + ": "
                guard pair.value.writeRepr(into: &out, limit: limit) else { return false }
            }
            out += "}"
        default:
            out += scalarText
        }
        return out.utf8.count <= limit
    }

    /// Whether this value nests containers deeper than `depth` levels or holds more than
    /// `budget` values in all (shared parts count each time they appear). Templates can
    /// build values in loops, so this is checked where containers are made or stored: it
    /// keeps printing, comparing and freeing values from recursing without bound.
    func exceeds(depth: Int, budget: inout Int) -> Bool {
        budget -= 1
        if budget < 0 { return true }
        switch self {
        case .array(let items):
            guard depth > 0 else { return true }
            return items.contains { $0.exceeds(depth: depth - 1, budget: &budget) }
        case .dict(let map):
            guard depth > 0 else { return true }
            return map.values.contains { $0.exceeds(depth: depth - 1, budget: &budget) }
        case .namespace(let ns):
            guard depth > 0 else { return true }
            return ns.attributes.values.contains { $0.exceeds(depth: depth - 1, budget: &budget) }
        case .function(let f):
            guard let receiver = f.receiver else { return false }
            guard depth > 0 else { return true }
            return receiver.exceeds(depth: depth - 1, budget: &budget)
        default:
            return false
        }
    }

    /// Converts caller data, refusing nesting deeper than `depth`.
    static func converting(_ v: TemplateValue, depth: Int) -> Value? {
        switch v {
        case .array(let a):
            guard depth > 0 else { return nil }
            var items: [Value] = []
            items.reserveCapacity(a.count)
            for x in a {
                guard let item = converting(x, depth: depth - 1) else { return nil }
                items.append(item)
            }
            return .array(items)
        case .dictionary(let d):
            guard depth > 0 else { return nil }
            var map = OrderedMap<Value>()
            for (k, x) in d {
                guard let item = converting(x, depth: depth - 1) else { return nil }
                map[k] = item
            }
            return .dict(map)
        case .none: return Value.none
        case .bool(let b): return .bool(b)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        case .string(let s): return .string(s)
        }
    }
}

/// A `namespace()`: the one mutable object templates can change from inside a loop.
final class Namespace {
    var attributes = OrderedMap<Value>()
}

struct CallArguments {
    var positional: [Value] = []
    var keyword: [(String, Value)] = []
    var location: TemplateLocation
}

// Functions and macros are boxed to keep `Value` small: rendering recurses through
// expressions, and every level's stack frame holds a few values.
final class Function {
    let name: String
    /// The string or dict a bound method belongs to.
    let receiver: Value?
    let body: (CallArguments) throws(ChatTemplateError) -> Value

    init(name: String, receiver: Value? = nil, body: @escaping (CallArguments) throws(ChatTemplateError) -> Value) {
        self.name = name
        self.receiver = receiver
        self.body = body
    }
}

/// A macro and the number of scopes visible where it was defined.
final class MacroValue {
    let macro: Macro
    let scopes: Int

    init(_ macro: Macro, scopes: Int) {
        self.macro = macro
        self.scopes = scopes
    }
}

// MARK: - Python number and string formatting

/// `repr(float)`: the shortest round-trip digits, fixed notation for exponents -4...15,
/// scientific ("1e+16", "1e-05") outside.
func pythonFloat(_ d: Double) -> String {
    if d.isNaN { return "nan" }
    if d.isInfinite { return d < 0 ? "-inf" : "inf" }
    if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
    // Swift's description has the same shortest digits; re-place the decimal point.
    let described = "\(abs(d))"
    var digits = ""
    var pointAt: Int? = nil
    var exponent = 0
    var mantissaPart = Substring(described)
    if let e = described.firstIndex(where: { $0 == "e" || $0 == "E" }) {
        exponent = Int(described[described.index(after: e)...])!
        mantissaPart = described[..<e]
    }
    for ch in mantissaPart {
        if ch == "." { pointAt = digits.count } else { digits.append(ch) }
    }
    var decimalPoint = (pointAt ?? digits.count) + exponent
    // Strip leading zeros (moving the point) and trailing zeros.
    while digits.first == "0" && digits.count > 1 {
        digits.removeFirst()
        decimalPoint -= 1
    }
    while digits.last == "0" && digits.count > 1 { digits.removeLast() }
    let sign = d < 0 ? "-" : ""
    if decimalPoint > 16 || decimalPoint <= -4 {
        var mantissa = String(digits.first!)
        if digits.count > 1 { mantissa += "." + digits.dropFirst() }
        let e = decimalPoint - 1
        let magnitude = String(abs(e))
        return sign + mantissa + "e" + (e < 0 ? "-" : "+") + (magnitude.count < 2 ? "0" : "") + magnitude
    }
    if decimalPoint <= 0 {
        return sign + "0." + String(repeating: "0", count: -decimalPoint) + digits
    }
    if decimalPoint >= digits.count {
        return sign + digits + String(repeating: "0", count: decimalPoint - digits.count) + ".0"
    }
    let i = digits.index(digits.startIndex, offsetBy: decimalPoint)
    return sign + digits[..<i] + "." + digits[i...]
}

/// `repr(str)`: single quotes unless the text has ' and no ", escapes for \\, the quote,
/// \n \r \t and other control characters.
func pythonRepr(_ s: String) -> String {
    let quote: Unicode.Scalar = s.unicodeScalars.contains("'") && !s.unicodeScalars.contains("\"") ? "\"" : "'"
    var out = String(quote)
    for c in s.unicodeScalars {
        switch c {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case quote: out += "\\" + String(quote)
        default:
            if c.value < 0x20 || c.value == 0x7F {
                out += "\\x" + hex(c.value, width: 2)
            } else if (0x80...0xA0).contains(c.value) || c.value == 0xAD {
                out += "\\x" + hex(c.value, width: 2)
            } else if c.properties.generalCategory == .lineSeparator || c.properties.generalCategory == .paragraphSeparator {
                out += "\\u" + hex(c.value, width: 4)
            } else {
                out.unicodeScalars.append(c)
            }
        }
    }
    out.unicodeScalars.append(quote)
    return out
}

func hex(_ v: UInt32, width: Int) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, width - s.count)) + s
}
