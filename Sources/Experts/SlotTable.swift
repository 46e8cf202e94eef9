/// What each slot of an expert pool holds: the expert in it (or being read into it), the
/// holds that keep it in place, where its matrices start, and which slots of each class are
/// free. Bookkeeping only: it never reads, evicts on its own or asks a policy.
///
/// A slot is free, reserved (an occupant whose bytes are not complete yet: a read in flight),
/// or resident (`slot(of:)` finds it). A held slot (`isPinned`) is never given up.
final class SlotTable {
    /// Per slot: the expert it holds or is loading.
    private(set) var occupant: [ExpertKey?]
    /// Per slot: holds keeping it in place (a computation using it, a read in flight into it).
    private(set) var pins: [Int]
    /// Per slot: where each matrix of its expert starts, as offsets into the slot.
    private(set) var sliceOffsets: [[Int]]
    /// Per slot: whether it holds a copy made in memory (not read).
    private(set) var madeInMemory: [Bool]
    /// Per slot: its class (0: full precision, 1: low-precision copies).
    let slotClass: [Int]
    /// Free slots of each class; the lowest numbered is taken first.
    private var free: [[Int]]
    private var slotOf: [ExpertKey: Int] = [:]

    init(pool: ExpertPool) {
        let count = pool.slotCount
        occupant = Array(repeating: nil, count: count)
        pins = Array(repeating: 0, count: count)
        sliceOffsets = Array(repeating: [], count: count)
        madeInMemory = Array(repeating: false, count: count)
        slotClass = (0..<count).map(pool.slotClass)
        free = pool.classCounts.indices.map { Array(pool.slots(ofClass: $0).reversed()) }
    }

    /// The class of slot a key needs: its precision's.
    @inline(__always)
    static func slotClass(of key: ExpertKey) -> Int { key.precision == 0 ? 0 : 1 }

    /// The slot `key` is resident in.
    @inline(__always)
    func slot(of key: ExpertKey) -> Int? { slotOf[key] }

    var residentCount: Int { slotOf.count }
    /// Every resident expert with its slot.
    var resident: [ExpertKey: Int] { slotOf }

    @inline(__always)
    func isPinned(_ slot: Int) -> Bool { pins[slot] != 0 }

    @inline(__always)
    func pin(_ slot: Int) { pins[slot] += 1 }

    @inline(__always)
    func unpin(_ slot: Int) { pins[slot] -= 1 }

    func hasFreeSlot(ofClass c: Int) -> Bool { !free[c].isEmpty }

    /// Takes a free slot of class `c`, nil when there is none.
    @inline(__always)
    func takeFreeSlot(ofClass c: Int) -> Int? { free[c].popLast() }

    /// Whether resident `key` could be given up for a key of class `c`: not held, same class.
    @inline(__always)
    func isEvictable(_ key: ExpertKey, forClass c: Int) -> Bool {
        guard let s = slotOf[key] else { return false }
        return pins[s] == 0 && Self.slotClass(of: key) == c
    }

    /// Gives `slot` to `key`, whose bytes are about to be written there at `offsets`.
    func reserve(_ slot: Int, for key: ExpertKey, sliceOffsets offsets: [Int], madeInMemory made: Bool) {
        occupant[slot] = key
        sliceOffsets[slot] = offsets
        madeInMemory[slot] = made
    }

    /// `key`'s bytes in its reserved slot are complete: it is resident.
    func makeResident(_ key: ExpertKey, in slot: Int) { slotOf[key] = slot }

    /// Takes resident `key` out of its slot, which stays with the caller (to be reused).
    func vacate(_ key: ExpertKey, slot: Int) {
        slotOf[key] = nil
        occupant[slot] = nil
    }

    /// Empties `slot` (its contents are of no use) and returns it to the free slots.
    func release(_ slot: Int) {
        occupant[slot] = nil
        free[slotClass[slot]].append(slot)
    }
}
