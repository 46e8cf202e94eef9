/// A predicted Belady for the layer cycle of decoding: evicts the resident expert whose next
/// use is expected furthest ahead. Decoding visits the MoE layers in a fixed order, so an
/// expert of layer `l` is next wanted no sooner than its layer comes round again (`d` layer
/// steps from the layer being computed, a whole cycle `C` for that layer itself), and then
/// on each later visit with its per-visit use probability `p`: the expected wait is
/// `d + C · (1/p − 1)` steps.
///
/// `p` blends two estimates of how often the expert is used per visit of its layer: a
/// long-run one (every use counted, over the visits of the layer so far) and a recent one
/// (uses decayed by half at every visit), because experts picked by a token tend to be
/// picked again by the next few tokens, and the long-run count learns that too slowly. Both
/// carry a prior of one visit at the uniform rate `k / experts`, so an expert seen once is
/// neither certain nor worthless.
///
/// Below one cycle's worth of slots recency evicts exactly what the next token needs first;
/// here the experts of layers just computed wait longest, so the pool keeps a stable,
/// popular part of every layer and the rest turns over. Above it the estimate ranks like a
/// frequency with aging that also follows the token-to-token drift of routing.
///
/// Low-precision copies (precision fallback) share the statistics of their expert and are
/// ranked the same way, but only against copies: a request evicts within its own class.
public final class CyclePolicy: ExpertCachePolicy {
    public static let name = "cycle"
    public static let summary = "predicted Belady over the layer cycle: furthest expected next use, from blended recent and long-run use per layer"

    /// Weight of the recent estimate in the blend (the long-run one has the rest).
    static let recentWeight = 0.4
    /// Pseudo-visits of the prior.
    static let priorWeight = 1.0
    /// The recent estimate halves at every visit of the layer; beyond this many visits it is 0.
    static let recentHorizon = 64

    private let expertsPerLayer: Int
    private let cycle: Int
    private let prior: Double
    /// 0.5^i, i < recentHorizon.
    private let halving: [Double]

    /// Position of each layer in the cycle (index = layer; -1 for a layer not seen yet).
    private var position: [Int]
    /// Per position: visits so far, the visit counts the estimates divide by, and where its
    /// block of experts starts in the per-expert arrays.
    private var visits: [Int] = []
    private var recentVisits: [Double] = []
    private var longVisits: [Double] = []
    private var blockStart: [Int] = []

    /// Per expert (a block of `expertsPerLayer` per position; keys outside the model's shape
    /// get single entries): uses, decayed and not, the visit they were last brought up to
    /// date (-1 never), and the expert's position.
    private var recentUses: [Double] = []
    private var longUses: [Double] = []
    private var stamp: [Int] = []
    private var positionOfIndex: [Int] = []
    private var outside: [ExpertKey: Int] = [:]
    private var negativeLayers: [Int: Int] = [:]

    /// The resident keys, densely, with their statistics index; where each key sits.
    private var resident: [(key: ExpertKey, index: Int)] = []
    private var residentAt: [ExpertKey: Int] = [:]

    /// The position of the layer of the latest hit or miss: where the cycle is.
    private var current = -1

    public init(context: PolicyContext) {
        expertsPerLayer = max(context.expertsPerLayer, 1)
        cycle = max(context.expertLayers.count, 1)
        prior = min(1, Double(max(context.expertsPerToken, 1)) / Double(expertsPerLayer))
        halving = (0..<Self.recentHorizon).map { 1 / Double(sign: .plus, exponent: $0, significand: 1) }
        position = Array(repeating: -1, count: max(context.layerCount, (context.expertLayers.max() ?? -1) + 1, 0))
        for l in context.expertLayers where l >= 0 && position[l] < 0 { addPosition(for: l) }
        residentAt.reserveCapacity(context.capacity)
        resident.reserveCapacity(context.capacity)
    }

    private func appendExperts(_ n: Int, position p: Int) {
        recentUses += repeatElement(0, count: n)
        longUses += repeatElement(0, count: n)
        stamp += repeatElement(-1, count: n)
        positionOfIndex += repeatElement(p, count: n)
    }

    /// A layer not among the context's (or a negative one) gets a position after the cycle's:
    /// its experts are ranked by use alone, a whole cycle away.
    @discardableResult
    private func addPosition(for layer: Int) -> Int {
        let p = visits.count
        if layer >= 0 {
            if layer >= position.count { position += repeatElement(-1, count: layer + 1 - position.count) }
            position[layer] = p
        }
        visits.append(0)
        recentVisits.append(0)
        longVisits.append(0)
        blockStart.append(recentUses.count)
        appendExperts(expertsPerLayer, position: p)
        return p
    }

    private func positionOf(layer: Int) -> Int {
        if layer >= 0 && layer < position.count && position[layer] >= 0 { return position[layer] }
        if layer < 0, let p = negativeLayers[layer] { return p }
        let p = addPosition(for: layer)
        if layer < 0 { negativeLayers[layer] = p }
        return p
    }

    /// The statistics index of `key`'s expert (any precision).
    private func index(_ key: ExpertKey) -> Int {
        let p = positionOf(layer: key.layer)
        if key.expert >= 0 && key.expert < expertsPerLayer { return blockStart[p] + key.expert }
        let plain = ExpertKey(layer: key.layer, expert: key.expert)
        if let i = outside[plain] { return i }
        let i = recentUses.count
        appendExperts(1, position: p)
        outside[plain] = i
        return i
    }

    /// Brings expert `i`'s decayed uses up to the visit `v` of its layer.
    private func refresh(_ i: Int, visit v: Int) {
        let age = v - stamp[i]
        if age > 0 { recentUses[i] *= age < halving.count ? halving[age] : 0 }
        stamp[i] = v
    }

    private func use(_ key: ExpertKey) {
        let i = index(key)
        let p = positionOfIndex[i]
        // A new visit starts when the layer changes, or when an expert comes up twice in one
        // (a model with one MoE layer, or the same layer asked again).
        if p != current || stamp[i] == visits[p] {
            visits[p] += 1
            recentVisits[p] = recentVisits[p] / 2 + 1
            longVisits[p] += 1
            current = p
        }
        guard stamp[i] != visits[p] else { return }
        refresh(i, visit: visits[p])
        recentUses[i] += 1
        longUses[i] += 1
    }

    public func didHit(_ key: ExpertKey) { use(key) }
    public func didMiss(_ key: ExpertKey) { use(key) }

    public func didInsert(_ key: ExpertKey) {
        guard residentAt[key] == nil else { return }
        residentAt[key] = resident.count
        resident.append((key, index(key)))
    }

    public func didRemove(_ key: ExpertKey) {
        guard let at = residentAt.removeValue(forKey: key) else { return }
        let last = resident.removeLast()
        if at < resident.count {
            resident[at] = last
            residentAt[last.key] = at
        }
    }

    /// Expected layer steps until expert `i` is used again.
    @inline(__always)
    private func expectedWait(_ i: Int, from now: Int) -> Double {
        let p = positionOfIndex[i]
        var d = cycle
        if p < cycle && now >= 0 && now < cycle {
            d = (p - now + cycle) % cycle
            if d == 0 { d = cycle }
        }
        let age = visits[p] - stamp[i]
        let recent = stamp[i] < 0 ? 0 : recentUses[i] * (age <= 0 ? 1 : age < halving.count ? halving[age] : 0)
        let a = Self.priorWeight
        let pRecent = (recent + a * prior) / (recentVisits[p] + a)
        let pLong = (longUses[i] + a * prior) / (longVisits[p] + a)
        let w = Self.recentWeight
        let q = max(w * pRecent + (1 - w) * pLong, 1e-9)
        return Double(d) + Double(cycle) * (1 / q - 1)
    }

    public func victim(for incoming: ExpertKey, isEvictable: (ExpertKey) -> Bool) -> ExpertKey? {
        let now = current >= 0 ? current : positionOf(layer: incoming.layer)
        let copies = incoming.precision > 0
        var best: ExpertKey?
        var bestWait = -Double.infinity
        for (k, i) in resident where (k.precision > 0) == copies && isEvictable(k) {
            let wait = expectedWait(i, from: now)
            if wait > bestWait || (wait == bestWait && best.map { (k.layer, k.expert, k.precision) < ($0.layer, $0.expert, $0.precision) } == true) {
                best = k
                bestWait = wait
            }
        }
        return best
    }
}
