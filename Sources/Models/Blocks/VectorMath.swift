import Foundation

/// Small element-wise operations of a transformer layer, vectorized with portable SIMD
/// (they are memory-light next to the matrix products, so no intrinsics are needed).
public enum VectorMath {
    /// out = x / rms(x) * weight over `count` values (weight nil: plain normalization).
    @inline(__always)
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>?, count: Int, epsilon: Float,
                               into out: UnsafeMutablePointer<Float>) {
        // Sum of squares in double, as ggml does, so long rows keep their precision.
        var sum8 = SIMD8<Double>()
        var i = 0
        while i &+ 8 <= count {
            let v = SIMD8<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
            sum8 += v * v
            i &+= 8
        }
        var sum = sum8.sum()
        while i < count { sum += Double(x[i]) * Double(x[i]); i &+= 1 }
        let scale = Float(1.0 / (sum / Double(count) + Double(epsilon)).squareRoot())
        i = 0
        if let weight {
            while i &+ 8 <= count {
                let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
                let w = UnsafeRawPointer(weight + i).loadUnaligned(as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(out + i).storeBytes(of: v * scale * w, as: SIMD8<Float>.self)
                i &+= 8
            }
            while i < count { out[i] = x[i] * scale * weight[i]; i &+= 1 }
        } else {
            while i < count { out[i] = x[i] * scale; i &+= 1 }
        }
    }

    /// x += y over `count` values.
    @inline(__always)
    public static func add(_ y: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i &+ 8 <= count {
            let a = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            let b = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(x + i).storeBytes(of: a + b, as: SIMD8<Float>.self)
            i &+= 8
        }
        while i < count { x[i] += y[i]; i &+= 1 }
    }

    /// x += scale * y over `count` values.
    @inline(__always)
    public static func addScaled(_ y: UnsafePointer<Float>, scale: Float, into x: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i &+ 8 <= count {
            let a = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            let b = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(x + i).storeBytes(of: a + b * scale, as: SIMD8<Float>.self)
            i &+= 8
        }
        while i < count { x[i] += scale * y[i]; i &+= 1 }
    }

    /// gate = silu(gate) * up over `count` values (SwiGLU).
    @inline(__always)
    public static func swiglu(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        var i = 0
        while i &+ 8 <= count {
            let g = UnsafeRawPointer(gate + i).loadUnaligned(as: SIMD8<Float>.self)
            let u = UnsafeRawPointer(up + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(gate + i).storeBytes(of: g / (1 + exp8(-g)) * u, as: SIMD8<Float>.self)
            i &+= 8
        }
        if i < count {
            // The tail through the same lane-wise exp, so a value's result never depends on
            // where a call's range ends (experts computed in groups match one big call).
            var g = SIMD8<Float>(repeating: 0), u = SIMD8<Float>(repeating: 0)
            for j in 0..<(count &- i) { g[j] = gate[i &+ j]; u[j] = up[i &+ j] }
            let r = g / (1 + exp8(-g)) * u
            for j in 0..<(count &- i) { gate[i &+ j] = r[j] }
        }
    }

    /// e^x lane-wise: range reduction to 2^n · e^r with |r| ≤ ln2/2 and a degree-6
    /// polynomial (relative error ~2e-7, like expf); saturates outside ±88.
    @inline(__always)
    public static func exp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let clamped = x.clamped(lowerBound: SIMD8(repeating: -87.3), upperBound: SIMD8(repeating: 88.3))
        // Round to the nearest integer by adding 1.5·2^23: the sum's low mantissa bits then
        // hold n exactly (|n| ≤ 127), so no generic, per-lane float-to-int conversion is needed.
        let magic: Float = 12_582_912
        let shifted = clamped * 1.442695041 + magic
        let n = shifted - magic
        let r = clamped - n * 0.693359375 + n * 2.12194440e-4
        var p = SIMD8<Float>(repeating: 1.0 / 720)
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let bits = (unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        return p * unsafeBitCast(bits, to: SIMD8<Float>.self)
    }

    /// Softmax in place over `count` values; returns nothing, values sum to 1.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        var maxValue = -Float.infinity
        for i in 0..<count where x[i] > maxValue { maxValue = x[i] }
        var sum: Double = 0
        for i in 0..<count {
            let e = Foundation.exp(x[i] - maxValue)
            x[i] = e
            sum += Double(e)
        }
        let inv = Float(1 / sum)
        for i in 0..<count { x[i] *= inv }
    }

    /// Dot product of two F32 vectors.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
        var i = 0
        while i &+ 16 <= count {
            acc0 += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            acc1 += UnsafeRawPointer(a + i + 8).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i + 8).loadUnaligned(as: SIMD8<Float>.self)
            i &+= 16
        }
        var s = (acc0 + acc1).sum()
        while i < count { s += a[i] * b[i]; i &+= 1 }
        return s
    }
}
