import KV
import Kernels

/// How queries and keys are normalized before RoPE, if at all.
public enum QKNorm: Sendable {
    case none
    /// RMSNorm over each head (qwen3): weights of one head's size.
    case perHead
    /// RMSNorm over the whole projection (olmoe): weights of all heads' size.
    case fullProjection
}

/// Grouped-query self-attention with a causal mask over a paged KV sequence.
public struct Attention: @unchecked Sendable {
    public let query: WeightMatrix
    public let key: WeightMatrix
    public let value: WeightMatrix
    public let output: WeightMatrix
    public let queryBias: UnsafePointer<Float>?
    public let keyBias: UnsafePointer<Float>?
    public let valueBias: UnsafePointer<Float>?
    public let qkNorm: QKNorm
    public let queryNorm: UnsafePointer<Float>?
    public let keyNorm: UnsafePointer<Float>?
    public let heads: Int
    public let kvHeads: Int
    public let headSize: Int
    public let valueHeadSize: Int
    public let epsilon: Float
    public let rope: RoPE

    /// Loads `blk.N.attn_*` for a layer; biases and q/k norms as the architecture says.
    public init(_ w: WeightStore, layer: Int, _ hp: HyperParameters, rope: RoPE,
                qkNorm: QKNorm = .none, biases: Bool = false) throws(ModelError) {
        let p = "blk.\(layer)."
        let h = hp.embeddingLength
        query = try w.matrix(p + "attn_q.weight", rows: hp.queryWidth, columns: h)
        key = try w.matrix(p + "attn_k.weight", rows: hp.keyWidth, columns: h)
        value = try w.matrix(p + "attn_v.weight", rows: hp.valueWidth, columns: h)
        output = try w.matrix(p + "attn_output.weight", rows: h, columns: hp.headCount * hp.valueLength)
        if biases {
            queryBias = try w.vector(p + "attn_q.bias", count: hp.queryWidth)
            keyBias = try w.vector(p + "attn_k.bias", count: hp.keyWidth)
            valueBias = try w.vector(p + "attn_v.bias", count: hp.valueWidth)
        } else {
            queryBias = try w.optionalVector(p + "attn_q.bias", count: hp.queryWidth)
            keyBias = try w.optionalVector(p + "attn_k.bias", count: hp.keyWidth)
            valueBias = try w.optionalVector(p + "attn_v.bias", count: hp.valueWidth)
        }
        self.qkNorm = qkNorm
        switch qkNorm {
        case .none:
            queryNorm = nil
            keyNorm = nil
        case .perHead:
            queryNorm = try w.vector(p + "attn_q_norm.weight", count: hp.keyLength)
            keyNorm = try w.vector(p + "attn_k_norm.weight", count: hp.keyLength)
        case .fullProjection:
            queryNorm = try w.vector(p + "attn_q_norm.weight", count: hp.queryWidth)
            keyNorm = try w.vector(p + "attn_k_norm.weight", count: hp.keyWidth)
        }
        heads = hp.headCount
        kvHeads = hp.headCountKV
        headSize = hp.keyLength
        valueHeadSize = hp.valueLength
        epsilon = hp.rmsEpsilon
        self.rope = rope
    }

    /// Attends `tokens` new tokens (normalized input `x`, tokens × hidden) and writes the
    /// projected result to `out` (tokens × hidden). The batch is made of `segments`, one per
    /// sequence: a segment's rows go at positions `start...` of its own KV sequence and
    /// attend causally over that sequence only. `ropeTable` holds `RoPE.angles` for each
    /// token (tokens × rope.dimensions).
    func forward(_ x: UnsafePointer<Float>, tokens: Int, layer: Int, segments: [AttentionSegment],
                 ropeTable: UnsafePointer<Float>, workspace: Workspace, pool: ThreadPool,
                 out: UnsafeMutablePointer<Float>) {
        let qWidth = heads * headSize, kWidth = kvHeads * headSize, vWidth = kvHeads * valueHeadSize
        let q = workspace.floats(Slot.query, count: tokens * qWidth)
        let k = workspace.floats(Slot.key, count: tokens * kWidth)
        let v = workspace.floats(Slot.value, count: tokens * vWidth)
        MatMul.multiply([
            MatMulJob(weight: query, input: x, tokens: tokens, output: q),
            MatMulJob(weight: key, input: x, tokens: tokens, output: k),
            MatMulJob(weight: value, input: x, tokens: tokens, output: v),
        ], pool: pool)

        var longest = 0
        for segment in segments {
            for j in 0..<segment.rows {
                let t = segment.firstRow + j
                let qt = q + t * qWidth, kt = k + t * kWidth, vt = v + t * vWidth
                if let b = queryBias { VectorMath.add(b, into: qt, count: qWidth) }
                if let b = keyBias { VectorMath.add(b, into: kt, count: kWidth) }
                if let b = valueBias { VectorMath.add(b, into: vt, count: vWidth) }
                switch qkNorm {
                case .none: break
                case .perHead:
                    for h in 0..<heads { VectorMath.rmsNorm(qt + h * headSize, weight: queryNorm, count: headSize, epsilon: epsilon, into: qt + h * headSize) }
                    for h in 0..<kvHeads { VectorMath.rmsNorm(kt + h * headSize, weight: keyNorm, count: headSize, epsilon: epsilon, into: kt + h * headSize) }
                case .fullProjection:
                    VectorMath.rmsNorm(qt, weight: queryNorm, count: qWidth, epsilon: epsilon, into: qt)
                    VectorMath.rmsNorm(kt, weight: keyNorm, count: kWidth, epsilon: epsilon, into: kt)
                }
                let table = ropeTable + t * rope.dimensions
                rope.apply(qt, heads: heads, headSize: headSize, table: table)
                rope.apply(kt, heads: kvHeads, headSize: headSize, table: table)
                segment.cache.store(layer: layer, position: segment.start + j, key: kt, value: vt)
            }
            longest = max(longest, segment.start + segment.rows)
        }

        let attended = workspace.floats(Slot.attentionOut, count: tokens * heads * valueHeadSize)
        // Keys and values are read block by block through each sequence's block table: a
        // block's rows are a fixed stride apart, so the inner loops see contiguous rows.
        // Plain values per segment, so the threads touch no Swift object.
        let walks = segments.map { AttentionSegment.Walk(view: $0.cache.view(layer: layer), type: $0.cache.layout.type,
                                                         firstRow: $0.firstRow, rows: $0.rows, start: $0.start) }
        let f16 = walks.filter { $0.type == .f16 }, quantized = walks.filter { $0.type != .f16 }
        if !f16.isEmpty {
            attendF16(q: UnsafePointer(q), walks: f16, longest: longest, attended: attended, workspace: workspace, pool: pool)
        }
        if !quantized.isEmpty {
            attendQuantized(q: UnsafePointer(q), walks: quantized, longest: longest, attended: attended,
                            workspace: workspace, pool: pool)
        }
        MatMul.multiply(output, input: attended, tokens: tokens, output: out, pool: pool)
    }

    /// Attention over Q8_0/Q4_0 blocks, one task per query head: the head's query is
    /// quantized to 8 bits per 32 values once per token and a block's rows go to the
    /// quantized-row kernels (`KVRowKernels`).
    private func attendQuantized(q: UnsafePointer<Float>, walks: [AttentionSegment.Walk], longest: Int,
                                 attended: UnsafeMutablePointer<Float>, workspace: Workspace, pool: ThreadPool) {
        let scoresBase = workspace.floats(Slot.scores, count: heads * longest)
        let scale = 1 / Float(headSize).squareRoot()
        let group = heads / kvHeads
        let headSize = headSize, valueHeadSize = valueHeadSize, heads = heads
        let qWidth = heads * headSize
        let queryBytes = KVRowKernels.queryBytes(count: headSize)
        pool.parallelFor(heads) { h in
            let kvh = h / group
            let scores = scoresBase + h * longest
            withUnsafeTemporaryAllocation(byteCount: queryBytes, alignment: 64) { buffer in
                let quantizedQuery = UnsafeMutableRawPointer(buffer.baseAddress!)
                for walk in walks {
                    let view = walk.view, type = walk.type, start = walk.start
                    let blockSize = view.blockSize
                    let keyStride = view.keyRowBytes, valueStride = view.valueRowBytes
                    let ggml = type.ggmlType
                    let keyOffset = type.rowBytes(width: kvh * headSize), valueOffset = type.rowBytes(width: kvh * valueHeadSize)
                    for s in 0..<walk.rows {
                        let t = walk.firstRow + s
                        KVRowKernels.quantizeQuery(q + t * qWidth + h * headSize, count: headSize, into: quantizedQuery)
                        let visible = start + s + 1
                        var j = 0, b = 0
                        while j < visible {
                            let n = min(blockSize, visible - j)
                            KVRowKernels.dots(ggml, query: UnsafeRawPointer(quantizedQuery), count: headSize,
                                              keys: view.keys(block: b) + keyOffset, stride: keyStride, rows: n, scale: scale,
                                              into: scores + j)
                            j += n
                            b += 1
                        }
                        AttentionTile.normalize(scores, count: visible)
                        let o = attended + (t * heads + h) * valueHeadSize
                        o.update(repeating: 0, count: valueHeadSize)
                        j = 0
                        b = 0
                        while j < visible {
                            let n = min(blockSize, visible - j)
                            KVRowKernels.addScaled(ggml, values: view.values(block: b) + valueOffset, stride: valueStride, rows: n,
                                                   weights: scores + j, into: o, count: valueHeadSize)
                            j += n
                            b += 1
                        }
                    }
                }
            }
        }
    }

    /// Attention over F16 blocks. The query heads that share a KV head (grouped-query
    /// attention) walk its keys and values together, up to four at a time, so each row is
    /// loaded and widened once for all of them; each head's arithmetic is exactly what the
    /// per-head walk does (bit-identical results). Work items: one KV head and a run of up
    /// to 8 tokens of one sequence, so prefill spreads over the threads even with one KV head.
    private func attendF16(q: UnsafePointer<Float>, walks: [AttentionSegment.Walk], longest: Int,
                           attended: UnsafeMutablePointer<Float>, workspace: Workspace, pool: ThreadPool) {
        let run = 8
        var items: [(walk: Int, first: Int, end: Int)] = []
        for (w, walk) in walks.enumerated() {
            for first in stride(from: 0, to: walk.rows, by: run) { items.append((w, first, min(first + run, walk.rows))) }
        }
        let group = heads / kvHeads
        // Per thread: one row of scores for each head of a tile.
        let scratch = workspace.floats(Slot.scores, count: pool.threadCount * 4 * longest)
        let scale = 1 / Float(headSize).squareRoot()
        let heads = heads, kvHeads = kvHeads, headSize = headSize, valueHeadSize = valueHeadSize
        let qWidth = heads * headSize
        items.withUnsafeBufferPointer { items in
            walks.withUnsafeBufferPointer { walks in
                pool.parallelForWithThread(items.count * kvHeads) { index, thread in
                    let kvh = index % kvHeads
                    let item = items[index / kvHeads]
                    let walk = walks[item.walk]
                    let tile = AttentionTile(view: walk.view, scores: scratch + thread * 4 * longest, stride: longest,
                                             keyOffset: 2 * kvh * headSize, valueOffset: 2 * kvh * valueHeadSize,
                                             headSize: headSize, valueHeadSize: valueHeadSize, scale: scale)
                    for s in item.first..<item.end {
                        let t = walk.firstRow + s
                        let visible = walk.start + s + 1
                        var h = kvh * group
                        let end = h + group
                        while h < end {
                            let query = q + t * qWidth + h * headSize
                            let out = attended + (t * heads + h) * valueHeadSize
                            switch end - h {
                            case 4...:
                                tile.attend(InlineArray<4, Int>(repeating: 0), query: query, out: out, visible: visible)
                                h += 4
                            case 2...:
                                tile.attend(InlineArray<2, Int>(repeating: 0), query: query, out: out, visible: visible)
                                h += 2
                            default:
                                tile.attend(InlineArray<1, Int>(repeating: 0), query: query, out: out, visible: visible)
                                h += 1
                            }
                        }
                    }
                }
            }
        }
    }
}

import Foundation

/// One sequence's rows in a batch: rows `firstRow ..< firstRow + rows` of the batch go at
/// positions `start ..< start + rows` of `cache` (reserved by the forward pass).
struct AttentionSegment {
    let cache: KVSequence
    let firstRow: Int
    let rows: Int
    let start: Int

    /// What the attention threads read of a segment for one layer: plain values.
    struct Walk: @unchecked Sendable {
        let view: KVLayerView
        let type: KVType
        let firstRow: Int
        let rows: Int
        let start: Int
    }
}

/// One thread's walk of a KV head's F16 keys and values for `N` consecutive query heads of
/// one token (`attendF16`).
struct AttentionTile {
    let view: KVLayerView
    /// N rows of `stride` floats.
    let scores: UnsafeMutablePointer<Float>
    let stride: Int
    let keyOffset: Int
    let valueOffset: Int
    let headSize: Int
    let valueHeadSize: Int
    let scale: Float

    /// Heads `query`, `query + headSize`, ... (N of them) over positions `0..<visible`; head k's
    /// result goes to `out + k * valueHeadSize`. (`_` only carries N.)
    @inline(__always)
    func attend<let N: Int>(_: InlineArray<N, Int>, query: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                            visible: Int) {
        let queries = InlineArray<N, UnsafePointer<Float>> { k in query + k * headSize }
        let blockSize = view.blockSize
        let keyStride = view.keyRowBytes, valueStride = view.valueRowBytes
        var j = 0, b = 0
        while j < visible {
            let n = min(blockSize, visible - j)
            let keys = view.keys(block: b) + keyOffset
            for r in 0..<n {
                HalfMath.dots(queries, keys + r * keyStride, count: headSize, into: scores + j + r, stride: stride, scale: scale)
            }
            j += n
            b += 1
        }
        for k in 0..<N { Self.normalize(scores + k * stride, count: visible) }
        let outputs = InlineArray<N, UnsafeMutablePointer<Float>> { k in out + k * valueHeadSize }
        for k in 0..<N { outputs[k].update(repeating: 0, count: valueHeadSize) }
        j = 0
        b = 0
        while j < visible {
            let n = min(blockSize, visible - j)
            let values = view.values(block: b) + valueOffset
            for r in 0..<n {
                let weights = InlineArray<N, Float> { k in scores[k * stride + j + r] }
                HalfMath.addScaled(values + r * valueStride, scales: weights, into: outputs, count: valueHeadSize)
            }
            j += n
            b += 1
        }
    }

    /// Scores to attention weights: softmax with a Float sum (as the reference logits were
    /// computed with; `VectorMath.softmax` sums in Double).
    @inline(__always)
    static func normalize(_ scores: UnsafeMutablePointer<Float>, count: Int) {
        var maxScore = -Float.infinity
        for j in 0..<count where scores[j] > maxScore { maxScore = scores[j] }
        var sum: Float = 0
        for j in 0..<count {
            let e = Foundation.exp(scores[j] - maxScore)
            scores[j] = e
            sum += e
        }
        let inv = 1 / sum
        for j in 0..<count { scores[j] *= inv }
    }
}

// Beside their only caller: debug builds compile file by file, and these generics over the
// count N would otherwise run unspecialized there, a path that crashed now and then (a call
// through a null pointer, two threads, Swift 6.3.1).
extension HalfMath {
    /// `scale * VectorMath.dot(q[k], b)` for the `N` (1, 2 or 4) queries of `q` against one F16
    /// row `b`, into `out[k * stride]`: the row is loaded and widened once for all of them (the
    /// query heads of a KV head share its keys). Each query's sum has `VectorMath.dot`'s
    /// accumulators and order, so a result is what that gives for the widened row.
    @inline(__always)
    static func dots<let N: Int>(_ q: InlineArray<N, UnsafePointer<Float>>, _ b: UnsafeRawPointer, count: Int,
                                 into out: UnsafeMutablePointer<Float>, stride: Int, scale: Float) {
        var acc0 = InlineArray<N, SIMD8<Float>>(repeating: SIMD8<Float>())
        var acc1 = InlineArray<N, SIMD8<Float>>(repeating: SIMD8<Float>())
        var i = 0
        while i &+ 16 <= count {
            let k0 = load8(b + i &* 2), k1 = load8(b + (i &+ 8) &* 2)
            for k in 0..<N {
                acc0[k] += UnsafeRawPointer(q[k] + i).loadUnaligned(as: SIMD8<Float>.self) * k0
                acc1[k] += UnsafeRawPointer(q[k] + i + 8).loadUnaligned(as: SIMD8<Float>.self) * k1
            }
            i &+= 16
        }
        for k in 0..<N {
            var s = (acc0[k] + acc1[k]).sum()
            var j = i
            while j < count { s += q[k][j] * load1(b, j); j &+= 1 }
            out[k &* stride] = s * scale
        }
    }

    /// `VectorMath.addScaled(y, scale[k], into: x[k])` for `N` outputs and one F16 row `y`,
    /// widened once; each output gets exactly what that gives for the widened row.
    @inline(__always)
    static func addScaled<let N: Int>(_ y: UnsafeRawPointer, scales: InlineArray<N, Float>,
                                      into x: InlineArray<N, UnsafeMutablePointer<Float>>, count: Int) {
        var i = 0
        while i &+ 8 <= count {
            let v = load8(y + i &* 2)
            for k in 0..<N {
                let a = UnsafeRawPointer(x[k] + i).loadUnaligned(as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(x[k] + i).storeBytes(of: a + v * scales[k], as: SIMD8<Float>.self)
            }
            i &+= 8
        }
        while i < count {
            let v = load1(y, i)
            for k in 0..<N { x[k][i] += scales[k] * v }
            i &+= 1
        }
    }
}
