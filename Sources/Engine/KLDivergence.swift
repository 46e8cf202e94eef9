import Foundation

/// The KL divergence of next-token distributions and its statistics, as pure functions.
///
/// KL(P‖Q) = Σᵢ pᵢ (log pᵢ − log qᵢ) in nats, with P the reference (base) run and Q the run
/// being measured: the extra surprise per token the approximation adds where the reference
/// is confident. Inputs are log-probabilities or logits; both are normalized here (log-sum-
/// exp in double precision), so rounded log-probabilities read from a file still form a
/// distribution and a distribution compared with itself gives exactly 0.
public enum KLDivergence {
    /// log Σ exp(xᵢ), in double precision.
    public static func logSumExp(_ x: UnsafeBufferPointer<Float>) -> Double {
        var maximum = -Float.infinity
        for v in x where v > maximum { maximum = v }
        guard maximum.isFinite else { return Double(maximum) }
        let m = Double(maximum)
        var sum = 0.0
        for v in x { sum += exp(Double(v) - m) }
        return m + log(sum)
    }

    /// KL(base‖other) of the distributions softmax(base) and softmax(other), ≥ 0.
    /// Terms where the base probability underflows to 0 contribute 0; a token the base
    /// finds possible and `other` impossible makes it +∞.
    public static func divergence(base: UnsafeBufferPointer<Float>, other: UnsafeBufferPointer<Float>) -> Double {
        precondition(base.count == other.count, "distributions over different vocabularies")
        return divergence(base: base, baseLogSumExp: logSumExp(base), other: other, otherLogSumExp: logSumExp(other))
    }

    /// As `divergence(base:other:)`, with both log-sum-exps already known.
    public static func divergence(base: UnsafeBufferPointer<Float>, baseLogSumExp lb: Double,
                                  other: UnsafeBufferPointer<Float>, otherLogSumExp lo: Double) -> Double {
        var sum = 0.0
        for i in 0..<base.count {
            let logP = Double(base[i]) - lb
            let p = exp(logP)
            if p > 0 { sum += p * (logP - (Double(other[i]) - lo)) }
        }
        // Mathematically ≥ 0; rounding may leave a few ulps below.
        return sum.isNaN ? sum : max(0, sum)
    }

    public static func divergence(base: [Float], other: [Float]) -> Double {
        base.withUnsafeBufferPointer { b in other.withUnsafeBufferPointer { o in divergence(base: b, other: o) } }
    }

    /// Index of the largest value (the first of equals).
    public static func argmax(_ x: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        var value = -Float.infinity
        for i in 0..<x.count where x[i] > value {
            value = x[i]
            best = i
        }
        return best
    }

    /// The q-quantile (0...1) of sorted values, interpolating linearly between the two
    /// nearest ranks (numpy's default): q = 0.5 is the median.
    public static func quantile(sorted: [Double], _ q: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = q * Double(sorted.count - 1)
        let low = Int(rank.rounded(.down)), high = Int(rank.rounded(.up))
        return sorted[low] + (sorted[high] - sorted[low]) * (rank - Double(low))
    }

    /// The figures of a comparison, from the KL of every position, whether each position's
    /// arg-max matched the base's, and the base's log-probability of each scored token.
    public static func summarize(divergences: [Double], sameTopToken: Int, baseTokenLogProbabilities: [Double]) -> KLDivergenceSummary {
        var s = KLDivergenceSummary()
        let n = divergences.count
        s.positions = n
        s.sameTopToken = sameTopToken
        guard n > 0 else { return s }
        let mean = divergences.reduce(0, +) / Double(n)
        s.mean = mean
        if n > 1 {
            let squares = divergences.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
            s.meanError = (squares / Double(n - 1) / Double(n)).squareRoot()
        }
        let sorted = divergences.sorted()
        s.median = quantile(sorted: sorted, 0.5)
        s.p99 = quantile(sorted: sorted, 0.99)
        s.maximum = sorted.last!
        let m = baseTokenLogProbabilities.count
        if m > 0 {
            let nll = baseTokenLogProbabilities.map { -$0 }
            let meanNLL = nll.reduce(0, +) / Double(m)
            s.baseMeanNLL = meanNLL
            s.basePerplexity = exp(meanNLL)
            // As PerplexityEvaluator: the standard error of the mean NLL, carried to perplexity.
            let variance = nll.reduce(0) { $0 + $1 * $1 } / Double(m) - meanNLL * meanNLL
            s.basePerplexityError = variance > 0 && m > 1 ? (variance / Double(m - 1)).squareRoot() * s.basePerplexity : 0
        }
        return s
    }
}

/// How far a run's next-token distributions are from a base run's.
public struct KLDivergenceSummary: Sendable, Equatable {
    public var positions = 0
    /// Mean KL divergence (nats per position) and the standard error of that mean.
    public var mean = 0.0
    public var meanError = 0.0
    public var median = 0.0
    /// 99th percentile.
    public var p99 = 0.0
    public var maximum = 0.0
    /// Positions whose arg-max token is the base's.
    public var sameTopToken = 0
    public var sameTopTokenFraction: Double { positions > 0 ? Double(sameTopToken) / Double(positions) : 0 }
    /// The base run's perplexity, recomputed from its saved log-probabilities.
    public var baseMeanNLL = 0.0
    public var basePerplexity = 0.0
    public var basePerplexityError = 0.0

    public init() {}

    /// Perplexity change of `perplexity` against the base's, in percent.
    public func perplexityChangePercent(_ perplexity: Double) -> Double {
        (perplexity / basePerplexity - 1) * 100
    }
}

/// Compares a perplexity run with a saved base, position by position: KL divergence, top
/// token agreement and the base's own log-likelihood of the scored tokens. Pass it to
/// `PerplexityEvaluator.evaluate(_:session:observers:progress:)`, then read `summary()`.
public final class KLDivergenceComparison: PerplexityObserver {
    public let base: LogProbabilityFile.Reader
    private var divergences: [Double] = []
    private var baseTokenLogProbabilities: [Double] = []
    private var sameTop = 0
    private var row: [Float]

    public init(base: LogProbabilityFile.Reader) {
        self.base = base
        row = [Float](repeating: 0, count: base.header.vocabularySize)
        divergences.reserveCapacity(base.header.scoredPositions)
        baseTokenLogProbabilities.reserveCapacity(base.header.scoredPositions)
    }

    public func observe(chunk: Int, logits: UnsafeBufferPointer<Float>, targets: ArraySlice<Int>) throws(LogProbabilityFileError) {
        let v = base.header.vocabularySize
        guard logits.count == targets.count * v else {
            throw LogProbabilityFileError(path: base.path, problem: .vocabularyMismatch(base: v, model: logits.count / max(targets.count, 1)))
        }
        for (k, target) in targets.enumerated() {
            let current = UnsafeBufferPointer(rebasing: logits[(k * v)..<((k + 1) * v)])
            let top = try row.withUnsafeMutableBufferPointer { buffer throws(LogProbabilityFileError) in
                try base.nextRecord(into: buffer)
            }
            row.withUnsafeBufferPointer { b in
                let lb = KLDivergence.logSumExp(b)
                divergences.append(KLDivergence.divergence(base: b, baseLogSumExp: lb,
                                                           other: current, otherLogSumExp: KLDivergence.logSumExp(current)))
                baseTokenLogProbabilities.append(Double(b[target]) - lb)
            }
            if KLDivergence.argmax(current) == top { sameTop += 1 }
        }
    }

    /// The figures; every position of the base must have been compared.
    public func summary() throws(LogProbabilityFileError) -> KLDivergenceSummary {
        guard divergences.count == base.header.scoredPositions else {
            throw LogProbabilityFileError(path: base.path, problem: .positionCountMismatch(base: base.header.scoredPositions,
                                                                                          run: divergences.count))
        }
        return KLDivergence.summarize(divergences: divergences, sameTopToken: sameTop,
                                      baseTokenLogProbabilities: baseTokenLogProbabilities)
    }
}
