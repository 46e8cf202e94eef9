import Foundation
import TestSupport
import Testing
@testable import TraceLab

/// `RoutingStats` on sequences small enough to work out by hand (the figures in the comments
/// are the hand computation), and on the shared trace.
@Suite("routing statistics")
struct RoutingStatsTests {
    /// One MoE layer of 4 experts at top 2, one sequence of the given tokens.
    static func routing(_ tokens: [[Int32]], decode: Bool = true) -> TokenRouting {
        var r = TokenRouting(moeLayers: [0], expertsPerToken: 2)
        var streams = StreamAssigner()
        for (p, e) in tokens.enumerated() {
            r.stream.append(streams.stream(at: p))
            r.position.append(p)
            r.isDecode.append(decode)
            r.experts += e
        }
        return r
    }

    /// t0 {0,1}, t1 {0,2}, t2 {0,1}, t3 {3,2}.
    static let example = routing([[0, 1], [0, 2], [0, 1], [3, 2]])

    func stats(_ r: TokenRouting, top: [Int] = [1, 2], segments: [Int] = [2, 3, 4], caches: [Int] = [2, 3]) -> RoutingStats {
        RoutingStats.measure(r, experts: 4, options: RoutingStats.Options(topCounts: top, segmentLengths: segments, cacheSizes: caches))
    }

    @Test("popularity: 4 distinct; expert 0 carries 3 of 8 uses, 0 and 1 (or 2) carry 5")
    func popularity() {
        let s = stats(Self.example)
        #expect(s.overall.distinct == 4 && s.tokens == 4 && s.streams == 1)
        #expect(s.overall.topShare.map(\.part) == [3, 5] && s.overall.topShare.map(\.whole) == [8, 8])
    }

    @Test("hot list from t0,t1 (0 twice, 1 and 2 once: {0}, then {0,1} by the lower id) recalls 1 and 2 of t2,t3's 4 uses")
    func hotList() {
        let s = stats(Self.example)
        #expect(s.overall.hotListRecall == [RoutingStats.Share(part: 1, whole: 4), RoutingStats.Share(part: 2, whole: 4)])
    }

    @Test("overlap: with the token before, 0 of t1, 0 of t2, nothing of t3: 2 of 6; with the two before, 2 of t2 and 2 of t3: 3 of 4")
    func overlap() {
        let s = stats(Self.example)
        #expect(s.overall.overlap[0] == RoutingStats.Share(part: 2, whole: 6))
        #expect(s.overall.overlap[1] == RoutingStats.Share(part: 3, whole: 4))
        #expect(s.overall.overlap[2] == RoutingStats.Share(part: 1, whole: 2), "t3 against t0..t2 = {0,1,2}: expert 2")
        #expect(s.overall.overlap[3].whole == 0, "no token has four before it")
    }

    @Test("SRP: windows of 2 cover 3, 3 and 2 of 4 (8/12); of 3, 5 and 4 of 6 (9/12); the whole sequence 5 of 8")
    func srp() {
        let s = stats(Self.example)
        #expect(s.overall.srp == [RoutingStats.Share(part: 8, whole: 12), RoutingStats.Share(part: 9, whole: 12),
                                  RoutingStats.Share(part: 5, whole: 8)])
        #expect(stats(Self.example, segments: [5]).overall.srp[0].whole == 0, "no window longer than the sequence")
    }

    @Test("SCH on t0..t3 and a fifth token t4 {0,3}: seeing one token ahead keeps 0 for t4 where recency drops it")
    func sch() {
        // c = 2, m = 1 on t0..t3: t1 hits 0, t2 hits 0, t3 misses both: 2 of 8.
        #expect(stats(Self.example, segments: [1], caches: [2, 3]).overall.sch[0]
                == [RoutingStats.Share(part: 2, whole: 8), RoutingStats.Share(part: 4, whole: 8)])
        let five = Self.routing([[0, 1], [0, 2], [0, 1], [3, 2], [0, 3]])
        let seq = (0..<five.count).map { Optional(five.experts(token: $0, column: 0)) }
        // m = 0 is recency: at t3, 0 (used before 1 in t2) goes; at t4 0 misses. 5 of 10.
        #expect(RoutingStats.segmentCacheBest(seq, future: 0, capacity: 3, experts: 4) == RoutingStats.Share(part: 5, whole: 10))
        // m = 1: at t3 expert 1 goes (t4 uses 0, not 1), so t4 hits both. 6 of 10.
        #expect(RoutingStats.segmentCacheBest(seq, future: 1, capacity: 3, experts: 4) == RoutingStats.Share(part: 6, whole: 10))
        // A cache of exactly k evicts every resident the token does not use, whatever it sees.
        #expect(RoutingStats.segmentCacheBest(seq, future: 4, capacity: 2, experts: 4)
                == RoutingStats.segmentCacheBest(seq, future: 0, capacity: 2, experts: 4))
    }

    @Test("sequences are told apart by position: two interleaved streams count overlap only within each")
    func streams() {
        var r = TokenRouting(moeLayers: [0], expertsPerToken: 2)
        var assign = StreamAssigner()
        // Sequence A at positions 0,1,2 uses {0,1} each time; B at 0,1,2 uses {2,3}; steps interleave.
        for p in 0..<3 {
            for e: [Int32] in [[0, 1], [2, 3]] {
                r.stream.append(assign.stream(at: p))
                r.position.append(p)
                r.isDecode.append(true)
                r.experts += e
            }
        }
        let s = stats(r)
        #expect(s.streams == 2)
        #expect(s.overall.overlap[0] == RoutingStats.Share(part: 8, whole: 8), "each token repeats its own sequence's experts")
    }

    @Test("the shared trace: one sequence of 157 tokens; shares lie in [0, 1] and grow with c, overlap with d")
    func sharedTrace() throws {
        let trace = try RouteTraceFile.read(path: SharedData.path("traces/gemma-4-26b-a4b.route.csv"))
        #expect(trace.routing.count == 157 && trace.routing.streams == 1)
        #expect(trace.routing.isDecode.filter { $0 }.count == 128)
        let s = RoutingStats.measure(trace.routing, experts: 128, options: .defaults(expertsPerToken: 6, experts: 128))
        #expect(s.layers.count == 30 && s.overall.tokens == 157)
        let top = s.overall.topShare.compactMap(\.value)
        #expect(top == top.sorted() && top.allSatisfy { $0 > 0 && $0 <= 1 })
        let overlap = s.overall.overlap.compactMap(\.value)
        #expect(overlap.count == 8 && overlap == overlap.sorted())
        // SRP shrinks as windows grow (a fixed group serves fewer of more tokens).
        let srp = s.overall.srp.compactMap(\.value)
        #expect(srp == srp.sorted(by: >))
        // The first token of each layer misses all k: no hit rate reaches 1.
        #expect(s.overall.sch.joined().allSatisfy { ($0.value ?? 1) < 1 })
        #expect(s.overall.gateRecall.whole == 0, "route_trace files carry no predictions")
    }
}
