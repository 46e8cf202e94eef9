import ArgumentParser
import Engine
import Experts
import Foundation
import GGUF
import Host
import KV
import Kernels
import Models
import Storage
import Trace

/// Options shared by every command that runs a model: they parse into Engine's
/// `RuntimeConfiguration`, and `Runtime` builds the rest.
struct ModelOptions: ParsableArguments {
    @Option(name: [.customShort("m"), .customLong("model")],
            help: "GGUF model file (default: the embedded model, models/\(DefaultModel.fileName)).")
    var model: String?

    @Option(help: "Compute threads (default: the cores this process may use).")
    var threads: Int?

    @Option(name: .customLong("ctx"), help: "Context length in tokens (default: min(model's, \(DecoderModel.defaultContextLimit))).")
    var contextLength: Int?

    @OptionGroup var storage: StorageOptions
    @OptionGroup var offload: OffloadingOptions
    @OptionGroup var recording: RecordingOptions
    @OptionGroup var kv: KVOptions

    func validate() throws {
        if let threads, threads < 1 || threads > 512 { throw ValidationError("--threads must be between 1 and 512") }
        if let contextLength, contextLength < 1 { throw ValidationError("--ctx must be positive") }
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

    /// What these flags ask of the runtime; `sequences`: how many decode together
    /// (`--parallel`); `sampling`: the command's sampling flags, where it has them.
    func configuration(sequences: Int = 1, sampling: SamplingParameters? = nil) throws -> RuntimeConfiguration {
        var c = RuntimeConfiguration(modelPath: try modelPath())
        c.threads = threads
        c.ioBackend = storage.ioBackend
        c.contextLength = contextLength
        c.offload = try offload.options()
        c.cpus = try offload.cpuList()
        c.kvType = kv.kvType
        c.kvMemory = try kv.memoryBytes()
        c.sequences = sequences
        c.recordRouting = recording.recordRouting
        c.statistics = offload.stats
        if let sampling { c.sampling = sampling }
        return c
    }

    /// Loads the runtime the flags describe, with a progress bar, reporting errors as one
    /// line; then prints what the runtime says about how it came out.
    func load(sequences: Int = 1, sampling: SamplingParameters? = nil) throws -> Runtime {
        let configuration = try configuration(sequences: sequences, sampling: sampling)
        let path = configuration.modelPath
        let name = path.split(separator: "/").last.map(String.init) ?? path
        var bar: ProgressBar?
        defer { bar?.finish() }
        let progress = { (done: UInt64, total: UInt64) in
            if bar == nil { bar = ProgressBar("loading \(name)", total: Int(total >> 20)) }
            bar?.update(Int(done >> 20), detail: "MiB")
        }
        let runtime = try runReporting { try Runtime.load(configuration, log: printError, progress: progress) }
        bar?.finish()
        bar = nil
        for note in runtime.startupNotes { printError(note) }
        return runtime
    }

    /// With `--stats`, the expert figures of an offloaded model (stderr).
    func printExpertStats(_ runtime: Runtime) {
        guard offload.stats, let report = runtime.expertStatisticsReport else { return }
        printError(report)
    }

    /// At the end of a run: closes the routing record (an error if its last writes fail),
    /// then prints the expert figures.
    func finish(_ runtime: Runtime) throws {
        try runReporting { try runtime.closeRecording() }
        printExpertStats(runtime)
    }
}

/// The paged KV manager's flags, accepted by every command that runs a model.
struct KVOptions: ParsableArguments {
    @Option(name: .customLong("kv-type"),
            help: ArgumentHelp("KV block type: f16 (default), q8_0 or q4_0 (ggml's block layouts, quantized as each position is written; about 53% and 28% of F16's bytes).",
                               valueName: "type"))
    var kvType: KVType?

    @Option(name: .customLong("kv-memory"),
            help: ArgumentHelp("Memory for the KV block pool, e.g. 64M or 1G (default: what the context needs). Too small for the context is an error that says how many positions fit.",
                               valueName: "bytes"))
    var kvMemory: String?

    func validate() throws {
        _ = try memoryBytes()
    }

    func memoryBytes() throws -> Int? {
        guard let kvMemory else { return nil }
        return try byteCountFlag(kvMemory, flag: "--kv-memory", example: "64M, 1.5G", allowZero: false)
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
            help: "Expert cache policy: auto (the default: cycle, or arc with precision fallback), \(ExpertPolicies.all.map { "\($0.name) (\($0.summary))" }.joined(separator: ", ")).")
    var policy = ExpertPolicyName(ExpertPolicies.defaultName)

    @Option(name: .customLong("numa-node"), help: "NUMA node for the expert pool (default: the node of the compute CPUs).")
    var numaNode: Int?

    @Option(name: .customLong("cpus"), help: "CPUs to compute on, e.g. 0-3,6 (default: all this process may use).")
    var cpus: String?

    @Option(name: .customLong("prefetch"),
            help: "Read ahead: none; gate (the next layer's router on this layer's hidden state, as in Fate); adaptive (the gate, as many layers ahead and as many candidates as measured read and compute times call for, as in HOBBIT); path (adaptive, with the gate mixed with routing-path statistics, as in ExpertFlow); near (each layer's router on its input, before its attention).")
    var prefetch: PrefetchMode = .none

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

    func validate() throws {
        _ = try options()
        _ = try cpuList()
    }

    /// What these flags ask of the expert provider.
    func options() throws -> OffloadOptions {
        var o = OffloadOptions()
        if let expertMemory {
            o.expertMemory = try byteCountFlag(expertMemory, flag: "--expert-memory", example: "600M, 1.5G")
        }
        o.policy = policy.name
        o.prefetch = prefetch
        if pathRecords != nil && prefetch != .path {
            throw ValidationError("--path-records seeds --prefetch path; it means nothing with --prefetch \(prefetch.rawValue)")
        }
        o.pathRecords = pathRecords
        guard gateLearning >= 0 && gateLearning < 2 else {
            throw ValidationError("--gate-learning must be at least 0 and below 2, not \(gateLearning)")
        }
        o.gateLearningRate = gateLearning
        if let numaNode, numaNode < 0 { throw ValidationError("--numa-node must be ≥ 0") }
        o.numaNode = numaNode
        if let fallbackThreshold, !(fallbackThreshold >= 0 && fallbackThreshold.isFinite) {
            throw ValidationError("--fallback-threshold must be a routing weight >= 0, not \(fallbackThreshold)")
        }
        guard fallbackShare > 0 && fallbackShare < 1 else {
            throw ValidationError("--fallback-share must be between 0 and 1, not \(fallbackShare)")
        }
        o.fallbackThreshold = fallbackThreshold
        o.fallbackType = fallbackType
        o.fallbackShare = fallbackShare
        return o
    }

    /// `--cpus` as a list of CPU numbers.
    func cpuList() throws -> [Int]? {
        guard let cpus else { return nil }
        do { return try ComputePlacement.parseCPUList(cpus) } catch { throw ValidationError(error.description) }
    }
}
