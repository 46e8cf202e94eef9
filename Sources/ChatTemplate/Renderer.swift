/// Executes a parsed template. Scopes follow Jinja: each loop iteration and each macro call
/// opens a scope that `set` writes into and that ends with it; `if` blocks do not.
final class Renderer {
    let options: ChatTemplate.Options
    private var scopes: [[String: Value]]
    private var macroDepth = 0
    private var iterations = 0
    private var depth = 0

    init(options: ChatTemplate.Options) {
        self.options = options
        scopes = [Builtins.globals(maxRange: options.maxLoopIterations), [:]]
    }

    func render(_ nodes: [Node], context: [String: TemplateValue]) throws(ChatTemplateError) -> String {
        for (name, value) in context {
            guard let v = Value.converting(value, depth: options.maxEvaluationDepth) else {
                throw .limitExceeded("the variable '\(name)' nests deeper than \(options.maxEvaluationDepth) levels")
            }
            scopes[0][name] = v
        }
        var out = Output(limit: options.maxOutputBytes)
        _ = try run(nodes, &out)
        return out.text
    }

    // MARK: scopes

    func lookup(_ name: String) -> Value {
        for scope in scopes.reversed() {
            if let v = scope[name] { return v }
        }
        return .undefined("'\(name)' is undefined")
    }

    private func assign(_ target: AssignTarget, _ value: Value, _ location: TemplateLocation) throws(ChatTemplateError) {
        switch target {
        case .name(let name):
            scopes[scopes.count - 1][name] = value
        case .namespaceAttribute(let name, let attribute):
            guard case .namespace(let ns) = lookup(name) else {
                throw .type("cannot assign attribute '\(attribute)' on '\(name)', which is not a namespace()", at: location)
            }
            ns.attributes[attribute] = value
            try checkSize(.namespace(ns), location)
        case .tuple(let names):
            let items = try iterate(value, location)
            guard items.count == names.count else {
                throw .type("cannot unpack \(items.count) values into \(names.count) names", at: location)
            }
            for (name, item) in zip(names, items) { scopes[scopes.count - 1][name] = item }
        }
    }

    /// `parts` joined, within the output limit (checked before the text is built).
    func joined(_ parts: [String], separator: String, _ location: TemplateLocation) throws(ChatTemplateError) -> Value {
        var bytes = separator.utf8.count * max(0, parts.count - 1)
        for p in parts { bytes += p.utf8.count }
        guard bytes <= options.maxOutputBytes else {
            throw .limitExceeded("a string longer than \(options.maxOutputBytes) bytes at \(location)")
        }
        return .string(parts.joined(separator: separator))
    }

    /// Python's `str()` of a value, within the output limit.
    func str(_ v: Value, _ location: TemplateLocation) throws(ChatTemplateError) -> String {
        guard let s = v.text(limit: options.maxOutputBytes) else {
            throw .limitExceeded("a value longer than \(options.maxOutputBytes) bytes when printed at \(location)")
        }
        return s
    }

    /// Refuses containers nested deeper than `maxEvaluationDepth` or holding more than four
    /// million values (see `Value.exceeds`).
    @discardableResult
    func checkSize(_ v: Value, _ location: TemplateLocation) throws(ChatTemplateError) -> Value {
        switch v {
        case .array, .dict, .namespace, .function: break
        default: return v
        }
        var budget = 4_000_000
        if v.exceeds(depth: options.maxEvaluationDepth, budget: &budget) {
            if budget < 0 { throw .limitExceeded("a value holding more than 4000000 items at \(location)") }
            throw .limitExceeded("values nested deeper than \(options.maxEvaluationDepth) levels at \(location)")
        }
        return v
    }

    /// Counts loop iterations, macro calls and the items sequence filters walk.
    func countIteration(_ n: Int = 1) throws(ChatTemplateError) {
        iterations += n
        if iterations > options.maxLoopIterations {
            throw .limitExceeded("more than \(options.maxLoopIterations) loop iterations")
        }
    }

    // MARK: statements

    enum Flow { case normal, breakLoop, continueLoop }

    /// Counts the recursion of `run` and `eval` (and with them macro calls), so that no
    /// template, however built, can exhaust the stack.
    private func enter(_ location: TemplateLocation, weight: Int = 1) throws(ChatTemplateError) {
        depth += weight
        if depth > options.maxEvaluationDepth {
            throw .limitExceeded("evaluation nested deeper than \(options.maxEvaluationDepth) levels at \(location)")
        }
    }

    // `run` and `eval` only dispatch: each case's work happens in a separate function, so that
    // the frames of the recursion stay small (debug builds give every local of a function
    // its own stack slot).
    private func run(_ nodes: [Node], _ out: inout Output) throws(ChatTemplateError) -> Flow {
        for node in nodes {
            let flow = try run(node, &out)
            if flow != .normal { return flow }
        }
        return .normal
    }

    private func run(_ node: Node, _ out: inout Output) throws(ChatTemplateError) -> Flow {
        switch node {
        case .text(let s):
            try out.append(s)
            return .normal
        case .breakLoop:
            return .breakLoop
        case .continueLoop:
            return .continueLoop
        default:
            return try runStatement(node, &out)
        }
    }

    @inline(never)
    private func runStatement(_ node: Node, _ out: inout Output) throws(ChatTemplateError) -> Flow {
        switch node {
        case .text, .breakLoop, .continueLoop: return try run(node, &out)
        case .output: try output(node, &out)
        case .ifBlock: return try runIf(node, &out)
        case .forLoop: return try runFor(node, &out)
        case .set, .setBlock: try runSet(node)
        case .macro: defineMacro(node)
        case .filterBlock: try runFilterBlock(node, &out)
        }
        return .normal
    }

    @inline(never)
    private func defineMacro(_ node: Node) {
        guard case .macro(let macro) = node else { return }
        scopes[scopes.count - 1][macro.name] = .macro(MacroValue(macro, scopes: scopes.count))
    }

    @inline(never)
    private func output(_ node: Node, _ out: inout Output) throws(ChatTemplateError) {
        guard case .output(let e) = node else { return }
        try out.append(try str(try eval(e), e.location))
    }

    @inline(never)
    private func runSet(_ node: Node) throws(ChatTemplateError) {
        switch node {
        case .set(let target, let e, let location):
            try assign(target, try eval(e), location)
        case .setBlock(let target, let body, let location):
            try enter(location)
            defer { depth -= 1 }
            var captured = Output(limit: options.maxOutputBytes)
            _ = try run(body, &captured)
            try assign(target, .string(captured.text), location)
        default:
            break
        }
    }

    @inline(never)
    private func runFilterBlock(_ node: Node, _ out: inout Output) throws(ChatTemplateError) {
        guard case .filterBlock(let filters, let body) = node else { return }
        try enter(filters[0].location)
        defer { depth -= 1 }
        var captured = Output(limit: options.maxOutputBytes)
        _ = try run(body, &captured)
        var value = Value.string(captured.text)
        for f in filters { value = try applyFilter(f, to: value) }
        try out.append(try str(value, filters[0].location))
    }

    @inline(never)
    private func runIf(_ node: Node, _ out: inout Output) throws(ChatTemplateError) -> Flow {
        guard case .ifBlock(let branches, let elseBody) = node else { return .normal }
        try enter(branches[0].0.location)
        defer { depth -= 1 }
        for (condition, body) in branches {
            if try eval(condition).truthy { return try run(body, &out) }
        }
        return try run(elseBody, &out)
    }

    @inline(never)
    private func runFor(_ node: Node, _ out: inout Output) throws(ChatTemplateError) -> Flow {
        guard case .forLoop(let loop) = node else { return .normal }
        try enter(loop.location)
        defer { depth -= 1 }
        let items = try loopItems(loop)
        if items.isEmpty { return try runLoopElse(loop, &out) }
        for i in items.indices {
            if try runIteration(loop, items, i, &out) == .breakLoop { break }
        }
        return .normal
    }

    /// The items a loop visits: its iterable, filtered by its `if` condition.
    @inline(never)
    private func loopItems(_ loop: ForLoop) throws(ChatTemplateError) -> [Value] {
        let items = try iterate(try eval(loop.iterable), loop.iterable.location)
        guard let condition = loop.condition else { return items }
        var kept: [Value] = []
        for item in items {
            try countIteration()
            scopes.append([:])
            try assign(loop.target, item, loop.location)
            if try eval(condition).truthy { kept.append(item) }
            scopes.removeLast()
        }
        return kept
    }

    @inline(never)
    private func runLoopElse(_ loop: ForLoop, _ out: inout Output) throws(ChatTemplateError) -> Flow {
        scopes.append([:])
        let flow = try run(loop.elseBody, &out)
        scopes.removeLast()
        return flow
    }

    @inline(never)
    private func runIteration(_ loop: ForLoop, _ items: [Value], _ i: Int, _ out: inout Output) throws(ChatTemplateError) -> Flow {
        try countIteration()
        scopes.append(["loop": loopObject(items, i)])
        try assign(loop.target, items[i], loop.location)
        let flow = try run(loop.body, &out)
        scopes.removeLast()
        return flow
    }

    private func loopObject(_ items: [Value], _ i: Int) -> Value {
        let n = items.count
        var loop = OrderedMap<Value>()
        loop["index"] = .int(i + 1)
        loop["index0"] = .int(i)
        loop["revindex"] = .int(n - i)
        loop["revindex0"] = .int(n - i - 1)
        loop["first"] = .bool(i == 0)
        loop["last"] = .bool(i == n - 1)
        loop["length"] = .int(n)
        loop["depth"] = .int(1)
        loop["depth0"] = .int(0)
        loop["previtem"] = i > 0 ? items[i - 1] : .undefined("there is no previous item")
        loop["nextitem"] = i + 1 < n ? items[i + 1] : .undefined("there is no next item")
        loop["cycle"] = .function(Function(name: "cycle") { (args: CallArguments) throws(ChatTemplateError) -> Value in
            guard !args.positional.isEmpty else { throw .type("loop.cycle() needs at least one argument", at: args.location) }
            return args.positional[i % args.positional.count]
        })
        return .dict(loop)
    }

    // MARK: expressions

    func eval(_ e: Expr) throws(ChatTemplateError) -> Value {
        switch e.kind {
        case .literal(let l): return Value(l)
        case .name(let name): return lookup(name)
        default: return try evalCompound(e)
        }
    }

    @inline(never)
    private func evalCompound(_ e: Expr) throws(ChatTemplateError) -> Value {
        try enter(e.location)
        defer { depth -= 1 }
        // No payload bindings here: each helper unpacks its own case.
        switch e.kind {
        case .literal, .name: return try eval(e)
        case .list: return try evalList(e)
        case .dict: return try evalDict(e)
        case .attribute: return try evalAttribute(e)
        case .index: return try evalItem(e)
        case .slice: return try evalSlice(e)
        case .unary: return try evalUnary(e)
        case .binary: return try evalBinary(e)
        case .and, .or: return try evalLogic(e)
        case .compare: return try evalCompare(e)
        case .conditional: return try evalConditional(e)
        case .filter: return try evalFilter(e)
        case .test: return try evalTest(e)
        case .call: return try evalCall(e)
        }
    }

    @inline(never)
    private func evalList(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .list(let items) = e.kind else { return .none }
        var values: [Value] = []
        values.reserveCapacity(items.count)
        for item in items { values.append(try eval(item)) }
        return try checkSize(.array(values), e.location)
    }

    @inline(never)
    private func evalDict(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .dict(let pairs) = e.kind else { return .none }
        var map = OrderedMap<Value>()
        for (k, v) in pairs {
            guard case .string(let key) = try eval(k) else {
                throw .type("dictionary keys must be strings", at: k.location)
            }
            map[key] = try eval(v)
        }
        return try checkSize(.dict(map), e.location)
    }

    @inline(never)
    private func evalAttribute(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .attribute(let target, let name) = e.kind else { return .none }
        return try attribute(try eval(target), name, e.location)
    }

    @inline(never)
    private func evalItem(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .index(let target, let key) = e.kind else { return .none }
        return try item(try eval(target), try eval(key), e.location)
    }

    @inline(never)
    private func evalUnary(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .unary(let op, let operand) = e.kind else { return .none }
        return try unary(op, try eval(operand), e.location)
    }

    @inline(never)
    private func evalBinary(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .binary(let op, let a, let b) = e.kind else { return .none }
        return try binary(op, try eval(a), try eval(b), e.location)
    }

    /// `and` / `or` return one of their operands, as in Python.
    @inline(never)
    private func evalLogic(_ e: Expr) throws(ChatTemplateError) -> Value {
        switch e.kind {
        case .and(let a, let b):
            let left = try eval(a)
            return left.truthy ? try eval(b) : left
        case .or(let a, let b):
            let left = try eval(a)
            return left.truthy ? left : try eval(b)
        default:
            return .none
        }
    }

    @inline(never)
    private func evalConditional(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .conditional(let condition, let then, let otherwise) = e.kind else { return .none }
        if try eval(condition).truthy { return try eval(then) }
        guard let otherwise else { return .undefined("the inline if expression had no else branch") }
        return try eval(otherwise)
    }

    @inline(never)
    private func evalFilter(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .filter(let target, let f) = e.kind else { return .none }
        return try applyFilter(f, to: try eval(target))
    }

    @inline(never)
    private func evalTest(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .test(let target, let t, let negated) = e.kind else { return .none }
        let result = try test(t.name, try eval(target), try evalArguments(t.arguments, t.location))
        return .bool(result != negated)
    }

    @inline(never)
    private func evalCall(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .call(let callee, let arguments) = e.kind else { return .none }
        return try call(try eval(callee), try evalArguments(arguments, e.location), e.location)
    }

    @inline(never)
    private func evalSlice(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .slice(let target, let start, let stop, let step) = e.kind else { return .none }
        let value = try eval(target)
        func bound(_ e: Expr?) throws(ChatTemplateError) -> Int? {
            guard let e else { return nil }
            switch try eval(e) {
            case .none: return nil
            case .int(let i): return i
            case .bool(let b): return b ? 1 : 0
            case let other: throw .type("slice indices must be integers or none, not \(other.typeName)", at: e.location)
            }
        }
        return try slice(value, try bound(start), try bound(stop), try bound(step), e.location)
    }

    @inline(never)
    private func evalCompare(_ e: Expr) throws(ChatTemplateError) -> Value {
        guard case .compare(let first, let rest) = e.kind else { return .none }
        var left = try eval(first)
        for (op, operand, location) in rest {
            let right = try eval(operand)
            if try !compare(op, left, right, location) { return .bool(false) }
            left = right
        }
        return .bool(true)
    }

    func evalArguments(_ arguments: Arguments, _ location: TemplateLocation) throws(ChatTemplateError) -> CallArguments {
        var out = CallArguments(location: location)
        for a in arguments.positional { out.positional.append(try eval(a)) }
        for (name, a) in arguments.keyword { out.keyword.append((name, try eval(a))) }
        return out
    }

    private func applyFilter(_ f: FilterCall, to value: Value) throws(ChatTemplateError) -> Value {
        try checkSize(try filter(f.name, value, try evalArguments(f.arguments, f.location)), f.location)
    }

    func call(_ callee: Value, _ arguments: CallArguments, _ location: TemplateLocation) throws(ChatTemplateError) -> Value {
        switch callee {
        case .function(let f):
            return try checkSize(try f.body(arguments), location)
        case .macro(let m):
            return try callMacro(m.macro, m.scopes, arguments)
        case .undefined(let why):
            throw .undefined(why + " (called as a function)", at: location)
        default:
            throw .type("'\(callee.typeName)' object is not callable", at: location)
        }
    }

    @inline(never)
    private func callMacro(_ macro: Macro, _ visible: Int, _ arguments: CallArguments) throws(ChatTemplateError) -> Value {
        let location = arguments.location
        guard arguments.positional.count <= macro.parameters.count else {
            let given = arguments.positional.count
            throw .type("macro '\(macro.name)' takes \(macro.parameters.count) arguments, \(given) given", at: location)
        }
        var scope: [String: Value] = [:]
        for (name, _) in arguments.keyword where !macro.parameters.contains(where: { $0.0 == name }) {
            throw .type("macro '\(macro.name)' has no parameter '\(name)'", at: location)
        }
        for (i, (name, defaultValue)) in macro.parameters.enumerated() {
            if i < arguments.positional.count {
                scope[name] = arguments.positional[i]
            } else if let given = arguments.keyword.last(where: { $0.0 == name }) {
                scope[name] = given.1
            } else if let defaultValue {
                scope[name] = try eval(defaultValue)
            } else {
                scope[name] = .undefined("parameter '\(name)' of macro '\(macro.name)' was not provided")
            }
        }
        // A macro call costs a few frames more than a block.
        try enter(location, weight: 4)
        defer { depth -= 4 }
        macroDepth += 1
        defer { macroDepth -= 1 }
        if macroDepth > options.maxMacroDepth {
            throw .limitExceeded("macro calls nested deeper than \(options.maxMacroDepth) levels at \(location)")
        }
        try countIteration()
        let saved = scopes
        scopes = Array(scopes.prefix(visible)) + [scope]
        var out = Output(limit: options.maxOutputBytes)
        _ = try run(macro.body, &out)
        scopes = saved
        return .string(out.text)
    }
}

/// Rendered text with a byte budget.
struct Output {
    private(set) var text = ""
    private var bytes = 0
    let limit: Int

    init(limit: Int) { self.limit = limit }

    mutating func append(_ s: String) throws(ChatTemplateError) {
        bytes += s.utf8.count
        guard bytes <= limit else { throw .limitExceeded("output larger than \(limit) bytes") }
        text += s
    }
}
