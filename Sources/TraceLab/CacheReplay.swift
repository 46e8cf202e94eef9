import Dispatch
import Experts
import Foundation

/// Replays a trace's lookups through a cache policy at one budget, byte-accurate, with the
/// very policy types the runtime uses (`ExpertPolicies`) or Belady's offline optimum.
public enum CacheReplay {
    /// How the cache makes room, which differs between the engines that record traces.
    public enum Accounting: Sendable, Equatable {
        /// The recording engine of `route_trace` files: a miss makes the expert resident at
        /// its layer's bytes at once; after the batch, entries are evicted until the budget
        /// holds, never one the batch used.
        case bytesAfterBatch(budget: Int)
        /// This runtime's pool: `slots` equal slots; a batch first looks up all its experts
        /// (hits are held), then each miss in order takes a free slot or the policy's victim
        /// among the slots not held, and becomes resident when its read lands.
        case slots(Int)
    }

    /// Precision fallback as the runtime does it with a pack's copies: a missing expert whose
    /// routing weight is below `threshold` is computed from its low-precision copy, kept in a
    /// class of `slots` slots of its own (the policy choosing among them) and read at
    /// `copyBytes` when not resident. Slot accounting only (this runtime's pool).
    public struct Fallback: Sendable, Equatable {
        public var threshold: Float
        public var slots: Int
        public var copyBytes: Int
        public init(threshold: Float, slots: Int, copyBytes: Int) {
            self.threshold = threshold
            self.slots = slots
            self.copyBytes = copyBytes
        }
    }

    public struct Result: Sendable, Equatable {
        public var policy: String
        public var budgetBytes: Int
        public var lookups = 0
        public var hits = 0
        public var decodeLookups = 0
        public var decodeHits = 0
        public var bytesRead = 0
        public var decodeBytesRead = 0
        public var decodedTokens = 0
        /// Expert uses computed from a low-precision copy (with fallback), hits or reads.
        public var lowPrecisionUses = 0
        /// Decode lookups and hits per MoE layer (index: the block index).
        public var decodeLookupsByLayer: [Int] = []
        public var decodeHitsByLayer: [Int] = []

        public var hitRate: Double { lookups == 0 ? 0 : Double(hits) / Double(lookups) }
        public var decodeHitRate: Double { decodeLookups == 0 ? 0 : Double(decodeHits) / Double(decodeLookups) }
        /// Bytes read by decoding, per decoded token.
        public var bytesReadPerToken: Double { decodedTokens == 0 ? 0 : Double(decodeBytesRead) / Double(decodedTokens) }

        /// Decode tokens/s implied by a disk of `diskBytesPerSecond` and `computeSeconds` of
        /// compute per token, reads and compute not overlapping (a token waits for its reads).
        public func tokensPerSecond(diskBytesPerSecond: Double, computeSeconds: Double) -> Double {
            let t = bytesReadPerToken / diskBytesPerSecond + computeSeconds
            return t > 0 ? 1 / t : 0
        }
    }

    /// The name `belady` stands for in policy lists.
    public static let beladyName = "belady"
    /// Every policy a replay can run: the runtime's, `auto`, and Belady.
    public static var policyNames: [String] { ExpertPolicies.choices + [beladyName] }

    /// Replays `trace` with policy `name` (a runtime policy, `auto` or `belady`).
    /// The first `warmup` decoded tokens fill the cache but are not counted (as `moe bench`
    /// counts only its timed runs).
    public static func run(_ trace: CacheTrace, policy name: String, accounting: Accounting, sequences: Int = 1,
                           fallback: Fallback? = nil, warmup: Int = 0,
                           observe: ((_ batch: Int, _ hits: Int) -> Void)? = nil) throws(TraceFileError) -> Result {
        let budget: Int
        let capacity: Int
        let meanBytes = max(1, trace.expertBytes.values.reduce(0, +) / max(trace.expertBytes.count, 1))
        switch accounting {
        case let .bytesAfterBatch(b): budget = b; capacity = max(b / meanBytes, 1)
        case let .slots(n): budget = n * (trace.expertBytes.values.max() ?? 0); capacity = n
        }
        var context = PolicyContext(capacity: capacity, layerCount: (trace.moeLayers.max() ?? 0) + 1,
                                    expertLayers: trace.moeLayers, expertsPerLayer: trace.experts,
                                    expertsPerToken: trace.expertsPerToken, bytesPerPrecision: [meanBytes])
        context.sequences = sequences
        if let fallback {
            // The pool as the runtime describes it: both classes, the copies' apart.
            context.capacity += fallback.slots
            context.lowPrecisionCapacity = fallback.slots
            context.bytesPerPrecision.append(fallback.copyBytes)
        }
        let policy: any ExpertCachePolicy
        let oracle: BeladyPolicy?
        if name == beladyName {
            let b = BeladyPolicy(trace: trace)
            policy = b
            oracle = b
        } else if let p = ExpertPolicies.make(name, context: context) {
            policy = p
            oracle = nil
        } else {
            throw .invalid(path: trace.source, detail: "no policy '\(name)' (policies: \(policyNames.joined(separator: ", ")))")
        }
        var result = Result(policy: name == ExpertPolicies.automaticName ? "auto (\(ExpertPolicies.resolve(name, context: context)))" : name,
                            budgetBytes: budget)
        result.decodedTokens = max(trace.decodedTokens - warmup, 0)
        result.decodeLookupsByLayer = Array(repeating: 0, count: (trace.moeLayers.max() ?? -1) + 1)
        result.decodeHitsByLayer = result.decodeLookupsByLayer
        var state = CacheState(experts: trace.experts)
        var decoded = 0
        let firstLayer = trace.moeLayers.first ?? 0
        var counting = warmup == 0
        var bytesBefore = 0, decodeBytesBefore = 0
        var copyState = CacheState(experts: trace.experts)
        for (index, batch) in trace.batches.enumerated() {
            oracle?.advance(to: index)
            if !counting, batch.isDecode, batch.layer == firstLayer {
                decoded += batch.tokens
                if decoded > warmup {
                    counting = true
                    // What the warm-up read does not count either.
                    bytesBefore = result.bytesRead
                    decodeBytesBefore = result.decodeBytesRead
                    result.lowPrecisionUses = 0
                }
            }
            let bytes = trace.expertBytes[batch.layer] ?? 0
            var hits = 0
            switch accounting {
            case let .bytesAfterBatch(budget):
                var held: [ExpertKey] = []
                for e in batch.experts {
                    let key = ExpertKey(layer: batch.layer, expert: e)
                    held.append(key)
                    if state.isResident(key) {
                        hits += 1
                        policy.didHit(key)
                    } else {
                        policy.didMiss(key)
                        state.insert(key, bytes: bytes)
                        policy.didInsert(key)
                        result.bytesRead += bytes
                        if batch.isDecode { result.decodeBytesRead += bytes }
                    }
                }
                let heldSet = Set(held)
                let incoming = held.last ?? ExpertKey(layer: batch.layer, expert: 0)
                while state.usedBytes > budget {
                    guard let victim = policy.victim(for: incoming, isEvictable: { state.isResident($0) && !heldSet.contains($0) }),
                          state.isResident(victim), !heldSet.contains(victim) else { break }
                    state.remove(victim, bytes: trace.expertBytes[victim.layer] ?? 0)
                    policy.didRemove(victim)
                }
            case let .slots(slotCount):
                // With fallback, a missing expert below the threshold is asked for as its
                // copy (precision 1), which lives in a class of slots of its own; the policy
                // sees both kinds of key, as the runtime's does.
                func resident(_ k: ExpertKey) -> Bool { k.precision == 0 ? state.isResident(k) : copyState.isResident(k) }
                func capacity(_ k: ExpertKey) -> Int { k.precision == 0 ? slotCount : (fallback?.slots ?? 0) }
                func occupied(_ k: ExpertKey) -> Int { k.precision == 0 ? state.count : copyState.count }
                func readBytes(_ k: ExpertKey) -> Int { k.precision == 0 ? (trace.expertBytes[k.layer] ?? 0) : (fallback?.copyBytes ?? 0) }
                var held = Set<ExpertKey>()
                var misses: [ExpertKey] = []
                for (i, e) in batch.experts.enumerated() {
                    var key = ExpertKey(layer: batch.layer, expert: e)
                    if let fallback, !state.isResident(key), i < batch.weights.count, batch.weights[i] < fallback.threshold {
                        key.precision = 1
                        result.lowPrecisionUses += 1
                    }
                    if resident(key) {
                        hits += 1
                        held.insert(key)
                        policy.didHit(key)
                    } else {
                        policy.didMiss(key)
                        misses.append(key)
                    }
                }
                // Reads start in order while slots can be had; the runtime lands them, computes
                // what is ready and lets those go when it runs out.
                var started: [ExpertKey] = []
                var i = 0
                while i < misses.count {
                    let key = misses[i]
                    if occupied(key) + started.filter({ $0.precision == key.precision }).count < capacity(key) {
                        started.append(key)
                        i += 1
                        continue
                    }
                    let blocked = held.union(started)
                    let evictable = { (k: ExpertKey) -> Bool in k.precision == key.precision && resident(k) && !blocked.contains(k) }
                    if let victim = policy.victim(for: key, isEvictable: evictable), evictable(victim) {
                        if victim.precision == 0 { state.remove(victim, bytes: readBytes(victim)) } else { copyState.remove(victim, bytes: readBytes(victim)) }
                        policy.didRemove(victim)
                        started.append(key)
                        i += 1
                        continue
                    }
                    guard !started.isEmpty || !held.isEmpty else {
                        throw .invalid(path: trace.source, detail: "\(slotCount) slots cannot hold one expert of layer \(batch.layer)")
                    }
                    for k in started { land(k) }
                    started.removeAll()
                    held.removeAll()
                }
                for k in started { land(k) }
                func land(_ key: ExpertKey) {
                    let b = readBytes(key)
                    if key.precision == 0 { state.insert(key, bytes: b) } else { copyState.insert(key, bytes: b) }
                    policy.didInsert(key)
                    result.bytesRead += b
                    if batch.isDecode { result.decodeBytesRead += b }
                }
            }
            observe?(index, hits)
            guard counting else { continue }
            result.lookups += batch.experts.count
            result.hits += hits
            if batch.isDecode {
                result.decodeLookups += batch.experts.count
                result.decodeHits += hits
                result.decodeLookupsByLayer[batch.layer] += batch.experts.count
                result.decodeHitsByLayer[batch.layer] += hits
            }
        }
        result.bytesRead -= bytesBefore
        result.decodeBytesRead -= decodeBytesBefore
        return result
    }

    /// What `--expert-memory bytes` gives this runtime's pool, as the replay accounts it:
    /// full-precision slots, or with fallback (`threshold`, `share` of the budget, copies of
    /// `copySlotBytes`) the two classes of slots `ExpertBudget` divides it into.
    public static func poolAccounting(_ budget: ExpertBudget, bytes: Int,
                                      fallback: (threshold: Float, share: Double, copySlotBytes: Int)? = nil) -> (Accounting, Fallback?) {
        guard let fallback else { return (.slots(budget.slotClasses(budget: bytes, fallbackShare: 0)[0].count), nil) }
        let classes = budget.withCopies(slotBytes: fallback.copySlotBytes).slotClasses(budget: bytes, fallbackShare: fallback.share)
        return (.slots(classes[0].count),
                Fallback(threshold: fallback.threshold, slots: classes[1].count, copyBytes: fallback.copySlotBytes))
    }

    /// One replay to run: a policy at a budget, with what the budget means.
    public struct Job: Sendable {
        public var policy: String
        public var budget: Int
        public var accounting: Accounting
        public var fallback: Fallback?
        public init(policy: String, budget: Int, accounting: Accounting, fallback: Fallback? = nil) {
            self.policy = policy
            self.budget = budget
            self.accounting = accounting
            self.fallback = fallback
        }
    }

    /// Runs every job, as many at once as there are cores (each replay is independent), and
    /// returns their results in the jobs' order, `budgetBytes` set to each job's budget.
    public static func runAll(_ trace: CacheTrace, _ jobs: [Job], sequences: Int = 1, warmup: Int = 0) throws(TraceFileError) -> [Result] {
        final class Slots: @unchecked Sendable {
            var results: [Swift.Result<CacheReplay.Result, TraceFileError>?]
            init(_ n: Int) { results = Array(repeating: nil, count: n) }
        }
        let slots = Slots(jobs.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: jobs.count) { i in
            let job = jobs[i]
            let r: Swift.Result<CacheReplay.Result, TraceFileError>
            do throws(TraceFileError) {
                var one = try run(trace, policy: job.policy, accounting: job.accounting, sequences: sequences,
                                  fallback: job.fallback, warmup: warmup)
                one.budgetBytes = job.budget
                r = .success(one)
            } catch {
                r = .failure(error)
            }
            lock.lock()
            slots.results[i] = r
            lock.unlock()
        }
        var out: [Result] = []
        for r in slots.results {
            switch r! {
            case let .success(v): out.append(v)
            case let .failure(e): throw e
            }
        }
        return out
    }

    /// What the recording run itself hit (route_trace files record it), in the same terms.
    public static func recorded(_ trace: CacheTrace) -> Result? {
        var r = Result(policy: "recorded", budgetBytes: 0)
        r.decodedTokens = trace.decodedTokens
        for batch in trace.batches {
            guard let hits = batch.recordedHits else { return nil }
            let h = hits.filter { $0 }.count
            let missBytes = (hits.count - h) * (trace.expertBytes[batch.layer] ?? 0)
            r.lookups += hits.count
            r.hits += h
            r.bytesRead += missBytes
            if batch.isDecode {
                r.decodeLookups += hits.count
                r.decodeHits += h
                r.decodeBytesRead += missBytes
            }
        }
        return r
    }
}

/// Resident experts and their bytes, as flat arrays (replays make millions of lookups).
struct CacheState {
    private var resident: [Bool] = []
    private let experts: Int
    private(set) var usedBytes = 0
    private(set) var count = 0

    init(experts: Int) { self.experts = experts }

    private func index(_ key: ExpertKey) -> Int { key.layer * experts + key.expert }

    func isResident(_ key: ExpertKey) -> Bool {
        let i = index(key)
        return i < resident.count && resident[i]
    }

    mutating func insert(_ key: ExpertKey, bytes: Int) {
        let i = index(key)
        if i >= resident.count { resident += Array(repeating: false, count: i + 1 - resident.count) }
        guard !resident[i] else { return }
        resident[i] = true
        usedBytes += bytes
        count += 1
    }

    mutating func remove(_ key: ExpertKey, bytes: Int) {
        let i = index(key)
        guard i < resident.count, resident[i] else { return }
        resident[i] = false
        usedBytes -= bytes
        count -= 1
    }
}
