/// The names templates can use: filters, tests and global functions.
enum Builtins {
    static let filterNames: Set<String> = [
        "abs", "attr", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
        "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject",
        "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title",
        "tojson", "trim", "unique", "upper", "wordcount",
    ]

    static let testNames: Set<String> = [
        "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string", "mapping",
        "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt",
        "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "sameas", "lower", "upper", "escaped",
        "filter", "test",
    ]

    /// `range`, `namespace`, `dict` and transformers' `raise_exception`.
    static func globals(maxRange: Int) -> [String: Value] {
        var g: [String: Value] = [:]
        g["raise_exception"] = .function(Function(name: "raise_exception") { (args: CallArguments) throws(ChatTemplateError) -> Value in
            let message = args.positional.first ?? args.keyword.first?.1 ?? .string("")
            throw .raised(message.text(limit: 100_000) ?? message.brief)
        })
        g["range"] = .function(Function(name: "range") { (args: CallArguments) throws(ChatTemplateError) -> Value in
            var bounds: [Int] = []
            for v in args.positional {
                switch v {
                case .int(let i): bounds.append(i)
                case .bool(let b): bounds.append(b ? 1 : 0)
                default: throw .type("range() arguments must be integers, not '\(v.typeName)'", at: args.location)
                }
            }
            guard (1...3).contains(bounds.count), args.keyword.isEmpty else {
                throw .type("range() takes 1 to 3 integer arguments", at: args.location)
            }
            let start = bounds.count == 1 ? 0 : bounds[0]
            let stop = bounds.count == 1 ? bounds[0] : bounds[1]
            let step = bounds.count == 3 ? bounds[2] : 1
            guard step != 0 else { throw .type("range() step must not be zero", at: args.location) }
            let span = step > 0 ? Double(stop) - Double(start) : Double(start) - Double(stop)
            let count = span <= 0 ? 0 : (span / Double(abs(step))).rounded(.up)
            guard count <= Double(maxRange) else {
                throw .limitExceeded("range() of \(Int(count)) items is longer than \(maxRange)")
            }
            var items: [Value] = []
            items.reserveCapacity(Int(count))
            var x = start
            while step > 0 ? x < stop : x > stop {
                items.append(.int(x))
                let (next, overflow) = x.addingReportingOverflow(step)
                if overflow { break }
                x = next
            }
            return .array(items)
        })
        g["namespace"] = .function(Function(name: "namespace") { (args: CallArguments) throws(ChatTemplateError) -> Value in
            let ns = Namespace()
            for v in args.positional {
                guard case .dict(let d) = v, args.positional.count == 1 else {
                    throw .type("namespace() takes at most one dictionary and keyword arguments", at: args.location)
                }
                ns.attributes = d
            }
            for (k, v) in args.keyword { ns.attributes[k] = v }
            return .namespace(ns)
        })
        g["dict"] = .function(Function(name: "dict") { (args: CallArguments) throws(ChatTemplateError) -> Value in
            var map = OrderedMap<Value>()
            for v in args.positional {
                guard case .dict(let d) = v, args.positional.count == 1 else {
                    throw .type("dict() takes at most one dictionary and keyword arguments", at: args.location)
                }
                map = d
            }
            for (k, v) in args.keyword { map[k] = v }
            return .dict(map)
        })
        return g
    }
}

/// Arguments matched to parameter names, Python style (positional first, then keywords).
struct BoundArguments {
    var values: [Value?]
    /// Positional arguments past the named parameters (for variadic functions).
    var extra: [Value]
    var location: TemplateLocation

    subscript(i: Int) -> Value? { values[i] }

    func int(_ i: Int, _ name: String, default defaultValue: Int) throws(ChatTemplateError) -> Int {
        switch values[i] {
        case nil, .none?: return defaultValue
        case .int(let n)?: return n
        case .bool(let b)?: return b ? 1 : 0
        case let v?: throw .type("'\(name)' must be an integer, not '\(v.typeName)'", at: location)
        }
    }

    func string(_ i: Int, _ name: String) throws(ChatTemplateError) -> String? {
        switch values[i] {
        case nil, .none?: return nil
        case .string(let s)?: return s
        case let v?: throw .type("'\(name)' must be a string, not '\(v.typeName)'", at: location)
        }
    }

    func bool(_ i: Int, default defaultValue: Bool = false) -> Bool {
        values[i]?.truthy ?? defaultValue
    }
}

func bind(_ args: CallArguments, _ function: String, _ parameters: [String], required: Int = 0, variadic: Bool = false)
    throws(ChatTemplateError) -> BoundArguments
{
    var values = [Value?](repeating: nil, count: parameters.count)
    var extra: [Value] = []
    for (i, v) in args.positional.enumerated() {
        if i < parameters.count {
            values[i] = v
        } else if variadic {
            extra.append(v)
        } else {
            throw .type("\(function)() takes at most \(parameters.count) arguments, \(args.positional.count) given", at: args.location)
        }
    }
    for (name, v) in args.keyword {
        guard let i = parameters.firstIndex(of: name) else {
            throw .type("\(function)() got an unexpected keyword argument '\(name)'", at: args.location)
        }
        guard values[i] == nil else {
            throw .type("\(function)() got multiple values for argument '\(name)'", at: args.location)
        }
        values[i] = v
    }
    for i in 0..<required where values[i] == nil {
        throw .type("\(function)() is missing the argument '\(parameters[i])'", at: args.location)
    }
    return BoundArguments(values: values, extra: extra, location: args.location)
}

// MARK: - methods

extension Renderer {
    /// Bound methods of a string value (`text.strip()`, `text.split(',')`, ...).
    func stringMethod(_ s: String, _ name: String) -> Function? {
        typealias Body = (CallArguments) throws(ChatTemplateError) -> Value
        let body: Body
        switch name {
        case "strip", "lstrip", "rstrip":
            body = { (args: CallArguments) throws(ChatTemplateError) -> Value in
                let p = try bind(args, name, ["chars"])
                return .string(PythonString.strip(s, try p.string(0, "chars"), left: name != "rstrip", right: name != "lstrip"))
            }
        case "split", "rsplit":
            body = { (args: CallArguments) throws(ChatTemplateError) -> Value in
                let p = try bind(args, name, ["sep", "maxsplit"])
                let sep = try p.string(0, "sep")
                if sep == "" { throw .type("empty separator", at: args.location) }
                let n = try p.int(1, "maxsplit", default: -1)
                let parts = name == "split" ? PythonString.split(s, sep, n) : PythonString.rsplit(s, sep, n)
                return .array(parts.map(Value.string))
            }
        case "startswith", "endswith":
            body = { [unowned self] (args: CallArguments) throws(ChatTemplateError) -> Value in
                let p = try bind(args, name, ["prefix", "start", "end"], required: 1)
                var candidates: [String] = []
                switch p[0]! {
                case .string(let x): candidates = [x]
                case .array(let items):
                    for item in items {
                        guard case .string(let x) = item else { throw .type("\(name)() takes strings", at: args.location) }
                        candidates.append(x)
                    }
                case let v: throw .type("\(name)() takes a string or a list of strings, not '\(v.typeName)'", at: args.location)
                }
                let region = try self.region(s, p, 1)
                for x in candidates {
                    let needle = Array(x.unicodeScalars)
                    guard needle.count <= region.count else { continue }
                    let hit = name == "startswith" ? region.prefix(needle.count).elementsEqual(needle)
                        : region.suffix(needle.count).elementsEqual(needle)
                    if hit { return .bool(true) }
                }
                return .bool(false)
            }
        case "replace":
            body = { [unowned self] (args: CallArguments) throws(ChatTemplateError) -> Value in
                let p = try bind(args, name, ["old", "new", "count"], required: 2)
                guard let old = try p.string(0, "old"), let new = try p.string(1, "new") else {
                    throw .type("replace() takes strings", at: args.location)
                }
                let count = try p.int(2, "count", default: -1)
                guard let replaced = PythonString.replace(s, old, new, count, limit: self.options.maxOutputBytes)
                else { throw .limitExceeded("a string longer than \(self.options.maxOutputBytes) bytes at \(args.location)") }
                return .string(replaced)
            }
        case "upper", "lower", "title", "capitalize", "isspace", "isdigit", "isalpha", "isalnum", "islower", "isupper":
            body = { (args: CallArguments) throws(ChatTemplateError) -> Value in
                _ = try bind(args, name, [])
                let c = s.unicodeScalars
                switch name {
                case "upper": return .string(s.uppercased())
                case "lower": return .string(s.lowercased())
                case "title": return .string(PythonString.title(s))
                case "capitalize": return .string(PythonString.capitalize(s))
                case "isspace": return .bool(!c.isEmpty && c.allSatisfy(isSpace))
                case "isdigit": return .bool(!c.isEmpty && c.allSatisfy(PythonString.isDigit))
                case "isalpha": return .bool(!c.isEmpty && c.allSatisfy(PythonString.isAlpha))
                case "isalnum":
                    return .bool(!c.isEmpty && c.allSatisfy { PythonString.isAlpha($0) || $0.properties.numericType != nil })
                case "islower": return .bool(PythonString.isLower(s))
                default: return .bool(PythonString.isUpper(s))
                }
            }
        case "find", "rfind", "count":
            body = { [unowned self] (args: CallArguments) throws(ChatTemplateError) -> Value in
                let p = try bind(args, name, ["sub", "start", "end"], required: 1)
                guard case .string(let sub)? = p[0] else { throw .type("\(name)() takes a string", at: args.location) }
                let region = try self.region(s, p, 1)
                let offset = try self.regionStart(s, p, 1)
                let needle = Array(sub.unicodeScalars)
                switch name {
                case "find": return .int(find(region, needle).map { $0 + offset } ?? -1)
                case "rfind":
                    var last: Int? = nil
                    var from = 0
                    while let at = find(region, needle, from: from) {
                        last = at
                        from = at + 1
                        if from > region.count { break }
                    }
                    return .int(last.map { $0 + offset } ?? -1)
                default:
                    if needle.isEmpty { return .int(region.count + 1) }
                    var n = 0
                    var from = 0
                    while let at = find(region, needle, from: from) {
                        n += 1
                        from = at + needle.count
                    }
                    return .int(n)
                }
            }
        case "join":
            body = { [unowned self] (args: CallArguments) throws(ChatTemplateError) -> Value in
                let p = try bind(args, name, ["iterable"], required: 1)
                var parts: [String] = []
                for item in try self.iterate(p[0]!, args.location) {
                    guard case .string(let x) = item else {
                        throw .type("join() expects strings, found '\(item.typeName)'", at: args.location)
                    }
                    parts.append(x)
                }
                return try self.joined(parts, separator: s, args.location)
            }
        case "splitlines":
            body = { (args: CallArguments) throws(ChatTemplateError) -> Value in
                let p = try bind(args, name, ["keepends"])
                return .array(PythonString.splitLines(s, keepEnds: p.bool(0)).map(Value.string))
            }
        default:
            return nil
        }
        return Function(name: "str.\(name)", receiver: .string(s), body: body)
    }

    /// The code points `text[start:end]` for optional start/end arguments at `p[i]`, `p[i+1]`.
    private func region(_ s: String, _ p: BoundArguments, _ i: Int) throws(ChatTemplateError) -> [Unicode.Scalar] {
        let c = Array(s.unicodeScalars)
        let lo = try regionStart(s, p, i)
        var hi = try p.int(i + 1, "end", default: c.count)
        if hi < 0 { hi = max(0, hi + c.count) }
        hi = min(hi, c.count)
        return lo < hi ? Array(c[lo..<hi]) : []
    }

    private func regionStart(_ s: String, _ p: BoundArguments, _ i: Int) throws(ChatTemplateError) -> Int {
        let n = s.unicodeScalars.count
        var lo = try p.int(i, "start", default: 0)
        if lo < 0 { lo = max(0, lo + n) }
        return min(lo, n)
    }

    /// Bound methods of a dict: `items()`, `keys()`, `values()`, `get(key, default)`.
    func dictMethod(_ d: OrderedMap<Value>, _ name: String) -> Function? {
        switch name {
        case "items", "keys", "values":
            return Function(name: "dict.\(name)", receiver: .dict(d)) { (args: CallArguments) throws(ChatTemplateError) -> Value in
                _ = try bind(args, name, [])
                switch name {
                case "items": return .array(d.pairs.map { .array([.string($0.key), $0.value]) })
                case "keys": return .array(d.keys.map(Value.string))
                default: return .array(d.values)
                }
            }
        case "get":
            return Function(name: "dict.get", receiver: .dict(d)) { (args: CallArguments) throws(ChatTemplateError) -> Value in
                let p = try bind(args, name, ["key", "default"], required: 1)
                guard case .string(let key)? = p[0] else { return p[1] ?? .none }
                return d[key] ?? p[1] ?? .none
            }
        default:
            return nil
        }
    }
}
