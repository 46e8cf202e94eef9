/// Least frequently used: evicts the resident expert requested least often so far, the
/// least recently used among equals. Counts survive eviction (a popular expert that was
/// pushed out comes back with its history), and are halved every `agingPeriod` requests so
/// that popularity can shift over a long generation.
public final class LFUPolicy: ExpertCachePolicy {
    public static let name = "lfu"
    public static let summary = "least frequently used (with aging), LRU among equals"
    private var clock = Ticks()
    private var count: [ExpertKey: UInt32] = [:]
    private var lastUse: [ExpertKey: UInt64] = [:]
    private var resident = Set<ExpertKey>()
    private var requests = 0
    private let agingPeriod: Int

    public init(context: PolicyContext) {
        // Long enough that counts mean something: a few hundred tokens' worth of requests.
        agingPeriod = max(1024, 256 * context.expertsPerToken * max(context.expertLayers.count, 1))
    }

    private func request(_ key: ExpertKey) {
        count[key, default: 0] &+= 1
        lastUse[key] = clock.next()
        requests += 1
        if requests >= agingPeriod {
            requests = 0
            for (k, c) in count { count[k] = c / 2 }
        }
    }

    public func didHit(_ key: ExpertKey) { request(key) }
    public func didMiss(_ key: ExpertKey) { request(key) }
    public func didInsert(_ key: ExpertKey) { resident.insert(key) }
    public func didRemove(_ key: ExpertKey) { resident.remove(key) }

    public func victim(for incoming: ExpertKey, isEvictable: (ExpertKey) -> Bool) -> ExpertKey? {
        evictableMinimum(resident, isEvictable: isEvictable) { k in Rank(count[k] ?? 0, lastUse[k] ?? 0) }
    }
}
