import Models

/// Fate's cross-layer gate with its online correction: a MoE layer's norm and router applied
/// to the hidden state of an earlier point predict the experts it will select, and each MoE
/// layer's `GateCorrection` learns, from what its router then computes, what those
/// predictions miss.
final class CrossLayerGate {
    /// Step size of the corrections (0: the plain gate, nothing learned or kept).
    var learningRate: Float = 0 {
        didSet { for case let c? in corrections { c.rate = learningRate } }
    }
    /// Per model layer, its correction once a prediction of it was corrected.
    private var corrections: [GateCorrection?] = []

    /// Corrections' updates so far, over every layer and distance.
    var updates: Int { corrections.reduce(0) { $0 + ($1?.updates ?? 0) } }

    /// The prediction of `target`'s experts from the hidden state `observation` offers, made
    /// `distance` layers before `target` (0: its own input, before its attention).
    func predict(_ target: MoELayerView, from observation: LayerObservation, distance: Int) -> GatePrediction {
        let o = observation
        guard learningRate > 0 else {
            return target.predict(o.hiddenState, tokens: o.tokens, hidden: o.hidden, workspace: o.workspace, pool: o.pool)
        }
        let correction = self.correction(target, hidden: o.hidden)
        return target.predict(o.hiddenState, tokens: o.tokens, hidden: o.hidden, workspace: o.workspace, pool: o.pool) {
            correction.apply(input: $0, tokens: o.tokens, logits: $1, distance: distance)
        }
    }

    /// Before the observed layer's feed-forward: its correction learns from the logits its
    /// router computed, when its last prediction was of this single token.
    func learn(from observation: LayerObservation) {
        let o = observation
        guard o.layer < corrections.count, let correction = corrections[o.layer], correction.isPending else { return }
        guard o.tokens == 1, let logits = o.routerLogits else {
            correction.forgetPending()
            return
        }
        correction.learn(actual: logits, tokens: 1)
    }

    private func correction(_ layer: MoELayerView, hidden: Int) -> GateCorrection {
        if layer.layer >= corrections.count { corrections += Array(repeating: nil, count: layer.layer + 1 - corrections.count) }
        if let c = corrections[layer.layer] { return c }
        let c = GateCorrection(experts: layer.expertCount, hidden: hidden)
        c.rate = learningRate
        corrections[layer.layer] = c
        return c
    }
}
