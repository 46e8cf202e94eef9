import Experts
import Foundation
import TestSupport
import Testing
@testable import TraceLab

/// The shared Gemma-4 trace (`../shared/traces/`), replayed as its README says, must give
/// the recorded run's own hits and the published figures.
@Suite("cache replay of the shared route_trace file")
struct SharedTraceReplayTests {
    static let path = SharedData.path("traces/gemma-4-26b-a4b.route.csv")
    static let trace = try! RouteTraceFile.read(path: path)
    static let MiB = 1 << 20

    func replay(_ policy: String, _ mib: Int) throws -> CacheReplay.Result {
        try CacheReplay.run(Self.trace, policy: policy, accounting: .bytesAfterBatch(budget: mib * Self.MiB))
    }

    @Test("the file reads as 30 layers of 128 experts at top 6, one prompt batch per layer and turn, 128+ decoded tokens")
    func shape() {
        let t = Self.trace
        #expect(t.moeLayers == Array(0..<30))
        #expect(t.experts == 128 && t.expertsPerToken == 6)
        #expect(t.expertBytes[0] == 4_336_640 && t.expertBytes[7] == 3_593_216)
        #expect(t.decodedTokens >= 128)
        #expect(t.batches.allSatisfy { $0.experts.count == Set($0.experts).count })
        // One token's cycle over all layers ≈ 676 MiB, as the README says.
        #expect(abs(Double(t.oneTokenCycleBytes) / Double(Self.MiB) - 676) < 1)
    }

    @Test("LRU at the recorded 4000 MiB gives exactly the recorded run's hits, batch by batch")
    func reproducesRecordedRun() throws {
        let recorded = try #require(CacheReplay.recorded(Self.trace))
        var differing: [Int] = []
        let lru = try CacheReplay.run(Self.trace, policy: "lru", accounting: .bytesAfterBatch(budget: 4000 * Self.MiB)) { b, hits in
            if Self.trace.batches[b].recordedHits!.filter({ $0 }).count != hits { differing.append(b) }
        }
        #expect(differing.isEmpty, "batches whose hits differ: \(differing.prefix(10))")
        #expect(lru.lookups == recorded.lookups)
        #expect(lru.hits == recorded.hits)
        #expect(lru.decodeHits == recorded.decodeHits)
        #expect(lru.bytesRead == recorded.bytesRead)
    }

    static let published: [(String, Int, Bool, Double)] = [
        ("lru", 3000, false, 68.5), ("lru", 3000, true, 73.1), ("lfu", 3000, true, 75.5), ("belady", 3000, true, 88.6),
        ("lru", 4000, false, 76.8), ("lru", 4000, true, 81.9), ("lfu", 4000, true, 83.4), ("belady", 4000, true, 92.9),
        ("belady", 500, true, 48.2), ("belady", 500, false, 45.2), ("lru", 500, true, 0.0),
    ]

    @Test("the README's figures, to 0.1 point", arguments: published)
    func publishedFigures(policy: String, mib: Int, decodeOnly: Bool, percent: Double) throws {
        let r = try replay(policy, mib)
        let rate = 100 * (decodeOnly ? r.decodeHitRate : r.hitRate)
        #expect(abs(rate - percent) <= 0.05 + 1e-9, "\(policy) at \(mib) MiB: \(rate)% against \(percent)%")
    }

    @Test("Belady is never below any online policy, and every hit rate grows (or stays) with the budget")
    func beladyIsTheCeiling() throws {
        for mib in [300, 3000] {
            let ceiling = try replay("belady", mib)
            for policy in ExpertPolicies.names {
                let r = try replay(policy, mib)
                #expect(r.hits <= ceiling.hits, "\(policy) at \(mib) MiB")
            }
        }
        var last = -1
        for mib in [300, 1000, 3000, 6000] {
            let r = try replay("lru", mib)
            #expect(r.hits >= last)
            last = r.hits
        }
    }
}

/// The cycle policy against the figures published for the shared trace (decode-only hit
/// rates, the route_trace accounting): the best online policy published, LRU everywhere, and
/// half of Belady's optimum below one token's cycle.
@Suite("the cycle policy on the shared route_trace file")
struct CyclePolicyTargetTests {
    func decodeRate(_ policy: String, _ mib: Int) throws -> Double {
        100 * (try CacheReplay.run(SharedTraceReplayTests.trace, policy: policy,
                                   accounting: .bytesAfterBatch(budget: mib * SharedTraceReplayTests.MiB))).decodeHitRate
    }

    @Test("above the best published online policy at 4000 MiB (84.3%) and above LFU at 3000 MiB")
    func bestPublished() throws {
        #expect(try decodeRate("cycle", 4000) > 84.3)
        let cycle = try decodeRate("cycle", 3000), lfu = try decodeRate("lfu", 3000)
        #expect(cycle > lfu, "3000 MiB: cycle \(cycle)%, lfu \(lfu)%")
    }

    @Test("never below LRU, 300 to 6000 MiB", arguments: Array(stride(from: 300, through: 6000, by: 300)))
    func neverBelowLRU(mib: Int) throws {
        let cycle = try decodeRate("cycle", mib), lru = try decodeRate("lru", mib)
        #expect(cycle >= lru, "\(mib) MiB: cycle \(cycle)%, lru \(lru)%")
    }

    @Test("at least half of Belady's hit rate below one token's cycle", arguments: [300, 400, 500, 600])
    func halfOfBelady(mib: Int) throws {
        let cycle = try decodeRate("cycle", mib), belady = try decodeRate("belady", mib)
        #expect(cycle >= belady / 2, "\(mib) MiB: cycle \(cycle)%, belady \(belady)%")
    }
}

@Suite("route_trace files that are not right")
struct RouteTraceErrorTests {
    static let preamble = """
        # route_trace v1
        # model=m.gguf arch=test n_layer=2 n_expert=4 n_expert_used=2
        # layer=0 expert_bytes=100 dense_bytes=1
        # layer=1 expert_bytes=100 dense_bytes=1
        turn,phase,step,layer,slot,expert,weight,residency,expert_bytes

        """

    func error(_ text: String) -> String {
        do {
            _ = try RouteTraceFile.parse(Data(text.utf8), path: "t.csv")
            return "no error"
        } catch {
            return error.description
        }
    }

    @Test("a good little file reads, with one batch per layer for the prompt and per token and layer for decoding")
    func good() throws {
        let t = try RouteTraceFile.parse(Data((Self.preamble + """
            0,0,0,0,0,1,0.6,0,100
            0,0,0,0,1,2,0.4,0,100
            0,0,1,0,0,1,0.7,0,0
            0,0,1,0,1,3,0.3,0,100
            0,1,2,0,0,1,0.9,1,0
            0,1,2,0,1,0,0.1,0,100
            0,1,2,1,0,2,0.5,0,100
            0,1,2,1,1,3,0.5,0,100

            """).utf8), path: "t.csv")
        #expect(t.batches.count == 3)
        // Expert 1 is used again by the second token: listed by last use.
        var prompt = CacheTrace.Batch(layer: 0, experts: [2, 1, 3], isDecode: false, tokens: 2, recordedHits: [false, false, false])
        prompt.weights = [0.4, 0.7, 0.3]  // expert 1's largest weight, from the second token
        #expect(t.batches[0] == prompt)
        // Token by token: the prompt's two tokens, then the decoded one, in one sequence.
        #expect(t.routing.count == 3 && t.routing.streams == 1 && t.routing.isDecode == [false, false, true])
        #expect(Array(t.routing.experts(token: 1, column: 0)) == [1, 3] && Array(t.routing.experts(token: 2, column: 1)) == [2, 3])
        #expect(t.denseBytes == 2)
        #expect(t.batches[1].experts == [1, 0] && t.batches[1].isDecode && t.batches[1].recordedHits == [true, false])
        #expect(t.decodedTokens == 1 && t.promptTokens == 2)
    }

    static let badFiles: [(String, String)] = [
        ("", "line 1: expected '# route_trace v1'"),
        ("# route_trace v1\nturn,phase\n", "n_layer, n_expert and n_expert_used"),
        ("# route_trace v1\n# model=m n_layer=2 n_expert=99999999999 n_expert_used=2\n", "line 2: n_expert is missing or out of range"),
        ("# route_trace v1\n# model=m n_layer=2 n_expert=4 n_expert_used=9\nturn\n", "n_expert_used 9 exceeds n_expert 4"),
        ("# route_trace v1\n# model=m n_layer=2 n_expert=4 n_expert_used=2\n# layer=0 expert_bytes=x\n", "line 3: layer 0 has no valid expert_bytes"),
        (preamble.replacingOccurrences(of: "residency,expert_bytes", with: "residency"), "line 5: expected the columns"),
        (preamble + "0,0,0,0,0,1,0.5,0\n", "line 6: 8 fields, expected 9"),
        (preamble + "0,0,0,5,0,1,0.5,0,100\n", "line 6: layer 5 is out of range (n_layer 2)"),
        (preamble + "0,0,0,0,0,4,0.5,0,100\n", "line 6: expert 4 is out of range (n_expert 4)"),
        (preamble + "0,0,0,0,0,1,abc,0,100\n", "line 6: weight 'abc' is not a number"),
        (preamble + "0,0,zero,0,0,1,0.5,0,100\n", "line 6: step 'zero' is not an integer"),
        (preamble + "0,3,0,0,0,1,0.5,0,100\n", "line 6: phase 3 is neither"),
        (preamble + "0,0,0,0,7,1,0.5,0,100\n", "line 6: slot 7 is out of range"),
        (preamble + "0,0,0,0,0,1,0.5,0,99999999999999999\n", "line 6: expert_bytes 99999999999999999 is out of range"),
        (preamble, "no routing rows"),
        (preamble + "0,0,0,0,0,1,0.5,0,100\n0,0,0,0,0,2,0.5,0,100\n", "line 7: slot 0 of step 0 at layer 0 appears twice"),
    ]

    @Test("each bad file gets an error naming the line and the problem", arguments: badFiles)
    func bad(text: String, expected: String) {
        let message = error(text)
        #expect(message.contains(expected), "\(message)")
    }
}
