import Kernels

/// A MoE layer's routing parts, read-only: its feed-forward norm and router. Enough to
/// predict what the layer will select from a hidden state of some earlier point (Fate's
/// cross-layer gate), or to compute what its router computes.
public struct MoELayerView: @unchecked Sendable {
    public let layer: Int
    /// The norm applied before the layer's feed-forward (hidden).
    public let norm: UnsafePointer<Float>
    public let router: WeightMatrix
    public let expertCount: Int
    public let expertsPerToken: Int
    public let epsilon: Float

    /// What the router would select for hidden state `x` (tokens × hidden, before this
    /// layer's norm, which is applied here), token by token. `adjust` sees the normalized
    /// input and may change the logits before the softmax (an online correction).
    public func predict(_ x: UnsafePointer<Float>, tokens: Int, hidden: Int, workspace: Workspace, pool: ThreadPool,
                        adjust: (_ input: UnsafePointer<Float>, _ logits: UnsafeMutablePointer<Float>) -> Void = { _, _ in })
        -> GatePrediction {
        let normed = workspace.floats(Slot.predictionInput, count: tokens * hidden)
        for t in 0..<tokens {
            VectorMath.rmsNorm(x + t * hidden, weight: norm, count: hidden, epsilon: epsilon, into: normed + t * hidden)
        }
        let logits = workspace.floats(Slot.predictionLogits, count: tokens * expertCount)
        MatMul.multiply(router, input: normed, tokens: tokens, output: logits, pool: pool)
        adjust(normed, logits)
        var experts: [Int] = []
        experts.reserveCapacity(tokens * expertsPerToken)
        var order = [Int](repeating: 0, count: expertCount)
        for t in 0..<tokens {
            let p = logits + t * expertCount
            VectorMath.softmax(p, count: expertCount)
            MixtureOfExperts.selectTop(p, expertCount: expertCount, k: expertsPerToken, &order)  // the router's own selection
            experts += order[0..<expertsPerToken]
        }
        let probabilities = Array(UnsafeBufferPointer(start: logits, count: tokens * expertCount))
        return GatePrediction(layer: layer, expertCount: expertCount, expertsPerToken: expertsPerToken,
                              experts: experts, probabilities: probabilities)
    }
}

/// The model at one point of a forward pass, offered to the expert provider: the hidden
/// state before a MoE layer's attention or its feed-forward, and read-only views of the MoE
/// layers' routing. Read-ahead predicts from it; it never changes the results.
public struct LayerObservation {
    public enum Stage: Sendable, Equatable {
        /// The layer's input, before its attention.
        case beforeAttention
        /// After the layer's attention, before its feed-forward (where its router runs).
        case beforeFeedForward
    }
    public let stage: Stage
    /// The MoE layer observed.
    public let layer: Int
    public let tokens: Int
    public let hidden: Int
    /// tokens × hidden: the residual stream at this point.
    public let hiddenState: UnsafePointer<Float>
    /// Before the feed-forward: the logits (tokens × expertCount, before softmax) the layer's
    /// router computed for its input, about to be routed; nil before attention.
    public let routerLogits: UnsafePointer<Float>?
    /// Whether a routing observer records the prediction of the next layer made here (the
    /// provider returns it from `observe` when it makes one).
    public let recordsPrediction: Bool
    public let workspace: Workspace
    public let pool: ThreadPool
    let model: DecoderModel

    /// Layers of the model (dense and MoE).
    public var layerCount: Int { model.layers.count }

    /// The routing parts of layer `l`; nil when it is not a MoE layer or there is none.
    public func moeLayer(_ l: Int) -> MoELayerView? { model.moeLayerView(l) }
}
