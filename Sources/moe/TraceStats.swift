import ArgumentParser
import Foundation
import TraceLab

/// `moe trace stats`: how consistently a run routed, per layer and in all.
struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Routing statistics of a recorded run: popularity, overlap between tokens, hot-list and gate recall, SRP and SCH.",
        discussion: """
        Per MoE layer and over all layers, as shares of expert uses (a token's k experts at a \
        layer are k uses): distinct experts used; the share the c most used carry (top-c); \
        recall of a static hot list of the h most used in the first half of the tokens, on the \
        second half; overlap of a token's experts with those of the previous 1..8 tokens of its \
        sequence; the cross-layer gate's recall where the record holds predictions; SRP(m), \
        the share of a window of m tokens' uses that the best fixed group of k experts covers; \
        SCH(m, c), the hit rate of a c-expert cache per layer that sees the next m tokens and \
        evicts the expert they use least. The last two are the local routing consistency \
        metrics of "Not All Models Suit Expert Offloading" (docs/tracing.md defines them).
        """)

    @Argument(help: "A routing record (--record-routing) or a route_trace v1 CSV file.")
    var file: String

    @Option(help: "Counts c (and hot-list sizes h), comma separated (default: k, 2k, 4k, 8k).")
    var top: String?

    @Option(help: "Segment lengths m in tokens for SRP and SCH, comma separated.")
    var segments: String = "2,4,8,16,32"

    @Option(name: .customLong("cache-sizes"), help: "Cache sizes c in experts per layer for SCH, comma separated (default: k, 2k, 4k).")
    var cacheSizes: String?

    @Flag(name: .customLong("decode-only"), help: "Decoded tokens only.")
    var decodeOnly = false

    @Flag(help: "Print one JSON object.")
    var json = false

    static func counts(_ text: String, flag: String, minimum: Int = 1) throws -> [Int] {
        let values = try text.split(separator: ",").map { part -> Int in
            guard let v = Int(part.trimmingCharacters(in: .whitespaces)), v >= minimum, v <= 1 << 20 else {
                throw ValidationError("\(flag): '\(part)' is not a whole number ≥ \(minimum)")
            }
            return v
        }
        guard !values.isEmpty else { throw ValidationError("\(flag) needs at least one value") }
        return Array(Set(values)).sorted()
    }

    func validate() throws {
        if let top { _ = try Self.counts(top, flag: "--top") }
        _ = try Self.counts(segments, flag: "--segments")
        if let cacheSizes { _ = try Self.counts(cacheSizes, flag: "--cache-sizes") }
    }

    func run() throws {
        let trace = try TraceInput(file: file, model: nil, needSizes: false).trace
        let k = trace.expertsPerToken
        var options = RoutingStats.Options.defaults(expertsPerToken: k, experts: trace.experts)
        if let top { options.topCounts = try Self.counts(top, flag: "--top").map { min($0, trace.experts) } }
        options.segmentLengths = try Self.counts(segments, flag: "--segments")
        if let cacheSizes {
            options.cacheSizes = try Self.counts(cacheSizes, flag: "--cache-sizes")
            if let small = options.cacheSizes.first(where: { $0 < k }) {
                throw ValidationError("--cache-sizes: \(small) experts cannot hold one token's \(k)")
            }
        }
        options.decodeOnly = decodeOnly
        let stats = RoutingStats.measure(trace.routing, experts: trace.experts, options: options)
        guard stats.tokens > 0 else {
            throw ValidationError("'\(file)' holds no \(decodeOnly ? "decoded " : "")tokens")
        }
        if json { return try printJSON(stats, trace: trace) }
        print("\(file) (\(trace.format)): \(trace.architecture), \(trace.moeLayers.count) MoE layers × \(trace.experts) experts, top \(k); "
              + "\(stats.tokens) \(decodeOnly ? "decoded " : "")tokens in \(stats.streams) sequence\(stats.streams == 1 ? "" : "s")")
        func pct(_ s: RoutingStats.Share) -> String { (s.value.map { String(format: "%.1f%%", 100 * $0) } ?? "-").leftPad(8) }
        let rows = stats.layers + [stats.overall]
        func label(_ r: RoutingStats.Row) -> String { (r.layer.map(String.init) ?? "all").leftPad(5) }
        let hasGate = stats.overall.gateRecall.whole > 0

        print("\nuse: distinct experts, share of the c most used (top c), static hot list of h from the first half on the second (hot h)"
              + (hasGate ? ", cross-layer gate recall" : ""))
        print("layer".leftPad(5) + "distinct".leftPad(9) + options.topCounts.map { "top \($0)".leftPad(8) }.joined()
              + options.topCounts.map { "hot \($0)".leftPad(8) }.joined() + (hasGate ? "gate".leftPad(8) : ""))
        for r in rows {
            print(label(r) + String(r.distinct).leftPad(9) + r.topShare.map(pct).joined() + r.hotListRecall.map(pct).joined()
                  + (hasGate ? pct(r.gateRecall) : ""))
        }
        print("\noverlap: share of a token's experts that one of the previous d tokens used")
        print("layer".leftPad(5) + (1...options.overlapDepth).map { "d=\($0)".leftPad(8) }.joined())
        for r in rows { print(label(r) + r.overlap.map(pct).joined()) }
        print("\nSRP(m): share of a window of m tokens' uses that its best fixed group of \(k) experts covers")
        print("layer".leftPad(5) + options.segmentLengths.map { "m=\($0)".leftPad(8) }.joined())
        for r in rows { print(label(r) + r.srp.map(pct).joined()) }
        print("\nSCH(m, c), all layers: hit rate of a c-expert cache per layer that sees the next m tokens")
        print("m".leftPad(5) + options.cacheSizes.map { "c=\($0)".leftPad(8) }.joined())
        for (i, m) in options.segmentLengths.enumerated() { print(String(m).leftPad(5) + stats.overall.sch[i].map(pct).joined()) }
        if !hasGate { print("\n(gate recall: the record holds no cross-layer predictions)") }
    }

    func printJSON(_ stats: RoutingStats, trace: CacheTrace) throws {
        let o = stats.options
        func value(_ s: RoutingStats.Share) -> Any { s.value ?? NSNull() }
        func row(_ r: RoutingStats.Row) -> [String: Any] {
            var out: [String: Any] = [
                "tokens": r.tokens, "distinct": r.distinct,
                "top_share": zip(o.topCounts, r.topShare).map { ["c": $0, "share": value($1)] },
                "hot_list_recall": zip(o.topCounts, r.hotListRecall).map { ["h": $0, "recall": value($1)] },
                "overlap": r.overlap.enumerated().map { ["d": $0 + 1, "share": value($1)] },
                "srp": zip(o.segmentLengths, r.srp).map { ["m": $0, "srp": value($1)] },
                "sch": o.segmentLengths.enumerated().flatMap { i, m in
                    zip(o.cacheSizes, r.sch[i]).map { ["m": m, "c": $0, "hit_rate": value($1)] }
                },
                "gate_recall": value(r.gateRecall),
            ]
            if let l = r.layer { out["layer"] = l }
            return out
        }
        let object: [String: Any] = [
            "file": file, "format": trace.format, "model": trace.model, "architecture": trace.architecture,
            "layers": trace.moeLayers.count, "experts": trace.experts, "experts_per_token": trace.expertsPerToken,
            "tokens": stats.tokens, "sequences": stats.streams, "decode_only": decodeOnly,
            "per_layer": stats.layers.map(row), "overall": row(stats.overall),
        ]
        let out = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: out, as: UTF8.self))
    }
}
