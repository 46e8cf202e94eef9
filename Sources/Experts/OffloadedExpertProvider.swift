import Foundation
import Kernels
import Models
import Storage

/// Serves a MoE model's experts from a fixed pool, reading missing ones from the model file
/// on demand, and ahead of demand when told what the next layer will probably want.
///
/// For each layer: hits are pinned; every miss that can get a slot (a free one, or one the
/// policy frees) is submitted at once; the prefetch hinted for the next layer is submitted
/// behind them; the hits are computed while those reads run; then each completed expert is
/// computed as it arrives. An expert already being read (prefetched) is waited for, not
/// read again. Misses that found no slot (everything else pinned) wait until a computed
/// group is unpinned, so a selection larger than the pool runs in waves. Nothing pinned or
/// in flight is ever evicted, and a failed read leaves the pool consistent (the slot is
/// simply free again).
///
/// With precision fallback (HOBBIT's token-level dynamic loading), a missing expert whose
/// routing weight is below a threshold is computed from its low-precision copy, which is
/// smaller to read and to hold (it lives in the pool's second class of slots); an expert
/// resident at full precision is always used as it is. The copies come from a pack, read
/// like the experts, or, for a type the file does not hold, are made in memory: an expert
/// read at full precision is quantized into a copy while the provider waits for other reads
/// (or, failing that, just before its slot is reused), if a class-1 slot is free or it has
/// been selected more often than the copy the policy would evict (Fate's popularity-aware
/// choice). Such a copy is used only while resident; without one a missing expert is read
/// at full precision.
public final class OffloadedExpertProvider: ExpertProvider {
    public let layout: ExpertLayout
    public let pool: ExpertPool
    public let policy: any ExpertCachePolicy
    public let stats = ExpertStats()
    private let backend: any StorageBackend
    private let fileSize: UInt64

    /// Per slot: the expert it holds (or is loading), and how many holds keep it in place
    /// (a computation using it, or a read in flight into it).
    private var occupant: [ExpertKey?]
    private var pins: [Int]
    /// Free slots of each class (0: full precision, 1: low-precision copies).
    private var freeSlots: [[Int]]
    private var slotOf: [ExpertKey: Int] = [:]
    /// Where each matrix of a slot's expert starts, as offsets into the slot.
    private var sliceOffsets: [[Int]]
    /// Per slot: whether it holds a copy made in memory (not read).
    private var madeInMemory: [Bool]
    /// Experts read at full precision whose copies are to be made in memory, oldest first,
    /// with their slots: made while waiting for reads, or at the latest when the slot is
    /// about to be reused.
    private var pendingCopies: [(key: ExpertKey, slot: Int)] = []
    /// Selections of each expert (keyed at precision 0), to choose which copies to keep.
    private var selections: [ExpertKey: Int] = [:]
    /// F32 rows for expanding a native matrix while making a copy.
    private var copyRow: UnsafeMutableBufferPointer<Float>

    /// The reads of one expert being loaded into a slot.
    private struct Load {
        var key: ExpertKey
        var remaining: Int
        var failure: StorageError?
        /// The position in the current layer's request that waits for it; nil for a
        /// prefetch nobody has asked for yet.
        var consumer: Int?
        var bytes: Int
    }
    private var loads: [Int: Load] = [:]   // by slot
    private var loadingSlot: [ExpertKey: Int] = [:]
    /// Prefetched experts not yet used (arrived or still loading), with the forward pass
    /// that asked for them. They are kept from the policy until used: it sees the stream of
    /// demands alone, as without read-ahead, so a wrong prediction never counts as a use or
    /// makes a resident expert look older. Their slots are the first given up (once their
    /// layer has run in a later pass or this one without them): a wrong prediction then
    /// takes the slot of an earlier wrong one, not one the policy chose to keep.
    private var unusedPrefetches: [ExpertKey: Int] = [:]
    /// Forward passes begun (`beginBatch`), and the layer the current one is at.
    private var passIndex = 0
    private var currentLayer = -1
    private var readStart: ContinuousClock.Instant?
    /// The gate's predictions for coming layers (from `hint`), not yet read.
    private var pendingHints: [Int: GatePrediction] = [:]
    /// Routing-path statistics mixed into the gate's ranking with `--prefetch path`.
    public var pathPredictor: RoutingPathPredictor?
    /// Weight of the path statistics in that mix (the gate's is 1 minus it): on the default
    /// model the best mix for 2 to 4 candidates lay between 0.1 and 0.25.
    public var pathWeight: Float = 0.2

    /// The smallest pool that works: one token's experts of one layer (in each class).
    public static func minimumSlots(_ layout: ExpertLayout) -> Int { max(layout.expertsPerToken, 1) }

    /// Bytes of one slot for `layout`'s experts at `precision`, read from a file of `fileSize` bytes.
    public static func slotBytes(_ layout: ExpertLayout, fileSize: UInt64, precision: Int = 0) -> Int {
        var largest = 0
        for layer in layout.layers {
            for e in 0..<layout.expertCount {
                largest = max(largest, ReadPlan(layout.slices(layer: layer, expert: e, precision: precision), fileSize: fileSize).span)
            }
        }
        return largest
    }

    /// When a missing expert is computed from a low-precision copy.
    public struct Fallback: Sendable {
        /// Experts whose routing weight (the largest any token of the batch gives them) is
        /// below this fall back.
        public var threshold: Float
        /// The precision of the copies (an index into `ExpertLayout.precisions`, > 0): a
        /// pack's, read from the file, or one made in memory (`ExpertLayout.addingMemoryCopies`).
        public var precision: Int

        public init(threshold: Float, precision: Int) {
            self.threshold = threshold
            self.precision = precision
        }
    }
    public internal(set) var fallback: Fallback?
    /// Whether the copies are made in memory (their precision is not in the file).
    public var makesCopies: Bool { fallback.map { !layout.isInFile(precision: $0.precision) } ?? false }

    /// - Parameter fallback: needs a pool with a second class of slots, sized for the copies.
    public init(layout: ExpertLayout, pool: ExpertPool, policy: any ExpertCachePolicy, backend: any StorageBackend,
                fallback: Fallback? = nil) throws(StorageError) {
        if let fallback {
            guard fallback.precision > 0, fallback.precision < layout.precisions.count, pool.classCounts.count == 2 else {
                throw .invalidRequest("precision fallback needs a low-precision copy and a pool class for it")
            }
        }
        self.layout = layout
        self.pool = pool
        self.policy = policy
        self.backend = backend
        self.fallback = fallback
        fileSize = backend.fileSize
        loadedVersion = backend.currentVersion()
        occupant = Array(repeating: nil, count: pool.slotCount)
        pins = Array(repeating: 0, count: pool.slotCount)
        freeSlots = pool.classCounts.indices.map { Array(pool.slots(ofClass: $0).reversed()) }
        sliceOffsets = Array(repeating: [], count: pool.slotCount)
        madeInMemory = Array(repeating: false, count: pool.slotCount)
        let widest = layout.layers.flatMap { layout.slices(layer: $0, expert: 0) }.map(\.columns).max() ?? 0
        copyRow = .allocate(capacity: fallback != nil && !layout.isInFile(precision: fallback!.precision) ? widest : 0)
        do {
            try backend.registerBuffers([pool.memory.bytes])
        } catch let e as StorageError {
            throw e
        } catch {
            throw .invalidRequest("registering the expert pool: \(error)")
        }
    }

    deinit { copyRow.deallocate() }

    public func beginBatch(tokens: Int) {
        if batchTokens == 1, pass.layers > 0, let first = pass.firstEntry, let last = pass.lastExit {
            // The last decode step's figures steer the adaptive look-ahead.
            lookahead.record(layers: pass.layers, computeSeconds: (last - first).seconds - (stats.stallSeconds - pass.stallAtStart),
                             expertsRead: stats.expertsRead - pass.readsAtStart,
                             readSeconds: stats.readBusySeconds - pass.readBusyAtStart)
            lookahead.record(prefetchesUsed: stats.prefetchesUsed - pass.usedAtStart, wasted: stats.prefetchesWasted - pass.wastedAtStart)
        }
        pass = Pass(stallAtStart: stats.stallSeconds, readsAtStart: stats.expertsRead, readBusyAtStart: stats.readBusySeconds,
                    usedAtStart: stats.prefetchesUsed, wastedAtStart: stats.prefetchesWasted)
        stats.tokens += tokens
        batchTokens = tokens
        passIndex += 1
        currentLayer = -1
        versionChecked = false
        pendingHints.removeAll()
    }

    /// Timing of the current forward pass, for the adaptive look-ahead.
    private struct Pass {
        var stallAtStart = 0.0
        var readsAtStart = 0
        var readBusyAtStart = 0.0
        var usedAtStart = 0
        var wastedAtStart = 0
        var layers = 0
        var firstEntry: ContinuousClock.Instant?
        var lastExit: ContinuousClock.Instant?
    }
    private var pass = Pass()
    /// How far ahead and how wide `--prefetch adaptive` reads.
    public private(set) var lookahead = AdaptiveLookahead()

    /// The file as it was when the model loaded. Experts read from a file rewritten since
    /// would not match the weights already in memory, so a change is an error.
    private let loadedVersion: FileVersion?
    private var versionChecked = false

    private func checkFileVersion() throws(ModelError) {
        versionChecked = true
        guard let before = loadedVersion, let now = backend.currentVersion(), now != before else { return }
        throw .experts(ExpertError.fileChangedWhileRunning(path: backend.path, bytesWhenLoaded: before.size, bytesNow: now.size))
    }
    private var batchTokens = 1

    /// Whether `expert` of `layer` is in the pool now.
    public func isResident(layer: Int, expert: Int) -> Bool { slotOf[ExpertKey(layer: layer, expert: expert)] != nil }
    public var residentCount: Int { slotOf.count }
    /// Experts whose reads are in flight (prefetches not yet asked for, mostly).
    public var loadingCount: Int { loads.count }

    /// What to read ahead on.
    public var prefetch: PrefetchMode = .none

    public var wantsPrediction: ExpertPrediction {
        switch prefetch {
        case .none: return .none
        case .gate: return .ahead(depth: 1)
        case .adaptive, .path: return .ahead(depth: lookahead.depth)
        case .near: return .sameLayer
        }
    }

    /// Experts to read ahead for one layer: a token's worth in decoding (adaptive: as many
    /// as spare disk time allows); for a batch the most popular predictions, up to a share
    /// of the pool that leaves room for the layers in between.
    var prefetchLimit: Int {
        let k = layout.expertsPerToken
        guard batchTokens > 1 else {
            return prefetch == .adaptive || prefetch == .path ? lookahead.candidates(k: k, expertCount: layout.expertCount) : k
        }
        return min(layout.expertCount, max(k, pool.slotCount / (2 * max(layout.layers.count, 1))))
    }

    public func hint(_ prediction: GatePrediction) {
        guard prefetch != .none, layout.hasExperts(layer: prediction.layer) else { return }
        // A later (nearer) prediction for the same layer replaces an earlier one.
        pendingHints[prediction.layer] = prediction
        if prefetch == .near {
            // The layer is about to run: read now, behind nothing.
            do { try issueHintedPrefetch(current: -1, experts: nil) } catch { pendingHints.removeAll() }
        }
    }

    /// The candidates for `prediction.layer`, most likely first. One token: every expert by
    /// the gate's probability, mixed with the path statistics given the experts the current
    /// layer chose when that layer is the one before. A batch: the experts its tokens
    /// predict, the most popular first.
    /// With `--prefetch adaptive` or `path`, only candidates at or above the look-ahead's
    /// confidence bar.
    func ranking(_ prediction: GatePrediction, current layer: Int, experts: [Int]?) -> [Int] {
        guard prediction.tokens == 1 else { return prediction.ranked }
        var scores = Array(prediction.probabilities(token: 0))
        if let path = pathPredictor, let experts, let i = layout.layers.firstIndex(of: layer),
           i + 1 < layout.layers.count, layout.layers[i + 1] == prediction.layer {
            let statistics = path.scores(nextLayer: prediction.layer, given: experts)
            scores = zip(scores, statistics).map { (1 - pathWeight) * $0 + pathWeight * $1 }
        }
        var ranked = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        if prefetch == .adaptive || prefetch == .path {
            let bar = lookahead.minimumProbability
            ranked = ranked.filter { scores[$0] >= bar }
        }
        return ranked
    }

    public func withExperts(layer: Int, experts: [Int], importance: [Float],
                            compute: ([Int], [ExpertWeights]) throws(ModelError) -> Void) throws(ModelError) {
        if !versionChecked { try checkFileVersion() }
        stats.recordPrediction(layer: layer, actual: experts)
        if pass.firstEntry == nil { pass.firstEntry = .now }
        if batchTokens == 1 { pathPredictor?.observe(layer: layer, experts: experts) }
        pass.layers += 1
        currentLayer = layer
        defer { pass.lastExit = .now }
        try landArrivedPrefetches()
        var ready: [Int] = []
        var waiting: [Int] = []
        var pinnedSlots: [Int] = []
        var outstanding = 0
        // The copy each position is computed from.
        var keys: [ExpertKey] = []
        keys.reserveCapacity(experts.count)
        let makesCopies = makesCopies
        for (position, e) in experts.enumerated() {
            var key = ExpertKey(layer: layer, expert: e)
            if makesCopies { selections[key, default: 0] += 1 }
            if let fallback, slotOf[key] == nil, loadingSlot[key] == nil, importance[position] < fallback.threshold {
                // A copy made in memory is used only while resident: there is none to read.
                let copy = ExpertKey(layer: layer, expert: e, precision: fallback.precision)
                let resident = slotOf[copy]
                if resident != nil || !makesCopies {
                    key = copy
                    stats.lowPrecisionUses += 1
                    if let resident, madeInMemory[resident] { stats.madeCopyUses += 1 }
                }
            }
            keys.append(key)
            // A prefetch's first use is, to the policy, the miss it would have been; it
            // learns of the expert now (or when its read lands).
            let prefetched = unusedPrefetches.removeValue(forKey: key) != nil
            if prefetched { stats.prefetchesUsed += 1 }
            if let slot = slotOf[key] {
                pins[slot] += 1
                pinnedSlots.append(slot)
                if prefetched {
                    policy.didMiss(key)
                    policy.didInsert(key)
                } else {
                    policy.didHit(key)
                }
                stats.hit(layer: layer)
                ready.append(position)
            } else if let slot = loadingSlot[key] {
                // Prefetched and still arriving: wait for that read.
                pins[slot] += 1
                pinnedSlots.append(slot)
                loads[slot]!.consumer = position
                outstanding += 1
                policy.didMiss(key)
                stats.hit(layer: layer, inFlight: true)
            } else {
                policy.didMiss(key)
                stats.miss(layer: layer)
                waiting.append(position)
            }
        }
        waiting.reverse()  // popped from the end, so loads start in the router's order

        var failure: ModelError?
        do {
            outstanding += try startLoads(keys, waiting: &waiting, pinned: &pinnedSlots)
            // Read-ahead goes to the disk once this layer's own reads are in, so it never
            // slows them down; it then overlaps the rest of this layer's compute.
            var readAhead = false
            if outstanding == 0 && waiting.isEmpty {
                try issueHintedPrefetch(current: layer, experts: experts)
                readAhead = true
            }
            if !ready.isEmpty {
                try computeGroup(ready, keys: keys, compute: compute, pinned: &pinnedSlots)
            }
            while outstanding > 0 || !waiting.isEmpty {
                if outstanding == 0 {
                    outstanding += try startLoads(keys, waiting: &waiting, pinned: &pinnedSlots)
                    if outstanding == 0 {
                        // Every slot is held by reads in flight for other layers (prefetches):
                        // let them land, which frees their holds.
                        guard backend.pending > 0 else {
                            throw ModelError.experts(ExpertError.noFreeSlot(layer: layer, slots: pool.slotCount))
                        }
                        _ = try awaitLoads(pinned: &pinnedSlots)
                        continue
                    }
                }
                let arrived = try awaitLoads(pinned: &pinnedSlots)
                outstanding -= arrived.count
                outstanding += try startLoads(keys, waiting: &waiting, pinned: &pinnedSlots)
                if !readAhead && outstanding == 0 && waiting.isEmpty {
                    try issueHintedPrefetch(current: layer, experts: experts)
                    readAhead = true
                }
                if !arrived.isEmpty {
                    try computeGroup(arrived, keys: keys, compute: compute, pinned: &pinnedSlots)
                }
            }
        } catch let e as ModelError {
            failure = e
        } catch {
            failure = .storageFailure(error, path: backend.path)
        }
        if let failure {
            drain(pinned: &pinnedSlots)
            for slot in pinnedSlots { pins[slot] -= 1 }
            throw failure
        }
    }

    // MARK: Loading

    /// Starts the reads of waiting positions that can get a slot; returns how many started.
    private func startLoads(_ keys: [ExpertKey], waiting: inout [Int], pinned: inout [Int]) throws(ModelError) -> Int {
        var requests: [ReadRequest] = []
        var started = 0
        while let position = waiting.last {
            let key = keys[position]
            guard let slot = claimSlot(for: key, sparing: []) else { break }
            waiting.removeLast()
            beginLoad(key, into: slot, consumer: position, requests: &requests)
            pinned.append(slot)
            started += 1
        }
        try submit(requests)
        return started
    }

    /// Reads the hinted experts of the coming layers (nearest layer first) that are neither
    /// resident nor loading, into free slots or slots the policy gives up (never one a hint
    /// names). Hints for `layer` or earlier are stale and dropped.
    private func issueHintedPrefetch(current layer: Int, experts current: [Int]?) throws(ModelError) {
        guard !pendingHints.isEmpty else { return }
        let limit = prefetchLimit
        let hints = pendingHints.filter { $0.key > layer }.sorted { $0.key < $1.key }.map { l, prediction in
            (l, prediction, Array(ranking(prediction, current: layer, experts: current).prefix(limit)))
        }
        pendingHints.removeAll()
        // Recall and precision are scored on what is read: a token's worth, or the adaptive
        // candidates.
        for (l, _, experts) in hints {
            stats.recordHint(layer: l, experts: Array(experts.prefix(batchTokens > 1 ? layout.expertsPerToken : limit)))
        }
        let keys = hints.map { l, prediction, experts in
            let importance = fallback == nil ? nil : expectedImportance(prediction)
            return experts.map { prefetchKey(layer: l, expert: $0, importance: importance) }
        }
        let named = Set(keys.joined())
        var requests: [ReadRequest] = []
        reading: for key in keys.joined() {
            if slotOf[key] != nil || loadingSlot[key] != nil { continue }
            guard let slot = claimSlot(for: key, sparing: named) else { break reading }
            beginLoad(key, into: slot, consumer: nil, requests: &requests)
            unusedPrefetches[key] = passIndex
            stats.prefetchesIssued += 1
        }
        try submit(requests)
    }

    /// The copy of a predicted expert to read ahead: the one the layer will ask for. With
    /// fallback (`importance` given), that is the low-precision copy when the expert is not
    /// resident at full precision and its expected importance is below the threshold.
    private func prefetchKey(layer: Int, expert: Int, importance: [Float]?) -> ExpertKey {
        var key = ExpertKey(layer: layer, expert: expert)
        guard let fallback, let importance, slotOf[key] == nil, loadingSlot[key] == nil else { return key }
        // A copy made in memory is never read: ahead of a layer that will fall back to it, it
        // is resident (nothing to read) or missing (the expert is read at full precision).
        if importance[expert] < fallback.threshold && !makesCopies { key.precision = fallback.precision }
        return key
    }

    /// Per expert, the routing weight the prediction expects it to get: the largest, over the
    /// batch's tokens, of its gate probability over the token's top k's (the weights the
    /// router renormalizes to).
    private func expectedImportance(_ prediction: GatePrediction) -> [Float] {
        var importance = [Float](repeating: 0, count: prediction.expertCount)
        for t in 0..<prediction.tokens {
            let p = prediction.probabilities(token: t)
            let top = p.sorted(by: >).prefix(layout.expertsPerToken).reduce(0, +)
            guard top > 0 else { continue }
            for (e, probability) in zip(importance.indices, p) { importance[e] = max(importance[e], probability / top) }
        }
        return importance
    }

    private func beginLoad(_ key: ExpertKey, into slot: Int, consumer: Int?, requests: inout [ReadRequest]) {
        precondition(layout.isInFile(precision: key.precision), "\(key) is made in memory, not read")
        let slices = layout.slices(layer: key.layer, expert: key.expert, precision: key.precision)
        let plan = ReadPlan(slices, fileSize: fileSize)
        occupant[slot] = key
        madeInMemory[slot] = false
        pins[slot] += 1  // the read's own hold, dropped when it lands
        if consumer != nil { pins[slot] += 1 }  // the computation's hold
        sliceOffsets[slot] = plan.sliceOffsets
        let bytes = slices.reduce(0) { $0 + $1.byteCount }
        loads[slot] = Load(key: key, remaining: plan.reads.count, consumer: consumer, bytes: bytes)
        loadingSlot[key] = slot
        for r in plan.reads {
            requests.append(ReadRequest(offset: r.offset, length: r.length, destination: pool.slot(slot) + r.slotOffset,
                                        tag: UInt64(slot)))
        }
    }

    private func submit(_ requests: [ReadRequest]) throws(ModelError) {
        guard !requests.isEmpty else { return }
        if backend.pending == 0 { readStart = ContinuousClock.now }
        do {
            try backend.submit(requests)
        } catch {
            throw .storageFailure(error, path: backend.path)
        }
    }

    /// A free slot, the slot of a stale prefetch, or one the policy gives up (not pinned,
    /// not loading, not in `sparing`); nil when there is none.
    private func claimSlot(for key: ExpertKey, sparing: Set<ExpertKey>) -> Int? {
        let slotClass = key.precision == 0 ? 0 : 1
        if let slot = freeSlots[slotClass].popLast() { return slot }
        let isEvictable = { [slotOf, pins] (k: ExpertKey) -> Bool in
            guard let s = slotOf[k] else { return false }
            return pins[s] == 0 && !sparing.contains(k) && (k.precision == 0 ? 0 : 1) == slotClass
        }
        let stale = stalePrefetch(isEvictable: isEvictable)
        guard let victim = stale ?? policy.victim(for: key, isEvictable: isEvictable),
              let slot = slotOf[victim], pins[slot] == 0 else { return nil }
        if let i = pendingCopies.firstIndex(where: { $0.slot == slot }) {
            // The last chance to make this expert's copy: its slot is about to be overwritten.
            let pending = pendingCopies.remove(at: i)
            makeCopy(of: pending.key, from: slot)
        }
        slotOf[victim] = nil
        occupant[slot] = nil
        if unusedPrefetches.removeValue(forKey: victim) != nil {
            stats.prefetchesWasted += 1
        } else {
            policy.didRemove(victim)
        }
        return slot
    }

    /// The oldest arrived prefetch whose layer has run since it was asked for without using
    /// it (an earlier pass, or this pass past its layer), among those `isEvictable` accepts.
    private func stalePrefetch(isEvictable: (ExpertKey) -> Bool) -> ExpertKey? {
        var oldest: (key: ExpertKey, pass: Int)?
        for (key, pass) in unusedPrefetches where pass < passIndex || key.layer <= currentLayer {
            guard isEvictable(key) else { continue }
            if let o = oldest, (o.pass, o.key.layer, o.key.expert, o.key.precision) <= (pass, key.layer, key.expert, key.precision) { continue }
            oldest = (key, pass)
        }
        return oldest?.key
    }

    /// Waits for at least one read, takes every completion available, and returns the
    /// positions (of the current request) whose experts are now complete. Prefetches that
    /// land become resident. Throws the first failure of a read the current request
    /// waits for (after the pool is consistent again).
    private func awaitLoads(pinned: inout [Int]) throws(ModelError) -> [Int] {
        // The CPU would idle until the reads land: make a copy meanwhile.
        makeOnePendingCopy()
        let waitStart = ContinuousClock.now
        let completions = try reap(minimum: 1) + reap(minimum: 0)
        stats.stallSeconds += (ContinuousClock.now - waitStart).seconds
        return try land(completions, pinned: &pinned)
    }

    /// The backend's completions (waiting for at least `minimum`), its errors as the model's.
    private func reap(minimum: Int) throws(ModelError) -> [ReadCompletion] {
        do {
            return try backend.reap(minimum: minimum)
        } catch {
            throw .storageFailure(error, path: backend.path)
        }
    }

    /// Lands the prefetches that arrived since the last look, without waiting: until then
    /// they count as in flight, and a wrong one could not give up its slot. Called when a
    /// layer begins, when no read of its own is outstanding.
    private func landArrivedPrefetches() throws(ModelError) {
        guard backend.pending > 0 else { return }
        var pinned: [Int] = []
        _ = try land(reap(minimum: 0), pinned: &pinned)
    }

    /// Accounts for `completions`: experts whose reads are all done become resident (a
    /// failed one frees its slot). Returns the positions of the current request now complete.
    private func land(_ completions: [ReadCompletion], pinned: inout [Int]) throws(ModelError) -> [Int] {
        let now = ContinuousClock.now
        if backend.pending == 0, let start = readStart {
            stats.readBusySeconds += (now - start).seconds
            readStart = nil
        }
        var arrived: [Int] = []
        var firstFailure: StorageError?
        for c in completions {
            let slot = Int(c.tag)
            guard var load = loads[slot] else { continue }
            load.remaining -= 1
            if let e = c.error, load.failure == nil { load.failure = e }
            if load.remaining > 0 { loads[slot] = load; continue }
            loads[slot] = nil
            loadingSlot[load.key] = nil
            pins[slot] -= 1  // the read's hold
            if let e = load.failure {
                // The slot holds garbage: free it, the expert stays missing. A failed
                // prefetch is not an error: the expert is read again if it is asked for.
                unusedPrefetches.removeValue(forKey: load.key)
                if load.consumer != nil {
                    pins[slot] -= 1
                    if let i = pinned.firstIndex(of: slot) { pinned.remove(at: i) }
                    firstFailure = firstFailure ?? e
                }
                occupant[slot] = nil
                freeSlots[pool.slotClass(slot)].append(slot)
                continue
            }
            slotOf[load.key] = slot
            if unusedPrefetches[load.key] == nil { policy.didInsert(load.key) }
            stats.expertsRead += 1
            stats.bytesRead += UInt64(load.bytes)
            if load.key.precision > 0 { stats.lowPrecisionBytesRead += UInt64(load.bytes) }
            if load.key.precision == 0 && makesCopies { queueCopy(of: load.key, in: slot) }
            if let position = load.consumer { arrived.append(position) }
        }
        if let firstFailure { throw .storage(firstFailure) }
        return arrived
    }

    /// After a failure: waits for every read still in flight so no slot is written behind
    /// the pool's back, and frees the slots whose loads did not complete.
    private func drain(pinned: inout [Int]) {
        while backend.pending > 0 {
            guard let done = try? backend.reap(minimum: 1), !done.isEmpty else { break }
        }
        readStart = nil
        for (slot, load) in loads {
            pins[slot] -= 1
            if load.consumer != nil {
                pins[slot] -= 1
                if let i = pinned.firstIndex(of: slot) { pinned.remove(at: i) }
            }
            unusedPrefetches.removeValue(forKey: load.key)
            occupant[slot] = nil
            freeSlots[pool.slotClass(slot)].append(slot)
        }
        loads.removeAll()
        loadingSlot.removeAll()
    }

    // MARK: Copies made in memory

    /// Queues the copy of `key`, just read into `slot`, unless it is resident or queued.
    private func queueCopy(of key: ExpertKey, in slot: Int) {
        guard let fallback else { return }
        let copy = ExpertKey(layer: key.layer, expert: key.expert, precision: fallback.precision)
        guard slotOf[copy] == nil, !pendingCopies.contains(where: { $0.key == key }) else { return }
        pendingCopies.append((key, slot))
    }

    /// Makes the oldest pending copy whose expert is still in its slot at full precision.
    private func makeOnePendingCopy() {
        while !pendingCopies.isEmpty {
            let (key, slot) = pendingCopies.removeFirst()
            if makeCopy(of: key, from: slot) {
                stats.copiesMadeWhileWaiting += 1
                return
            }
        }
    }

    /// Makes every pending copy (tests, to know which copies exist).
    func makePendingCopies() {
        while !pendingCopies.isEmpty { makeOnePendingCopy() }
    }

    /// Whether the copy of `key` earns a class-1 slot: one is free, or `key` has been selected
    /// more often than the copy the policy would give up (ties keep the resident one).
    private func admitsCopy(_ copy: ExpertKey) -> Bool {
        if !freeSlots[1].isEmpty { return true }
        let victim = policy.victim(for: copy) { [slotOf, pins] k in
            guard k.precision > 0, let s = slotOf[k] else { return false }
            return pins[s] == 0
        }
        guard let victim else { return false }
        let popularity = { (k: ExpertKey) in self.selections[ExpertKey(layer: k.layer, expert: k.expert)] ?? 0 }
        return popularity(copy) > popularity(victim)
    }

    /// Quantizes the full-precision expert `key` in `source` into a class-1 slot as its copy
    /// at the fallback precision, if it is still there and the copy earns a slot. Returns
    /// whether a copy was made. The bytes are what `moe pack` writes for that type: each
    /// native row expanded to F32 and quantized (or copied when already of the type).
    @discardableResult
    private func makeCopy(of key: ExpertKey, from source: Int) -> Bool {
        guard let fallback, occupant[source] == key, slotOf[key] == source, loads[source] == nil else { return false }
        let copy = ExpertKey(layer: key.layer, expert: key.expert, precision: fallback.precision)
        guard slotOf[copy] == nil, admitsCopy(copy), let slot = claimSlot(for: copy, sparing: []) else { return false }
        let start = ContinuousClock.now
        let native = layout.slices(layer: key.layer, expert: key.expert)
        let target = layout.slices(layer: key.layer, expert: key.expert, precision: fallback.precision)
        let from = UnsafeRawPointer(pool.slot(source)), to = pool.slot(slot)
        for (k, (n, t)) in zip(native, target).enumerated() {
            let input = from + sliceOffsets[source][k], output = to + Int(t.fileOffset)
            guard n.type != t.type else {
                output.copyMemory(from: input, byteCount: n.byteCount)
                continue
            }
            let inputRow = n.type.byteCount(rows: 1, columns: n.columns)
            let outputRow = t.type.byteCount(rows: 1, columns: t.columns)
            for row in 0..<n.rows {
                Dequantize.row(n.type, from: input + row * inputRow, to: copyRow.baseAddress!, count: n.columns)
                Quantize.row(t.type, from: copyRow.baseAddress!, to: output + row * outputRow, count: t.columns)
            }
        }
        occupant[slot] = copy
        slotOf[copy] = slot
        sliceOffsets[slot] = target.map { Int($0.fileOffset) }
        madeInMemory[slot] = true
        policy.didInsert(copy)
        stats.copiesMade += 1
        stats.copySeconds += (ContinuousClock.now - start).seconds
        return true
    }

    /// The experts and copies resident now, with their slots (tests).
    var residentSlots: [ExpertKey: Int] { slotOf }

    /// The bytes of resident `key` as computed from: gate, up and down back to back for a
    /// copy made in memory (tests compare them with a pack's bundle).
    func residentBytes(_ key: ExpertKey) -> (bytes: UnsafeRawBufferPointer, madeInMemory: Bool)? {
        guard let slot = slotOf[key] else { return nil }
        let count = layout.slices(layer: key.layer, expert: key.expert, precision: key.precision).reduce(0) { $0 + $1.byteCount }
        return (UnsafeRawBufferPointer(start: pool.slot(slot), count: count), madeInMemory[slot])
    }

    /// Gives up every resident expert of `slotClass` not in use (tests: to see what the
    /// other class serves alone).
    func evictAll(slotClass: Int) {
        for slot in pool.slots(ofClass: slotClass) {
            guard let key = occupant[slot], pins[slot] == 0, loads[slot] == nil else { continue }
            slotOf[key] = nil
            occupant[slot] = nil
            if unusedPrefetches.removeValue(forKey: key) == nil { policy.didRemove(key) }
            freeSlots[slotClass].append(slot)
        }
    }

    // MARK: Computing

    private func computeGroup(_ positions: [Int], keys: [ExpertKey],
                              compute: ([Int], [ExpertWeights]) throws(ModelError) -> Void, pinned: inout [Int]) throws(ModelError) {
        var weights: [ExpertWeights] = []
        weights.reserveCapacity(positions.count)
        var slots: [Int] = []
        for p in positions {
            let key = keys[p]
            let slot = slotOf[key]!
            slots.append(slot)
            let s = layout.slices(layer: key.layer, expert: key.expert, precision: key.precision)
            let base = UnsafeRawPointer(pool.slot(slot))
            let offsets = sliceOffsets[slot]
            weights.append(ExpertWeights(
                gate: WeightMatrix(type: s[0].type, rows: s[0].rows, columns: s[0].columns, base: base + offsets[0]),
                up: WeightMatrix(type: s[1].type, rows: s[1].rows, columns: s[1].columns, base: base + offsets[1]),
                down: WeightMatrix(type: s[2].type, rows: s[2].rows, columns: s[2].columns, base: base + offsets[2])))
        }
        try compute(positions, weights)
        // Done with them: unpin, so they may be evicted for the rest of this layer's misses.
        for slot in slots {
            pins[slot] -= 1
            if let i = pinned.firstIndex(of: slot) { pinned.remove(at: i) }
        }
    }
}

/// How one expert's slices are read into a slot: slices adjacent in the file (a pack's
/// bundle) form one read; each read covers whole pages, so it goes straight into the slot
/// with O_DIRECT, and the slice starts inside it at its offset within the first page.
struct ReadPlan {
    struct Read {
        var offset: UInt64
        var length: Int
        var slotOffset: Int
    }
    /// Largest single request (a multiple of the page size).
    static let pieceBytes = 512 << 10
    var reads: [Read] = []
    var sliceOffsets: [Int] = []
    var span = 0

    init(_ slices: [ExpertSlice], fileSize: UInt64) {
        let page = UInt64(PackFormat.alignment)
        var i = 0
        while i < slices.count {
            var j = i + 1
            var end = slices[i].fileOffset + UInt64(slices[i].byteCount)
            while j < slices.count && slices[j].fileOffset == end {
                end += UInt64(slices[j].byteCount)
                j += 1
            }
            let start = slices[i].fileOffset & ~(page - 1)
            let alignedEnd = (end + page - 1) & ~(page - 1)
            // Pieces of at most `pieceBytes`, all in flight together: the device serves a few
            // parallel requests faster than one long one (on this machine's virtual disk one
            // 1.6 MiB read took ~1.5x as long as three 544 KiB ones).
            let length = Int(min(alignedEnd, max(fileSize, end)) - start)
            var done = 0
            while done < length {
                let n = min(Self.pieceBytes, length - done)
                reads.append(Read(offset: start + UInt64(done), length: n, slotOffset: span + done))
                done += n
            }
            for k in i..<j { sliceOffsets.append(span + Int(slices[k].fileOffset - start)) }
            span += Int(alignedEnd - start)
            i = j
        }
    }
}
