/// The parsed template: statements (`Node`) and expressions (`Expr`).

enum Literal: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
}

enum UnaryOp: Sendable { case negate, plus, not }

enum BinaryOp: String, Sendable {
    case add = "+", subtract = "-", multiply = "*", divide = "/", floorDivide = "//", modulo = "%", power = "**"
    case concat = "~"
}

enum CompareOp: String, Sendable {
    case equal = "==", notEqual = "!=", less = "<", lessEqual = "<=", greater = ">", greaterEqual = ">="
    case contains = "in", notContains = "not in"
}

struct Arguments: Sendable {
    var positional: [Expr] = []
    var keyword: [(String, Expr)] = []
}

/// `name(args)` after `|` (a filter) or `is` (a test).
struct FilterCall: Sendable {
    var name: String
    var arguments: Arguments
    var location: TemplateLocation
}

struct Expr: Sendable {
    indirect enum Kind: Sendable {
        case literal(Literal)
        case name(String)
        case list([Expr])
        case dict([(Expr, Expr)])
        case attribute(Expr, String)
        case index(Expr, Expr)
        case slice(Expr, start: Expr?, stop: Expr?, step: Expr?)
        case unary(UnaryOp, Expr)
        case binary(BinaryOp, Expr, Expr)
        case and(Expr, Expr)
        case or(Expr, Expr)
        case compare(Expr, [(CompareOp, Expr, TemplateLocation)])
        /// `then if condition else otherwise` (no `else`: undefined).
        case conditional(condition: Expr, then: Expr, otherwise: Expr?)
        case filter(Expr, FilterCall)
        case test(Expr, FilterCall, negated: Bool)
        case call(Expr, Arguments)
    }

    var kind: Kind
    var location: TemplateLocation
    /// Nesting height of the tree below (evaluation recurses this deep).
    var height: Int

    init(_ kind: Kind, _ location: TemplateLocation) {
        self.kind = kind
        self.location = location
        var h = 0
        func see(_ e: Expr?) { if let e { h = max(h, e.height) } }
        func see(_ a: Arguments) {
            a.positional.forEach { see($0) }
            a.keyword.forEach { see($0.1) }
        }
        switch kind {
        case .literal, .name: break
        case .list(let items): items.forEach { see($0) }
        case .dict(let pairs): pairs.forEach { see($0.0); see($0.1) }
        case .attribute(let e, _): see(e)
        case .index(let a, let b): see(a); see(b)
        case .slice(let e, let a, let b, let c): see(e); see(a); see(b); see(c)
        case .unary(_, let e): see(e)
        case .binary(_, let a, let b), .and(let a, let b), .or(let a, let b): see(a); see(b)
        case .compare(let e, let rest): see(e); rest.forEach { see($0.1) }
        case .conditional(let c, let t, let o): see(c); see(t); see(o)
        case .filter(let e, let f), .test(let e, let f, _): see(e); see(f.arguments)
        case .call(let e, let a): see(e); see(a)
        }
        height = h + 1
    }
}

enum AssignTarget: Sendable {
    case name(String)
    /// `ns.attribute` where `ns` is a `namespace()`.
    case namespaceAttribute(String, String)
    case tuple([String])
}

struct ForLoop: Sendable {
    var target: AssignTarget
    var iterable: Expr
    var condition: Expr?
    var body: [Node]
    var elseBody: [Node]
    var location: TemplateLocation
}

struct Macro: Sendable {
    var name: String
    var parameters: [(String, Expr?)]
    var body: [Node]
    var location: TemplateLocation
}

indirect enum Node: Sendable {
    case text(String)
    case output(Expr)
    case ifBlock([(Expr, [Node])], elseBody: [Node])
    case forLoop(ForLoop)
    case set(AssignTarget, Expr, TemplateLocation)
    case setBlock(AssignTarget, [Node], TemplateLocation)
    case macro(Macro)
    case filterBlock([FilterCall], [Node])
    case breakLoop
    case continueLoop
}
