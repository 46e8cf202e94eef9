import Testing
import TestSupport
@testable import Experts

/// The pool's side of the policy protocol, without memory or I/O: keys in, hits counted,
/// the policy asked for victims exactly as the provider asks.
final class PoolSimulator {
    let capacity: Int
    let policy: any ExpertCachePolicy
    private(set) var resident = Set<ExpertKey>()
    private(set) var hits = 0
    private(set) var misses = 0

    init(_ name: String, capacity: Int, layers: Int = 4, experts: Int = 16, perToken: Int = 2) {
        self.capacity = capacity
        policy = ExpertPolicies.make(name, context: PolicyContext(
            capacity: capacity, layerCount: layers, expertLayers: Array(0..<layers), expertsPerLayer: experts,
            expertsPerToken: perToken, bytesPerPrecision: [1000, 300]))!
    }

    /// One layer's request: every key is pinned until the whole request is served.
    func request(_ keys: [ExpertKey]) {
        var pinned = Set<ExpertKey>()
        for key in keys {
            if resident.contains(key) {
                policy.didHit(key)
                hits += 1
            } else {
                policy.didMiss(key)
                misses += 1
                if resident.count == capacity {
                    let victim = policy.victim(for: key) { !pinned.contains($0) }
                    let v = try! #require(victim, "no victim with \(resident.count - pinned.count) evictable")
                    #expect(resident.contains(v), "victim \(v) is not resident")
                    #expect(!pinned.contains(v), "victim \(v) is in use")
                    resident.remove(v)
                    policy.didRemove(v)
                }
                resident.insert(key)
                policy.didInsert(key)
            }
            pinned.insert(key)
        }
    }
}

func key(_ layer: Int, _ expert: Int, _ precision: Int = 0) -> ExpertKey {
    ExpertKey(layer: layer, expert: expert, precision: precision)
}

@Suite("Cache policies")
struct PolicyTests {
    @Test("every policy evicts only resident, unpinned experts, and says nil when all are pinned",
          arguments: ExpertPolicies.names)
    func neverEvictsPinned(_ name: String) throws {
        let sim = PoolSimulator(name, capacity: 6)
        var rng = SplitMix64(seed: 7)
        for _ in 0..<400 {
            let layer = Int(rng.next() % 4)
            let a = Int(rng.next() % 16), b = (a + 1 + Int(rng.next() % 15)) % 16
            sim.request([key(layer, a), key(layer, b)])
        }
        #expect(sim.resident.count == 6)
        let all = sim.resident
        #expect(sim.policy.victim(for: key(0, 99)) { !all.contains($0) } == nil)
        let onlyOne = all.first!
        #expect(sim.policy.victim(for: key(0, 99)) { $0 == onlyOne } == onlyOne)
    }

    @Test("the registry knows six policies by their flag names")
    func registry() {
        #expect(ExpertPolicies.names == ["lru", "lfu", "arc", "fate", "hobbit", "cycle"])
        #expect(ExpertPolicies.choices == ["auto", "lru", "lfu", "arc", "fate", "hobbit", "cycle"])
        #expect(ExpertPolicies.defaultName == "auto")
    }

    @Test("auto is Cycle, or ARC with precision fallback, whatever the pool holds")
    func automatic() {
        // 4 MoE layers x 2 experts per token: 8 slots hold a token's experts of every layer.
        func context(_ capacity: Int, low: Int = 0) -> PolicyContext {
            var c = PolicyContext(capacity: capacity, layerCount: 4, expertLayers: Array(0..<4), expertsPerLayer: 16,
                                  expertsPerToken: 2, bytesPerPrecision: [1000, 300])
            c.lowPrecisionCapacity = low
            return c
        }
        #expect(ExpertPolicies.resolve("auto", context: context(8)) == "cycle")
        #expect(ExpertPolicies.resolve("auto", context: context(7)) == "cycle")
        #expect(ExpertPolicies.resolve("auto", context: context(7, low: 3)) == "arc")  // with fallback
        #expect(ExpertPolicies.resolve("auto", context: context(64, low: 3)) == "arc")
        #expect(ExpertPolicies.resolve("lru", context: context(2)) == "lru")
        var four = context(20)
        four.sequences = 4
        #expect(ExpertPolicies.resolve("auto", context: four) == "cycle")
        #expect(type(of: ExpertPolicies.make("auto", context: context(7))!).name == "cycle")
        #expect(type(of: ExpertPolicies.make("auto", context: context(64, low: 3))!).name == "arc")
    }

    @Test("LRU evicts the least recently used")
    func lru() {
        let sim = PoolSimulator("lru", capacity: 3)
        sim.request([key(0, 1)]); sim.request([key(0, 2)]); sim.request([key(0, 3)])
        sim.request([key(0, 1)])
        sim.request([key(0, 4)])
        #expect(sim.resident == [key(0, 1), key(0, 3), key(0, 4)])
    }

    @Test("LFU evicts the least frequently used, the least recent among equals")
    func lfu() {
        let sim = PoolSimulator("lfu", capacity: 3)
        for _ in 0..<3 { sim.request([key(0, 1)]) }
        sim.request([key(0, 2)])
        for _ in 0..<2 { sim.request([key(0, 3)]) }
        sim.request([key(0, 4)])
        #expect(sim.resident == [key(0, 1), key(0, 3), key(0, 4)])
        sim.request([key(0, 5)])  // 4 and 5... 4 has one use, older than 5's
        #expect(sim.resident == [key(0, 1), key(0, 3), key(0, 5)])
    }

    @Test("ARC keeps the experts used again and again through a scan of one-off experts; LRU does not")
    func arcResistsScans() {
        func run(_ name: String) -> Int {
            let sim = PoolSimulator(name, capacity: 8, layers: 1, experts: 1000)
            let hot = (0..<4).map { key(0, $0) }
            var next = 100
            for round in 0..<60 {
                for k in hot { sim.request([k]) }
                // Bursts of experts used once, longer than the pool.
                if round % 3 == 0 {
                    for _ in 0..<10 { sim.request([key(0, next)]); next += 1 }
                }
            }
            return sim.hits
        }
        let arc = run("arc"), lru = run("lru")
        #expect(arc > lru, "arc \(arc) hits, lru \(lru)")
    }

    @Test("Fate's quotas favour shallow layers and fill the pool")
    func fateQuotas() {
        let q = FatePolicy.quotas(capacity: 30, layers: [0, 1, 2, 3])
        #expect(q.values.reduce(0, +) == 30)
        #expect(q[0]! > q[3]!)
        #expect(q[0]! >= q[1]! && q[1]! >= q[2]! && q[2]! >= q[3]!)

        // Uniform random use across layers: residency follows the quotas.
        let sim = PoolSimulator("fate", capacity: 30, layers: 4, experts: 16)
        var rng = SplitMix64(seed: 3)
        for _ in 0..<3000 {
            for layer in 0..<4 {
                let a = Int(rng.next() % 16), b = (a + 1 + Int(rng.next() % 15)) % 16
                sim.request([key(layer, a), key(layer, b)])
            }
        }
        let perLayer = (0..<4).map { l in sim.resident.filter { $0.layer == l }.count }
        #expect(perLayer[0] > perLayer[3], "resident per layer \(perLayer)")
        #expect(perLayer == (0..<4).map { q[$0]! }, "resident per layer \(perLayer), quotas \(q)")
    }

    @Test("with copies in their own slots, every policy keeps both precisions' books and evicts within the right class",
          arguments: ExpertPolicies.names)
    func bothPrecisions(_ name: String) throws {
        // 6 full-precision slots and 4 for copies, as the provider sizes them with fallback.
        let capacity = [6, 4]
        var context = PolicyContext(capacity: 10, layerCount: 4, expertLayers: Array(0..<4), expertsPerLayer: 16,
                                    expertsPerToken: 2, bytesPerPrecision: [1000, 300])
        context.lowPrecisionCapacity = 4
        let policy = try #require(ExpertPolicies.make(name, context: context))
        var resident = Set<ExpertKey>()
        var rng = SplitMix64(seed: 5)
        var inserted = [0, 0]
        for _ in 0..<600 {
            let layer = Int(rng.next() % 4)
            let a = Int(rng.next() % 16), b = (a + 1 + Int(rng.next() % 15)) % 16
            // The second expert of each token falls back half of the time.
            let keys = [key(layer, a), key(layer, b, Int(rng.next() % 2))]
            var pinned = Set<ExpertKey>()
            for k in keys {
                if resident.contains(k) {
                    policy.didHit(k)
                } else {
                    policy.didMiss(k)
                    let c = k.precision == 0 ? 0 : 1
                    if resident.filter({ ($0.precision == 0 ? 0 : 1) == c }).count == capacity[c] {
                        let v = try #require(policy.victim(for: k) { !pinned.contains($0) && ($0.precision == 0 ? 0 : 1) == c },
                                             "\(name): no victim of class \(c)")
                        #expect(resident.contains(v) && (v.precision == 0 ? 0 : 1) == c, "\(name): victim \(v) for \(k)")
                        resident.remove(v)
                        policy.didRemove(v)
                    }
                    resident.insert(k)
                    policy.didInsert(k)
                    inserted[c] += 1
                }
                pinned.insert(k)
            }
        }
        #expect(resident.filter { $0.precision == 0 }.count == capacity[0])
        #expect(resident.filter { $0.precision > 0 }.count == capacity[1])
        #expect(inserted[0] > capacity[0] && inserted[1] > capacity[1], "both classes turned over: \(inserted)")
    }

    @Test("Fate keeps the low-precision copies of the most popular experts, apart from the layer quotas")
    func fateCopiesByPopularity() {
        var context = PolicyContext(capacity: 10, layerCount: 2, expertLayers: [0, 1], expertsPerLayer: 8,
                                    expertsPerToken: 2, bytesPerPrecision: [1000, 300])
        context.lowPrecisionCapacity = 3
        let fate = FatePolicy(context: context)
        // Selections: expert 1 five times, expert 3 three times, expert 2 once (any precision counts).
        for (e, n) in [(1, 5), (3, 3), (2, 1)] {
            for i in 0..<n {
                if i == 0 { fate.didMiss(key(0, e, 1)); fate.didInsert(key(0, e, 1)) } else { fate.didHit(key(0, e, 1)) }
            }
        }
        fate.didMiss(key(1, 0)); fate.didInsert(key(1, 0))
        #expect(fate.victim(for: key(0, 4, 1)) { $0.precision > 0 } == key(0, 2, 1))
        #expect(fate.victim(for: key(0, 4, 1)) { $0.precision > 0 && $0 != key(0, 2, 1) } == key(0, 3, 1))
        // A full-precision request evicts a full-precision expert, never a copy.
        #expect(fate.victim(for: key(1, 5)) { _ in true } == key(1, 0))
    }

    @Test("HOBBIT evicts what is needed last: of experts used in the same token, the layer furthest ahead")
    func hobbitLayerDistance() {
        let sim = PoolSimulator("hobbit", capacity: 3, layers: 4)
        sim.request([key(1, 0)])  // token 0
        sim.request([key(3, 0)])
        sim.request([key(0, 7)])  // token 1
        sim.request([key(2, 5)])  // layer 3 runs next, layer 1 only in the next token
        #expect(sim.resident == [key(3, 0), key(0, 7), key(2, 5)])
    }

    @Test("below one cycle, Cycle keeps a stable part of the loop resident where LRU and ARC thrash")
    func cycleBelowOneLoop() {
        // Every token routes the same 2 experts in each of 4 layers: a loop of 8, in 6 slots.
        func run(_ name: String) -> Int {
            let sim = PoolSimulator(name, capacity: 6, layers: 4, experts: 16)
            for _ in 0..<50 {
                for layer in 0..<4 { sim.request([key(layer, 2 * layer), key(layer, 2 * layer + 1)]) }
            }
            return sim.hits
        }
        #expect(run("lru") == 0)
        #expect(run("arc") == 0)
        // Each token misses the 2 that do not fit and evicts 2 of the layers just computed:
        // 4 of 8 hit in steady state at the least.
        let cycle = run("cycle")
        #expect(cycle >= 49 * 4, "cycle \(cycle) hits of 400")
    }

    @Test("Cycle evicts, of experts used alike, the one whose layer comes round last: the layer just computed")
    func cycleDistance() {
        let sim = PoolSimulator("cycle", capacity: 3, layers: 4)
        sim.request([key(1, 0)])  // token 0
        sim.request([key(2, 0)])
        sim.request([key(3, 0)])
        sim.request([key(0, 7)])  // token 1: layer 0, then 1, 2, 3 run next; layer 3 is furthest
        #expect(sim.resident == [key(1, 0), key(2, 0), key(0, 7)])
        // Layer 1 runs again and misses: its expert of the last token, not picked by this
        // one, waits a whole cycle and decays; layer 2's is needed next.
        sim.request([key(1, 5)])
        #expect(sim.resident == [key(2, 0), key(0, 7), key(1, 5)])
    }

    @Test("Cycle keeps an expert used by most tokens over one used once, wherever their layers are")
    func cycleFrequency() {
        let sim = PoolSimulator("cycle", capacity: 5, layers: 4)
        var rng = SplitMix64(seed: 11)
        for _ in 0..<40 {
            for layer in 0..<4 {
                // Layer 3's expert 0 every token; the rest spread over 15 experts.
                let other = 1 + Int(rng.next() % 15)
                sim.request(layer == 3 ? [key(3, 0), key(3, other)] : [key(layer, other)])
            }
        }
        #expect(sim.resident.contains(key(3, 0)))
        #expect(sim.hits >= 39, "\(sim.hits) hits")
    }

    @Test("Cycle takes keys outside the model's shape and copies without trouble, each class against itself")
    func cycleOddKeys() {
        var context = PolicyContext(capacity: 8, layerCount: 4, expertLayers: [1, 3], expertsPerLayer: 4,
                                    expertsPerToken: 1, bytesPerPrecision: [1000, 300])
        context.lowPrecisionCapacity = 2
        let policy = CyclePolicy(context: context)
        let keys = [key(1, 0), key(3, 2), key(0, 1), key(7, 9), key(-2, 1), key(1, -5), key(3, 99), key(1, 0, 1), key(3, 1, 2)]
        for k in keys { policy.didMiss(k); policy.didInsert(k) }
        for k in keys { policy.didHit(k) }
        policy.didHit(key(1, 0))
        var full = Set(keys.filter { $0.precision == 0 })
        while let v = policy.victim(for: key(1, 3), isEvictable: { full.contains($0) }) {
            #expect(v.precision == 0 && full.contains(v))
            full.remove(v)
            policy.didRemove(v)
        }
        #expect(full.isEmpty)
        // A copy evicts a copy, never a full-precision expert, and the other way round.
        #expect(policy.victim(for: key(1, 2, 1)) { _ in true }?.precision ?? 0 > 0)
        policy.didInsert(key(1, 3))
        #expect(policy.victim(for: key(1, 2)) { _ in true } == key(1, 3))
        policy.didRemove(key(9, 9))  // never inserted
    }
}
