import Models

/// Records a model's routing to a file: set it as the model's `routingObserver`, run, then
/// `close()`. Each batch's routes are kept until the batch has gone through every layer,
/// then written token by token (see `RoutingRecordFormat`).
public final class RoutingRecorder: RoutingObserver {
    public let header: RoutingRecordHeader
    private let writer: RoutingRecordWriter
    private var batch = 0
    private var tokens: [Int] = []
    private var positions: [Int] = []
    private var routed: [(layer: Int, routes: [MixtureOfExperts.Route], prediction: GatePrediction?)] = []
    /// Lines written (every token × MoE layer of every completed batch).
    public private(set) var recordCount = 0

    /// The header `model` (loaded from `modelFile`) gets.
    public static func header(for model: DecoderModel, modelFile: String) -> RoutingRecordHeader {
        let hp = model.hyperParameters
        let moeLayers = model.layers.indices.filter {
            if case .experts = model.layers[$0].feedForward { return true }
            return false
        }
        return RoutingRecordHeader(model: modelFile, architecture: hp.architecture, layers: model.layers.count,
                                   moeLayers: moeLayers, experts: hp.expertCount, expertsPerToken: hp.expertUsedCount)
    }

    /// Creates `path` for the routing of `model`, and writes the header.
    public init(path: String, model: DecoderModel, modelFile: String, bufferBytes: Int = 256 << 10) throws(RoutingRecordError) {
        header = Self.header(for: model, modelFile: modelFile)
        writer = try RoutingRecordWriter(path: path, header: header, bufferBytes: bufferBytes)
    }

    public var path: String { writer.path }

    public func beginBatch(tokens: [Int], positions: [Int]) {
        self.tokens = tokens
        self.positions = positions
        routed.removeAll(keepingCapacity: true)
    }

    public func didRoute(layer: Int, routes: [MixtureOfExperts.Route], prediction: GatePrediction?) {
        routed.append((layer, routes, prediction))
    }

    public func endBatch() throws(ModelError) {
        defer {
            routed.removeAll(keepingCapacity: true)
            batch += 1
        }
        do {
            for (t, token) in tokens.enumerated() {
                for entry in routed {
                    let route = entry.routes[t]
                    var record = RoutingRecord(batch: batch, position: positions[t], token: token,
                                               layer: entry.layer, experts: route.experts, weights: route.weights)
                    if let p = entry.prediction {
                        record.predicted = Array(p.experts(token: t))
                        record.predictedProbabilities = Array(p.probabilities(token: t))
                    }
                    try writer.append(record)
                    recordCount += 1
                }
            }
        } catch {
            throw .observer(error)
        }
    }

    /// Writes what is buffered and closes the file.
    public func close() throws(RoutingRecordError) { try writer.close() }
}
