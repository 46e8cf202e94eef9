import Testing
@testable import Experts

@Suite("Expert budget")
struct ExpertBudgetTests {
    static let plain = ExpertBudget(slotBytes: 1000, lowSlotBytes: nil, minimumSlots: 4, expertCount: 48)
    static let withCopies = ExpertBudget(slotBytes: 1000, lowSlotBytes: 300, minimumSlots: 4, expertCount: 48)

    @Test("the minimum is a token's experts of one layer, at each precision")
    func minimum() {
        #expect(Self.plain.minimum == 4000)
        #expect(Self.withCopies.minimum == 4 * 1300)
    }

    @Test("a budget given is taken as it is, and refused below the minimum without asking for memory")
    func requested() throws {
        #expect(try Self.plain.budget(requested: 4000) { Issue.record("asked for memory"); return 0 } == 4000)
        #expect(throws: ExpertError.budgetTooSmall(budget: 3999, minimum: 4000, expertBytes: 1000)) {
            _ = try Self.plain.budget(requested: 3999) { 1 << 30 }
        }
        #expect(throws: ExpertError.budgetTooSmall(budget: 5000, minimum: 5200, expertBytes: 1000, lowCopyBytes: 300)) {
            _ = try Self.withCopies.budget(requested: 5000) { 1 << 30 }
        }
    }

    @Test("without a budget, what is available; too little (or less than nothing) is refused")
    func available() throws {
        #expect(try Self.plain.budget(requested: nil) { 123_456 } == 123_456)
        #expect(throws: ExpertError.notEnoughMemory(available: 3000, minimum: 4000)) {
            _ = try Self.plain.budget(requested: nil) { 3000 }
        }
        #expect(throws: ExpertError.notEnoughMemory(available: 0, minimum: 4000)) {
            _ = try Self.plain.budget(requested: nil) { -5 }
        }
    }

    @Test("the corrections' maps come out of the budget only while the minimum stays")
    func taking() {
        #expect(Self.plain.taking(500, from: 4500) == 4000)
        #expect(Self.plain.taking(501, from: 4500) == nil)
        #expect(Self.plain.taking(0, from: 4000) == 4000)
    }

    @Test("one class: as many slots as the budget holds, never more than there are experts")
    func oneClass() {
        let c = Self.plain.slotClasses(budget: 10_999, fallbackShare: 0.4)
        #expect(c.count == 1 && c[0].bytes == 1000 && c[0].count == 10)
        #expect(Self.plain.slotClasses(budget: 1 << 30, fallbackShare: 0.4)[0].count == 48)
    }

    @Test("with fallback: the share for copies, the rest for full precision, each at least the minimum and at most every expert")
    func twoClasses() {
        // 40% of 20000 holds 26 copies; the 12200 left hold 12 experts, and the 8000 left then 26 copies.
        var c = Self.withCopies.slotClasses(budget: 20_000, fallbackShare: 0.4)
        #expect(c.map(\.bytes) == [1000, 300] && c.map(\.count) == [12, 26])
        // No share: copies take their minimum, full precision the rest, and copies any remainder.
        c = Self.withCopies.slotClasses(budget: 20_000, fallbackShare: 0)
        #expect(c.map(\.count) == [18, 6])
        // A share above 1 counts as 1: full precision keeps its minimum.
        c = Self.withCopies.slotClasses(budget: 20_000, fallbackShare: 3)
        #expect(c.map(\.count) == [4, 48])
        // Room for everything: every expert in each class.
        c = Self.withCopies.slotClasses(budget: 1 << 30, fallbackShare: 0.4)
        #expect(c.map(\.count) == [48, 48])
    }
}
