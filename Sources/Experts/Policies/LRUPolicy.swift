/// Least recently used: evicts the expert whose last use is oldest.
public final class LRUPolicy: ExpertCachePolicy {
    public static let name = "lru"
    public static let summary = "least recently used"
    private var clock = Ticks()
    private var lastUse: [ExpertKey: UInt64] = [:]

    public init(context: PolicyContext) {}

    public func didHit(_ key: ExpertKey) { lastUse[key] = clock.next() }
    public func didMiss(_ key: ExpertKey) {}
    public func didInsert(_ key: ExpertKey) { lastUse[key] = clock.next() }
    public func didRemove(_ key: ExpertKey) { lastUse[key] = nil }

    public func victim(for incoming: ExpertKey, isEvictable: (ExpertKey) -> Bool) -> ExpertKey? {
        evictableMinimum(lastUse.keys, isEvictable: isEvictable) { lastUse[$0]! }
    }
}
