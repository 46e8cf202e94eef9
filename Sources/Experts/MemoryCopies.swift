import Kernels

/// Low-precision copies made in memory, for a fallback type the file does not hold: which
/// experts read at full precision still wait for their copy, which copies earn a slot, and
/// the quantization itself.
///
/// A copy is made while the provider waits for reads (off the critical path) or, failing
/// that, just before its expert's slot is reused. It earns a class-1 slot if one is free or
/// its expert has been selected more often than the copy the policy would give up (Fate's
/// popularity-aware choice).
final class MemoryCopies {
    /// The copies' precision (an index into the layout's precisions).
    let precision: Int
    private let layout: ExpertLayout
    /// Experts read at full precision whose copies are still to be made, oldest first, with
    /// their slots.
    private var pending: [(key: ExpertKey, slot: Int)] = []
    /// Selections of each expert (keyed at precision 0).
    private var selections: [ExpertKey: Int] = [:]
    /// F32 row for expanding a native matrix.
    private let row: UnsafeMutableBufferPointer<Float>

    init(layout: ExpertLayout, precision: Int) {
        self.layout = layout
        self.precision = precision
        let widest = layout.layers.flatMap { layout.slices(layer: $0, expert: 0) }.map(\.columns).max() ?? 0
        row = .allocate(capacity: widest)
    }

    deinit { row.deallocate() }

    /// The copy of full-precision `key`.
    @inline(__always)
    func copy(of key: ExpertKey) -> ExpertKey { ExpertKey(layer: key.layer, expert: key.expert, precision: precision) }

    /// A layer selected `key` (at precision 0).
    @inline(__always)
    func countSelection(_ key: ExpertKey) { selections[key, default: 0] += 1 }

    /// Queues the copy of `key`, just read into `slot`, unless the copy is resident or queued.
    func queue(_ key: ExpertKey, in slot: Int, copyIsResident: Bool) {
        guard !copyIsResident, !pending.contains(where: { $0.key == key }) else { return }
        pending.append((key, slot))
    }

    var hasPending: Bool { !pending.isEmpty }

    /// The oldest queued copy, taken off the queue.
    func takeOldest() -> (key: ExpertKey, slot: Int)? { pending.isEmpty ? nil : pending.removeFirst() }

    /// The expert queued for a copy from `slot`, taken off the queue (its slot is about to
    /// be reused: the last chance to make it).
    @inline(__always)
    func takePending(fromSlot slot: Int) -> ExpertKey? {
        guard let i = pending.firstIndex(where: { $0.slot == slot }) else { return nil }
        return pending.remove(at: i).key
    }

    /// Whether `copy` earns a class-1 slot: one is free, or its expert has been selected more
    /// often than the copy `policy` would give up (ties keep the resident one).
    func admits(_ copy: ExpertKey, slots: SlotTable, policy: any ExpertCachePolicy) -> Bool {
        if slots.hasFreeSlot(ofClass: 1) { return true }
        let victim = policy.victim(for: copy) { k in
            guard k.precision > 0, let s = slots.slot(of: k) else { return false }
            return !slots.isPinned(s)
        }
        guard let victim else { return false }
        let popularity = { (k: ExpertKey) in self.selections[ExpertKey(layer: k.layer, expert: k.expert)] ?? 0 }
        return popularity(copy) > popularity(victim)
    }

    /// Writes the copy of full-precision `key`, whose matrices start at `sourceOffsets` in
    /// `source`, into `target`; returns where the copy's matrices start there. The bytes are
    /// what `moe pack` writes for that type: each native row expanded to F32 and quantized
    /// (or copied when already of the type).
    func write(_ key: ExpertKey, from source: UnsafeRawPointer, sourceOffsets: [Int], to target: UnsafeMutableRawPointer) -> [Int] {
        let native = layout.slices(layer: key.layer, expert: key.expert)
        let copied = layout.slices(layer: key.layer, expert: key.expert, precision: precision)
        for (k, (n, t)) in zip(native, copied).enumerated() {
            let input = source + sourceOffsets[k], output = target + Int(t.fileOffset)
            guard n.type != t.type else {
                output.copyMemory(from: input, byteCount: n.byteCount)
                continue
            }
            let inputRow = n.type.byteCount(rows: 1, columns: n.columns)
            let outputRow = t.type.byteCount(rows: 1, columns: t.columns)
            for r in 0..<n.rows {
                Dequantize.row(n.type, from: input + r * inputRow, to: row.baseAddress!, count: n.columns)
                Quantize.row(t.type, from: row.baseAddress!, to: output + r * outputRow, count: t.columns)
            }
        }
        return copied.map { Int($0.fileOffset) }
    }
}
