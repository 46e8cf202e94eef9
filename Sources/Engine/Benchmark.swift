import Experts
import Foundation
import GGUF
import Host
import KV
import Models

/// What a benchmark measures, as llama-bench does: a prompt evaluated as one batch and
/// tokens decoded one step at a time, each timed `runs` times after one untimed warm-up.
public struct BenchmarkPlan: Sendable {
    /// Prompt tokens evaluated as one batch (0: no prefill test).
    public var promptTokens = 128
    /// Tokens decoded one at a time (0: no decode test).
    public var generatedTokens = 32
    public var runs = 5

    public init(promptTokens: Int = 128, generatedTokens: Int = 32, runs: Int = 5) {
        self.promptTokens = promptTokens
        self.generatedTokens = generatedTokens
        self.runs = runs
    }
}

/// The figures of a benchmark: every timed run's tokens/s, and what they ran on.
public struct BenchmarkResult {
    public var prefillRates: [Double] = []
    /// One sequence's tokens/s, or with several sequences their aggregate.
    public var decodeRates: [Double] = []
    public var sequences = 1
    public var threads = 1
    public var peakResidentBytes = 0
    /// The weight bytes a decoded token reads once in memory (one sequence only; nil
    /// without a decode test).
    public var weightBytesPerDecodedToken: UInt64?
    /// The expert figures of the timed runs, for an offloaded model.
    public var expertStatistics: ExpertStats?

    public var prefillMedian: Double? { Self.median(prefillRates) }
    public var decodeMedian: Double? { Self.median(decodeRates) }

    public static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let s = values.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}

extension Runtime {
    /// Runs `plan` on this runtime. Tokens are random, as llama-bench feeds them: a dense
    /// pass's speed does not depend on them, and on a MoE model the routing then varies
    /// from token to token as in real text, instead of settling into the loop a greedy
    /// continuation of a random-weight model falls into. With the configuration's
    /// `sequences` above 1, that many sequences of their own (one KV pool) decode together,
    /// one batch per step; prefill stays one sequence.
    public func benchmark(_ plan: BenchmarkPlan) throws(RuntimeError) -> BenchmarkResult {
        let session = try makeSession()
        let parallel = configuration.sequences
        let batch = parallel > 1 ? try makeBatchKVPool() : nil
        let sequences = batch.map { b in (0..<parallel).map { _ in b.pool.makeSequence(capacity: b.context) } } ?? []
        let longest = max(plan.promptTokens, plan.generatedTokens)
        guard longest <= session.cache.capacity else {
            throw .benchmarkExceedsContext(tokens: longest, capacity: session.cache.capacity)
        }
        let workspace = Workspace()
        var rng = SystemRandomNumberGenerator()
        let vocab = model.vocabularySize
        let clock = ContinuousClock()
        let model = self.model

        func prefill() throws(RuntimeError) -> Double {
            session.rewind(to: 0)
            let ids = (0..<plan.promptTokens).map { _ in Int.random(in: 0..<vocab, using: &rng) }
            let start = clock.now
            do { _ = try session.evaluate(ids, logits: .last) } catch { throw .model(error) }
            return Double(plan.promptTokens) / (clock.now - start).seconds
        }
        func decode() throws(RuntimeError) -> Double {
            if let batch { return try decodeTogether(layout: batch.pool.layout) }
            session.rewind(to: 0)
            let start = clock.now
            for _ in 0..<plan.generatedTokens {
                let token = Int.random(in: 0..<vocab, using: &rng)
                do { _ = try session.evaluate([token], logits: .last) } catch { throw .model(error) }
            }
            return Double(plan.generatedTokens) / (clock.now - start).seconds
        }
        // Every sequence gets a random token each step; one forward pass per step.
        func decodeTogether(layout: KVLayout) throws(RuntimeError) -> Double {
            for s in sequences { s.truncate(to: 0) }
            let start = clock.now
            for _ in 0..<plan.generatedTokens {
                let chunks = sequences.map { SequenceChunk(tokens: [Int.random(in: 0..<vocab, using: &rng)], cache: $0) }
                do {
                    _ = try model.forward(chunks, workspace: workspace, pool: session.pool)
                } catch let .kvCache(error) {
                    throw .kvExhausted(error, sequences: parallel, positionsEach: plan.generatedTokens, layout: layout)
                } catch {
                    throw .model(error)
                }
            }
            return Double(plan.generatedTokens * parallel) / (clock.now - start).seconds
        }
        // One untimed warm-up of each test (page faults, thread start-up).
        if plan.promptTokens > 0 { _ = try prefill() }
        if plan.generatedTokens > 0 { _ = try decode() }
        // Expert figures cover the timed runs only.
        offloadedExperts?.stats.reset()
        var result = BenchmarkResult()
        for _ in 0..<plan.runs {
            if plan.promptTokens > 0 { result.prefillRates.append(try prefill()) }
            if plan.generatedTokens > 0 { result.decodeRates.append(try decode()) }
        }
        result.peakResidentBytes = ProcessMemory.peakResidentBytes()
        result.sequences = parallel
        result.threads = session.pool.threadCount
        result.expertStatistics = offloadedExperts?.stats
        // Where one-sequence decode stands against memory bandwidth.
        if parallel == 1 && plan.generatedTokens > 0 {
            result.weightBytesPerDecodedToken = ModelDescription(model.weights.file).weightBytesPerDecodedToken
        }
        return result
    }
}
