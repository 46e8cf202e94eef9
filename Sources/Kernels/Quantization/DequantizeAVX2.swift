#if arch(x86_64) && !MOE_PORTABLE_SIMD
import _Builtin_intrinsics.intel

// AVX2 dequantizers. Quants are unpacked 16 at a time in 128-bit registers as small signed
// bytes, widened to 8 x i32, converted and scaled in 256-bit registers. Only intrinsics that
// clang defines as functions are usable from Swift (the immediate-operand ones are macros),
// hence unpackhi_epi64 instead of srli_si128 and so on.
//
// Results are bit-identical to `PortableBlocks` (and ggml): same multiply, then add/subtract.

@inline(__always)
private func load16(_ p: UnsafeRawPointer) -> __m128i {
    _mm_loadu_si128(p.assumingMemoryBound(to: __m128i_u.self))
}

@inline(__always)
private func splat(_ v: UInt8) -> __m128i { _mm_set1_epi8(Int8(bitPattern: v)) }

/// y[0..<16] = Float(q[i]) * d, q = 16 signed bytes.
@inline(__always)
private func emit(_ q: __m128i, _ d: __m256, _ y: UnsafeMutablePointer<Float>) {
    let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))
    let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(q, q)))
    _mm256_storeu_ps(y, _mm256_mul_ps(a, d))
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(b, d))
}

/// y[0..<16] = Float(q[i]) * d - m.
@inline(__always)
private func emitMinus(_ q: __m128i, _ d: __m256, _ m: __m256, _ y: UnsafeMutablePointer<Float>) {
    let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))
    let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(q, q)))
    _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(a, d), m))
    _mm256_storeu_ps(y + 8, _mm256_sub_ps(_mm256_mul_ps(b, d), m))
}

/// y[0..<16] = Float(q[i]) * d + m.
@inline(__always)
private func emitPlus(_ q: __m128i, _ d: __m256, _ m: __m256, _ y: UnsafeMutablePointer<Float>) {
    let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))
    let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(q, q)))
    _mm256_storeu_ps(y, _mm256_add_ps(_mm256_mul_ps(a, d), m))
    _mm256_storeu_ps(y + 8, _mm256_add_ps(_mm256_mul_ps(b, d), m))
}

/// Sixteen bits (the low half of `bits`) to sixteen bytes: 0x10 where the bit is set, else 0.
@inline(__always)
private func fifthBits(_ bits: UInt32) -> __m128i {
    let v = _mm_cvtsi32_si128(Int32(bitPattern: bits))
    let spread = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1))
    let select = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128)
    let set = _mm_cmpeq_epi8(_mm_and_si128(spread, select), select)
    return _mm_and_si128(set, splat(0x10))
}

/// Low nibbles and high nibbles of 16 bytes.
@inline(__always)
private func nibbles(_ x: __m128i) -> (low: __m128i, high: __m128i) {
    let mask = splat(0x0F)
    return (_mm_and_si128(x, mask), _mm_and_si128(_mm_srli_epi16(x, 4), mask))
}

enum AVX2Blocks {
    static func q8_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        for _ in 0..<blocks {
            let d = _mm256_set1_ps(FP16.load(p))
            emit(load16(p + 2), d, out)
            emit(load16(p + 18), d, out + 16)
            p += 34; out += 32
        }
    }

    static func q4_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        let eight = splat(8)
        for _ in 0..<blocks {
            let d = _mm256_set1_ps(FP16.load(p))
            let (lo, hi) = nibbles(load16(p + 2))
            emit(_mm_sub_epi8(lo, eight), d, out)
            emit(_mm_sub_epi8(hi, eight), d, out + 16)
            p += 18; out += 32
        }
    }

    static func q4_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        for _ in 0..<blocks {
            let d = _mm256_set1_ps(FP16.load(p)), m = _mm256_set1_ps(FP16.load(p, 2))
            let (lo, hi) = nibbles(load16(p + 4))
            emitPlus(lo, d, m, out)
            emitPlus(hi, d, m, out + 16)
            p += 20; out += 32
        }
    }

    static func q5_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        let sixteen = splat(16)
        for _ in 0..<blocks {
            let d = _mm256_set1_ps(FP16.load(p))
            let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            let (lo, hi) = nibbles(load16(p + 6))
            emit(_mm_sub_epi8(_mm_or_si128(lo, fifthBits(qh)), sixteen), d, out)
            emit(_mm_sub_epi8(_mm_or_si128(hi, fifthBits(qh &>> 16)), sixteen), d, out + 16)
            p += 22; out += 32
        }
    }

    static func q5_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        for _ in 0..<blocks {
            let d = _mm256_set1_ps(FP16.load(p)), m = _mm256_set1_ps(FP16.load(p, 2))
            let qh = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            let (lo, hi) = nibbles(load16(p + 8))
            emitPlus(_mm_or_si128(lo, fifthBits(qh)), d, m, out)
            emitPlus(_mm_or_si128(hi, fifthBits(qh &>> 16)), d, m, out + 16)
            p += 24; out += 32
        }
    }

    static func q2_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        let three = splat(3)
        for _ in 0..<blocks {
            let scales = p.assumingMemoryBound(to: UInt8.self)
            let d = FP16.load(p, KBlockLayout.q2KD), dmin = FP16.load(p, KBlockLayout.q2KDmin)
            for n in 0..<2 {
                let q0 = load16(p + KBlockLayout.q2KQs + 32 &* n), q1 = load16(p + KBlockLayout.q2KQs + 32 &* n + 16)
                for j in 0..<4 {
                    let shift = Int32(2 &* j)
                    let base = out + 128 &* n + 32 &* j
                    let s0 = scales[8 &* n &+ 2 &* j], s1 = scales[8 &* n &+ 2 &* j &+ 1]
                    emitMinus(_mm_and_si128(_mm_srli_epi16(q0, shift), three),
                              _mm256_set1_ps(d * Float(s0 & 0xF)), _mm256_set1_ps(dmin * Float(s0 &>> 4)), base)
                    emitMinus(_mm_and_si128(_mm_srli_epi16(q1, shift), three),
                              _mm256_set1_ps(d * Float(s1 & 0xF)), _mm256_set1_ps(dmin * Float(s1 &>> 4)), base + 16)
                }
            }
            p += 84; out += 256
        }
    }

    static func q3_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        let three = splat(3), one = splat(1), four = splat(4)
        for _ in 0..<blocks {
            let scales = (p + KBlockLayout.q3KScales).assumingMemoryBound(to: UInt8.self)
            let d = FP16.load(p, KBlockLayout.q3KD)
            let h0 = load16(p), h1 = load16(p + 16)
            for n in 0..<2 {
                let q0 = load16(p + KBlockLayout.q3KQs + 32 &* n), q1 = load16(p + KBlockLayout.q3KQs + 32 &* n + 16)
                for j in 0..<4 {
                    let shift = Int32(2 &* j), bit = Int32(4 &* n &+ j)
                    let base = out + 128 &* n + 32 &* j
                    let is0 = 8 &* n &+ 2 &* j
                    // (2 low bits | third bit << 2) - 4 is ggml's "low - (bit set ? 0 : 4)".
                    let hb0 = _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h0, bit), one), 2)
                    let hb1 = _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h1, bit), one), 2)
                    let v0 = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(q0, shift), three), hb0), four)
                    let v1 = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(q1, shift), three), hb1), four)
                    emit(v0, _mm256_set1_ps(d * Float(q3KScale(scales, is0))), base)
                    emit(v1, _mm256_set1_ps(d * Float(q3KScale(scales, is0 &+ 1))), base + 16)
                }
            }
            p += 110; out += 256
        }
    }

    static func q4_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        for _ in 0..<blocks {
            let d = FP16.load(p, KBlockLayout.q4KD), dmin = FP16.load(p, KBlockLayout.q4KDmin)
            let scales = (p + KBlockLayout.q4KScales).assumingMemoryBound(to: UInt8.self)
            for c in 0..<4 {
                let (s1, m1) = kScaleMin(scales, 2 &* c)
                let (s2, m2) = kScaleMin(scales, 2 &* c &+ 1)
                let d1 = _mm256_set1_ps(d * Float(s1)), min1 = _mm256_set1_ps(dmin * Float(m1))
                let d2 = _mm256_set1_ps(d * Float(s2)), min2 = _mm256_set1_ps(dmin * Float(m2))
                let q = p + KBlockLayout.q4KQs + 32 &* c
                let o = out + 64 &* c
                let (a, b) = nibbles(load16(q))
                let (e, f) = nibbles(load16(q + 16))
                emitMinus(a, d1, min1, o)
                emitMinus(e, d1, min1, o + 16)
                emitMinus(b, d2, min2, o + 32)
                emitMinus(f, d2, min2, o + 48)
            }
            p += 144; out += 256
        }
    }

    static func q5_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        let one = splat(1)
        for _ in 0..<blocks {
            let d = FP16.load(p, KBlockLayout.q5KD), dmin = FP16.load(p, KBlockLayout.q5KDmin)
            let scales = (p + KBlockLayout.q5KScales).assumingMemoryBound(to: UInt8.self)
            let h0 = load16(p + KBlockLayout.q5KQh), h1 = load16(p + KBlockLayout.q5KQh + 16)
            for c in 0..<4 {
                let (s1, m1) = kScaleMin(scales, 2 &* c)
                let (s2, m2) = kScaleMin(scales, 2 &* c &+ 1)
                let d1 = _mm256_set1_ps(d * Float(s1)), min1 = _mm256_set1_ps(dmin * Float(m1))
                let d2 = _mm256_set1_ps(d * Float(s2)), min2 = _mm256_set1_ps(dmin * Float(m2))
                let q = p + KBlockLayout.q5KQs + 32 &* c
                let o = out + 64 &* c
                let bit1 = Int32(2 &* c), bit2 = Int32(2 &* c &+ 1)
                let (a, b) = nibbles(load16(q))
                let (e, f) = nibbles(load16(q + 16))
                let fifth = { (h: __m128i, bit: Int32) -> __m128i in
                    _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, bit), one), 4)
                }
                emitMinus(_mm_or_si128(a, fifth(h0, bit1)), d1, min1, o)
                emitMinus(_mm_or_si128(e, fifth(h1, bit1)), d1, min1, o + 16)
                emitMinus(_mm_or_si128(b, fifth(h0, bit2)), d2, min2, o + 32)
                emitMinus(_mm_or_si128(f, fifth(h1, bit2)), d2, min2, o + 48)
            }
            p += 176; out += 256
        }
    }

    static func q6_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        let low4 = splat(0x0F), bits01 = splat(0x03), bits23 = splat(0x0C), bits45 = splat(0x30)
        let bias = splat(32)
        for _ in 0..<blocks {
            let d = FP16.load(p, KBlockLayout.q6KD)
            for n in 0..<2 {
                let ql = p + KBlockLayout.q6KQl + 64 &* n
                let qh = p + KBlockLayout.q6KQh + 32 &* n
                let sc = (p + KBlockLayout.q6KScales + 8 &* n).assumingMemoryBound(to: UInt8.self)
                for h in 0..<2 {
                    let a = load16(ql + 16 &* h), b = load16(ql + 32 + 16 &* h)
                    let hb = load16(qh + 16 &* h)
                    // Move each 2-bit high part to bits 4-5 (masked first, so no bits leak
                    // across bytes in the 16-bit shifts).
                    let q1 = _mm_or_si128(_mm_and_si128(a, low4), _mm_slli_epi16(_mm_and_si128(hb, bits01), 4))
                    let q2 = _mm_or_si128(_mm_and_si128(b, low4), _mm_slli_epi16(_mm_and_si128(hb, bits23), 2))
                    let q3 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), low4), _mm_and_si128(hb, bits45))
                    let q4 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(b, 4), low4),
                                          _mm_and_si128(_mm_srli_epi16(hb, 2), bits45))
                    let o = out + 128 &* n + 16 &* h
                    emit(_mm_sub_epi8(q1, bias), _mm256_set1_ps(d * Float(Int8(bitPattern: sc[h]))), o)
                    emit(_mm_sub_epi8(q2, bias), _mm256_set1_ps(d * Float(Int8(bitPattern: sc[h &+ 2]))), o + 32)
                    emit(_mm_sub_epi8(q3, bias), _mm256_set1_ps(d * Float(Int8(bitPattern: sc[h &+ 4]))), o + 64)
                    emit(_mm_sub_epi8(q4, bias), _mm256_set1_ps(d * Float(Int8(bitPattern: sc[h &+ 6]))), o + 96)
                }
            }
            p += 210; out += 256
        }
    }

    static func q8_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var p = x, out = y
        for _ in 0..<blocks {
            let d = _mm256_set1_ps(p.loadUnaligned(fromByteOffset: KBlockLayout.q8KD, as: Float.self))
            for k in 0..<16 { emit(load16(p + KBlockLayout.q8KQs + 16 &* k), d, out + 16 &* k) }
            p += 292; out += 256
        }
    }
}
#endif
