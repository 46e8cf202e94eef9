import GGUF

/// Expansion of ggml's block formats into F32.
///
/// Results are bit-identical to ggml's reference `dequantize_row_*` functions: every value is
/// computed with the same float operations in the same order (multiply, then add or subtract
/// the minimum; never a fused multiply-add), on the AVX2 path as on the portable one.
public enum Dequantize {
    /// Types `row` accepts.
    public static func supports(_ type: GGMLType) -> Bool {
        switch type {
        case .f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1,
             .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K:
            return true
        default:
            return false
        }
    }

    /// Expands `count` values (a multiple of type.blockSize) stored at `source` in `type`'s
    /// block layout into F32. Precondition: supports(type). No allocation.
    public static func row(_ type: GGMLType, from source: UnsafeRawPointer,
                           to destination: UnsafeMutablePointer<Float>, count: Int) {
        #if arch(x86_64) && !MOE_PORTABLE_SIMD
        expandAVX2(type, source, destination, count)
        #else
        expandPortable(type, source, destination, count)
        #endif
    }

    /// The scalar implementation (what non-x86 builds and `MOE_PORTABLE_SIMD` run), exposed so
    /// tests can check the SIMD path against it bit for bit. Same contract as `row`.
    public static func portableRow(_ type: GGMLType, from source: UnsafeRawPointer,
                                   to destination: UnsafeMutablePointer<Float>, count: Int) {
        expandPortable(type, source, destination, count)
    }

    static func blockCount(_ type: GGMLType, _ count: Int) -> Int {
        let size = type.blockSize
        precondition(count >= 0 && count % size == 0, "dequantize: \(count) values is not a whole number of \(type) blocks")
        return count / size
    }

    static func expandPortable(_ type: GGMLType, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ count: Int) {
        let n = blockCount(type, count)
        switch type {
        case .f32: UnsafeMutableRawPointer(y).copyMemory(from: x, byteCount: count &* 4)
        case .f16: FP16.toFloat(x, y, count: count)
        case .bf16: BF16.toFloat(x, y, count: count)
        case .q8_0: PortableBlocks.q8_0(x, y, n)
        case .q4_0: PortableBlocks.q4_0(x, y, n)
        case .q4_1: PortableBlocks.q4_1(x, y, n)
        case .q5_0: PortableBlocks.q5_0(x, y, n)
        case .q5_1: PortableBlocks.q5_1(x, y, n)
        case .q2_K: PortableBlocks.q2_K(x, y, n)
        case .q3_K: PortableBlocks.q3_K(x, y, n)
        case .q4_K: PortableBlocks.q4_K(x, y, n)
        case .q5_K: PortableBlocks.q5_K(x, y, n)
        case .q6_K: PortableBlocks.q6_K(x, y, n)
        case .q8_K: PortableBlocks.q8_K(x, y, n)
        default: preconditionFailure("dequantize: \(type) is not supported")
        }
    }

    #if arch(x86_64) && !MOE_PORTABLE_SIMD
    static func expandAVX2(_ type: GGMLType, _ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ count: Int) {
        let n = blockCount(type, count)
        switch type {
        case .f32: UnsafeMutableRawPointer(y).copyMemory(from: x, byteCount: count &* 4)
        // Plain loops: with -mf16c / -mavx2 they compile to vcvtph2ps / vpmovzxwd+vpslld.
        case .f16: FP16.toFloat(x, y, count: count)
        case .bf16: BF16.toFloat(x, y, count: count)
        case .q8_0: AVX2Blocks.q8_0(x, y, n)
        case .q4_0: AVX2Blocks.q4_0(x, y, n)
        case .q4_1: AVX2Blocks.q4_1(x, y, n)
        case .q5_0: AVX2Blocks.q5_0(x, y, n)
        case .q5_1: AVX2Blocks.q5_1(x, y, n)
        case .q2_K: AVX2Blocks.q2_K(x, y, n)
        case .q3_K: AVX2Blocks.q3_K(x, y, n)
        case .q4_K: AVX2Blocks.q4_K(x, y, n)
        case .q5_K: AVX2Blocks.q5_K(x, y, n)
        case .q6_K: AVX2Blocks.q6_K(x, y, n)
        case .q8_K: AVX2Blocks.q8_K(x, y, n)
        default: preconditionFailure("dequantize: \(type) is not supported")
        }
    }
    #endif
}

/// Shared decoding of the packed 6-bit sub-block scales of Q4_K / Q5_K (12 bytes for 8
/// scale/min pairs): the first four pairs sit in the low 6 bits of bytes 0-7; the last four
/// keep their low nibbles in bytes 8-11 and their top two bits in the spare bits of bytes 0-7.
@inline(__always)
func kScaleMin(_ s: UnsafePointer<UInt8>, _ j: Int) -> (scale: UInt8, min: UInt8) {
    if j < 4 {
        return (s[j] & 63, s[j &+ 4] & 63)
    }
    let scale = (s[j &+ 4] & 0xF) | ((s[j &- 4] &>> 6) &<< 4)
    let min = (s[j &+ 4] &>> 4) | ((s[j] &>> 6) &<< 4)
    return (scale, min)
}

/// Q3_K's sixteen 6-bit signed scales (bias 32) in 12 bytes: low nibbles in bytes 0-7
/// (scales 0-7 low halves, 8-15 high halves), top two bits in bytes 8-11.
@inline(__always)
func q3KScale(_ s: UnsafePointer<UInt8>, _ j: Int) -> Int32 {
    let low = j < 8 ? s[j] & 0xF : s[j &- 8] &>> 4
    let high = (s[8 &+ (j & 3)] &>> UInt8(truncatingIfNeeded: 2 &* (j &>> 2))) & 3
    return Int32(low | (high &<< 4)) &- 32
}

/// Byte layouts (offsets within one block), as in ggml-common.h.
enum KBlockLayout {
    // q8_0: f16 d | 32 x i8
    // q4_0: f16 d | 16 bytes (value j in the low nibble of byte j, value j+16 in the high nibble)
    // q4_1: f16 d, f16 m | 16 bytes
    // q5_0: f16 d | u32 high bits (bit j = fifth bit of value j) | 16 bytes
    // q5_1: f16 d, f16 m | u32 high bits | 16 bytes
    static let q2KScales = 0, q2KQs = 16, q2KD = 80, q2KDmin = 82
    static let q3KHmask = 0, q3KQs = 32, q3KScales = 96, q3KD = 108
    static let q4KD = 0, q4KDmin = 2, q4KScales = 4, q4KQs = 16
    static let q5KD = 0, q5KDmin = 2, q5KScales = 4, q5KQh = 16, q5KQs = 48
    static let q6KQl = 0, q6KQh = 128, q6KScales = 192, q6KD = 208
    static let q8KD = 0, q8KQs = 4, q8KBsums = 260
}

/// Scalar dequantizers, one float operation sequence per value exactly as ggml's reference.
enum PortableBlocks {
    static func q8_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 34
            let d = FP16.load(p)
            let qs = (p + 2).assumingMemoryBound(to: UInt8.self)
            let out = y + b &* 32
            for j in 0..<32 { out[j] = Float(Int8(bitPattern: qs[j])) * d }
        }
    }

    static func q4_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 18
            let d = FP16.load(p)
            let qs = (p + 2).assumingMemoryBound(to: UInt8.self)
            let out = y + b &* 32
            for j in 0..<16 {
                out[j] = Float(Int32(qs[j] & 0xF) &- 8) * d
                out[j &+ 16] = Float(Int32(qs[j] &>> 4) &- 8) * d
            }
        }
    }

    static func q4_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 20
            let d = FP16.load(p), m = FP16.load(p, 2)
            let qs = (p + 4).assumingMemoryBound(to: UInt8.self)
            let out = y + b &* 32
            for j in 0..<16 {
                out[j] = Float(qs[j] & 0xF) * d + m
                out[j &+ 16] = Float(qs[j] &>> 4) * d + m
            }
        }
    }

    static func q5_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 22
            let d = FP16.load(p)
            let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            let qs = (p + 6).assumingMemoryBound(to: UInt8.self)
            let out = y + b &* 32
            for j in 0..<16 {
                let h0 = Int32((qh &>> UInt32(j)) & 1) &<< 4
                let h1 = Int32((qh &>> UInt32(j &+ 16)) & 1) &<< 4
                out[j] = Float((Int32(qs[j] & 0xF) | h0) &- 16) * d
                out[j &+ 16] = Float((Int32(qs[j] &>> 4) | h1) &- 16) * d
            }
        }
    }

    static func q5_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 24
            let d = FP16.load(p), m = FP16.load(p, 2)
            let qh = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            let qs = (p + 8).assumingMemoryBound(to: UInt8.self)
            let out = y + b &* 32
            for j in 0..<16 {
                let h0 = Int32((qh &>> UInt32(j)) & 1) &<< 4
                let h1 = Int32((qh &>> UInt32(j &+ 16)) & 1) &<< 4
                out[j] = Float(Int32(qs[j] & 0xF) | h0) * d + m
                out[j &+ 16] = Float(Int32(qs[j] &>> 4) | h1) * d + m
            }
        }
    }

    // The K-quant loops below run over contiguous runs of 16 or 32 values sharing one scale,
    // so the compiler can vectorize them.

    static func q2_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 84
            let scales = p.assumingMemoryBound(to: UInt8.self)
            let d = FP16.load(p, KBlockLayout.q2KD), dmin = FP16.load(p, KBlockLayout.q2KDmin)
            // 128 values per 32 bytes: value 32j + l (j < 4) is at bits 2j of byte l; the
            // 16-value sub-blocks take the scales in order.
            for n in 0..<2 {
                let q = (p + KBlockLayout.q2KQs + 32 &* n).assumingMemoryBound(to: UInt8.self)
                for j in 0..<4 {
                    let shift = UInt8(truncatingIfNeeded: 2 &* j)
                    for h in 0..<2 {
                        let sc = scales[8 &* n &+ 2 &* j &+ h]
                        let dl = d * Float(sc & 0xF), ml = dmin * Float(sc &>> 4)
                        let o = y + (b &* 256 &+ 128 &* n &+ 32 &* j &+ 16 &* h)
                        let qh = q + 16 &* h
                        for l in 0..<16 { o[l] = dl * Float((qh[l] &>> shift) & 3) - ml }
                    }
                }
            }
        }
    }

    static func q3_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 110
            let hmask = p.assumingMemoryBound(to: UInt8.self)
            let scales = (p + KBlockLayout.q3KScales).assumingMemoryBound(to: UInt8.self)
            let d = FP16.load(p, KBlockLayout.q3KD)
            // Low 2 bits laid out as Q2_K; the third bit of value e is bit e/32 of
            // hmask[e%32] (clear means subtract 4).
            for n in 0..<2 {
                let q = (p + KBlockLayout.q3KQs + 32 &* n).assumingMemoryBound(to: UInt8.self)
                for j in 0..<4 {
                    let shift = UInt8(truncatingIfNeeded: 2 &* j)
                    let bit = UInt8(truncatingIfNeeded: 4 &* n &+ j)
                    for h in 0..<2 {
                        let dl = d * Float(q3KScale(scales, 8 &* n &+ 2 &* j &+ h))
                        let o = y + (b &* 256 &+ 128 &* n &+ 32 &* j &+ 16 &* h)
                        let qh = q + 16 &* h, hm = hmask + 16 &* h
                        for l in 0..<16 {
                            let low = Int32((qh[l] &>> shift) & 3)
                            let high = Int32((hm[l] &>> bit) & 1)
                            o[l] = dl * Float(low &- 4 &+ (high &<< 2))
                        }
                    }
                }
            }
        }
    }

    static func q4_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 144
            let d = FP16.load(p, KBlockLayout.q4KD), dmin = FP16.load(p, KBlockLayout.q4KDmin)
            let scales = (p + KBlockLayout.q4KScales).assumingMemoryBound(to: UInt8.self)
            let qs = (p + KBlockLayout.q4KQs).assumingMemoryBound(to: UInt8.self)
            let out = y + b &* 256
            // Each 64 values share 32 bytes: low nibbles first (sub-block 2c), then high (2c+1).
            for c in 0..<4 {
                let (s1, m1) = kScaleMin(scales, 2 &* c)
                let (s2, m2) = kScaleMin(scales, 2 &* c &+ 1)
                let d1 = d * Float(s1), min1 = dmin * Float(m1)
                let d2 = d * Float(s2), min2 = dmin * Float(m2)
                let q = qs + 32 &* c
                let o = out + 64 &* c
                for l in 0..<32 { o[l] = d1 * Float(q[l] & 0xF) - min1 }
                for l in 0..<32 { o[32 &+ l] = d2 * Float(q[l] &>> 4) - min2 }
            }
        }
    }

    static func q5_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 176
            let d = FP16.load(p, KBlockLayout.q5KD), dmin = FP16.load(p, KBlockLayout.q5KDmin)
            let scales = (p + KBlockLayout.q5KScales).assumingMemoryBound(to: UInt8.self)
            let qh = (p + KBlockLayout.q5KQh).assumingMemoryBound(to: UInt8.self)
            let qs = (p + KBlockLayout.q5KQs).assumingMemoryBound(to: UInt8.self)
            let out = y + b &* 256
            // As Q4_K, plus a fifth bit: bit e/32 of qh[e%32].
            for c in 0..<4 {
                let (s1, m1) = kScaleMin(scales, 2 &* c)
                let (s2, m2) = kScaleMin(scales, 2 &* c &+ 1)
                let d1 = d * Float(s1), min1 = dmin * Float(m1)
                let d2 = d * Float(s2), min2 = dmin * Float(m2)
                let q = qs + 32 &* c
                let o = out + 64 &* c
                let bit1 = UInt8(truncatingIfNeeded: 2 &* c), bit2 = UInt8(truncatingIfNeeded: 2 &* c &+ 1)
                for l in 0..<32 {
                    let h = Int32((qh[l] &>> bit1) & 1) &<< 4
                    o[l] = d1 * Float(Int32(q[l] & 0xF) &+ h) - min1
                }
                for l in 0..<32 {
                    let h = Int32((qh[l] &>> bit2) & 1) &<< 4
                    o[32 &+ l] = d2 * Float(Int32(q[l] &>> 4) &+ h) - min2
                }
            }
        }
    }

    static func q6_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 210
            let d = FP16.load(p, KBlockLayout.q6KD)
            // Per 128 values: 64 bytes of low nibbles (values l and l+64 share byte l, values
            // l+32 and l+96 share byte l+32) and 32 bytes holding four 2-bit high parts each.
            for n in 0..<2 {
                let ql = (p + KBlockLayout.q6KQl + 64 &* n).assumingMemoryBound(to: UInt8.self)
                let qh = (p + KBlockLayout.q6KQh + 32 &* n).assumingMemoryBound(to: UInt8.self)
                let sc = (p + KBlockLayout.q6KScales + 8 &* n).assumingMemoryBound(to: UInt8.self)
                for h in 0..<2 {
                    let o = y + (b &* 256 &+ 128 &* n &+ 16 &* h)
                    let d1 = d * Float(Int8(bitPattern: sc[h])), d2 = d * Float(Int8(bitPattern: sc[h &+ 2]))
                    let d3 = d * Float(Int8(bitPattern: sc[h &+ 4])), d4 = d * Float(Int8(bitPattern: sc[h &+ 6]))
                    let a = ql + 16 &* h, c = ql + (32 &+ 16 &* h), hb = qh + 16 &* h
                    for l in 0..<16 {
                        let q1 = Int32((a[l] & 0xF) | ((hb[l] & 3) &<< 4)) &- 32
                        let q2 = Int32((c[l] & 0xF) | (((hb[l] &>> 2) & 3) &<< 4)) &- 32
                        let q3 = Int32((a[l] &>> 4) | (((hb[l] &>> 4) & 3) &<< 4)) &- 32
                        let q4 = Int32((c[l] &>> 4) | (((hb[l] &>> 6) & 3) &<< 4)) &- 32
                        o[l] = d1 * Float(q1)
                        o[l &+ 32] = d2 * Float(q2)
                        o[l &+ 64] = d3 * Float(q3)
                        o[l &+ 96] = d4 * Float(q4)
                    }
                }
            }
        }
    }

    static func q8_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + b &* 292
            let d = p.loadUnaligned(fromByteOffset: KBlockLayout.q8KD, as: Float.self)
            let qs = (p + KBlockLayout.q8KQs).assumingMemoryBound(to: UInt8.self)
            let out = y + b &* 256
            for j in 0..<256 { out[j] = d * Float(Int8(bitPattern: qs[j])) }
        }
    }
}
