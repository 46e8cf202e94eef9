/// How the memory for experts is found and divided: the budget (given, or what the memory
/// available leaves), the part the read-ahead corrections' maps take, and the pool's slots
/// of each class.
public struct ExpertBudget: Sendable, Equatable {
    /// Bytes of a full-precision slot, and of a low-precision copy's slot with fallback.
    public let slotBytes: Int
    public let lowSlotBytes: Int?
    /// Slots of each class the pool needs at least: one token's experts of one layer.
    public let minimumSlots: Int
    /// Experts of the model (every MoE layer's): no class needs more slots.
    public let expertCount: Int

    public init(slotBytes: Int, lowSlotBytes: Int?, minimumSlots: Int, expertCount: Int) {
        self.slotBytes = slotBytes
        self.lowSlotBytes = lowSlotBytes
        self.minimumSlots = minimumSlots
        self.expertCount = expertCount
    }

    /// The same budget with a class of low-precision copies of `slotBytes` each.
    public func withCopies(slotBytes copy: Int) -> ExpertBudget {
        ExpertBudget(slotBytes: slotBytes, lowSlotBytes: copy, minimumSlots: minimumSlots, expertCount: expertCount)
    }

    /// The smallest budget that works: the minimum slots of each class.
    public var minimum: Int { minimumSlots * (slotBytes + (lowSlotBytes ?? 0)) }

    /// The budget: `requested`, or else what `available` says is left for experts; either
    /// must hold the minimum.
    public func budget(requested: Int?, available: () -> Int) throws(ExpertError) -> Int {
        if let requested {
            guard requested >= minimum else {
                throw .budgetTooSmall(budget: requested, minimum: minimum, expertBytes: slotBytes, lowCopyBytes: lowSlotBytes ?? 0)
            }
            return requested
        }
        let left = available()
        guard left >= minimum else { throw .notEnoughMemory(available: max(left, 0), minimum: minimum) }
        return left
    }

    /// What is left of `budget` once `bytes` are taken from it, nil when that would leave
    /// less than the minimum (the experts come first).
    public func taking(_ bytes: Int, from budget: Int) -> Int? {
        budget - bytes >= minimum ? budget - bytes : nil
    }

    /// The pool's classes of slots for `budget`: full-precision slots only, or with fallback
    /// a `fallbackShare` of the budget (clamped to 0...1) for low-precision copies; each
    /// class at least the minimum and at most every expert.
    public func slotClasses(budget: Int, fallbackShare: Double) -> [(bytes: Int, count: Int)] {
        guard let lowSlotBytes else { return [(slotBytes, min(budget / slotBytes, expertCount))] }
        let share = min(max(fallbackShare, 0), 1)
        var low = max(Int(Double(budget) * share) / lowSlotBytes, minimumSlots)
        var native = max((budget - low * lowSlotBytes) / slotBytes, minimumSlots)
        native = min(native, expertCount)
        low = min(max((budget - native * slotBytes) / lowSlotBytes, minimumSlots), expertCount)
        return [(slotBytes, native), (lowSlotBytes, low)]
    }
}
