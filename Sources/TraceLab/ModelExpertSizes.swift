import Experts
import GGUF
import Models

/// A model's experts as the runtime's pool sees them (`-m MODEL` of `moe trace`): the bytes
/// of one expert per layer, and the slot a budget is divided into.
public struct ModelExpertSizes: Sendable {
    public var expertBytes: [Int: Int]
    public var expertsPerLayer: Int
    /// The pool's slot size and the budget arithmetic `--expert-memory` goes through.
    public var budget: ExpertBudget

    public init(modelPath: String) throws(TraceFileError) {
        do {
            let file = try GGUFFile.open(path: modelPath)
            let hp = try HyperParameters(metadata: file.metadata)
            let layout = try ExpertLayout(file: file, hyperParameters: hp)
            var bytes: [Int: Int] = [:]
            for layer in layout.layers {
                bytes[layer] = layout.slices(layer: layer, expert: 0).reduce(0) { $0 + $1.byteCount }
            }
            expertBytes = bytes
            expertsPerLayer = layout.expertCount
            budget = ExpertBudget(slotBytes: OffloadedExpertProvider.slotBytes(layout, fileSize: file.fileSize), lowSlotBytes: nil,
                                  minimumSlots: OffloadedExpertProvider.minimumSlots(layout),
                                  expertCount: layout.layers.count * layout.expertCount)
        } catch let e as TraceFileError {
            throw e
        } catch {
            throw .invalid(path: modelPath, detail: "cannot read the model's experts: \(error)")
        }
    }

    /// The slots `--expert-memory bytes` gives the pool (no fallback, no read-ahead maps).
    public func slots(budget bytes: Int) -> Int {
        budget.slotClasses(budget: bytes, fallbackShare: 0)[0].count
    }
}
