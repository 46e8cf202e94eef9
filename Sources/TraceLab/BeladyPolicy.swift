import Experts

/// Belady's offline optimum: evicts the resident expert whose next use lies furthest ahead
/// (never used again first). It reads the whole trace in advance, so it exists only in
/// replays, as the ceiling every online policy is measured against.
final class BeladyPolicy: ExpertCachePolicy {
    static let name = CacheReplay.beladyName
    static let summary = "offline optimum: evicts the expert whose next use is furthest"

    private let experts: Int
    /// Per expert key index: the batches that use it, ascending, and how many lie behind.
    private var uses: [[Int32]]
    private var cursor: [Int]
    private var now = 0
    private var residentList: [Int] = []
    private var residentPosition: [Int]

    init(trace: CacheTrace) {
        experts = trace.experts
        let layers = (trace.moeLayers.max() ?? 0) + 1
        uses = Array(repeating: [], count: layers * experts)
        for (b, batch) in trace.batches.enumerated() {
            for e in batch.experts { uses[batch.layer * experts + e].append(Int32(b)) }
        }
        cursor = Array(repeating: 0, count: uses.count)
        residentPosition = Array(repeating: -1, count: uses.count)
    }

    required init(context: PolicyContext) { fatalError("Belady needs the trace: use init(trace:)") }

    /// The replay is at batch `index`.
    func advance(to index: Int) { now = index }

    private func nextUse(_ i: Int) -> Int {
        let u = uses[i]
        var c = cursor[i]
        while c < u.count && Int(u[c]) <= now { c += 1 }
        cursor[i] = c
        return c < u.count ? Int(u[c]) : Int.max
    }

    func didHit(_ key: ExpertKey) {}
    func didMiss(_ key: ExpertKey) {}
    func didInsert(_ key: ExpertKey) {
        let i = key.layer * experts + key.expert
        guard residentPosition[i] < 0 else { return }
        residentPosition[i] = residentList.count
        residentList.append(i)
    }
    func didRemove(_ key: ExpertKey) {
        let i = key.layer * experts + key.expert
        let p = residentPosition[i]
        guard p >= 0 else { return }
        let last = residentList.removeLast()
        if last != i {
            residentList[p] = last
            residentPosition[last] = p
        }
        residentPosition[i] = -1
    }

    func victim(for incoming: ExpertKey, isEvictable: (ExpertKey) -> Bool) -> ExpertKey? {
        var best = -1
        var bestNext = -1
        for i in residentList {
            let key = ExpertKey(layer: i / experts, expert: i % experts)
            guard isEvictable(key) else { continue }
            let n = nextUse(i)
            if n > bestNext || (n == bestNext && i < best) {
                best = i
                bestNext = n
            }
        }
        return best < 0 ? nil : ExpertKey(layer: best / experts, expert: best % experts)
    }
}
