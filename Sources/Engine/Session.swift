import Host
import KV
import Kernels
import Models
import Tokenizer

/// A model plus the state of one conversation: its KV sequence, scratch memory, threads.
public final class Session {
    public let model: DecoderModel
    /// This conversation's keys and values: a sequence of blocks in a `KVBlockPool`.
    public let cache: KVSequence
    public let pool: ThreadPool
    private let workspace = Workspace()
    /// Largest batch evaluated at once; longer prompts run in chunks (as llama.cpp's ubatch).
    public var maxBatch = 512
    /// Seconds per position of the last prompt-sized evaluation (at least
    /// `Self.rateSampleTokens` tokens): what recomputing a restored prefix is estimated to
    /// cost (`restore`). Nil until measured (or taken from a session file).
    public var prefillSecondsPerPosition: Double?
    static let rateSampleTokens = 16
    /// `SessionFile`'s fingerprint of the model, once computed.
    var modelFingerprint: UInt64?

    /// - Parameters:
    ///   - contextLength: positions the cache holds (at most the model's own).
    ///   - kvPool: where the keys and values live; sessions sharing a pool share cached
    ///     prefixes (`reuseCachedPrefix`). Default: a pool of the session's own, sized for
    ///     its context.
    ///   - kvType: the block type of that default pool (precondition: it fits the model,
    ///     `DecoderModel.checkKVType`); a given pool has its own.
    public init(model: DecoderModel, contextLength: Int? = nil, threads: Int? = nil, kvPool: KVBlockPool? = nil,
                kvType: KVType = .f16) {
        self.model = model
        let capacity = model.contextLength(asked: contextLength)
        if let kvPool {
            precondition(kvPool.owner == ObjectIdentifier(model), "the KV pool was made for another model")
            cache = kvPool.makeSequence(capacity: capacity)
        } else {
            cache = model.makeCache(capacity: capacity, type: kvType)
        }
        pool = ThreadPool(threadCount: threads ?? ThreadPool.defaultThreadCount)
    }

    /// Positions used so far.
    public var position: Int { cache.count }

    /// Forgets everything from `position` on.
    public func rewind(to position: Int) { cache.truncate(to: position) }

    /// On an empty session, takes the longest prefix of `tokens` whose keys and values are
    /// in the pool's prefix cache (whole blocks, leaving at least the last token to
    /// evaluate) and returns its length: evaluate `tokens[result...]` next.
    @discardableResult
    public func reuseCachedPrefix(of tokens: [Int]) -> Int {
        precondition(position == 0, "prefix reuse starts an empty session")
        return cache.reuseCachedPrefix(of: tokens, limit: tokens.count - 1)
    }

    /// Appends `tokens` to the context and returns logits for the selected positions
    /// (`vocabularySize` values each).
    public func evaluate(_ tokens: [Int], logits selection: LogitsSelection = .last) throws(ModelError) -> [Float] {
        guard !tokens.isEmpty else { throw .emptyInput }
        guard cache.count + tokens.count <= cache.capacity else {
            throw .contextOverflow(needed: cache.count + tokens.count, capacity: cache.capacity)
        }
        var result: [Float] = []
        var start = 0
        let clock = ContinuousClock()
        let began = clock.now
        defer {
            if tokens.count >= Self.rateSampleTokens && start == tokens.count {
                prefillSecondsPerPosition = (clock.now - began).seconds / Double(tokens.count)
            }
        }
        while start < tokens.count {
            let end = min(start + maxBatch, tokens.count)
            let isLast = end == tokens.count
            let chunkSelection: LogitsSelection
            switch selection {
            case .all: chunkSelection = .all
            case .last: chunkSelection = isLast ? .last : .none
            case .none: chunkSelection = .none
            }
            result += try model.forward(Array(tokens[start..<end]), cache: cache, logits: chunkSelection,
                                        workspace: workspace, pool: pool)
            start = end
        }
        return result
    }
}

/// Timings and counts of one generation.
public struct GenerationStats: Sendable {
    public var promptTokens = 0
    public var promptSeconds = 0.0
    public var generatedTokens = 0
    public var generationSeconds = 0.0
    public var peakResidentBytes = 0

    public var promptTokensPerSecond: Double { promptSeconds > 0 ? Double(promptTokens) / promptSeconds : 0 }
    public var generationTokensPerSecond: Double { generationSeconds > 0 ? Double(generatedTokens) / generationSeconds : 0 }
}

extension Session {
    /// Evaluates `prompt`, then samples up to `maxTokens` tokens, calling `onToken` with
    /// each one (return false to stop). Stops early at an end-of-generation token or when
    /// the context is full.
    public func generate(prompt: [Int], maxTokens: Int, sampler: inout Sampler,
                         isEndOfGeneration: (Int) -> Bool,
                         onToken: (Int) -> Bool) throws(ModelError) -> GenerationStats {
        var stats = GenerationStats()
        for t in prompt { sampler.accept(t) }
        let clock = ContinuousClock()
        var started = clock.now
        var logits = try evaluate(prompt, logits: .last)
        stats.promptTokens = prompt.count
        stats.promptSeconds = (clock.now - started).seconds
        started = clock.now
        while stats.generatedTokens < maxTokens {
            let next = logits.withUnsafeBufferPointer { sampler.sample($0) }
            sampler.accept(next)
            stats.generatedTokens += 1
            if isEndOfGeneration(next) || !onToken(next) { break }
            if stats.generatedTokens == maxTokens || position >= cache.capacity { break }
            logits = try evaluate([next], logits: .last)
        }
        stats.generationSeconds = (clock.now - started).seconds
        stats.peakResidentBytes = ProcessMemory.peakResidentBytes()
        return stats
    }
}

import Foundation
