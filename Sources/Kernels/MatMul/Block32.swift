import CPrefetch
import GGUF
#if canImport(Glibc)
import Glibc
#endif
#if arch(x86_64) && !MOE_PORTABLE_SIMD
import _Builtin_intrinsics.intel
#endif

// Weight formats with 32-value blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) against `q8x32`
// activations. Every weight value is `d * q + c` with an integer quant `q` and, per block,
// a scale `d` and an offset `c` (-8d for Q4_0, -16d for Q5_0, the stored min for Q4_1/Q5_1,
// none for Q8_0). With activations `da * qa` the block's dot product is
//     d * da * Σ q·qa  +  c * (da * Σ qa)
// where the integer sum runs in SIMD registers and `da * Σ qa` comes with the activations.

@inline(__always)
func loadHalf(_ p: UnsafeRawPointer, _ offset: Int = 0) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

/// F16 → F32 for all 65536 bit patterns (256 KB). On the CPUs measured, a table load is much
/// cheaper than a scalar `vcvtph2ps` (plus the `vpinsrw` that feeds it) in the per-block
/// scale path: the Q8_0 dot went from 2.9 to 1.6 ns per block. Only the few table lines
/// that hold the scales in use stay hot.
enum HalfTable {
    nonisolated(unsafe) static let pointer: UnsafePointer<Float> = {
        let t = UnsafeMutablePointer<Float>.allocate(capacity: 65536)
        for i in 0..<65536 { t[i] = Float(Float16(bitPattern: UInt16(i))) }
        return UnsafePointer(t)
    }()
}

@inline(__always)
func loadHalf(_ p: UnsafeRawPointer, _ offset: Int, _ table: UnsafePointer<Float>) -> Float {
    table[Int(p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))]
}

protocol Block32Format {
    static var blockBytes: Int { get }
    /// Quants are signed (Q8_0) rather than unsigned small integers.
    static var isSigned: Bool { get }
    /// The block has an offset term (all but Q8_0).
    static var hasOffset: Bool { get }
    /// When the offset is a fixed multiple of the scale (Q4_0: -8d, Q5_0: -16d): that
    /// multiple divided by 8, so that adding `laneOffset * (da * Σqa)` to each of the 8 lanes
    /// of the integer sum (before scaling by d) applies it with vector operations. 0 otherwise.
    static var laneOffset: Float { get }
    static func scale(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float
    static func offset(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float
    /// The 32 quants in value order (as Int8 bit patterns; unsigned types are 0...31).
    static func quantsPortable(_ p: UnsafeRawPointer) -> SIMD32<UInt8>
    #if arch(x86_64) && !MOE_PORTABLE_SIMD
    static func quants(_ p: UnsafeRawPointer) -> __m256i
    #endif
}

/// Expands 16 bytes of nibble pairs to 32 values: low nibbles first, then high nibbles.
@inline(__always)
func nibblesPortable(_ p: UnsafeRawPointer) -> SIMD32<UInt8> {
    let b = p.loadUnaligned(as: SIMD16<UInt8>.self)
    return SIMD32<UInt8>(lowHalf: b & 0x0F, highHalf: b &>> 4)
}

/// Byte i is 0x10 when bit i of the 32-bit little-endian word at `p` is set.
@inline(__always)
func highBitsPortable(_ p: UnsafeRawPointer) -> SIMD32<UInt8> {
    let b0 = UInt64(p.load(fromByteOffset: 0, as: UInt8.self))
    let b1 = UInt64(p.load(fromByteOffset: 1, as: UInt8.self))
    let b2 = UInt64(p.load(fromByteOffset: 2, as: UInt8.self))
    let b3 = UInt64(p.load(fromByteOffset: 3, as: UInt8.self))
    let spread = SIMD4<UInt64>(b0, b1, b2, b3) &* 0x0101_0101_0101_0101 & 0x8040_2010_0804_0201
    let bytes = unsafeBitCast(spread, to: SIMD32<UInt8>.self)
    return SIMD32<UInt8>(repeating: 0).replacing(with: 0x10, where: bytes .!= 0)
}

#if arch(x86_64) && !MOE_PORTABLE_SIMD
@inline(__always)
func nibblesAVX(_ p: UnsafeRawPointer) -> __m256i {
    let b = _mm_loadu_si128(p.assumingMemoryBound(to: __m128i.self))
    let both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b)
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

@inline(__always)
func highBitsAVX(_ p: UnsafeRawPointer) -> __m256i {
    let word = p.loadUnaligned(as: Int32.self)
    let shuffle = _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202,
                                    0x0101_0101_0101_0101, 0x0000_0000_0000_0000)
    var bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(word), shuffle)
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7FBF_DFEF_F7FB_FDFE))
    let set = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}
#endif

enum Q8_0Format: Block32Format {
    static var laneOffset: Float { 0 }
    static var blockBytes: Int { 34 }
    static var isSigned: Bool { true }
    static var hasOffset: Bool { false }
    @inline(__always) static func scale(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float { loadHalf(p, 0, h) }
    @inline(__always) static func offset(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float { 0 }
    @inline(__always) static func quantsPortable(_ p: UnsafeRawPointer) -> SIMD32<UInt8> {
        p.loadUnaligned(fromByteOffset: 2, as: SIMD32<UInt8>.self)
    }
    #if arch(x86_64) && !MOE_PORTABLE_SIMD
    @inline(__always) static func quants(_ p: UnsafeRawPointer) -> __m256i {
        _mm256_loadu_si256((p + 2).assumingMemoryBound(to: __m256i.self))
    }
    #endif
}

enum Q4_0Format: Block32Format {
    static var laneOffset: Float { -1 }
    static var blockBytes: Int { 18 }
    static var isSigned: Bool { false }
    static var hasOffset: Bool { true }
    @inline(__always) static func scale(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float { loadHalf(p, 0, h) }
    @inline(__always) static func offset(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float { -8 * loadHalf(p, 0, h) }
    @inline(__always) static func quantsPortable(_ p: UnsafeRawPointer) -> SIMD32<UInt8> { nibblesPortable(p + 2) }
    #if arch(x86_64) && !MOE_PORTABLE_SIMD
    @inline(__always) static func quants(_ p: UnsafeRawPointer) -> __m256i { nibblesAVX(p + 2) }
    #endif
}

enum Q4_1Format: Block32Format {
    static var laneOffset: Float { 0 }
    static var blockBytes: Int { 20 }
    static var isSigned: Bool { false }
    static var hasOffset: Bool { true }
    @inline(__always) static func scale(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float { loadHalf(p, 0, h) }
    @inline(__always) static func offset(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float { loadHalf(p, 2, h) }
    @inline(__always) static func quantsPortable(_ p: UnsafeRawPointer) -> SIMD32<UInt8> { nibblesPortable(p + 4) }
    #if arch(x86_64) && !MOE_PORTABLE_SIMD
    @inline(__always) static func quants(_ p: UnsafeRawPointer) -> __m256i { nibblesAVX(p + 4) }
    #endif
}

enum Q5_0Format: Block32Format {
    static var laneOffset: Float { -2 }
    static var blockBytes: Int { 22 }
    static var isSigned: Bool { false }
    static var hasOffset: Bool { true }
    @inline(__always) static func scale(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float { loadHalf(p, 0, h) }
    @inline(__always) static func offset(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float { -16 * loadHalf(p, 0, h) }
    @inline(__always) static func quantsPortable(_ p: UnsafeRawPointer) -> SIMD32<UInt8> {
        nibblesPortable(p + 6) | highBitsPortable(p + 2)
    }
    #if arch(x86_64) && !MOE_PORTABLE_SIMD
    @inline(__always) static func quants(_ p: UnsafeRawPointer) -> __m256i {
        _mm256_or_si256(nibblesAVX(p + 6), highBitsAVX(p + 2))
    }
    #endif
}

enum Q5_1Format: Block32Format {
    static var laneOffset: Float { 0 }
    static var blockBytes: Int { 24 }
    static var isSigned: Bool { false }
    static var hasOffset: Bool { true }
    @inline(__always) static func scale(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float { loadHalf(p, 0, h) }
    @inline(__always) static func offset(_ p: UnsafeRawPointer, _ h: UnsafePointer<Float>) -> Float { loadHalf(p, 2, h) }
    @inline(__always) static func quantsPortable(_ p: UnsafeRawPointer) -> SIMD32<UInt8> {
        nibblesPortable(p + 8) | highBitsPortable(p + 4)
    }
    #if arch(x86_64) && !MOE_PORTABLE_SIMD
    @inline(__always) static func quants(_ p: UnsafeRawPointer) -> __m256i {
        _mm256_or_si256(nibblesAVX(p + 8), highBitsAVX(p + 4))
    }
    #endif
}

/// Register-tiled kernels: 4 weight rows against 1 or 2 tokens, all blocks of the row.
enum Block32Kernel {
    #if arch(x86_64) && !MOE_PORTABLE_SIMD

    /// Integer dot of one block's quants with one activation block, as 8 Int32 lanes.
    @inline(__always)
    static func idot<F: Block32Format>(_: F.Type, _ q: __m256i, _ uq: __m256i, _ a: __m256i) -> __m256i {
        let p: __m256i
        if F.isSigned {
            p = _mm256_maddubs_epi16(uq, _mm256_sign_epi8(a, q))
        } else {
            p = _mm256_maddubs_epi16(q, a)
        }
        return _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }

    @inline(__always)
    static func hsum4(_ a0: __m256, _ a1: __m256, _ a2: __m256, _ a3: __m256) -> SIMD4<Float> {
        let s01 = _mm256_hadd_ps(a0, a1)
        let s23 = _mm256_hadd_ps(a2, a3)
        let s = _mm256_hadd_ps(s01, s23)
        return s.lowHalf + s.highHalf
    }

    @inline(__always)
    static func row1<F: Block32Format>(_ f: F.Type, _ p: UnsafeRawPointer, _ a: __m256i, _ da: __m256,
                                       _ so: __m256, _ h: UnsafePointer<Float>, _ acc: inout __m256) {
        let q = F.quants(p)
        let uq = F.isSigned ? _mm256_sign_epi8(q, q) : q
        let s = idot(f, q, uq, a)
        acc = _mm256_fmadd_ps(scaled(f, s, da, so), _mm256_set1_ps(F.scale(p, h)), acc)
    }

    /// The block's integer sums times the activation scale, plus the lane offset if any.
    @inline(__always)
    static func scaled<F: Block32Format>(_: F.Type, _ s: __m256i, _ da: __m256, _ so: __m256) -> __m256 {
        F.laneOffset != 0 ? _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), da, so) : _mm256_mul_ps(_mm256_cvtepi32_ps(s), da)
    }

    /// `laneOffset * (da * Σqa)` of block b, broadcast (unused when the format has none).
    @inline(__always)
    static func laneOffsets<F: Block32Format>(_: F.Type, _ asum: UnsafePointer<Float>, _ b: Int) -> __m256 {
        F.laneOffset != 0 ? _mm256_set1_ps(asum[b] * F.laneOffset) : _mm256_setzero_ps()
    }

    @inline(__always)
    static func row2<F: Block32Format>(_ f: F.Type, _ p: UnsafeRawPointer, _ a0: __m256i, _ a1: __m256i,
                                       _ da0: __m256, _ da1: __m256, _ so0: __m256, _ so1: __m256,
                                       _ h: UnsafePointer<Float>, _ acc0: inout __m256, _ acc1: inout __m256) {
        let q = F.quants(p)
        let uq = F.isSigned ? _mm256_sign_epi8(q, q) : q
        let d = _mm256_set1_ps(F.scale(p, h))
        let s0 = idot(f, q, uq, a0)
        let s1 = idot(f, q, uq, a1)
        acc0 = _mm256_fmadd_ps(scaled(f, s0, da0, so0), d, acc0)
        acc1 = _mm256_fmadd_ps(scaled(f, s1, da1, so1), d, acc1)
    }

    /// Dot products of rows w0...w3 with token activation (aq, ad, asum): 4 results.
    @inline(__always)
    static func tile4x1<F: Block32Format>(_ f: F.Type, _ w0: UnsafeRawPointer, _ w1: UnsafeRawPointer,
                                          _ w2: UnsafeRawPointer, _ w3: UnsafeRawPointer, blocks: Int,
                                          _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                                          _ asum: UnsafePointer<Float>, _ h: UnsafePointer<Float>, ahead: Int = 0) -> SIMD4<Float> {
        var acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps()
        var acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps()
        var corr = SIMD4<Float>()
        var off = 0
        for b in 0..<blocks {
            if ahead != 0 && b & 1 == 0 { prefetchRows(w0, w1, w2, w3, off &+ ahead) }
            let a = _mm256_loadu_si256(UnsafeRawPointer(aq + b &* 32).assumingMemoryBound(to: __m256i.self))
            let da = _mm256_set1_ps(ad[b])
            let so = laneOffsets(f, asum, b)
            row1(f, w0 + off, a, da, so, h, &acc0)
            row1(f, w1 + off, a, da, so, h, &acc1)
            row1(f, w2 + off, a, da, so, h, &acc2)
            row1(f, w3 + off, a, da, so, h, &acc3)
            if F.hasOffset && F.laneOffset == 0 {
                let c = SIMD4<Float>(F.offset(w0 + off, h), F.offset(w1 + off, h), F.offset(w2 + off, h), F.offset(w3 + off, h))
                corr = corr.addingProduct(c, asum[b])
            }
            off &+= F.blockBytes
        }
        return hsum4(acc0, acc1, acc2, acc3) + corr
    }

    /// One row against one token (a single sequential weight stream). The same arithmetic,
    /// in the same order, as each row of `tile4x1`/`tile4x2` (one accumulator, reduced as
    /// `hsum4` does), so a row's result does not depend on how many tokens the call has: a
    /// token decoded alone gets the bits it gets in a batch.
    @inline(__always)
    static func tile1x1<F: Block32Format>(_ f: F.Type, _ w0: UnsafeRawPointer, blocks: Int,
                                          _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                                          _ asum: UnsafePointer<Float>, _ h: UnsafePointer<Float>, ahead: Int) -> Float {
        var acc = _mm256_setzero_ps()
        var corr: Float = 0
        var off = 0
        for b in 0..<blocks {
            if ahead != 0 && b & 1 == 0 { moe_prefetch_read(w0 + (off &+ ahead)) }
            let a = _mm256_loadu_si256(UnsafeRawPointer(aq + b &* 32).assumingMemoryBound(to: __m256i.self))
            row1(f, w0 + off, a, _mm256_set1_ps(ad[b]), laneOffsets(f, asum, b), h, &acc)
            if F.hasOffset && F.laneOffset == 0 { corr = corr.addingProduct(F.offset(w0 + off, h), asum[b]) }
            off &+= F.blockBytes
        }
        return hsum1(acc) + corr
    }

    /// `hsum4`'s reduction of one accumulator: ((v0+v1)+(v2+v3)) + ((v4+v5)+(v6+v7)).
    @inline(__always)
    static func hsum1(_ v: __m256) -> Float {
        let pairs = _mm256_hadd_ps(v, v)
        let quads = _mm256_hadd_ps(pairs, pairs)
        return quads[0] + quads[4]
    }

    /// Rows w0...w3 against two tokens: (results for token A, results for token B).
    @inline(__always)
    static func tile4x2<F: Block32Format>(_ f: F.Type, _ w0: UnsafeRawPointer, _ w1: UnsafeRawPointer,
                                          _ w2: UnsafeRawPointer, _ w3: UnsafeRawPointer, blocks: Int,
                                          _ aqA: UnsafePointer<Int8>, _ adA: UnsafePointer<Float>, _ asA: UnsafePointer<Float>,
                                          _ aqB: UnsafePointer<Int8>, _ adB: UnsafePointer<Float>, _ asB: UnsafePointer<Float>,
                                          _ h: UnsafePointer<Float>, ahead: Int = 0)
        -> (SIMD4<Float>, SIMD4<Float>) {
        var a00 = _mm256_setzero_ps(), a10 = _mm256_setzero_ps(), a20 = _mm256_setzero_ps(), a30 = _mm256_setzero_ps()
        var a01 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps()
        var corrA = SIMD4<Float>(), corrB = SIMD4<Float>()
        var off = 0
        for b in 0..<blocks {
            if ahead != 0 && b & 1 == 0 { prefetchRows(w0, w1, w2, w3, off &+ ahead) }
            let x = _mm256_loadu_si256(UnsafeRawPointer(aqA + b &* 32).assumingMemoryBound(to: __m256i.self))
            let y = _mm256_loadu_si256(UnsafeRawPointer(aqB + b &* 32).assumingMemoryBound(to: __m256i.self))
            let dx = _mm256_set1_ps(adA[b]), dy = _mm256_set1_ps(adB[b])
            let ox = laneOffsets(f, asA, b), oy = laneOffsets(f, asB, b)
            row2(f, w0 + off, x, y, dx, dy, ox, oy, h, &a00, &a01)
            row2(f, w1 + off, x, y, dx, dy, ox, oy, h, &a10, &a11)
            row2(f, w2 + off, x, y, dx, dy, ox, oy, h, &a20, &a21)
            row2(f, w3 + off, x, y, dx, dy, ox, oy, h, &a30, &a31)
            if F.hasOffset && F.laneOffset == 0 {
                let c = SIMD4<Float>(F.offset(w0 + off, h), F.offset(w1 + off, h), F.offset(w2 + off, h), F.offset(w3 + off, h))
                corrA = corrA.addingProduct(c, asA[b])
                corrB = corrB.addingProduct(c, asB[b])
            }
            off &+= F.blockBytes
        }
        return (hsum4(a00, a10, a20, a30) + corrA, hsum4(a01, a11, a21, a31) + corrB)
    }

    #else

    @inline(__always)
    static func idotPortable<F: Block32Format>(_: F.Type, _ q: SIMD32<UInt8>, _ a: SIMD32<Int8>) -> Int32 {
        let wq: SIMD32<Int16>
        if F.isSigned {
            wq = SIMD32<Int16>(truncatingIfNeeded: SIMD32<Int8>(truncatingIfNeeded: q))
        } else {
            wq = SIMD32<Int16>(truncatingIfNeeded: q)
        }
        let prod = wq &* SIMD32<Int16>(truncatingIfNeeded: a)
        return SIMD32<Int32>(truncatingIfNeeded: prod).wrappedSum()
    }

    @inline(__always)
    static func dotPortable<F: Block32Format>(_ f: F.Type, _ w: UnsafeRawPointer, blocks: Int,
                                              _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                                              _ asum: UnsafePointer<Float>, _ h: UnsafePointer<Float>, ahead: Int = 0) -> Float {
        var acc: Float = 0
        var corr: Float = 0
        var off = 0
        for b in 0..<blocks {
            let p = w + off
            if ahead != 0 && b & 1 == 0 { moe_prefetch_read(p + ahead) }
            let a = UnsafeRawPointer(aq + b &* 32).loadUnaligned(as: SIMD32<Int8>.self)
            let s = idotPortable(f, F.quantsPortable(p), a)
            acc += Float(s) * (F.scale(p, h) * ad[b])
            if F.hasOffset { corr += F.offset(p, h) * asum[b] }
            off &+= F.blockBytes
        }
        return acc + corr
    }

    @inline(__always)
    static func tile1x1<F: Block32Format>(_ f: F.Type, _ w0: UnsafeRawPointer, blocks: Int,
                                          _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                                          _ asum: UnsafePointer<Float>, _ h: UnsafePointer<Float>, ahead: Int) -> Float {
        dotPortable(f, w0, blocks: blocks, aq, ad, asum, h, ahead: ahead)
    }

    @inline(__always)
    static func tile4x1<F: Block32Format>(_ f: F.Type, _ w0: UnsafeRawPointer, _ w1: UnsafeRawPointer,
                                          _ w2: UnsafeRawPointer, _ w3: UnsafeRawPointer, blocks: Int,
                                          _ aq: UnsafePointer<Int8>, _ ad: UnsafePointer<Float>,
                                          _ asum: UnsafePointer<Float>, _ h: UnsafePointer<Float>, ahead: Int = 0) -> SIMD4<Float> {
        SIMD4(dotPortable(f, w0, blocks: blocks, aq, ad, asum, h, ahead: ahead),
              dotPortable(f, w1, blocks: blocks, aq, ad, asum, h, ahead: ahead),
              dotPortable(f, w2, blocks: blocks, aq, ad, asum, h, ahead: ahead),
              dotPortable(f, w3, blocks: blocks, aq, ad, asum, h, ahead: ahead))
    }

    @inline(__always)
    static func tile4x2<F: Block32Format>(_ f: F.Type, _ w0: UnsafeRawPointer, _ w1: UnsafeRawPointer,
                                          _ w2: UnsafeRawPointer, _ w3: UnsafeRawPointer, blocks: Int,
                                          _ aqA: UnsafePointer<Int8>, _ adA: UnsafePointer<Float>, _ asA: UnsafePointer<Float>,
                                          _ aqB: UnsafePointer<Int8>, _ adB: UnsafePointer<Float>, _ asB: UnsafePointer<Float>,
                                          _ h: UnsafePointer<Float>, ahead: Int = 0)
        -> (SIMD4<Float>, SIMD4<Float>) {
        (tile4x1(f, w0, w1, w2, w3, blocks: blocks, aqA, adA, asA, h, ahead: ahead),
         tile4x1(f, w0, w1, w2, w3, blocks: blocks, aqB, adB, asB, h))
    }

    #endif

    /// Computes rows `rowRange` of `weight` for tokens `tokenRange`, writing
    /// `output[t * outputStride + r]`.
    @inline(__always)
    static func run<F: Block32Format>(_ f: F.Type, weight: WeightMatrix, rows rowRange: Range<Int>,
                                      tokens tokenRange: Range<Int>, act: Activations,
                                      output: UnsafeMutablePointer<Float>, outputStride: Int) {
        let blocks = weight.columns / 32
        let h = HalfTable.pointer
        let last = rowRange.upperBound - 1
        // Tuning globals, read once per task (each read of a global is a swift_once check).
        let oneRow = rowsAtATime == 1, ahead = decodePrefetchBytes
        // The 4-row tiles read the next group of rows' lines while on this one's first
        // tokens (a few tokens, e.g. several sequences decoding, stream the weights too).
        let tileAhead = ahead != 0 ? 4 &* weight.rowBytes : 0
        var r = rowRange.lowerBound
        while r < rowRange.upperBound {
            let n = min(4, rowRange.upperBound - r)
            let w0 = weight.row(r)
            let w1 = weight.row(min(r + 1, last))
            let w2 = weight.row(min(r + 2, last))
            let w3 = weight.row(min(r + 3, last))
            var t = tokenRange.lowerBound
            while t < tokenRange.upperBound {
                if t + 1 < tokenRange.upperBound {
                    let (x, y) = tile4x2(f, w0, w1, w2, w3, blocks: blocks,
                                         act.tokenQuants(t), act.tokenScales(t), act.tokenBlockSums(t),
                                         act.tokenQuants(t + 1), act.tokenScales(t + 1), act.tokenBlockSums(t + 1), h,
                                         ahead: t == tokenRange.lowerBound ? tileAhead : 0)
                    store(x, n, output + (t &* outputStride &+ r))
                    store(y, n, output + ((t + 1) &* outputStride &+ r))
                    t += 2
                } else if oneRow {
                    for i in 0..<n {
                        output[t &* outputStride &+ r &+ i] = tile1x1(f, weight.row(r &+ i), blocks: blocks,
                                    act.tokenQuants(t), act.tokenScales(t), act.tokenBlockSums(t), h, ahead: ahead)
                    }
                    t += 1
                } else {
                    let x = tile4x1(f, w0, w1, w2, w3, blocks: blocks,
                                    act.tokenQuants(t), act.tokenScales(t), act.tokenBlockSums(t), h,
                                    ahead: t == tokenRange.lowerBound ? tileAhead : 0)
                    store(x, n, output + (t &* outputStride &+ r))
                    t += 1
                }
            }
            r += 4
        }
    }
}

/// Rows per step when decoding one token: 1 (default) streams one row at a time, which the
/// hardware prefetchers follow much better from DRAM than 4 interleaved rows (measured:
/// ~1.6x the GB/s); 4 shares each activation load across 4 rows. `MOE_DECODE_ROWS=4` selects
/// the latter (for experiments).
nonisolated(unsafe) var rowsAtATime: Int = {
    if let v = getenv("MOE_DECODE_ROWS") { return Int(atoi(v)) }
    return 1
}()

/// How far ahead (bytes) one-token products ask for the weight lines they will read.
/// Decoding streams each weight once from DRAM, and the hardware prefetchers, which stop at
/// every 4 KiB page and restart with each row range, leave the loads waiting: asking 4 KiB
/// ahead took the Q8_0 expert GEMV from 13-16 to 21-22 GB/s and decoding the benchmark MoE
/// from ~46 to ~60 tokens/s on the 2-core test machine (1-2 KiB ahead gained half of that,
/// 8-12 KiB no more). `MOE_PREFETCH_BYTES` overrides (experiments; 0 disables).
nonisolated(unsafe) var decodePrefetchBytes: Int = {
    if let v = getenv("MOE_PREFETCH_BYTES") { return Int(atoi(v)) }
    return 4096
}()

/// Prefetch hints for offset `offset` of four rows.
@inline(__always)
func prefetchRows(_ w0: UnsafeRawPointer, _ w1: UnsafeRawPointer, _ w2: UnsafeRawPointer, _ w3: UnsafeRawPointer,
                  _ offset: Int) {
    moe_prefetch_read(w0 + offset)
    moe_prefetch_read(w1 + offset)
    moe_prefetch_read(w2 + offset)
    moe_prefetch_read(w3 + offset)
}

/// Prefetch hints for the lines of `bytes` bytes from `p` (a constant `bytes` unrolls).
@inline(__always)
func prefetchLines(_ p: UnsafeRawPointer, bytes: Int) {
    var o = 0
    while o < bytes {
        moe_prefetch_read(p + o)
        o &+= 64
    }
}

/// Stores the first `n` (1...4) lanes of `v` at `p`.
@inline(__always)
func store(_ v: SIMD4<Float>, _ n: Int, _ p: UnsafeMutablePointer<Float>) {
    if n == 4 {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD4<Float>.self)
    } else {
        for i in 0..<n { p[i] = v[i] }
    }
}

// Beside the kernel it calls: debug builds compile file by file, and a generic in another
// file would run unspecialized there.
extension KVRowKernels {
    /// `scores[j] = scale * (query · row j)` for `rows` key rows of `type` starting at `keys`,
    /// `stride` bytes apart; `query` is what `quantizeQuery` wrote for `count` values.
    public static func dots(_ type: GGMLType, query: UnsafeRawPointer, count: Int, keys: UnsafeRawPointer,
                            stride: Int, rows: Int, scale: Float, into scores: UnsafeMutablePointer<Float>) {
        switch type {
        case .q8_0: dots(Q8_0Format.self, query, count, keys, stride, rows, scale, scores)
        case .q4_0: dots(Q4_0Format.self, query, count, keys, stride, rows, scale, scores)
        default: preconditionFailure("KV rows of \(type) are not supported")
        }
    }

    @inline(__always)
    static func dots<F: Block32Format>(_ f: F.Type, _ query: UnsafeRawPointer, _ count: Int, _ keys: UnsafeRawPointer,
                                       _ stride: Int, _ rows: Int, _ scale: Float, _ scores: UnsafeMutablePointer<Float>) {
        let blocks = count / 32
        let aq = query.assumingMemoryBound(to: Int8.self)
        let ad = (query + count).assumingMemoryBound(to: Float.self)
        let asum = ad + blocks
        let h = HalfTable.pointer
        var row = keys
        for j in 0..<rows {
            // No prefetch: a head's key row is a few lines inside a strided block, not a stream.
            scores[j] = Block32Kernel.tile1x1(f, row, blocks: blocks, aq, ad, asum, h, ahead: 0) * scale
            row += stride
        }
    }
}
