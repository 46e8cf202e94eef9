import Foundation
import Kernels
import Models
import Storage

/// Serves a MoE model's experts from a fixed pool, reading missing ones from the model file
/// on demand.
///
/// For each layer: hits are pinned; every miss that can get a slot (a free one, or one the
/// policy frees) is submitted at once; the hits are computed while those reads run; then
/// each completed expert is computed as it arrives. Misses that found no slot (everything
/// else pinned) wait until a computed group is unpinned, so a selection larger than the
/// pool runs in waves. Nothing pinned is ever evicted, and a failed read leaves the pool
/// consistent (the slot is simply free again).
public final class OffloadedExpertProvider: ExpertProvider {
    public let layout: ExpertLayout
    public let pool: ExpertPool
    public let policy: any ExpertCachePolicy
    public let stats = ExpertStats()
    private let backend: any StorageBackend
    private let fileSize: UInt64

    /// Per slot: the expert it holds (or is loading), and how many current users it has.
    private var occupant: [ExpertKey?]
    private var pins: [Int]
    private var freeSlots: [Int]
    private var slotOf: [ExpertKey: Int] = [:]
    /// Where each matrix of a slot's expert starts, as offsets into the slot.
    private var sliceOffsets: [[Int]]

    /// The reads of one expert being loaded.
    private struct Load {
        var position: Int
        var key: ExpertKey
        var remaining: Int
        var failure: StorageError?
    }
    private var loads: [Int: Load] = [:]   // by slot
    private var readStart: ContinuousClock.Instant?

    /// The smallest pool that works: one token's experts of one layer.
    public static func minimumSlots(_ layout: ExpertLayout) -> Int { max(layout.expertsPerToken, 1) }

    /// Bytes of one slot for `layout` read from a file of `fileSize` bytes.
    public static func slotBytes(_ layout: ExpertLayout, fileSize: UInt64) -> Int {
        var largest = 0
        for layer in layout.layers {
            for e in 0..<layout.expertCount {
                largest = max(largest, ReadPlan(layout.slices(layer: layer, expert: e), fileSize: fileSize).span)
            }
        }
        return largest
    }

    public init(layout: ExpertLayout, pool: ExpertPool, policy: any ExpertCachePolicy, backend: any StorageBackend) throws(StorageError) {
        self.layout = layout
        self.pool = pool
        self.policy = policy
        self.backend = backend
        fileSize = backend.fileSize
        occupant = Array(repeating: nil, count: pool.slotCount)
        pins = Array(repeating: 0, count: pool.slotCount)
        freeSlots = Array((0..<pool.slotCount).reversed())
        sliceOffsets = Array(repeating: [], count: pool.slotCount)
        do {
            try backend.registerBuffers([pool.memory.bytes])
        } catch let e as StorageError {
            throw e
        } catch {
            throw .invalidRequest("registering the expert pool: \(error)")
        }
    }

    public func beginBatch(tokens: Int) { stats.tokens += tokens }

    /// Whether `expert` of `layer` is in the pool now.
    public func isResident(layer: Int, expert: Int) -> Bool { slotOf[ExpertKey(layer: layer, expert: expert)] != nil }
    public var residentCount: Int { slotOf.count }

    public func withExperts(layer: Int, experts: [Int], importance: [Float],
                            compute: ([Int], [ExpertWeights]) throws(ModelError) -> Void) throws(ModelError) {
        var ready: [Int] = []
        var waiting: [Int] = []
        var pinnedSlots: [Int] = []
        for (position, e) in experts.enumerated() {
            let key = ExpertKey(layer: layer, expert: e)
            if let slot = slotOf[key] {
                pins[slot] += 1
                pinnedSlots.append(slot)
                policy.didHit(key)
                stats.hit(layer: layer)
                ready.append(position)
            } else {
                policy.didMiss(key)
                stats.miss(layer: layer)
                waiting.append(position)
            }
        }
        waiting.reverse()  // popped from the end, so loads start in the router's order

        var failure: ModelError?
        do {
            try startLoads(layer: layer, experts: experts, waiting: &waiting, pinned: &pinnedSlots)
            if !ready.isEmpty {
                try computeGroup(ready, layer: layer, experts: experts, compute: compute, pinned: &pinnedSlots)
            }
            while !loads.isEmpty || !waiting.isEmpty {
                if loads.isEmpty {
                    // Only happens when every slot is pinned by this very call, which the
                    // minimum pool size rules out; guard against a hang anyway.
                    try startLoads(layer: layer, experts: experts, waiting: &waiting, pinned: &pinnedSlots)
                    if loads.isEmpty {
                        throw ModelError.storage("the expert pool has no free slot for layer \(layer) (all \(pool.slotCount) in use)")
                    }
                }
                let arrived = try awaitLoads(pinned: &pinnedSlots)
                try startLoads(layer: layer, experts: experts, waiting: &waiting, pinned: &pinnedSlots)
                if !arrived.isEmpty {
                    try computeGroup(arrived, layer: layer, experts: experts, compute: compute, pinned: &pinnedSlots)
                }
            }
        } catch let e as ModelError {
            failure = e
        } catch {
            failure = .storage("\(error)")
        }
        if let failure {
            drain(pinned: &pinnedSlots)
            for slot in pinnedSlots { pins[slot] -= 1 }
            throw failure
        }
    }

    // MARK: Loading

    private func startLoads(layer: Int, experts: [Int], waiting: inout [Int], pinned: inout [Int]) throws(ModelError) {
        var requests: [ReadRequest] = []
        while let position = waiting.last {
            let key = ExpertKey(layer: layer, expert: experts[position])
            guard let slot = claimSlot(for: key) else { break }
            waiting.removeLast()
            let plan = ReadPlan(layout.slices(layer: layer, expert: key.expert), fileSize: fileSize)
            occupant[slot] = key
            pins[slot] += 1
            pinned.append(slot)
            sliceOffsets[slot] = plan.sliceOffsets
            loads[slot] = Load(position: position, key: key, remaining: plan.reads.count)
            for r in plan.reads {
                requests.append(ReadRequest(offset: r.offset, length: r.length, destination: pool.slot(slot) + r.slotOffset,
                                            tag: UInt64(slot)))
            }
        }
        guard !requests.isEmpty else { return }
        if backend.pending == 0 { readStart = ContinuousClock.now }
        do {
            try backend.submit(requests)
        } catch {
            throw .storage("\(backend.path): \(error)")
        }
    }

    /// A free slot, or one the policy gives up; nil when every resident expert is pinned.
    private func claimSlot(for key: ExpertKey) -> Int? {
        if let slot = freeSlots.popLast() { return slot }
        let victim = policy.victim(for: key) { [slotOf, pins] k in
            guard let s = slotOf[k] else { return false }
            return pins[s] == 0
        }
        guard let victim, let slot = slotOf[victim], pins[slot] == 0 else { return nil }
        slotOf[victim] = nil
        occupant[slot] = nil
        policy.didRemove(victim)
        return slot
    }

    /// Waits for at least one read, takes every completion available, and returns the
    /// positions of experts whose reads are all done. Throws the first read failure (after
    /// the pool is consistent again).
    private func awaitLoads(pinned: inout [Int]) throws(ModelError) -> [Int] {
        let waitStart = ContinuousClock.now
        var completions: [ReadCompletion]
        do {
            completions = try backend.reap(minimum: 1)
            completions += try backend.reap(minimum: 0)
        } catch {
            throw .storage("\(backend.path): \(error)")
        }
        let now = ContinuousClock.now
        stats.stallSeconds += (now - waitStart).seconds
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
            if let e = load.failure {
                // The slot holds garbage: free it, the expert stays missing.
                release(slot, pinned: &pinned)
                firstFailure = firstFailure ?? e
                continue
            }
            slotOf[load.key] = slot
            policy.didInsert(load.key)
            stats.expertsRead += 1
            stats.bytesRead += UInt64(layout.slices(layer: load.key.layer, expert: load.key.expert).reduce(0) { $0 + $1.byteCount })
            arrived.append(load.position)
        }
        if let firstFailure { throw .storage(firstFailure.description) }
        return arrived
    }

    /// After a failure: waits for every read still in flight so no slot is written behind
    /// the pool's back, and frees the slots whose loads did not complete.
    private func drain(pinned: inout [Int]) {
        while backend.pending > 0 {
            guard let done = try? backend.reap(minimum: 1), !done.isEmpty else { break }
        }
        readStart = nil
        for slot in loads.keys { release(slot, pinned: &pinned) }
        loads.removeAll()
    }

    /// Empties a slot this call pinned for a load that will not complete.
    private func release(_ slot: Int, pinned: inout [Int]) {
        occupant[slot] = nil
        pins[slot] -= 1
        if let i = pinned.firstIndex(of: slot) { pinned.remove(at: i) }
        freeSlots.append(slot)
    }

    // MARK: Computing

    private func computeGroup(_ positions: [Int], layer: Int, experts: [Int],
                              compute: ([Int], [ExpertWeights]) throws(ModelError) -> Void, pinned: inout [Int]) throws(ModelError) {
        var weights: [ExpertWeights] = []
        weights.reserveCapacity(positions.count)
        var slots: [Int] = []
        for p in positions {
            let slot = slotOf[ExpertKey(layer: layer, expert: experts[p])]!
            slots.append(slot)
            let s = layout.slices(layer: layer, expert: experts[p])
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
            reads.append(Read(offset: start, length: Int(min(alignedEnd, max(fileSize, end)) - start), slotOffset: span))
            for k in i..<j { sliceOffsets.append(span + Int(slices[k].fileOffset - start)) }
            span += Int(alignedEnd - start)
            i = j
        }
    }
}

extension Duration {
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
