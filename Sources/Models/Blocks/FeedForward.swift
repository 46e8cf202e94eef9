import Kernels

/// A dense SwiGLU feed-forward: down(silu(gate·x) ⊙ up·x).
public struct FeedForward: @unchecked Sendable {
    public let gate: WeightMatrix
    public let up: WeightMatrix
    public let down: WeightMatrix

    public init(gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix) {
        self.gate = gate
        self.up = up
        self.down = down
    }

    /// Loads `blk.N.ffn_{gate,up,down}SUFFIX.weight` of width `width`.
    public init(_ w: WeightStore, layer: Int, hidden: Int, width: Int, suffix: String = "") throws(ModelError) {
        let p = "blk.\(layer).ffn_"
        gate = try w.matrix(p + "gate\(suffix).weight", rows: width, columns: hidden)
        up = try w.matrix(p + "up\(suffix).weight", rows: width, columns: hidden)
        down = try w.matrix(p + "down\(suffix).weight", rows: hidden, columns: width)
    }

    func forward(_ x: UnsafePointer<Float>, tokens: Int, workspace: Workspace, pool: ThreadPool,
                 out: UnsafeMutablePointer<Float>) {
        let width = gate.rows
        let g = workspace.floats(Slot.ffnGate, count: tokens * width)
        let u = workspace.floats(Slot.ffnUp, count: tokens * width)
        MatMul.multiply([
            MatMulJob(weight: gate, input: x, tokens: tokens, output: g),
            MatMulJob(weight: up, input: x, tokens: tokens, output: u),
        ], pool: pool)
        VectorMath.swiglu(g, u, count: tokens * width)
        MatMul.multiply(down, input: g, tokens: tokens, output: out, pool: pool)
    }
}
