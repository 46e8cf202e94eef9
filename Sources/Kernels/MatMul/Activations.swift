import GGUF
#if arch(x86_64) && !MOE_PORTABLE_SIMD
import _Builtin_intrinsics.intel

/// The upper 128 bits (`_mm256_extractf128_si256` is a macro Swift cannot import).
@inline(__always)
func _mm256_extractf128_si256_1(_ v: __m256i) -> __m128i {
    let w = v
    return SIMD2<Int64>(w[2], w[3])
}
#endif

/// How a matmul wants its activation rows: as they are (F32), or quantized to 8 bits.
///
/// - `q8x32`: one F32 scale per 32 values (ggml's Q8_0/Q8_1 numerics) plus the F32 product
///   `d * Σq` per block, for the 32-value block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1).
/// - `q8x256`: one F32 scale per 256 values and an Int16 sum per 16 values (ggml's Q8_K),
///   for the K-quants, whose integer sub-block scales let a whole super-block accumulate in
///   integers.
enum ActivationFormat: Equatable {
    case f32
    case q8x32
    case q8x256

    /// Block length the scale applies to.
    var blockSize: Int {
        switch self {
        case .f32: return 1
        case .q8x32: return 32
        case .q8x256: return 256
        }
    }

    /// Bytes one token row needs in scratch memory (quants, scales, sums), each part
    /// rounded up to 64 bytes.
    func bytesPerToken(columns: Int) -> Int {
        switch self {
        case .f32: return 0
        case .q8x32:
            return roundUp(columns, 64) + roundUp(columns / 32 * 4, 64) * 2
        case .q8x256:
            return roundUp(columns, 64) + roundUp(columns / 256 * 4, 64) + roundUp(columns / 16 * 2, 64)
        }
    }
}

@inline(__always)
func roundUp(_ x: Int, _ m: Int) -> Int { (x &+ m &- 1) / m &* m }

/// Quantized activation rows (all tokens of one input) laid out in scratch memory:
/// every part is an array over tokens, so token `t`'s quants start at `qs + t * columns`.
struct Activations {
    let format: ActivationFormat
    let columns: Int
    let tokens: Int
    /// The original F32 input (`tokens × columns`).
    let input: UnsafePointer<Float>
    /// Int8 quants, `tokens × columns`.
    let qs: UnsafeMutablePointer<Int8>
    /// One scale per block, `tokens × (columns / blockSize)`.
    let d: UnsafeMutablePointer<Float>
    /// q8x32: `d * Σq` per 32-block (F32). q8x256: Σq per 16 values (Int16).
    let sums: UnsafeMutableRawPointer
    /// Planning state of MatMul (format and scratch offset before the memory is known).
    var pendingFormat: ActivationFormat = .f32
    var pendingOffset = 0

    /// Lays the parts out in `memory` (at least `format.bytesPerToken(columns:) * tokens`
    /// bytes, 64-byte aligned).
    init(format: ActivationFormat, input: UnsafePointer<Float>, columns: Int, tokens: Int,
         memory: UnsafeMutableRawPointer?) {
        self.format = format
        self.columns = columns
        self.tokens = tokens
        self.input = input
        switch format {
        case .f32:
            // Not used; point at the input so the fields are valid pointers.
            let raw = UnsafeMutableRawPointer(mutating: input)
            qs = raw.assumingMemoryBound(to: Int8.self)
            d = raw.assumingMemoryBound(to: Float.self)
            sums = raw
        case .q8x32:
            let m = memory!
            let qBytes = roundUp(columns * tokens, 64)
            let dBytes = roundUp(columns / 32 * 4 * tokens, 64)
            qs = m.bindMemory(to: Int8.self, capacity: columns * tokens)
            d = (m + qBytes).bindMemory(to: Float.self, capacity: columns / 32 * tokens)
            sums = m + qBytes + dBytes
            sums.bindMemory(to: Float.self, capacity: columns / 32 * tokens)
        case .q8x256:
            let m = memory!
            let qBytes = roundUp(columns * tokens, 64)
            let dBytes = roundUp(columns / 256 * 4 * tokens, 64)
            qs = m.bindMemory(to: Int8.self, capacity: columns * tokens)
            d = (m + qBytes).bindMemory(to: Float.self, capacity: columns / 256 * tokens)
            sums = m + qBytes + dBytes
            sums.bindMemory(to: Int16.self, capacity: columns / 16 * tokens)
        }
    }

    @inline(__always) func tokenQuants(_ t: Int) -> UnsafePointer<Int8> { UnsafePointer(qs + t &* columns) }
    @inline(__always) func tokenScales(_ t: Int) -> UnsafePointer<Float> {
        UnsafePointer(d + t &* (columns / format.blockSize))
    }
    /// q8x32 only: `d * Σq` per block of token `t`.
    @inline(__always) func tokenBlockSums(_ t: Int) -> UnsafePointer<Float> {
        UnsafePointer(sums.assumingMemoryBound(to: Float.self) + t &* (columns / 32))
    }
    /// q8x256 only: Σq per 16 values of token `t`.
    @inline(__always) func tokenSums16(_ t: Int) -> UnsafePointer<Int16> {
        UnsafePointer(sums.assumingMemoryBound(to: Int16.self) + t &* (columns / 16))
    }
    @inline(__always) func tokenInput(_ t: Int) -> UnsafePointer<Float> { input + t &* columns }

    /// Quantizes token row `t` (a no-op for `.f32`).
    func quantize(token t: Int) {
        switch format {
        case .f32: return
        case .q8x32:
            ActivationQuantizer.q8x32(input + t * columns, count: columns, qs: qs + t * columns,
                                      d: d + t * (columns / 32),
                                      s: sums.assumingMemoryBound(to: Float.self) + t * (columns / 32))
        case .q8x256:
            ActivationQuantizer.q8x256(input + t * columns, count: columns, qs: qs + t * columns,
                                       d: d + t * (columns / 256),
                                       bsums: sums.assumingMemoryBound(to: Int16.self) + t * (columns / 16))
        }
    }
}

/// Activation quantizers (portable SIMD; the loops vectorize well on both targets).
enum ActivationQuantizer {
    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// 32-value blocks: d = max|x| / 127, q = round(x / d), s = d * Σq.
    static func q8x32(_ x: UnsafePointer<Float>, count: Int, qs: UnsafeMutablePointer<Int8>,
                      d: UnsafeMutablePointer<Float>, s: UnsafeMutablePointer<Float>) {
        let blocks = count / 32
        for b in 0..<blocks {
            let p = x + (b &* 32)
            let v0 = load8(p), v1 = load8(p + 8), v2 = load8(p + 16), v3 = load8(p + 24)
            let m = vmax(vmax(absv(v0), absv(v1)), vmax(absv(v2), absv(v3)))
            let amax = hmax(m)
            let scale = amax / 127
            let inv: Float = amax > 0 ? 127 / amax : 0
            let sum = quantize32(v0 * inv, v1 * inv, v2 * inv, v3 * inv, to: qs + (b &* 32))
            d[b] = scale
            s[b] = scale * Float(sum)
        }
    }

    @inline(__always)
    static func hmax(_ m: SIMD8<Float>) -> Float {
        let a = vmax(m.lowHalf, m.highHalf)
        return max(max(a[0], a[1]), max(a[2], a[3]))
    }

    /// Rounds 32 scaled values to Int8 (they are within ±127), stores them, returns Σq.
    @inline(__always)
    static func quantize32(_ v0: SIMD8<Float>, _ v1: SIMD8<Float>, _ v2: SIMD8<Float>, _ v3: SIMD8<Float>,
                           to out: UnsafeMutablePointer<Int8>) -> Int32 {
        #if arch(x86_64) && !MOE_PORTABLE_SIMD
        // cvtps rounds to nearest even (default MXCSR); pack with saturation, then undo the
        // per-128-bit-lane interleaving of the packs.
        let q0 = _mm256_cvtps_epi32(v0), q1 = _mm256_cvtps_epi32(v1)
        let q2 = _mm256_cvtps_epi32(v2), q3 = _mm256_cvtps_epi32(v3)
        let w01 = _mm256_packs_epi32(q0, q1)
        let w23 = _mm256_packs_epi32(q2, q3)
        let bytes = _mm256_packs_epi16(w01, w23)
        let ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
        _mm256_storeu_si256(UnsafeMutableRawPointer(out).assumingMemoryBound(to: __m256i.self), ordered)
        // Σq: madd of the int16 pairs with 1, then a horizontal add of 8 lanes.
        let ones = _mm256_set1_epi16(1)
        let s = _mm256_add_epi32(_mm256_madd_epi16(w01, ones), _mm256_madd_epi16(w23, ones))
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extractf128_si256_1(s))
        let v = unsafeBitCast(s4, to: SIMD4<Int32>.self)
        return (v[0] &+ v[1]) &+ (v[2] &+ v[3])
        #else
        @inline(__always) func part(_ v: SIMD8<Float>, _ o: Int) -> Int32 {
            var sum: Int32 = 0
            for i in 0..<8 {
                let q = Int32(v[i].rounded(.toNearestOrEven))
                out[o &+ i] = Int8(truncatingIfNeeded: q)
                sum &+= q
            }
            return sum
        }
        return part(v0, 0) &+ part(v1, 8) &+ part(v2, 16) &+ part(v3, 24)
        #endif
    }

    /// 256-value super-blocks: d = max|x| / 127, q = round(x / d), Σq per 16 values.
    static func q8x256(_ x: UnsafePointer<Float>, count: Int, qs: UnsafeMutablePointer<Int8>,
                       d: UnsafeMutablePointer<Float>, bsums: UnsafeMutablePointer<Int16>) {
        let blocks = count / 256
        for b in 0..<blocks {
            let p = x + (b &* 256)
            var m = SIMD8<Float>()
            for i in 0..<32 { m = vmax(m, absv(load8(p + i &* 8))) }
            let amax = hmax(m)
            let scale = amax / 127
            let inv: Float = amax > 0 ? 127 / amax : 0
            let out = qs + (b &* 256)
            for g in 0..<8 {
                let o = g &* 32
                _ = quantize32(load8(p + o) * inv, load8(p + (o &+ 8)) * inv,
                               load8(p + (o &+ 16)) * inv, load8(p + (o &+ 24)) * inv, to: out + o)
                // Sums of the two 16-value halves.
                let q = UnsafeRawPointer(out + o)
                let lo = SIMD16<Int16>(truncatingIfNeeded: q.loadUnaligned(as: SIMD16<Int8>.self))
                let hi = SIMD16<Int16>(truncatingIfNeeded: q.loadUnaligned(fromByteOffset: 16, as: SIMD16<Int8>.self))
                bsums[b &* 16 &+ 2 &* g] = hsum16(lo)
                bsums[b &* 16 &+ 2 &* g &+ 1] = hsum16(hi)
            }
            d[b] = scale
        }
    }

    /// Sum of 16 Int16 lanes (each |q| ≤ 127, so the total fits Int16).
    @inline(__always)
    static func hsum16(_ v: SIMD16<Int16>) -> Int16 {
        let a = v.lowHalf &+ v.highHalf
        let b = a.lowHalf &+ a.highHalf
        let c = b.lowHalf &+ b.highHalf
        return c[0] &+ c[1]
    }
}

/// Lane-wise maximum (the stdlib's generic `pointwiseMax` is not inlined into a single
/// instruction).
@inline(__always)
func vmax(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
    #if arch(x86_64) && !MOE_PORTABLE_SIMD
    return _mm256_max_ps(a, b)
    #else
    return a.replacing(with: b, where: b .> a)
    #endif
}

@inline(__always)
func vmax(_ a: SIMD4<Float>, _ b: SIMD4<Float>) -> SIMD4<Float> {
    #if arch(x86_64) && !MOE_PORTABLE_SIMD
    return _mm_max_ps(a, b)
    #else
    return a.replacing(with: b, where: b .> a)
    #endif
}

@inline(__always)
func absv(_ v: SIMD8<Float>) -> SIMD8<Float> {
    unsafeBitCast(unsafeBitCast(v, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF, to: SIMD8<Float>.self)
}
