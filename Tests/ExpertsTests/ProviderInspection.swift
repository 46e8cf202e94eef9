@testable import Experts

/// What tests look at and do to a running provider, beyond its public face.
extension OffloadedExpertProvider {
    /// The experts and copies resident now, with their slots.
    var residentSlots: [ExpertKey: Int] { slots.resident }

    /// The bytes of resident `key` as computed from: gate, up and down back to back for a
    /// copy made in memory (tests compare them with a pack's bundle).
    func residentBytes(_ key: ExpertKey) -> (bytes: UnsafeRawBufferPointer, madeInMemory: Bool)? {
        guard let slot = slots.slot(of: key) else { return nil }
        let count = layout.slices(layer: key.layer, expert: key.expert, precision: key.precision).reduce(0) { $0 + $1.byteCount }
        return (UnsafeRawBufferPointer(start: pool.slot(slot), count: count), slots.madeInMemory[slot])
    }

    /// Makes every pending copy, to know which copies exist.
    func makePendingCopies() {
        while copies?.hasPending == true { makeOnePendingCopy() }
    }

    /// Gives up every resident expert of `slotClass` not in use, to see what the other class
    /// serves alone.
    func evictAll(slotClass: Int) {
        for slot in pool.slots(ofClass: slotClass) {
            guard let key = slots.occupant[slot], !slots.isPinned(slot), !reader.isLoading(slot: slot) else { continue }
            slots.vacate(key, slot: slot)
            if !readAhead.unstage(key) { policy.didRemove(key) }
            slots.release(slot)
        }
    }
}
