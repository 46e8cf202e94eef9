import Foundation
import Models
import Storage

/// Reads experts from the model file into pool slots: turns an expert into read requests
/// (`ReadPlan`), follows each load until all its pieces have landed, measures how long the
/// disk is busy, and refuses to go on once the file changed under the running model.
/// It knows slots by number only; what they hold is the `SlotTable`'s business.
final class ExpertReader {
    /// The reads of one expert being loaded into a slot.
    struct Load {
        var key: ExpertKey
        var remaining: Int
        var failure: StorageError?
        /// The position in the current layer's request that waits for it; nil for a
        /// prefetch nobody has asked for yet.
        var consumer: Int?
        var bytes: Int
    }

    let backend: any StorageBackend
    private let layout: ExpertLayout
    private let fileSize: UInt64
    private let stats: ExpertStats
    private var loads: [Int: Load] = [:]   // by slot
    private var loadingSlot: [ExpertKey: Int] = [:]
    private var readStart: ContinuousClock.Instant?
    /// The file as it was when the model loaded. Experts read from a file rewritten since
    /// would not match the weights already in memory, so a change is an error.
    private let loadedVersion: FileVersion?
    /// Whether this forward pass has checked the file's version yet.
    private(set) var versionChecked = false

    /// Registers `pool`'s memory with `backend` (fixed buffers for io_uring).
    init(layout: ExpertLayout, backend: any StorageBackend, pool: ExpertPool, stats: ExpertStats) throws(StorageError) {
        self.layout = layout
        self.backend = backend
        self.stats = stats
        fileSize = backend.fileSize
        loadedVersion = backend.currentVersion()
        do {
            try backend.registerBuffers([pool.memory.bytes])
        } catch let e as StorageError {
            throw e
        } catch {
            throw .invalidRequest("registering the expert pool: \(error)")
        }
    }

    /// Reads not yet reaped (pieces of loads, of any layer).
    var pending: Int { backend.pending }
    /// Experts whose reads are in flight.
    var loadCount: Int { loads.count }

    @inline(__always)
    func slot(loading key: ExpertKey) -> Int? { loadingSlot[key] }

    @inline(__always)
    func isLoading(slot: Int) -> Bool { loads[slot] != nil }

    /// The current request's `position` waits for the load in flight into `slot`.
    func assign(consumer position: Int, toLoadIn slot: Int) { loads[slot]!.consumer = position }

    /// A forward pass begins: check the file again before its first read.
    func beginPass() { versionChecked = false }

    func checkFileVersion() throws(ModelError) {
        versionChecked = true
        guard let before = loadedVersion, let now = backend.currentVersion(), now != before else { return }
        throw .experts(ExpertError.fileChangedWhileRunning(path: backend.path, bytesWhenLoaded: before.size, bytesNow: now.size))
    }

    /// Starts following the load of `key` into `slot` (whose memory starts at `base`) and
    /// appends its reads to `requests`; returns where each matrix will start in the slot.
    func begin(_ key: ExpertKey, into slot: Int, at base: UnsafeMutableRawPointer, consumer: Int?,
               requests: inout [ReadRequest]) -> [Int] {
        precondition(layout.isInFile(precision: key.precision), "\(key) is made in memory, not read")
        let slices = layout.slices(layer: key.layer, expert: key.expert, precision: key.precision)
        let plan = ReadPlan(slices, fileSize: fileSize)
        let bytes = slices.reduce(0) { $0 + $1.byteCount }
        loads[slot] = Load(key: key, remaining: plan.reads.count, consumer: consumer, bytes: bytes)
        loadingSlot[key] = slot
        for r in plan.reads {
            requests.append(ReadRequest(offset: r.offset, length: r.length, destination: base + r.slotOffset, tag: UInt64(slot)))
        }
        return plan.sliceOffsets
    }

    func submit(_ requests: [ReadRequest]) throws(ModelError) {
        guard !requests.isEmpty else { return }
        if backend.pending == 0 { readStart = ContinuousClock.now }
        do {
            try backend.submit(requests)
        } catch {
            throw .storageFailure(error, path: backend.path)
        }
    }

    /// The backend's completions (waiting for at least `minimum`), its errors as the model's.
    func reap(minimum: Int) throws(ModelError) -> [ReadCompletion] {
        do {
            return try backend.reap(minimum: minimum)
        } catch {
            throw .storageFailure(error, path: backend.path)
        }
    }

    /// Before completions are accounted for: once no read is outstanding, the disk's busy
    /// time since the first of them goes into the statistics.
    func noteIdle() {
        if backend.pending == 0, let start = readStart {
            stats.readBusySeconds += (ContinuousClock.now - start).seconds
            readStart = nil
        }
    }

    /// Accounts for one completed read; returns its load when that was the load's last piece
    /// (successful unless `failure` is set), which is then no longer followed.
    @inline(__always)
    func complete(_ c: ReadCompletion) -> (slot: Int, load: Load)? {
        let slot = Int(c.tag)
        guard var load = loads[slot] else { return nil }
        load.remaining -= 1
        if let e = c.error, load.failure == nil { load.failure = e }
        if load.remaining > 0 {
            loads[slot] = load
            return nil
        }
        loads[slot] = nil
        loadingSlot[load.key] = nil
        return (slot, load)
    }

    /// After a failure: waits for every read still in flight so no slot is written behind
    /// the pool's back, and returns the loads that did not complete (no longer followed).
    func abandonAll() -> [Int: Load] {
        while backend.pending > 0 {
            guard let done = try? backend.reap(minimum: 1), !done.isEmpty else { break }
        }
        readStart = nil
        let abandoned = loads
        loads.removeAll()
        loadingSlot.removeAll()
        return abandoned
    }
}
