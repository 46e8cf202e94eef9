/// Settings of the token sampler. Defaults match llama.cpp's command-line defaults.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 or below: greedy (arg-max).
    public var temperature: Float = 0.8
    /// Keep the k most likely tokens (0: all).
    public var topK: Int = 40
    /// Keep the smallest set whose probability reaches p (1: all).
    public var topP: Float = 0.95
    /// Drop tokens less likely than minP × the most likely one (0: none).
    public var minP: Float = 0.05
    /// Divide positive (multiply negative) logits of recently seen tokens by this (1: off).
    public var repeatPenalty: Float = 1.0
    /// How many recent tokens the penalties look at.
    public var repeatWindow: Int = 64
    /// Subtracted from the logit of every token seen in the window (OpenAI's
    /// `presence_penalty`; 0: off).
    public var presencePenalty: Float = 0
    /// Subtracted from a token's logit once for each time it occurs in the window (OpenAI's
    /// `frequency_penalty`; 0: off).
    public var frequencyPenalty: Float = 0
    public var seed: UInt64 = 0

    public init() {}

    public static var greedy: SamplingParameters {
        var p = SamplingParameters()
        p.temperature = 0
        return p
    }
}

/// Picks the next token from logits: penalties, top-k, top-p, min-p, temperature, then a
/// draw from a seeded generator, so the same seed gives the same text.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var rng: SplitMix64
    private var recent: [Int] = []
    private var candidates: [(id: Int, logit: Float)] = []

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        rng = SplitMix64(seed: parameters.seed)
    }

    /// Records a token of the context (prompt or output) for the repetition penalty.
    public mutating func accept(_ token: Int) {
        recent.append(token)
        if recent.count > max(parameters.repeatWindow, 0) { recent.removeFirst(recent.count - parameters.repeatWindow) }
    }

    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        let p = parameters
        var penalized: [Int: Float] = [:]
        if p.repeatPenalty != 1 || p.presencePenalty != 0 || p.frequencyPenalty != 0 {
            // In llama.cpp's order: the repetition penalty, then frequency and presence.
            var counts: [Int: Int] = [:]
            for t in recent where t >= 0 && t < logits.count { counts[t, default: 0] += 1 }
            for (t, count) in counts {
                var l = logits[t]
                if p.repeatPenalty != 1 { l = l > 0 ? l / p.repeatPenalty : l * p.repeatPenalty }
                l -= Float(count) * p.frequencyPenalty + p.presencePenalty
                penalized[t] = l
            }
        }
        @inline(__always) func logit(_ i: Int) -> Float { penalized[i] ?? logits[i] }

        if p.temperature <= 0 {
            var best = 0
            var bestValue = -Float.infinity
            for i in 0..<logits.count where logit(i) > bestValue { bestValue = logit(i); best = i }
            return best
        }

        candidates.removeAll(keepingCapacity: true)
        for i in 0..<logits.count { candidates.append((i, logit(i))) }
        if p.topK > 0 && p.topK < candidates.count {
            candidates = Array(candidates.sorted { $0.logit > $1.logit }.prefix(p.topK))
        } else {
            candidates.sort { $0.logit > $1.logit }
        }
        // Probabilities at temperature 1 for top-p and min-p, as llama.cpp's chain does.
        var probs = softmax(candidates.map(\.logit))
        if p.topP < 1 {
            var cumulative: Float = 0
            var keep = candidates.count
            for (i, q) in probs.enumerated() {
                cumulative += q
                if cumulative >= p.topP { keep = i + 1; break }
            }
            candidates.removeLast(candidates.count - keep)
            probs.removeLast(probs.count - keep)
        }
        if p.minP > 0, let top = probs.first {
            let keep = max(1, probs.firstIndex(where: { $0 < p.minP * top }) ?? probs.count)
            candidates.removeLast(candidates.count - keep)
        }
        let final = softmax(candidates.map { $0.logit / p.temperature })
        let r = Float(Double(rng.next() >> 11) / Double(1 << 53))
        var cumulative: Float = 0
        for (i, q) in final.enumerated() {
            cumulative += q
            if r < cumulative { return candidates[i].id }
        }
        return candidates[candidates.count - 1].id
    }

    private func softmax(_ x: [Float]) -> [Float] {
        guard let m = x.max() else { return [] }
        let e = x.map { Float(Foundation.exp(Double($0 - m))) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }
}

/// splitmix64: small, fast and reproducible across platforms.
struct SplitMix64: Sendable {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

import Foundation
