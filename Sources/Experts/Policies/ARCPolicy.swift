/// Adaptive Replacement Cache (Megiddo and Modha): residents are split into T1 (seen once
/// recently) and T2 (seen at least twice); ghost lists B1 and B2 remember what each lately
/// evicted, and a miss that hits a ghost moves the target size `p` of T1 toward the list
/// that would have kept it. Experts used by every few tokens settle in T2; one-off
/// selections pass through T1 without flushing them.
public final class ARCPolicy: ExpertCachePolicy {
    public static let name = "arc"
    public static let summary = "adaptive replacement cache: balances recency and frequency"

    /// The ARC state for one set of slots; `FatePolicy` keeps one per layer.
    struct Lists {
        enum Place { case t1, t2, b1, b2 }
        var capacity: Int
        var p: Double = 0
        var place: [ExpertKey: Place] = [:]
        var stamp: [ExpertKey: UInt64] = [:]
        var sizes: [Int] = [0, 0, 0, 0]  // t1, t2, b1, b2
        /// Misses seen in a ghost list: their place when inserted, and whether B2 was hit.
        var pending: [ExpertKey: Place] = [:]
        var lastMissWasB2 = false

        init(capacity: Int) { self.capacity = max(capacity, 1) }

        private func index(_ p: Place) -> Int {
            switch p { case .t1: return 0; case .t2: return 1; case .b1: return 2; case .b2: return 3 }
        }
        func size(_ p: Place) -> Int { sizes[index(p)] }

        mutating func move(_ key: ExpertKey, to new: Place?, tick: UInt64) {
            if let old = place[key] { sizes[index(old)] -= 1 }
            if let new {
                place[key] = new
                stamp[key] = tick
                sizes[index(new)] += 1
            } else {
                place[key] = nil
                stamp[key] = nil
            }
        }

        mutating func hit(_ key: ExpertKey, tick: UInt64) { move(key, to: .t2, tick: tick) }

        mutating func miss(_ key: ExpertKey) {
            let c = Double(capacity)
            switch place[key] {
            case .b1?:
                p = min(c, p + max(Double(size(.b2)) / Double(max(size(.b1), 1)), 1))
                pending[key] = .t2
                lastMissWasB2 = false
            case .b2?:
                p = max(0, p - max(Double(size(.b1)) / Double(max(size(.b2), 1)), 1))
                pending[key] = .t2
                lastMissWasB2 = true
            default:
                pending[key] = .t1
                lastMissWasB2 = false
            }
        }

        mutating func insert(_ key: ExpertKey, tick: UInt64) {
            move(key, to: pending.removeValue(forKey: key) ?? .t1, tick: tick)
            trimGhosts()
        }

        mutating func remove(_ key: ExpertKey, tick: UInt64) {
            switch place[key] {
            case .t1?: move(key, to: .b1, tick: tick)
            case .t2?: move(key, to: .b2, tick: tick)
            default: break
            }
            trimGhosts()
        }

        /// Keeps the directory at ARC's bounds: |T1| + |B1| ≤ c and the whole ≤ 2c.
        private mutating func trimGhosts() {
            while size(.t1) + size(.b1) > capacity, size(.b1) > 0 { dropOldest(.b1) }
            while sizes.reduce(0, +) > 2 * capacity, size(.b2) > 0 { dropOldest(.b2) }
            while sizes.reduce(0, +) > 2 * capacity, size(.b1) > 0 { dropOldest(.b1) }
        }

        private mutating func dropOldest(_ list: Place) {
            if let k = evictableMinimum(place.keys.filter { place[$0] == list }, isEvictable: { _ in true }, rank: { stamp[$0]! }) {
                move(k, to: nil, tick: 0)
            }
        }

        var residents: [ExpertKey] { place.keys.filter { place[$0] == .t1 || place[$0] == .t2 } }

        /// ARC's REPLACE: the oldest of T1 when T1 is over its target, else the oldest of T2;
        /// the other list when the chosen one has nothing evictable.
        func victim(isEvictable: (ExpertKey) -> Bool) -> ExpertKey? {
            let t1 = size(.t1)
            let preferT1 = t1 > 0 && (Double(t1) > p || (lastMissWasB2 && Double(t1) == p.rounded(.down)))
            let order: [Place] = preferT1 ? [.t1, .t2] : [.t2, .t1]
            for list in order {
                let members = place.keys.filter { place[$0] == list }
                if let k = evictableMinimum(members, isEvictable: isEvictable, rank: { stamp[$0]! }) { return k }
            }
            return nil
        }
    }

    private var clock = Ticks()
    private var lists: Lists

    public init(context: PolicyContext) { lists = Lists(capacity: context.capacity) }

    public func didHit(_ key: ExpertKey) { lists.hit(key, tick: clock.next()) }
    public func didMiss(_ key: ExpertKey) { lists.miss(key) }
    public func didInsert(_ key: ExpertKey) { lists.insert(key, tick: clock.next()) }
    public func didRemove(_ key: ExpertKey) { lists.remove(key, tick: clock.next()) }

    public func victim(for incoming: ExpertKey, isEvictable: (ExpertKey) -> Bool) -> ExpertKey? {
        lists.victim(isEvictable: isEvictable)
    }
}
