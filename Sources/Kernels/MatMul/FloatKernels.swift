import CPrefetch
import GGUF
#if arch(x86_64) && !MOE_PORTABLE_SIMD
import _Builtin_intrinsics.intel
#endif

// F32, F16 and BF16 weights against F32 activations, and the generic fallback (any type
// `Dequantize` knows, expanded to F32 rows in scratch memory).

protocol FloatFormat {
    static var elementBytes: Int { get }
    /// Eight values starting at element `i`.
    static func load8(_ p: UnsafeRawPointer, _ i: Int) -> SIMD8<Float>
    static func load1(_ p: UnsafeRawPointer, _ i: Int) -> Float
}

enum F32Format: FloatFormat {
    static var elementBytes: Int { 4 }
    @inline(__always) static func load8(_ p: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        p.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
    }
    @inline(__always) static func load1(_ p: UnsafeRawPointer, _ i: Int) -> Float {
        p.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
    }
}

enum F16Format: FloatFormat {
    static var elementBytes: Int { 2 }
    @inline(__always) static func load8(_ p: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        #if arch(x86_64) && !MOE_PORTABLE_SIMD
        return _mm256_cvtph_ps(_mm_loadu_si128((p + i &* 2).assumingMemoryBound(to: __m128i.self)))
        #else
        let h = p.loadUnaligned(fromByteOffset: i &* 2, as: SIMD8<UInt16>.self)
        var v = SIMD8<Float>()
        for k in 0..<8 { v[k] = Float(Float16(bitPattern: h[k])) }
        return v
        #endif
    }
    @inline(__always) static func load1(_ p: UnsafeRawPointer, _ i: Int) -> Float { loadHalf(p, i &* 2) }
}

enum BF16Format: FloatFormat {
    static var elementBytes: Int { 2 }
    @inline(__always) static func load8(_ p: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        let h = p.loadUnaligned(fromByteOffset: i &* 2, as: SIMD8<UInt16>.self)
        let bits = SIMD8<UInt32>(truncatingIfNeeded: h) &<< 16
        return unsafeBitCast(bits, to: SIMD8<Float>.self)
    }
    @inline(__always) static func load1(_ p: UnsafeRawPointer, _ i: Int) -> Float {
        Float(bitPattern: UInt32(p.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self)) << 16)
    }
}

enum FloatKernel {
    /// Dot product of `n` weights of format F at `w` with `n` floats at `x`.
    @inline(__always)
    static func dot<F: FloatFormat>(_: F.Type, _ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int, ahead: Int) -> Float {
        let xr = UnsafeRawPointer(x)
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var i = 0
        while i &+ 32 <= n {
            if ahead != 0 { prefetchLines(w + (i &* F.elementBytes &+ ahead), bytes: 32 &* F.elementBytes) }
            a0 = a0.addingProduct(F.load8(w, i), xr.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self))
            a1 = a1.addingProduct(F.load8(w, i &+ 8), xr.loadUnaligned(fromByteOffset: (i &+ 8) &* 4, as: SIMD8<Float>.self))
            a2 = a2.addingProduct(F.load8(w, i &+ 16), xr.loadUnaligned(fromByteOffset: (i &+ 16) &* 4, as: SIMD8<Float>.self))
            a3 = a3.addingProduct(F.load8(w, i &+ 24), xr.loadUnaligned(fromByteOffset: (i &+ 24) &* 4, as: SIMD8<Float>.self))
            i &+= 32
        }
        while i &+ 8 <= n {
            a0 = a0.addingProduct(F.load8(w, i), xr.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self))
            i &+= 8
        }
        var s = ((a0 + a1) + (a2 + a3)).sum()
        while i < n {
            s += F.load1(w, i) * x[i]
            i &+= 1
        }
        return s
    }

    /// Four rows against one token (the activation is loaded once for the four rows).
    @inline(__always)
    static func dot4<F: FloatFormat>(_: F.Type, _ w0: UnsafeRawPointer, _ w1: UnsafeRawPointer, _ w2: UnsafeRawPointer,
                                     _ w3: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> SIMD4<Float> {
        let xr = UnsafeRawPointer(x)
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var i = 0
        while i &+ 8 <= n {
            let v = xr.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
            a0 = a0.addingProduct(F.load8(w0, i), v)
            a1 = a1.addingProduct(F.load8(w1, i), v)
            a2 = a2.addingProduct(F.load8(w2, i), v)
            a3 = a3.addingProduct(F.load8(w3, i), v)
            i &+= 8
        }
        var s = SIMD4<Float>(a0.sum(), a1.sum(), a2.sum(), a3.sum())
        while i < n {
            s += SIMD4(F.load1(w0, i), F.load1(w1, i), F.load1(w2, i), F.load1(w3, i)) * x[i]
            i &+= 1
        }
        return s
    }

    /// Bytes of per-thread scratch a task needs (4 rows expanded to F32).
    static func scratchBytes(columns: Int) -> Int { 4 * roundUp(columns * 4, 64) }

    /// Computes rows `rowRange` for tokens `tokenRange`. With several tokens, non-F32 rows
    /// are first expanded to F32 in `scratch` (4 at a time) so the conversion is paid once.
    @inline(__always)
    static func run<F: FloatFormat>(_ f: F.Type, weight: WeightMatrix, rows rowRange: Range<Int>,
                                    tokens tokenRange: Range<Int>, act: Activations,
                                    output: UnsafeMutablePointer<Float>, outputStride: Int,
                                    scratch: UnsafeMutableRawPointer) {
        let n = weight.columns
        let last = rowRange.upperBound - 1
        let expand = F.self != F32Format.self && tokenRange.count > 2
        let rowStride = roundUp(n * 4, 64)
        let ahead = decodePrefetchBytes
        var r = rowRange.lowerBound
        while r < rowRange.upperBound {
            let count = min(4, rowRange.upperBound - r)
            if expand {
                for i in 0..<count {
                    let src = weight.row(r &+ i)
                    let dst = (scratch + i &* rowStride).assumingMemoryBound(to: Float.self)
                    var k = 0
                    while k &+ 8 <= n {
                        UnsafeMutableRawPointer(dst + k).storeBytes(of: F.load8(src, k), as: SIMD8<Float>.self)
                        k &+= 8
                    }
                    while k < n { dst[k] = F.load1(src, k); k &+= 1 }
                }
                let w0 = UnsafeRawPointer(scratch)
                let w1 = UnsafeRawPointer(scratch + min(1, count - 1) &* rowStride)
                let w2 = UnsafeRawPointer(scratch + min(2, count - 1) &* rowStride)
                let w3 = UnsafeRawPointer(scratch + min(3, count - 1) &* rowStride)
                for t in tokenRange {
                    let v = dot4(F32Format.self, w0, w1, w2, w3, act.tokenInput(t), n)
                    store(v, count, output + (t &* outputStride &+ r))
                }
            } else if tokenRange.count == 1 {
                // Decode: one sequential weight stream at a time (see `rowsAtATime`).
                let t = tokenRange.lowerBound
                for i in 0..<count {
                    output[t &* outputStride &+ r &+ i] = dot(f, weight.row(r &+ i), act.tokenInput(t), n, ahead: ahead)
                }
            } else {
                let w0 = weight.row(r), w1 = weight.row(min(r + 1, last))
                let w2 = weight.row(min(r + 2, last)), w3 = weight.row(min(r + 3, last))
                for t in tokenRange {
                    let v = dot4(f, w0, w1, w2, w3, act.tokenInput(t), n)
                    store(v, count, output + (t &* outputStride &+ r))
                }
            }
            r += 4
        }
    }

    /// Rows of a type without a dedicated kernel: each row is dequantized to F32 in
    /// `scratch` (4 at a time) and dotted in F32.
    static func runDequantized(weight: WeightMatrix, rows rowRange: Range<Int>, tokens tokenRange: Range<Int>,
                               act: Activations, output: UnsafeMutablePointer<Float>, outputStride: Int,
                               scratch: UnsafeMutableRawPointer) {
        let n = weight.columns
        let rowStride = roundUp(n * 4, 64)
        var r = rowRange.lowerBound
        while r < rowRange.upperBound {
            let count = min(4, rowRange.upperBound - r)
            for i in 0..<count {
                let dst = (scratch + i &* rowStride).bindMemory(to: Float.self, capacity: n)
                Dequantize.row(weight.type, from: weight.row(r &+ i), to: dst, count: n)
            }
            let w0 = UnsafeRawPointer(scratch)
            let w1 = UnsafeRawPointer(scratch + min(1, count - 1) &* rowStride)
            let w2 = UnsafeRawPointer(scratch + min(2, count - 1) &* rowStride)
            let w3 = UnsafeRawPointer(scratch + min(3, count - 1) &* rowStride)
            for t in tokenRange {
                let v = dot4(F32Format.self, w0, w1, w2, w3, act.tokenInput(t), n)
                store(v, count, output + (t &* outputStride &+ r))
            }
            r += 4
        }
    }
}
