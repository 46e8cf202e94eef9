import Foundation
import Models

/// The read-ahead side of the offloader: the cross-layer gate that predicts coming layers'
/// experts, how far ahead, which predictions are waiting to be read, which candidates to
/// read for them and how many, the prefetched experts no layer has used yet,
/// and the timing of the forward pass that steers the adaptive look-ahead. It decides what
/// to read; the provider claims the slots and the reader reads.
final class ReadAhead {
    /// What to read ahead on.
    var mode: PrefetchMode = .none
    /// Routing-path statistics mixed into the gate's ranking with `--prefetch path`.
    var pathPredictor: RoutingPathPredictor?
    /// Weight of the path statistics in that mix (the gate's is 1 minus it): on the default
    /// model the best mix for 2 to 4 candidates lay between 0.1 and 0.25.
    var pathWeight: Float = 0.2
    /// How far ahead and how wide `--prefetch adaptive` reads.
    private(set) var lookahead = AdaptiveLookahead()
    /// What predicts the experts to read.
    let gate = CrossLayerGate()

    private let layout: ExpertLayout
    private let slotCount: Int
    private let stats: ExpertStats
    /// The gate's predictions for coming layers (from `hint`), not yet read.
    private var pendingHints: [Int: GatePrediction] = [:]
    /// Prefetched experts not yet used (arrived or still loading), with the forward pass
    /// that asked for them. They are kept from the policy until used: it sees the stream of
    /// demands alone, as without read-ahead, so a wrong prediction never counts as a use or
    /// makes a resident expert look older. Their slots are the first given up (once their
    /// layer has run in a later pass or this one without them): a wrong prediction then
    /// takes the slot of an earlier wrong one, not one the policy chose to keep.
    private var unused: [ExpertKey: Int] = [:]
    /// Forward passes begun, and the layer the current one is at.
    private var passIndex = 0
    private var currentLayer = -1
    /// Tokens of the current forward pass.
    private(set) var batchTokens = 1

    /// Timing of the current forward pass, for the adaptive look-ahead.
    private struct Pass {
        var stallAtStart = 0.0
        var readsAtStart = 0
        var readBusyAtStart = 0.0
        var usedAtStart = 0
        var wastedAtStart = 0
        var layers = 0
        var firstEntry: ContinuousClock.Instant?
        var lastExit: ContinuousClock.Instant?
    }
    private var pass = Pass()

    init(layout: ExpertLayout, slotCount: Int, stats: ExpertStats) {
        self.layout = layout
        self.slotCount = slotCount
        self.stats = stats
    }

    /// A forward pass of `tokens` tokens begins: the last decode step's figures steer the
    /// adaptive look-ahead, and predictions left from the last pass are dropped.
    func beginPass(tokens: Int) {
        if batchTokens == 1, pass.layers > 0, let first = pass.firstEntry, let last = pass.lastExit {
            lookahead.record(layers: pass.layers, computeSeconds: (last - first).seconds - (stats.stallSeconds - pass.stallAtStart),
                             expertsRead: stats.expertsRead - pass.readsAtStart,
                             readSeconds: stats.readBusySeconds - pass.readBusyAtStart)
            lookahead.record(prefetchesUsed: stats.prefetchesUsed - pass.usedAtStart, wasted: stats.prefetchesWasted - pass.wastedAtStart)
        }
        pass = Pass(stallAtStart: stats.stallSeconds, readsAtStart: stats.expertsRead, readBusyAtStart: stats.readBusySeconds,
                    usedAtStart: stats.prefetchesUsed, wastedAtStart: stats.prefetchesWasted)
        batchTokens = tokens
        passIndex += 1
        currentLayer = -1
        pendingHints.removeAll()
    }

    /// `layer` asks for `experts`.
    func enterLayer(_ layer: Int, experts: [Int]) {
        if pass.firstEntry == nil { pass.firstEntry = .now }
        if batchTokens == 1 { pathPredictor?.observe(layer: layer, experts: experts) }
        pass.layers += 1
        currentLayer = layer
    }

    func exitLayer() { pass.lastExit = .now }

    /// Layers ahead of the current one whose experts to predict before its feed-forward (0
    /// with `near`, which predicts each layer before its own attention).
    var depth: Int {
        switch mode {
        case .none, .near: return 0
        case .gate: return 1
        case .adaptive, .path: return lookahead.depth
        }
    }

    /// Experts to read ahead for one layer: a token's worth in decoding (adaptive: as many
    /// as spare disk time allows); for a batch the most popular predictions, up to a share
    /// of the pool that leaves room for the layers in between.
    var prefetchLimit: Int {
        let k = layout.expertsPerToken
        guard batchTokens > 1 else {
            return mode == .adaptive || mode == .path ? lookahead.candidates(k: k, expertCount: layout.expertCount) : k
        }
        return min(layout.expertCount, max(k, slotCount / (2 * max(layout.layers.count, 1))))
    }

    // MARK: Predictions

    /// Keeps `prediction` to read when the provider next can; false when there is no read-ahead
    /// or its layer has no experts. A later (nearer) prediction for a layer replaces an earlier one.
    func store(_ prediction: GatePrediction) -> Bool {
        guard mode != .none, layout.hasExperts(layer: prediction.layer) else { return false }
        pendingHints[prediction.layer] = prediction
        return true
    }

    var hasHints: Bool { !pendingHints.isEmpty }

    func dropHints() { pendingHints.removeAll() }

    /// The predictions for layers after `layer`, nearest first, each with the candidates to
    /// read (ranked, at most `prefetchLimit`); every waiting prediction is taken (those for
    /// `layer` or earlier are stale). Scores each against what its layer will select:
    /// recall and precision count what is read, a token's worth or the adaptive candidates.
    func takeHints(after layer: Int, experts current: [Int]?) -> [(layer: Int, prediction: GatePrediction, experts: [Int])] {
        let limit = prefetchLimit
        let hints = pendingHints.filter { $0.key > layer }.sorted { $0.key < $1.key }.map { l, prediction in
            (l, prediction, Array(ranking(prediction, current: layer, experts: current).prefix(limit)))
        }
        pendingHints.removeAll()
        for (l, _, experts) in hints {
            stats.recordHint(layer: l, experts: Array(experts.prefix(batchTokens > 1 ? layout.expertsPerToken : limit)))
        }
        return hints
    }

    /// The candidates for `prediction.layer`, most likely first. One token: every expert by
    /// the gate's probability, mixed with the path statistics given the experts the current
    /// layer chose when that layer is the one before. A batch: the experts its tokens
    /// predict, the most popular first.
    /// With `--prefetch adaptive` or `path`, only candidates at or above the look-ahead's
    /// confidence bar.
    func ranking(_ prediction: GatePrediction, current layer: Int, experts: [Int]?) -> [Int] {
        guard prediction.tokens == 1 else { return prediction.ranked }
        var scores = Array(prediction.probabilities(token: 0))
        if let path = pathPredictor, let experts, let i = layout.layers.firstIndex(of: layer),
           i + 1 < layout.layers.count, layout.layers[i + 1] == prediction.layer {
            let statistics = path.scores(nextLayer: prediction.layer, given: experts)
            scores = zip(scores, statistics).map { (1 - pathWeight) * $0 + pathWeight * $1 }
        }
        var ranked = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        if mode == .adaptive || mode == .path {
            let bar = lookahead.minimumProbability
            ranked = ranked.filter { scores[$0] >= bar }
        }
        return ranked
    }

    /// Per expert, the routing weight the prediction expects it to get: the largest, over the
    /// batch's tokens, of its gate probability over the token's top k's (the weights the
    /// router renormalizes to).
    func expectedImportance(_ prediction: GatePrediction) -> [Float] {
        var importance = [Float](repeating: 0, count: prediction.expertCount)
        for t in 0..<prediction.tokens {
            let p = prediction.probabilities(token: t)
            let top = p.sorted(by: >).prefix(layout.expertsPerToken).reduce(0, +)
            guard top > 0 else { continue }
            for (e, probability) in zip(importance.indices, p) { importance[e] = max(importance[e], probability / top) }
        }
        return importance
    }

    // MARK: Prefetched experts not yet used

    /// `key` is being read ahead for this pass.
    func stage(_ key: ExpertKey) { unused[key] = passIndex }

    /// Whether `key` was read ahead and not yet used; no longer staged afterwards.
    @inline(__always)
    func unstage(_ key: ExpertKey) -> Bool { unused.removeValue(forKey: key) != nil }

    func isStaged(_ key: ExpertKey) -> Bool { unused[key] != nil }

    /// The oldest staged prefetch whose layer has run since it was asked for without using
    /// it (an earlier pass, or this pass past its layer), among those `isEvictable` accepts.
    func stalePrefetch(isEvictable: (ExpertKey) -> Bool) -> ExpertKey? {
        var oldest: (key: ExpertKey, pass: Int)?
        for (key, pass) in unused where pass < passIndex || key.layer <= currentLayer {
            guard isEvictable(key) else { continue }
            if let o = oldest, (o.pass, o.key.layer, o.key.expert, o.key.precision) <= (pass, key.layer, key.expert, key.precision) { continue }
            oldest = (key, pass)
        }
        return oldest?.key
    }
}
