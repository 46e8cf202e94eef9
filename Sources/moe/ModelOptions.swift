import ArgumentParser
import Engine
import Kernels
import Models
import Storage

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

    /// Loads the model, reporting errors as one line.
    func load() throws -> DecoderModel {
        let preference = try backendPreference()
        let path = try modelPath()
        let name = path.split(separator: "/").last.map(String.init) ?? path
        var bar: ProgressBar?
        defer { bar?.finish() }
        return try runReporting {
            try DecoderModel.load(path: path, backend: preference) { done, total in
                if bar == nil { bar = ProgressBar("loading \(name)", total: Int(total >> 20)) }
                bar?.update(Int(done >> 20), detail: "MiB")
            }
        }
    }

    func session(_ model: DecoderModel) -> Session {
        Session(model: model, contextLength: contextLength, threads: threads)
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
