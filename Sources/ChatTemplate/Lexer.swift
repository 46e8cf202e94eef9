/// Splits a template into text and the tokens inside `{{ }}` and `{% %}` tags, applying
/// Jinja's whitespace rules on the way: `-` markers strip all whitespace beside a tag,
/// `trim_blocks` drops the first newline after a block or comment tag, `lstrip_blocks` drops
/// the spaces and tabs between the start of a line and a block or comment tag, `+` markers
/// turn both off for one tag.
struct Token {
    enum Kind: Equatable {
        case text(String)
        case variableBegin, variableEnd, blockBegin, blockEnd
        case name(String)
        case string(String)
        case integer(Int)
        case float(Double)
        case op(String)
        case eof
    }

    var kind: Kind
    var location: TemplateLocation
}

struct Lexer {
    private let src: [Unicode.Scalar]
    private let options: ChatTemplate.Options
    private var lineStarts: [Int] = [0]
    private var pos = 0
    private var tokens: [Token] = []

    init(_ source: String, options: ChatTemplate.Options) {
        // Jinja normalizes \r\n and \r to \n and drops one trailing newline.
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(source.unicodeScalars.count)
        var lastWasCR = false
        for s in source.unicodeScalars {
            if s == "\r" {
                scalars.append("\n")
                lastWasCR = true
                continue
            }
            if s == "\n" && lastWasCR {
                lastWasCR = false
                continue
            }
            lastWasCR = false
            scalars.append(s)
        }
        if !options.keepTrailingNewline && scalars.last == "\n" { scalars.removeLast() }
        self.src = scalars
        self.options = options
        for (i, s) in scalars.enumerated() where s == "\n" { lineStarts.append(i + 1) }
    }

    func location(_ offset: Int) -> TemplateLocation {
        var lo = 0
        var hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return TemplateLocation(line: lo + 1, column: offset - lineStarts[lo] + 1)
    }

    private func syntax(_ message: String, at offset: Int) -> ChatTemplateError {
        .syntax(message, at: location(offset))
    }

    private func at(_ offset: Int, _ text: String) -> Bool {
        var i = offset
        for s in text.unicodeScalars {
            guard i < src.count, src[i] == s else { return false }
            i += 1
        }
        return true
    }

    private func skipWhitespace(_ i: inout Int) {
        while i < src.count && isSpace(src[i]) { i += 1 }
    }

    mutating func tokenize() throws(ChatTemplateError) -> [Token] {
        var textStart = 0
        pos = 0
        while true {
            guard let open = nextOpener(from: pos) else {
                emitText(textStart, src.count)
                break
            }
            let kind = src[open + 1]
            let sign: Unicode.Scalar? = open + 2 < src.count && (src[open + 2] == "-" || src[open + 2] == "+") ? src[open + 2] : nil
            var textEnd = open
            if sign == "-" {
                while textEnd > textStart && isSpace(src[textEnd - 1]) { textEnd -= 1 }
            } else if sign != "+" && kind != "{" && options.lstripBlocks {
                var lineStart = textEnd
                while lineStart > textStart && src[lineStart - 1] != "\n" { lineStart -= 1 }
                let atLineStart = lineStart > textStart || textStart == 0 || src[textStart - 1] == "\n"
                if atLineStart && (lineStart..<textEnd).allSatisfy({ isSpace(src[$0]) }) { textEnd = lineStart }
            }
            emitText(textStart, textEnd)
            pos = open + (sign == nil ? 2 : 3)
            switch kind {
            case "#": try comment(openedAt: open)
            case "{": try tag(openedAt: open, block: false)
            default:
                if try !rawBlock(openedAt: open) { try tag(openedAt: open, block: true) }
            }
            textStart = pos
        }
        tokens.append(Token(kind: .eof, location: location(src.count)))
        return tokens
    }

    private func nextOpener(from start: Int) -> Int? {
        var i = start
        while i + 1 < src.count {
            if src[i] == "{" && (src[i + 1] == "{" || src[i + 1] == "%" || src[i + 1] == "#") { return i }
            i += 1
        }
        return nil
    }

    private mutating func emitText(_ start: Int, _ end: Int) {
        guard start < end else { return }
        tokens.append(Token(kind: .text(string(src[start..<end])), location: location(start)))
    }

    /// After a block or comment end: `-` strips all following whitespace, `+` nothing,
    /// otherwise `trim_blocks` drops one newline.
    private mutating func afterBlockEnd(sign: Unicode.Scalar?) {
        if sign == "-" {
            skipWhitespace(&pos)
        } else if sign == nil && options.trimBlocks && pos < src.count && src[pos] == "\n" {
            pos += 1
        }
    }

    private mutating func comment(openedAt open: Int) throws(ChatTemplateError) {
        var i = pos
        while i + 1 < src.count && !(src[i] == "#" && src[i + 1] == "}") { i += 1 }
        guard i + 1 < src.count else { throw syntax("unclosed comment: expected '#}'", at: open) }
        let sign: Unicode.Scalar? = i > pos && (src[i - 1] == "-" || src[i - 1] == "+") ? src[i - 1] : nil
        pos = i + 2
        afterBlockEnd(sign: sign)
    }

    /// `{% raw %}...{% endraw %}`: the content is text. Returns false when the tag is not `raw`.
    private mutating func rawBlock(openedAt open: Int) throws(ChatTemplateError) -> Bool {
        var i = pos
        skipWhitespace(&i)
        guard at(i, "raw"), i + 3 < src.count, !isIdentifierPart(src[i + 3]) else { return false }
        i += 3
        skipWhitespace(&i)
        var endSign: Unicode.Scalar? = nil
        if i < src.count && (src[i] == "-" || src[i] == "+") {
            endSign = src[i]
            i += 1
        }
        guard at(i, "%}") else { return false }
        pos = i + 2
        if endSign == "-" { skipWhitespace(&pos) }
        let contentStart = pos
        // Find {%[-+]? endraw [-+]?%}.
        var j = pos
        while let tagStart = nextOpener(from: j) {
            j = tagStart + 2
            guard src[tagStart + 1] == "%" else { continue }
            var k = tagStart + 2
            let sign: Unicode.Scalar? = k < src.count && (src[k] == "-" || src[k] == "+") ? src[k] : nil
            if sign != nil { k += 1 }
            skipWhitespace(&k)
            guard at(k, "endraw"), k + 6 <= src.count else { continue }
            k += 6
            skipWhitespace(&k)
            var closeSign: Unicode.Scalar? = nil
            if k < src.count && (src[k] == "-" || src[k] == "+") {
                closeSign = src[k]
                k += 1
            }
            guard at(k, "%}") else { continue }
            var contentEnd = tagStart
            if sign == "-" {
                while contentEnd > contentStart && isSpace(src[contentEnd - 1]) { contentEnd -= 1 }
            } else if sign != "+" && options.lstripBlocks {
                var lineStart = contentEnd
                while lineStart > contentStart && src[lineStart - 1] != "\n" { lineStart -= 1 }
                let atLineStart = lineStart > contentStart || src[contentStart - 1] == "\n"
                if atLineStart && (lineStart..<contentEnd).allSatisfy({ isSpace(src[$0]) }) { contentEnd = lineStart }
            }
            emitText(contentStart, contentEnd)
            pos = k + 2
            afterBlockEnd(sign: closeSign)
            return true
        }
        throw syntax("unclosed 'raw' block: expected '{% endraw %}'", at: open)
    }

    private mutating func tag(openedAt open: Int, block: Bool) throws(ChatTemplateError) {
        tokens.append(Token(kind: block ? .blockBegin : .variableBegin, location: location(open)))
        let close: Unicode.Scalar = block ? "%" : "}"
        let endName = block ? "'%}'" : "'}}'"
        var brackets: [(Unicode.Scalar, Int)] = []
        while true {
            skipWhitespace(&pos)
            guard pos < src.count else {
                throw syntax("unexpected end of template inside the tag opened at \(location(open)): expected \(endName)", at: pos)
            }
            let c = src[pos]
            if brackets.isEmpty {
                let start = pos
                if (c == "-" || (c == "+" && block)) && pos + 2 < src.count && src[pos + 1] == close && src[pos + 2] == "}" {
                    pos += 3
                    tokens.append(Token(kind: block ? .blockEnd : .variableEnd, location: location(start)))
                    if block { afterBlockEnd(sign: c) } else if c == "-" { skipWhitespace(&pos) }
                    return
                }
                if c == close && pos + 1 < src.count && src[pos + 1] == "}" {
                    pos += 2
                    tokens.append(Token(kind: block ? .blockEnd : .variableEnd, location: location(start)))
                    if block { afterBlockEnd(sign: nil) }
                    return
                }
            }
            try token(&brackets)
        }
    }

    private static let operators2: Set<String> = ["//", "**", "==", "!=", "<=", ">="]
    private static let operators1: Set<Unicode.Scalar> = [
        "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", "<", ">", "=", ".", ":", "|", ",", ";",
    ]

    private mutating func token(_ brackets: inout [(Unicode.Scalar, Int)]) throws(ChatTemplateError) {
        let start = pos
        let c = src[pos]
        let loc = location(start)
        if isDigit(c) {
            tokens.append(Token(kind: try number(), location: loc))
        } else if isIdentifierStart(c) {
            while pos < src.count && isIdentifierPart(src[pos]) { pos += 1 }
            tokens.append(Token(kind: .name(string(src[start..<pos])), location: loc))
        } else if c == "'" || c == "\"" {
            tokens.append(Token(kind: .string(try stringLiteral()), location: loc))
        } else if pos + 1 < src.count, case let two = string(src[pos...pos + 1]), Self.operators2.contains(two) {
            pos += 2
            tokens.append(Token(kind: .op(two), location: loc))
        } else if Self.operators1.contains(c) {
            pos += 1
            switch c {
            case "(", "[", "{": brackets.append((c, start))
            case ")", "]", "}":
                let expected: Unicode.Scalar = c == ")" ? "(" : c == "]" ? "[" : "{"
                guard let last = brackets.last else { throw syntax("unexpected '\(c)'", at: start) }
                guard last.0 == expected else {
                    throw syntax("unexpected '\(c)': the '\(last.0)' at \(location(last.1)) is not closed", at: start)
                }
                brackets.removeLast()
            default: break
            }
            tokens.append(Token(kind: .op(String(c)), location: loc))
        } else {
            throw syntax("unexpected character '\(c)'", at: start)
        }
    }

    private mutating func digits() -> String {
        var out = ""
        while pos < src.count {
            if isDigit(src[pos]) {
                out.unicodeScalars.append(src[pos])
                pos += 1
            } else if src[pos] == "_" && pos + 1 < src.count && isDigit(src[pos + 1]) && !out.isEmpty {
                pos += 1
            } else {
                break
            }
        }
        return out
    }

    private mutating func number() throws(ChatTemplateError) -> Token.Kind {
        let start = pos
        // 0x / 0o / 0b integers.
        if src[pos] == "0" && pos + 2 < src.count, let radix = ["x": 16, "X": 16, "o": 8, "O": 8, "b": 2, "B": 2][src[pos + 1]] {
            var i = pos + 2
            var text = ""
            while i < src.count {
                if src[i] == "_" { i += 1; continue }
                guard src[i].isASCII, Int(String(src[i]), radix: radix) != nil else { break }
                text.unicodeScalars.append(src[i])
                i += 1
            }
            if !text.isEmpty {
                pos = i
                guard let v = Int(text, radix: radix) else { throw syntax("integer literal too large", at: start) }
                return .integer(v)
            }
        }
        var text = digits()
        var isFloat = false
        let afterDot = start > 0 && src[start - 1] == "."
        if !afterDot {
            if pos + 1 < src.count && src[pos] == "." && isDigit(src[pos + 1]) {
                pos += 1
                text += "." + digits()
                isFloat = true
            }
            if pos < src.count && (src[pos] == "e" || src[pos] == "E") {
                var i = pos + 1
                var exponent = "e"
                if i < src.count && (src[i] == "+" || src[i] == "-") {
                    exponent.unicodeScalars.append(src[i])
                    i += 1
                }
                if i < src.count && isDigit(src[i]) {
                    pos = i
                    text += exponent + digits()
                    isFloat = true
                }
            }
        }
        if isFloat {
            guard let v = Double(text) else { throw syntax("invalid number '\(text)'", at: start) }
            return .float(v)
        }
        guard let v = Int(text) else { throw syntax("integer literal '\(text)' is too large", at: start) }
        return .integer(v)
    }

    /// A quoted string with Python's escapes (\n, \t, \xNN, \uNNNN, \UNNNNNNNN, octal, ...).
    private mutating func stringLiteral() throws(ChatTemplateError) -> String {
        let start = pos
        let quote = src[pos]
        pos += 1
        var out = String.UnicodeScalarView()
        while true {
            guard pos < src.count else { throw syntax("unterminated string literal", at: start) }
            let c = src[pos]
            pos += 1
            if c == quote { break }
            guard c == "\\" else {
                out.append(c)
                continue
            }
            guard pos < src.count else { throw syntax("unterminated string literal", at: start) }
            let e = src[pos]
            pos += 1
            switch e {
            case "\n": break
            case "\\", "'", "\"": out.append(e)
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "v": out.append("\u{0B}")
            case "0"..."7":
                var value = Int(e.value - 48)
                var n = 1
                while n < 3 && pos < src.count && ("0"..."7").contains(src[pos]) {
                    value = value * 8 + Int(src[pos].value - 48)
                    pos += 1
                    n += 1
                }
                out.append(Unicode.Scalar(UInt32(value))!)
            case "x", "u", "U":
                let count = e == "x" ? 2 : e == "u" ? 4 : 8
                guard pos + count <= src.count, let value = UInt32(string(src[pos..<pos + count]), radix: 16),
                      let scalar = Unicode.Scalar(value)
                else { throw syntax("invalid \\\(e) escape in string literal", at: pos - 2) }
                pos += count
                out.append(scalar)
            default:
                out.append("\\")
                out.append(e)
            }
        }
        return String(out)
    }
}

func string<C: Collection>(_ scalars: C) -> String where C.Element == Unicode.Scalar {
    var view = String.UnicodeScalarView()
    view.append(contentsOf: scalars)
    return String(view)
}

/// Python's `str.isspace()` set: Unicode White_Space plus the ASCII separators 0x1C-0x1F.
func isSpace(_ s: Unicode.Scalar) -> Bool {
    s.properties.isWhitespace || (0x1C...0x1F).contains(s.value)
}

private func isDigit(_ s: Unicode.Scalar) -> Bool { ("0"..."9").contains(s) }

private func isIdentifierStart(_ s: Unicode.Scalar) -> Bool {
    s == "_" || ("a"..."z").contains(s) || ("A"..."Z").contains(s) || (!s.isASCII && s.properties.isXIDStart)
}

private func isIdentifierPart(_ s: Unicode.Scalar) -> Bool {
    isIdentifierStart(s) || isDigit(s) || (!s.isASCII && s.properties.isXIDContinue)
}
