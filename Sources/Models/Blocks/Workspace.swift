/// Scratch memory for one forward pass, grown on demand and reused, so steady-state
/// decoding allocates nothing.
public final class Workspace: @unchecked Sendable {
    private var buffers: [UnsafeMutableBufferPointer<Float>] = []

    public init() {}

    deinit { for b in buffers { b.deallocate() } }

    /// Buffer number `slot`, at least `count` floats long. A slot's previous contents are
    /// lost when it grows; distinct slots never alias.
    public func floats(_ slot: Int, count: Int) -> UnsafeMutablePointer<Float> {
        while buffers.count <= slot { buffers.append(.allocate(capacity: 0)) }
        if buffers[slot].count < count {
            buffers[slot].deallocate()
            // Round up so slowly growing requests don't reallocate every time.
            buffers[slot] = .allocate(capacity: max(count, buffers[slot].count * 3 / 2) + 64)
        }
        return buffers[slot].baseAddress!
    }
}

/// Fixed slot numbers, one per named buffer, so blocks never hand each other aliased memory.
enum Slot {
    static let hidden = 0, normed = 1, ropeTable = 2
    static let query = 3, key = 4, value = 5, attentionOut = 6, scores = 7, blockOut = 8
    static let routerLogits = 9, expertInput = 10, expertGate = 11, expertUp = 12, expertDown = 13
    static let ffnGate = 14, ffnUp = 15, sharedGate = 16, logits = 17, lastHidden = 18, sharedOut = 19
    static let predictionInput = 20, predictionLogits = 21
}
