/// Character classes the pre-tokenizers test, per Unicode scalar.
///
/// llama.cpp classifies code points with tables generated from Unicode 15.1. Swift's
/// `Unicode.Scalar.Properties` carries a newer Unicode version, so scalars assigned after
/// 15.1 are reported as unassigned here: that is what llama.cpp sees for them, and
/// token ids must agree. For every scalar assigned up to 15.1 the general category and
/// the White_Space property agree with llama.cpp's tables (checked over all of U+0000…U+10FFFF).
struct CodepointClass: OptionSet, Sendable {
    let rawValue: UInt16

    static let undefined   = CodepointClass(rawValue: 1 << 0)
    static let number      = CodepointClass(rawValue: 1 << 1)  // \p{N}
    static let letter      = CodepointClass(rawValue: 1 << 2)  // \p{L}
    static let separator   = CodepointClass(rawValue: 1 << 3)  // \p{Z}
    static let mark        = CodepointClass(rawValue: 1 << 4)  // \p{M}
    static let punctuation = CodepointClass(rawValue: 1 << 5)  // \p{P}
    static let symbol      = CodepointClass(rawValue: 1 << 6)  // \p{S}
    static let control     = CodepointClass(rawValue: 1 << 7)  // \p{C}
    static let whitespace  = CodepointClass(rawValue: 1 << 8)  // \s (White_Space)

    /// Positions outside the span being split have no class at all (not even `undefined`).
    static let outside: CodepointClass = []

    var isLetter: Bool { contains(.letter) }
    var isNumber: Bool { contains(.number) }
    var isWhitespace: Bool { contains(.whitespace) }
    /// True for every real code point; false only for `outside`.
    var exists: Bool { rawValue != 0 }

    /// Newest Unicode version llama.cpp's tables know.
    private static let newestKnown = (major: 15, minor: 1)

    static func compute(_ value: UInt32) -> CodepointClass {
        guard let scalar = Unicode.Scalar(value) else {
            // Surrogate code points (never in a Swift String) are category Cs.
            return value < 0x11_0000 ? .control : .undefined
        }
        let props = scalar.properties
        var result: CodepointClass
        switch props.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber:
            result = .number
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            result = .letter
        case .spaceSeparator, .lineSeparator, .paragraphSeparator:
            result = .separator
        case .nonspacingMark, .spacingMark, .enclosingMark:
            result = .mark
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            result = .punctuation
        case .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
            result = .symbol
        case .control, .format, .surrogate, .privateUse:
            result = .control
        case .unassigned:
            result = .undefined
        @unknown default:
            result = .undefined
        }
        if result != .undefined, let age = props.age,
           age.major > newestKnown.major || (age.major == newestKnown.major && age.minor > newestKnown.minor) {
            result = .undefined
        }
        if props.isWhitespace { result.insert(.whitespace) }
        return result
    }

    /// Classes of the Basic Multilingual Plane, computed once on first use.
    private static let bmp: [UInt16] = {
        var table = [UInt16](repeating: 0, count: 0x1_0000)
        for v in 0..<0x1_0000 { table[v] = compute(UInt32(v)).rawValue }
        return table
    }()

    @inline(__always)
    static func of(_ value: UInt32) -> CodepointClass {
        if value < 0x1_0000 { return CodepointClass(rawValue: bmp[Int(value)]) }
        return compute(value)
    }
}

/// UTF-8 helpers matching llama.cpp's (lenient) decoder.
enum UTF8Scan {
    /// Sequence length announced by a lead byte (continuation bytes count as 1).
    @inline(__always)
    static func sequenceLength(lead: UInt8) -> Int {
        switch lead >> 4 {
        case 0xC, 0xD: return 2
        case 0xE: return 3
        case 0xF: return 4
        default: return 1
        }
    }

    /// Decodes code points the way llama.cpp does: structurally checked sequences only
    /// (no overlong or surrogate checks); an invalid byte becomes U+FFFD and decoding
    /// resumes at the next byte. `starts` receives the byte offset of each code point.
    static func decode(_ bytes: UnsafeBufferPointer<UInt8>, into cps: inout [UInt32], starts: inout [Int32]) {
        let n = bytes.count
        var i = 0
        cps.reserveCapacity(n)
        starts.reserveCapacity(n + 1)
        while i < n {
            let b0 = bytes[i]
            starts.append(Int32(i))
            if b0 < 0x80 { cps.append(UInt32(b0)); i += 1; continue }
            @inline(__always) func cont(_ k: Int) -> Bool { i + k < n && bytes[i + k] & 0xC0 == 0x80 }
            if b0 & 0x40 == 0 {
                cps.append(0xFFFD); i += 1
            } else if b0 & 0x20 == 0 {
                if cont(1) {
                    cps.append(UInt32(b0 & 0x1F) << 6 | UInt32(bytes[i + 1] & 0x3F)); i += 2
                } else { cps.append(0xFFFD); i += 1 }
            } else if b0 & 0x10 == 0 {
                if cont(1) && cont(2) {
                    cps.append(UInt32(b0 & 0x0F) << 12 | UInt32(bytes[i + 1] & 0x3F) << 6 | UInt32(bytes[i + 2] & 0x3F)); i += 3
                } else { cps.append(0xFFFD); i += 1 }
            } else if b0 & 0x08 == 0 {
                if cont(1) && cont(2) && cont(3) {
                    cps.append(UInt32(b0 & 0x07) << 18 | UInt32(bytes[i + 1] & 0x3F) << 12
                               | UInt32(bytes[i + 2] & 0x3F) << 6 | UInt32(bytes[i + 3] & 0x3F)); i += 4
                } else { cps.append(0xFFFD); i += 1 }
            } else {
                cps.append(0xFFFD); i += 1
            }
        }
        starts.append(Int32(n))
    }

    static func decode(_ bytes: [UInt8]) -> [UInt32] {
        var cps: [UInt32] = []
        var starts: [Int32] = []
        bytes.withUnsafeBufferPointer { decode($0, into: &cps, starts: &starts) }
        return cps
    }

    static func append(_ cp: UInt32, to out: inout [UInt8]) {
        switch cp {
        case 0..<0x80:
            out.append(UInt8(cp))
        case 0x80..<0x800:
            out.append(0xC0 | UInt8(cp >> 6))
            out.append(0x80 | UInt8(cp & 0x3F))
        case 0x800..<0x1_0000:
            out.append(0xE0 | UInt8(cp >> 12))
            out.append(0x80 | UInt8((cp >> 6) & 0x3F))
            out.append(0x80 | UInt8(cp & 0x3F))
        default:
            out.append(0xF0 | UInt8((cp >> 18) & 0x07))
            out.append(0x80 | UInt8((cp >> 12) & 0x3F))
            out.append(0x80 | UInt8((cp >> 6) & 0x3F))
            out.append(0x80 | UInt8(cp & 0x3F))
        }
    }
}
