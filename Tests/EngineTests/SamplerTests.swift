import Engine
import Testing

@Suite("Sampler")
struct SamplerTests {
    let logits: [Float] = [1.0, 3.0, 2.5, -1.0, 0.0, 2.9]

    func draw(_ p: SamplingParameters, times: Int = 2000, logits: [Float]? = nil) -> [Int: Int] {
        var sampler = Sampler(p)
        var counts: [Int: Int] = [:]
        let l = logits ?? self.logits
        for _ in 0..<times { counts[l.withUnsafeBufferPointer { sampler.sample($0) }, default: 0] += 1 }
        return counts
    }

    @Test func greedyPicksTheArgMax() {
        #expect(draw(.greedy, times: 10) == [1: 10])
    }

    @Test func topKOfOneIsGreedy() {
        var p = SamplingParameters()
        p.topK = 1
        p.temperature = 1.5
        #expect(draw(p, times: 50) == [1: 50])
    }

    @Test func sameSeedSameTokensDifferentSeedDifferentTokens() {
        var p = SamplingParameters()
        p.temperature = 1
        p.topK = 0
        p.topP = 1
        p.minP = 0
        p.seed = 42
        func sequence(_ seed: UInt64) -> [Int] {
            var q = p
            q.seed = seed
            var s = Sampler(q)
            return (0..<64).map { _ in logits.withUnsafeBufferPointer { s.sample($0) } }
        }
        #expect(sequence(42) == sequence(42))
        #expect(sequence(42) != sequence(43))
    }

    @Test func minPAndTopPDropUnlikelyTokens() {
        var p = SamplingParameters()
        p.temperature = 1
        p.topK = 0
        p.topP = 1
        p.minP = 0.5   // keeps tokens with probability ≥ half the best: ids 1, 5, 2
        p.seed = 7
        #expect(Set(draw(p).keys) == [1, 2, 5])
        p.minP = 0
        p.topP = 0.5   // the two best (1: 0.35, 5: 0.32) reach 0.5
        #expect(Set(draw(p).keys) == [1, 5])
    }

    @Test func frequenciesFollowTheSoftmax() {
        var p = SamplingParameters()
        p.temperature = 1
        p.topK = 0
        p.topP = 1
        p.minP = 0
        p.seed = 3
        let l: [Float] = [0, 0.6931472]  // e^0 : e^ln2 = 1 : 2, probabilities 1/3 and 2/3
        let counts = draw(p, times: 6000, logits: l)
        let share = Double(counts[1, default: 0]) / 6000
        #expect(abs(share - 2.0 / 3.0) < 0.03)
    }

    @Test func repetitionPenaltyLowersSeenTokens() {
        var p = SamplingParameters.greedy
        p.repeatPenalty = 1.5
        var s = Sampler(p)
        s.accept(1)
        // 3.0 / 1.5 = 2.0 < 2.9: the seen best token loses to id 5.
        #expect(logits.withUnsafeBufferPointer { s.sample($0) } == 5)
    }

    @Test func presencePenaltySubtractsOnceForASeenToken() {
        var p = SamplingParameters.greedy
        p.presencePenalty = 0.2
        var s = Sampler(p)
        for _ in 0..<3 { s.accept(1) }
        // 3.0 - 0.2 = 2.8 < 2.9, however often it was seen.
        #expect(logits.withUnsafeBufferPointer { s.sample($0) } == 5)
    }

    @Test func frequencyPenaltyGrowsWithTheCount() {
        var p = SamplingParameters.greedy
        p.frequencyPenalty = 0.05
        var once = Sampler(p)
        once.accept(1)
        // Once: 3.0 - 0.05 = 2.95 still beats 2.9; three times: 3.0 - 0.15 = 2.85 does not.
        #expect(logits.withUnsafeBufferPointer { once.sample($0) } == 1)
        var thrice = Sampler(p)
        for _ in 0..<3 { thrice.accept(1) }
        #expect(logits.withUnsafeBufferPointer { thrice.sample($0) } == 5)
    }
}
