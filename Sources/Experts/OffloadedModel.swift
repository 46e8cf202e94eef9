import Foundation
import GGUF
import Host
import KV
import Models
import Storage

/// How a command wants experts served.
public struct OffloadOptions: Sendable {
    /// Bytes for the expert pool; nil derives it from the memory available.
    public var expertMemory: Int?
    public var policy: String = ExpertPolicies.defaultName
    /// Sequences that will decode together (`--parallel`), for the `auto` policy's choice.
    public var sequences = 1
    /// NUMA node for the pool; nil: the node of the CPUs that compute.
    public var numaNode: Int?
    /// Context length the session will use (for the automatic budget's KV reserve).
    public var contextLength: Int?
    /// The KV block type and pool size the session will use (same reserve; nil: sized for
    /// the context).
    public var kvType: KVType = .f16
    public var kvMemory: Int?
    /// Measure the disk's sequential read bandwidth at start (for the stats' disk bound).
    public var measureDisk = false
    /// Read ahead the experts the cross-layer gate predicts for the next layer. Off by
    /// default: corrected online, the gate's recall on the benchmark model is ~93% (~68%
    /// plain), yet where the pool holds most of what decoding needs the wrong predictions'
    /// reads still cost more than the right ones save (0.89x on-demand at the 800M cap;
    /// 1.09x where the disk is the limit).
    public var prefetch: PrefetchMode = .none
    /// Routing records (`--record-routing`) that seed `--prefetch path`'s statistics.
    public var pathRecords: String?
    /// Step size of the online correction of the read-ahead predictions (`GateCorrection`;
    /// 0: the plain cross-layer gate). Chosen on the default model and the benchmark model
    /// (README): recall 70% -> 83% and 68% -> 93%; 0.1 learns too slowly over a few hundred
    /// tokens, 1.0 learns worse.
    public var gateLearningRate: Float = 0.3
    public var decision: OffloadDecision = .always
    /// Precision fallback: compute missing experts whose routing weight is below this from
    /// a low-precision copy (nil: off, unless `fallbackType` is set, which implies
    /// `defaultFallbackThreshold`).
    public var fallbackThreshold: Float?
    /// The threshold `--fallback-type` alone implies: 1.6/k, a little above the mean routing
    /// weight, with `fallbackShare` 0.4. Chosen on the benchmark MoE pack with Q2_K copies
    /// (8 of 64 experts, `tools/bench-prefetch.sh`, medians of 3 rounds): at
    /// `--expert-memory 128M` 3.4x on-demand loading against 2.5x for 1/k with 0.25; at 480M
    /// 1.7x against 1.3x. 1/k with 0.4 was slower than either (the full-precision slots then
    /// thrash); at 1.6/k the copy slots serve two thirds of the uses. Its cost on the trained
    /// default model (k = 2, Q4_0 copies from a pack, `--expert-memory 4M`): perplexity
    /// +0.36% against +0.23%, mean KL 0.0024 against 0.0005 nats.
    public static func defaultFallbackThreshold(expertsPerToken k: Int) -> Float { 1.6 / Float(max(k, 1)) }
    /// The type of the copies: a precision of the pack, read from it, or any other type
    /// the quantizer writes, made in memory from the experts read at full precision. nil:
    /// the pack's first copies, or `defaultMemoryCopyType` made in memory.
    public var fallbackType: String?
    /// The copies made in memory when no type is given and the file has none: Q4_0 has
    /// blocks of 32 (so it holds every row a supported model has), is about half a Q8_0
    /// expert and is quick to quantize.
    public static let defaultMemoryCopyType = GGMLType.q4_0
    /// Share of the expert budget for low-precision copies when fallback is on (see
    /// `defaultFallbackThreshold`).
    public var fallbackShare = 0.4

    public var fallbackEnabled: Bool { fallbackThreshold != nil || fallbackType != nil }

    public init() {}
}

/// When `OffloadedModel.load` offloads a MoE model's experts.
public enum OffloadDecision: Sendable {
    /// Always (the user gave a budget).
    case always
    /// Only for a file that would not fit whole in the memory available, or a pack (whose
    /// bundles only the offloading provider reads); otherwise every weight is read at start.
    case whenNeeded
}

/// What to read before a layer asks for it.
public enum PrefetchMode: String, Sendable, CaseIterable {
    /// Nothing: experts are read when their layer selects them.
    case none
    /// Fate's cross-layer gate: layer L+1's norm and router applied to layer L's hidden state.
    case gate
    /// The cross-layer gate with HOBBIT's adaptive look-ahead: as many layers ahead, and as
    /// many candidates per layer, as the measured read and compute times call for.
    case adaptive
    /// The adaptive gate's probabilities mixed with routing-path statistics (ExpertFlow):
    /// how often each expert of the next layer followed the experts this layer chose,
    /// learned while running and optionally seeded from routing records.
    case path
    /// Each layer's own norm and router on its input, before its attention.
    case near

    /// How many prediction distances read-ahead in this mode corrects online (one map each
    /// per MoE layer).
    var predictionDistances: Int {
        switch self {
        case .none: return 0
        case .gate, .near: return 1
        case .adaptive, .path: return AdaptiveLookahead().maximumDepth
        }
    }
}

/// A model whose experts stay on disk and are served from a fixed pool.
public enum OffloadedModel {
    /// Memory kept aside for everything that is neither weights, experts nor KV cache
    /// (scratch buffers, the thread pool, the runtime itself).
    public static let reserveBytes = 64 << 20

    /// Loads `path` with every non-expert tensor in memory and, as `options.decision` says,
    /// the experts offloaded. Returns the model and its offloading provider (whose stats and
    /// pool the caller may show), nil when every weight was read (a dense model, or a MoE
    /// file that fits). The file is opened and parsed once, whichever way it goes.
    /// `expertReads` may wrap the backend the experts are read through (tests inject faults).
    public static func load(path: String, backend: StorageBackendPreference = .automatic, options: OffloadOptions,
                            expertReads: (any StorageBackend) -> any StorageBackend = { $0 },
                            progress: ((UInt64, UInt64) -> Void)? = nil) throws(ModelError) -> (DecoderModel, OffloadedExpertProvider?) {
        guard ExpertPolicies.choices.contains(options.policy) else {
            throw .experts(ExpertError.invalidOption("unknown expert policy '\(options.policy)' (one of \(ExpertPolicies.choices.joined(separator: ", ")))"))
        }
        var layout: ExpertLayout?
        var provider: OffloadedExpertProvider?
        let model = try DecoderModel.load(path: path, backend: backend, skip: { info in
            if layout == nil { return false }
            return layout!.expertTensorNames.contains(info.name)
        }, prepare: { file, hp throws(ModelError) in
            guard hp.isMoE else { return }
            if options.decision == .whenNeeded, !file.metadata.contains(PackFormat.versionKey),
               file.fileSize + UInt64(reserveBytes) <= UInt64(max(AvailableMemory.bytes(), 0)) {
                return
            }
            layout = try ExpertLayout(file: file, hyperParameters: hp)
        }, progress: progress) { model, file throws(ModelError) in
            guard let fileLayout = layout else { return try ResidentExpertProvider(model.weights, model.hyperParameters) }
            let storage = expertReads(file)
            let fallback: OffloadedExpertProvider.Fallback?
            let layout: ExpertLayout
            do throws(ExpertError) {
                (fallback, layout) = try fallbackSetting(options, layout: fileLayout, path: path) ?? (nil, fileLayout)
            } catch {
                throw .experts(error)
            }
            let slotBytes = OffloadedExpertProvider.slotBytes(layout, fileSize: storage.fileSize)
            let expertBudget = ExpertBudget(
                slotBytes: slotBytes,
                lowSlotBytes: fallback.map { OffloadedExpertProvider.slotBytes(layout, fileSize: storage.fileSize, precision: $0.precision) },
                minimumSlots: OffloadedExpertProvider.minimumSlots(layout), expertCount: layout.layers.count * layout.expertCount)
            var budget: Int
            do throws(ExpertError) {
                budget = try expertBudget.budget(requested: options.expertMemory) {
                    let kv = options.kvMemory ?? kvBytes(model, contextLength: options.contextLength, type: options.kvType)
                    return AvailableMemory.bytes() - kv - reserveBytes
                }
            } catch {
                throw .experts(error)
            }
            // The read-ahead corrections' maps (a router's worth of floats per MoE layer and
            // prediction distance) come out of the budget when it has room for them above
            // its minimum; otherwise predictions stay uncorrected.
            var learningRate = options.gateLearningRate
            let learningBytes = predictionCorrectionBytes(layout, hidden: model.hidden, options: options)
            if let left = expertBudget.taking(learningBytes, from: budget) { budget = left } else { learningRate = 0 }
            // With fallback, a share of the budget holds low-precision copies (at least a
            // token's worth of each class).
            let classes = expertBudget.slotClasses(budget: budget, fallbackShare: options.fallbackShare)
            let slots = classes.reduce(0) { $0 + $1.count }
            let node = options.numaNode ?? ComputePlacement.computeNode
            var context = PolicyContext(capacity: slots, layerCount: model.hyperParameters.blockCount,
                                        expertLayers: layout.layers, expertsPerLayer: layout.expertCount,
                                        expertsPerToken: layout.expertsPerToken,
                                        bytesPerPrecision: layout.precisions.indices.map { layout.expertBytes(precision: $0) })
            context.lowPrecisionCapacity = classes.count > 1 ? classes[1].count : 0
            context.sequences = options.sequences
            let policy = ExpertPolicies.make(options.policy, context: context)!
            let pathPredictor = options.prefetch == .path ? try pathStatistics(options.pathRecords, layout: layout) : nil
            do {
                let pool = try ExpertPool(classes: classes, numaNode: node)
                let p = try OffloadedExpertProvider(layout: layout, pool: pool, policy: policy, backend: storage,
                                                    fallback: fallback)
                p.prefetch = options.prefetch
                p.gateLearningRate = options.prefetch == .none ? 0 : learningRate
                p.pathPredictor = pathPredictor
                if options.measureDisk { p.stats.diskBandwidth = DiskProbe.sequentialBandwidth(storage, from: layout.firstExpertOffset) }
                provider = p
                return p
            } catch let error as StorageError {
                throw .experts(ExpertError.poolSetup(error))
            } catch {
                throw .file("cannot set up the expert pool: \(error)")
            }
        }
        return (model, provider)
    }

    /// Memory the online correction of read-ahead predictions takes from the expert budget
    /// (0 without read-ahead or with learning off).
    public static func predictionCorrectionBytes(_ layout: ExpertLayout, hidden: Int, options: OffloadOptions) -> Int {
        guard options.gateLearningRate > 0 else { return 0 }
        return layout.layers.count * GateCorrection.bytes(experts: layout.expertCount, hidden: hidden,
                                                          distances: options.prefetch.predictionDistances)
    }

    /// Routing-path statistics for `--prefetch path`: empty, or seeded from routing records
    /// of the same model.
    static func pathStatistics(_ records: String?, layout: ExpertLayout) throws(ModelError) -> RoutingPathPredictor {
        guard let records else { return RoutingPathPredictor(expertCount: layout.expertCount, moeLayers: layout.layers) }
        let seeded: RoutingPathPredictor
        do { seeded = try RoutingPathPredictor(recordFile: records) } catch { throw .experts(ExpertError.pathRecords(error)) }
        guard seeded.expertCount == layout.expertCount, seeded.moeLayers == layout.layers else {
            throw .experts(ExpertError.pathRecordsOfAnotherModel(path: records, experts: seeded.expertCount, layers: seeded.moeLayers,
                                                                 expectedExperts: layout.expertCount, expectedLayers: layout.layers))
        }
        return seeded
    }

    /// The fallback `options` ask for, and the layout it uses: the file's, or the file's with
    /// copies made in memory when the file has none of the type asked for (or none at all).
    static func fallbackSetting(_ options: OffloadOptions, layout: ExpertLayout,
                                path: String) throws(ExpertError) -> (OffloadedExpertProvider.Fallback, ExpertLayout)? {
        guard options.fallbackEnabled else { return nil }
        let threshold = options.fallbackThreshold ?? OffloadOptions.defaultFallbackThreshold(expertsPerToken: layout.expertsPerToken)
        guard threshold.isFinite, threshold >= 0 else {
            throw .invalidOption("the fallback threshold must be a routing weight >= 0, not \(threshold)")
        }
        let packed = layout.precisions.indices.dropFirst().filter { layout.isInFile(precision: $0) }
        let type: GGMLType
        if let name = options.fallbackType {
            if let p = packed.first(where: { layout.precisions[$0].lowercased() == name.lowercased() }) {
                return (.init(threshold: threshold, precision: p), layout)
            }
            guard let named = GGMLType(name: name) else {
                throw .unsupportedFallbackType(name, supported: ExpertLayout.memoryCopyTypes.map(\.name))
            }
            type = named
        } else if let first = packed.first {
            return (.init(threshold: threshold, precision: first), layout)
        } else {
            type = OffloadOptions.defaultMemoryCopyType
        }
        let withCopies = try layout.addingMemoryCopies(type, path: path)
        return (.init(threshold: threshold, precision: withCopies.precisions.count - 1), withCopies)
    }

    /// Bytes the session's KV cache will take: the blocks of its context, plus the one a
    /// session's pool keeps for copy-on-write (`DecoderModel.makeCache`).
    static func kvBytes(_ model: DecoderModel, contextLength: Int?, type: KVType = .f16) -> Int {
        let hp = model.hyperParameters
        let positions = model.contextLength(asked: contextLength)
        // A type that does not fit is refused when the session's pool is made; reserve F16 meanwhile.
        let fits = type.fits(keyHeadSize: hp.keyLength, valueHeadSize: hp.valueLength)
        let layout = model.kvLayout(type: fits ? type : .f16)
        return model.kvBlocks(layout, positions: positions) * layout.blockBytes
    }
}
