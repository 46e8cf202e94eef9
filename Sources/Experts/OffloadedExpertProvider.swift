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
///
/// This type orchestrates; the state lives in parts: `SlotTable` (what each slot holds and
/// what holds it), `ExpertReader` (reads in flight, the file's version), `ReadAhead` (the
/// cross-layer gate, waiting predictions, prefetches not yet used) and `MemoryCopies`.
public final class OffloadedExpertProvider: ExpertProvider {
    public let layout: ExpertLayout
    public let pool: ExpertPool
    public let policy: any ExpertCachePolicy
    public let stats: ExpertStats
    let slots: SlotTable
    let reader: ExpertReader
    let readAhead: ReadAhead
    /// With fallback to copies made in memory (a type the file does not hold).
    let copies: MemoryCopies?

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
        self.fallback = fallback
        let stats = ExpertStats()
        self.stats = stats
        slots = SlotTable(pool: pool)
        readAhead = ReadAhead(layout: layout, slotCount: pool.slotCount, stats: stats)
        copies = fallback.flatMap { layout.isInFile(precision: $0.precision) ? nil : MemoryCopies(layout: layout, precision: $0.precision) }
        reader = try ExpertReader(layout: layout, backend: backend, pool: pool, stats: stats)
    }

    /// What to read ahead on.
    public var prefetch: PrefetchMode {
        get { readAhead.mode }
        set { readAhead.mode = newValue }
    }
    /// Routing-path statistics mixed into the gate's ranking with `--prefetch path`.
    public var pathPredictor: RoutingPathPredictor? {
        get { readAhead.pathPredictor }
        set { readAhead.pathPredictor = newValue }
    }
    /// How far ahead and how wide `--prefetch adaptive` reads.
    public var lookahead: AdaptiveLookahead { readAhead.lookahead }

    /// Whether `expert` of `layer` is in the pool now.
    public func isResident(layer: Int, expert: Int) -> Bool { slots.slot(of: ExpertKey(layer: layer, expert: expert)) != nil }
    public var residentCount: Int { slots.residentCount }
    /// Experts whose reads are in flight (prefetches not yet asked for, mostly).
    public var loadingCount: Int { reader.loadCount }

    public func beginBatch(tokens: Int) {
        readAhead.beginPass(tokens: tokens)
        stats.tokens += tokens
        reader.beginPass()
    }

    /// Step size of the online correction of read-ahead predictions (`GateCorrection`; 0: the
    /// plain cross-layer gate).
    public var gateLearningRate: Float {
        get { readAhead.gate.learningRate }
        set { readAhead.gate.learningRate = newValue }
    }

    public func observe(_ observation: LayerObservation) -> GatePrediction? {
        let l = observation.layer
        switch observation.stage {
        case .beforeAttention:
            guard prefetch == .near, let layer = observation.moeLayer(l) else { return nil }
            hint(readAhead.gate.predict(layer, from: observation, distance: 0))
            return nil
        case .beforeFeedForward:
            readAhead.gate.learn(from: observation)
            // Predict the coming layers' experts so their reads overlap this layer's expert
            // compute (and the layers between); the next layer's also for a routing observer.
            let depth = max(readAhead.depth, observation.recordsPrediction ? 1 : 0)
            var next: GatePrediction?
            for ahead in (l + 1)..<min(l + 1 + depth, observation.layerCount) {
                guard let layer = observation.moeLayer(ahead) else { continue }
                let predicted = readAhead.gate.predict(layer, from: observation, distance: ahead - l)
                if readAhead.depth > 0 { hint(predicted) }
                if ahead == l + 1 { next = predicted }
            }
            return next
        }
    }

    /// What the cross-layer gate predicts for `prediction.layer`: kept to read when this
    /// layer's own reads are in (with `near`, read at once).
    func hint(_ prediction: GatePrediction) {
        guard readAhead.store(prediction) else { return }
        if prefetch == .near {
            // The layer is about to run: read now, behind nothing.
            do { try issueHintedPrefetch(current: -1, experts: nil) } catch { readAhead.dropHints() }
        }
    }

    public func withExperts(layer: Int, experts: [Int], importance: [Float],
                            compute: ([Int], [ExpertWeights]) throws(ModelError) -> Void) throws(ModelError) {
        if !reader.versionChecked { try reader.checkFileVersion() }
        stats.recordPrediction(layer: layer, actual: experts)
        readAhead.enterLayer(layer, experts: experts)
        defer { readAhead.exitLayer() }
        try landArrivedPrefetches()
        // Positions resident now, positions to read, the slots this call holds, and reads
        // this layer waits for.
        var ready: [Int] = []
        var waiting: [Int] = []
        var pinnedSlots: [Int] = []
        var outstanding = 0
        // The copy each position is computed from.
        var keys: [ExpertKey] = []
        keys.reserveCapacity(experts.count)
        for (position, e) in experts.enumerated() {
            let key = self.key(layer: layer, expert: e, importance: importance[position])
            keys.append(key)
            // A prefetch's first use is, to the policy, the miss it would have been; it
            // learns of the expert now (or when its read lands).
            let prefetched = readAhead.unstage(key)
            if prefetched { stats.prefetchesUsed += 1 }
            if let slot = slots.slot(of: key) {
                slots.pin(slot)
                pinnedSlots.append(slot)
                if prefetched {
                    policy.didMiss(key)
                    policy.didInsert(key)
                } else {
                    policy.didHit(key)
                }
                stats.hit(layer: layer)
                ready.append(position)
            } else if let slot = reader.slot(loading: key) {
                // Prefetched and still arriving: wait for that read.
                slots.pin(slot)
                pinnedSlots.append(slot)
                reader.assign(consumer: position, toLoadIn: slot)
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
            var readAheadIssued = false
            if outstanding == 0 && waiting.isEmpty {
                try issueHintedPrefetch(current: layer, experts: experts)
                readAheadIssued = true
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
                        guard reader.pending > 0 else {
                            throw ModelError.experts(ExpertError.noFreeSlot(layer: layer, slots: pool.slotCount))
                        }
                        _ = try awaitLoads(pinned: &pinnedSlots)
                        continue
                    }
                }
                let arrived = try awaitLoads(pinned: &pinnedSlots)
                outstanding -= arrived.count
                outstanding += try startLoads(keys, waiting: &waiting, pinned: &pinnedSlots)
                if !readAheadIssued && outstanding == 0 && waiting.isEmpty {
                    try issueHintedPrefetch(current: layer, experts: experts)
                    readAheadIssued = true
                }
                if !arrived.isEmpty {
                    try computeGroup(arrived, keys: keys, compute: compute, pinned: &pinnedSlots)
                }
            }
        } catch let e as ModelError {
            failure = e
        } catch {
            failure = .file("\(error)")
        }
        if let failure {
            drain(pinned: &pinnedSlots)
            for slot in pinnedSlots { slots.unpin(slot) }
            throw failure
        }
    }

    /// The copy of `expert` to compute from: with fallback, a missing expert whose routing
    /// weight is below the threshold is computed from its low-precision copy (one made in
    /// memory only while it is resident: there is none to read).
    @inline(__always)
    private func key(layer: Int, expert e: Int, importance: Float) -> ExpertKey {
        let key = ExpertKey(layer: layer, expert: e)
        copies?.countSelection(key)
        guard let fallback, slots.slot(of: key) == nil, reader.slot(loading: key) == nil, importance < fallback.threshold else {
            return key
        }
        let copy = ExpertKey(layer: layer, expert: e, precision: fallback.precision)
        let resident = slots.slot(of: copy)
        guard resident != nil || copies == nil else { return key }
        stats.lowPrecisionUses += 1
        if let resident, slots.madeInMemory[resident] { stats.madeCopyUses += 1 }
        return copy
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
        try reader.submit(requests)
        return started
    }

    /// Reads the hinted experts of the coming layers (nearest layer first) that are neither
    /// resident nor loading, into free slots or slots the policy gives up (never one a hint
    /// names). Hints for `layer` or earlier are stale and dropped.
    private func issueHintedPrefetch(current layer: Int, experts current: [Int]?) throws(ModelError) {
        guard readAhead.hasHints else { return }
        let hints = readAhead.takeHints(after: layer, experts: current)
        let keys = hints.map { l, prediction, experts in
            let importance = fallback == nil ? nil : readAhead.expectedImportance(prediction)
            return experts.map { prefetchKey(layer: l, expert: $0, importance: importance) }
        }
        let named = Set(keys.joined())
        var requests: [ReadRequest] = []
        reading: for key in keys.joined() {
            if slots.slot(of: key) != nil || reader.slot(loading: key) != nil { continue }
            guard let slot = claimSlot(for: key, sparing: named) else { break reading }
            beginLoad(key, into: slot, consumer: nil, requests: &requests)
            readAhead.stage(key)
            stats.prefetchesIssued += 1
        }
        try reader.submit(requests)
    }

    /// The copy of a predicted expert to read ahead: the one the layer will ask for. With
    /// fallback (`importance` given), that is the low-precision copy when the expert is not
    /// resident at full precision and its expected importance is below the threshold.
    private func prefetchKey(layer: Int, expert: Int, importance: [Float]?) -> ExpertKey {
        var key = ExpertKey(layer: layer, expert: expert)
        guard let fallback, let importance, slots.slot(of: key) == nil, reader.slot(loading: key) == nil else { return key }
        // A copy made in memory is never read: ahead of a layer that will fall back to it, it
        // is resident (nothing to read) or missing (the expert is read at full precision).
        if importance[expert] < fallback.threshold && copies == nil { key.precision = fallback.precision }
        return key
    }

    /// Gives `slot` to `key` and starts following its reads (appended to `requests`); the
    /// read holds the slot until it lands, and a `consumer` holds it until computed.
    private func beginLoad(_ key: ExpertKey, into slot: Int, consumer: Int?, requests: inout [ReadRequest]) {
        let offsets = reader.begin(key, into: slot, at: pool.slot(slot), consumer: consumer, requests: &requests)
        slots.reserve(slot, for: key, sliceOffsets: offsets, madeInMemory: false)
        slots.pin(slot)
        if consumer != nil { slots.pin(slot) }
    }

    /// A free slot, the slot of a stale prefetch, or one the policy gives up (not pinned,
    /// not loading, not in `sparing`); nil when there is none.
    private func claimSlot(for key: ExpertKey, sparing: Set<ExpertKey>) -> Int? {
        let slotClass = SlotTable.slotClass(of: key)
        if let slot = slots.takeFreeSlot(ofClass: slotClass) { return slot }
        let isEvictable = { [slots] (k: ExpertKey) -> Bool in
            slots.isEvictable(k, forClass: slotClass) && !sparing.contains(k)
        }
        let stale = readAhead.stalePrefetch(isEvictable: isEvictable)
        guard let victim = stale ?? policy.victim(for: key, isEvictable: isEvictable),
              let slot = slots.slot(of: victim), !slots.isPinned(slot) else { return nil }
        if let pending = copies?.takePending(fromSlot: slot) {
            // The last chance to make this expert's copy: its slot is about to be overwritten.
            makeCopy(of: pending, from: slot)
        }
        slots.vacate(victim, slot: slot)
        if readAhead.unstage(victim) {
            stats.prefetchesWasted += 1
        } else {
            policy.didRemove(victim)
        }
        return slot
    }

    /// Waits for at least one read, takes every completion available, and returns the
    /// positions (of the current request) whose experts are now complete. Prefetches that
    /// land become resident. Throws the first failure of a read the current request
    /// waits for (after the pool is consistent again).
    private func awaitLoads(pinned: inout [Int]) throws(ModelError) -> [Int] {
        // The CPU would idle until the reads land: make a copy meanwhile.
        makeOnePendingCopy()
        let waitStart = ContinuousClock.now
        let completions = try reader.reap(minimum: 1) + reader.reap(minimum: 0)
        stats.stallSeconds += (ContinuousClock.now - waitStart).seconds
        return try land(completions, pinned: &pinned)
    }

    /// Lands the prefetches that arrived since the last look, without waiting: until then
    /// they count as in flight, and a wrong one could not give up its slot. Called when a
    /// layer begins, when no read of its own is outstanding.
    private func landArrivedPrefetches() throws(ModelError) {
        guard reader.pending > 0 else { return }
        var pinned: [Int] = []
        _ = try land(reader.reap(minimum: 0), pinned: &pinned)
    }

    /// Accounts for `completions`: experts whose reads are all done become resident (a
    /// failed one frees its slot). Returns the positions of the current request now complete.
    private func land(_ completions: [ReadCompletion], pinned: inout [Int]) throws(ModelError) -> [Int] {
        reader.noteIdle()
        var arrived: [Int] = []
        var firstFailure: StorageError?
        for c in completions {
            guard let (slot, load) = reader.complete(c) else { continue }
            slots.unpin(slot)  // the read's hold
            if let e = load.failure {
                // The slot holds garbage: free it, the expert stays missing. A failed
                // prefetch is not an error: the expert is read again if it is asked for.
                _ = readAhead.unstage(load.key)
                if load.consumer != nil {
                    slots.unpin(slot)
                    if let i = pinned.firstIndex(of: slot) { pinned.remove(at: i) }
                    firstFailure = firstFailure ?? e
                }
                slots.release(slot)
                continue
            }
            slots.makeResident(load.key, in: slot)
            if !readAhead.isStaged(load.key) { policy.didInsert(load.key) }
            stats.expertsRead += 1
            stats.bytesRead += UInt64(load.bytes)
            if load.key.precision > 0 { stats.lowPrecisionBytesRead += UInt64(load.bytes) }
            if load.key.precision == 0, let copies {
                copies.queue(load.key, in: slot, copyIsResident: slots.slot(of: copies.copy(of: load.key)) != nil)
            }
            if let position = load.consumer { arrived.append(position) }
        }
        if let firstFailure { throw .storage(firstFailure) }
        return arrived
    }

    /// After a failure: waits for every read still in flight so no slot is written behind
    /// the pool's back, and frees the slots whose loads did not complete.
    private func drain(pinned: inout [Int]) {
        for (slot, load) in reader.abandonAll() {
            slots.unpin(slot)
            if load.consumer != nil {
                slots.unpin(slot)
                if let i = pinned.firstIndex(of: slot) { pinned.remove(at: i) }
            }
            _ = readAhead.unstage(load.key)
            slots.release(slot)
        }
    }

    // MARK: Copies made in memory

    /// Makes the oldest pending copy whose expert is still in its slot at full precision.
    func makeOnePendingCopy() {
        guard let copies else { return }
        while let (key, slot) = copies.takeOldest() {
            if makeCopy(of: key, from: slot) {
                stats.copiesMadeWhileWaiting += 1
                return
            }
        }
    }

    /// Quantizes the full-precision expert `key` in `source` into a class-1 slot as its copy,
    /// if it is still there and the copy earns a slot. Returns whether a copy was made.
    @discardableResult
    private func makeCopy(of key: ExpertKey, from source: Int) -> Bool {
        guard let copies, slots.occupant[source] == key, slots.slot(of: key) == source, !reader.isLoading(slot: source) else {
            return false
        }
        let copy = copies.copy(of: key)
        guard slots.slot(of: copy) == nil, copies.admits(copy, slots: slots, policy: policy),
              let slot = claimSlot(for: copy, sparing: []) else { return false }
        let start = ContinuousClock.now
        let offsets = copies.write(key, from: UnsafeRawPointer(pool.slot(source)), sourceOffsets: slots.sliceOffsets[source],
                                   to: pool.slot(slot))
        slots.reserve(slot, for: copy, sliceOffsets: offsets, madeInMemory: true)
        slots.makeResident(copy, in: slot)
        policy.didInsert(copy)
        stats.copiesMade += 1
        stats.copySeconds += (ContinuousClock.now - start).seconds
        return true
    }

    // MARK: Computing

    private func computeGroup(_ positions: [Int], keys: [ExpertKey],
                              compute: ([Int], [ExpertWeights]) throws(ModelError) -> Void, pinned: inout [Int]) throws(ModelError) {
        var weights: [ExpertWeights] = []
        weights.reserveCapacity(positions.count)
        var held: [Int] = []
        for p in positions {
            let key = keys[p]
            let slot = slots.slot(of: key)!
            held.append(slot)
            let s = layout.slices(layer: key.layer, expert: key.expert, precision: key.precision)
            let base = UnsafeRawPointer(pool.slot(slot))
            let offsets = slots.sliceOffsets[slot]
            weights.append(ExpertWeights(
                gate: WeightMatrix(type: s[0].type, rows: s[0].rows, columns: s[0].columns, base: base + offsets[0]),
                up: WeightMatrix(type: s[1].type, rows: s[1].rows, columns: s[1].columns, base: base + offsets[1]),
                down: WeightMatrix(type: s[2].type, rows: s[2].rows, columns: s[2].columns, base: base + offsets[2])))
        }
        try compute(positions, weights)
        // Done with them: unpin, so they may be evicted for the rest of this layer's misses.
        for slot in held {
            slots.unpin(slot)
            if let i = pinned.firstIndex(of: slot) { pinned.remove(at: i) }
        }
    }
}
