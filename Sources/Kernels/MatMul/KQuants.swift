import CPrefetch
import GGUF
#if canImport(Glibc)
import Glibc
#endif
#if arch(x86_64) && !MOE_PORTABLE_SIMD
import _Builtin_intrinsics.intel
#endif

// K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) against `q8x256` activations.
//
// Each 256-value super-block of a weight row is first unpacked into one common layout
// ("KRow", 576 bytes): unsigned quants, integer scales per 16 values, integer "min"
// coefficients per 16 values and two float factors, such that the super-block's dot
// product with activations `da * qa` (Σqa per 16 given as bsums) is
//     da * ( d * Σ_k sc_k · Σ_{i∈k} q_i·qa_i  +  dc * Σ_k mc_k · bsum_k ).
// A task unpacks 4 rows once and then runs every token of the batch against them from L1,
// so the per-type bit twiddling is paid once per row, not once per (row, token).
//
// KRow layout, per super-block:
//   [0, 256)    q: UInt8 quants in value order (0...63)
//   [256, 512)  8 chunk scale vectors of 16 Int16: lanes 0-7 scale of values 32c..32c+15,
//               lanes 8-15 scale of values 32c+16..32c+31 (matches maddubs lane order)
//   [512, 544)  16 Int16 min coefficients, one per 16 values
//   [544]       d (Float), [548] dc (Float)
enum KRow {
    static let bytes = 576
    static let scalesOffset = 256
    static let minsOffset = 512
    static let dOffset = 544
    static let dcOffset = 548
}

protocol KFormat {
    static var blockBytes: Int { get }
    /// Unpacks the super-block at `p` into KRow layout at `out` (32-byte aligned).
    static func unpack(_ p: UnsafeRawPointer, _ out: UnsafeMutableRawPointer)
}

/// 32 bytes as four little-endian words, for byte-wise bit twiddling in general-purpose
/// registers (Swift's generic SIMD shifts on UInt8 lanes are not vectorized; these are a
/// handful of 64-bit operations, which LLVM may also pair into vector instructions).
struct Bytes32 {
    var w0, w1, w2, w3: UInt64

    @inline(__always) init(_ w0: UInt64, _ w1: UInt64, _ w2: UInt64, _ w3: UInt64) {
        self.w0 = w0; self.w1 = w1; self.w2 = w2; self.w3 = w3
    }

    @inline(__always) init(_ p: UnsafeRawPointer, _ offset: Int) {
        w0 = p.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        w1 = p.loadUnaligned(fromByteOffset: offset &+ 8, as: UInt64.self)
        w2 = p.loadUnaligned(fromByteOffset: offset &+ 16, as: UInt64.self)
        w3 = p.loadUnaligned(fromByteOffset: offset &+ 24, as: UInt64.self)
    }

    /// Each byte shifted right by `n`, then masked with `mask` (one byte, replicated).
    @inline(__always) func bits(_ n: UInt64, _ mask: UInt8) -> Bytes32 {
        let m = UInt64(mask) &* 0x0101_0101_0101_0101
        return Bytes32((w0 &>> n) & m, (w1 &>> n) & m, (w2 &>> n) & m, (w3 &>> n) & m)
    }

    /// Each byte shifted left by `n` (bytes must have room: no carry into the next byte).
    @inline(__always) func shl(_ n: UInt64) -> Bytes32 {
        Bytes32(w0 &<< n, w1 &<< n, w2 &<< n, w3 &<< n)
    }

    @inline(__always) static func | (a: Bytes32, b: Bytes32) -> Bytes32 {
        Bytes32(a.w0 | b.w0, a.w1 | b.w1, a.w2 | b.w2, a.w3 | b.w3)
    }

    @inline(__always) func store(_ out: UnsafeMutableRawPointer, chunk: Int) {
        let o = chunk &* 32
        out.storeBytes(of: w0, toByteOffset: o, as: UInt64.self)
        out.storeBytes(of: w1, toByteOffset: o &+ 8, as: UInt64.self)
        out.storeBytes(of: w2, toByteOffset: o &+ 16, as: UInt64.self)
        out.storeBytes(of: w3, toByteOffset: o &+ 24, as: UInt64.self)
    }
}

/// Writes chunk scale vectors from 16 per-16 scales, and the 16 min coefficients.
@inline(__always)
private func storeScales(_ out: UnsafeMutableRawPointer, scales16 s: SIMD16<Int16>, mins16 m: SIMD16<Int16>,
                         d: Float, dc: Float) {
    for c in 0..<8 {
        let lo = SIMD8<Int16>(repeating: s[2 &* c])
        let hi = SIMD8<Int16>(repeating: s[2 &* c &+ 1])
        out.storeBytes(of: SIMD16<Int16>(lowHalf: lo, highHalf: hi),
                       toByteOffset: KRow.scalesOffset &+ c &* 32, as: SIMD16<Int16>.self)
    }
    out.storeBytes(of: m, toByteOffset: KRow.minsOffset, as: SIMD16<Int16>.self)
    out.storeBytes(of: d, toByteOffset: KRow.dOffset, as: Float.self)
    out.storeBytes(of: dc, toByteOffset: KRow.dcOffset, as: Float.self)
}

/// The 8 six-bit scales and 8 six-bit mins of Q4_K/Q5_K (12 bytes at `p`) as 16 bytes:
/// bytes 0-7 the scales, 8-15 the mins.
@inline(__always)
func scaleMinBytesK4(_ p: UnsafeRawPointer) -> SIMD16<UInt8> {
    let k1: UInt32 = 0x3F3F_3F3F, k2: UInt32 = 0x0F0F_0F0F, k3: UInt32 = 0x0303_0303
    let u0 = p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
    let u1 = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
    let u2 = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
    let words = SIMD4<UInt32>(u0 & k1, (u2 & k2) | (((u0 >> 6) & k3) << 4),
                              u1 & k1, ((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4))
    return unsafeBitCast(words, to: SIMD16<UInt8>.self)
}

/// The scales and mins of Q4_K/Q5_K (12 bytes at `p`), each duplicated to its two 16-value
/// groups.
@inline(__always)
private func scaleMinK4(_ p: UnsafeRawPointer) -> (SIMD16<Int16>, SIMD16<Int16>) {
    let bytes = scaleMinBytesK4(p)
    var sc = SIMD16<Int16>()
    var mn = SIMD16<Int16>()
    for j in 0..<8 {
        sc[2 * j] = Int16(bytes[j]); sc[2 * j + 1] = Int16(bytes[j])
        mn[2 * j] = Int16(bytes[8 + j]); mn[2 * j + 1] = Int16(bytes[8 + j])
    }
    return (sc, mn)
}

/// The 16 six-bit scales of Q3_K (12 bytes at `p`: low 4 bits from bytes 0-7, high 2 bits
/// from bytes 8-11), unsigned (the format subtracts 32).
@inline(__always)
func scaleBytesQ3_K(_ p: UnsafeRawPointer) -> SIMD16<UInt8> {
    let a0 = p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
    let a1 = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
    let t = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
    let k1: UInt32 = 0x0303_0303, k2: UInt32 = 0x0F0F_0F0F
    let words = SIMD4<UInt32>((a0 & k2) | (((t >> 0) & k1) << 4), (a1 & k2) | (((t >> 2) & k1) << 4),
                              ((a0 >> 4) & k2) | (((t >> 4) & k1) << 4), ((a1 >> 4) & k2) | (((t >> 6) & k1) << 4))
    return unsafeBitCast(words, to: SIMD16<UInt8>.self)
}

enum Q4_KFormat: KFormat {
    static var blockBytes: Int { 144 }
    @inline(__always)
    static func unpack(_ p: UnsafeRawPointer, _ out: UnsafeMutableRawPointer) {
        for j in 0..<4 {
            let b = Bytes32(p, 16 &+ 32 &* j)
            b.bits(0, 0x0F).store(out, chunk: 2 &* j)
            b.bits(4, 0x0F).store(out, chunk: 2 &* j &+ 1)
        }
        let (sc, mn) = scaleMinK4(p + 4)
        storeScales(out, scales16: sc, mins16: mn, d: loadHalf(p), dc: -loadHalf(p, 2))
    }
}

enum Q5_KFormat: KFormat {
    static var blockBytes: Int { 176 }
    @inline(__always)
    static func unpack(_ p: UnsafeRawPointer, _ out: UnsafeMutableRawPointer) {
        let h = Bytes32(p, 16)
        for j in 0..<4 {
            let b = Bytes32(p, 48 &+ 32 &* j)
            let h0 = h.bits(UInt64(2 &* j), 1).shl(4)
            let h1 = h.bits(UInt64(2 &* j &+ 1), 1).shl(4)
            (b.bits(0, 0x0F) | h0).store(out, chunk: 2 &* j)
            (b.bits(4, 0x0F) | h1).store(out, chunk: 2 &* j &+ 1)
        }
        let (sc, mn) = scaleMinK4(p + 4)
        storeScales(out, scales16: sc, mins16: mn, d: loadHalf(p), dc: -loadHalf(p, 2))
    }
}

enum Q6_KFormat: KFormat {
    static var blockBytes: Int { 210 }
    @inline(__always)
    static func unpack(_ p: UnsafeRawPointer, _ out: UnsafeMutableRawPointer) {
        for n in 0..<2 {
            let l0 = Bytes32(p, 64 &* n)
            let l1 = Bytes32(p, 64 &* n &+ 32)
            let h = Bytes32(p, 128 &+ 32 &* n)
            (l0.bits(0, 0x0F) | h.bits(0, 3).shl(4)).store(out, chunk: 4 &* n)
            (l1.bits(0, 0x0F) | h.bits(2, 3).shl(4)).store(out, chunk: 4 &* n &+ 1)
            (l0.bits(4, 0x0F) | h.bits(4, 3).shl(4)).store(out, chunk: 4 &* n &+ 2)
            (l1.bits(4, 0x0F) | h.bits(6, 3).shl(4)).store(out, chunk: 4 &* n &+ 3)
        }
        let s8 = p.loadUnaligned(fromByteOffset: 192, as: SIMD16<Int8>.self)
        let s16 = SIMD16<Int16>(truncatingIfNeeded: s8)
        let d = loadHalf(p, 208)
        storeScales(out, scales16: s16, mins16: s16, d: d, dc: -32 * d)
    }
}

enum Q2_KFormat: KFormat {
    static var blockBytes: Int { 84 }
    @inline(__always)
    static func unpack(_ p: UnsafeRawPointer, _ out: UnsafeMutableRawPointer) {
        for n in 0..<2 {
            let b = Bytes32(p, 16 &+ 32 &* n)
            b.bits(0, 3).store(out, chunk: 4 &* n)
            b.bits(2, 3).store(out, chunk: 4 &* n &+ 1)
            b.bits(4, 3).store(out, chunk: 4 &* n &+ 2)
            b.bits(6, 3).store(out, chunk: 4 &* n &+ 3)
        }
        var sc = SIMD16<Int16>(), mn = SIMD16<Int16>()
        for k in 0..<16 {
            let v = p.load(fromByteOffset: k, as: UInt8.self)
            sc[k] = Int16(v & 0x0F)
            mn[k] = Int16(v >> 4)
        }
        storeScales(out, scales16: sc, mins16: mn, d: loadHalf(p, 80), dc: -loadHalf(p, 82))
    }
}

enum Q3_KFormat: KFormat {
    static var blockBytes: Int { 110 }
    @inline(__always)
    static func unpack(_ p: UnsafeRawPointer, _ out: UnsafeMutableRawPointer) {
        let hm = Bytes32(p, 0)
        for n in 0..<2 {
            let b = Bytes32(p, 32 &+ 32 &* n)
            for j in 0..<4 {
                let low = b.bits(UInt64(2 &* j), 3)
                let high = hm.bits(UInt64(4 &* n &+ j), 1).shl(2)
                (low | high).store(out, chunk: 4 &* n &+ j)
            }
        }
        let sc = SIMD16<Int16>(truncatingIfNeeded: scaleBytesQ3_K(p + 96)) &- 32
        let d = loadHalf(p, 108)
        storeScales(out, scales16: sc, mins16: sc, d: d, dc: -4 * d)
    }
}

/// Whether one-token products of Q4_K/Q6_K use the direct kernels (default) rather than the
/// unpack-then-dot path (`MOE_K_DIRECT=0`, for experiments and tests of the latter).
nonisolated(unsafe) var directDecode: Bool = {
    if let v = getenv("MOE_K_DIRECT") { return atoi(v) != 0 }
    return true
}()

enum KQuantKernel {
    /// Dot product of an unpacked row (`superBlocks` KRows at `w`) with one token's
    /// q8x256 activations.
    @inline(__always)
    static func dot(_ w: UnsafeRawPointer, superBlocks: Int, _ aq: UnsafePointer<Int8>,
                    _ ad: UnsafePointer<Float>, _ bsums: UnsafePointer<Int16>) -> Float {
        #if arch(x86_64) && !MOE_PORTABLE_SIMD
        var acc = _mm256_setzero_ps()
        for sb in 0..<superBlocks {
            let k = w + sb &* KRow.bytes
            let a = UnsafeRawPointer(aq + sb &* 256)
            var i0 = _mm256_setzero_si256()
            var i1 = _mm256_setzero_si256()
            for c in stride(from: 0, to: 8, by: 2) {
                let q0 = k.load(fromByteOffset: c &* 32, as: __m256i.self)
                let q1 = k.load(fromByteOffset: c &* 32 &+ 32, as: __m256i.self)
                let x0 = _mm256_loadu_si256(a.advanced(by: c &* 32).assumingMemoryBound(to: __m256i.self))
                let x1 = _mm256_loadu_si256(a.advanced(by: c &* 32 &+ 32).assumingMemoryBound(to: __m256i.self))
                let s0 = k.load(fromByteOffset: KRow.scalesOffset &+ c &* 32, as: __m256i.self)
                let s1 = k.load(fromByteOffset: KRow.scalesOffset &+ c &* 32 &+ 32, as: __m256i.self)
                i0 = _mm256_add_epi32(i0, _mm256_madd_epi16(_mm256_maddubs_epi16(q0, x0), s0))
                i1 = _mm256_add_epi32(i1, _mm256_madd_epi16(_mm256_maddubs_epi16(q1, x1), s1))
            }
            let mc = k.load(fromByteOffset: KRow.minsOffset, as: __m256i.self)
            let bs = _mm256_loadu_si256(UnsafeRawPointer(bsums + sb &* 16).assumingMemoryBound(to: __m256i.self))
            let m = _mm256_madd_epi16(mc, bs)
            let da = ad[sb]
            let d = k.load(fromByteOffset: KRow.dOffset, as: Float.self) * da
            let dc = k.load(fromByteOffset: KRow.dcOffset, as: Float.self) * da
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(i0, i1)), _mm256_set1_ps(d), acc)
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(dc), acc)
        }
        return acc.sum()
        #else
        var acc: Float = 0
        for sb in 0..<superBlocks {
            let k = w + sb &* KRow.bytes
            let a = UnsafeRawPointer(aq + sb &* 256)
            var isum: Int32 = 0
            for c in 0..<8 {
                let q = k.load(fromByteOffset: c &* 32, as: SIMD32<UInt8>.self)
                let x = a.loadUnaligned(fromByteOffset: c &* 32, as: SIMD32<Int8>.self)
                let prod = SIMD32<Int16>(truncatingIfNeeded: q) &* SIMD32<Int16>(truncatingIfNeeded: x)
                let lo = SIMD16<Int32>(truncatingIfNeeded: prod.lowHalf).wrappedSum()
                let hi = SIMD16<Int32>(truncatingIfNeeded: prod.highHalf).wrappedSum()
                let s0 = Int32(k.load(fromByteOffset: KRow.scalesOffset &+ c &* 32, as: Int16.self))
                let s1 = Int32(k.load(fromByteOffset: KRow.scalesOffset &+ c &* 32 &+ 16, as: Int16.self))
                isum &+= lo &* s0 &+ hi &* s1
            }
            let mc = SIMD16<Int32>(truncatingIfNeeded: k.load(fromByteOffset: KRow.minsOffset, as: SIMD16<Int16>.self))
            let bs = SIMD16<Int32>(truncatingIfNeeded: UnsafeRawPointer(bsums + sb &* 16).loadUnaligned(as: SIMD16<Int16>.self))
            let msum = (mc &* bs).wrappedSum()
            let da = ad[sb]
            let d = k.load(fromByteOffset: KRow.dOffset, as: Float.self)
            let dc = k.load(fromByteOffset: KRow.dcOffset, as: Float.self)
            acc += da * (d * Float(isum) + dc * Float(msum))
        }
        return acc
        #endif
    }

    #if arch(x86_64) && !MOE_PORTABLE_SIMD
    /// Products of unpacked rows `w` and `w + rowStride` with tokens `token` and `token + 1`:
    /// (row0·t0, row1·t0, row0·t1, row1·t1). Same arithmetic as `dot`, so results are equal.
    @inline(__always)
    static func dot2x2(_ w: UnsafeRawPointer, rowStride: Int, superBlocks: Int, act: Activations,
                       token: Int) -> (Float, Float, Float, Float) {
        let aq0 = UnsafeRawPointer(act.tokenQuants(token)), aq1 = UnsafeRawPointer(act.tokenQuants(token &+ 1))
        let ad0 = act.tokenScales(token), ad1 = act.tokenScales(token &+ 1)
        let bs0 = act.tokenSums16(token), bs1 = act.tokenSums16(token &+ 1)
        let w1 = w + rowStride
        var f00 = _mm256_setzero_ps(), f10 = _mm256_setzero_ps()
        var f01 = _mm256_setzero_ps(), f11 = _mm256_setzero_ps()
        for sb in 0..<superBlocks {
            let k0 = w + sb &* KRow.bytes
            let k1 = w1 + sb &* KRow.bytes
            let a0 = aq0 + sb &* 256
            let a1 = aq1 + sb &* 256
            var i00 = _mm256_setzero_si256(), i10 = _mm256_setzero_si256()
            var i01 = _mm256_setzero_si256(), i11 = _mm256_setzero_si256()
            for c in 0..<8 {
                let q0 = k0.load(fromByteOffset: c &* 32, as: __m256i.self)
                let q1 = k1.load(fromByteOffset: c &* 32, as: __m256i.self)
                let s0 = k0.load(fromByteOffset: KRow.scalesOffset &+ c &* 32, as: __m256i.self)
                let s1 = k1.load(fromByteOffset: KRow.scalesOffset &+ c &* 32, as: __m256i.self)
                let x0 = _mm256_loadu_si256(a0.advanced(by: c &* 32).assumingMemoryBound(to: __m256i.self))
                let x1 = _mm256_loadu_si256(a1.advanced(by: c &* 32).assumingMemoryBound(to: __m256i.self))
                i00 = _mm256_add_epi32(i00, _mm256_madd_epi16(_mm256_maddubs_epi16(q0, x0), s0))
                i10 = _mm256_add_epi32(i10, _mm256_madd_epi16(_mm256_maddubs_epi16(q1, x0), s1))
                i01 = _mm256_add_epi32(i01, _mm256_madd_epi16(_mm256_maddubs_epi16(q0, x1), s0))
                i11 = _mm256_add_epi32(i11, _mm256_madd_epi16(_mm256_maddubs_epi16(q1, x1), s1))
            }
            let mc0 = k0.load(fromByteOffset: KRow.minsOffset, as: __m256i.self)
            let mc1 = k1.load(fromByteOffset: KRow.minsOffset, as: __m256i.self)
            let b0 = _mm256_loadu_si256(UnsafeRawPointer(bs0 + sb &* 16).assumingMemoryBound(to: __m256i.self))
            let b1 = _mm256_loadu_si256(UnsafeRawPointer(bs1 + sb &* 16).assumingMemoryBound(to: __m256i.self))
            let d0 = k0.load(fromByteOffset: KRow.dOffset, as: Float.self)
            let d1 = k1.load(fromByteOffset: KRow.dOffset, as: Float.self)
            let dc0 = k0.load(fromByteOffset: KRow.dcOffset, as: Float.self)
            let dc1 = k1.load(fromByteOffset: KRow.dcOffset, as: Float.self)
            let da0 = ad0[sb], da1 = ad1[sb]
            f00 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i00), _mm256_set1_ps(d0 * da0), f00)
            f00 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mc0, b0)), _mm256_set1_ps(dc0 * da0), f00)
            f10 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i10), _mm256_set1_ps(d1 * da0), f10)
            f10 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mc1, b0)), _mm256_set1_ps(dc1 * da0), f10)
            f01 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i01), _mm256_set1_ps(d0 * da1), f01)
            f01 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mc0, b1)), _mm256_set1_ps(dc0 * da1), f01)
            f11 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i11), _mm256_set1_ps(d1 * da1), f11)
            f11 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mc1, b1)), _mm256_set1_ps(dc1 * da1), f11)
        }
        return (f00.sum(), f10.sum(), f01.sum(), f11.sum())
    }

    @inline(__always)
    static func hsum(_ v: __m256) -> Float { v.sum() }

    @inline(__always)
    static func halves(_ v: __m256i) -> (__m128i, __m128i) {
        let w = v
        return (SIMD2<Int64>(w[0], w[1]), SIMD2<Int64>(w[2], w[3]))
    }

    /// Q4_K/Q5_K's 12 bytes of six-bit scales and mins at `p`: the 8 scales as Int16 in both
    /// 128-bit halves, and Σ min·(sum of the activations of its 32 values) in 4 lanes (for
    /// `dmin`; `bsums` holds the activation sums per 16 values).
    @inline(__always)
    static func scalesAndMinTermsK4(_ p: UnsafeRawPointer, _ bsums: UnsafePointer<Int16>) -> (__m256i, SIMD4<Float>) {
        let packed = unsafeBitCast(scaleMinBytesK4(p), to: __m128i.self)  // bytes 0-7 scales, 8-15 mins
        let (scales128, mins128) = halves(_mm256_cvtepu8_epi16(packed))
        let (bsLo, bsHi) = halves(_mm256_loadu_si256(UnsafeRawPointer(bsums).assumingMemoryBound(to: __m256i.self)))
        let prod = _mm_madd_epi16(mins128, _mm_hadd_epi16(bsLo, bsHi))
        return (_mm256_set_m128i(scales128, scales128), SIMD4<Float>(unsafeBitCast(prod, to: SIMD4<Int32>.self)))
    }

    /// Scales `2j` and `2j+1` of `scales` (8 Int16 in both halves) spread over every lane:
    /// those of the low and the high 32 values of 64-value chunk `j`.
    @inline(__always)
    static func scalePair(_ scales: __m256i, _ j: Int) -> (__m256i, __m256i) {
        let (lo, hi) = scaleSelectors(j)
        return (_mm256_shuffle_epi8(scales, _mm256_set1_epi16(lo)), _mm256_shuffle_epi8(scales, _mm256_set1_epi16(hi)))
    }

    /// Q4_K row · q8x256 token straight from the packed blocks (decode: no unpacking pass).
    @inline(__always)
    static func dotQ4_K(_ w: UnsafeRawPointer, superBlocks: Int, _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                        _ bsums: UnsafePointer<Int16>, _ h: UnsafePointer<Float>, ahead: Int) -> Float {
        dotK4(w, superBlocks: superBlocks, aq, ad, bsums, h, ahead: ahead, fifthBit: false)
    }

    /// Q5_K row · q8x256 token straight from the packed blocks: Q4_K with a fifth bit per
    /// quant in a 32-byte mask (bit 2j of byte l for value 64j+l, bit 2j+1 for 64j+32+l).
    @inline(__always)
    static func dotQ5_K(_ w: UnsafeRawPointer, superBlocks: Int, _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                        _ bsums: UnsafePointer<Int16>, _ h: UnsafePointer<Float>, ahead: Int) -> Float {
        dotK4(w, superBlocks: superBlocks, aq, ad, bsums, h, ahead: ahead, fifthBit: true)
    }

    /// The Q4_K and Q5_K walk (`fifthBit` is a constant at each call, so each gets its own
    /// straight-line loop): d, dmin, 12 bytes of scales and mins, for Q5_K the 32-byte
    /// mask, then 128 bytes of nibbles, 32 per 64 values.
    @inline(__always)
    private static func dotK4(_ w: UnsafeRawPointer, superBlocks: Int, _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                              _ bsums: UnsafePointer<Int16>, _ h: UnsafePointer<Float>, ahead: Int, fifthBit: Bool) -> Float {
        var acc = _mm256_setzero_ps()
        var accMin = SIMD4<Float>()
        let low4 = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10)
        let blockBytes = fifthBit ? 176 : 144, quantsOffset = fifthBit ? 48 : 16
        for sb in 0..<superBlocks {
            let p = w + sb &* blockBytes
            if ahead != 0 { prefetchLines(p + ahead, bytes: blockBytes) }
            let a = UnsafeRawPointer(aq + sb &* 256)
            let da = ad[sb]
            let d = loadHalf(p, 0, h) * da
            let dmin = loadHalf(p, 2, h) * da
            let (scales, minTerms) = scalesAndMinTermsK4(p + 4, bsums + sb &* 16)
            accMin = accMin.addingProduct(minTerms, dmin)
            var sumi = _mm256_setzero_si256()
            var hb = fifthBit ? _mm256_loadu_si256((p + 16).assumingMemoryBound(to: __m256i.self)) : _mm256_setzero_si256()
            for j in 0..<4 {
                let (scaleL, scaleH) = scalePair(scales, j)
                let bits = _mm256_loadu_si256((p + (quantsOffset &+ 32 &* j)).assumingMemoryBound(to: __m256i.self))
                var ql = _mm256_and_si256(bits, low4)
                var qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4)
                if fifthBit {
                    ql = _mm256_or_si256(ql, _mm256_and_si256(_mm256_slli_epi16(hb, 4), bit4))
                    qh = _mm256_or_si256(qh, _mm256_and_si256(_mm256_slli_epi16(hb, 3), bit4))
                    hb = _mm256_srli_epi16(hb, 2)
                }
                let xl = _mm256_loadu_si256((a + 64 &* j).assumingMemoryBound(to: __m256i.self))
                let xh = _mm256_loadu_si256((a + (64 &* j &+ 32)).assumingMemoryBound(to: __m256i.self))
                let pl = _mm256_madd_epi16(scaleL, _mm256_maddubs_epi16(ql, xl))
                let ph = _mm256_madd_epi16(scaleH, _mm256_maddubs_epi16(qh, xh))
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph))
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc)
        }
        return hsum(acc) - accMin.sum()
    }

    /// Q6_K row · q8x256 token straight from the packed blocks.
    @inline(__always)
    static func dotQ6_K(_ w: UnsafeRawPointer, superBlocks: Int, _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                        _ bsums: UnsafePointer<Int16>, _ h: UnsafePointer<Float>, ahead: Int) -> Float {
        var acc = _mm256_setzero_ps()
        let m3 = _mm256_set1_epi8(3), m15 = _mm256_set1_epi8(15)
        let m12 = _mm256_set1_epi8(12), m48 = _mm256_set1_epi8(48), mC0 = _mm256_set1_epi8(-64)
        for sb in 0..<superBlocks {
            let p = w + sb &* 210
            if ahead != 0 { prefetchLines(p + ahead, bytes: 210) }
            let a = UnsafeRawPointer(aq + sb &* 256)
            let d = loadHalf(p, 208, h) * ad[sb]
            let bs = _mm256_loadu_si256(UnsafeRawPointer(bsums + sb &* 16).assumingMemoryBound(to: __m256i.self))
            let scales = _mm_loadu_si128((p + 192).assumingMemoryBound(to: __m128i.self))
            let offsetSum = _mm256_slli_epi32(_mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(scales)), 5)
            var sumi = _mm256_setzero_si256()
            for j in 0..<2 {
                let b1 = _mm256_loadu_si256((p + 64 &* j).assumingMemoryBound(to: __m256i.self))
                let b2 = _mm256_loadu_si256((p + (64 &* j &+ 32)).assumingMemoryBound(to: __m256i.self))
                let hb = _mm256_loadu_si256((p + (128 &+ 32 &* j)).assumingMemoryBound(to: __m256i.self))
                let h0 = _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4)
                let h1 = _mm256_slli_epi16(_mm256_and_si256(hb, m12), 2)
                let h2 = _mm256_and_si256(hb, m48)
                let h3 = _mm256_srli_epi16(_mm256_and_si256(hb, mC0), 2)
                let q0 = _mm256_or_si256(_mm256_and_si256(b1, m15), h0)
                let q1 = _mm256_or_si256(_mm256_and_si256(b2, m15), h1)
                let q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m15), h2)
                let q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m15), h3)
                let base = 128 &* j
                let x0 = _mm256_loadu_si256((a + base).assumingMemoryBound(to: __m256i.self))
                let x1 = _mm256_loadu_si256((a + (base &+ 32)).assumingMemoryBound(to: __m256i.self))
                let x2 = _mm256_loadu_si256((a + (base &+ 64)).assumingMemoryBound(to: __m256i.self))
                let x3 = _mm256_loadu_si256((a + (base &+ 96)).assumingMemoryBound(to: __m256i.self))
                let c = 4 &* j
                @inline(__always) func scale(_ i: Int) -> __m256i {
                    let lo = Int64(2 &* i) &* 0x0101_0101_0101_0101
                    let hi = Int64(2 &* i &+ 1) &* 0x0101_0101_0101_0101
                    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, _mm_set_epi64x(hi, lo)))
                }
                let p0 = _mm256_madd_epi16(scale(c), _mm256_maddubs_epi16(q0, x0))
                let p1 = _mm256_madd_epi16(scale(c &+ 1), _mm256_maddubs_epi16(q1, x1))
                let p2 = _mm256_madd_epi16(scale(c &+ 2), _mm256_maddubs_epi16(q2, x2))
                let p3 = _mm256_madd_epi16(scale(c &+ 3), _mm256_maddubs_epi16(q3, x3))
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3)))
            }
            sumi = _mm256_sub_epi32(sumi, offsetSum)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc)
        }
        return hsum(acc)
    }

    /// The shuffle that spreads the Int16 scales `2j` (low 128 bits) and `2j+1` (high 128
    /// bits) of a vector holding 8 scales in both halves over every lane of its half: the
    /// two 16-value groups of a 32-value chunk.
    @inline(__always)
    static func scalePairShuffle(_ j: Int) -> __m256i {
        let (lo, hi) = scaleSelectors(j)
        return _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
    }

    /// `_mm256_shuffle_epi8` selectors of the Int16 lanes `2j` and `2j+1` (byte pairs).
    @inline(__always)
    static func scaleSelectors(_ j: Int) -> (Int16, Int16) {
        (Int16(4 &* j) | Int16(4 &* j &+ 1) << 8, Int16(4 &* j &+ 2) | Int16(4 &* j &+ 3) << 8)
    }

    /// Σ over 128 values (four 32-value chunks of quants `q`, 16-value groups scaled by
    /// `scales`, which holds the 8 scales of these 128 values in both halves) of scale ·
    /// quant · activation, the activations at `a`: the common core of the Q2_K and Q3_K
    /// walks.
    @inline(__always)
    static func scaledSums128(_ scales: __m256i, _ q0: __m256i, _ q1: __m256i, _ q2: __m256i, _ q3: __m256i,
                              _ a: UnsafeRawPointer) -> __m256i {
        let x0 = _mm256_loadu_si256(a.assumingMemoryBound(to: __m256i.self))
        let x1 = _mm256_loadu_si256((a + 32).assumingMemoryBound(to: __m256i.self))
        let x2 = _mm256_loadu_si256((a + 64).assumingMemoryBound(to: __m256i.self))
        let x3 = _mm256_loadu_si256((a + 96).assumingMemoryBound(to: __m256i.self))
        let p0 = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, scalePairShuffle(0)), _mm256_maddubs_epi16(q0, x0))
        let p1 = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, scalePairShuffle(1)), _mm256_maddubs_epi16(q1, x1))
        let p2 = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, scalePairShuffle(2)), _mm256_maddubs_epi16(q2, x2))
        let p3 = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, scalePairShuffle(3)), _mm256_maddubs_epi16(q3, x3))
        return _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3))
    }

    /// Q2_K row · q8x256 token straight from the packed blocks: 2-bit quants with a 4-bit
    /// scale and a 4-bit min per 16 values (`d·sc·q − dmin·m`).
    @inline(__always)
    static func dotQ2_K(_ w: UnsafeRawPointer, superBlocks: Int, _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                        _ bsums: UnsafePointer<Int16>, _ h: UnsafePointer<Float>, ahead: Int) -> Float {
        var acc = _mm256_setzero_ps()
        var accMin = _mm256_setzero_ps()
        let m3 = _mm256_set1_epi8(3), m15 = _mm_set1_epi8(15)
        for sb in 0..<superBlocks {
            let p = w + sb &* 84
            if ahead != 0 { prefetchLines(p + ahead, bytes: 84) }
            let a = UnsafeRawPointer(aq + sb &* 256)
            let da = ad[sb]
            let d = loadHalf(p, 80, h) * da
            let dmin = loadHalf(p, 82, h) * da
            let packed = _mm_loadu_si128(p.assumingMemoryBound(to: __m128i.self))
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m15))
            let bs = _mm256_loadu_si256(UnsafeRawPointer(bsums + sb &* 16).assumingMemoryBound(to: __m256i.self))
            accMin = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)), _mm256_set1_ps(dmin), accMin)
            let scales16 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, m15))
            let (scalesLo, scalesHi) = halves(scales16)
            var sumi = _mm256_setzero_si256()
            for n in 0..<2 {
                let scales = n == 0 ? _mm256_set_m128i(scalesLo, scalesLo) : _mm256_set_m128i(scalesHi, scalesHi)
                let bits = _mm256_loadu_si256((p + (16 &+ 32 &* n)).assumingMemoryBound(to: __m256i.self))
                let q0 = _mm256_and_si256(bits, m3)
                let q1 = _mm256_and_si256(_mm256_srli_epi16(bits, 2), m3)
                let q2 = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m3)
                let q3 = _mm256_and_si256(_mm256_srli_epi16(bits, 6), m3)
                sumi = _mm256_add_epi32(sumi, scaledSums128(scales, q0, q1, q2, q3, a + 128 &* n))
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc)
        }
        return hsum(acc) - hsum(accMin)
    }

    /// Q3_K row · q8x256 token straight from the packed blocks: 3-bit quants (2 low bits,
    /// 1 high bit in a separate mask) with a signed 6-bit scale per 16 values
    /// (`d·(sc−32)·(q−4)`).
    @inline(__always)
    static func dotQ3_K(_ w: UnsafeRawPointer, superBlocks: Int, _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                        _ bsums: UnsafePointer<Int16>, _ h: UnsafePointer<Float>, ahead: Int) -> Float {
        var acc = _mm256_setzero_ps()
        let m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4)
        for sb in 0..<superBlocks {
            let p = w + sb &* 110
            if ahead != 0 { prefetchLines(p + ahead, bytes: 110) }
            let a = UnsafeRawPointer(aq + sb &* 256)
            let d = loadHalf(p, 108, h) * ad[sb]
            let packed = unsafeBitCast(scaleBytesQ3_K(p + 96), to: __m128i.self)
            let scales16 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(packed), _mm256_set1_epi16(32))
            // The offset 4 of every quant: 4 · Σ_k sc_k · bsum_k, subtracted at the end.
            let bs = _mm256_loadu_si256(UnsafeRawPointer(bsums + sb &* 16).assumingMemoryBound(to: __m256i.self))
            let offsetSum = _mm256_slli_epi32(_mm256_madd_epi16(scales16, bs), 2)
            let (scalesLo, scalesHi) = halves(scales16)
            let hm = _mm256_loadu_si256(p.assumingMemoryBound(to: __m256i.self))
            var sumi = _mm256_setzero_si256()
            for n in 0..<2 {
                let scales = n == 0 ? _mm256_set_m128i(scalesLo, scalesLo) : _mm256_set_m128i(scalesHi, scalesHi)
                let bits = _mm256_loadu_si256((p + (32 &+ 32 &* n)).assumingMemoryBound(to: __m256i.self))
                // The high bit of chunk (n, j) is bit 4n+j of each mask byte; moved to bit 2.
                let hmn = n == 0 ? _mm256_slli_epi16(hm, 2) : _mm256_srli_epi16(hm, 2)
                let q0 = _mm256_or_si256(_mm256_and_si256(bits, m3), _mm256_and_si256(hmn, m4))
                let q1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 2), m3),
                                         _mm256_and_si256(_mm256_srli_epi16(hmn, 1), m4))
                let q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m3),
                                         _mm256_and_si256(_mm256_srli_epi16(hmn, 2), m4))
                let q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 6), m3),
                                         _mm256_and_si256(_mm256_srli_epi16(hmn, 3), m4))
                sumi = _mm256_add_epi32(sumi, scaledSums128(scales, q0, q1, q2, q3, a + 128 &* n))
            }
            sumi = _mm256_sub_epi32(sumi, offsetSum)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc)
        }
        return hsum(acc)
    }
    #endif

    /// Decode (one token) for the types with a direct kernel; false if `F` has none.
    @inline(__always)
    static func runDirect<F: KFormat>(_: F.Type, weight: WeightMatrix, rows rowRange: Range<Int>, token t: Int,
                                      act: Activations, output: UnsafeMutablePointer<Float>, outputStride: Int) -> Bool {
        #if arch(x86_64) && !MOE_PORTABLE_SIMD
        guard F.self == Q4_KFormat.self || F.self == Q6_KFormat.self || F.self == Q2_KFormat.self
                || F.self == Q3_KFormat.self || F.self == Q5_KFormat.self else { return false }
        let superBlocks = weight.columns / 256
        let h = HalfTable.pointer
        let aq = act.tokenQuants(t), ad = act.tokenScales(t), bs = act.tokenSums16(t)
        let out = output + t &* outputStride
        let ahead = decodePrefetchBytes
        for r in rowRange {
            if F.self == Q4_KFormat.self {
                out[r] = dotQ4_K(weight.row(r), superBlocks: superBlocks, aq, ad, bs, h, ahead: ahead)
            } else if F.self == Q6_KFormat.self {
                out[r] = dotQ6_K(weight.row(r), superBlocks: superBlocks, aq, ad, bs, h, ahead: ahead)
            } else if F.self == Q5_KFormat.self {
                out[r] = dotQ5_K(weight.row(r), superBlocks: superBlocks, aq, ad, bs, h, ahead: ahead)
            } else if F.self == Q2_KFormat.self {
                out[r] = dotQ2_K(weight.row(r), superBlocks: superBlocks, aq, ad, bs, h, ahead: ahead)
            } else {
                out[r] = dotQ3_K(weight.row(r), superBlocks: superBlocks, aq, ad, bs, h, ahead: ahead)
            }
        }
        return true
        #else
        return false
        #endif
    }

    /// Bytes of per-thread scratch a task needs (4 unpacked rows).
    static func scratchBytes(columns: Int) -> Int { 4 * (columns / 256) * KRow.bytes }

    /// Computes rows `rowRange` for tokens `tokenRange` (see Block32Kernel.run).
    @inline(__always)
    static func run<F: KFormat>(_: F.Type, weight: WeightMatrix, rows rowRange: Range<Int>,
                                tokens tokenRange: Range<Int>, act: Activations,
                                output: UnsafeMutablePointer<Float>, outputStride: Int,
                                scratch: UnsafeMutableRawPointer) {
        if tokenRange.count == 1 && directDecode,
           runDirect(F.self, weight: weight, rows: rowRange, token: tokenRange.lowerBound, act: act,
                     output: output, outputStride: outputStride) {
            return
        }
        let superBlocks = weight.columns / 256
        let rowStride = superBlocks &* KRow.bytes
        let ahead = decodePrefetchBytes
        var r = rowRange.lowerBound
        while r < rowRange.upperBound {
            let n = min(4, rowRange.upperBound - r)
            for i in 0..<n {
                let src = weight.row(r &+ i)
                let dst = scratch + i &* rowStride
                for sb in 0..<superBlocks {
                    if ahead != 0 { prefetchLines(src + (sb &* F.blockBytes &+ ahead), bytes: F.blockBytes) }
                    F.unpack(src + sb &* F.blockBytes, dst + sb &* KRow.bytes)
                }
            }
            var t = tokenRange.lowerBound
            #if arch(x86_64) && !MOE_PORTABLE_SIMD
            // Two tokens against two rows at a time: every load of quants, scales and
            // activations serves two products.
            while t &+ 1 < tokenRange.upperBound {
                let out0 = output + (t &* outputStride &+ r)
                let out1 = output + ((t &+ 1) &* outputStride &+ r)
                var i = 0
                while i &+ 1 < n {
                    let p = dot2x2(scratch + i &* rowStride, rowStride: rowStride, superBlocks: superBlocks,
                                   act: act, token: t)
                    out0[i] = p.0; out0[i &+ 1] = p.1; out1[i] = p.2; out1[i &+ 1] = p.3
                    i &+= 2
                }
                if i < n {
                    let w = scratch + i &* rowStride
                    out0[i] = dot(w, superBlocks: superBlocks, act.tokenQuants(t), act.tokenScales(t), act.tokenSums16(t))
                    out1[i] = dot(w, superBlocks: superBlocks, act.tokenQuants(t &+ 1), act.tokenScales(t &+ 1),
                                  act.tokenSums16(t &+ 1))
                }
                t &+= 2
            }
            #endif
            while t < tokenRange.upperBound {
                let aq = act.tokenQuants(t), ad = act.tokenScales(t), bs = act.tokenSums16(t)
                let out = output + (t &* outputStride &+ r)
                for i in 0..<n {
                    out[i] = dot(scratch + i &* rowStride, superBlocks: superBlocks, aq, ad, bs)
                }
                t &+= 1
            }
            r += 4
        }
    }
}
