import Foundation
import TestSupport
import GGUF
import Kernels

/// `../shared/` beside the repository (or `MOE_SHARED_DIR`): llama.cpp-made model files.
enum FormatFixtures {
    static let root = SharedData.root

    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }
}

/// A GGUF file's tensor table with its bytes mapped, so tests read tensors without copies.
struct MappedModel {
    let file: GGUFFile
    let data: Data

    init(_ name: String) throws {
        let path = FormatFixtures.model(name)
        file = try GGUFFile.open(path: path)
        data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
    }

    var tensors: [GGUFTensorInfo] { file.tensors }

    func tensor(_ name: String) -> GGUFTensorInfo? { file.tensor(named: name) }

    /// The tensor's stored bytes.
    func bytes(_ t: GGUFTensorInfo, rows: Int? = nil) -> [UInt8] {
        let start = Int(t.absoluteOffset)
        let count = rows.map { min($0, t.rowCount) * t.rowBytes } ?? Int(t.byteCount)
        return [UInt8](data[start ..< start + count])
    }

    /// The first `rows` rows (all by default) expanded to F32 with `Dequantize.row`.
    func floats(_ t: GGUFTensorInfo, rows: Int? = nil) -> [Float] {
        let n = rows.map { min($0, t.rowCount) } ?? t.rowCount
        let raw = bytes(t, rows: n)
        var out = [Float](repeating: .nan, count: n * t.rowLength)
        raw.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in
                for r in 0..<n {
                    Dequantize.row(t.type, from: src.baseAddress! + r * t.rowBytes,
                                   to: dst.baseAddress! + r * t.rowLength, count: t.rowLength)
                }
            }
        }
        return out
    }
}

/// ‖a − b‖₂ / ‖b‖₂.
func relativeRMSError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count)
    var num = 0.0, den = 0.0
    a.withUnsafeBufferPointer { a in
        b.withUnsafeBufferPointer { b in
            for i in 0..<a.count {
                let d = Double(a[i]) - Double(b[i])
                num += d * d
                den += Double(b[i]) * Double(b[i])
            }
        }
    }
    return den == 0 ? (num == 0 ? 0 : .infinity) : (num / den).squareRoot()
}

/// 64-bit FNV-1a, to pin down large outputs with a small constant.
func fnv1a<C: Collection>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes {
        h ^= UInt64(b)
        h = h &* 0x0000_0100_0000_01b3
    }
    return h
}

func fnv1a(_ floats: [Float]) -> UInt64 {
    floats.withUnsafeBytes { fnv1a($0) }
}

/// Deterministic test signal: 8 rows of 512 values exercising the quantizers' edge paths.
/// Every value is produced by exact or single-rounding float32 steps, so the same recipe in
/// another language (the one-off generator of the ggml reference hashes) yields the same bits.
///   row 0: uniform in [-1, 1)          row 4: a zero super-block, then a constant one
///   row 1: scale varying per block      row 5: sparse outliers among zeros
///   row 2: non-negative only            row 6: tiny (below ggml's group epsilon), then small
///   row 3: non-positive only            row 7: cubed uniform (heavy-tailed)
func formatSignal() -> [Float] {
    let rows = 8, n = 512
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    var x = [Float](repeating: 0, count: rows * n)
    for i in x.indices {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        x[i] = Float(state >> 40) / 8_388_608 - 1
    }
    for j in 0..<n {
        x[n + j] *= Float(sign: .plus, exponent: (j / 32) % 7 - 3, significand: 1)
        x[2 * n + j] = abs(x[2 * n + j])
        x[3 * n + j] = -abs(x[3 * n + j])
        x[4 * n + j] = j < 256 ? 0 : 0.5
        x[5 * n + j] = j % 37 == 0 ? x[5 * n + j] * 8 : 0
        x[6 * n + j] *= Float(sign: .plus, exponent: j < 256 ? -60 : -30, significand: 1)
        let c = x[7 * n + j]
        x[7 * n + j] = c * c * c
    }
    return x
}

/// Quantizes `values` (one row) into `type` with `Quantize.row`.
func quantizeRow(_ type: GGMLType, _ values: [Float]) -> [UInt8] {
    let bytes = values.count / type.blockSize * type.bytesPerBlock
    var out = [UInt8](repeating: 0xAA, count: bytes)
    values.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBytes { dst in
            Quantize.row(type, from: src.baseAddress!, to: dst.baseAddress!, count: values.count)
        }
    }
    return out
}

/// Expands `bytes` holding `count` values of `type`, with the dispatching (SIMD) path or the
/// portable one.
func dequantize(_ type: GGMLType, _ bytes: [UInt8], count: Int, portable: Bool = false) -> [Float] {
    var out = [Float](repeating: .nan, count: count)
    bytes.withUnsafeBytes { src in
        out.withUnsafeMutableBufferPointer { dst in
            if portable {
                Dequantize.portableRow(type, from: src.baseAddress!, to: dst.baseAddress!, count: count)
            } else {
                Dequantize.row(type, from: src.baseAddress!, to: dst.baseAddress!, count: count)
            }
        }
    }
    return out
}

/// Little-endian block assembly for hand-built test blocks.
struct BlockWriter {
    var bytes: [UInt8]
    init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }

    mutating func half(_ value: Float, at offset: Int) {
        let bits = Float16(value).bitPattern
        precondition(Float(Float16(bitPattern: bits)) == value, "test scale must be exact in F16")
        bytes[offset] = UInt8(bits & 0xFF)
        bytes[offset + 1] = UInt8(bits >> 8)
    }

    mutating func float(_ value: Float, at offset: Int) {
        withUnsafeBytes(of: value.bitPattern.littleEndian) { for i in 0..<4 { bytes[offset + i] = $0[i] } }
    }

    /// ORs the low `width` bits of `value` into bit position `bit` of byte `offset`.
    mutating func bits(_ value: Int, width: Int, byte offset: Int, bit: Int) {
        precondition(value >= 0 && value < (1 << width) && bit + width <= 8)
        bytes[offset] |= UInt8(value << bit)
    }
}
