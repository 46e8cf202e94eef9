#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Jinja's (that is, Python's) semantics for attribute and item access, slicing, arithmetic,
/// comparison and iteration.
extension Renderer {
    /// The items a `for` loop, `in` or a filter sees: list items, dict keys, the characters of
    /// a string; nothing for undefined.
    func iterate(_ v: Value, _ location: TemplateLocation) throws(ChatTemplateError) -> [Value] {
        switch v {
        case .array(let a): return a
        case .dict(let d): return d.keys.map(Value.string)
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        default: throw .type("'\(v.typeName)' object is not iterable", at: location)
        }
    }

    /// `obj.name`: methods of strings and dicts, dict keys, namespace attributes. Only an
    /// undefined object is an error; a missing attribute is undefined.
    func attribute(_ v: Value, _ name: String, _ location: TemplateLocation) throws(ChatTemplateError) -> Value {
        switch v {
        case .undefined(let why):
            throw .undefined(why + " (reading its attribute '\(name)')", at: location)
        case .dict(let d):
            if let method = dictMethod(d, name) { return .function(method) }
            return d[name] ?? .undefined("'dict object' has no attribute '\(name)'")
        case .namespace(let ns):
            return ns.attributes[name] ?? .undefined("'Namespace object' has no attribute '\(name)'")
        case .string(let s):
            if let method = stringMethod(s, name) { return .function(method) }
            return .undefined("'str object' has no attribute '\(name)'")
        default:
            return .undefined("'\(v.typeName) object' has no attribute '\(name)'")
        }
    }

    /// `obj[key]`: list and string indices (negative from the end), dict keys; out of range
    /// or missing is undefined.
    func item(_ v: Value, _ key: Value, _ location: TemplateLocation) throws(ChatTemplateError) -> Value {
        switch (v, key) {
        case (.undefined(let why), _):
            throw .undefined(why + " (reading the item \(key.brief))", at: location)
        case (.array(let a), .int), (.array(let a), .bool):
            guard let i = index(key, count: a.count) else { return .undefined("list index out of range") }
            return a[i]
        case (.string(let s), .int), (.string(let s), .bool):
            let scalars = Array(s.unicodeScalars)
            guard let i = index(key, count: scalars.count) else { return .undefined("string index out of range") }
            return .string(String(scalars[i]))
        case (.dict(let d), .string(let k)):
            return d[k] ?? .undefined("'dict object' has no attribute '\(k)'")
        case (_, .string(let k)):
            return try attribute(v, k, location)
        default:
            return .undefined("'\(v.typeName) object' has no item \(key.brief)")
        }
    }

    private func index(_ key: Value, count: Int) -> Int? {
        var i: Int
        switch key {
        case .int(let n): i = n
        case .bool(let b): i = b ? 1 : 0
        default: return nil
        }
        if i < 0 { i += count }
        return i >= 0 && i < count ? i : nil
    }

    /// Python's slice semantics, negative steps included.
    func slice(_ v: Value, _ start: Int?, _ stop: Int?, _ step: Int?, _ location: TemplateLocation) throws(ChatTemplateError) -> Value {
        let step = step ?? 1
        guard step != 0 else { throw .type("slice step cannot be zero", at: location) }
        func indices(_ count: Int) -> [Int] {
            func clamp(_ i: Int?, _ defaultValue: Int) -> Int {
                guard var i else { return defaultValue }
                if i < 0 {
                    i += count
                    if i < 0 { i = step < 0 ? -1 : 0 }
                } else if i >= count {
                    i = step < 0 ? count - 1 : count
                }
                return i
            }
            let lo = clamp(start, step < 0 ? count - 1 : 0)
            let hi = clamp(stop, step < 0 ? -1 : count)
            return Array(stride(from: lo, to: hi, by: step))
        }
        switch v {
        case .undefined(let why):
            throw .undefined(why + " (slicing it)", at: location)
        case .array(let a):
            return .array(indices(a.count).map { a[$0] })
        case .string(let s):
            let scalars = Array(s.unicodeScalars)
            return .string(string(indices(scalars.count).map { scalars[$0] }))
        default:
            return .undefined("'\(v.typeName)' object cannot be sliced")
        }
    }

    func unary(_ op: UnaryOp, _ v: Value, _ location: TemplateLocation) throws(ChatTemplateError) -> Value {
        switch (op, v) {
        case (.not, _): return .bool(!v.truthy)
        case (_, .undefined(let why)): throw .undefined(why + " (in arithmetic)", at: location)
        case (.negate, _):
            switch number(v) {
            case .int(let n):
                guard n != Int.min else { throw .type("integer overflow", at: location) }
                return .int(-n)
            case .double(let d): return .double(-d)
            case nil: break
            }
        case (.plus, _):
            switch number(v) {
            case .int(let n): return .int(n)
            case .double(let d): return .double(d)
            case nil: break
            }
        }
        throw .type("bad operand type for unary \(op == .negate ? "-" : "+"): '\(v.typeName)'", at: location)
    }

    // MARK: arithmetic

    private enum Number {
        case int(Int)
        case double(Double)
        var double: Double {
            switch self {
            case .int(let i): Double(i)
            case .double(let d): d
            }
        }
    }

    private func number(_ v: Value) -> Number? {
        switch v {
        case .int(let i): .int(i)
        case .bool(let b): .int(b ? 1 : 0)
        case .double(let d): .double(d)
        default: nil
        }
    }

    func checkedString(_ s: String, _ location: TemplateLocation) throws(ChatTemplateError) -> Value {
        guard s.utf8.count <= options.maxOutputBytes else {
            throw .limitExceeded("a string longer than \(options.maxOutputBytes) bytes at \(location)")
        }
        return .string(s)
    }

    func binary(_ op: BinaryOp, _ a: Value, _ b: Value, _ location: TemplateLocation) throws(ChatTemplateError) -> Value {
        if op == .concat { return try checkedString(try str(a, location) + str(b, location), location) }
        if case .undefined(let why) = a { throw .undefined(why + " (operand of '\(op.rawValue)')", at: location) }
        if case .undefined(let why) = b { throw .undefined(why + " (operand of '\(op.rawValue)')", at: location) }
        let unsupported = ChatTemplateError.type(
            "unsupported operand types for \(op.rawValue): '\(a.typeName)' and '\(b.typeName)'", at: location)
        let overflow = ChatTemplateError.type("integer overflow in '\(op.rawValue)'", at: location)
        if let x = number(a), let y = number(b) {
            return try arithmetic(op, x, y, location, overflow)
        }
        switch (op, a, b) {
        case (.add, .string(let x), .string(let y)):
            return try checkedString(x + y, location)
        case (.add, .array(let x), .array(let y)):
            return .array(x + y)
        case (.multiply, .string(let s), _), (.multiply, _, .string(let s)):
            guard let n = repeatCount(a, b) else { throw unsupported }
            guard n <= 0 || s.utf8.count <= options.maxOutputBytes / n else {
                throw .limitExceeded("a string longer than \(options.maxOutputBytes) bytes at \(location)")
            }
            return .string(n <= 0 ? "" : String(repeating: s, count: n))
        case (.multiply, .array(let items), _), (.multiply, _, .array(let items)):
            guard let n = repeatCount(a, b) else { throw unsupported }
            guard n <= 0 || items.isEmpty || items.count <= options.maxLoopIterations / n else {
                throw .limitExceeded("a list longer than \(options.maxLoopIterations) items at \(location)")
            }
            return .array(n <= 0 ? [] : Array([[Value]](repeating: items, count: n).joined()))
        case (.modulo, .string, _):
            throw .type("string formatting with '%' is not supported", at: location)
        default:
            throw unsupported
        }
    }

    private func repeatCount(_ a: Value, _ b: Value) -> Int? {
        switch (a, b) {
        case (.int(let n), _), (_, .int(let n)): n
        case (.bool(let t), _), (_, .bool(let t)): t ? 1 : 0
        default: nil
        }
    }

    private func arithmetic(_ op: BinaryOp, _ x: Number, _ y: Number, _ location: TemplateLocation, _ overflow: ChatTemplateError)
        throws(ChatTemplateError) -> Value
    {
        let zero = ChatTemplateError.type("division by zero", at: location)
        if case .int(let i) = x, case .int(let j) = y {
            switch op {
            case .add:
                let (r, o) = i.addingReportingOverflow(j)
                if o { throw overflow }
                return .int(r)
            case .subtract:
                let (r, o) = i.subtractingReportingOverflow(j)
                if o { throw overflow }
                return .int(r)
            case .multiply:
                let (r, o) = i.multipliedReportingOverflow(by: j)
                if o { throw overflow }
                return .int(r)
            case .divide:
                if j == 0 { throw zero }
                return .double(Double(i) / Double(j))
            case .floorDivide:
                if j == 0 { throw zero }
                if i == Int.min && j == -1 { throw overflow }
                let q = i / j
                return .int((i % j != 0) && ((i < 0) != (j < 0)) ? q - 1 : q)
            case .modulo:
                if j == 0 { throw zero }
                if j == -1 { return .int(0) }
                let r = i % j
                return .int(r != 0 && ((r < 0) != (j < 0)) ? r + j : r)
            case .power:
                if j < 0 { return .double(pow(Double(i), Double(j))) }
                var result = 1
                var base = i
                var e = j
                while e > 0 {
                    if e & 1 == 1 {
                        let (r, o) = result.multipliedReportingOverflow(by: base)
                        if o { throw overflow }
                        result = r
                    }
                    e >>= 1
                    if e > 0 {
                        let (b2, o) = base.multipliedReportingOverflow(by: base)
                        if o { throw overflow }
                        base = b2
                    }
                }
                return .int(result)
            case .concat:
                return .string(String(i) + String(j))
            }
        }
        let a = x.double
        let b = y.double
        switch op {
        case .add: return .double(a + b)
        case .subtract: return .double(a - b)
        case .multiply: return .double(a * b)
        case .divide:
            if b == 0 { throw zero }
            return .double(a / b)
        case .floorDivide:
            if b == 0 { throw zero }
            return .double((a / b).rounded(.down))
        case .modulo:
            if b == 0 { throw zero }
            var r = fmod(a, b)
            if r != 0 && ((r < 0) != (b < 0)) { r += b }
            return .double(r)
        case .power:
            if a == 0 && b < 0 { throw zero }
            return .double(pow(a, b))
        case .concat:
            return .string(pythonFloat(a) + pythonFloat(b))
        }
    }

    // MARK: comparison

    func compare(_ op: CompareOp, _ a: Value, _ b: Value, _ location: TemplateLocation) throws(ChatTemplateError) -> Bool {
        switch op {
        case .equal: return equal(a, b)
        case .notEqual: return !equal(a, b)
        case .less: return try less(a, b, location)
        case .greater: return try less(b, a, location)
        case .lessEqual: return try !less(b, a, location)
        case .greaterEqual: return try !less(a, b, location)
        case .contains: return try contains(b, a, location)
        case .notContains: return try !contains(b, a, location)
        }
    }

    /// Python's `==`: numbers across int, float and bool; strings by code points; lists and
    /// dicts by content.
    func equal(_ a: Value, _ b: Value) -> Bool {
        if let x = number(a), let y = number(b) {
            if case .int(let i) = x, case .int(let j) = y { return i == j }
            return x.double == y.double
        }
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let x), .string(let y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (.dict(let x), .dict(let y)):
            return x.count == y.count && x.pairs.allSatisfy { pair in y[pair.key].map { equal(pair.value, $0) } ?? false }
        case (.namespace(let x), .namespace(let y)): return x === y
        default: return false
        }
    }

    func less(_ a: Value, _ b: Value, _ location: TemplateLocation) throws(ChatTemplateError) -> Bool {
        if let x = number(a), let y = number(b) {
            if case .int(let i) = x, case .int(let j) = y { return i < j }
            return x.double < y.double
        }
        switch (a, b) {
        case (.string(let x), .string(let y)):
            return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars)
        case (.array(let x), .array(let y)):
            for (p, q) in zip(x, y) where !equal(p, q) { return try less(p, q, location) }
            return x.count < y.count
        case (.undefined(let why), _), (_, .undefined(let why)):
            throw .undefined(why + " (in a comparison)", at: location)
        default:
            throw .type("'<' is not supported between '\(a.typeName)' and '\(b.typeName)'", at: location)
        }
    }

    /// `item in container`.
    func contains(_ container: Value, _ item: Value, _ location: TemplateLocation) throws(ChatTemplateError) -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let needle) = item else {
                throw .type("'in <string>' requires a string on the left, not '\(item.typeName)'", at: location)
            }
            return find(Array(s.unicodeScalars), Array(needle.unicodeScalars)) != nil
        case .array(let a): return a.contains { equal($0, item) }
        case .dict(let d):
            if case .string(let k) = item { return d[k] != nil }
            return false
        case .undefined: return false
        default: throw .type("argument of type '\(container.typeName)' is not iterable", at: location)
        }
    }
}

/// First index of `needle` in `haystack` at or after `from` (code points, as Python).
func find(_ haystack: [Unicode.Scalar], _ needle: [Unicode.Scalar], from: Int = 0, to end: Int? = nil) -> Int? {
    let end = min(end ?? haystack.count, haystack.count)
    guard from >= 0, needle.count <= end - from else { return nil }
    if needle.isEmpty { return from }
    var i = from
    while i + needle.count <= end {
        if haystack[i] == needle[0] && haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
        i += 1
    }
    return nil
}
