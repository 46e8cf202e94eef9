/// Every tensor type llama.cpp's ggml defines for GGUF files, with its block geometry.
///
/// Compute support is a separate question (see the Kernels module); this table lets any
/// real file be opened, validated and described. Ids 4, 5, 31–33 and 36–38 were removed
/// from ggml and are rejected. Sizes checked against ggml-common.h (ggml with types up to 42).
public enum GGMLType: UInt32, CaseIterable, Sendable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q8_1 = 9
    case q2_K = 10
    case q3_K = 11
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14
    case q8_K = 15
    case iq2_xxs = 16
    case iq2_xs = 17
    case iq3_xxs = 18
    case iq1_s = 19
    case iq4_nl = 20
    case iq3_s = 21
    case iq2_s = 22
    case iq4_xs = 23
    case i8 = 24
    case i16 = 25
    case i32 = 26
    case i64 = 27
    case f64 = 28
    case iq1_m = 29
    case bf16 = 30
    case tq1_0 = 34
    case tq2_0 = 35
    case mxfp4 = 39
    case nvfp4 = 40
    case q1_0 = 41
    case q2_0 = 42

    /// Number of values in one block.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .i8, .i16, .i32, .i64, .f64: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1, .iq4_nl, .mxfp4: return 32
        case .nvfp4, .q2_0: return 64
        case .q1_0: return 128
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K, .iq2_xxs, .iq2_xs, .iq3_xxs,
             .iq1_s, .iq3_s, .iq2_s, .iq4_xs, .iq1_m, .tq1_0, .tq2_0: return 256
        }
    }

    /// Bytes one block occupies in the file.
    public var bytesPerBlock: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .i8: return 1
        case .i16: return 2
        case .i32: return 4
        case .i64, .f64: return 8
        case .q4_0: return 18      // f16 scale + 16 bytes of nibbles
        case .q4_1: return 20      // f16 scale, f16 min + 16 bytes
        case .q5_0: return 22      // f16 scale + 4 bytes high bits + 16 bytes
        case .q5_1: return 24
        case .q8_0: return 34      // f16 scale + 32 int8
        case .q8_1: return 36      // f16 scale, f16 sum + 32 int8
        case .q2_K: return 84      // 16 scale bytes + 64 quant bytes + 2 f16
        case .q3_K: return 110     // 32 hmask + 64 qs + 12 scales + f16
        case .q4_K: return 144     // 2 f16 + 12 scales + 128 qs
        case .q5_K: return 176     // 2 f16 + 12 scales + 32 qh + 128 qs
        case .q6_K: return 210     // 128 ql + 64 qh + 16 scales + f16
        case .q8_K: return 292     // f32 + 256 int8 + 16 int16 sums
        case .iq2_xxs: return 66
        case .iq2_xs: return 74
        case .iq3_xxs: return 98
        case .iq1_s: return 50
        case .iq4_nl: return 18
        case .iq3_s: return 110
        case .iq2_s: return 82
        case .iq4_xs: return 136
        case .iq1_m: return 56
        case .tq1_0: return 54
        case .tq2_0: return 66
        case .mxfp4: return 17     // e8m0 scale + 16 bytes of fp4 pairs
        case .nvfp4: return 36     // 4 e4m3 scales + 32 bytes of fp4 pairs
        case .q1_0: return 18      // f16 scale + 16 bytes of sign bits
        case .q2_0: return 18      // f16 scale + 16 bytes of 2-bit quants
        }
    }

    /// The name llama.cpp prints (`ggml_type_name`).
    public var name: String {
        switch self {
        case .f32: return "f32"
        case .f16: return "f16"
        case .bf16: return "bf16"
        case .i8: return "i8"
        case .i16: return "i16"
        case .i32: return "i32"
        case .i64: return "i64"
        case .f64: return "f64"
        case .q4_0: return "q4_0"
        case .q4_1: return "q4_1"
        case .q5_0: return "q5_0"
        case .q5_1: return "q5_1"
        case .q8_0: return "q8_0"
        case .q8_1: return "q8_1"
        case .q2_K: return "q2_K"
        case .q3_K: return "q3_K"
        case .q4_K: return "q4_K"
        case .q5_K: return "q5_K"
        case .q6_K: return "q6_K"
        case .q8_K: return "q8_K"
        case .iq2_xxs: return "iq2_xxs"
        case .iq2_xs: return "iq2_xs"
        case .iq3_xxs: return "iq3_xxs"
        case .iq1_s: return "iq1_s"
        case .iq4_nl: return "iq4_nl"
        case .iq3_s: return "iq3_s"
        case .iq2_s: return "iq2_s"
        case .iq4_xs: return "iq4_xs"
        case .iq1_m: return "iq1_m"
        case .tq1_0: return "tq1_0"
        case .tq2_0: return "tq2_0"
        case .mxfp4: return "mxfp4"
        case .nvfp4: return "nvfp4"
        case .q1_0: return "q1_0"
        case .q2_0: return "q2_0"
        }
    }

    public var description: String { name }

    /// Whether the type is a block-quantized format (as opposed to plain numbers).
    public var isQuantized: Bool { blockSize > 1 }

    /// Parses a name as printed by `name` (case-insensitive): "q8_0", "Q4_K", "f16".
    public init?(name: String) {
        let lower = name.lowercased()
        guard let match = GGMLType.allCases.first(where: { $0.name.lowercased() == lower }) else { return nil }
        self = match
    }

    /// Bytes of `count` values, or nil when `count` is not a whole number of blocks
    /// or the size overflows.
    public func byteCount(elements count: UInt64) -> UInt64? {
        let bs = UInt64(blockSize)
        guard count % bs == 0 else { return nil }
        let (bytes, overflow) = (count / bs).multipliedReportingOverflow(by: UInt64(bytesPerBlock))
        return overflow ? nil : bytes
    }
}
