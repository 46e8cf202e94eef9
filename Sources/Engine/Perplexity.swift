import Foundation
import Models

/// Perplexity of a token stream, computed the way llama.cpp's `llama-perplexity` does so
/// that the two agree on the same file: the text is cut into non-overlapping chunks of
/// `contextLength` tokens, each evaluated from an empty cache (its first token replaced by
/// BOS when the vocabulary adds one), and only the second half of every chunk is scored,
/// so each scored token sees at least half a context of history.
public struct PerplexityEvaluator {
    public var contextLength: Int
    /// Score at most this many chunks (nil: all that fit).
    public var maxChunks: Int?
    /// Token that replaces each chunk's first token, when the model's vocabulary adds BOS.
    public var bos: Int?
    /// Tokens per forward pass within a chunk (nil: the whole chunk at once). 1 evaluates
    /// each token as decoding does, which is what token-level approximations (precision
    /// fallback decides per forward pass) need to be measured as they run.
    public var batchSize: Int?

    public init(contextLength: Int, maxChunks: Int? = nil, bos: Int? = nil) {
        self.contextLength = contextLength
        self.maxChunks = maxChunks
        self.bos = bos
    }

    /// Chunks `tokens` yields.
    public func chunkCount(tokens: Int) -> Int {
        let all = tokens / contextLength
        return min(all, maxChunks ?? all)
    }

    /// The errors `evaluate` would stop at before evaluating anything.
    public func check(tokenCount: Int, session: Session) throws(PerplexityError) {
        guard contextLength >= 4 else { throw .contextTooSmall(contextLength) }
        guard contextLength <= session.cache.capacity else {
            throw .contextTooLarge(requested: contextLength, capacity: session.cache.capacity)
        }
        guard tokenCount >= 2 * contextLength else {
            throw .notEnoughTokens(have: tokenCount, need: 2 * contextLength, contextLength: contextLength)
        }
    }

    /// Positions scored in each chunk: the second half, but for the last token, which predicts nothing.
    public var scoredPerChunk: Int { contextLength - 1 - contextLength / 2 }

    /// 64-bit FNV-1a of the token ids fed to the model (`LogProbabilityFile`'s token hash):
    /// every evaluated chunk, its first token replaced by BOS where there is one.
    public func tokenHash(_ tokens: [Int]) -> UInt64 {
        var fed: [Int] = []
        fed.reserveCapacity(chunkCount(tokens: tokens.count) * contextLength)
        for chunk in 0..<chunkCount(tokens: tokens.count) {
            let start = chunk * contextLength
            fed += tokens[start..<(start + contextLength)]
            if let bos { fed[start] = bos }
        }
        return FNV1a64.tokens(fed)
    }

    /// The header a KL base of this evaluation of `tokens` by `model` carries.
    public func logProbabilityHeader(tokens: [Int], model: DecoderModel) -> LogProbabilityFile.Header {
        let chunks = chunkCount(tokens: tokens.count)
        let identity = LogProbabilityFile.modelIdentity(model)
        return LogProbabilityFile.Header(vocabularySize: model.vocabularySize, contextLength: contextLength,
                                         chunkCount: chunks, scoredPositions: chunks * scoredPerChunk,
                                         tokenHash: tokenHash(tokens), modelName: identity.name, modelSize: identity.size)
    }

    /// Scores `tokens`; `progress(done, total, runningPerplexity)` is called after each chunk,
    /// and every observer sees each chunk's scored logits (to save or compare them).
    public func evaluate(_ tokens: [Int], session: Session, observers: [any PerplexityObserver] = [],
                         progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws(PerplexityError) -> PerplexityResult {
        try check(tokenCount: tokens.count, session: session)
        let chunks = chunkCount(tokens: tokens.count)
        let vocabulary = session.model.vocabularySize
        let first = contextLength / 2
        var result = PerplexityResult(contextLength: contextLength)
        var nll = 0.0, nll2 = 0.0
        for chunk in 0..<chunks {
            let start = chunk * contextLength
            var input = Array(tokens[start..<(start + contextLength)])
            if let bos { input[0] = bos }
            session.rewind(to: 0)
            var logits: [Float] = []
            let batch = max(batchSize ?? contextLength, 1)
            do {
                var done = 0
                while done < contextLength {
                    let n = min(batch, contextLength - done)
                    logits += try session.evaluate(Array(input[done..<(done + n)]), logits: .all)
                    done += n
                }
            } catch { throw .model(error) }
            var chunkNLL = 0.0
            logits.withUnsafeBufferPointer { all in
                for i in first..<(contextLength - 1) {
                    let row = UnsafeBufferPointer(rebasing: all[(i * vocabulary)..<((i + 1) * vocabulary)])
                    let v = -logProbability(row, of: tokens[start + i + 1])
                    chunkNLL += v
                    nll2 += v * v
                }
            }
            if !observers.isEmpty {
                let targets = tokens[(start + first + 1)..<(start + contextLength)]
                do {
                    try logits.withUnsafeBufferPointer { all throws(LogProbabilityFileError) in
                        let rows = UnsafeBufferPointer(rebasing: all[(first * vocabulary)..<((contextLength - 1) * vocabulary)])
                        for observer in observers { try observer.observe(chunk: chunk, logits: rows, targets: targets) }
                    }
                } catch { throw .logProbabilities(error) }
            }
            nll += chunkNLL
            result.scoredTokens += scoredPerChunk
            result.chunkNLL.append(chunkNLL / Double(scoredPerChunk))
            progress(chunk + 1, chunks, exp(nll / Double(result.scoredTokens)))
        }
        session.rewind(to: 0)
        let n = Double(result.scoredTokens)
        result.meanNLL = nll / n
        result.perplexity = exp(result.meanNLL)
        // The standard error of the mean NLL, carried to perplexity as llama.cpp reports it.
        let variance = nll2 / n - result.meanNLL * result.meanNLL
        result.perplexityError = variance > 0 && n > 1 ? (variance / (n - 1)).squareRoot() * result.perplexity : 0
        return result
    }
}

/// Sees the logits of every scored position of a perplexity run, chunk after chunk
/// (`LogProbabilityFile.Writer` saves them, `KLDivergenceComparison` compares them).
public protocol PerplexityObserver: AnyObject {
    /// `logits`: `targets.count` rows of `vocabularySize` values, the scored positions of
    /// chunk `chunk` in order; `targets[i]` is the token row i predicts.
    func observe(chunk: Int, logits: UnsafeBufferPointer<Float>, targets: ArraySlice<Int>) throws(LogProbabilityFileError)
}

/// log p(token) under softmax(row), in double precision.
@inline(__always)
func logProbability(_ row: UnsafeBufferPointer<Float>, of token: Int) -> Double {
    var maximum = -Float.infinity
    for x in row where x > maximum { maximum = x }
    var sum = 0.0
    for x in row { sum += Double(expf(x - maximum)) }
    return Double(row[token] - maximum) - log(sum)
}

public struct PerplexityResult: Sendable, Equatable {
    public var contextLength: Int
    public var scoredTokens = 0
    /// Mean negative log-likelihood (nats per token) of each chunk's scored half.
    public var chunkNLL: [Double] = []
    public var meanNLL = 0.0
    public var perplexity = 0.0
    /// Standard error of the estimate, in perplexity units.
    public var perplexityError = 0.0
}

public enum PerplexityError: Error, CustomStringConvertible {
    case notEnoughTokens(have: Int, need: Int, contextLength: Int)
    case contextTooSmall(Int)
    case contextTooLarge(requested: Int, capacity: Int)
    case model(ModelError)
    /// Saving or comparing log-probabilities (`--kl-base`, `--kl-compare`) failed.
    case logProbabilities(LogProbabilityFileError)

    public var description: String {
        switch self {
        case let .notEnoughTokens(have, need, ctx):
            return "the text has \(have) tokens; perplexity with a context of \(ctx) needs at least \(need) (2 × context)"
        case let .contextTooSmall(n):
            return "a perplexity context of \(n) tokens is too small (at least 4)"
        case let .contextTooLarge(requested, capacity):
            return "a perplexity context of \(requested) tokens exceeds the model's context of \(capacity)"
        case let .model(e):
            return e.description
        case let .logProbabilities(e):
            return e.description
        }
    }
}
