import Experts
import Foundation
import Host
import KV
import Models
import Tokenizer
import Trace

/// A loaded model with everything its configuration asks for around it (the expert
/// provider, the routing recorder, the CPU placement), and the one place that makes what a
/// front end drives: a `Session` for one conversation, a `BatchGenerator` for many, a
/// `Benchmark`. Every front end builds its runtime here, so the CLI and a server give the
/// same model the same context, KV pool and experts.
public final class Runtime {
    public let configuration: RuntimeConfiguration
    public let model: DecoderModel
    /// The offloading provider, nil when every weight is in memory.
    public let offloadedExperts: OffloadedExpertProvider?
    /// Lines about what was built, for the user to read once loading is over: settings
    /// that mean nothing for this model, and (when the budget was derived, or with
    /// `statistics`) how the expert pool came out.
    public let startupNotes: [String]
    /// Where the lines of later building steps go (a session's KV figures).
    public var log: (String) -> Void

    private init(configuration: RuntimeConfiguration, model: DecoderModel, offloadedExperts: OffloadedExpertProvider?,
                 startupNotes: [String], log: @escaping (String) -> Void) {
        self.configuration = configuration
        self.model = model
        self.offloadedExperts = offloadedExperts
        self.startupNotes = startupNotes
        self.log = log
    }

    /// Loads the model as `configuration` says. MoE models are offloaded when a budget or
    /// fallback is given, or when the whole file would not fit in the memory available;
    /// otherwise every weight is read at start. `progress` gets bytes read and the total.
    public static func load(_ configuration: RuntimeConfiguration, log: @escaping (String) -> Void = { _ in },
                            progress: ((UInt64, UInt64) -> Void)? = nil) throws(RuntimeError) -> Runtime {
        let c = configuration
        var options = c.offload
        options.sequences = c.sequences
        options.kvType = c.kvType ?? .f16
        options.kvMemory = c.kvMemory
        options.contextLength = c.contextLength
        options.measureDisk = c.statistics
        // Fallback needs the experts offloaded (copies are read from a pack or made in the
        // pool), so asking for it offloads a file that would fit too.
        options.decision = c.offload.expertMemory != nil || c.offload.fallbackEnabled ? .always : .whenNeeded
        if let cpus = c.cpus {
            do { try ComputePlacement.restrict(to: cpus) } catch { throw .placement(error) }
        }
        let model: DecoderModel
        let provider: OffloadedExpertProvider?
        do {
            (model, provider) = try OffloadedModel.load(path: c.modelPath, backend: c.ioBackend, options: options,
                                                        progress: progress)
        } catch {
            throw .model(error)
        }
        var notes: [String] = []
        if let file = c.recordRouting {
            if model.hyperParameters.isMoE {
                do { model.routingObserver = try RoutingRecorder(path: file, model: model, modelFile: c.modelPath) } catch {
                    throw .recording(error)
                }
            } else {
                notes.append("note: \(c.modelPath) has no routed experts; --record-routing is ignored")
            }
        }
        if let provider {
            if c.statistics || c.offload.expertMemory == nil {
                notes.append(expertSummary(provider, prefetch: options.prefetch, learningRate: provider.gateLearningRate))
            }
        } else if options.decision == .always && !model.hyperParameters.isMoE {
            notes.append("note: \(c.modelPath) has no routed experts; --expert-memory is ignored")
        }
        return Runtime(configuration: c, model: model, offloadedExperts: provider, startupNotes: notes, log: log)
    }

    /// How the expert pool came out: slots of each class, memory, placement, policy, read-ahead.
    static func expertSummary(_ provider: OffloadedExpertProvider, prefetch: PrefetchMode, learningRate: Float) -> String {
        let pool = provider.pool
        var placement = "no NUMA placement"
        if let node = pool.residentNode { placement = "NUMA node \(node)" }
        var fallback = ""
        if let f = provider.fallback {
            fallback = String(format: ", and %d %@ copies%@ (%@ each) for weights below %.3g",
                              pool.classCounts[1], provider.layout.precisions[f.precision],
                              provider.makesCopies ? " made in memory" : "",
                              formatBytes(pool.classBytes[1]), f.threshold)
        }
        return "experts: \(pool.classCounts[0]) of \(provider.layout.layers.count * provider.layout.expertCount) "
            + "(\(formatBytes(pool.slotBytes)) each)\(fallback) fit in \(formatBytes(pool.totalBytes)) (\(placement)), "
            + "policy \(type(of: provider.policy).name), prefetch \(prefetch.rawValue)"
            + (learningRate > 0 ? String(format: " (learning rate %g)", learningRate) : "") + ", "
            + (provider.layout.isPacked ? "packed file" : "plain GGUF")
    }

    /// The model's tokenizer, from its metadata.
    public func makeTokenizer() throws(TokenizerError) -> Tokenizer {
        try Tokenizer(metadata: model.weights.file.metadata)
    }

    /// The context a sequence of this runtime gets: `asked`, else the configuration's,
    /// else the model's default (`DecoderModel.contextLength(asked:)`).
    public func contextLength(asked: Int? = nil) -> Int {
        model.contextLength(asked: asked ?? configuration.contextLength)
    }

    /// A session for one conversation. `context`: a front end's own default context (it
    /// wins over the configuration's; perplexity's chunk length); `defaultKVType`: the block
    /// type when the configuration names none (a resumed session's). Its KV pool is the
    /// configuration's memory, else sized for the context; a type the model's heads do not
    /// fit, or memory too small for the context, is an error with the figures.
    public func makeSession(context: Int? = nil, defaultKVType: KVType? = nil) throws(RuntimeError) -> Session {
        let c = configuration
        let type = c.kvType ?? defaultKVType ?? .f16
        let positions = model.contextLength(asked: context ?? c.contextLength)
        guard c.kvIsGiven || c.statistics || type != .f16 else {
            return Session(model: model, contextLength: positions, threads: c.threads)
        }
        let layout = try kvLayout(type)
        if let memory = c.kvMemory {
            guard memory >= layout.blockBytes, positions <= layout.positions(fittingIn: memory) else {
                throw .kvMemoryTooSmall(layout: layout, memory: memory, context: positions)
            }
        }
        let pool = try kvPool(layout, positions: positions, sequences: 1)
        log(Self.kvSummary(layout, pool: pool, memoryGiven: c.kvMemory != nil, context: positions))
        return Session(model: model, contextLength: positions, threads: c.threads, kvPool: pool)
    }

    /// A generator of the configuration's `sequences`, each of the runtime's context, in
    /// one KV pool: the configuration's memory, else N full contexts (`DecoderModel.kvBlocks`;
    /// untouched blocks take no memory). A pool that cannot hold what the sequences come to
    /// need is found out by a step (`RuntimeError.kvExhausted`).
    public func makeBatchGenerator() throws(RuntimeError) -> BatchGenerator {
        let (pool, positions) = try makeBatchKVPool()
        return BatchGenerator(model: model, contextLength: positions, threads: configuration.threads, kvPool: pool)
    }

    /// The KV pool of `makeBatchGenerator` and the context of each sequence.
    func makeBatchKVPool() throws(RuntimeError) -> (pool: KVBlockPool, context: Int) {
        let c = configuration
        let type = c.kvType ?? .f16
        let positions = contextLength()
        let layout = try kvLayout(type)
        let pool = try kvPool(layout, positions: positions, sequences: c.sequences)
        if c.kvIsGiven || c.statistics {
            log("kv: \(layout.type.rawValue), \(layout.bytesPerPosition) bytes per token; pool of \(formatBytes(pool.bytes)) "
                + "(\(c.kvMemory != nil ? "--kv-memory" : "sized for \(c.sequences) contexts")) for \(c.sequences) sequences "
                + "of up to \(positions) tokens")
        }
        return (pool, positions)
    }

    /// The block layout of `type` for this model; a type its heads do not fit is an error.
    private func kvLayout(_ type: KVType) throws(RuntimeError) -> KVLayout {
        do { try model.checkKVType(type) } catch { throw .kvTypeDoesNotFit(type, error) }
        return model.kvLayout(type: type)
    }

    /// A KV pool of `layout` blocks: the configuration's memory, else sized for `sequences`
    /// sequences of `positions` (`DecoderModel.kvBlocks`).
    private func kvPool(_ layout: KVLayout, positions: Int, sequences: Int) throws(RuntimeError) -> KVBlockPool {
        if let memory = configuration.kvMemory {
            do { return try model.makeKVPool(memoryBytes: memory, type: layout.type) } catch { throw .kvMemory(error) }
        }
        return KVBlockPool(layout: layout, blocks: model.kvBlocks(layout, positions: positions, sequences: sequences),
                           owner: ObjectIdentifier(model))
    }

    /// The line a session's KV pool is reported with: bytes per position and the largest
    /// context the pool holds.
    static func kvSummary(_ layout: KVLayout, pool: KVBlockPool, memoryGiven: Bool, context: Int) -> String {
        let f16 = KVLayout(layers: layout.layers, keyWidth: layout.keyWidth, valueWidth: layout.valueWidth,
                           blockSize: layout.blockSize, type: .f16)
        let largest = pool.capacity * layout.blockSize
        return "kv: \(layout.type.rawValue), \(layout.bytesPerPosition) bytes per token (f16: \(f16.bytesPerPosition)); "
            + "pool of \(formatBytes(pool.bytes)) (\(memoryGiven ? "--kv-memory" : "sized for the context")) "
            + "holds a context of up to \(largest) tokens; context \(context)"
    }

    /// The expert figures of an offloaded model (`ExpertStats.report`), nil when every
    /// weight is in memory.
    public var expertStatisticsReport: String? { offloadedExperts?.stats.report() }

    /// Ends what the runtime records: writes the rest of the routing record and closes it
    /// (an error if its last writes fail). Later batches are no longer recorded.
    public func closeRecording() throws(RuntimeError) {
        guard let recorder = model.routingObserver as? RoutingRecorder else { return }
        model.routingObserver = nil
        do { try recorder.close() } catch { throw .recording(error) }
    }
}
