import GGUF
#if arch(x86_64) && !MOE_PORTABLE_SIMD
import _Builtin_intrinsics.intel
#endif

/// Attention's kernels over quantized KV rows (ggml's Q8_0 and Q4_0 block layouts, one row
/// per position and head, a whole number of 32-value blocks).
///
/// Keys: the query head is quantized once to 8 bits per 32 values (the `q8x32` activation
/// format the matrix kernels use, as llama.cpp converts the query to Q8_0 before its dot
/// products with a quantized K cache), then each key row's dot product is the integer
/// block kernel of the weight matmuls (`Block32Kernel.tile1x1`). Values: each row is
/// expanded block by block and accumulated, weighted, into the F32 output.
///
/// Both have an AVX2 path and a portable SIMD path, chosen at build time as the other
/// kernels are (`MOE_PORTABLE_SIMD` forces the portable one on x86).
public enum KVRowKernels {
    /// Whether rows of `type` are read here (Q8_0 and Q4_0).
    public static func supports(_ type: GGMLType) -> Bool { type == .q8_0 || type == .q4_0 }

    /// Scratch bytes for a quantized query of `count` values (a multiple of 32): the Int8
    /// quants, then one F32 scale and one F32 `d * Σq` per block.
    public static func queryBytes(count: Int) -> Int { count + count / 32 * 8 }

    /// Quantizes `count` query values (a multiple of 32) into `scratch` (`queryBytes`
    /// bytes, 4-byte aligned) for `dots`.
    public static func quantizeQuery(_ q: UnsafePointer<Float>, count: Int, into scratch: UnsafeMutableRawPointer) {
        precondition(count % 32 == 0, "a quantized query is whole blocks of 32")
        let blocks = count / 32
        let qs = scratch.bindMemory(to: Int8.self, capacity: count)
        let d = (scratch + count).bindMemory(to: Float.self, capacity: 2 * blocks)
        ActivationQuantizer.q8x32(q, count: count, qs: qs, d: d, s: d + blocks)
    }

    /// `out[0..<count] += weights[j] * row j` for `rows` value rows of `type` starting at
    /// `values`, `stride` bytes apart.
    public static func addScaled(_ type: GGMLType, values: UnsafeRawPointer, stride: Int, rows: Int,
                                 weights: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
        precondition(count % 32 == 0, "quantized value rows are whole blocks of 32")
        switch type {
        case .q8_0: addScaled(Q8_0Format.self, values, stride, rows, weights, out, count / 32)
        case .q4_0: addScaled(Q4_0Format.self, values, stride, rows, weights, out, count / 32)
        default: preconditionFailure("KV rows of \(type) are not supported")
        }
    }

    #if arch(x86_64) && !MOE_PORTABLE_SIMD

    /// y[0..<16] += Float(q[i]) * f, q = 16 signed bytes.
    @inline(__always)
    static func accumulate16(_ q: __m128i, _ f: __m256, _ y: UnsafeMutablePointer<Float>) {
        let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))
        let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(q, q)))
        _mm256_storeu_ps(y, _mm256_fmadd_ps(a, f, _mm256_loadu_ps(y)))
        _mm256_storeu_ps(y + 8, _mm256_fmadd_ps(b, f, _mm256_loadu_ps(y + 8)))
    }

    /// A block's 32 quants as the signed values they stand for: Q8_0's as stored, Q4_0's
    /// nibbles minus 8 (the format's fixed offset, `8 * laneOffset`).
    @inline(__always)
    static func signedQuants<F: Block32Format>(_: F.Type, _ p: UnsafeRawPointer) -> __m256i {
        F.isSigned ? F.quants(p) : _mm256_sub_epi8(F.quants(p), _mm256_set1_epi8(Int8(-8 * F.laneOffset)))
    }

    static func addScaled<F: Block32Format>(_ f: F.Type, _ values: UnsafeRawPointer, _ stride: Int, _ rows: Int,
                                            _ weights: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ blocks: Int) {
        let h = HalfTable.pointer
        var row = values
        for j in 0..<rows {
            let w = weights[j]
            var p = row, y = out
            for _ in 0..<blocks {
                let scale = _mm256_set1_ps(w * F.scale(p, h))
                let q = signedQuants(f, p)
                accumulate16(_mm256_castsi256_si128(q), scale, y)
                accumulate16(_mm256_extractf128_si256_1(q), scale, y + 16)
                p += F.blockBytes
                y += 32
            }
            row += stride
        }
    }

    #else

    /// y[0..<8] += Float(q[i]) * f.
    @inline(__always)
    static func accumulate8(_ q: SIMD8<Int8>, _ f: Float, _ y: UnsafeMutablePointer<Float>) {
        let v = SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: q))
        let a = UnsafeRawPointer(y).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(y).storeBytes(of: a + v * f, as: SIMD8<Float>.self)
    }

    @inline(__always)
    static func accumulate32(_ q: SIMD32<Int8>, _ f: Float, _ y: UnsafeMutablePointer<Float>) {
        accumulate8(q.lowHalf.lowHalf, f, y)
        accumulate8(q.lowHalf.highHalf, f, y + 8)
        accumulate8(q.highHalf.lowHalf, f, y + 16)
        accumulate8(q.highHalf.highHalf, f, y + 24)
    }

    /// A block's 32 quants as the signed values they stand for (see the AVX2 twin).
    @inline(__always)
    static func signedQuants<F: Block32Format>(_: F.Type, _ p: UnsafeRawPointer) -> SIMD32<Int8> {
        let q = SIMD32<Int8>(truncatingIfNeeded: F.quantsPortable(p))
        return F.isSigned ? q : q &- Int8(-8 * F.laneOffset)
    }

    static func addScaled<F: Block32Format>(_ f: F.Type, _ values: UnsafeRawPointer, _ stride: Int, _ rows: Int,
                                            _ weights: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ blocks: Int) {
        let h = HalfTable.pointer
        var row = values
        for j in 0..<rows {
            let w = weights[j]
            var p = row, y = out
            for _ in 0..<blocks {
                accumulate32(signedQuants(f, p), w * F.scale(p, h), y)
                p += F.blockBytes
                y += 32
            }
            row += stride
        }
    }

    #endif
}
