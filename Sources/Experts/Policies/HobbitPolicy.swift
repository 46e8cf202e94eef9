/// HOBBIT's multidimensional cache: each resident expert is scored on recency (LRU, in
/// tokens: every layer of one forward pass counts as equally recent, so the order of layers
/// does not pose as recency), frequency (LFU), how soon its layer runs again (layer distance from the layer being
/// computed: experts of the layers just run wait longest) and precision (a
/// full-precision copy costs more bytes to read back, so it is kept more readily than a
/// low-precision one). The lowest score is evicted.
public final class HobbitPolicy: ExpertCachePolicy {
    public static let name = "hobbit"
    public static let summary = "score of recency, frequency, layer distance and precision"

    /// Weights of the four terms, each normalized to [0, 1] over the candidates.
    static let weights = (recency: 0.35, frequency: 0.25, distance: 0.25, precision: 0.15)

    /// Forward passes seen: a request for a layer below the previous one starts a new pass.
    private var pass: UInt64 = 0
    private var lastLayer = Int.min
    private var lastUse: [ExpertKey: UInt64] = [:]
    private var count: [ExpertKey: UInt32] = [:]
    private var resident = Set<ExpertKey>()
    private let layerCount: Int
    private let bytes: [Int]

    public init(context: PolicyContext) {
        layerCount = max(context.layerCount, 1)
        bytes = context.bytesPerPrecision
    }

    private func observe(_ key: ExpertKey) {
        if key.layer < lastLayer { pass &+= 1 }
        lastLayer = key.layer
        count[key, default: 0] &+= 1
    }

    public func didHit(_ key: ExpertKey) { observe(key); lastUse[key] = pass }
    public func didMiss(_ key: ExpertKey) { observe(key) }
    public func didInsert(_ key: ExpertKey) { resident.insert(key); lastUse[key] = pass }
    public func didRemove(_ key: ExpertKey) { resident.remove(key) }

    public func victim(for incoming: ExpertKey, isEvictable: (ExpertKey) -> Bool) -> ExpertKey? {
        let candidates = resident.filter(isEvictable)
        guard !candidates.isEmpty else { return nil }
        let now = Double(pass)
        let oldest = candidates.map { Double(lastUse[$0] ?? 0) }.min()!
        let maxCount = Double(candidates.map { count[$0] ?? 0 }.max()!)
        let maxBytes = Double(bytes.max() ?? 1)
        let w = Self.weights
        func score(_ k: ExpertKey) -> Double {
            let recency = now > oldest ? (Double(lastUse[k] ?? 0) - oldest) / (now - oldest) : 1
            let frequency = maxCount > 0 ? Double(count[k] ?? 0) / maxCount : 0
            // Layers to run until k's layer comes round again: 1 for the next layer, a
            // whole round for the layer being computed now (its unselected experts wait
            // for the next token).
            let ahead = (k.layer - incoming.layer - 1 + layerCount) % layerCount + 1
            let proximity = 1 - Double(ahead - 1) / Double(layerCount)
            let precision = k.precision < bytes.count ? Double(bytes[k.precision]) / maxBytes : 0
            return w.recency * recency + w.frequency * frequency + w.distance * proximity + w.precision * precision
        }
        return evictableMinimum(candidates, isEvictable: { _ in true }, rank: score)
    }
}
