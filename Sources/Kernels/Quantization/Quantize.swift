import GGUF

/// Packing of F32 values into ggml's block formats.
///
/// Every quantizer follows ggml's reference quantizer for its type (`quantize_row_*_ref`, what
/// `llama-quantize` runs when no importance matrix is given) float operation for float
/// operation, so the bytes are identical to llama.cpp's. That is why these loops are scalar
/// (the K-quant searches run one group per SIMD lane, which keeps each group's order) and keep
/// C's evaluation order, its float-to-int conversions and its `nearest_int` trick: any
/// reassociation (or a fused multiply-add) can flip a rounding and change a quant.
public enum Quantize {
    public static func supports(_ type: GGMLType) -> Bool {
        switch type {
        case .f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1,
             .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K:
            return true
        default:
            return false
        }
    }

    /// Packs `count` F32 values (multiple of blockSize) into `type` blocks at `destination`
    /// (count/blockSize*bytesPerBlock bytes). Precondition: supports(type).
    public static func row(_ type: GGMLType, from source: UnsafePointer<Float>,
                           to destination: UnsafeMutableRawPointer, count: Int) {
        precondition(count >= 0 && count % type.blockSize == 0,
                     "quantize: \(count) values is not a whole number of \(type) blocks")
        let n = count / type.blockSize
        switch type {
        case .f32: destination.copyMemory(from: source, byteCount: count &* 4)
        case .f16: FP16.fromFloat(source, destination, count: count)
        case .bf16: BF16.fromFloat(source, destination, count: count)
        case .q8_0: LegacyQuantizers.q8_0(source, destination, n)
        case .q4_0: LegacyQuantizers.q4_0(source, destination, n)
        case .q4_1: LegacyQuantizers.q4_1(source, destination, n)
        case .q5_0: LegacyQuantizers.q5_0(source, destination, n)
        case .q5_1: LegacyQuantizers.q5_1(source, destination, n)
        case .q2_K: KQuantizers.q2_K(source, destination, n)
        case .q3_K: KQuantizers.q3_K(source, destination, n)
        case .q4_K: KQuantizers.q4_K_or_q5_K(source, destination, n, nmax: 15)
        case .q5_K: KQuantizers.q4_K_or_q5_K(source, destination, n, nmax: 31)
        case .q6_K: KQuantizers.q6_K(source, destination, n)
        case .q8_K: KQuantizers.q8_K(source, destination, n)
        default: preconditionFailure("quantize: \(type) is not supported")
        }
    }

    /// Whole tensor, row by row: `values` holds rows of `rowLength` values (a multiple of the
    /// block size). Returns the rows packed back to back, as a GGUF file stores them.
    public static func tensor(_ type: GGMLType, _ values: UnsafeBufferPointer<Float>,
                              rowLength: Int) throws(KernelError) -> [UInt8] {
        guard supports(type) else { throw .unsupportedType(type, operation: "quantize") }
        guard rowLength > 0, rowLength % type.blockSize == 0 else {
            throw .shapeMismatch("row length \(rowLength) is not a positive multiple of the \(type) block size \(type.blockSize)")
        }
        guard values.count % rowLength == 0 else {
            throw .shapeMismatch("\(values.count) values is not a whole number of rows of \(rowLength)")
        }
        let rows = values.count / rowLength
        let rowBytes = rowLength / type.blockSize * type.bytesPerBlock
        guard rows > 0, let base = values.baseAddress else { return [] }
        return [UInt8](unsafeUninitializedCapacity: rows * rowBytes) { buffer, initialized in
            let out = UnsafeMutableRawPointer(buffer.baseAddress!)
            for r in 0..<rows {
                row(type, from: base + r &* rowLength, to: out + r &* rowBytes, count: rowLength)
            }
            initialized = rows * rowBytes
        }
    }
}

// MARK: - Float to integer conversions as ggml's C code performs them

/// ggml's `nearest_int`: adding 1.5 * 2^23 leaves round-half-even of `value` in the low
/// mantissa bits (valid for |value| < 2^22; beyond that it returns the same garbage as C).
@inline(__always)
func ggmlNearestInt(_ value: Float) -> Int32 {
    let shifted = value + 12_582_912
    return Int32(bitPattern: shifted.bitPattern & 0x007F_FFFF) &- 0x0040_0000
}

/// C's float to int conversion on x86 (cvttss2si): truncation, with the "integer indefinite"
/// 0x80000000 for NaN and out-of-range values instead of a trap.
@inline(__always)
func cFloatToInt32(_ value: Float) -> Int32 {
    value > -2_147_483_904 && value < 2_147_483_648 ? Int32(value) : Int32.min
}

/// C's `(int8_t)f` / `(uint8_t)f`: the conversion above, keeping the low byte.
@inline(__always)
func cFloatToInt8(_ value: Float) -> Int32 {
    Int32(Int8(truncatingIfNeeded: cFloatToInt32(value)))
}

@inline(__always)
func clampLevel(_ v: Int32, _ lo: Int32, _ hi: Int32) -> Int32 { max(lo, min(hi, v)) }

// MARK: - 32-value formats

enum LegacyQuantizers {
    static func q8_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int) {
        for b in 0..<blocks {
            let v = x + b &* 32, p = y + b &* 34
            var amax: Float = 0
            for j in 0..<32 { let a = abs(v[j]); amax = amax > a ? amax : a }
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            FP16.store(d, p)
            for j in 0..<32 {
                let q = UInt8(truncatingIfNeeded: cFloatToInt32((v[j] * id).rounded()))
                p.storeBytes(of: q, toByteOffset: 2 &+ j, as: UInt8.self)
            }
        }
    }

    /// The value of largest magnitude (the first one on ties), sign kept.
    @inline(__always)
    private static func signedAbsMax(_ v: UnsafePointer<Float>, _ n: Int) -> Float {
        var amax: Float = 0, max: Float = 0
        for j in 0..<n where amax < abs(v[j]) { amax = abs(v[j]); max = v[j] }
        return max
    }

    @inline(__always)
    private static func minMax(_ v: UnsafePointer<Float>, _ n: Int) -> (Float, Float) {
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        for j in 0..<n {
            if v[j] < lo { lo = v[j] }
            if v[j] > hi { hi = v[j] }
        }
        return (lo, hi)
    }

    static func q4_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int) {
        for b in 0..<blocks {
            let v = x + b &* 32, p = y + b &* 18
            let d = signedAbsMax(v, 32) / -8
            let id: Float = d != 0 ? 1 / d : 0
            FP16.store(d, p)
            for j in 0..<16 {
                let q0 = min(15, cFloatToInt8(v[j] * id + 8.5))
                let q1 = min(15, cFloatToInt8(v[j &+ 16] * id + 8.5))
                p.storeBytes(of: UInt8(truncatingIfNeeded: q0 | (q1 &<< 4)), toByteOffset: 2 &+ j, as: UInt8.self)
            }
        }
    }

    static func q4_1(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int) {
        for b in 0..<blocks {
            let v = x + b &* 32, p = y + b &* 20
            let (lo, hi) = minMax(v, 32)
            let d = (hi - lo) / 15
            let id: Float = d != 0 ? 1 / d : 0
            FP16.store(d, p)
            FP16.store(lo, p, 2)
            for j in 0..<16 {
                let q0 = min(15, cFloatToInt8((v[j] - lo) * id + 0.5))
                let q1 = min(15, cFloatToInt8((v[j &+ 16] - lo) * id + 0.5))
                p.storeBytes(of: UInt8(truncatingIfNeeded: q0 | (q1 &<< 4)), toByteOffset: 4 &+ j, as: UInt8.self)
            }
        }
    }

    static func q5_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int) {
        for b in 0..<blocks {
            let v = x + b &* 32, p = y + b &* 22
            let d = signedAbsMax(v, 32) / -16
            let id: Float = d != 0 ? 1 / d : 0
            FP16.store(d, p)
            var qh: UInt32 = 0
            for j in 0..<16 {
                let q0 = UInt32(truncatingIfNeeded: min(31, cFloatToInt8(v[j] * id + 16.5)))
                let q1 = UInt32(truncatingIfNeeded: min(31, cFloatToInt8(v[j &+ 16] * id + 16.5)))
                p.storeBytes(of: UInt8(truncatingIfNeeded: (q0 & 0xF) | ((q1 & 0xF) &<< 4)), toByteOffset: 6 &+ j, as: UInt8.self)
                qh |= ((q0 & 0x10) &>> 4) &<< UInt32(j)
                qh |= ((q1 & 0x10) &>> 4) &<< UInt32(j &+ 16)
            }
            p.storeBytes(of: qh, toByteOffset: 2, as: UInt32.self)
        }
    }

    static func q5_1(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int) {
        for b in 0..<blocks {
            let v = x + b &* 32, p = y + b &* 24
            let (lo, hi) = minMax(v, 32)
            let d = (hi - lo) / 31
            let id: Float = d != 0 ? 1 / d : 0
            FP16.store(d, p)
            FP16.store(lo, p, 2)
            var qh: UInt32 = 0
            for j in 0..<16 {
                // (uint8_t) in C, without a clamp: keep the low byte.
                let q0 = UInt32(truncatingIfNeeded: cFloatToInt32((v[j] - lo) * id + 0.5)) & 0xFF
                let q1 = UInt32(truncatingIfNeeded: cFloatToInt32((v[j &+ 16] - lo) * id + 0.5)) & 0xFF
                p.storeBytes(of: UInt8(truncatingIfNeeded: (q0 & 0xF) | ((q1 & 0xF) &<< 4)), toByteOffset: 8 &+ j, as: UInt8.self)
                qh |= ((q0 & 0x10) &>> 4) &<< UInt32(j)
                qh |= ((q1 & 0x10) &>> 4) &<< UInt32(j &+ 16)
            }
            p.storeBytes(of: qh, toByteOffset: 4, as: UInt32.self)
        }
    }
}
