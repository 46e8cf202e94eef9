/// Python `str` operations on code points, as chat templates call them (`.strip()`,
/// `.split()`, `.startswith()`, ...).
enum PythonString {
    typealias Scalars = [Unicode.Scalar]

    static func strip(_ s: String, _ chars: String?, left: Bool, right: Bool) -> String {
        let scalars = Array(s.unicodeScalars)
        let set = chars.map { Set($0.unicodeScalars) }
        func strippable(_ c: Unicode.Scalar) -> Bool { set?.contains(c) ?? isSpace(c) }
        var lo = 0
        var hi = scalars.count
        if left { while lo < hi && strippable(scalars[lo]) { lo += 1 } }
        if right { while hi > lo && strippable(scalars[hi - 1]) { hi -= 1 } }
        return string(scalars[lo..<hi])
    }

    /// `str.split(sep, maxsplit)`; `sep == nil` splits on runs of whitespace and drops empty
    /// parts.
    static func split(_ s: String, _ sep: String?, _ maxSplit: Int) -> [String] {
        let c = Array(s.unicodeScalars)
        var parts: [String] = []
        guard let sep else {
            var i = 0
            while true {
                while i < c.count && isSpace(c[i]) { i += 1 }
                if i >= c.count { break }
                if maxSplit >= 0 && parts.count == maxSplit {
                    var end = c.count
                    while end > i && isSpace(c[end - 1]) { end -= 1 }
                    parts.append(string(c[i..<end]))
                    break
                }
                var j = i
                while j < c.count && !isSpace(c[j]) { j += 1 }
                parts.append(string(c[i..<j]))
                i = j
            }
            return parts
        }
        let needle = Array(sep.unicodeScalars)
        var start = 0
        while maxSplit < 0 || parts.count < maxSplit, let at = find(c, needle, from: start) {
            parts.append(string(c[start..<at]))
            start = at + needle.count
        }
        parts.append(string(c[start...]))
        return parts
    }

    /// `str.rsplit(sep, maxsplit)`.
    static func rsplit(_ s: String, _ sep: String?, _ maxSplit: Int) -> [String] {
        if maxSplit < 0 { return split(s, sep, maxSplit) }
        let c = Array(s.unicodeScalars)
        var parts: [String] = []
        guard let sep else {
            var i = c.count
            while true {
                while i > 0 && isSpace(c[i - 1]) { i -= 1 }
                if i <= 0 { break }
                if parts.count == maxSplit {
                    var start = 0
                    while start < i && isSpace(c[start]) { start += 1 }
                    parts.append(string(c[start..<i]))
                    break
                }
                var j = i
                while j > 0 && !isSpace(c[j - 1]) { j -= 1 }
                parts.append(string(c[j..<i]))
                i = j
            }
            return parts.reversed()
        }
        let needle = Array(sep.unicodeScalars)
        var end = c.count
        while parts.count < maxSplit, end >= needle.count {
            var at = end - needle.count
            while at >= 0 && !c[at..<(at + needle.count)].elementsEqual(needle) { at -= 1 }
            guard at >= 0 else { break }
            parts.append(string(c[(at + needle.count)..<end]))
            end = at
        }
        parts.append(string(c[..<end]))
        return parts.reversed()
    }

    /// `str.replace(old, new, count)`, or nil when the result would be longer than `limit`
    /// UTF-8 bytes.
    static func replace(_ s: String, _ old: String, _ new: String, _ count: Int, limit: Int) -> String? {
        let c = Array(s.unicodeScalars)
        let needle = Array(old.unicodeScalars)
        var occurrences = 0
        if needle.isEmpty {
            occurrences = count < 0 ? c.count + 1 : min(count, c.count + 1)
        } else {
            var from = 0
            while count < 0 || occurrences < count, let at = find(c, needle, from: from) {
                occurrences += 1
                from = at + needle.count
            }
        }
        let growth = new.utf8.count - old.utf8.count
        guard s.utf8.count + occurrences * growth <= limit else { return nil }
        var out = String.UnicodeScalarView()
        var replaced = 0
        var i = 0
        if needle.isEmpty {
            while count < 0 || replaced < count {
                out.append(contentsOf: new.unicodeScalars)
                replaced += 1
                guard i < c.count else { return String(out) }
                out.append(c[i])
                i += 1
            }
            out.append(contentsOf: c[i...])
            return String(out)
        }
        while count < 0 || replaced < count, let at = find(c, needle, from: i) {
            out.append(contentsOf: c[i..<at])
            out.append(contentsOf: new.unicodeScalars)
            i = at + needle.count
            replaced += 1
        }
        out.append(contentsOf: c[i...])
        return String(out)
    }

    /// Python's line boundaries: \n \r \r\n \v \f \x1c \x1d \x1e \x85 \u2028 \u2029.
    static func splitLines(_ s: String, keepEnds: Bool = false) -> [String] {
        let c = Array(s.unicodeScalars)
        let breaks: Set<UInt32> = [0x0A, 0x0D, 0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029]
        var lines: [String] = []
        var start = 0
        var i = 0
        while i < c.count {
            if breaks.contains(c[i].value) {
                var end = i + 1
                if c[i] == "\r" && end < c.count && c[end] == "\n" { end += 1 }
                lines.append(string(c[start..<(keepEnds ? end : i)]))
                start = end
                i = end
            } else {
                i += 1
            }
        }
        if start < c.count { lines.append(string(c[start...])) }
        return lines
    }

    static func title(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for c in s.unicodeScalars {
            out += previousCased ? c.properties.lowercaseMapping : c.properties.titlecaseMapping
            previousCased = c.properties.isCased
        }
        return out
    }

    static func capitalize(_ s: String) -> String {
        guard let first = s.unicodeScalars.first else { return s }
        return first.properties.titlecaseMapping + string(s.unicodeScalars.dropFirst()).lowercased()
    }

    /// Jinja's `title` filter: upper-cases the first letter after '-', whitespace or an
    /// opening bracket, lower-cases the rest.
    static func jinjaTitle(_ s: String) -> String {
        var out = ""
        var atStart = true
        for c in s.unicodeScalars {
            let separator = c == "-" || c == "(" || c == "{" || c == "[" || c == "<" || isSpace(c)
            if separator {
                out.unicodeScalars.append(c)
                atStart = true
            } else {
                out += atStart ? c.properties.uppercaseMapping : c.properties.lowercaseMapping
                atStart = false
            }
        }
        return out
    }

    static func isLower(_ s: String) -> Bool {
        var cased = false
        for c in s.unicodeScalars where c.properties.isCased {
            if c.properties.changesWhenLowercased { return false }
            cased = true
        }
        return cased
    }

    static func isUpper(_ s: String) -> Bool {
        var cased = false
        for c in s.unicodeScalars where c.properties.isCased {
            if c.properties.changesWhenUppercased { return false }
            cased = true
        }
        return cased
    }

    static func isDigit(_ c: Unicode.Scalar) -> Bool {
        c.properties.numericType == .decimal || c.properties.numericType == .digit
    }

    static func isAlpha(_ c: Unicode.Scalar) -> Bool { c.properties.isAlphabetic }

    static func center(_ s: String, _ width: Int) -> String {
        let n = s.unicodeScalars.count
        guard width > n else { return s }
        let pad = width - n
        let left = pad / 2 + (pad & width & 1)
        return String(repeating: " ", count: left) + s + String(repeating: " ", count: pad - left)
    }

    /// Python's `int(text)`: surrounding whitespace, a sign, digits with single underscores.
    static func parseInt(_ text: String, base: Int = 10) -> Int? {
        var s = strip(text, nil, left: true, right: true)
        var negative = false
        if s.hasPrefix("-") || s.hasPrefix("+") {
            negative = s.hasPrefix("-")
            s.removeFirst()
        }
        let lower = s.lowercased()
        if base == 16 && lower.hasPrefix("0x") || base == 8 && lower.hasPrefix("0o") || base == 2 && lower.hasPrefix("0b") {
            s.removeFirst(2)
            if s.hasPrefix("_") { s.removeFirst() }
        }
        guard !s.isEmpty, !s.hasPrefix("_"), !s.hasSuffix("_"), !s.contains("__") else { return nil }
        guard let magnitude = Int(s.replacingUnderscores(), radix: base) else { return nil }
        return negative ? -magnitude : magnitude
    }

    /// Python's `float(text)`.
    static func parseDouble(_ text: String) -> Double? {
        let s = strip(text, nil, left: true, right: true)
        let lower = s.lowercased()
        guard !s.isEmpty, !lower.contains("x"), !lower.contains("p"), !s.hasPrefix("_"), !s.hasSuffix("_"),
              !s.contains("__")
        else { return nil }
        switch lower {
        case "inf", "+inf", "infinity", "+infinity": return .infinity
        case "-inf", "-infinity": return -.infinity
        case "nan", "+nan", "-nan": return .nan
        default: return Double(s.replacingUnderscores())
        }
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String {
        String(unicodeScalars.filter { $0 != "_" }.map(Character.init))
    }
}
