import ArgumentParser
import Engine
import Experts
import Foundation
import GGUF
import KV
import Kernels
import Models
import Storage
import Trace

/// Options shared by every command that runs a model.
struct ModelOptions: ParsableArguments {
    @Option(name: [.customShort("m"), .customLong("model")],
            help: "GGUF model file (default: the embedded model, models/\(DefaultModel.fileName)).")
    var model: String?

    @Option(help: "Compute threads (default: the cores this process may use).")
    var threads: Int?

    @Option(name: .customLong("ctx"), help: "Context length in tokens (default: min(model's, 4096)).")
    var contextLength: Int?

    @OptionGroup var storage: StorageOptions
    @OptionGroup var offload: OffloadingOptions
    @OptionGroup var recording: RecordingOptions
    @OptionGroup var kv: KVOptions

    func validate() throws {
        if let threads, threads < 1 || threads > 512 { throw ValidationError("--threads must be between 1 and 512") }
        if let contextLength, contextLength < 1 { throw ValidationError("--ctx must be positive") }
    }

    func backendPreference() throws -> StorageBackendPreference {
        guard let b = StorageBackendPreference(parsing: storage.ioBackend) else {
            throw ValidationError("unknown --io-backend '\(storage.ioBackend)' (auto, io_uring, pread)")
        }
        return b
    }

    /// The model file: `-m`, or the embedded default model.
    func modelPath() throws -> String {
        if let model { return model }
        guard let path = DefaultModel.locate() else {
            printError("error: no -m given and the default model (\(DefaultModel.fileName)) was not found; "
                       + "pass -m FILE or set MOE_DEFAULT_MODEL")
            throw ExitCode.failure
        }
        return path
    }

    /// Loads the model, reporting errors as one line. MoE models are offloaded when
    /// `--expert-memory` is given or when the whole file would not fit in the memory
    /// available; otherwise every weight is read at start. `sequences`: how many will decode
    /// together (`--parallel`), which the `auto` expert policy weighs.
    func load(sequences: Int = 1) throws -> DecoderModel {
        let preference = try backendPreference()
        let path = try modelPath()
        var settings = try offload.settings(contextLength: contextLength)
        settings.options.sequences = sequences
        settings.options.kvType = try kv.type()
        settings.options.kvMemory = try kv.memoryBytes()
        if let cpus = settings.cpus { try runReporting { try ComputePlacement.restrict(to: cpus) } }
        let name = path.split(separator: "/").last.map(String.init) ?? path
        var bar: ProgressBar?
        defer { bar?.finish() }
        let progress = { (done: UInt64, total: UInt64) in
            if bar == nil { bar = ProgressBar("loading \(name)", total: Int(total >> 20)) }
            bar?.update(Int(done >> 20), detail: "MiB")
        }
        let (model, offloaded) = try runReporting {
            try OffloadedModel.load(path: path, backend: preference, options: settings.options, progress: progress)
        }
        bar?.finish()
        bar = nil
        if let file = recording.recordRouting {
            if model.hyperParameters.isMoE {
                model.routingObserver = try runReporting { try RoutingRecorder(path: file, model: model, modelFile: path) }
            } else {
                printError("note: \(path) has no routed experts; --record-routing is ignored")
            }
        }
        guard let provider = offloaded else {
            if settings.explicitBudget && !model.hyperParameters.isMoE {
                printError("note: \(path) has no routed experts; --expert-memory is ignored")
            }
            return model
        }
        if offload.stats || offload.expertMemory == nil {
            let pool = provider.pool
            var where_ = "no NUMA placement"
            if let node = pool.residentNode { where_ = "NUMA node \(node)" }
            var fallback = ""
            if let f = provider.fallback {
                fallback = String(format: ", and %d %@ copies%@ (%@ each) for weights below %.3g",
                                  pool.classCounts[1], provider.layout.precisions[f.precision],
                                  provider.makesCopies ? " made in memory" : "",
                                  formatBytes(pool.classBytes[1]), f.threshold)
            }
            printError("experts: \(pool.classCounts[0]) of \(provider.layout.layers.count * provider.layout.expertCount) "
                       + "(\(formatBytes(pool.slotBytes)) each)\(fallback) fit in \(formatBytes(pool.totalBytes)) (\(where_)), "
                       + "policy \(type(of: provider.policy).name), prefetch \(settings.options.prefetch.rawValue)"
                       + (provider.gateLearningRate > 0 ? String(format: " (learning rate %g)", provider.gateLearningRate) : "") + ", "
                       + (provider.layout.isPacked ? "packed file" : "plain GGUF"))
        }
        return model
    }

    /// With `--stats`, the expert figures of an offloaded model (stderr).
    func printExpertStats(_ model: DecoderModel) {
        guard offload.stats, let provider = model.experts as? OffloadedExpertProvider else { return }
        printError(provider.stats.report())
    }

    /// At the end of a run: closes the routing record (an error if its last writes fail),
    /// then prints the expert figures.
    func finish(_ model: DecoderModel) throws {
        try closeRecording(model)
        printExpertStats(model)
    }

    /// Writes the rest of the `--record-routing` file and closes it.
    func closeRecording(_ model: DecoderModel) throws {
        guard let recorder = model.routingObserver as? RoutingRecorder else { return }
        model.routingObserver = nil
        try runReporting { try recorder.close() }
    }

    /// The session of a run: its context is `context` (perplexity's own default), else
    /// `--ctx`, else min(model's, 4096); its KV pool has `--kv-type` blocks and is
    /// `--kv-memory` large (default: sized for the context). A type the model's heads do not
    /// fit, or a pool too small for the context, is one line with the figures.
    /// `defaultKVType` is the block type when `--kv-type` is not given (a resumed session's).
    func session(_ model: DecoderModel, context: Int? = nil, defaultKVType: KVType? = nil) throws -> Session {
        let type = kv.kvType == nil ? defaultKVType ?? .f16 : try kv.type()
        let memory = try kv.memoryBytes()
        let trained = model.hyperParameters.contextLength
        let positions = min(context ?? contextLength ?? min(trained, 4096), trained)
        guard kv.isGiven || offload.stats || type != .f16 else {
            return Session(model: model, contextLength: positions, threads: threads)
        }
        do { try model.checkKVType(type) } catch {
            printError("error: --kv-type \(type.rawValue): \(error.description)")
            throw ExitCode.failure
        }
        let layout = model.kvLayout(type: type)
        let pool: KVBlockPool
        if let memory {
            guard memory >= layout.blockBytes, positions <= layout.positions(fittingIn: memory) else {
                printError("error: " + KVOptions.tooSmall(layout, memory: memory, context: positions))
                throw ExitCode.failure
            }
        }
        do {
            pool = try memory.map { try model.makeKVPool(memoryBytes: $0, type: type) }
                ?? model.makeKVPool(positions: positions, type: type)
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        printError(KVOptions.summary(layout, pool: pool, memoryGiven: memory != nil, context: positions))
        return Session(model: model, contextLength: positions, threads: threads, kvPool: pool)
    }
}

extension ModelOptions {
    /// The generator of `--parallel N`: sequences of `--ctx` (default min(model's, 4096))
    /// positions in one KV pool (`batchKVPool`). A pool that cannot hold what the sequences
    /// come to need is an error when a step finds it out (`kvExhausted`).
    func batchGenerator(_ model: DecoderModel, sequences: Int) throws -> BatchGenerator {
        let (pool, positions) = try batchKVPool(model, sequences: sequences)
        return BatchGenerator(model: model, contextLength: positions, threads: threads, kvPool: pool)
    }

    /// The KV pool of N sequences and their context (`--ctx`, default min(model's, 4096)):
    /// `--kv-type` blocks, `--kv-memory` large (at least one block) or by default sized for
    /// N full contexts (plus a block each for copy-on-write; untouched blocks take no memory).
    func batchKVPool(_ model: DecoderModel, sequences: Int) throws -> (pool: KVBlockPool, context: Int) {
        let type = try kv.type()
        let memory = try kv.memoryBytes()
        let trained = model.hyperParameters.contextLength
        let positions = min(contextLength ?? min(trained, 4096), trained)
        do { try model.checkKVType(type) } catch {
            printError("error: --kv-type \(type.rawValue): \(error.description)")
            throw ExitCode.failure
        }
        let layout = model.kvLayout(type: type)
        let pool: KVBlockPool
        do {
            pool = try memory.map { try model.makeKVPool(memoryBytes: $0, type: type) }
                ?? KVBlockPool(layout: layout, blocks: (layout.blocks(forPositions: positions) + 1) * sequences,
                               owner: ObjectIdentifier(model))
        } catch {
            printError("error: --kv-memory: \(error)")
            throw ExitCode.failure
        }
        if kv.isGiven || offload.stats {
            printError("kv: \(layout.type.rawValue), \(layout.bytesPerPosition) bytes per token; pool of \(formatBytes(pool.bytes)) "
                       + "(\(memory != nil ? "--kv-memory" : "sized for \(sequences) contexts")) for \(sequences) sequences "
                       + "of up to \(positions) tokens")
        }
        return (pool, positions)
    }

    /// The line for a step that found the KV pool full: the figures, and what would do.
    static func kvExhausted(_ error: KVError, sequences: Int, positionsEach: Int, layout: KVLayout) -> String {
        let needed = layout.bytes(forPositions: positionsEach) * sequences
        return "\(error.description); \(sequences) sequences of up to \(positionsEach) positions need up to "
            + "\(formatBytes(needed)) of KV blocks: give --kv-memory \(formatBytes(needed)) or more, or fewer sequences or tokens"
    }
}

/// The paged KV manager's flags, accepted by every command that runs a model.
struct KVOptions: ParsableArguments {
    @Option(name: .customLong("kv-type"),
            help: ArgumentHelp("KV block type: f16 (default), q8_0 or q4_0 (ggml's block layouts, quantized as each position is written; about 53% and 28% of F16's bytes).",
                               valueName: "type"))
    var kvType: String?

    @Option(name: .customLong("kv-memory"),
            help: ArgumentHelp("Memory for the KV block pool, e.g. 64M or 1G (default: what the context needs). Too small for the context is an error that says how many positions fit.",
                               valueName: "bytes"))
    var kvMemory: String?

    /// Whether either flag was given (then a line at start reports the KV figures).
    var isGiven: Bool { kvType != nil || kvMemory != nil }

    func validate() throws {
        _ = try type()
        _ = try memoryBytes()
    }

    func type() throws -> KVType {
        guard let kvType else { return .f16 }
        guard let t = KVType(rawValue: kvType.lowercased()) else {
            throw ValidationError("unknown --kv-type '\(kvType)' (one of \(KVType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return t
    }

    func memoryBytes() throws -> Int? {
        guard let kvMemory else { return nil }
        guard let bytes = parseByteCount(kvMemory), bytes > 0 else {
            throw ValidationError("cannot read --kv-memory '\(kvMemory)' (expected e.g. 64M, 1.5G or a byte count)")
        }
        return bytes
    }

    /// "--kv-memory X holds N positions ..., less than the context of C": the figures, and
    /// what would do.
    static func tooSmall(_ layout: KVLayout, memory: Int, context: Int) -> String {
        let fitting = layout.positions(fittingIn: memory)
        return "--kv-memory \(formatBytes(memory)) holds \(fitting) positions of this model in \(layout.type.rawValue) "
            + "(\(layout.bytesPerPosition) bytes per position, blocks of \(layout.blockSize) positions of \(formatBytes(layout.blockBytes))), "
            + "but the context asked for is \(context) positions; give --kv-memory \(formatBytes(layout.bytes(forPositions: context))) "
            + "or more" + (fitting > 0 ? ", or --ctx \(fitting) or less" : "")
    }

    /// The line at start: bytes per position and the largest context the pool holds.
    static func summary(_ layout: KVLayout, pool: KVBlockPool, memoryGiven: Bool, context: Int) -> String {
        let f16 = KVLayout(layers: layout.layers, keyWidth: layout.keyWidth, valueWidth: layout.valueWidth,
                           blockSize: layout.blockSize, type: .f16)
        let largest = pool.capacity * layout.blockSize
        return "kv: \(layout.type.rawValue), \(layout.bytesPerPosition) bytes per token (f16: \(f16.bytesPerPosition)); "
            + "pool of \(formatBytes(pool.bytes)) (\(memoryGiven ? "--kv-memory" : "sized for the context")) "
            + "holds a context of up to \(largest) tokens; context \(context)"
    }
}

/// Sampling flags of `generate` and `chat`.
struct SamplingOptions: ParsableArguments {
    @Option(name: .customLong("temp"), help: "Temperature; 0 samples greedily.")
    var temperature: Float = 0.8
    @Option(name: .customLong("top-k"), help: "Keep the k most likely tokens (0: all).")
    var topK: Int = 40
    @Option(name: .customLong("top-p"), help: "Nucleus sampling threshold (1: off).")
    var topP: Float = 0.95
    @Option(name: .customLong("min-p"), help: "Drop tokens below this fraction of the best one's probability (0: off).")
    var minP: Float = 0.05
    @Option(name: .customLong("repeat-penalty"), help: "Penalty for recently seen tokens (1: off).")
    var repeatPenalty: Float = 1.0
    @Option(help: "Random seed (default: from the clock).")
    var seed: UInt64?

    func validate() throws {
        guard temperature.isFinite, temperature >= 0 else { throw ValidationError("--temp must be ≥ 0") }
        guard topK >= 0 else { throw ValidationError("--top-k must be ≥ 0") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard minP >= 0, minP <= 1 else { throw ValidationError("--min-p must be in [0, 1]") }
        guard repeatPenalty > 0, repeatPenalty.isFinite else { throw ValidationError("--repeat-penalty must be > 0") }
    }

    var parameters: SamplingParameters {
        var p = SamplingParameters()
        p.temperature = temperature
        p.topK = topK
        p.topP = topP
        p.minP = minP
        p.repeatPenalty = repeatPenalty
        p.seed = seed ?? UInt64(truncatingIfNeeded: ContinuousClock.now.hashValue) ^ 0x5DEECE66D
        return p
    }
}

/// `--record-routing`, accepted by every command that runs a model.
struct RecordingOptions: ParsableArguments {
    @Option(name: .customLong("record-routing"),
            help: ArgumentHelp("Write every token's routing (experts and weights per MoE layer, and the cross-layer gate's prediction) to this JSON Lines file.",
                               valueName: "file"))
    var recordRouting: String?
}

/// Expert offloading flags, accepted by every command that runs a model.
struct OffloadingOptions: ParsableArguments {
    @Option(name: .customLong("expert-memory"),
            help: "Memory for the expert pool, e.g. 600M or 2G (default: what is available, if the model does not fit).")
    var expertMemory: String?

    @Option(name: .customLong("expert-policy"),
            help: "Expert cache policy: auto (the default: arc, or fate without fallback when the pool holds fewer experts than a token uses over all MoE layers), \(ExpertPolicies.all.map { "\($0.name) (\($0.summary))" }.joined(separator: ", ")).")
    var policy: String = ExpertPolicies.defaultName

    @Option(name: .customLong("numa-node"), help: "NUMA node for the expert pool (default: the node of the compute CPUs).")
    var numaNode: Int?

    @Option(name: .customLong("cpus"), help: "CPUs to compute on, e.g. 0-3,6 (default: all this process may use).")
    var cpus: String?

    @Option(name: .customLong("prefetch"),
            help: "Read ahead: none; gate (the next layer's router on this layer's hidden state, as in Fate); adaptive (the gate, as many layers ahead and as many candidates as measured read and compute times call for, as in HOBBIT); path (adaptive, with the gate mixed with routing-path statistics, as in ExpertFlow); near (each layer's router on its input, before its attention).")
    var prefetch: String = PrefetchMode.none.rawValue

    @Option(name: .customLong("gate-learning"),
            help: ArgumentHelp("Step size of the online correction of read-ahead predictions: each layer learns, from the tokens it routes, what the cross-layer gate's prediction of it misses (0: the plain gate, as in Fate; stable below 2).", valueName: "RATE"))
    var gateLearning: Float = OffloadOptions().gateLearningRate

    @Option(name: .customLong("path-records"),
            help: ArgumentHelp("Routing records (--record-routing) of the same model that seed --prefetch path's statistics.", valueName: "FILE"))
    var pathRecords: String?

    @Option(name: .customLong("fallback-threshold"),
            help: "Precision fallback: a missing expert whose routing weight is below this is computed from its low-precision copy, read from a pack made with --low-precision or made in memory from experts read at full precision (default 1.6/k when --fallback-type is given, k the experts a token uses).")
    var fallbackThreshold: Float?

    @Option(name: .customLong("fallback-type"),
            help: "The low-precision copies fallback uses, e.g. q4_0: a pack's are read, other types are made in memory (default: the pack's first, else q4_0 made in memory).")
    var fallbackType: String?

    @Option(name: .customLong("fallback-share"),
            help: "Share of --expert-memory that holds low-precision copies when fallback is on (0-1).")
    var fallbackShare: Double = OffloadOptions().fallbackShare

    @Flag(name: .customLong("stats"), help: "Print expert statistics (hit rates, bytes read, I/O stall, disk bound) at the end.")
    var stats = false

    struct Settings {
        var options: OffloadOptions
        var cpus: [Int]?
        var explicitBudget: Bool { options.decision == .always }
    }

    func settings(contextLength: Int?) throws -> Settings {
        var o = OffloadOptions()
        if let expertMemory {
            guard let bytes = parseByteCount(expertMemory) else {
                throw ValidationError("cannot read --expert-memory '\(expertMemory)' (expected e.g. 600M, 1.5G or a byte count)")
            }
            o.expertMemory = bytes
        }
        guard ExpertPolicies.choices.contains(policy) else {
            throw ValidationError("unknown --expert-policy '\(policy)' (one of \(ExpertPolicies.choices.joined(separator: ", ")))")
        }
        o.policy = policy
        guard let mode = PrefetchMode(rawValue: prefetch) else {
            throw ValidationError("unknown --prefetch '\(prefetch)' (one of \(PrefetchMode.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        o.prefetch = mode
        if pathRecords != nil && mode != .path {
            throw ValidationError("--path-records seeds --prefetch path; it means nothing with --prefetch \(mode.rawValue)")
        }
        o.pathRecords = pathRecords
        guard gateLearning >= 0 && gateLearning < 2 else {
            throw ValidationError("--gate-learning must be at least 0 and below 2, not \(gateLearning)")
        }
        o.gateLearningRate = gateLearning
        if let numaNode, numaNode < 0 { throw ValidationError("--numa-node must be ≥ 0") }
        o.numaNode = numaNode
        o.contextLength = contextLength
        o.measureDisk = stats
        // Fallback needs the experts offloaded (copies are read from a pack or made in the
        // pool), so asking for it offloads a file that would fit too.
        o.decision = expertMemory != nil || fallbackThreshold != nil || fallbackType != nil ? .always : .whenNeeded
        if let fallbackThreshold, !(fallbackThreshold >= 0 && fallbackThreshold.isFinite) {
            throw ValidationError("--fallback-threshold must be a routing weight >= 0, not \(fallbackThreshold)")
        }
        guard fallbackShare > 0 && fallbackShare < 1 else {
            throw ValidationError("--fallback-share must be between 0 and 1, not \(fallbackShare)")
        }
        o.fallbackThreshold = fallbackThreshold
        o.fallbackType = fallbackType
        o.fallbackShare = fallbackShare
        var list: [Int]?
        if let cpus {
            do { list = try ComputePlacement.parseCPUList(cpus) } catch { throw ValidationError(error.description) }
        }
        return Settings(options: o, cpus: list)
    }
}
