import Kernels

/// A sparse MoE feed-forward: a softmax router picks the top-k experts per token, each
/// selected expert is a SwiGLU FFN, outputs are summed with the routing weights.
/// Optionally a shared expert (qwen2moe) runs on every token, scaled by a sigmoid gate.
public struct MixtureOfExperts: @unchecked Sendable {
    public let layer: Int
    public let router: WeightMatrix
    public let expertCount: Int
    public let expertsPerToken: Int
    public let width: Int
    /// Renormalize the selected experts' probabilities to sum to 1 (Mixtral, qwen3moe).
    public let normalizeWeights: Bool
    /// Multiply routing weights by this after selection (ignored when 0 or 1).
    public let weightScale: Float
    public let shared: FeedForward?
    /// `blk.N.ffn_gate_inp_shexp.weight`: one row; sigmoid(row·x) scales the shared expert.
    public let sharedGate: UnsafePointer<Float>?

    public init(_ w: WeightStore, layer: Int, _ hp: HyperParameters, normalizeWeights: Bool,
                sharedExpert: Bool = false) throws(ModelError) {
        self.layer = layer
        let h = hp.embeddingLength
        router = try w.matrix("blk.\(layer).ffn_gate_inp.weight", rows: hp.expertCount, columns: h)
        expertCount = hp.expertCount
        expertsPerToken = hp.expertUsedCount
        width = hp.expertFeedForwardLength
        self.normalizeWeights = normalizeWeights
        weightScale = hp.expertWeightsScale
        if sharedExpert {
            let sharedWidth = hp.sharedExpertFeedForwardLength > 0 ? hp.sharedExpertFeedForwardLength : hp.feedForwardLength
            shared = try FeedForward(w, layer: layer, hidden: h, width: sharedWidth, suffix: "_shexp")
            sharedGate = try w.vector("blk.\(layer).ffn_gate_inp_shexp.weight", count: h)
        } else {
            shared = nil
            sharedGate = nil
        }
    }

    /// The experts and weights chosen for one token.
    public struct Route: Sendable, Equatable {
        public var experts: [Int]
        public var weights: [Float]
    }

    /// Puts the `k` most probable of `expertCount` experts of `p` first in `order`, most
    /// probable first, ties to the lower id (a partial selection sort: k is small, 2–8).
    @inline(__always)
    static func selectTop(_ p: UnsafePointer<Float>, expertCount: Int, k: Int, _ order: inout [Int]) {
        for i in 0..<expertCount { order[i] = i }
        for s in 0..<k {
            var best = s
            for i in (s + 1)..<expertCount where p[order[i]] > p[order[best]] { best = i }
            order.swapAt(s, best)
        }
    }

    /// The router's logits for every token of `x` (tokens × hidden, the layer's normalized
    /// input): tokens × expertCount, in the workspace until the layer routes them.
    func routerLogits(_ x: UnsafePointer<Float>, tokens: Int, workspace: Workspace,
                      pool: ThreadPool) -> UnsafeMutablePointer<Float> {
        let logits = workspace.floats(Slot.routerLogits, count: tokens * expertCount)
        MatMul.multiply(router, input: x, tokens: tokens, output: logits, pool: pool)
        return logits
    }

    /// Routes every token from its router logits (`routerLogits`, turned into probabilities
    /// in place): softmax over all experts, top-k, then optional renormalization and scaling,
    /// as llama.cpp's MoE graph does.
    func route(logits: UnsafeMutablePointer<Float>, tokens: Int) -> [Route] {
        var routes: [Route] = []
        routes.reserveCapacity(tokens)
        var order = [Int](repeating: 0, count: expertCount)
        for t in 0..<tokens {
            let p = logits + t * expertCount
            VectorMath.softmax(p, count: expertCount)
            Self.selectTop(p, expertCount: expertCount, k: expertsPerToken, &order)
            let experts = Array(order[0..<expertsPerToken])
            var weights = experts.map { p[$0] }
            if normalizeWeights {
                // Clamped like llama.cpp so a row of zeros cannot divide by zero.
                let sum = max(weights.reduce(0, +), 6.103515625e-5)
                for i in weights.indices { weights[i] /= sum }
            }
            if weightScale != 0 && weightScale != 1 {
                for i in weights.indices { weights[i] *= weightScale }
            }
            routes.append(Route(experts: experts, weights: weights))
        }
        return routes
    }

    /// Computes the layer for `tokens` tokens of normalized input `x`, whose router logits
    /// `routerLogits` computed, writing `out` (tokens × hidden). Experts come from
    /// `provider`, in groups as they become ready; each
    /// expert's result lands in its own rows, so the sum below does not depend on the order
    /// or grouping in which the provider delivers them.
    /// Returns the routes it took (observers of the routing get them).
    @discardableResult
    func forward(_ x: UnsafePointer<Float>, routerLogits logits: UnsafeMutablePointer<Float>, tokens: Int, hidden: Int,
                 provider: ExpertProvider, workspace: Workspace, pool: ThreadPool,
                 out: UnsafeMutablePointer<Float>) throws(ModelError) -> [Route] {
        let routes = route(logits: logits, tokens: tokens)

        // Group tokens by expert so each expert's weights are streamed once per batch.
        var tokensOf: [Int: [(token: Int, weight: Float)]] = [:]
        var selected: [Int] = []
        for (t, r) in routes.enumerated() {
            for (e, wgt) in zip(r.experts, r.weights) {
                if tokensOf[e] == nil { selected.append(e) }
                tokensOf[e, default: []].append((t, wgt))
            }
        }
        let importance = selected.map { e in tokensOf[e]!.reduce(0) { max($0, $1.weight) } }

        let assignments = selected.reduce(0) { $0 + tokensOf[$1]!.count }
        let input = workspace.floats(Slot.expertInput, count: assignments * hidden)
        let gate = workspace.floats(Slot.expertGate, count: assignments * width)
        let up = workspace.floats(Slot.expertUp, count: assignments * width)
        let down = workspace.floats(Slot.expertDown, count: assignments * hidden)

        // Each selected expert's first row in the per-assignment buffers, and its input rows.
        var firstRow: [Int] = []
        firstRow.reserveCapacity(selected.count)
        var row = 0
        for e in selected {
            let list = tokensOf[e]!
            firstRow.append(row)
            if tokens > 1 {
                for (j, a) in list.enumerated() {
                    (input + (row + j) * hidden).update(from: x + a.token * hidden, count: hidden)
                }
            }
            row += list.count
        }

        let width = width
        try provider.withExperts(layer: layer, experts: selected, importance: importance) { positions, weights throws(ModelError) in
            var upJobs: [MatMulJob] = []
            var downJobs: [MatMulJob] = []
            upJobs.reserveCapacity(2 * positions.count)
            downJobs.reserveCapacity(positions.count)
            for (i, position) in positions.enumerated() {
                let r = firstRow[position]
                let n = tokensOf[selected[position]]!.count
                let source = tokens == 1 ? x : UnsafePointer(input + r * hidden)
                upJobs.append(MatMulJob(weight: weights[i].gate, input: source, tokens: n, output: gate + r * width))
                upJobs.append(MatMulJob(weight: weights[i].up, input: source, tokens: n, output: up + r * width))
                downJobs.append(MatMulJob(weight: weights[i].down, input: gate + r * width, tokens: n, output: down + r * hidden))
            }
            MatMul.multiply(upJobs, pool: pool)
            for position in positions {
                let r = firstRow[position]
                let n = tokensOf[selected[position]]!.count
                VectorMath.swiglu(gate + r * width, up + r * width, count: n * width)
            }
            MatMul.multiply(downJobs, pool: pool)
        }

        // Weighted sum, in each token's routing order (as llama.cpp adds expert outputs).
        out.update(repeating: 0, count: tokens * hidden)
        var rowOf: [Int: Int] = [:]
        for (i, e) in selected.enumerated() { rowOf[e] = firstRow[i] }
        var seen = [Int: Int]()
        for (t, r) in routes.enumerated() {
            for (e, wgt) in zip(r.experts, r.weights) {
                // Position of token t within expert e's group.
                let k = seen[e, default: 0]
                seen[e] = k + 1
                _ = t
                VectorMath.addScaled(down + (rowOf[e]! + k) * hidden, scale: wgt, into: out + t * hidden, count: hidden)
            }
        }

        if let shared, let sharedGate {
            let s = workspace.floats(Slot.sharedOut, count: tokens * hidden)
            shared.forward(x, tokens: tokens, workspace: workspace, pool: pool, out: s)
            for t in 0..<tokens {
                let gateValue = 1 / (1 + Foundation.exp(-VectorMath.dot(sharedGate, x + t * hidden, count: hidden)))
                VectorMath.addScaled(s + t * hidden, scale: gateValue, into: out + t * hidden, count: hidden)
            }
        }
        return routes
    }
}

import Foundation
