import Engine
import Experts
import Foundation
import KV
import Kernels
import Logging
import Models
import Tokenizer

/// Why a choice ended, in OpenAI's words.
enum FinishReason: String, Sendable {
    /// An end-of-generation token or a stop string.
    case stop
    /// `max_tokens`, a full context, or the server shutting down.
    case length
}

/// Token counts of one request, as `usage` reports them.
struct Usage: Sendable, Equatable {
    var promptTokens: Int
    var completionTokens: Int
    /// Prompt tokens whose keys and values came from the prefix cache.
    var cachedTokens: Int
}

/// One request's work: its prompt, its choices' samplers and limits.
struct GenerationJob: Sendable {
    var id: String
    var prompt: [Int]
    var parameters: GenerationParameters
    /// Tokens each choice generates at most (already checked against the context).
    var maxTokens: Int
}

/// What the scheduler tells the request that submitted a job, in order: text pieces and
/// ends of choices, then `done` (or `failed`, after which nothing follows).
enum GenerationEvent: Sendable {
    case text(choice: Int, String)
    case finished(choice: Int, FinishReason, tokens: Int)
    case failed(APIError)
    case done(Usage)
}

/// The settings of the scheduler (`moe serve`'s flags).
public struct SchedulerConfiguration: Sendable {
    /// Sequences running at once (`--parallel`): a request's `n` choices count as `n`.
    public var parallel = 4
    /// Requests waiting for a free sequence at most (`--queue`); more are refused with 429.
    public var queueLimit = 64
    /// How long a request may wait for a free sequence (`--queue-timeout`); then 503.
    public var queueTimeout: Duration = .seconds(60)
    /// Prompt tokens evaluated per step across new requests, so that a long prompt is
    /// evaluated in chunks between the running sequences' decode steps.
    public var promptChunk = 128

    public init() {}
}

/// Continuous batching: one thread owns the runtime and its `BatchGenerator` and steps it
/// without pause while there is work. Requests join between steps (up to `parallel`
/// sequences; the rest wait in a bounded queue), every running sequence advances in the
/// same forward pass, each leaves when done, and a long prompt is evaluated `promptChunk`
/// tokens a step so that it never freezes the others' streams. Prompts that share a prefix
/// with earlier ones reuse its cached KV blocks (the pool's prefix cache). Requests talk to
/// it through `submit`, which gives them a stream of `GenerationEvent`s; a request whose
/// stream is dropped (its client went away) has its sequences cancelled, and their blocks
/// freed, at the next step.
final class GenerationScheduler: @unchecked Sendable {
    /// What requests need to know of the loaded model.
    struct ModelFacts: Sendable {
        var contextLength: Int
        var vocabularySize: Int
        var tokenizer: Tokenizer
        var chat: ChatPrompt
        var sampling: SamplingParameters
    }

    enum Phase: Equatable {
        case loading
        case ready
        case failed(String)
        case draining
        case stopped

        /// What a request gets in this phase: nil when ready, else a 503 saying why.
        var unavailableError: APIError? {
            switch self {
            case .ready: return nil
            case .loading: return .unavailable("the model is still loading", code: "model_loading")
            case let .failed(message): return .unavailable("the model failed to load: \(message)", code: "model_failed")
            case .draining, .stopped: return .unavailable("the server is shutting down", code: "shutting_down")
            }
        }
    }

    let configuration: SchedulerConfiguration
    let metrics: ServerMetrics
    let logger: Logger

    private let lock = NSCondition()
    // Shared with request tasks, under `lock`.
    private var phase = Phase.loading
    private var facts: ModelFacts?
    private var waiting: [Pending] = []
    private var cancelled: Set<String> = []
    private var drainDeadline: ContinuousClock.Instant?
    private var stopRequested = false
    private var runningSequences = 0
    private var loadWaiters: [CheckedContinuation<Void, any Error>] = []
    private var stoppedWaiters: [CheckedContinuation<Void, Never>] = []

    // The scheduler thread's own.
    private var runtime: Runtime?
    private var generator: BatchGenerator?
    private var running: [Running] = []
    private var bySequence: [BatchGenerator.SequenceID: (job: Running, choice: Int)] = [:]
    /// Set when a step found the KV pool full and a job was put back in the queue: nothing
    /// new is admitted until a running job finishes.
    private var admissionBlocked = false
    /// Tokens produced and time spent stepping since the decode rate was last published.
    private var throughputWindow = (busy: Duration.zero, tokens: 0)
    private var expertBytesSeen: UInt64 = 0

    private final class Pending {
        let job: GenerationJob
        let continuation: AsyncStream<GenerationEvent>.Continuation
        let enqueued: ContinuousClock.Instant
        init(job: GenerationJob, continuation: AsyncStream<GenerationEvent>.Continuation, enqueued: ContinuousClock.Instant) {
            self.job = job
            self.continuation = continuation
            self.enqueued = enqueued
        }
    }

    private final class Running {
        let pending: Pending
        var choices: [Choice]
        var cachedTokens: Int
        var sentText = false
        var firstToken: ContinuousClock.Instant?
        init(pending: Pending, choices: [Choice], cachedTokens: Int) {
            self.pending = pending
            self.choices = choices
            self.cachedTokens = cachedTokens
        }
        var job: GenerationJob { pending.job }
        var isDone: Bool { choices.allSatisfy(\.finished) }
    }

    private struct Choice {
        let sequence: BatchGenerator.SequenceID
        var decoder: StreamingDecoder
        var matcher: StopMatcher
        var tokens = 0
        var finished = false
        var lastToken: ContinuousClock.Instant?
    }

    init(configuration: SchedulerConfiguration, metrics: ServerMetrics, logger: Logger) {
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
    }

    // MARK: - For request handlers

    /// The loaded model's facts; nil while it loads (or when loading failed).
    var modelFacts: ModelFacts? { lock.withLock { facts } }

    var currentPhase: Phase { lock.withLock { phase } }

    /// Queues `job`; its events arrive on the stream returned. Refused (as an error the
    /// client gets) while the model loads, once shutdown began, and when the queue is full.
    func submit(_ job: GenerationJob) throws(APIError) -> AsyncStream<GenerationEvent> {
        let (stream, continuation) = AsyncStream<GenerationEvent>.makeStream(bufferingPolicy: .unbounded)
        let id = job.id
        continuation.onTermination = { [weak self] reason in
            if case .cancelled = reason { self?.cancel(id) }
        }
        lock.lock()
        defer { lock.unlock() }
        if let error = phase.unavailableError { throw error }
        guard waiting.count < configuration.queueLimit else {
            metrics.rejected.increment()
            throw APIError(status: .tooManyRequests,
                           message: "the server is busy: \(runningSequences) sequences are running and \(waiting.count) requests are queued (--parallel \(configuration.parallel), --queue \(configuration.queueLimit)); retry later",
                           type: "rate_limit_error", code: "queue_full")
        }
        waiting.append(Pending(job: job, continuation: continuation, enqueued: .now))
        metrics.queueDepth.record(waiting.count)
        lock.signal()
        return stream
    }

    /// Stops job `id` (its client went away): its sequences are cancelled at the next step.
    func cancel(_ id: String) {
        lock.lock()
        cancelled.insert(id)
        lock.signal()
        lock.unlock()
    }

    /// Waits until the model is loaded; throws what loading threw.
    func waitUntilLoaded() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            lock.lock()
            switch phase {
            case .loading: loadWaiters.append(c)
            case let .failed(message): c.resume(throwing: ServerError.modelFailed(message))
            default: c.resume()
            }
            lock.unlock()
        }
    }

    /// Begins shutdown: new requests are refused, queued ones get 503, running streams go on
    /// until `grace` has passed and are then ended with a final chunk (`finish_reason`
    /// "length"). Returns when every stream has ended and the thread stopped.
    func drain(grace: Duration) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            lock.lock()
            // Nothing runs before the model is loaded, and loading cannot be interrupted (a
            // file on a stalled disk): shutdown does not wait for it.
            if phase == .stopped || phase == .loading {
                stopRequested = true
                let waiters = loadWaiters
                loadWaiters = []
                lock.unlock()
                for w in waiters { w.resume() }
                c.resume()
                return
            }
            if case .ready = phase { phase = .draining }
            drainDeadline = .now + grace
            stopRequested = true
            stoppedWaiters.append(c)
            lock.signal()
            lock.unlock()
        }
    }

    // MARK: - The scheduler thread

    /// Starts the thread: it loads the model as `configuration` says, then serves.
    func start(loading configuration: RuntimeConfiguration) {
        let thread = Thread { [self] in run(configuration) }
        thread.name = "moe-scheduler"
        thread.stackSize = 8 << 20
        thread.start()
    }

    private func run(_ configuration: RuntimeConfiguration) {
        do {
            let runtime = try Runtime.load(configuration, log: { [logger] in logger.info("\($0)") })
            for note in runtime.startupNotes { logger.info("\(note)") }
            let generator = try runtime.makeBatchGenerator()
            generator.maxBatch = self.configuration.promptChunk
            let tokenizer = try runtime.makeTokenizer()
            let chat = try ChatPrompt(tokenizer: tokenizer, metadata: runtime.model.weights.file.metadata)
            self.runtime = runtime
            self.generator = generator
            metrics.kvBlocksTotal.record(generator.kvPool.capacity)
            publishGauges()
            lock.withLock {
                facts = ModelFacts(contextLength: generator.contextLength, vocabularySize: runtime.model.vocabularySize,
                                   tokenizer: tokenizer, chat: chat, sampling: configuration.sampling)
                if phase == .loading { phase = stopRequested ? .draining : .ready }
                for w in loadWaiters { w.resume() }
                loadWaiters = []
            }
            logger.info("model loaded", metadata: ["context": "\(generator.contextLength)", "kv_blocks": "\(generator.kvPool.capacity)",
                                                   "parallel": "\(self.configuration.parallel)"])
        } catch {
            let message = "\(error)"
            lock.withLock {
                phase = .failed(message)
                for w in loadWaiters { w.resume(throwing: ServerError.modelFailed(message)) }
                loadWaiters = []
            }
            waitForStopWhenFailed()
            return
        }
        serve()
    }

    private func waitForStopWhenFailed() {
        lock.lock()
        while !stopRequested { lock.wait() }
        phase = .stopped
        let waiters = stoppedWaiters
        stoppedWaiters = []
        lock.unlock()
        for w in waiters { w.resume() }
    }

    private func serve() {
        guard let generator else { return }
        while true {
            lock.lock()
            while waiting.isEmpty && running.isEmpty && cancelled.isEmpty && !stopRequested { lock.wait() }
            let cancels = cancelled
            cancelled = []
            let now = ContinuousClock.now
            var refused: [(Pending, APIError)] = []
            if phase == .draining {
                refused += waiting.map { ($0, APIError.unavailable("the server is shutting down", code: "shutting_down")) }
                waiting = []
            }
            waiting.removeAll { p in
                guard now - p.enqueued > configuration.queueTimeout else { return false }
                refused.append((p, APIError.unavailable(
                    "the request waited \(Int((now - p.enqueued).seconds)) s for a free sequence (--queue-timeout); the server is busy",
                    code: "queue_timeout")))
                return true
            }
            var admitted: [Pending] = []
            var active = runningSequences
            while !admissionBlocked, let first = waiting.first, active + first.job.parameters.n <= configuration.parallel {
                admitted.append(waiting.removeFirst())
                active += first.job.parameters.n
            }
            runningSequences = active
            metrics.queueDepth.record(waiting.count)
            let deadline = drainDeadline
            let stopping = stopRequested
            lock.unlock()

            for (p, error) in refused {
                p.continuation.yield(.failed(error))
                p.continuation.finish()
            }
            for id in cancels { end(jobID: id) }
            for p in admitted { admit(p, generator) }
            if let deadline, ContinuousClock.now >= deadline {
                for job in running { endAtShutdown(job) }
            }
            if stopping && running.isEmpty {
                lock.lock()
                let stoppable = waiting.isEmpty
                if stoppable { phase = .stopped }
                let waiters = stoppable ? stoppedWaiters : []
                if stoppable { stoppedWaiters = [] }
                lock.unlock()
                if stoppable {
                    publishGauges()
                    for w in waiters { w.resume() }
                    return
                }
                continue
            }
            if !generator.isEmpty { step(generator) }
            publishGauges()
        }
    }

    private func admit(_ p: Pending, _ generator: BatchGenerator) {
        let job = p.job
        guard let tokenizer = lock.withLock({ facts?.tokenizer }) else { return }
        let samplers = (0..<job.parameters.n).map { (i: Int) -> Sampler in
            var s = job.parameters.sampling
            s.seed = s.seed &+ UInt64(i)
            return Sampler(s)
        }
        let isEnd: (Int) -> Bool
        if job.parameters.ignoreEOS {
            isEnd = { _ in false }
        } else {
            isEnd = { tokenizer.isEndOfGeneration($0) }
        }
        do {
            let (ids, reused) = try generator.add(prompt: job.prompt, samplers: samplers, maxTokens: job.maxTokens,
                                                  isEndOfGeneration: isEnd)
            let choices = ids.map {
                Choice(sequence: $0, decoder: StreamingDecoder(tokenizer: tokenizer, stripLeadingSpace: false),
                       matcher: StopMatcher(job.parameters.stop))
            }
            let r = Running(pending: p, choices: choices, cachedTokens: reused)
            running.append(r)
            for (i, c) in choices.enumerated() { bySequence[c.sequence] = (r, i) }
            metrics.promptTokens.increment(by: job.prompt.count)
            metrics.cachedPromptTokens.increment(by: reused)
        } catch {
            release(sequences: job.parameters.n)
            p.continuation.yield(.failed(.invalid(error.description, param: "prompt")))
            p.continuation.finish()
        }
    }

    private func step(_ generator: BatchGenerator) {
        let started = ContinuousClock.now
        let tokens: [BatchGenerator.Token]
        do {
            tokens = try generator.step()
        } catch let ModelError.kvCache(error) {
            relieveKVPressure(error, generator)
            return
        } catch {
            logger.error("a step failed: \(error)")
            for job in running { fail(job, .internalError("the model failed: \(error.description)")) }
            return
        }
        let now = ContinuousClock.now
        for t in tokens {
            guard let (job, i) = bySequence[t.sequence] else { continue }
            deliver(t, to: job, choice: i, at: now, generator)
        }
        running.removeAll { job in
            guard job.isDone else { return false }
            job.pending.continuation.yield(.done(usage(job)))
            job.pending.continuation.finish()
            release(sequences: job.choices.count)
            return true
        }
        if !tokens.isEmpty {
            // The rate while stepping (idle time between requests does not count), published
            // about every half second of work.
            metrics.generatedTokens.increment(by: tokens.count)
            throughputWindow.tokens += tokens.count
            throughputWindow.busy += now - started
            if throughputWindow.busy >= .milliseconds(500) || running.isEmpty {
                metrics.decodeTokensPerSecond.record(Double(throughputWindow.tokens) / throughputWindow.busy.seconds)
                throughputWindow = (.zero, 0)
            }
        }
    }

    private func deliver(_ t: BatchGenerator.Token, to job: Running, choice i: Int, at now: ContinuousClock.Instant,
                         _ generator: BatchGenerator) {
        var c = job.choices[i]
        guard !c.finished else { return }
        if job.firstToken == nil {
            job.firstToken = now
            metrics.timeToFirstToken.recordNanoseconds((now - job.pending.enqueued).nanoseconds)
        } else if let last = c.lastToken {
            metrics.interTokenLatency.recordNanoseconds((now - last).nanoseconds)
        }
        c.lastToken = now
        c.tokens += 1
        var piece = c.decoder.append(t.token)
        var reason: FinishReason?
        if let finished = t.finished {
            reason = finished == .endOfGeneration ? .stop : .length
            piece += c.decoder.finish()
        }
        var (shown, stopped) = c.matcher.append(piece)
        if stopped {
            reason = .stop
            if t.finished == nil { generator.cancel(t.sequence) }
        } else if reason != nil {
            shown += c.matcher.finish()
        }
        if !shown.isEmpty {
            job.sentText = true
            if case .terminated = job.pending.continuation.yield(.text(choice: i, shown)) {
                // The client went away: its sequences go now.
                cancel(job.job.id)
            }
        }
        if let reason {
            c.finished = true
            bySequence[t.sequence] = nil
            job.pending.continuation.yield(.finished(choice: i, reason, tokens: c.tokens))
        }
        job.choices[i] = c
    }

    private func usage(_ job: Running) -> Usage {
        Usage(promptTokens: job.job.prompt.count, completionTokens: job.choices.reduce(0) { $0 + $1.tokens },
              cachedTokens: job.cachedTokens)
    }

    /// A step found the KV pool full. The newest job gives way: put back at the head of the
    /// queue when it has sent nothing yet and others are running (it is admitted again once
    /// one of them finished), otherwise failed with the figures.
    private func relieveKVPressure(_ error: KVError, _ generator: BatchGenerator) {
        guard let victim = running.last else { return }
        cancelSequences(of: victim, generator)
        running.removeLast()
        if !victim.sentText && !running.isEmpty {
            admissionBlocked = true
            lock.withLock {
                waiting.insert(victim.pending, at: 0)
                runningSequences -= victim.choices.count
            }
            logger.notice("KV memory is full; request \(victim.job.id) waits for a running one to finish")
        } else {
            release(sequences: victim.choices.count)
            victim.pending.continuation.yield(.failed(.unavailable(
                "the KV memory is exhausted (\(error.description)); retry later, or start the server with more --kv-memory or a smaller --parallel",
                code: "kv_exhausted")))
            victim.pending.continuation.finish()
        }
    }

    private func cancelSequences(of job: Running, _ generator: BatchGenerator) {
        for c in job.choices {
            generator.cancel(c.sequence)
            bySequence[c.sequence] = nil
        }
    }

    /// Ends job `id` at its client's request (queued or running).
    private func end(jobID id: String) {
        if let i = running.firstIndex(where: { $0.job.id == id }) {
            let job = running.remove(at: i)
            if let generator { cancelSequences(of: job, generator) }
            job.pending.continuation.finish()
            release(sequences: job.choices.count)
            return
        }
        lock.withLock {
            if let i = waiting.firstIndex(where: { $0.job.id == id }) {
                waiting.remove(at: i).continuation.finish()
            }
        }
    }

    private func endAtShutdown(_ job: Running) {
        if let generator { cancelSequences(of: job, generator) }
        for (i, var c) in job.choices.enumerated() where !c.finished {
            let rest = c.matcher.finish()
            if !rest.isEmpty { job.pending.continuation.yield(.text(choice: i, rest)) }
            c.finished = true
            job.choices[i] = c
            job.pending.continuation.yield(.finished(choice: i, .length, tokens: c.tokens))
        }
        job.pending.continuation.yield(.done(usage(job)))
        job.pending.continuation.finish()
        running.removeAll { $0 === job }
        release(sequences: job.choices.count)
    }

    private func fail(_ job: Running, _ error: APIError) {
        if let generator { cancelSequences(of: job, generator) }
        job.pending.continuation.yield(.failed(error))
        job.pending.continuation.finish()
        running.removeAll { $0 === job }
        release(sequences: job.choices.count)
    }

    private func release(sequences: Int) {
        admissionBlocked = false
        lock.withLock { runningSequences -= sequences }
    }

    private func publishGauges() {
        guard let generator else { return }
        let pool = generator.kvPool
        metrics.kvBlocksUsed.record(pool.referencedBlocks)
        metrics.kvBlocksFree.record(pool.availableBlocks)
        metrics.activeSequences.record(generator.activeSequences.count)
        if let stats = runtime?.offloadedExperts?.stats {
            metrics.expertHitRate.record(stats.hitRate)
            if stats.bytesRead > expertBytesSeen {
                metrics.expertBytesRead.increment(by: stats.bytesRead - expertBytesSeen)
                expertBytesSeen = stats.bytesRead
            }
        }
    }
}

/// Why the server could not start.
public enum ServerError: Error, CustomStringConvertible {
    case modelFailed(String)
    case bind(String)

    public var description: String {
        switch self {
        case let .modelFailed(message): return message
        case let .bind(message): return message
        }
    }
}

extension Duration {
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
