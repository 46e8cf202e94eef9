import KV
import Kernels
import Models

/// Several sequences generating together over one model, one KV block pool and one set of
/// threads: every `step()` evaluates, in ONE forward pass, the pending prompt tokens and one
/// decode token of every active sequence, then samples each sequence's next token with that
/// sequence's own `Sampler`. The matrix products run over the whole batch, so an expert that
/// several sequences route to is read and computed once per step (an offloading provider
/// groups the batch's tokens by expert and runs selections larger than its pool in waves).
///
/// Sequences join with `add(prompt:...)` (their prompt is evaluated by the next steps, in
/// chunks of at most `maxBatch` prompt tokens per step) or `add(continuing:...)` (a fork of a
/// prompt evaluated once by `prefill`, sharing its KV blocks copy-on-write), at any time
/// between steps. Each finishes on its own (end of generation, its token limit, or a full
/// context) and releases its blocks at once.
///
/// KV memory: when the pool cannot hold the positions a step needs, `step()` throws
/// `ModelError.kvCache(.memoryExhausted(...))` (the figures: blocks needed, available, total)
/// and changes nothing: no sequence advances, none is paused or dropped behind the caller's
/// back. The caller decides: `cancel` a sequence (its blocks go back to the pool) and step
/// again, or give up. Size the pool for the sequences expected (`init(sequences:)`).
///
/// Not thread-safe: one thread adds, steps and cancels.
public final class BatchGenerator {
    public let model: DecoderModel
    /// Where every sequence's keys and values live.
    public let kvPool: KVBlockPool
    public let pool: ThreadPool
    /// Positions each sequence may hold (prompt and generated tokens).
    public let contextLength: Int
    /// Largest number of prompt tokens evaluated in one step (across sequences); decode
    /// tokens always run, one per sequence.
    public var maxBatch = 512 {
        didSet { precondition(maxBatch > 0, "maxBatch must be positive") }
    }
    private let workspace = Workspace()
    private var sequences: [Sequence] = []
    private var nextID = 0

    /// Names one sequence of this generator.
    public struct SequenceID: Hashable, Comparable, Sendable, CustomStringConvertible {
        public let rawValue: Int
        public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
        public var description: String { "#\(rawValue)" }
    }

    /// Why a sequence stopped.
    public enum FinishReason: Sendable, Equatable {
        /// It sampled an end-of-generation token (which is reported, as the last token).
        case endOfGeneration
        /// It generated its `maxTokens`.
        case maxTokens
        /// Its context has no room for another position.
        case contextFull
    }

    /// A token one sequence produced in a step; `finished` is set on its last one.
    public struct Token: Sendable, Equatable {
        public let sequence: SequenceID
        public let token: Int
        public let finished: FinishReason?
    }

    /// A prompt evaluated once, which any number of sequences continue (`add(continuing:)`)
    /// sharing its KV blocks. Its blocks stay referenced while it lives.
    public final class SharedPrompt {
        public let tokens: [Int]
        let cache: KVSequence
        /// The logits after its last token: every continuation samples its first token from them.
        let logits: [Float]

        init(tokens: [Int], cache: KVSequence, logits: [Float]) {
            self.tokens = tokens
            self.cache = cache
            self.logits = logits
        }
    }

    private final class Sequence {
        let id: SequenceID
        let cache: KVSequence
        var sampler: Sampler
        let maxTokens: Int
        let isEndOfGeneration: (Int) -> Bool
        /// Tokens to evaluate next: what is left of the prompt, or the token last sampled.
        var input: [Int]
        /// Logits to sample the next token from (after the whole input was evaluated).
        var logits: [Float]?
        var generated = 0
        /// Sequences to fork from this one once its prompt is evaluated (`add(prompt:samplers:)`).
        var forks: [(id: SequenceID, sampler: Sampler)] = []

        init(id: SequenceID, cache: KVSequence, sampler: Sampler, maxTokens: Int,
             isEndOfGeneration: @escaping (Int) -> Bool, input: [Int], logits: [Float]?) {
            self.id = id
            self.cache = cache
            self.sampler = sampler
            self.maxTokens = maxTokens
            self.isEndOfGeneration = isEndOfGeneration
            self.input = input
            self.logits = logits
        }
    }

    /// - Parameters:
    ///   - contextLength: positions each sequence may hold (at most the model's own;
    ///     default min(model's, 4096)).
    ///   - kvPool: where the keys and values live (made for this model). Default: a pool
    ///     of `sequences` full contexts, plus one block per sequence for copy-on-write.
    ///   - sequences: how many sequences the default pool is sized for.
    ///   - kvType: the block type of the default pool (precondition: it fits the model).
    public init(model: DecoderModel, contextLength: Int? = nil, threads: Int? = nil, kvPool: KVBlockPool? = nil,
                sequences expected: Int = 1, kvType: KVType = .f16) {
        precondition(expected > 0, "size the pool for at least one sequence")
        self.model = model
        let capacity = model.contextLength(asked: contextLength)
        self.contextLength = capacity
        if let kvPool {
            precondition(kvPool.owner == ObjectIdentifier(model), "the KV pool was made for another model")
            self.kvPool = kvPool
        } else {
            let layout = model.kvLayout(type: kvType)
            self.kvPool = KVBlockPool(layout: layout, blocks: model.kvBlocks(layout, positions: capacity, sequences: expected),
                                      owner: ObjectIdentifier(model))
        }
        pool = ThreadPool(threadCount: threads ?? ThreadPool.defaultThreadCount)
    }

    /// The sequences that have not finished, in the order they joined.
    public var activeSequences: [SequenceID] { sequences.flatMap { [$0.id] + $0.forks.map(\.id) } }
    public var isEmpty: Bool { sequences.isEmpty }

    /// Positions sequence `id` holds, nil when it is not active.
    public func position(of id: SequenceID) -> Int? { sequences.first { $0.id == id }?.cache.count }

    /// Evaluates `prompt` once (in chunks of `maxBatch`) for sequences to continue with
    /// `add(continuing:)`. A prefix of it already in the pool's prefix cache is reused.
    public func prefill(_ prompt: [Int]) throws(ModelError) -> SharedPrompt {
        guard !prompt.isEmpty else { throw .emptyInput }
        guard prompt.count <= contextLength else { throw .contextOverflow(needed: prompt.count, capacity: contextLength) }
        let cache = kvPool.makeSequence(capacity: contextLength)
        var start = cache.reuseCachedPrefix(of: prompt, limit: prompt.count - 1)
        var logits: [Float] = []
        while start < prompt.count {
            let end = min(start + maxBatch, prompt.count)
            logits = try model.forward(Array(prompt[start..<end]), cache: cache, logits: end == prompt.count ? .last : .none,
                                       workspace: workspace, pool: pool)
            start = end
        }
        return SharedPrompt(tokens: prompt, cache: cache, logits: logits)
    }

    /// Adds a sequence that evaluates `prompt` (in the coming steps, with the other
    /// sequences) then generates up to `maxTokens` tokens. A prefix of the prompt already in
    /// the pool's prefix cache is reused, not evaluated again.
    @discardableResult
    public func add(prompt: [Int], sampler: Sampler, maxTokens: Int,
                    isEndOfGeneration: @escaping (Int) -> Bool) throws(ModelError) -> SequenceID {
        try add(prompt: prompt, samplers: [sampler], maxTokens: maxTokens, isEndOfGeneration: isEndOfGeneration).ids[0]
    }

    /// Adds one sequence per sampler, all continuing `prompt`: the prompt is evaluated once
    /// (in the coming steps, with the other sequences; a prefix of it in the pool's prefix
    /// cache is reused), then the others fork from the first, sharing its KV blocks
    /// copy-on-write, and every one samples its first token from the prompt's logits in
    /// the same step and generates up to `maxTokens` tokens. Returns their ids, the first
    /// one's first, and how many prompt tokens came from the prefix cache.
    public func add(prompt: [Int], samplers: [Sampler], maxTokens: Int,
                    isEndOfGeneration: @escaping (Int) -> Bool) throws(ModelError) -> (ids: [SequenceID], reusedTokens: Int) {
        guard !prompt.isEmpty else { throw .emptyInput }
        precondition(maxTokens > 0, "a sequence generates at least one token")
        precondition(!samplers.isEmpty, "add at least one sequence")
        for t in prompt where t < 0 || t >= model.vocabularySize {
            throw .tokenOutOfRange(token: t, vocabularySize: model.vocabularySize)
        }
        guard prompt.count <= contextLength else { throw .contextOverflow(needed: prompt.count, capacity: contextLength) }
        let cache = kvPool.makeSequence(capacity: contextLength)
        let reused = cache.reuseCachedPrefix(of: prompt, limit: prompt.count - 1)
        let accepting = samplers.map { sampler in
            var sampler = sampler
            for t in prompt { sampler.accept(t) }
            return sampler
        }
        let first = Sequence(id: makeID(), cache: cache, sampler: accepting[0], maxTokens: maxTokens,
                             isEndOfGeneration: isEndOfGeneration, input: Array(prompt[reused...]), logits: nil)
        first.forks = accepting.dropFirst().map { (makeID(), $0) }
        _ = append(first)
        return ([first.id] + first.forks.map(\.id), reused)
    }

    /// Adds a sequence continuing `shared`: it shares the prompt's KV blocks (copied when
    /// first written), samples its first token from the prompt's logits in the next step,
    /// then generates up to `maxTokens` tokens in all.
    @discardableResult
    public func add(continuing shared: SharedPrompt, sampler: Sampler, maxTokens: Int,
                    isEndOfGeneration: @escaping (Int) -> Bool) -> SequenceID {
        precondition(maxTokens > 0, "a sequence generates at least one token")
        precondition(shared.cache.pool === kvPool, "the shared prompt was evaluated by another generator")
        var sampler = sampler
        for t in shared.tokens { sampler.accept(t) }
        return append(Sequence(id: makeID(), cache: shared.cache.fork(), sampler: sampler, maxTokens: maxTokens,
                               isEndOfGeneration: isEndOfGeneration, input: [], logits: shared.logits))
    }

    /// Stops sequence `id` and releases its blocks (nothing when it is not active). A
    /// sequence whose prompt is still being evaluated for forks hands that work to its first
    /// fork not cancelled too.
    public func cancel(_ id: SequenceID) {
        guard let i = sequences.firstIndex(where: { $0.id == id }) else {
            for s in sequences { s.forks.removeAll { $0.id == id } }
            return
        }
        let s = sequences[i]
        if let heir = s.forks.first {
            // The prompt's evaluation goes on under the first fork's id.
            let next = Sequence(id: heir.id, cache: s.cache, sampler: heir.sampler, maxTokens: s.maxTokens,
                                isEndOfGeneration: s.isEndOfGeneration, input: s.input, logits: s.logits)
            next.forks = Array(s.forks.dropFirst())
            sequences[i] = next
        } else {
            sequences.remove(at: i)
        }
    }

    private func makeID() -> SequenceID {
        defer { nextID += 1 }
        return SequenceID(rawValue: nextID)
    }

    private func append(_ s: Sequence) -> SequenceID {
        sequences.append(s)
        return s.id
    }

    /// One forward pass over every active sequence's pending input (one decode token each,
    /// and prompt tokens up to `maxBatch`), then one sampled token per sequence whose input is
    /// all evaluated, in the order the sequences joined. Finished sequences leave (their
    /// blocks are released) with their last token. On an error nothing changes (see the
    /// type's notes on KV memory).
    public func step() throws(ModelError) -> [Token] {
        var chunks: [SequenceChunk] = []
        var owners: [Sequence] = []
        // Decode tokens first: they never wait for prompts.
        for s in sequences where s.logits == nil && s.generated > 0 {
            chunks.append(SequenceChunk(tokens: s.input, cache: s.cache, logits: .last))
            owners.append(s)
        }
        var budget = maxBatch
        for s in sequences where s.logits == nil && s.generated == 0 && budget > 0 {
            let count = min(budget, s.input.count)
            chunks.append(SequenceChunk(tokens: Array(s.input.prefix(count)), cache: s.cache,
                                        logits: count == s.input.count ? .last : .none))
            owners.append(s)
            budget -= count
        }
        if !chunks.isEmpty {
            let logits = try model.forward(chunks, workspace: workspace, pool: pool)
            var forked: [(after: SequenceID, sequences: [Sequence])] = []
            for (i, s) in owners.enumerated() {
                s.input.removeFirst(chunks[i].tokens.count)
                guard s.input.isEmpty else { continue }
                s.logits = logits[i]
                if !s.forks.isEmpty {
                    forked.append((s.id, s.forks.map {
                        Sequence(id: $0.id, cache: s.cache.fork(), sampler: $0.sampler, maxTokens: s.maxTokens,
                                 isEndOfGeneration: s.isEndOfGeneration, input: [], logits: logits[i])
                    }))
                    s.forks = []
                }
            }
            for f in forked {
                let at = sequences.firstIndex { $0.id == f.after }! + 1
                sequences.insert(contentsOf: f.sequences, at: at)
            }
        }

        var produced: [Token] = []
        var finishedAny = false
        for s in sequences {
            guard let logits = s.logits else { continue }
            let next = logits.withUnsafeBufferPointer { s.sampler.sample($0) }
            s.sampler.accept(next)
            s.generated += 1
            s.logits = nil
            var finished: FinishReason?
            if s.isEndOfGeneration(next) {
                finished = .endOfGeneration
            } else if s.generated >= s.maxTokens {
                finished = .maxTokens
            } else if s.cache.count >= s.cache.capacity {
                finished = .contextFull
            } else {
                s.input = [next]
            }
            if finished != nil { finishedAny = true }
            produced.append(Token(sequence: s.id, token: next, finished: finished))
        }
        if finishedAny {
            let done = Set(produced.filter { $0.finished != nil }.map(\.sequence))
            sequences.removeAll { done.contains($0.id) }
        }
        return produced
    }
}
