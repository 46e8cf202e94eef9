/// One expert at one precision: what occupies a pool slot.
public struct ExpertKey: Hashable, Sendable, CustomStringConvertible {
    public var layer: Int
    public var expert: Int
    /// 0 is the file's own precision; higher values are the low-precision copies of a pack.
    public var precision: Int

    public init(layer: Int, expert: Int, precision: Int = 0) {
        self.layer = layer
        self.expert = expert
        self.precision = precision
    }

    public var description: String { "layer \(layer) expert \(expert)" + (precision > 0 ? " (precision \(precision))" : "") }
}

/// What a policy knows about the pool it serves.
public struct PolicyContext: Sendable {
    /// Slots in the pool (both classes).
    public var capacity: Int
    /// Of them, the slots for low-precision copies (precision fallback; 0 without it).
    public var lowPrecisionCapacity = 0
    /// Layers of the model (dense ones included), for depth-aware policies.
    public var layerCount: Int
    /// The layers that have routed experts.
    public var expertLayers: [Int]
    public var expertsPerLayer: Int
    public var expertsPerToken: Int
    /// Sequences decoding together (`--parallel`): a step routes this many tokens per layer.
    public var sequences = 1
    /// Bytes of one expert at each precision (index = precision).
    public var bytesPerPrecision: [Int]

    public init(capacity: Int, layerCount: Int, expertLayers: [Int], expertsPerLayer: Int,
                expertsPerToken: Int, bytesPerPrecision: [Int]) {
        self.capacity = capacity
        self.layerCount = layerCount
        self.expertLayers = expertLayers
        self.expertsPerLayer = expertsPerLayer
        self.expertsPerToken = expertsPerToken
        self.bytesPerPrecision = bytesPerPrecision
    }
}

/// Decides which resident expert leaves the pool when a missing one needs its slot.
///
/// The pool reports every event in order: for each expert a layer asks for, a hit or a
/// miss; for a miss, a `victim` request when no slot is free, then `didRemove` for the
/// evicted expert and `didInsert` once the missing one has been read. A policy only
/// chooses: it never evicts an expert the pool says is in use (`isEvictable` false).
/// Adding a policy is one file with a type conforming to this protocol, listed in
/// `ExpertPolicies.all`.
public protocol ExpertCachePolicy: AnyObject {
    /// The name `--expert-policy` takes.
    static var name: String { get }
    /// A line for `--help`.
    static var summary: String { get }
    init(context: PolicyContext)

    func didHit(_ key: ExpertKey)
    func didMiss(_ key: ExpertKey)
    func didInsert(_ key: ExpertKey)
    func didRemove(_ key: ExpertKey)
    /// The resident expert to evict to make room for `incoming`, among those `isEvictable`
    /// accepts; nil when none is evictable.
    func victim(for incoming: ExpertKey, isEvictable: (ExpertKey) -> Bool) -> ExpertKey?
}

/// The policies `--expert-policy` offers.
public enum ExpertPolicies {
    public static var all: [any ExpertCachePolicy.Type] {
        [LRUPolicy.self, LFUPolicy.self, ARCPolicy.self, FatePolicy.self, HobbitPolicy.self, CyclePolicy.self]
    }
    public static var names: [String] { all.map { $0.name } }
    /// `auto`: Cycle without precision fallback, ARC with it. Decoding visits the layers in a
    /// loop; when a loop's experts do not fit, recency (ARC, LRU) evicts exactly the experts
    /// the next token needs first, and Cycle, which ranks by the expected next use over that
    /// loop, keeps a stable, popular part resident, more of it than Fate's quotas; above one
    /// loop it hit more than ARC on real routing and on the default model, less on the
    /// benchmark model's repetitive output just above one loop (docs/offloading.md, cache
    /// policies). With fallback's small copies ARC was measured faster than Fate, and Cycle
    /// has not been measured there, so ARC stays.
    public static let automaticName = "auto"
    public static let defaultName = automaticName
    /// What `--expert-policy` accepts: `auto` and every policy's name.
    public static var choices: [String] { [automaticName] + names }

    /// The policy `name` stands for in `context` (`auto` resolved; others as they are).
    public static func resolve(_ name: String, context: PolicyContext) -> String {
        guard name == automaticName else { return name }
        return context.lowPrecisionCapacity == 0 ? CyclePolicy.name : ARCPolicy.name
    }

    public static func make(_ name: String, context: PolicyContext) -> (any ExpertCachePolicy)? {
        let resolved = resolve(name, context: context)
        return all.first { $0.name == resolved }.map { $0.init(context: context) }
    }
}

/// A logical clock: every event gets the next tick, so "least recently used" is exact and
/// independent of wall time.
struct Ticks {
    private(set) var now: UInt64 = 0
    mutating func next() -> UInt64 { now &+= 1; return now }
}

/// The evictable key with the smallest `rank` (ties broken by the key, so runs repeat).
func evictableMinimum<C: Collection, R: Comparable>(_ keys: C, isEvictable: (ExpertKey) -> Bool,
                                                    rank: (ExpertKey) -> R) -> ExpertKey? where C.Element == ExpertKey {
    var best: ExpertKey?
    var bestRank: R?
    for k in keys where isEvictable(k) {
        let r = rank(k)
        if let b = bestRank, let bk = best {
            if r < b || (r == b && (k.layer, k.expert, k.precision) < (bk.layer, bk.expert, bk.precision)) {
                best = k
                bestRank = r
            }
        } else {
            best = k
            bestRank = r
        }
    }
    return best
}

/// A rank of two parts compared in order (e.g. frequency, then recency).
struct Rank<A: Comparable, B: Comparable>: Comparable {
    var first: A
    var second: B
    init(_ a: A, _ b: B) { first = a; second = b }
    static func < (x: Rank, y: Rank) -> Bool { x.first != y.first ? x.first < y.first : x.second < y.second }
}
