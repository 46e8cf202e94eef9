import Foundation
import GGUF
@testable import Kernels
import Testing

@Suite("Block formats: dequantize and quantize")
struct BlockFormatTests {
    static let allTypes: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1,
                                       .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K]

    // MARK: llama.cpp's files

    /// Largest relative RMS error of a dequantized tensor against the original, per type
    /// (about twice what these random-weight tensors show).
    static func errorBound(_ type: GGMLType) -> Double {
        switch type {
        case .f32: return 0
        case .f16: return 1e-3
        case .q8_0: return 0.01
        case .q6_K: return 0.03
        case .q4_K: return 0.12
        case .q4_0: return 0.15
        default: return 0.5
        }
    }

    static let quantizedFiles = [
        "tiny-llama.q8_0.gguf", "tiny-llama.q4_0.gguf", "tiny-llama.q4_k_m.gguf", "tiny-llama.q6_k.gguf",
        "tiny-llama.f16.gguf",
        "tiny-qwen3.q8_0.gguf", "tiny-qwen3.q4_0.gguf", "tiny-qwen3.q4_k_m.gguf", "tiny-qwen3.q6_k.gguf",
    ]

    @Test("every tensor of llama.cpp's quantized files dequantizes close to the original", arguments: quantizedFiles)
    func dequantizeSharedFile(name: String) throws {
        let model = try MappedModel(name)
        // tiny-llama has its F32 original; tiny-qwen3's closest is the F16 file.
        let original = try MappedModel(name.hasPrefix("tiny-llama") ? "tiny-llama.f32.gguf" : "tiny-qwen3.f16.gguf")
        var seen = Set<GGMLType>()
        for t in model.tensors {
            let o = try #require(original.tensor(t.name))
            #expect(o.dimensions == t.dimensions)
            let error = relativeRMSError(model.floats(t), original.floats(o))
            let bound = Self.errorBound(t.type) + (o.type == .f16 ? 1e-3 : 0)
            #expect(error <= bound, "\(name) \(t.name) (\(t.type)): relative RMS error \(error) > \(bound)")
            seen.insert(t.type)
        }
        // The files hold what we expect to be checking.
        let expected: Set<GGMLType> = switch name.split(separator: ".")[1] {
        case "q8_0": [.f32, .q8_0]
        case "q4_0": [.f32, .q4_0, .q6_K]
        case "q4_k_m": [.f32, .q4_K, .q6_K]
        case "q6_k": [.f32, .q6_K]
        default: [.f32, .f16]
        }
        #expect(seen == expected)
    }

    static let llamaQuantizedFiles = ["tiny-llama.q8_0.gguf", "tiny-llama.q4_0.gguf", "tiny-llama.q4_k_m.gguf",
                                      "tiny-llama.q6_k.gguf", "tiny-llama.f16.gguf"]

    @Test("quantizing the F32 original reproduces llama-quantize's bytes", arguments: llamaQuantizedFiles)
    func quantizeMatchesLlamaCpp(name: String) throws {
        let model = try MappedModel(name)
        let original = try MappedModel("tiny-llama.f32.gguf")
        var checked = 0
        for t in model.tensors where t.type != .f32 {
            let o = try #require(original.tensor(t.name))
            #expect(o.type == .f32)
            // Blocks are independent, so a few rows of every tensor exercise the algorithm on all
            // of them (every row matched when checked in full once).
            let rows = min(t.rowCount, 4)
            let values = original.floats(o, rows: rows)
            let ours = try values.withUnsafeBufferPointer { try Quantize.tensor(t.type, $0, rowLength: t.rowLength) }
            let theirs = model.bytes(t, rows: rows)
            #expect(ours.count == theirs.count)
            let firstDifference = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            #expect(firstDifference == nil, "\(name) \(t.name) (\(t.type)): first differing byte \(firstDifference ?? -1)")
            checked += 1
        }
        #expect(checked >= 22)
    }

    // MARK: ggml's reference output on a fixed signal

    /// FNV-1a hashes of ggml's output for `formatSignal()` as one row of 4096 values: the bytes
    /// of `quantize_row_<type>_ref` (`ggml_fp32_to_fp16_row`, `ggml_fp32_to_bf16_row_ref`) into
    /// a zeroed buffer, and the floats `dequantize_row_<type>` (`ggml_fp16_to_fp32_row`,
    /// `ggml_bf16_to_fp32_row`) makes of them. Generated once through llama.cpp's libggml-base.
    static let ggmlHashes: [(GGMLType, quantized: UInt64, dequantized: UInt64)] = [
        (.f16, 0x9e84_4dda_8e81_4ad5, 0xd807_0d19_e032_4bb3),
        (.bf16, 0xb4b2_54f7_5922_3c3e, 0x036c_29e3_5ab7_db4e),
        (.q4_0, 0x088e_9792_4b63_3339, 0xa4b5_96fb_fa3e_feba),
        (.q4_1, 0x0d58_b249_4aa3_ea7f, 0x685a_1b17_6319_3297),
        (.q5_0, 0x32a5_7a1d_6d43_899f, 0x6281_1468_3fbd_7122),
        (.q5_1, 0x3a67_26cc_afb6_4c4d, 0xb1eb_ae22_e64e_1d94),
        (.q8_0, 0x9047_0591_f1dc_754e, 0xdcaa_75a9_87ca_1bdb),
        (.q2_K, 0xbb32_c2c7_aafc_7a31, 0x963f_3cb0_8974_1889),
        (.q3_K, 0x38ef_92d0_9941_082a, 0xe2c8_826a_2fb6_d353),
        (.q4_K, 0xb5e7_9dbf_0366_43c7, 0xbd46_73fe_0dfd_39ac),
        (.q5_K, 0x0e03_ed0c_eb5e_82d3, 0x4bba_71cd_1467_df7e),
        (.q6_K, 0x9547_efe5_0d2d_39b8, 0x4a32_c362_bdc9_ee59),
        (.q8_K, 0xc7b1_9700_9c19_1a37, 0xc91c_7505_c568_abe5),
    ]

    @Test("the test signal is the one the reference hashes were made from")
    func signalIsStable() {
        #expect(fnv1a(formatSignal()) == 0xc9d5_9521_0c2a_fed9)
    }

    @Test("quantize and dequantize are bit-identical to ggml on the test signal",
          arguments: ggmlHashes.map(\.0))
    func matchesGGMLReference(type: GGMLType) throws {
        let entry = try #require(Self.ggmlHashes.first { $0.0 == type })
        let x = formatSignal()
        let q = quantizeRow(type, x)
        #expect(fnv1a(q) == entry.quantized, "\(type) quantized bytes differ from ggml's")
        #expect(fnv1a(dequantize(type, q, count: x.count)) == entry.dequantized, "\(type) dequantized values differ from ggml's")
        #expect(fnv1a(dequantize(type, q, count: x.count, portable: true)) == entry.dequantized,
                "\(type) portable dequantized values differ from ggml's")
    }

    @Test("K-quant searches give the same bytes one group per SIMD lane as one group at a time",
          arguments: [GGMLType.q2_K, .q4_K, .q5_K, .q6_K])
    func laneSearches(type: GGMLType) throws {
        // Quantize.row picks one of the two by build configuration; check both here.
        let entry = try #require(Self.ggmlHashes.first { $0.0 == type })
        let x = formatSignal()
        let blocks = x.count / 256
        for lanes in [false, true] {
            var out = [UInt8](repeating: 0, count: blocks * type.bytesPerBlock)
            x.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBytes { dst in
                    let (s, d) = (src.baseAddress!, dst.baseAddress!)
                    switch type {
                    case .q2_K: KQuantizers.q2_K(s, d, blocks, lanes: lanes)
                    case .q4_K: KQuantizers.q4_K_or_q5_K(s, d, blocks, nmax: 15, lanes: lanes)
                    case .q5_K: KQuantizers.q4_K_or_q5_K(s, d, blocks, nmax: 31, lanes: lanes)
                    default: KQuantizers.q6_K(s, d, blocks, lanes: lanes)
                    }
                }
            }
            #expect(fnv1a(out) == entry.quantized, "\(type), lanes: \(lanes)")
        }
    }

    // MARK: SIMD against the portable path

    @Test("the SIMD dequantizer agrees bit for bit with the portable one on arbitrary bytes",
          arguments: allTypes)
    func simdMatchesPortable(type: GGMLType) {
        let blocks = 64
        var state: UInt64 = 0x2545_F491_4F6C_DD1D &+ UInt64(type.rawValue)
        var bytes = [UInt8](repeating: 0, count: blocks * type.bytesPerBlock)
        for i in bytes.indices {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            bytes[i] = UInt8(truncatingIfNeeded: state)
        }
        let count = blocks * type.blockSize
        let a = dequantize(type, bytes, count: count)
        let b = dequantize(type, bytes, count: count, portable: true)
        let mismatch = zip(a, b).enumerated().first { _, p in
            p.0.bitPattern != p.1.bitPattern && !(p.0.isNaN && p.1.isNaN)
        }
        #expect(mismatch == nil, "\(type): value \(mismatch?.offset ?? -1) differs")
    }

    // MARK: Hand-built blocks

    /// Test values are small dyadic numbers, so every expected value is exact whatever the
    /// order of float operations.
    @Test("Q4_1 block") func q4_1() {
        let d: Float = 0.5, m: Float = -2
        var w = BlockWriter(size: 20)
        w.half(d, at: 0)
        w.half(m, at: 2)
        let q = (0..<32).map { ($0 * 7) % 16 }
        // Value j < 16 in the low nibble of byte 4+j, value j+16 in its high nibble.
        for j in 0..<32 { w.bits(q[j], width: 4, byte: 4 + j % 16, bit: j < 16 ? 0 : 4) }
        #expect(dequantize(.q4_1, w.bytes, count: 32) == q.map { Float($0) * d + m })
        #expect(dequantize(.q4_1, w.bytes, count: 32, portable: true) == q.map { Float($0) * d + m })
    }

    @Test("Q5_0 block") func q5_0() {
        let d: Float = 0.25
        var w = BlockWriter(size: 22)
        w.half(d, at: 0)
        let q = (0..<32).map { ($0 * 11 + 3) % 32 }
        for j in 0..<32 {
            w.bits(q[j] & 15, width: 4, byte: 6 + j % 16, bit: j < 16 ? 0 : 4)
            w.bits(q[j] >> 4, width: 1, byte: 2 + j / 8, bit: j % 8)   // bit j of the u32 at 2
        }
        let expected = q.map { Float($0 - 16) * d }
        #expect(dequantize(.q5_0, w.bytes, count: 32) == expected)
        #expect(dequantize(.q5_0, w.bytes, count: 32, portable: true) == expected)
    }

    @Test("Q5_1 block") func q5_1() {
        let d: Float = 0.125, m: Float = 1.5
        var w = BlockWriter(size: 24)
        w.half(d, at: 0)
        w.half(m, at: 2)
        let q = (0..<32).map { ($0 * 13 + 5) % 32 }
        for j in 0..<32 {
            w.bits(q[j] & 15, width: 4, byte: 8 + j % 16, bit: j < 16 ? 0 : 4)
            w.bits(q[j] >> 4, width: 1, byte: 4 + j / 8, bit: j % 8)
        }
        let expected = q.map { Float($0) * d + m }
        #expect(dequantize(.q5_1, w.bytes, count: 32) == expected)
        #expect(dequantize(.q5_1, w.bytes, count: 32, portable: true) == expected)
    }

    @Test("Q8_K block") func q8_K() {
        let d: Float = 0.0625
        var w = BlockWriter(size: 292)
        w.float(d, at: 0)
        let q = (0..<256).map { ($0 * 37) % 256 - 128 }
        for j in 0..<256 { w.bytes[4 + j] = UInt8(bitPattern: Int8(q[j])) }
        let expected = q.map { Float($0) * d }
        #expect(dequantize(.q8_K, w.bytes, count: 256) == expected)
        #expect(dequantize(.q8_K, w.bytes, count: 256, portable: true) == expected)
    }

    @Test("BF16 values") func bf16() {
        let bits: [UInt16] = [0x3F80, 0xC020, 0x4049, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x4780]
        let expected: [Float] = [1, -2.5, 3.140625, 0, -0.0, .infinity, -.infinity,
                                 Float(sign: .plus, exponent: -133, significand: 1), 65536]
        let bytes = bits.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let got = dequantize(.bf16, bytes, count: bits.count)
        #expect(got.map(\.bitPattern) == expected.map(\.bitPattern))
        // Round to nearest even on the 16 dropped bits; NaN stays NaN.
        #expect(BF16.fromFloat(Float(bitPattern: 0x3F80_8000)) == 0x3F80)
        #expect(BF16.fromFloat(Float(bitPattern: 0x3F81_8000)) == 0x3F82)
        #expect(BF16.fromFloat(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
        #expect(BF16.fromFloat(Float(bitPattern: 0x7F80_0001)) == 0x7FC0)
        #expect(BF16.fromFloat(-.infinity) == 0xFF80)
    }

    /// ggml's super-block packing of 2-bit fields: for each half of 128 values, byte i of the
    /// 32 holds values i, i+32, i+64, i+96 at bits 0, 2, 4, 6.
    static func pack2(_ l: [Int]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 64)
        for half in stride(from: 0, to: 256, by: 128) {
            for i in 0..<32 {
                out[half / 4 + i] = UInt8(l[half + i] | l[half + i + 32] << 2 | l[half + i + 64] << 4 | l[half + i + 96] << 6)
            }
        }
        return out
    }

    @Test("Q2_K block") func q2_K() {
        let d: Float = 0.5, dmin: Float = 0.25
        let scale = (0..<16).map { ($0 * 5 + 1) % 16 }, mins = (0..<16).map { ($0 * 3 + 2) % 16 }
        let q = (0..<256).map { ($0 * 7 + $0 / 16) % 4 }
        var w = BlockWriter(size: 84)
        for s in 0..<16 { w.bytes[s] = UInt8(scale[s] | mins[s] << 4) }
        w.bytes.replaceSubrange(16..<80, with: Self.pack2(q))
        w.half(d, at: 80)
        w.half(dmin, at: 82)
        let expected = (0..<256).map { e in d * Float(scale[e / 16]) * Float(q[e]) - dmin * Float(mins[e / 16]) }
        #expect(dequantize(.q2_K, w.bytes, count: 256) == expected)
        #expect(dequantize(.q2_K, w.bytes, count: 256, portable: true) == expected)
    }

    @Test("Q3_K block") func q3_K() {
        let d: Float = 0.25
        let scale = (0..<16).map { ($0 * 9) % 64 - 32 }         // signed 6-bit
        let q = (0..<256).map { ($0 * 5 + $0 / 32) % 8 - 4 }    // signed 3-bit
        var w = BlockWriter(size: 110)
        // hmask: the third bit of value e is bit e/32 of byte e%32.
        var low = [Int](repeating: 0, count: 256)
        for e in 0..<256 {
            let l = q[e] + 4
            if l > 3 { w.bytes[e % 32] |= UInt8(1 << (e / 32)) }
            low[e] = l & 3
        }
        w.bytes.replaceSubrange(32..<96, with: Self.pack2(low))
        // Scales +32: low nibbles of 0-7 in bytes 96-103, of 8-15 in their high nibbles;
        // top two bits of scale j in byte 104 + j%4 at bit 2*(j/4).
        for j in 0..<16 {
            let l = scale[j] + 32
            if j < 8 { w.bytes[96 + j] |= UInt8(l & 15) } else { w.bytes[96 + j - 8] |= UInt8((l & 15) << 4) }
            w.bytes[104 + j % 4] |= UInt8((l >> 4) << (2 * (j / 4)))
        }
        w.half(d, at: 108)
        let expected = (0..<256).map { e in d * Float(scale[e / 16]) * Float(q[e]) }
        #expect(dequantize(.q3_K, w.bytes, count: 256) == expected)
        #expect(dequantize(.q3_K, w.bytes, count: 256, portable: true) == expected)
    }

    /// Q4_K/Q5_K 6-bit scale and min packing for sub-block j (of 8) into the 12 bytes at 4.
    static func packScaleMin(_ w: inout BlockWriter, _ scale: [Int], _ mins: [Int]) {
        for j in 0..<8 {
            let ls = scale[j], lm = mins[j]
            if j < 4 {
                w.bytes[4 + j] = UInt8(ls)
                w.bytes[4 + j + 4] = UInt8(lm)
            } else {
                w.bytes[4 + j + 4] = UInt8((ls & 15) | (lm & 15) << 4)
                w.bytes[4 + j - 4] |= UInt8((ls >> 4) << 6)
                w.bytes[4 + j] |= UInt8((lm >> 4) << 6)
            }
        }
    }

    @Test("Q5_K block") func q5_K() {
        let d: Float = 0.5, dmin: Float = 0.125
        let scale = (0..<8).map { ($0 * 23 + 7) % 64 }, mins = (0..<8).map { ($0 * 41 + 60) % 64 }
        let q = (0..<256).map { ($0 * 19 + $0 / 64) % 32 }
        var w = BlockWriter(size: 176)
        w.half(d, at: 0)
        w.half(dmin, at: 2)
        Self.packScaleMin(&w, scale, mins)
        // Per 64 values: low nibbles of the first 32 and high nibbles of the next 32 share 32
        // bytes; fifth bits go to qh (bytes 16-47), two bit positions per 64 values.
        for (c, n) in stride(from: 0, to: 256, by: 64).enumerated() {
            for j in 0..<32 {
                let l1 = q[n + j], l2 = q[n + j + 32]
                w.bytes[16 + j] |= UInt8((l1 >> 4) << (2 * c)) | UInt8((l2 >> 4) << (2 * c + 1))
                w.bytes[48 + 32 * c + j] = UInt8((l1 & 15) | (l2 & 15) << 4)
            }
        }
        let expected = (0..<256).map { e in d * Float(scale[e / 32]) * Float(q[e]) - dmin * Float(mins[e / 32]) }
        #expect(dequantize(.q5_K, w.bytes, count: 256) == expected)
        #expect(dequantize(.q5_K, w.bytes, count: 256, portable: true) == expected)
    }

    // MARK: Quantization error

    @Test("quantize → dequantize stays within each format's error", arguments: allTypes)
    func roundTripError(type: GGMLType) {
        let bound: Double = switch type {
        case .f32: 0
        case .f16: 5e-4
        case .bf16: 4e-3
        case .q8_0, .q8_K: 0.02
        case .q6_K: 0.03
        case .q5_0, .q5_1, .q5_K: 0.06
        case .q4_0, .q4_1, .q4_K: 0.12
        case .q3_K: 0.2
        default: 0.45
        }
        let signal = formatSignal()
        // The uniform, varying-scale and heavy-tailed rows.
        for row in [0, 1, 7] {
            let x = Array(signal[row * 512 ..< row * 512 + 512])
            let y = dequantize(type, quantizeRow(type, x), count: x.count)
            let error = relativeRMSError(y, x)
            #expect(error <= bound, "\(type) row \(row): relative RMS error \(error) > \(bound)")
        }
        // An all-zero row comes back as zeros.
        let zeros = [Float](repeating: 0, count: 512)
        #expect(dequantize(type, quantizeRow(type, zeros), count: 512).allSatisfy { $0 == 0 })
    }

    // MARK: Half precision

    /// ggml's portable float → half conversion (the reference for the rounding we must match).
    static func ggmlHalf(_ f: Float) -> UInt16 {
        let scaleToInf = Float(bitPattern: 0x7780_0000), scaleToZero = Float(bitPattern: 0x0880_0000)
        var base = (abs(f) * scaleToInf) * scaleToZero
        let w = f.bitPattern
        let shl1 = w &+ w
        let sign = w & 0x8000_0000
        var bias = shl1 & 0xFF00_0000
        if bias < 0x7100_0000 { bias = 0x7100_0000 }
        base = Float(bitPattern: (bias >> 1) &+ 0x0780_0000) + base
        let bits = base.bitPattern
        let nonsign = ((bits >> 13) & 0x7C00) &+ (bits & 0x0FFF)
        return UInt16(truncatingIfNeeded: (sign >> 16) | (shl1 > 0xFF00_0000 ? 0x7E00 : nonsign))
    }

    @Test("F16 conversion rounds exactly like ggml")
    func halfRounding() {
        var state: UInt64 = 0x1234_5678_9ABC_DEF1
        var floats: [Float] = [0, -0.0, 1, -1, 65504, 65519.99, 65520, -65520, 1e-8, 5.96e-8, 2.98e-8, 2.9802326e-8,
                               6.1e-5, .infinity, -.infinity, .nan, -Float.nan, Float(bitPattern: 0x7F80_0001)]
        for _ in 0..<200_000 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            floats.append(Float(bitPattern: UInt32(truncatingIfNeeded: state)))
            // Also values in and near the half range, where the rounding matters.
            let e = Int(state >> 40) % 40 - 28
            floats.append(Float(sign: state & 1 == 0 ? .plus : .minus, exponent: e,
                                significand: 1 + Float(state >> 41 & 0x7F_FFFF) / 8_388_608))
        }
        var halves = [UInt16](repeating: 0, count: floats.count)
        floats.withUnsafeBufferPointer { src in
            halves.withUnsafeMutableBytes { FP16.fromFloat(src.baseAddress!, $0.baseAddress!, count: floats.count) }
        }
        var mismatches = 0
        for (f, h) in zip(floats, halves) where h != Self.ggmlHalf(f) || FP16.fromFloat(f) != h {
            mismatches += 1
        }
        #expect(mismatches == 0)
        // And back: every half converts exactly.
        let roundTripFailures = (UInt16.min ... UInt16.max).filter { bits in
            let f = FP16.toFloat(bits)
            return f.isNaN ? !Float16(bitPattern: bits).isNaN : Float16(f).bitPattern != bits
        }
        #expect(roundTripFailures.isEmpty)
    }

    // MARK: Contracts

    @Test("supported types")
    func supportedTypes() {
        for t in Self.allTypes {
            #expect(Dequantize.supports(t))
            #expect(Quantize.supports(t))
        }
        for t in GGMLType.allCases where !Self.allTypes.contains(t) {
            #expect(!Dequantize.supports(t))
            #expect(!Quantize.supports(t))
        }
    }

    @Test("Quantize.tensor rejects unsupported types and bad shapes")
    func badInput() {
        let values = [Float](repeating: 1, count: 512)
        values.withUnsafeBufferPointer { v in
            #expect(throws: KernelError.unsupportedType(.iq2_xxs, operation: "quantize")) {
                try Quantize.tensor(.iq2_xxs, v, rowLength: 256)
            }
            #expect(throws: KernelError.unsupportedType(.q8_1, operation: "quantize")) {
                try Quantize.tensor(.q8_1, v, rowLength: 256)
            }
            for (type, rowLength) in [(GGMLType.q4_0, 48), (.q4_K, 128), (.q2_K, 0), (.q8_0, -32)] {
                let error = #expect(throws: KernelError.self) { try Quantize.tensor(type, v, rowLength: rowLength) }
                if case .shapeMismatch = error {} else { Issue.record("\(type) row \(rowLength): \(String(describing: error))") }
            }
            // 512 values are not a whole number of 384-value rows.
            let error = #expect(throws: KernelError.self) { try Quantize.tensor(.q8_0, v, rowLength: 384) }
            if case .shapeMismatch = error {} else { Issue.record("partial row: \(String(describing: error))") }
            // Fine shapes: two rows of 256, or one of 512.
            #expect((try? Quantize.tensor(.q4_K, v, rowLength: 256))?.count == 2 * 144)
            #expect((try? Quantize.tensor(.q8_0, v, rowLength: 512))?.count == 16 * 34)
        }
        #expect((try? Quantize.tensor(.q4_0, UnsafeBufferPointer(start: nil, count: 0), rowLength: 32)) == [])
    }

    @Test("F32 rows copy through unchanged")
    func f32Copy() {
        let x = formatSignal()
        let q = quantizeRow(.f32, x)
        #expect(dequantize(.f32, q, count: x.count).map(\.bitPattern) == x.map(\.bitPattern))
    }
}
