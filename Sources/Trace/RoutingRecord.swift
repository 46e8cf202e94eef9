import Models

/// # Routing records (`moe-routing`, version 1)
///
/// What `--record-routing FILE` writes: how a MoE model routed every token it evaluated, and
/// what the cross-layer gate predicted, for later study (`moe trace ...`). JSON Lines, UTF-8,
/// every line one JSON object ending in `\n`.
///
/// **Line 1, the header:**
///
/// ```json
/// {"format":"moe-routing","version":1,"model":"models/moe-default.q8_0.gguf",
///  "architecture":"qwen3moe","layers":6,"moe_layers":[0,1,2,3,4,5],"experts":8,"experts_per_token":2}
/// ```
///
/// - `format`: always `"moe-routing"`; `version`: 1 (a reader refuses other versions);
/// - `model`: the model file as the command was given it; `architecture`: its
///   `general.architecture`; `layers`: transformer blocks in all;
/// - `moe_layers`: the blocks whose feed-forward is routed, ascending;
/// - `experts`: routed experts per MoE layer; `experts_per_token`: the k of the router's top k.
///
/// **Every other line: one token at one MoE layer.**
///
/// ```json
/// {"batch":3,"pos":17,"token":412,"layer":2,"experts":[5,1],"weights":[0.7109375,0.2890625],
///  "predicted":[5,6],"predicted_probs":[0.01,0.2,0.003,0.02,0.1,0.6,0.06,0.007]}
/// ```
///
/// - `batch`: the forward pass, counted from 0 in the order they ran (a prompt is one pass
///   of many tokens, or several of at most 512; each decoded token is a pass of its own);
/// - `pos`: the token's position in its sequence (`pos` going down means the context was
///   rewound: a new perplexity chunk, a chat turn that re-evaluates, a new bench run);
/// - `token`: the token id; `layer`: the block index (one of `moe_layers`);
/// - `experts`: the k experts the router chose, in the router's order (most probable
///   first), and `weights`: the weights their outputs were summed with (after the
///   architecture's renormalisation and scaling), in the same order;
/// - `predicted`, `predicted_probs`: the cross-layer gate (Fate) for this layer: this
///   layer's feed-forward norm and router applied to the previous block's hidden state
///   (after that block's attention, before its feed-forward). `predicted` is that
///   router's top k (most probable first, ties to the lower id), `predicted_probs` its
///   softmax over all experts, indexed by expert id. Both are absent when the previous
///   block is not a MoE layer (always on the first MoE layer).
///
/// Lines come batch by batch; within a batch token by token (ascending `pos`); within a
/// token layer by layer (ascending), so a token's path through the layers is contiguous.
/// Numbers are written in the shortest form that reads back to the same `Float`; a
/// non-finite value (a broken model) is written as `null`. A file whose last line lacks its
/// `\n` was cut short (the run was killed): readers report it.
///
/// One object per token per layer (rather than per token with every layer) keeps every
/// line the same flat row, which `jq`, `grep '"layer":3,'` and data-frame readers take
/// as it is, and the gate's fields are simply absent where there is no prediction.
public enum RoutingRecordFormat {
    public static let name = "moe-routing"
    public static let version = 1
}

/// Line 1 of a routing record.
public struct RoutingRecordHeader: Sendable, Equatable, Codable {
    public var format: String = RoutingRecordFormat.name
    public var version: Int = RoutingRecordFormat.version
    public var model: String
    public var architecture: String
    public var layers: Int
    public var moeLayers: [Int]
    public var experts: Int
    public var expertsPerToken: Int

    public init(model: String, architecture: String, layers: Int, moeLayers: [Int], experts: Int, expertsPerToken: Int) {
        self.model = model
        self.architecture = architecture
        self.layers = layers
        self.moeLayers = moeLayers
        self.experts = experts
        self.expertsPerToken = expertsPerToken
    }

    enum CodingKeys: String, CodingKey {
        case format, version, model, architecture, layers
        case moeLayers = "moe_layers"
        case experts
        case expertsPerToken = "experts_per_token"
    }
}

/// One token at one MoE layer.
public struct RoutingRecord: Sendable, Equatable, Codable {
    public var batch: Int
    public var position: Int
    public var token: Int
    public var layer: Int
    /// The router's choice, most probable first, and the weights the outputs were summed with.
    public var experts: [Int]
    public var weights: [Float]
    /// The cross-layer gate's top k for this layer (nil on a layer with no MoE layer before it).
    public var predicted: [Int]?
    /// The cross-layer gate's probabilities over all experts (index = expert id).
    public var predictedProbabilities: [Float]?

    public init(batch: Int, position: Int, token: Int, layer: Int, experts: [Int], weights: [Float],
                predicted: [Int]? = nil, predictedProbabilities: [Float]? = nil) {
        self.batch = batch
        self.position = position
        self.token = token
        self.layer = layer
        self.experts = experts
        self.weights = weights
        self.predicted = predicted
        self.predictedProbabilities = predictedProbabilities
    }

    enum CodingKeys: String, CodingKey {
        case batch
        case position = "pos"
        case token, layer, experts, weights, predicted
        case predictedProbabilities = "predicted_probs"
    }

    // `null` stands for a non-finite number (JSON has none).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        batch = try c.decode(Int.self, forKey: .batch)
        position = try c.decode(Int.self, forKey: .position)
        token = try c.decode(Int.self, forKey: .token)
        layer = try c.decode(Int.self, forKey: .layer)
        experts = try c.decode([Int].self, forKey: .experts)
        weights = try c.decode([Float?].self, forKey: .weights).map { $0 ?? .nan }
        predicted = try c.decodeIfPresent([Int].self, forKey: .predicted)
        predictedProbabilities = try c.decodeIfPresent([Float?].self, forKey: .predictedProbabilities)?.map { $0 ?? .nan }
    }
}

/// One token's path: its records at every MoE layer, in layer order.
public struct RoutingPath: Sendable, Equatable {
    public var batch: Int
    public var position: Int
    public var token: Int
    public var layers: [RoutingRecord]
}

/// Why a routing record could not be written or read; every case names the file.
public enum RoutingRecordError: Error, Equatable, Sendable, CustomStringConvertible, ModelComponentError {
    case cannotCreate(path: String, reason: String)
    case cannotWrite(path: String, reason: String)
    case cannotRead(path: String, reason: String)
    case empty(path: String)
    case notARoutingRecord(path: String, detail: String)
    case unsupportedVersion(path: String, found: Int)
    case truncated(path: String, line: Int)
    case malformed(path: String, line: Int, detail: String)

    public var description: String {
        switch self {
        case let .cannotCreate(path, reason):
            return "cannot create routing record '\(path)': \(reason)"
        case let .cannotWrite(path, reason):
            return "writing routing record '\(path)' failed: \(reason)"
        case let .cannotRead(path, reason):
            return "cannot read routing record '\(path)': \(reason)"
        case let .empty(path):
            return "'\(path)' is empty, not a routing record"
        case let .notARoutingRecord(path, detail):
            return "'\(path)' is not a routing record (\(detail))"
        case let .unsupportedVersion(path, found):
            return "'\(path)' is a routing record of version \(found); this moe reads version \(RoutingRecordFormat.version)"
        case let .truncated(path, line):
            return "'\(path)' ends in the middle of line \(line) (the recording run was cut short?)"
        case let .malformed(path, line, detail):
            return "'\(path)' line \(line): \(detail)"
        }
    }
}
