import Experts
import Foundation
import Kernels
import Models
import Testing
import TestSupport
import Trace

/// What a provider may predict at each observation point (the offloader's read-ahead modes).
enum SpyPrediction: CustomStringConvertible {
    /// Before a layer's feed-forward, the next `depth` layers from its hidden state.
    case ahead(depth: Int)
    /// Before a layer's attention, that layer from its input.
    case sameLayer

    var description: String {
        switch self {
        case let .ahead(depth): return "ahead \(depth)"
        case .sameLayer: return "same layer"
        }
    }
}

/// Serves another provider's experts and notes what each batch's layers asked for and the
/// predictions it made from the model's observation points.
final class SpyProvider: ExpertProvider {
    let inner: ExpertProvider
    let prediction: SpyPrediction
    private var batch = -1
    /// (batch, layer) → the experts the layer asked for, in the order it named them.
    var requests: [[Int]: [Int]] = [:]
    var hints: [[Int]: [Int]] = [:]

    init(_ inner: ExpertProvider, prediction: SpyPrediction) {
        self.inner = inner
        self.prediction = prediction
    }

    func beginBatch(tokens: Int) { batch += 1 }

    func observe(_ o: LayerObservation) -> GatePrediction? {
        func predict(_ layer: Int) -> GatePrediction? {
            guard let view = o.moeLayer(layer) else { return nil }
            let p = view.predict(o.hiddenState, tokens: o.tokens, hidden: o.hidden, workspace: o.workspace, pool: o.pool)
            hints[[batch, layer]] = p.ranked
            return p
        }
        switch (prediction, o.stage) {
        case (.sameLayer, .beforeAttention):
            _ = predict(o.layer)
            return nil
        case let (.ahead(depth), .beforeFeedForward):
            var next: GatePrediction?
            for ahead in (o.layer + 1)..<min(o.layer + 1 + depth, o.layerCount) {
                let p = predict(ahead)
                if ahead == o.layer + 1 { next = p }
            }
            return next
        default:
            return nil
        }
    }

    func withExperts(layer: Int, experts: [Int], importance: [Float],
                     compute: ([Int], [ExpertWeights]) throws(ModelError) -> Void) throws(ModelError) {
        requests[[batch, layer]] = experts
        try inner.withExperts(layer: layer, experts: experts, importance: importance, compute: compute)
    }
}

@Suite("Recording routing", .serialized)
struct RecordingTests {
    static let pool = ThreadPool(threadCount: 2)
    static let models = ["tiny-qwen3moe.q8_0.gguf", "tiny-olmoe.q8_0.gguf"]
    static let prompt = (0..<8).map { (($0 &* 7919) &+ 13) % 512 }

    /// An 8-token batch (logits at every position), then 6 greedy decode steps: 7 batches,
    /// 14 tokens.
    func script(_ model: DecoderModel) throws -> (logits: [Float], tokens: [Int]) {
        let cache = model.makeCache(capacity: 64)
        let workspace = Workspace()
        let vocab = model.vocabularySize
        var all = try model.forward(Self.prompt, cache: cache, logits: .all, workspace: workspace, pool: Self.pool)
        var tokens = Self.prompt
        var last = Array(all.suffix(vocab))
        for _ in 0..<6 {
            let next = last.indices.max { last[$0] < last[$1] }!
            tokens.append(next)
            last = try model.forward([next], cache: cache, logits: .last, workspace: workspace, pool: Self.pool)
            all += last
        }
        return (all, tokens)
    }

    func record(_ model: DecoderModel, to path: String, modelFile: String) throws -> (logits: [Float], tokens: [Int]) {
        let recorder = try RoutingRecorder(path: path, model: model, modelFile: modelFile)
        model.routingObserver = recorder
        defer { model.routingObserver = nil }
        let result = try script(model)
        try recorder.close()
        #expect(recorder.recordCount == 14 * recorder.header.moeLayers.count)
        return result
    }

    @Test("logits are bit-identical with recording on and off", arguments: models)
    func recordingChangesNoLogit(_ name: String) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let model = try DecoderModel.load(path: sharedModel(name))
        let plain = try script(model)
        let recorded = try record(model, to: dir.path("r.jsonl"), modelFile: name)
        #expect(recorded.tokens == plain.tokens)
        #expect(recorded.logits.map(\.bitPattern) == plain.logits.map(\.bitPattern))
        // And with a provider that asks for either prediction as well.
        for prediction in [SpyPrediction.ahead(depth: 1), .ahead(depth: 2), .sameLayer] {
            let spied = try DecoderModel.load(path: sharedModel(name))
            spied.experts = SpyProvider(spied.experts!, prediction: prediction)
            let again = try record(spied, to: dir.path("r2.jsonl"), modelFile: name)
            #expect(again.logits.map(\.bitPattern) == plain.logits.map(\.bitPattern), "\(prediction)")
            let a = try String(contentsOfFile: dir.path("r.jsonl"), encoding: .utf8)
            let b = try String(contentsOfFile: dir.path("r2.jsonl"), encoding: .utf8)
            #expect(a == b, "the record does not depend on what the provider asks for (\(prediction))")
        }
    }

    @Test("the header describes the model", arguments: [
        ("tiny-qwen3moe.q8_0.gguf", "qwen3moe", 16, 4),
        ("tiny-olmoe.q8_0.gguf", "olmoe", 8, 2),
    ])
    func header(_ name: String, _ architecture: String, _ experts: Int, _ k: Int) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let model = try DecoderModel.load(path: sharedModel(name))
        let recorder = try RoutingRecorder(path: dir.path("r.jsonl"), model: model, modelFile: "some/where/\(name)")
        try recorder.close()
        let (header, records) = try RoutingRecordReader.read(path: dir.path("r.jsonl"))
        #expect(header == RoutingRecordHeader(model: "some/where/\(name)", architecture: architecture, layers: 3,
                                              moeLayers: [0, 1, 2], experts: experts, expertsPerToken: k))
        #expect(records.isEmpty)
        let first = try String(contentsOfFile: dir.path("r.jsonl"), encoding: .utf8)
        #expect(first.hasPrefix("{\"format\":\"moe-routing\",\"version\":1,"))
    }

    @Test("recorded experts and predictions are the ones the model routed and hinted", arguments: models)
    func recordsWhatWasRouted(_ name: String) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let model = try DecoderModel.load(path: sharedModel(name))
        let spy = SpyProvider(model.experts!, prediction: .ahead(depth: 1))
        model.experts = spy
        let run = try record(model, to: dir.path("r.jsonl"), modelFile: name)
        let reader = try RoutingRecordReader(path: dir.path("r.jsonl"))
        let h = reader.header
        var paths: [RoutingPath] = []
        while let p = try reader.nextPath() { paths.append(p) }
        #expect(paths.count == 14)
        #expect(paths.map(\.token) == run.tokens)
        #expect(paths.map(\.position) == Array(0..<14))
        #expect(paths.map(\.batch) == Array(repeating: 0, count: 8) + Array(1...6))
        for p in paths {
            #expect(p.layers.map(\.layer) == h.moeLayers)
            for r in p.layers {
                #expect(Set(r.experts).count == h.expertsPerToken)
                #expect(r.weights.allSatisfy { $0 > 0 && $0 <= 1 })
                #expect(zip(r.weights, r.weights.dropFirst()).allSatisfy { $0 >= $1 }, "router order: most probable first")
                if r.layer == h.moeLayers.first {
                    #expect(r.predicted == nil && r.predictedProbabilities == nil)
                    continue
                }
                let probs = try #require(r.predictedProbabilities)
                let predicted = try #require(r.predicted)
                #expect(abs(probs.reduce(0, +) - 1) < 1e-4)
                let top = probs.indices.sorted { probs[$0] != probs[$1] ? probs[$0] > probs[$1] : $0 < $1 }
                #expect(predicted == Array(top.prefix(h.expertsPerToken)))
            }
        }
        // Decode steps (one token each): the layer asked for exactly the recorded experts, in
        // the router's order, and the hint for layer L+1 named the recorded prediction.
        for p in paths where p.batch > 0 {
            for r in p.layers {
                #expect(spy.requests[[p.batch, r.layer]] == r.experts)
                if let predicted = r.predicted {
                    #expect(spy.hints[[p.batch, r.layer]].map(Set.init) == Set(predicted))
                }
            }
        }
        // The prompt's batch: the layer asked for the union of its tokens' experts, in order
        // of first appearance.
        for layer in h.moeLayers {
            var union: [Int] = []
            for p in paths where p.batch == 0 {
                for e in p.layers.first(where: { $0.layer == layer })!.experts where !union.contains(e) { union.append(e) }
            }
            #expect(spy.requests[[0, layer]] == union)
        }
    }

    @Test("an offloaded run records the same as a resident one", arguments: models)
    func offloadedRecordsTheSame(_ name: String) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = sharedModel(name)
        let resident = try DecoderModel.load(path: path)
        let expected = try record(resident, to: dir.path("resident.jsonl"), modelFile: path)

        var options = OffloadOptions()
        let (_, probe) = try OffloadedModel.load(path: path, options: options)
        let provider = try #require(probe)
        options.expertMemory = provider.layout.expertsPerToken * provider.pool.slotBytes
        options.prefetch = .gate
        let (model, offloaded) = try OffloadedModel.load(path: path, options: options)
        #expect(offloaded?.pool.slotCount == provider.layout.expertsPerToken)
        let got = try record(model, to: dir.path("offloaded.jsonl"), modelFile: path)
        #expect(got.logits.map(\.bitPattern) == expected.logits.map(\.bitPattern))
        let a = try String(contentsOfFile: dir.path("resident.jsonl"), encoding: .utf8)
        let b = try String(contentsOfFile: dir.path("offloaded.jsonl"), encoding: .utf8)
        #expect(a == b)
        #expect((offloaded?.stats.expertsRead ?? 0) > 0, "experts were read on demand")
    }

    @Test func aWriteFailureFailsTheRun() throws {
        let model = try DecoderModel.load(path: sharedModel("tiny-olmoe.q8_0.gguf"))
        // A buffer that holds the header but not the first batch.
        model.routingObserver = try RoutingRecorder(path: "/dev/full", model: model, modelFile: "m", bufferBytes: 400)
        defer { model.routingObserver = nil }
        let cache = model.makeCache(capacity: 16)
        #expect(throws: ModelError.observer(RoutingRecordError.cannotWrite(path: "/dev/full", reason: "No space left on device"))) {
            _ = try model.forward([1, 2, 3], cache: cache, logits: .last, workspace: Workspace(), pool: Self.pool)
        }
    }
}
