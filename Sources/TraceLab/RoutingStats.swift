/// How a run's routing behaves, per MoE layer and over all layers: what `moe trace stats`
/// reports. Every figure is a share of expert uses (a token's k experts at one layer are k
/// uses), pooled over layers as sums of numerators over sums of denominators.
///
/// - **distinct**: experts used at least once;
/// - **top-c share**: the share of uses the c most used experts carry;
/// - **hot-list recall**: a static list of the h experts most used in the first half of the
///   tokens, measured on the second half (out of sample, as a pinned hot set would fare);
/// - **overlap(d)**: the share of a token's experts that one of the d tokens before it in
///   its sequence also used;
/// - **gate recall**: the share of a token's experts among the cross-layer gate's top k
///   (records that hold predictions);
/// - **SRP(m)**, segment routing best performance ("Not All Models Suit Expert
///   Offloading"): over every window of m consecutive tokens of a sequence, the uses that
///   the best fixed group of k experts for that window covers, over all the window's uses;
/// - **SCH(m, c)**, segment cache best hit rate: the hit rate of a cache of c experts per
///   layer that sees the next m tokens' routing and, on a miss, evicts the resident expert
///   the fewest of those tokens use (the least recently used among equals), never one the
///   current token uses. Cold misses count.
public struct RoutingStats: Sendable {
    public struct Options: Sendable {
        public var topCounts: [Int]
        public var segmentLengths: [Int]
        public var cacheSizes: [Int]
        public var overlapDepth = 8
        public var decodeOnly = false

        public init(topCounts: [Int], segmentLengths: [Int], cacheSizes: [Int]) {
            self.topCounts = topCounts
            self.segmentLengths = segmentLengths
            self.cacheSizes = cacheSizes
        }

        /// k, 2k, 4k, 8k experts (at most all of them); segments of 2 to 32 tokens.
        public static func defaults(expertsPerToken k: Int, experts: Int) -> Options {
            let sizes = Array(Set([k, 2 * k, 4 * k, 8 * k].map { min($0, experts) })).sorted()
            return Options(topCounts: sizes, segmentLengths: [2, 4, 8, 16, 32], cacheSizes: sizes.filter { $0 <= 4 * k })
        }
    }

    /// A share as its two counts.
    public struct Share: Sendable, Equatable {
        public var part = 0
        public var whole = 0
        public var value: Double? { whole == 0 ? nil : Double(part) / Double(whole) }
        static func += (a: inout Share, b: Share) { a.part += b.part; a.whole += b.whole }
    }

    public struct Row: Sendable, Equatable {
        /// The block index; nil for the row over all layers.
        public var layer: Int?
        /// Tokens routed at this layer (all layers: tokens).
        public var tokens = 0
        public var distinct = 0
        public var topShare: [Share]
        public var hotListRecall: [Share]
        public var overlap: [Share]
        public var gateRecall = Share()
        public var srp: [Share]
        /// `sch[i][j]`: segment length `segmentLengths[i]`, cache size `cacheSizes[j]`.
        public var sch: [[Share]]

        init(layer: Int?, options: Options) {
            self.layer = layer
            topShare = Array(repeating: Share(), count: options.topCounts.count)
            hotListRecall = topShare
            overlap = Array(repeating: Share(), count: options.overlapDepth)
            srp = Array(repeating: Share(), count: options.segmentLengths.count)
            sch = Array(repeating: Array(repeating: Share(), count: options.cacheSizes.count), count: options.segmentLengths.count)
        }

        static func += (a: inout Row, b: Row) {
            a.distinct += b.distinct
            for i in a.topShare.indices { a.topShare[i] += b.topShare[i]; a.hotListRecall[i] += b.hotListRecall[i] }
            for i in a.overlap.indices { a.overlap[i] += b.overlap[i] }
            a.gateRecall += b.gateRecall
            for i in a.srp.indices {
                a.srp[i] += b.srp[i]
                for j in a.sch[i].indices { a.sch[i][j] += b.sch[i][j] }
            }
        }
    }

    public var options: Options
    public var experts: Int
    public var expertsPerToken: Int
    public var tokens: Int
    public var streams: Int
    public var layers: [Row]
    public var overall: Row

    public static func measure(_ routing: TokenRouting, experts: Int, options: Options) -> RoutingStats {
        let k = routing.expertsPerToken
        // The sequences, each its tokens in order (prompt tokens dropped for decode only).
        let streams = routing.tokensByStream.map { $0.filter { !options.decodeOnly || routing.isDecode[$0] } }.filter { !$0.isEmpty }
        let ordered = streams.flatMap { $0 }.sorted()
        var overall = Row(layer: nil, options: options)
        overall.tokens = ordered.count
        var rows: [Row] = []
        var counts = [Int](repeating: 0, count: experts)
        for (column, layer) in routing.moeLayers.enumerated() {
            var row = Row(layer: layer, options: options)
            func routed(_ t: Int) -> ArraySlice<Int32>? {
                let e = routing.experts(token: t, column: column)
                return e.first == -1 ? nil : e
            }
            // Use counts, top-c shares and distinct experts.
            for i in counts.indices { counts[i] = 0 }
            var uses = 0
            for t in ordered {
                guard let e = routed(t) else { continue }
                row.tokens += 1
                for x in e where x >= 0 { counts[Int(x)] += 1; uses += 1 }
            }
            row.distinct = counts.filter { $0 > 0 }.count
            let ranked = counts.sorted(by: >)
            for (i, c) in options.topCounts.enumerated() {
                row.topShare[i] = Share(part: ranked.prefix(c).reduce(0, +), whole: uses)
            }
            // Hot list from the first half, measured on the second.
            let half = ordered.count / 2
            if half > 0 {
                var early = [Int](repeating: 0, count: experts)
                for t in ordered[..<half] { for x in routed(t) ?? [] where x >= 0 { early[Int(x)] += 1 } }
                let byUse = early.indices.sorted { early[$0] != early[$1] ? early[$0] > early[$1] : $0 < $1 }
                for (i, h) in options.topCounts.enumerated() {
                    var hot = [Bool](repeating: false, count: experts)
                    for e in byUse.prefix(h) where early[e] > 0 { hot[e] = true }
                    for t in ordered[half...] {
                        for x in routed(t) ?? [] where x >= 0 {
                            row.hotListRecall[i].whole += 1
                            if hot[Int(x)] { row.hotListRecall[i].part += 1 }
                        }
                    }
                }
            }
            // The cross-layer gate.
            for t in ordered {
                guard let e = routed(t), let p = routing.predicted(token: t, column: column) else { continue }
                for x in e where x >= 0 {
                    row.gateRecall.whole += 1
                    if p.contains(x) { row.gateRecall.part += 1 }
                }
            }
            for stream in streams {
                let seq = stream.map { routed($0) }
                overlap(seq, depth: options.overlapDepth, into: &row.overlap)
                for (i, m) in options.segmentLengths.enumerated() {
                    row.srp[i] += segmentRoutingBest(seq, length: m, k: k, experts: experts)
                    for (j, c) in options.cacheSizes.enumerated() {
                        row.sch[i][j] += segmentCacheBest(seq, future: m, capacity: c, experts: experts)
                    }
                }
            }
            overall += row
            rows.append(row)
        }
        return RoutingStats(options: options, experts: experts, expertsPerToken: k, tokens: ordered.count,
                            streams: streams.count, layers: rows, overall: overall)
    }

    /// Overlap with the previous 1...depth tokens of one sequence at one layer.
    static func overlap(_ seq: [ArraySlice<Int32>?], depth: Int, into shares: inout [Share]) {
        for i in seq.indices {
            guard let now = seq[i] else { continue }
            var seen: Set<Int32> = []
            for d in 1...depth {
                guard i - d >= 0 else { break }
                for x in seq[i - d] ?? [] { seen.insert(x) }
                for x in now where x >= 0 {
                    shares[d - 1].whole += 1
                    if seen.contains(x) { shares[d - 1].part += 1 }
                }
            }
        }
    }

    /// SRP's counts for windows of `length` tokens: per window, the uses its k most used
    /// experts carry (what the best fixed group of k covers) over the window's uses.
    static func segmentRoutingBest(_ seq: [ArraySlice<Int32>?], length m: Int, k: Int, experts: Int) -> Share {
        guard m >= 1, seq.count >= m else { return Share() }
        var count = [Int](repeating: 0, count: experts)
        // How many experts have each count, so a window's top k sum costs O(m) (a count can
        // pass m only if a token names an expert twice).
        let most = m * k
        var withCount = [Int](repeating: 0, count: most + 1)
        withCount[0] = experts
        var uses = 0
        func add(_ t: Int, _ delta: Int) {
            for x in seq[t] ?? [] where x >= 0 {
                let e = Int(x)
                withCount[count[e]] -= 1
                count[e] += delta
                withCount[count[e]] += 1
                uses += delta
            }
        }
        var share = Share()
        for t in 0..<seq.count {
            if t >= m { add(t - m, -1) }
            add(t, 1)
            guard t >= m - 1 else { continue }
            var left = k, best = 0
            for c in stride(from: most, through: 1, by: -1) where left > 0 {
                let n = min(left, withCount[c])
                best += n * c
                left -= n
            }
            share.part += best
            share.whole += uses
        }
        return share
    }

    /// SCH's hits for one sequence at one layer: a cache of `capacity` experts that knows the
    /// next `future` tokens' routing.
    static func segmentCacheBest(_ seq: [ArraySlice<Int32>?], future m: Int, capacity: Int, experts: Int) -> Share {
        var share = Share()
        guard capacity >= 1 else { return share }
        var ahead = [Int](repeating: 0, count: experts)  // uses among tokens t+1 ... t+m
        var lastUse = [Int](repeating: -1, count: experts)
        var resident: [Int] = []
        func window(_ t: Int, _ delta: Int) {
            guard t < seq.count else { return }
            for x in seq[t] ?? [] where x >= 0 { ahead[Int(x)] += delta }
        }
        for t in 1...max(m, 1) where m >= 1 { window(t, 1) }
        var clock = 0
        for t in seq.indices {
            if let now = seq[t] {
                let current = Set(now.filter { $0 >= 0 }.map(Int.init))
                for x in now where x >= 0 {
                    let e = Int(x)
                    clock += 1
                    share.whole += 1
                    defer { lastUse[e] = clock }
                    if resident.contains(e) { share.part += 1; continue }
                    if resident.count < capacity { resident.append(e); continue }
                    var victim = -1
                    for (i, r) in resident.enumerated() where !current.contains(r) {
                        if victim < 0 { victim = i; continue }
                        let v = resident[victim]
                        if (ahead[r], lastUse[r], r) < (ahead[v], lastUse[v], v) { victim = i }
                    }
                    // A cache smaller than one token's experts: the newest use stays out.
                    if victim >= 0 { resident[victim] = e }
                }
            }
            if m >= 1 {
                window(t + 1, -1)
                window(t + 1 + m, 1)
            }
        }
        return share
    }
}
