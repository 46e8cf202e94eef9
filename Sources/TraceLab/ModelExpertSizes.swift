import Experts
import GGUF
import KV
import Models

/// A model's experts as the runtime's pool sees them (`-m MODEL` of `moe trace`): the bytes
/// of one expert per layer, the slot a budget is divided into, and what else the model keeps
/// in memory (the weights outside the experts, its KV per context), for the tuner's split.
public struct ModelExpertSizes: Sendable {
    public var expertBytes: [Int: Int]
    public var expertsPerLayer: Int
    /// The pool's slot size and the budget arithmetic `--expert-memory` goes through.
    public var budget: ExpertBudget
    /// Bytes of every tensor that is not an expert (held in memory while experts stream).
    public var denseBytes: Int
    /// A pack's low-precision copies: each one's name and slot bytes (empty for a plain file).
    public var lowPrecision: [(name: String, slotBytes: Int)]
    /// The read-ahead corrections' maps per prediction distance, taken from the budget.
    public var correctionBytesPerDistance: Int
    public var contextLimit: Int
    private var kvLayer: (layers: Int, keyWidth: Int, valueWidth: Int, contextLength: Int)

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
            let expertTensors = Set(layout.expertTensorNames)
            denseBytes = Int(file.tensors.filter { !expertTensors.contains($0.name) }.reduce(0) { $0 + $1.byteCount })
            lowPrecision = layout.precisions.indices.dropFirst().map {
                (layout.precisions[$0], OffloadedExpertProvider.slotBytes(layout, fileSize: file.fileSize, precision: $0))
            }
            correctionBytesPerDistance = layout.layers.count * GateCorrection.bytes(experts: layout.expertCount, hidden: hp.embeddingLength,
                                                                                    distances: 1)
            contextLimit = DecoderModel.defaultContextLimit
            kvLayer = (hp.blockCount, hp.keyWidth, hp.valueWidth, hp.contextLength)
        } catch let e as TraceFileError {
            throw e
        } catch {
            throw .invalid(path: modelPath, detail: "cannot read the model's experts: \(error)")
        }
    }

    /// The KV pool the runtime reserves for one sequence of `context` positions (the model's
    /// own context up to the default limit when nil), F16 blocks as the default.
    public func kvBytes(context: Int?, sequences: Int = 1, type: KVType = .f16) -> Int {
        let positions = min(context ?? min(kvLayer.contextLength, contextLimit), kvLayer.contextLength)
        let layout = KVLayout(layers: kvLayer.layers, keyWidth: kvLayer.keyWidth, valueWidth: kvLayer.valueWidth, type: type)
        return (layout.blocks(forPositions: positions) + 1) * sequences * layout.blockBytes
    }
}
