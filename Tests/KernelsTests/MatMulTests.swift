import GGUF
@testable import Kernels
import Testing

/// Deterministic xorshift generator so failures reproduce.
private struct TestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
    /// Uniform in [-1, 1).
    mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
    mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// A weight matrix with its own storage.
private final class TestWeight {
    let bytes: UnsafeMutableRawPointer
    let matrix: WeightMatrix

    /// `quantize`: pack random floats with `Quantize.row` (realistic blocks). Otherwise fill
    /// with random bytes and overwrite the F16 scale fields with sane values (exercises
    /// extreme quants, e.g. -128 in Q8_0 or every 6-bit scale).
    init(type: GGMLType, rows: Int, columns: Int, seed: UInt64, quantize: Bool = true) {
        var rng = TestRandom(seed: seed)
        let rowBytes = columns / type.blockSize * type.bytesPerBlock
        bytes = .allocate(byteCount: max(rows * rowBytes, 1), alignment: 64)
        matrix = WeightMatrix(type: type, rows: rows, columns: columns, base: bytes)
        if quantize || !type.isQuantized {
            var values = [Float](repeating: 0, count: columns)
            for r in 0..<rows {
                // Rows with different magnitudes and an occasional outlier.
                let scale = Float(0.05) + Float(rng.int(100)) / 100
                for c in 0..<columns { values[c] = rng.float() * scale }
                values[rng.int(columns)] *= 8
                Quantize.row(type, from: values, to: bytes + r * rowBytes, count: columns)
            }
        } else {
            for i in 0..<(rows * rowBytes) { bytes.storeBytes(of: UInt8(truncatingIfNeeded: rng.next()), toByteOffset: i, as: UInt8.self) }
            let halfOffsets: [Int]
            switch type {
            case .q8_0, .q4_0, .q5_0: halfOffsets = [0]
            case .q4_1, .q5_1, .q4_K, .q5_K: halfOffsets = [0, 2]
            case .q2_K: halfOffsets = [80, 82]
            case .q3_K: halfOffsets = [108]
            case .q6_K: halfOffsets = [208]
            default: halfOffsets = []
            }
            let blocks = rows * columns / type.blockSize
            for b in 0..<blocks {
                for off in halfOffsets {
                    let v = Float16((rng.float() + 1.5) * 0.004)
                    bytes.storeBytes(of: v.bitPattern, toByteOffset: b * type.bytesPerBlock + off, as: UInt16.self)
                }
            }
        }
    }

    deinit { bytes.deallocate() }

    /// Rows expanded to F32 with the scalar dequantizer.
    func dequantized() -> [Float] {
        var out = [Float](repeating: 0, count: matrix.rows * matrix.columns)
        out.withUnsafeMutableBufferPointer { buf in
            for r in 0..<matrix.rows {
                Dequantize.portableRow(matrix.type, from: matrix.row(r), to: buf.baseAddress! + r * matrix.columns,
                                       count: matrix.columns)
            }
        }
        return out
    }
}

private func randomInput(tokens: Int, columns: Int, seed: UInt64) -> [Float] {
    var rng = TestRandom(seed: seed)
    var x = [Float](repeating: 0, count: tokens * columns)
    for i in x.indices { x[i] = rng.float() }
    // Activation outliers, as real hidden states have.
    for t in 0..<tokens { x[t * columns + rng.int(columns)] = 12 }
    return x
}

/// Checks `output` against a double-precision dot of the dequantized weights: each error
/// must be within `tolerance` of ‖w‖·‖x‖ for that output (8-bit activation rounding makes
/// errors proportional to the block maxima, so relative-to-the-result would be meaningless
/// for results near zero).
private func check(_ w: TestWeight, input: [Float], tokens: Int, output: [Float], tolerance: Double,
                   _ label: String) {
    let ref = w.dequantized()
    let rows = w.matrix.rows, cols = w.matrix.columns
    var worst = 0.0
    for t in 0..<tokens {
        for r in 0..<rows {
            var dot = 0.0, ww = 0.0, xx = 0.0
            for c in 0..<cols {
                let w = Double(ref[r * cols + c]), x = Double(input[t * cols + c])
                dot += w * x
                ww += w * w
                xx += x * x
            }
            let mag = (ww * xx).squareRoot()
            let err = abs(Double(output[t * rows + r]) - dot) / max(mag, 1e-20)
            worst = max(worst, err)
        }
    }
    #expect(worst <= tolerance, "\(label): worst relative error \(worst)")
}

private func tolerance(_ type: GGMLType) -> Double {
    switch type {
    case .f32, .f16, .bf16: return 1e-5
    default: return 1e-2
    }
}

private let allTypes: [GGMLType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .f16, .bf16, .f32]

@Suite struct MatMulTests {
    static let pool = ThreadPool(threadCount: 3)

    @Test(arguments: allTypes)
    func matchesReference(type: GGMLType) {
        let columnChoices = type.blockSize == 256 ? [256, 512] : (type.blockSize == 32 ? [32, 96, 256] : [17, 40, 256])
        var seed: UInt64 = 1
        for columns in columnChoices {
            for rows in [1, 7, 33] {
                let w = TestWeight(type: type, rows: rows, columns: columns, seed: seed)
                for tokens in [1, 2, 3, 5, 16, 33] {
                    seed += 1
                    if rows == 33 && tokens == 33 && columns > 256 { continue }
                    let x = randomInput(tokens: tokens, columns: columns, seed: seed)
                    let y = Self.multiply(w, x, tokens: tokens)
                    check(w, input: x, tokens: tokens, output: y, tolerance: tolerance(type),
                          "\(type) rows \(rows) cols \(columns) tokens \(tokens)")
                }
            }
        }
    }

    /// Random bytes: every quant value and scale bit pattern, not just what a quantizer emits.
    @Test(arguments: allTypes.filter { $0.isQuantized })
    func randomBlocks(type: GGMLType) {
        let columns = 512
        let w = TestWeight(type: type, rows: 13, columns: columns, seed: 99, quantize: false)
        for tokens in [1, 4, 7] {
            let x = randomInput(tokens: tokens, columns: columns, seed: UInt64(tokens))
            let y = Self.multiply(w, x, tokens: tokens)
            check(w, input: x, tokens: tokens, output: y, tolerance: tolerance(type), "\(type) random tokens \(tokens)")
        }
    }

    private static func multiply(_ w: TestWeight, _ x: [Float], tokens: Int, pool: ThreadPool = MatMulTests.pool) -> [Float] {
        var y = [Float](repeating: .nan, count: tokens * w.matrix.rows)
        x.withUnsafeBufferPointer { xb in
            y.withUnsafeMutableBufferPointer { yb in
                MatMul.multiply(w.matrix, input: xb.baseAddress!, tokens: tokens, output: yb.baseAddress!, pool: pool)
            }
        }
        return y
    }

    /// A 32-value block row gives a token the same bits alone (the one-row decode walk) as
    /// in a batch (the 4-row tiles, one or two tokens at a time), so a sequence's logits do
    /// not depend on what it is batched with.
    @Test(arguments: [GGMLType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1])
    func oneTokenGivesTheBitsOfABatch(type: GGMLType) {
        let columns = 320, rows = 11, tokens = 3
        let w = TestWeight(type: type, rows: rows, columns: columns, seed: 7)
        let x = randomInput(tokens: tokens, columns: columns, seed: 8)
        let batch = Self.multiply(w, x, tokens: tokens)
        for t in 0..<tokens {
            let alone = Self.multiply(w, Array(x[(t * columns)..<((t + 1) * columns)]), tokens: 1)
            #expect(alone.map(\.bitPattern) == batch[(t * rows)..<((t + 1) * rows)].map(\.bitPattern), "\(type) token \(t)")
        }
    }

    /// The software prefetch distance changes when lines are asked for, never the results.
    @Test(arguments: allTypes)
    func prefetchDistanceLeavesResultsAlone(type: GGMLType) {
        let columns = 512, rows = 9
        let w = TestWeight(type: type, rows: rows, columns: columns, seed: 11)
        let saved = decodePrefetchBytes
        defer { decodePrefetchBytes = saved }
        for tokens in [1, 4] {  // the one-row walk and the 4-row tiles
            let x = randomInput(tokens: tokens, columns: columns, seed: 12)
            var results: [[UInt32]] = []
            for ahead in [0, 64, 4096, 1 << 20] {
                decodePrefetchBytes = ahead
                results.append(Self.multiply(w, x, tokens: tokens).map(\.bitPattern))
            }
            #expect(results.allSatisfy { $0 == results[0] }, "\(type), \(tokens) tokens")
        }
    }

    /// One batched call over mixed types, shapes and shared/unshared inputs gives the same
    /// results as separate calls.
    @Test func batchedJobsMatchSeparateCalls() {
        let shapes: [(GGMLType, Int, Int)] = [
            (.q8_0, 64, 256), (.q4_K, 37, 512), (.q8_0, 20, 256), (.q6_K, 64, 512),
            (.f16, 9, 256), (.q4_0, 128, 256), (.f32, 5, 512), (.q5_K, 8, 256), (.q4_1, 16, 512),
        ]
        let tokens = 3
        let weights = shapes.enumerated().map { i, s in TestWeight(type: s.0, rows: s.1, columns: s.2, seed: UInt64(50 + i)) }
        let input256 = randomInput(tokens: tokens, columns: 256, seed: 7)
        let input512 = randomInput(tokens: tokens, columns: 512, seed: 8)
        let input512b = randomInput(tokens: tokens, columns: 512, seed: 9)
        var separate = weights.map { [Float](repeating: 0, count: $0.matrix.rows * tokens) }
        var batched = separate
        input256.withUnsafeBufferPointer { a in
            input512.withUnsafeBufferPointer { b in
                input512b.withUnsafeBufferPointer { c in
                    func inputFor(_ i: Int) -> UnsafePointer<Float> {
                        weights[i].matrix.columns == 256 ? a.baseAddress! : (i % 2 == 0 ? b.baseAddress! : c.baseAddress!)
                    }
                    for i in weights.indices {
                        separate[i].withUnsafeMutableBufferPointer { out in
                            MatMul.multiply(weights[i].matrix, input: inputFor(i), tokens: tokens, output: out.baseAddress!,
                                            pool: Self.pool)
                        }
                    }
                    let outputs = batched.indices.map { i in
                        UnsafeMutablePointer<Float>.allocate(capacity: batched[i].count)
                    }
                    defer { outputs.forEach { $0.deallocate() } }
                    let jobs = weights.indices.map { i in
                        MatMulJob(weight: weights[i].matrix, input: inputFor(i), tokens: tokens, output: outputs[i])
                    }
                    MatMul.multiply(jobs, pool: Self.pool)
                    for i in batched.indices {
                        batched[i] = Array(UnsafeBufferPointer(start: outputs[i], count: batched[i].count))
                    }
                }
            }
        }
        for i in weights.indices {
            for k in separate[i].indices {
                let a = separate[i][k], b = batched[i][k]
                #expect(abs(a - b) <= 1e-5 * max(1, abs(a)), "job \(i) (\(shapes[i].0)) element \(k): \(a) vs \(b)")
            }
        }
    }

    /// Big enough to take the parallel quantization path and many tasks.
    @Test func largeBatchParallelQuantization() {
        let w = TestWeight(type: .q8_0, rows: 96, columns: 1024, seed: 3)
        let tokens = 70
        let x = randomInput(tokens: tokens, columns: 1024, seed: 4)
        let y = Self.multiply(w, x, tokens: tokens)
        check(w, input: x, tokens: tokens, output: y, tolerance: 1e-2, "q8_0 large")
    }

    @Test func singleThreadPool() {
        let pool = ThreadPool(threadCount: 1)
        let w = TestWeight(type: .q4_K, rows: 33, columns: 256, seed: 11)
        let x = randomInput(tokens: 5, columns: 256, seed: 12)
        let y = Self.multiply(w, x, tokens: 5, pool: pool)
        check(w, input: x, tokens: 5, output: y, tolerance: 1e-2, "q4_K one thread")
    }

    @Test func supportedTypes() {
        for t in allTypes { #expect(MatMul.supports(t)) }
        #expect(!MatMul.supports(.iq2_xxs))
        for t: GGMLType in [.q8_0, .q4_0, .q4_K, .q6_K, .f16, .f32] { #expect(MatMul.hasFastKernel(t)) }
    }
}
