/// IEEE 754 half precision (ggml's F16) <-> Float.
///
/// Swift's `Float16` conversions round to nearest even, like ggml's `GGML_FP32_TO_FP16`, and
/// lower to single F16C instructions (vcvtph2ps / vcvtps2ph) when the module is built with
/// `-mf16c`, so plain loops over them vectorize. The one difference from ggml is NaN, which
/// ggml always writes as a quiet 0x7E00 (sign kept); `fromFloat` does the same so quantized
/// files stay byte-identical even for garbage input.
public enum FP16 {
    @inlinable @inline(__always)
    public static func toFloat(_ bits: UInt16) -> Float {
        #if os(macOS) && arch(x86_64)
        bitsToFloat(bits)
        #else
        Float(Float16(bitPattern: bits))
        #endif
    }

    @inlinable @inline(__always)
    public static func fromFloat(_ value: Float) -> UInt16 {
        #if os(macOS) && arch(x86_64)
        floatToBits(value)
        #else
        let rounded = Float16(value).bitPattern
        let nan = UInt16(truncatingIfNeeded: value.bitPattern &>> 16) & 0x8000 | 0x7E00
        return value.isNaN ? nan : rounded
        #endif
    }

    // Integer-and-float-arithmetic conversions (ggml's portable ones), for Intel Macs, where
    // Swift has no Float16. Same results as the hardware path.

    @inlinable @inline(__always)
    static func bitsToFloat(_ bits: UInt16) -> Float {
        let w = UInt32(bits) &<< 16
        let sign = w & 0x8000_0000
        let twoW = w &+ w
        // Normal halves: rebias the exponent by scaling; subnormals: subtract a magic bias.
        let normalized = Float(bitPattern: (twoW &>> 4) &+ (0xE0 &<< 23)) * Float(bitPattern: 0x0780_0000)
        let denormalized = Float(bitPattern: (twoW &>> 17) | (126 &<< 23)) - 0.5
        return Float(bitPattern: sign | (twoW < (1 &<< 27) ? denormalized.bitPattern : normalized.bitPattern))
    }

    @inlinable @inline(__always)
    static func floatToBits(_ value: Float) -> UInt16 {
        // Scaling up then down leaves the rounding to the float unit; adding a power of two
        // chosen from the exponent aligns the half's mantissa in the low bits.
        var base = (abs(value) * Float(bitPattern: 0x7780_0000)) * Float(bitPattern: 0x0880_0000)
        let w = value.bitPattern
        let shl1 = w &+ w
        let sign = w & 0x8000_0000
        var bias = shl1 & 0xFF00_0000
        if bias < 0x7100_0000 { bias = 0x7100_0000 }
        base = Float(bitPattern: (bias &>> 1) &+ 0x0780_0000) + base
        let bits = base.bitPattern
        let nonsign = ((bits &>> 13) & 0x7C00) &+ (bits & 0x0FFF)
        return UInt16(truncatingIfNeeded: (sign &>> 16) | (shl1 > 0xFF00_0000 ? 0x7E00 : nonsign))
    }

    /// Reads the half at byte `offset` of `base` (block scales sit at unaligned offsets).
    @inlinable @inline(__always)
    public static func load(_ base: UnsafeRawPointer, _ offset: Int = 0) -> Float {
        toFloat(base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    static func store(_ value: Float, _ base: UnsafeMutableRawPointer, _ offset: Int = 0) {
        base.storeBytes(of: fromFloat(value), toByteOffset: offset, as: UInt16.self)
    }

    /// `count` halves at `source` (any alignment) to floats.
    public static func toFloat(_ source: UnsafeRawPointer, _ destination: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i < count {
            destination[i] = toFloat(source.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self))
            i &+= 1
        }
    }

    /// `count` floats to halves at `destination` (any alignment), rounding like ggml.
    public static func fromFloat(_ source: UnsafePointer<Float>, _ destination: UnsafeMutableRawPointer, count: Int) {
        var i = 0
        while i < count {
            destination.storeBytes(of: fromFloat(source[i]), toByteOffset: i &* 2, as: UInt16.self)
            i &+= 1
        }
    }
}

/// bfloat16 (the top half of a Float) <-> Float, rounding exactly like ggml's
/// `GGML_FP32_TO_BF16`: nearest even, NaN kept NaN (quiet bit forced), subnormals kept.
public enum BF16 {
    @inlinable @inline(__always)
    public static func toFloat(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) &<< 16)
    }

    @inlinable @inline(__always)
    public static func fromFloat(_ value: Float) -> UInt16 {
        let u = value.bitPattern
        // Adding 0x7FFF plus the lowest kept bit, then truncating, is round-to-nearest-even.
        let rounded = UInt16(truncatingIfNeeded: (u &+ 0x7FFF &+ ((u &>> 16) & 1)) &>> 16)
        let nan = UInt16(truncatingIfNeeded: u &>> 16) | 0x40
        return (u & 0x7FFF_FFFF) > 0x7F80_0000 ? nan : rounded
    }

    public static func toFloat(_ source: UnsafeRawPointer, _ destination: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i < count {
            destination[i] = toFloat(source.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self))
            i &+= 1
        }
    }

    public static func fromFloat(_ source: UnsafePointer<Float>, _ destination: UnsafeMutableRawPointer, count: Int) {
        var i = 0
        while i < count {
            destination.storeBytes(of: fromFloat(source[i]), toByteOffset: i &* 2, as: UInt16.self)
            i &+= 1
        }
    }
}
