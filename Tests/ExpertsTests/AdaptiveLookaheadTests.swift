import Testing
@testable import Experts

@Suite("Adaptive look-ahead")
struct AdaptiveLookaheadTests {
    @Test("before any measurement: one layer ahead, a token's worth of candidates")
    func defaults() {
        let a = AdaptiveLookahead()
        #expect(a.depth == 1)
        #expect(a.candidates(k: 8, expertCount: 64) == 8)
    }

    @Test("reads slower than a layer's compute look further ahead, up to the maximum")
    func depthFollowsReadTime() {
        var a = AdaptiveLookahead()
        // 16 layers in 32 ms (2 ms each); 64 experts read in 160 ms of disk time (2.5 ms each),
        // 4 per layer: 10 ms of reading per 2 ms layer, capped at 3.
        a.record(layers: 16, computeSeconds: 0.032, expertsRead: 64, readSeconds: 0.160)
        #expect(a.depth == 3)
        #expect(a.candidates(k: 8, expertCount: 64) == 8, "no spare disk time")
        // A warm pool: 8 experts read in 20 ms over 16 layers; the average moves towards it.
        for _ in 0..<40 { a.record(layers: 16, computeSeconds: 0.032, expertsRead: 8, readSeconds: 0.020) }
        #expect(a.depth == 1)
    }

    @Test("spare disk time buys more candidates, at most twice k and never more than there are experts")
    func candidatesFollowSpareTime() {
        var a = AdaptiveLookahead()
        // 4 ms per layer, 0.5 ms per expert, 1 read per layer: room for 7 more.
        a.record(layers: 10, computeSeconds: 0.040, expertsRead: 10, readSeconds: 0.005)
        #expect(a.candidates(k: 2, expertCount: 8) == 4)
        #expect(a.candidates(k: 8, expertCount: 64) == 15)
        #expect(a.candidates(k: 6, expertCount: 8) == 8)
    }

    @Test("wasted prefetches raise the confidence bar; used ones lower it back to zero")
    func confidenceFollowsUsefulness() {
        var a = AdaptiveLookahead()
        #expect(a.minimumProbability == 0)
        for _ in 0..<10 { a.record(prefetchesUsed: 1, wasted: 9) }
        let raised = a.minimumProbability
        #expect(raised > 0.01 && raised <= 0.5)
        #expect(a.usefulness! < a.targetUsefulness)
        for _ in 0..<200 { a.record(prefetchesUsed: 10, wasted: 0) }
        #expect(a.minimumProbability == 0)
        // Nothing judged: nothing changes.
        a.record(prefetchesUsed: 0, wasted: 0)
        #expect(a.minimumProbability == 0)
    }
}
