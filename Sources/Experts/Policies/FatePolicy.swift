/// Fate's cache: the pool is divided into per-layer quotas that favour shallow layers (the
/// cross-layer gate predicts deep layers well, so their misses are prefetched in time,
/// while shallow layers miss more and gain most from residency), and each layer evicts
/// within itself by ARC. A layer may borrow free room beyond its quota; when the pool is
/// full, the incoming expert's own layer gives up a slot if it is at or over quota,
/// otherwise the layer furthest over its quota does.
///
/// Low-precision copies (precision fallback) are kept by popularity instead: the copy of
/// the expert selected least often so far leaves first, so the copies that stay resident are
/// those of the experts most likely to be asked for again; they do not count against the
/// layer quotas, which divide the full-precision slots.
public final class FatePolicy: ExpertCachePolicy {
    public static let name = "fate"
    public static let summary = "per-layer quotas favouring shallow layers, ARC within each layer"

    private var clock = Ticks()
    private var lists: [Int: ARCPolicy.Lists] = [:]
    private var quota: [Int: Int] = [:]
    private var resident: [Int: Int] = [:]
    private let layers: [Int]
    /// Selections of each expert (any precision), keyed at precision 0.
    private var popularity: [ExpertKey: Int] = [:]
    private var residentCopies = Set<ExpertKey>()

    /// Shallowest layers get twice the share of the deepest, linearly in between.
    static func quotas(capacity: Int, layers: [Int]) -> [Int: Int] {
        let n = layers.count
        guard n > 0 else { return [:] }
        let weights = (0..<n).map { i in n == 1 ? 1.0 : 2.0 - Double(i) / Double(n - 1) }
        let total = weights.reduce(0, +)
        var shares = weights.map { Int(Double(capacity) * $0 / total) }
        var left = capacity - shares.reduce(0, +)
        var i = 0
        while left > 0 { shares[i % n] += 1; left -= 1; i += 1 }
        var out: [Int: Int] = [:]
        for (i, l) in layers.enumerated() { out[l] = shares[i] }
        return out
    }

    public init(context: PolicyContext) {
        layers = context.expertLayers
        quota = Self.quotas(capacity: context.capacity - context.lowPrecisionCapacity, layers: layers)
        for l in layers { lists[l] = ARCPolicy.Lists(capacity: max(quota[l]!, 1)) }
    }

    private func withLists(_ layer: Int, _ body: (inout ARCPolicy.Lists) -> Void) {
        if lists[layer] == nil { lists[layer] = ARCPolicy.Lists(capacity: 1); quota[layer] = 0 }
        body(&lists[layer]!)
    }

    private func select(_ key: ExpertKey) {
        popularity[ExpertKey(layer: key.layer, expert: key.expert), default: 0] += 1
    }

    public func didHit(_ key: ExpertKey) {
        select(key)
        guard key.precision == 0 else { return }
        let t = clock.next()
        withLists(key.layer) { $0.hit(key, tick: t) }
    }
    public func didMiss(_ key: ExpertKey) {
        select(key)
        guard key.precision == 0 else { return }
        withLists(key.layer) { $0.miss(key) }
    }
    public func didInsert(_ key: ExpertKey) {
        guard key.precision == 0 else { residentCopies.insert(key); return }
        let t = clock.next()
        withLists(key.layer) { $0.insert(key, tick: t) }
        resident[key.layer, default: 0] += 1
    }
    public func didRemove(_ key: ExpertKey) {
        guard key.precision == 0 else { residentCopies.remove(key); return }
        let t = clock.next()
        withLists(key.layer) { $0.remove(key, tick: t) }
        resident[key.layer, default: 0] -= 1
    }

    public func victim(for incoming: ExpertKey, isEvictable: (ExpertKey) -> Bool) -> ExpertKey? {
        if incoming.precision > 0 {
            return evictableMinimum(residentCopies, isEvictable: isEvictable) {
                popularity[ExpertKey(layer: $0.layer, expert: $0.expert)] ?? 0
            }
        }
        let over = { (l: Int) in (self.resident[l] ?? 0) - (self.quota[l] ?? 0) }
        var order: [Int] = []
        if over(incoming.layer) >= 0 { order.append(incoming.layer) }
        // Then layers by how far they are over quota (most first), deeper first among equals.
        order += lists.keys.filter { $0 != incoming.layer && (resident[$0] ?? 0) > 0 }
            .sorted { (over($0), $0) > (over($1), $1) }
        if !order.contains(incoming.layer) { order.append(incoming.layer) }
        for l in order {
            if let k = lists[l]?.victim(isEvictable: isEvictable) { return k }
        }
        return nil
    }
}
