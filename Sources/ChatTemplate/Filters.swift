#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Jinja's built-in filters and tests, with transformers' `tojson` (keys in insertion order,
/// no ASCII escaping).
extension Renderer {
    func filter(_ name: String, _ v: Value, _ args: CallArguments) throws(ChatTemplateError) -> Value {
        let location = args.location
        switch name {
        case "abs":
            _ = try bind(args, name, [])
            switch v {
            case .int(let i):
                guard i != Int.min else { throw .type("integer overflow", at: location) }
                return .int(abs(i))
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return .double(abs(d))
            default: throw .type("bad operand type for abs(): '\(v.typeName)'", at: location)
            }
        case "attr":
            let p = try bind(args, name, ["name"], required: 1)
            return try attribute(v, try str(p[0]!, location), location)
        case "capitalize":
            _ = try bind(args, name, [])
            return .string(PythonString.capitalize(try str(v, location)))
        case "center":
            let p = try bind(args, name, ["width"])
            let width = try p.int(0, "width", default: 80)
            guard width <= options.maxOutputBytes else { throw .limitExceeded("center: width \(width) is too large") }
            return .string(PythonString.center(try str(v, location), width))
        case "count", "length":
            _ = try bind(args, name, [])
            return .int(try length(v, location))
        case "d", "default":
            let p = try bind(args, name, ["default_value", "boolean"])
            if v.isUndefined || (p.bool(1) && !v.truthy) { return p[0] ?? .string("") }
            return v
        case "dictsort":
            let p = try bind(args, name, ["case_sensitive", "by", "reverse"])
            guard case .dict(let d) = v else { throw .type("dictsort expects a mapping, not '\(v.typeName)'", at: location) }
            let byValue: Bool
            switch try p.string(1, "by") ?? "key" {
            case "key": byValue = false
            case "value": byValue = true
            default: throw .type("dictsort: 'by' must be 'key' or 'value'", at: location)
            }
            let pairs = d.pairs.map { Value.array([.string($0.key), $0.value]) }
            let caseSensitive = p.bool(0)
            return .array(try sorted(pairs, reverse: p.bool(2), location) { (pair: Value) throws(ChatTemplateError) -> Value in
                guard case .array(let kv) = pair else { return pair }
                return Self.sortKey(kv[byValue ? 1 : 0], caseSensitive: caseSensitive)
            })
        case "e", "escape":
            _ = try bind(args, name, [])
            return .string(htmlEscape(try str(v, location)))
        case "first":
            _ = try bind(args, name, [])
            return try iterate(v, location).first ?? .undefined("no first item: the sequence is empty")
        case "last":
            _ = try bind(args, name, [])
            return try iterate(v, location).last ?? .undefined("no last item: the sequence is empty")
        case "float":
            let p = try bind(args, name, ["default"])
            let fallback = p[0] ?? .double(0)
            switch v {
            case .int(let i): return .double(Double(i))
            case .bool(let b): return .double(b ? 1 : 0)
            case .double: return v
            case .string(let s): return PythonString.parseDouble(s).map(Value.double) ?? fallback
            default: return fallback
            }
        case "indent":
            let p = try bind(args, name, ["width", "first", "blank"])
            let indentation: String
            if case .string(let s)? = p[0] { indentation = s } else {
                let width = try p.int(0, "width", default: 4)
                guard width <= options.maxOutputBytes else { throw .limitExceeded("indent: width \(width) is too large") }
                indentation = String(repeating: " ", count: max(0, width))
            }
            let text = try str(v, location)
            let lines = PythonString.splitLines(text).count + 1
            guard text.utf8.count + lines * indentation.utf8.count <= options.maxOutputBytes else {
                throw .limitExceeded("a string longer than \(options.maxOutputBytes) bytes at \(location)")
            }
            return .string(indent(text, indentation, first: p.bool(1), blank: p.bool(2)))
        case "int":
            let p = try bind(args, name, ["default", "base"])
            let fallback = p[0] ?? .int(0)
            switch v {
            case .int: return v
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return Self.truncate(d).map(Value.int) ?? fallback
            case .string(let s):
                if let i = PythonString.parseInt(s, base: try p.int(1, "base", default: 10)) { return .int(i) }
                return PythonString.parseDouble(s).flatMap(Self.truncate).map(Value.int) ?? fallback
            default: return fallback
            }
        case "items":
            _ = try bind(args, name, [])
            switch v {
            case .dict(let d): return .array(d.pairs.map { .array([.string($0.key), $0.value]) })
            case .undefined: return .array([])
            default: throw .type("items expects a mapping, not '\(v.typeName)'", at: location)
            }
        case "join":
            let p = try bind(args, name, ["d", "attribute"])
            var items = try iterate(v, location)
            try countIteration(items.count)
            if let path = p[1] { items = try items.map(attributeGetter(path, location)) }
            var parts: [String] = []
            for item in items { parts.append(try str(item, location)) }
            let separator = try p[0].map { (d: Value) throws(ChatTemplateError) in try str(d, location) } ?? ""
            return try joined(parts, separator: separator, location)
        case "list":
            _ = try bind(args, name, [])
            return .array(try iterate(v, location))
        case "lower":
            _ = try bind(args, name, [])
            return .string(try str(v, location).lowercased())
        case "upper":
            _ = try bind(args, name, [])
            return .string(try str(v, location).uppercased())
        case "map":
            return try map(v, args)
        case "max", "min":
            let p = try bind(args, name, ["case_sensitive", "attribute"])
            let items = try iterate(v, location)
            let getter = try p[1].map { (path: Value) throws(ChatTemplateError) in try attributeGetter(path, location) }
            var best: (item: Value, key: Value)? = nil
            for item in items {
                let key = Self.sortKey(try getter?(item) ?? item, caseSensitive: p.bool(0))
                if let current = best {
                    let better = name == "min" ? try less(key, current.key, location) : try less(current.key, key, location)
                    if better { best = (item, key) }
                } else {
                    best = (item, key)
                }
            }
            return best?.item ?? .undefined("no \(name) item: the sequence is empty")
        case "reject", "select":
            let p = try bind(args, name, [], variadic: true)
            return .array(try selectItems(try iterate(v, location), attribute: nil, testArguments: p.extra,
                                          keep: name == "select", location))
        case "rejectattr", "selectattr":
            let p = try bind(args, name, ["attribute"], required: 1, variadic: true)
            return .array(try selectItems(try iterate(v, location), attribute: p[0]!, testArguments: p.extra,
                                          keep: name == "selectattr", location))
        case "replace":
            let p = try bind(args, name, ["old", "new", "count"], required: 2)
            guard let replaced = PythonString.replace(try str(v, location), try str(p[0]!, location), try str(p[1]!, location),
                                                      try p.int(2, "count", default: -1), limit: options.maxOutputBytes)
            else { throw .limitExceeded("a string longer than \(options.maxOutputBytes) bytes at \(location)") }
            return .string(replaced)
        case "reverse":
            _ = try bind(args, name, [])
            if case .string(let s) = v { return .string(string(s.unicodeScalars.reversed())) }
            return .array(try iterate(v, location).reversed())
        case "round":
            let p = try bind(args, name, ["precision", "method"])
            return try round(v, try p.int(0, "precision", default: 0), try p.string(1, "method") ?? "common", location)
        case "safe":
            _ = try bind(args, name, [])
            return v
        case "sort":
            let p = try bind(args, name, ["reverse", "case_sensitive", "attribute"])
            let getter = try p[2].map { (path: Value) throws(ChatTemplateError) in try attributeGetter(path, location) }
            let caseSensitive = p.bool(1)
            return .array(try sorted(try iterate(v, location), reverse: p.bool(0), location) {
                (item: Value) throws(ChatTemplateError) -> Value in
                Self.sortKey(try getter?(item) ?? item, caseSensitive: caseSensitive)
            })
        case "string":
            _ = try bind(args, name, [])
            return .string(try str(v, location))
        case "sum":
            let p = try bind(args, name, ["attribute", "start"])
            let getter = try p[0].map { (path: Value) throws(ChatTemplateError) in try attributeGetter(path, location) }
            let items = try iterate(v, location)
            try countIteration(items.count)
            switch p[1] ?? .int(0) {
            case .string:
                throw .type("sum() can't sum strings (use join)", at: location)
            case .array(var total):
                // Lists are appended in place, not copied at every step.
                for item in items {
                    guard case .array(let more) = try getter?(item) ?? item else {
                        throw .type("sum(): can only add lists to a list", at: location)
                    }
                    total += more
                    guard total.count <= options.maxLoopIterations else {
                        throw .limitExceeded("a list longer than \(options.maxLoopIterations) items at \(location)")
                    }
                }
                return .array(total)
            case var total:
                for item in items { total = try binary(.add, total, try getter?(item) ?? item, location) }
                return total
            }
        case "title":
            _ = try bind(args, name, [])
            return .string(PythonString.jinjaTitle(try str(v, location)))
        case "tojson":
            let p = try bind(args, name, ["indent", "ensure_ascii", "separators", "sort_keys"])
            var writer = JSONWriter(ensureASCII: p.bool(1), sortKeys: p.bool(3), limit: options.maxOutputBytes, location: location)
            switch p[0] {
            case nil, .none?: writer.indent = nil
            case .string(let s)?: writer.indent = s
            default:
                let width = try p.int(0, "indent", default: 0)
                guard width <= options.maxOutputBytes else { throw .limitExceeded("tojson: indent \(width) is too large") }
                writer.indent = String(repeating: " ", count: max(0, width))
            }
            writer.itemSeparator = writer.indent == nil ? ", " : ","
            if let separators = p[2], !(separators.isUndefined) {
                guard case .array(let pair) = separators, pair.count == 2,
                      case .string(let a) = pair[0], case .string(let b) = pair[1]
                else { throw .type("tojson: separators must be a pair of strings", at: location) }
                writer.itemSeparator = a
                writer.keySeparator = b
            }
            try writer.write(v, level: 0)
            return try checkedString(writer.out, location)
        case "trim":
            let p = try bind(args, name, ["chars"])
            return .string(PythonString.strip(try str(v, location), try p.string(0, "chars"), left: true, right: true))
        case "unique":
            let p = try bind(args, name, ["case_sensitive", "attribute"])
            let getter = try p[1].map { (path: Value) throws(ChatTemplateError) in try attributeGetter(path, location) }
            var seen: [Value] = []
            var out: [Value] = []
            for item in try iterate(v, location) {
                let key = Self.sortKey(try getter?(item) ?? item, caseSensitive: p.bool(0))
                try countIteration(seen.count + 1)
                if !seen.contains(where: { equal($0, key) }) {
                    seen.append(key)
                    out.append(item)
                }
            }
            return .array(out)
        case "wordcount":
            _ = try bind(args, name, [])
            var words = 0
            var inWord = false
            for c in try str(v, location).unicodeScalars {
                let wordChar = c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil
                if wordChar && !inWord { words += 1 }
                inWord = wordChar
            }
            return .int(words)
        default:
            throw .unknownFilter(name, at: location)
        }
    }

    private func length(_ v: Value, _ location: TemplateLocation) throws(ChatTemplateError) -> Int {
        switch v {
        case .string(let s): return s.unicodeScalars.count
        case .array(let a): return a.count
        case .dict(let d): return d.count
        case .undefined: return 0
        default: throw .type("object of type '\(v.typeName)' has no len()", at: location)
        }
    }

    private static func truncate(_ d: Double) -> Int? {
        guard d.isFinite, d > -9.3e18, d < 9.3e18 else { return nil }
        return Int(d.rounded(.towardZero))
    }

    private static func sortKey(_ v: Value, caseSensitive: Bool) -> Value {
        if !caseSensitive, case .string(let s) = v { return .string(s.lowercased()) }
        return v
    }

    /// A stable sort by `key` (Python's `sorted`), refusing keys that do not compare.
    private func sorted(_ items: [Value], reverse: Bool, _ location: TemplateLocation,
                        key: (Value) throws(ChatTemplateError) -> Value) throws(ChatTemplateError) -> [Value]
    {
        try countIteration(items.count)
        var keys: [Value] = []
        for item in items { keys.append(try key(item)) }
        var failure: ChatTemplateError? = nil
        let order = items.indices.sorted { a, b in
            guard failure == nil else { return a < b }
            do throws(ChatTemplateError) {
                let (x, y) = reverse ? (keys[b], keys[a]) : (keys[a], keys[b])
                if try less(x, y, location) { return true }
                if try less(y, x, location) { return false }
            } catch {
                failure = error
            }
            return a < b
        }
        if let failure { throw failure }
        return order.map { items[$0] }
    }

    /// `attribute="a.b.0"` as Jinja's filters read it: dict keys, attributes, list indices.
    private func attributeGetter(_ path: Value, _ location: TemplateLocation)
        throws(ChatTemplateError) -> (Value) throws(ChatTemplateError) -> Value
    {
        let parts: [Value]
        switch path {
        case .int: parts = [path]
        case .string(let s):
            parts = s.split(separator: ".", omittingEmptySubsequences: false).map { part in
                Int(part).map(Value.int) ?? .string(String(part))
            }
        default: throw .type("attribute must be a string, not '\(path.typeName)'", at: location)
        }
        return { [unowned self] (v: Value) throws(ChatTemplateError) -> Value in
            var current = v
            for part in parts { current = try self.item(current, part, location) }
            return current
        }
    }

    private func map(_ v: Value, _ args: CallArguments) throws(ChatTemplateError) -> Value {
        let location = args.location
        let items = try iterate(v, location)
        try countIteration(items.count)
        if args.positional.isEmpty {
            let p = try bind(args, "map", ["attribute", "default"], required: 1)
            let getter = try attributeGetter(p[0]!, location)
            var out: [Value] = []
            for item in items {
                let value = try getter(item)
                out.append(value.isUndefined ? p[1] ?? value : value)
            }
            return .array(out)
        }
        guard case .string(let name) = args.positional[0] else {
            throw .type("map expects a filter name or attribute=", at: location)
        }
        guard Builtins.filterNames.contains(name) else { throw .unknownFilter(name, at: location) }
        let rest = CallArguments(positional: Array(args.positional.dropFirst()), keyword: args.keyword, location: location)
        var out: [Value] = []
        for item in items { out.append(try filter(name, item, rest)) }
        return .array(out)
    }

    private func selectItems(_ items: [Value], attribute: Value?, testArguments: [Value], keep: Bool, _ location: TemplateLocation)
        throws(ChatTemplateError) -> [Value]
    {
        let getter = try attribute.map { (path: Value) throws(ChatTemplateError) in try attributeGetter(path, location) }
        var testName: String? = nil
        if let first = testArguments.first {
            guard case .string(let n) = first else { throw .type("the test name must be a string", at: location) }
            guard Builtins.testNames.contains(n) else { throw .unknownTest(n, at: location) }
            testName = n
        }
        let rest = CallArguments(positional: Array(testArguments.dropFirst()), location: location)
        try countIteration(items.count)
        var out: [Value] = []
        for item in items {
            let subject = try getter?(item) ?? item
            let passed = try testName.map { (n: String) throws(ChatTemplateError) in try test(n, subject, rest) } ?? subject.truthy
            if passed == keep { out.append(item) }
        }
        return out
    }

    private func indent(_ text: String, _ indentation: String, first: Bool, blank: Bool) -> String {
        var lines = PythonString.splitLines(text + "\n")
        var out: String
        if blank {
            out = lines.joined(separator: "\n" + indentation)
        } else {
            out = lines.isEmpty ? "" : lines.removeFirst()
            if !lines.isEmpty {
                out += "\n" + lines.map { $0.isEmpty ? $0 : indentation + $0 }.joined(separator: "\n")
            }
        }
        return first ? indentation + out : out
    }

    private func round(_ v: Value, _ precision: Int, _ method: String, _ location: TemplateLocation) throws(ChatTemplateError) -> Value {
        guard ["common", "floor", "ceil"].contains(method) else {
            throw .type("round: method must be 'common', 'ceil' or 'floor'", at: location)
        }
        let x: Double
        switch v {
        case .int(let i):
            if method == "common" { return v }
            x = Double(i)
        case .bool(let b):
            if method == "common" { return .int(b ? 1 : 0) }
            x = b ? 1 : 0
        case .double(let d): x = d
        default: throw .type("round expects a number, not '\(v.typeName)'", at: location)
        }
        guard x.isFinite else { return .double(x) }
        let scale = pow(10, Double(precision))
        switch method {
        case "floor": return .double((x * scale).rounded(.down) / scale)
        case "ceil": return .double((x * scale).rounded(.up) / scale)
        default:
            guard precision >= 0 else {
                let unit = pow(10, Double(-precision))
                return .double((x / unit).rounded(.toNearestOrEven) * unit)
            }
            // Python rounds the exact binary value, ties to even: what printf does.
            var buffer = [CChar](repeating: 0, count: 400)
            let written = withVaList([Int32(min(precision, 340)), x]) { vsnprintf(&buffer, buffer.count, "%.*f", $0) }
            guard written > 0, written < buffer.count else { return .double(x) }
            let digits = buffer.prefix(Int(written)).map { UInt8(bitPattern: $0) }
            return .double(Double(String(decoding: digits, as: UTF8.self)) ?? x)
        }
    }

    // MARK: tests

    func test(_ name: String, _ v: Value, _ args: CallArguments) throws(ChatTemplateError) -> Bool {
        let location = args.location
        func argument() throws(ChatTemplateError) -> Value {
            guard let a = args.positional.first ?? args.keyword.first?.1 else {
                throw .type("the test '\(name)' needs an argument", at: location)
            }
            return a
        }
        func integer(_ x: Value) throws(ChatTemplateError) -> Int {
            switch x {
            case .int(let i): return i
            case .bool(let b): return b ? 1 : 0
            case .undefined(let why): throw .undefined(why + " (in the test '\(name)')", at: location)
            default: throw .type("the test '\(name)' needs an integer, not '\(x.typeName)'", at: location)
            }
        }
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": if case .none = v { return true } else { return false }
        case "boolean": if case .bool = v { return true } else { return false }
        case "false": if case .bool(false) = v { return true } else { return false }
        case "true": if case .bool(true) = v { return true } else { return false }
        case "integer": if case .int = v { return true } else { return false }
        case "float": if case .double = v { return true } else { return false }
        case "number":
            switch v {
            case .int, .double, .bool: return true
            default: return false
            }
        case "string": if case .string = v { return true } else { return false }
        case "mapping": if case .dict = v { return true } else { return false }
        case "iterable", "sequence":
            switch v {
            case .string, .array, .dict, .undefined: return true
            default: return false
            }
        case "callable":
            switch v {
            case .function, .macro: return true
            default: return false
            }
        case "odd": return try integer(v) & 1 == 1
        case "even": return try integer(v) & 1 == 0
        case "divisibleby":
            let d = try integer(try argument())
            guard d != 0 else { throw .type("division by zero in 'divisibleby'", at: location) }
            return try integer(v) % d == 0
        case "eq", "equalto", "==": return equal(v, try argument())
        case "ne", "!=": return !equal(v, try argument())
        case "lt", "lessthan", "<": return try less(v, try argument(), location)
        case "le", "<=": return try !less(try argument(), v, location)
        case "gt", "greaterthan", ">": return try less(try argument(), v, location)
        case "ge", ">=": return try !less(v, try argument(), location)
        case "in": return try contains(try argument(), v, location)
        case "sameas":
            let other = try argument()
            switch (v, other) {
            case (.none, .none), (.undefined, .undefined): return true
            case (.bool(let a), .bool(let b)): return a == b
            case (.int(let a), .int(let b)): return a == b
            case (.namespace(let a), .namespace(let b)): return a === b
            default: return false
            }
        case "lower": return PythonString.isLower(try str(v, location))
        case "upper": return PythonString.isUpper(try str(v, location))
        case "escaped": return false
        case "filter": return Builtins.filterNames.contains(try str(try argument(), location))
        case "test": return Builtins.testNames.contains(try str(try argument(), location))
        default: throw .unknownTest(name, at: location)
        }
    }
}

private func htmlEscape(_ s: String) -> String {
    var out = ""
    for c in s.unicodeScalars {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&#34;"
        case "'": out += "&#39;"
        default: out.unicodeScalars.append(c)
        }
    }
    return out
}

/// `json.dumps` as transformers calls it: insertion-ordered keys, non-ASCII kept, Python's
/// float formatting and separators.
struct JSONWriter {
    var indent: String? = nil
    var ensureASCII: Bool
    var sortKeys: Bool
    var itemSeparator = ", "
    var keySeparator = ": "
    var limit: Int
    var location: TemplateLocation
    var out = ""

    init(ensureASCII: Bool, sortKeys: Bool, limit: Int, location: TemplateLocation) {
        self.ensureASCII = ensureASCII
        self.sortKeys = sortKeys
        self.limit = limit
        self.location = location
    }

    mutating func write(_ v: Value, level: Int) throws(ChatTemplateError) {
        guard level < 512 else { throw .limitExceeded("tojson: value nested deeper than 512 levels") }
        guard out.utf8.count <= limit else { throw .limitExceeded("tojson: text longer than \(limit) bytes at \(location)") }
        switch v {
        case .none: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            if d.isNaN { out += "NaN" } else if d.isInfinite { out += d < 0 ? "-Infinity" : "Infinity" } else { out += pythonFloat(d) }
        case .string(let s): writeString(s)
        case .array(let items):
            try writeContainer("[", "]", items.count, level) { (w: inout JSONWriter, i: Int) throws(ChatTemplateError) in
                try w.write(items[i], level: level + 1)
            }
        case .dict(let d):
            let pairs = sortKeys ? d.pairs.sorted { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) } : d.pairs
            try writeContainer("{", "}", pairs.count, level) { (w: inout JSONWriter, i: Int) throws(ChatTemplateError) in
                w.writeString(pairs[i].key)
                w.out += w.keySeparator
                try w.write(pairs[i].value, level: level + 1)
            }
        default:
            throw .type("tojson: object of type '\(v.typeName)' is not JSON serializable", at: location)
        }
    }

    private mutating func writeContainer(_ open: String, _ close: String, _ count: Int, _ level: Int,
                                         _ item: (inout JSONWriter, Int) throws(ChatTemplateError) -> Void) throws(ChatTemplateError)
    {
        out += open
        guard count > 0 else {
            out += close
            return
        }
        if let indent, indent.utf8.count * (level + 1) > limit {
            throw .limitExceeded("tojson: text longer than \(limit) bytes at \(location)")
        }
        let newline = indent.map { "\n" + String(repeating: $0, count: level + 1) }
        if let newline { out += newline }
        for i in 0..<count {
            if i > 0 { out += itemSeparator + (newline ?? "") }
            try item(&self, i)
        }
        if let indent { out += "\n" + String(repeating: indent, count: level) }
        out += close
    }

    private mutating func writeString(_ s: String) {
        out += "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if c.value < 0x20 || (ensureASCII && c.value > 0x7E) {
                    if c.value > 0xFFFF {
                        let v = c.value - 0x10000
                        out += "\\u" + hex(0xD800 + (v >> 10), width: 4) + "\\u" + hex(0xDC00 + (v & 0x3FF), width: 4)
                    } else {
                        out += "\\u" + hex(c.value, width: 4)
                    }
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        out += "\""
    }
}
