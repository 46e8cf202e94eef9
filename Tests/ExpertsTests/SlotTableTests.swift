import Testing
@testable import Experts

@Suite("Slot table")
struct SlotTableTests {
    /// Three full-precision slots (0-2) and two for copies (3-4).
    static func table() throws -> SlotTable {
        SlotTable(pool: try ExpertPool(classes: [(4096, 3), (4096, 2)], numaNode: nil))
    }

    @Test("free slots are taken lowest first, from the key's own class")
    func freeSlots() throws {
        let t = try Self.table()
        #expect(t.slotClass == [0, 0, 0, 1, 1])
        #expect(SlotTable.slotClass(of: ExpertKey(layer: 0, expert: 0)) == 0)
        #expect(SlotTable.slotClass(of: ExpertKey(layer: 0, expert: 0, precision: 2)) == 1)
        #expect([t.takeFreeSlot(ofClass: 0), t.takeFreeSlot(ofClass: 0), t.takeFreeSlot(ofClass: 0)] == [0, 1, 2])
        #expect(t.takeFreeSlot(ofClass: 0) == nil && !t.hasFreeSlot(ofClass: 0))
        #expect(t.takeFreeSlot(ofClass: 1) == 3 && t.hasFreeSlot(ofClass: 1))
        t.release(1)
        #expect(t.takeFreeSlot(ofClass: 0) == 1)
    }

    @Test("a reserved slot is resident only once complete; held slots are not evictable; a vacated slot stays taken")
    func lifecycle() throws {
        let t = try Self.table()
        let key = ExpertKey(layer: 2, expert: 5)
        let slot = try #require(t.takeFreeSlot(ofClass: 0))
        t.reserve(slot, for: key, sliceOffsets: [0, 100, 200], madeInMemory: false)
        #expect(t.occupant[slot] == key && t.slot(of: key) == nil && t.residentCount == 0)
        t.makeResident(key, in: slot)
        #expect(t.slot(of: key) == slot && t.resident == [key: slot] && t.sliceOffsets[slot] == [0, 100, 200])
        #expect(t.isEvictable(key, forClass: 0) && !t.isEvictable(key, forClass: 1))
        t.pin(slot)
        t.pin(slot)
        t.unpin(slot)
        #expect(t.isPinned(slot) && !t.isEvictable(key, forClass: 0))
        t.unpin(slot)
        #expect(!t.isPinned(slot) && t.isEvictable(key, forClass: 0))
        t.vacate(key, slot: slot)
        #expect(t.slot(of: key) == nil && t.occupant[slot] == nil && t.residentCount == 0)
        // Vacated, not freed: the two other slots are the only free ones.
        #expect(t.takeFreeSlot(ofClass: 0) != slot && t.takeFreeSlot(ofClass: 0) != slot && t.takeFreeSlot(ofClass: 0) == nil)
        #expect(!t.isEvictable(ExpertKey(layer: 9, expert: 9), forClass: 0), "an expert not resident is not evictable")
    }
}
