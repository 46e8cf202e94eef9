import Experts
import KV
import Storage

/// Everything a front end decides about the runtime it drives: which model, on which CPUs
/// and threads, read through which backend, with which experts in memory and how they are
/// read, what KV blocks and context, what is recorded, and the sampling defaults. A front
/// end parses its own input (flags, a request, a config file) into this value; `Runtime`
/// assembles the rest, the same way for every front end.
public struct RuntimeConfiguration: Sendable {
    /// The GGUF file (plain or a pack).
    public var modelPath: String
    /// Compute threads (nil: the cores this process may use).
    public var threads: Int?
    /// CPUs to compute on (nil: all this process may use).
    public var cpus: [Int]?
    public var ioBackend: StorageBackendPreference = .automatic
    /// Expert offloading: budget, policy, read-ahead, precision fallback, NUMA node.
    /// `Runtime` fills in what the KV settings below imply (context, KV type and memory,
    /// sequences) before it loads.
    public var offload = OffloadOptions()
    /// The KV block type (nil: F16, or a resumed session's own type).
    public var kvType: KVType?
    /// The KV pool's size in bytes (nil: sized for the context and the sequences).
    public var kvMemory: Int?
    /// Positions each sequence holds (nil: `DecoderModel.contextLength(asked:)`'s default).
    public var contextLength: Int?
    /// Sequences that decode together (`BatchGenerator`): the default KV pool holds this
    /// many contexts, and the `auto` expert policy weighs it.
    public var sequences = 1
    /// A routing record (JSON Lines) of every token evaluated; nil: none.
    public var recordRouting: String?
    /// Report the figures of the runtime as it is built (the KV pool line) and run
    /// (expert statistics); also measures the disk at start.
    public var statistics = false
    /// Sampling defaults of this runtime's generations.
    public var sampling = SamplingParameters()

    public init(modelPath: String) {
        self.modelPath = modelPath
    }

    /// Whether any KV setting was given (then building a session reports its figures).
    public var kvIsGiven: Bool { kvType != nil || kvMemory != nil }
}
