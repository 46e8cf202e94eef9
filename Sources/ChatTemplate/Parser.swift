/// Recursive-descent parser for Jinja's statements and expressions, with Jinja's operator
/// precedence (lowest first): `x if c else y`, `or`, `and`, `not`, comparisons and `in`,
/// `+ -`, `~`, `* / // %`, `**`, unary `- +`, then filters, tests, calls, attributes and
/// subscripts.
struct Parser {
    private var tokens: [Token]
    private var index = 0
    private let maxDepth: Int
    private var depth = 0
    private var loopDepth = 0

    init(tokens: [Token], maxDepth: Int) {
        self.tokens = tokens
        self.maxDepth = maxDepth
    }

    // MARK: tokens

    private var current: Token { tokens[index] }
    private var next: Token { tokens[min(index + 1, tokens.count - 1)] }

    private mutating func advance() -> Token {
        let t = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return t
    }

    private func isOp(_ op: String, _ token: Token? = nil) -> Bool {
        (token ?? current).kind == .op(op)
    }

    private func isName(_ name: String, _ token: Token? = nil) -> Bool {
        (token ?? current).kind == .name(name)
    }

    private mutating func skipOp(_ op: String) -> Bool {
        guard isOp(op) else { return false }
        _ = advance()
        return true
    }

    private mutating func skipName(_ name: String) -> Bool {
        guard isName(name) else { return false }
        _ = advance()
        return true
    }

    private static func describe(_ kind: Token.Kind) -> String {
        switch kind {
        case .text: "template text"
        case .variableBegin: "'{{'"
        case .variableEnd: "'}}'"
        case .blockBegin: "'{%'"
        case .blockEnd: "'%}'"
        case .name(let n): "'\(n)'"
        case .string(let s): "string \(s.debugDescription)"
        case .integer(let i): "'\(i)'"
        case .float(let f): "'\(f)'"
        case .op(let o): "'\(o)'"
        case .eof: "end of template"
        }
    }

    private func unexpected(expected: String) -> ChatTemplateError {
        .syntax("expected \(expected), found \(Self.describe(current.kind))", at: current.location)
    }

    private mutating func expectOp(_ op: String) throws(ChatTemplateError) {
        guard skipOp(op) else { throw unexpected(expected: "'\(op)'") }
    }

    private mutating func expectBlockEnd() throws(ChatTemplateError) {
        guard current.kind == .blockEnd else { throw unexpected(expected: "'%}'") }
        _ = advance()
    }

    private mutating func expectName() throws(ChatTemplateError) -> String {
        guard case .name(let n) = current.kind else { throw unexpected(expected: "a name") }
        _ = advance()
        return n
    }

    private mutating func enter(_ location: TemplateLocation) throws(ChatTemplateError) {
        depth += 1
        if depth > maxDepth {
            throw .limitExceeded("template nesting deeper than \(maxDepth) levels at \(location)")
        }
    }

    private func checked(_ e: Expr) throws(ChatTemplateError) -> Expr {
        if e.height > maxDepth * 4 {
            throw .limitExceeded("expression nesting deeper than \(maxDepth * 4) levels at \(e.location)")
        }
        return e
    }

    // MARK: statements

    mutating func parseTemplate() throws(ChatTemplateError) -> [Node] {
        let (nodes, _) = try parseBody(until: [], opener: nil)
        return nodes
    }

    /// Parses nodes up to a block tag named in `until`; returns that name with the cursor just
    /// after it (the caller parses the rest of the tag).
    private mutating func parseBody(until ends: Set<String>, opener: (String, TemplateLocation)?)
        throws(ChatTemplateError) -> ([Node], String)
    {
        var nodes: [Node] = []
        while true {
            let token = current
            switch token.kind {
            case .text(let s):
                _ = advance()
                nodes.append(.text(s))
            case .variableBegin:
                _ = advance()
                let e = try parseTuple()
                guard current.kind == .variableEnd else { throw unexpected(expected: "'}}'") }
                _ = advance()
                nodes.append(.output(e))
            case .blockBegin:
                _ = advance()
                guard case .name(let name) = current.kind else { throw unexpected(expected: "a tag name") }
                if ends.contains(name) {
                    _ = advance()
                    return (nodes, name)
                }
                if name.hasPrefix("end") || name == "else" || name == "elif" {
                    if let opener {
                        throw .syntax("unexpected '\(name)': expected \(Self.list(ends)) to close the '\(opener.0)' opened at \(opener.1)",
                                      at: current.location)
                    }
                    throw .syntax("unexpected '\(name)' outside of any block", at: current.location)
                }
                try nodes.append(contentsOf: parseStatement(openedAt: token.location))
            case .eof:
                if let opener {
                    let expected = Self.list(ends)
                    throw .syntax("unexpected end of template: expected \(expected) to close the '\(opener.0)' opened at \(opener.1)",
                                  at: token.location)
                }
                return (nodes, "")
            default:
                throw unexpected(expected: "template text or a tag")
            }
        }
    }

    private static func list(_ names: Set<String>) -> String {
        let sorted = names.sorted { a, b in a.hasPrefix("end") != b.hasPrefix("end") ? a.hasPrefix("end") : a < b }
        return sorted.map { "'\($0)'" }.joined(separator: " or ")
    }

    /// A statement whose `{%` is at `location`.
    private mutating func parseStatement(openedAt location: TemplateLocation) throws(ChatTemplateError) -> [Node] {
        let nameLocation = current.location
        let name = try expectName()
        try enter(location)
        defer { depth -= 1 }
        switch name {
        case "if": return [try parseIf(location)]
        case "for": return [try parseFor(location)]
        case "set": return [try parseSet(location)]
        case "macro": return [try parseMacro(location)]
        case "filter":
            let filters = try parseFilterChain()
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endfilter"], opener: ("filter", location))
            try expectBlockEnd()
            return [.filterBlock(filters, body)]
        case "break", "continue":
            guard loopDepth > 0 else { throw .syntax("'\(name)' outside of a loop", at: nameLocation) }
            try expectBlockEnd()
            return [name == "break" ? .breakLoop : .continueLoop]
        case "generation":
            // transformers' {% generation %} marks assistant text; it renders its body as is.
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endgeneration"], opener: ("generation", location))
            try expectBlockEnd()
            return body
        case "include", "import", "from", "extends", "block", "call", "with", "autoescape", "do":
            throw .syntax("the '\(name)' tag is not supported", at: nameLocation)
        default:
            throw .syntax("unknown tag '\(name)'", at: nameLocation)
        }
    }

    private mutating func parseIf(_ location: TemplateLocation) throws(ChatTemplateError) -> Node {
        var branches: [(Expr, [Node])] = []
        var condition = try parseTuple()
        try expectBlockEnd()
        while true {
            let (body, end) = try parseBody(until: ["elif", "else", "endif"], opener: ("if", location))
            branches.append((condition, body))
            switch end {
            case "elif":
                condition = try parseTuple()
                try expectBlockEnd()
            case "else":
                try expectBlockEnd()
                let (elseBody, _) = try parseBody(until: ["endif"], opener: ("if", location))
                try expectBlockEnd()
                return .ifBlock(branches, elseBody: elseBody)
            default:
                try expectBlockEnd()
                return .ifBlock(branches, elseBody: [])
            }
        }
    }

    private mutating func parseFor(_ location: TemplateLocation) throws(ChatTemplateError) -> Node {
        let target = try parseAssignTarget(allowNamespace: false)
        guard skipName("in") else { throw unexpected(expected: "'in'") }
        let iterable = try parseTuple(conditional: false)
        var condition: Expr? = nil
        if skipName("if") { condition = try parseExpression() }
        if isName("recursive") { throw .syntax("recursive loops are not supported", at: current.location) }
        try expectBlockEnd()
        loopDepth += 1
        let (body, end) = try parseBody(until: ["else", "endfor"], opener: ("for", location))
        loopDepth -= 1
        var elseBody: [Node] = []
        try expectBlockEnd()
        if end == "else" {
            (elseBody, _) = try parseBody(until: ["endfor"], opener: ("for", location))
            try expectBlockEnd()
        }
        return .forLoop(ForLoop(target: target, iterable: iterable, condition: condition, body: body,
                                elseBody: elseBody, location: location))
    }

    private mutating func parseSet(_ location: TemplateLocation) throws(ChatTemplateError) -> Node {
        let target = try parseAssignTarget(allowNamespace: true)
        if skipOp("=") {
            let value = try parseTuple()
            try expectBlockEnd()
            return .set(target, value, location)
        }
        try expectBlockEnd()
        let saved = loopDepth
        loopDepth = 0
        defer { loopDepth = saved }
        let (body, _) = try parseBody(until: ["endset"], opener: ("set", location))
        try expectBlockEnd()
        return .setBlock(target, body, location)
    }

    private mutating func parseMacro(_ location: TemplateLocation) throws(ChatTemplateError) -> Node {
        let name = try expectName()
        try expectOp("(")
        var parameters: [(String, Expr?)] = []
        while !isOp(")") {
            if !parameters.isEmpty { try expectOp(",") }
            if isOp(")") { break }
            let parameter = try expectName()
            if skipOp("=") {
                parameters.append((parameter, try parseExpression()))
            } else {
                if parameters.last?.1 != nil {
                    throw .syntax("parameter '\(parameter)' without a default follows one with a default", at: current.location)
                }
                parameters.append((parameter, nil))
            }
        }
        _ = advance()
        try expectBlockEnd()
        let saved = loopDepth
        loopDepth = 0
        defer { loopDepth = saved }
        let (body, _) = try parseBody(until: ["endmacro"], opener: ("macro", location))
        _ = skipName(name)
        try expectBlockEnd()
        return .macro(Macro(name: name, parameters: parameters, body: body, location: location))
    }

    private static let reserved: Set<String> = ["true", "false", "none", "True", "False", "None"]

    private mutating func parseAssignTarget(allowNamespace: Bool) throws(ChatTemplateError) -> AssignTarget {
        let location = current.location
        if allowNamespace, case .name(let ns) = current.kind, isOp(".", next) {
            _ = advance()
            _ = advance()
            return .namespaceAttribute(ns, try expectName())
        }
        let parenthesized = skipOp("(")
        var names: [String] = []
        var trailingComma = false
        repeat {
            if parenthesized && isOp(")") { break }
            guard case .name(let n) = current.kind, !Self.reserved.contains(n) else {
                throw unexpected(expected: "a variable name to assign to")
            }
            _ = advance()
            names.append(n)
            trailingComma = isOp(",")
        } while skipOp(",") && (parenthesized || current.kind != .blockEnd && !isName("in") && !isOp("="))
        if parenthesized { try expectOp(")") }
        if names.isEmpty { throw .syntax("expected a variable name to assign to", at: location) }
        return names.count == 1 && !parenthesized && !trailingComma ? .name(names[0]) : .tuple(names)
    }

    // MARK: expressions
    //
    // Binary operators are parsed by precedence climbing, so that one level of parentheses
    // costs a handful of stack frames (templates may nest up to `maxDepth` levels).

    /// Expressions separated by commas form a tuple (here: a list).
    private mutating func parseTuple(conditional: Bool = true) throws(ChatTemplateError) -> Expr {
        let location = current.location
        let first = conditional ? try parseExpression() : try parseBinary(1)
        guard isOp(",") else { return first }
        return try parseTupleRest(first, conditional: conditional, location)
    }

    @inline(never)
    private mutating func parseTupleRest(_ first: Expr, conditional: Bool, _ location: TemplateLocation) throws(ChatTemplateError) -> Expr {
        var items = [first]
        while skipOp(",") {
            if Self.endsTuple(current.kind) { break }
            items.append(conditional ? try parseExpression() : try parseBinary(1))
        }
        return try checked(Expr(.list(items), location))
    }

    private static func endsTuple(_ kind: Token.Kind) -> Bool {
        switch kind {
        case .blockEnd, .variableEnd, .eof, .op(")"), .op("]"), .op("}"), .op("="): true
        case .name("in"), .name("if"): true
        default: false
        }
    }

    /// `x if condition else y` over a binary expression.
    private mutating func parseExpression() throws(ChatTemplateError) -> Expr {
        let e = try parseBinary(1)
        return isName("if") ? try parseConditional(e) : e
    }

    @inline(never)
    private mutating func parseConditional(_ start: Expr) throws(ChatTemplateError) -> Expr {
        var e = start
        while isName("if") {
            let location = advance().location
            let condition = try parseBinary(1)
            var otherwise: Expr? = nil
            if skipName("else") {
                try enter(location)
                otherwise = try parseExpression()
                depth -= 1
            }
            e = try checked(Expr(.conditional(condition: condition, then: e, otherwise: otherwise), location))
        }
        return e
    }

    /// Binding strength of the binary operator at the cursor: `or` 1, `and` 2, comparisons
    /// and `in` 4, `+ -` 5, `~` 6, `* / // %` 7, `**` 8 (`not` is a prefix at 3).
    private func binaryPrecedence() -> Int? {
        switch current.kind {
        case .name("or"): 1
        case .name("and"): 2
        case .name("in"): 4
        case .name("not"): isName("in", next) ? 4 : nil
        case .op("=="), .op("!="), .op("<"), .op("<="), .op(">"), .op(">="): 4
        case .op("+"), .op("-"): 5
        case .op("~"): 6
        case .op("*"), .op("/"), .op("//"), .op("%"): 7
        case .op("**"): 8
        default: nil
        }
    }

    private mutating func parseBinary(_ minPrecedence: Int) throws(ChatTemplateError) -> Expr {
        var left = isName("not") ? try parseNot() : try parseUnary()
        while let precedence = binaryPrecedence(), precedence >= minPrecedence {
            left = precedence == 4 ? try parseComparisons(left) : try parseBinaryOperator(left, precedence)
        }
        return left
    }

    @inline(never)
    private mutating func parseNot() throws(ChatTemplateError) -> Expr {
        let location = advance().location
        try enter(location)
        defer { depth -= 1 }
        return try checked(Expr(.unary(.not, try parseBinary(3)), location))
    }

    @inline(never)
    private mutating func parseBinaryOperator(_ left: Expr, _ precedence: Int) throws(ChatTemplateError) -> Expr {
        let token = advance()
        let op: BinaryOp
        switch token.kind {
        case .name("or"): return try checked(Expr(.or(left, try parseBinary(precedence + 1)), token.location))
        case .name("and"): return try checked(Expr(.and(left, try parseBinary(precedence + 1)), token.location))
        case .op(let o): op = BinaryOp(rawValue: o)!
        default: throw .syntax("expected an operator", at: token.location)
        }
        return try checked(Expr(.binary(op, left, try parseBinary(precedence + 1)), token.location))
    }

    /// `a < b <= c` is one comparison chain, as in Python.
    @inline(never)
    private mutating func parseComparisons(_ first: Expr) throws(ChatTemplateError) -> Expr {
        var rest: [(CompareOp, Expr, TemplateLocation)] = []
        while binaryPrecedence() == 4 {
            let token = advance()
            let op: CompareOp
            switch token.kind {
            case .name("in"): op = .contains
            case .name("not"):
                _ = advance()
                op = .notContains
            case .op(let o): op = CompareOp(rawValue: o)!
            default: throw .syntax("expected a comparison", at: token.location)
            }
            rest.append((op, try parseBinary(5), token.location))
        }
        return try checked(Expr(.compare(first, rest), first.location))
    }

    private mutating func parseUnary(withFilters: Bool = true) throws(ChatTemplateError) -> Expr {
        let location = current.location
        try enter(location)
        defer { depth -= 1 }
        var e: Expr
        if isOp("-") || isOp("+") {
            e = try parseSign()
        } else {
            e = try parsePrimary()
        }
        e = try parsePostfix(e)
        if withFilters { e = try parseFilterExpression(e) }
        return e
    }

    @inline(never)
    private mutating func parseSign() throws(ChatTemplateError) -> Expr {
        let token = advance()
        let op: UnaryOp = token.kind == .op("-") ? .negate : .plus
        return try checked(Expr(.unary(op, try parseUnary(withFilters: false)), token.location))
    }

    private mutating func parsePrimary() throws(ChatTemplateError) -> Expr {
        switch current.kind {
        case .name, .string, .integer, .float: return try parseAtom()
        case .op("("): return try parseParenthesized()
        case .op("["): return try parseListLiteral()
        case .op("{"): return try parseDictLiteral()
        default: throw unexpected(expected: "an expression")
        }
    }

    @inline(never)
    private mutating func parseAtom() throws(ChatTemplateError) -> Expr {
        let token = advance()
        let location = token.location
        switch token.kind {
        case .name(let n):
            switch n {
            case "true", "True": return Expr(.literal(.bool(true)), location)
            case "false", "False": return Expr(.literal(.bool(false)), location)
            case "none", "None": return Expr(.literal(.none), location)
            default: return Expr(.name(n), location)
            }
        case .string(var s):
            // Adjacent string literals are concatenated.
            while case .string(let more) = current.kind {
                s += more
                _ = advance()
            }
            return Expr(.literal(.string(s)), location)
        case .integer(let i): return Expr(.literal(.int(i)), location)
        case .float(let d): return Expr(.literal(.double(d)), location)
        default: throw .syntax("expected an expression", at: location)
        }
    }

    @inline(never)
    private mutating func parseParenthesized() throws(ChatTemplateError) -> Expr {
        let location = advance().location
        if skipOp(")") { return Expr(.list([]), location) }
        let e = try parseTuple()
        try expectOp(")")
        return e
    }

    @inline(never)
    private mutating func parseListLiteral() throws(ChatTemplateError) -> Expr {
        let location = advance().location
        var items: [Expr] = []
        while !isOp("]") {
            if !items.isEmpty { try expectOp(",") }
            if isOp("]") { break }
            items.append(try parseExpression())
        }
        _ = advance()
        return try checked(Expr(.list(items), location))
    }

    @inline(never)
    private mutating func parseDictLiteral() throws(ChatTemplateError) -> Expr {
        let location = advance().location
        var pairs: [(Expr, Expr)] = []
        while !isOp("}") {
            if !pairs.isEmpty { try expectOp(",") }
            if isOp("}") { break }
            let key = try parseExpression()
            try expectOp(":")
            pairs.append((key, try parseExpression()))
        }
        _ = advance()
        return try checked(Expr(.dict(pairs), location))
    }

    private mutating func parsePostfix(_ start: Expr) throws(ChatTemplateError) -> Expr {
        var e = start
        while true {
            if isOp(".") {
                e = try parseAttribute(e)
            } else if isOp("[") {
                e = try parseSubscript(e)
            } else if isOp("(") {
                e = try parseCall(e)
            } else {
                return e
            }
        }
    }

    @inline(never)
    private mutating func parseAttribute(_ target: Expr) throws(ChatTemplateError) -> Expr {
        let location = advance().location
        switch current.kind {
        case .name(let n):
            _ = advance()
            return try checked(Expr(.attribute(target, n), location))
        case .integer(let i):
            _ = advance()
            return try checked(Expr(.index(target, Expr(.literal(.int(i)), location)), location))
        default:
            throw unexpected(expected: "an attribute name after '.'")
        }
    }

    @inline(never)
    private mutating func parseCall(_ callee: Expr) throws(ChatTemplateError) -> Expr {
        let location = current.location
        return try checked(Expr(.call(callee, try parseCallArguments()), location))
    }

    @inline(never)
    private mutating func parseSubscript(_ target: Expr) throws(ChatTemplateError) -> Expr {
        let location = advance().location
        var start: Expr? = nil
        if !isOp(":") {
            start = try parseExpression()
            if skipOp("]") { return try checked(Expr(.index(target, start!), location)) }
            if isOp(",") { throw .syntax("subscripts with several indices are not supported", at: current.location) }
        }
        try expectOp(":")
        var stop: Expr? = nil
        var step: Expr? = nil
        if !isOp("]") && !isOp(":") { stop = try parseExpression() }
        if skipOp(":") && !isOp("]") { step = try parseExpression() }
        try expectOp("]")
        return try checked(Expr(.slice(target, start: start, stop: stop, step: step), location))
    }

    private mutating func parseCallArguments() throws(ChatTemplateError) -> Arguments {
        try expectOp("(")
        var arguments = Arguments()
        var first = true
        while !isOp(")") {
            if !first { try expectOp(",") }
            first = false
            if isOp(")") { break }
            if isOp("*") || isOp("**") {
                throw .syntax("'*args' and '**kwargs' in calls are not supported", at: current.location)
            }
            if case .name(let n) = current.kind, isOp("=", next) {
                _ = advance()
                _ = advance()
                arguments.keyword.append((n, try parseExpression()))
            } else {
                if !arguments.keyword.isEmpty {
                    throw .syntax("positional argument after keyword arguments", at: current.location)
                }
                arguments.positional.append(try parseExpression())
            }
        }
        _ = advance()
        return arguments
    }

    private mutating func parseFilterExpression(_ start: Expr) throws(ChatTemplateError) -> Expr {
        var e = start
        while true {
            if isOp("|") {
                e = try parseFilterApplication(e)
            } else if isName("is") {
                e = try parseTest(e)
            } else if isOp("(") {
                e = try parseCall(e)
            } else {
                return e
            }
        }
    }

    @inline(never)
    private mutating func parseFilterApplication(_ target: Expr) throws(ChatTemplateError) -> Expr {
        _ = advance()
        return try checked(Expr(.filter(target, try parseFilter()), target.location))
    }

    @inline(never)
    private mutating func parseTest(_ target: Expr) throws(ChatTemplateError) -> Expr {
        let location = advance().location
        let negated = skipName("not")
        let testLocation = current.location
        let name = try expectName()
        guard Builtins.testNames.contains(name) else { throw .unknownTest(name, at: testLocation) }
        var arguments = Arguments()
        if isOp("(") {
            arguments = try parseCallArguments()
        } else if Self.startsTestArgument(current.kind) {
            // Jinja lets a test take one argument without parentheses: `x is divisibleby 3`.
            if isName("is") { throw .syntax("tests cannot be chained with 'is'", at: current.location) }
            arguments.positional = [try parsePostfix(try parsePrimary())]
        }
        let test = FilterCall(name: name, arguments: arguments, location: testLocation)
        return try checked(Expr(.test(target, test, negated: negated), location))
    }

    private static func startsTestArgument(_ kind: Token.Kind) -> Bool {
        switch kind {
        case .name(let n): !["else", "or", "and"].contains(n)
        case .string, .integer, .float, .op("("), .op("["), .op("{"): true
        default: false
        }
    }

    private mutating func parseFilter() throws(ChatTemplateError) -> FilterCall {
        let location = current.location
        let name = try expectName()
        guard Builtins.filterNames.contains(name) else { throw .unknownFilter(name, at: location) }
        let arguments = isOp("(") ? try parseCallArguments() : Arguments()
        return FilterCall(name: name, arguments: arguments, location: location)
    }

    private mutating func parseFilterChain() throws(ChatTemplateError) -> [FilterCall] {
        var filters = [try parseFilter()]
        while skipOp("|") { filters.append(try parseFilter()) }
        return filters
    }
}
