/// What a cache replay needs of a run's routing: the model's shape, the bytes one expert
/// of each layer occupies, and the run as a sequence of lookup batches.
///
/// The accounting is the runtime's and the recording engine's: a forward pass is one batch
/// per MoE layer, and inside a batch each distinct expert is one lookup (a repeat by another
/// token of the batch only refreshes it). A prompt evaluated as one pass is one batch per
/// layer; a decoded token (or a step of several sequences decoding together) is one.
public struct CacheTrace: Sendable {
    public struct Batch: Sendable, Equatable {
        public var layer: Int
        /// The distinct experts the batch asked for: in the order of first request (this
        /// runtime's records: the pool is asked once per expert in that order), or of last
        /// use (route_trace files, whose engine refreshes an entry on each repeat).
        public var experts: [Int]
        /// Whether the batch decodes (one token per sequence) rather than evaluates a prompt.
        public var isDecode: Bool
        /// Tokens the batch evaluated at this layer.
        public var tokens: Int
        /// Per expert, whether the recording run found it resident (route_trace files); nil
        /// when the record does not say.
        public var recordedHits: [Bool]?
        /// Per expert, the largest routing weight a token of the batch gave it (what decides
        /// whether a missing expert may fall back to a low-precision copy); empty when the
        /// record holds no weights.
        public var weights: [Float] = []

        public init(layer: Int, experts: [Int], isDecode: Bool, tokens: Int, recordedHits: [Bool]? = nil) {
            self.layer = layer
            self.experts = experts
            self.isDecode = isDecode
            self.tokens = tokens
            self.recordedHits = recordedHits
        }
    }

    /// Where the trace came from (a path) and what kind of file it was.
    public var source: String
    public var format: String
    public var model: String
    public var architecture: String
    public var moeLayers: [Int]
    public var experts: Int
    public var expertsPerToken: Int
    /// Bytes one expert of each MoE layer occupies, by layer index (empty when the record
    /// holds no sizes and none were given: the routing statistics need none).
    public var expertBytes: [Int: Int]
    public var batches: [Batch]
    /// Tokens decoded (each decode batch's tokens counted once, at its first MoE layer).
    public var decodedTokens: Int
    public var promptTokens: Int
    /// The same run token by token.
    public var routing: TokenRouting
    /// Bytes of the weights outside the experts, where the record says (route_trace's
    /// `dense_bytes`, summed over layers).
    public var denseBytes: Int?

    public init(source: String, format: String, model: String, architecture: String, moeLayers: [Int], experts: Int,
                expertsPerToken: Int, expertBytes: [Int: Int], batches: [Batch], decodedTokens: Int, promptTokens: Int,
                routing: TokenRouting? = nil) {
        self.source = source
        self.format = format
        self.model = model
        self.architecture = architecture
        self.moeLayers = moeLayers
        self.experts = experts
        self.expertsPerToken = expertsPerToken
        self.expertBytes = expertBytes
        self.batches = batches
        self.decodedTokens = decodedTokens
        self.promptTokens = promptTokens
        self.routing = routing ?? TokenRouting(moeLayers: moeLayers, expertsPerToken: expertsPerToken)
    }

    /// Bytes of one token's experts over all MoE layers: below this budget a decoding cycle
    /// does not fit, and recency evicts what the next token needs first.
    public var oneTokenCycleBytes: Int {
        moeLayers.reduce(0) { $0 + expertsPerToken * (expertBytes[$1] ?? 0) }
    }
}

/// A trace file that cannot be replayed: each error names the file and, where there is one,
/// the line.
public enum TraceFileError: Error, Equatable, Sendable, CustomStringConvertible {
    case cannotRead(path: String, reason: String)
    case malformed(path: String, line: Int, detail: String)
    case invalid(path: String, detail: String)

    public var description: String {
        switch self {
        case let .cannotRead(path, reason): return "cannot read trace '\(path)': \(reason)"
        case let .malformed(path, line, detail): return "'\(path)' line \(line): \(detail)"
        case let .invalid(path, detail): return "'\(path)': \(detail)"
        }
    }
}

/// Bounds a trace's header must respect before anything is sized from it.
enum TraceLimits {
    static let maxLayers = 4096
    static let maxExperts = 65536
    static let maxExpertBytes = 1 << 40
}
