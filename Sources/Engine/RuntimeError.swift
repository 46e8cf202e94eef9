import Experts
import Host
import KV
import Models
import Trace

/// Why a runtime could not be built or could not go on. Each case carries the error it
/// comes from, so a front end can tell them apart; `description` is the one line a user
/// reads, naming the setting to change where one would help (settings are named by their
/// command-line flags, which every front end shares).
public enum RuntimeError: Error, CustomStringConvertible {
    /// Loading or running the model.
    case model(ModelError)
    /// `--cpus` could not be applied.
    case placement(HostError)
    /// The routing record could not be opened or written.
    case recording(RoutingRecordError)
    /// The KV block type does not fit the model's heads.
    case kvTypeDoesNotFit(KVType, KVError)
    /// The KV memory given holds fewer positions than the context.
    case kvMemoryTooSmall(layout: KVLayout, memory: Int, context: Int)
    /// The KV pool could not be made from the memory given.
    case kvMemory(KVError)
    /// A step found the KV pool full: what the sequences come to need.
    case kvExhausted(KVError, sequences: Int, positionsEach: Int, layout: KVLayout)
    /// A benchmark's prompt or decode is longer than the context.
    case benchmarkExceedsContext(tokens: Int, capacity: Int)
    /// A measurement of this machine (`DecodeCost`) found nothing to measure.
    case nothingToMeasure(String)

    public var description: String {
        switch self {
        case let .model(e): return e.description
        case let .placement(e): return e.description
        case let .recording(e): return e.description
        case let .kvTypeDoesNotFit(type, e): return "--kv-type \(type.rawValue): \(e.description)"
        case let .kvMemoryTooSmall(layout, memory, context):
            let fitting = layout.positions(fittingIn: memory)
            return "--kv-memory \(formatBytes(memory)) holds \(fitting) positions of this model in \(layout.type.rawValue) "
                + "(\(layout.bytesPerPosition) bytes per position, blocks of \(layout.blockSize) positions of \(formatBytes(layout.blockBytes))), "
                + "but the context asked for is \(context) positions; give --kv-memory \(formatBytes(layout.bytes(forPositions: context))) "
                + "or more" + (fitting > 0 ? ", or --ctx \(fitting) or less" : "")
        case let .kvMemory(e): return "--kv-memory: \(e)"
        case let .kvExhausted(e, sequences, positionsEach, layout):
            let needed = layout.bytes(forPositions: positionsEach) * sequences
            return "\(e.description); \(sequences) sequences of up to \(positionsEach) positions need up to "
                + "\(formatBytes(needed)) of KV blocks: give --kv-memory \(formatBytes(needed)) or more, or fewer sequences or tokens"
        case let .benchmarkExceedsContext(tokens, capacity):
            return "context overflow: \(tokens) tokens, the context holds \(capacity)"
        case let .nothingToMeasure(detail): return detail
        }
    }
}
