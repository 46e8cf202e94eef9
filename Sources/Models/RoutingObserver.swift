/// What the cross-layer gate (Fate) predicts for one MoE layer: that layer's norm and router
/// applied to the previous layer's hidden state (after the previous layer's attention, before
/// its feed-forward), for every token of a batch.
public struct GatePrediction: Sendable, Equatable {
    /// The layer predicted (the one whose router was used).
    public let layer: Int
    public let expertCount: Int
    public let expertsPerToken: Int
    /// tokens × expertsPerToken: each token's predicted top k, most probable first.
    public let experts: [Int]
    /// tokens × expertCount: each token's softmax over all experts (index = expert id).
    public let probabilities: [Float]

    public init(layer: Int, expertCount: Int, expertsPerToken: Int, experts: [Int], probabilities: [Float]) {
        self.layer = layer
        self.expertCount = expertCount
        self.expertsPerToken = expertsPerToken
        self.experts = experts
        self.probabilities = probabilities
    }

    public var tokens: Int { expertsPerToken > 0 ? experts.count / expertsPerToken : 0 }

    /// Token `t`'s predicted top k, most probable first.
    public func experts(token t: Int) -> ArraySlice<Int> {
        experts[(t * expertsPerToken)..<((t + 1) * expertsPerToken)]
    }

    /// Token `t`'s probabilities over all experts.
    public func probabilities(token t: Int) -> ArraySlice<Float> {
        probabilities[(t * expertCount)..<((t + 1) * expertCount)]
    }

    /// Every expert some token predicts, the most popular first (ties: the higher summed
    /// probability): what a prefetching provider reads ahead for the whole batch.
    public var ranked: [Int] {
        var votes = [Int](repeating: 0, count: expertCount)
        var mass = [Float](repeating: 0, count: expertCount)
        for t in 0..<tokens {
            for e in experts(token: t) { votes[e] += 1 }
            let base = t * expertCount
            for i in 0..<expertCount { mass[i] += probabilities[base + i] }
        }
        return (0..<expertCount).filter { votes[$0] > 0 }
            .sorted { votes[$0] != votes[$1] ? votes[$0] > votes[$1] : mass[$0] > mass[$1] }
    }
}

/// Watches a model route its tokens (routing records, online statistics). Set it as
/// `DecoderModel.routingObserver`; for every forward pass the model calls `beginBatch`, then
/// `didRoute` once per MoE layer in layer order, then `endBatch` (not called when the pass
/// fails part way). With an observer, every MoE layer whose previous layer is MoE gets the
/// cross-layer gate's prediction: the one the expert provider made at its observation point
/// (corrected, when read-ahead learns), or else the plain gate's, which the model then
/// computes (one router matmul per layer); it never changes the results.
public protocol RoutingObserver: AnyObject {
    /// The batch about to run: token ids and each one's position in its own sequence. A
    /// batch of several sequences (`DecoderModel.forward(_:workspace:pool:)`) lists them
    /// sequence by sequence, in the batch's order, so positions may repeat (forked sequences
    /// decode at the same positions) and go down where the next sequence starts; which
    /// sequence a token belongs to is not recorded.
    func beginBatch(tokens: [Int], positions: [Int])
    /// MoE layer `layer` routed the batch: `routes[t]` is token t's choice (experts in the
    /// router's order, with their routing weights). `prediction` is what the cross-layer
    /// gate predicted for this layer from the previous layer's hidden state, nil when the
    /// previous layer is not a MoE layer (or there is none).
    func didRoute(layer: Int, routes: [MixtureOfExperts.Route], prediction: GatePrediction?)
    /// The batch went through every layer. An error fails the forward pass.
    func endBatch() throws(ModelError)
}
