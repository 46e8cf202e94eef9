import Experts
import Foundation

/// `moe trace report`: one self-contained HTML page per set of traces, each with its cache
/// replay curves against Belady, bytes and predicted tokens/s per budget, hit rate per
/// layer, a layer × expert heat map of use and the SCH curves.
public struct TraceReport {
    /// A trace and what its budgets mean (route_trace bytes, or this runtime's slots).
    public struct Input {
        public var trace: CacheTrace
        public var accounting: (Int) -> CacheReplay.Accounting
        /// The smallest budget the accounting accepts.
        public var minimumBudget: Int

        public init(trace: CacheTrace, minimumBudget: Int = 1, accounting: @escaping (Int) -> CacheReplay.Accounting) {
            self.trace = trace
            self.minimumBudget = minimumBudget
            self.accounting = accounting
        }
    }

    public struct Section {
        public var trace: CacheTrace
        public var budgets: [Int]
        public var policies: [String]
        /// Budget by budget, policy by policy.
        public var results: [CacheReplay.Result]
        /// The budget the per-layer figures are for, and each policy's decode hit rate per
        /// MoE layer there.
        public var layerBudget: Int
        public var layerHitRates: [String: [Double?]]
        public var stats: RoutingStats
    }

    public var sections: [Section]
    /// Disk bytes per second and compute seconds per token, when known.
    public var cost: (disk: Double, compute: Double)?

    /// Budgets around one token's cycle, from a quarter of it to twelve times it (as far as
    /// all experts go): where policies differ.
    public static func defaultBudgets(_ trace: CacheTrace, minimum: Int) -> [Int] {
        let cycle = Double(trace.oneTokenCycleBytes)
        let all = trace.moeLayers.reduce(0) { $0 + trace.experts * (trace.expertBytes[$1] ?? 0) }
        let picked = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12].map { Int(cycle * $0) }.filter { $0 >= minimum && $0 <= all }
        return picked.isEmpty ? [max(minimum, all / 2)] : picked
    }

    public static func build(_ inputs: [Input], budgets: [Int]?, policies: [String],
                             cost: (disk: Double, compute: Double)?) throws(TraceFileError) -> TraceReport {
        var sections: [Section] = []
        for input in inputs {
            let t = input.trace
            let list = budgets ?? defaultBudgets(t, minimum: input.minimumBudget)
            let jobs = list.flatMap { b in policies.map { CacheReplay.Job(policy: $0, budget: b, accounting: input.accounting(b)) } }
            let results = try CacheReplay.runAll(t, jobs)
            // Per layer at the budget nearest twice one token's cycle (where caching starts to pay).
            let target = Double(2 * t.oneTokenCycleBytes)
            let layerBudget = list.min { abs(log(Double($0) / target)) < abs(log(Double($1) / target)) } ?? list[0]
            var layerRates: [String: [Double?]] = [:]
            for (r, job) in zip(results, jobs) where job.budget == layerBudget {
                layerRates[job.policy] = t.moeLayers.map { l in
                    r.decodeLookupsByLayer[l] > 0 ? Double(r.decodeHitsByLayer[l]) / Double(r.decodeLookupsByLayer[l]) : nil
                }
            }
            let k = t.expertsPerToken
            var options = RoutingStats.Options(topCounts: [k, 2 * k, 4 * k].map { min($0, t.experts) },
                                               segmentLengths: [0, 2, 8, 32],
                                               cacheSizes: Array(Set((1...8).map { min($0 * k, t.experts) })).sorted())
            options.decodeOnly = false
            let stats = RoutingStats.measure(t.routing, experts: t.experts, options: options)
            sections.append(Section(trace: t, budgets: list, policies: policies, results: results, layerBudget: layerBudget,
                                    layerHitRates: layerRates, stats: stats))
        }
        return TraceReport(sections: sections, cost: cost)
    }

    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]

    func color(_ policy: String, in policies: [String]) -> (String, Bool) {
        if policy == CacheReplay.beladyName { return ("#111111", true) }
        let online = policies.filter { $0 != CacheReplay.beladyName }
        return (Self.palette[(online.firstIndex(of: policy) ?? 0) % Self.palette.count], false)
    }

    /// The page. `title` heads it; every figure is drawn inline.
    public func html(title: String) -> String {
        var body = "<h1>\(escape(title))</h1>\n"
        if let cost {
            body += "<p class=\"note\">Predicted tokens/s assume expert reads at \(String(format: "%.2f", cost.disk / 1e9)) GB/s and "
                + "\(String(format: "%.2f", cost.compute * 1000)) ms of compute per token, a token waiting for its reads "
                + "(no read-ahead overlap).</p>\n"
        }
        for s in sections { body += section(s) }
        return """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <title>\(escape(title))</title>
            <style>
            body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1600px; color: #222; background: #fafafa; }
            h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 36px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
            h3 { font-size: 15px; margin: 18px 0 6px; }
            .grid { display: flex; flex-wrap: wrap; gap: 16px; }
            .grid > div { background: #fff; border: 1px solid #ddd; padding: 8px; }
            table { border-collapse: collapse; font-size: 13px; background: #fff; }
            td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
            th { background: #f0f0f0; } td.best { font-weight: 600; background: #eef6ee; }
            .note { color: #555; font-size: 13px; max-width: 1100px; }
            </style>
            </head>
            <body>
            \(body)</body>
            </html>

            """
    }

    func section(_ s: Section) -> String {
        let t = s.trace
        let mib = Double(1 << 20)
        let cycle = Double(t.oneTokenCycleBytes) / mib
        var out = "<section class=\"trace\">\n<h2>\(escape(t.source))</h2>\n"
        out += "<p class=\"note\">\(escape(t.format)): \(escape(t.architecture.isEmpty ? "?" : t.architecture)), \(t.moeLayers.count) MoE layers × "
            + "\(t.experts) experts, top \(t.expertsPerToken); \(t.promptTokens) prompt and \(t.decodedTokens) decoded tokens. "
            + "One token's experts over all layers: \(escape(formatBytes(t.oneTokenCycleBytes))) (the dashed line): below it, recency "
            + "evicts what the next token needs first. Hit rates are over decode lookups.</p>\n"
        func series(_ value: (CacheReplay.Result) -> Double?) -> [SVGChart.Series] {
            s.policies.map { p in
                let (c, dashed) = color(p, in: s.policies)
                let pts = s.results.filter { $0.policy == p || $0.policy.hasPrefix(p + " (") }
                    .compactMap { r in value(r).map { (x: Double(r.budgetBytes) / mib, y: $0) } }
                return SVGChart.Series(name: p, color: c, dashed: dashed, points: pts)
            }
        }
        let budgetAxis = "expert budget (MiB, log scale)"
        func mibLabel(_ v: Double) -> String { String(format: "%gM", v) }
        var hit = SVGChart(title: "decode hit rate against budget", xLabel: budgetAxis, yLabel: "hit rate")
        hit.series = series { $0.decodeHitRate }
        hit.markers = [(cycle, "one token's cycle")]
        hit.logX = true
        hit.yMaximum = 1
        hit.xFormat = mibLabel
        hit.yFormat = { String(format: "%.0f%%", 100 * $0) }
        var bytes = SVGChart(title: "bytes read per decoded token", xLabel: budgetAxis, yLabel: "MiB per token")
        bytes.series = series { $0.bytesReadPerToken / mib }
        bytes.markers = [(cycle, "cycle")]
        bytes.logX = true
        bytes.xFormat = mibLabel
        out += "<div class=\"grid\">\n<div>\(hit.render())</div>\n<div>\(bytes.render())</div>\n"
        if let cost {
            var speed = SVGChart(title: "predicted decode tokens/s", xLabel: budgetAxis, yLabel: "tokens/s")
            speed.series = series { $0.tokensPerSecond(diskBytesPerSecond: cost.disk, computeSeconds: cost.compute) }
            speed.markers = [(cycle, "cycle")]
            speed.logX = true
            speed.xFormat = mibLabel
            out += "<div>\(speed.render())</div>\n"
        }
        var layers = SVGChart(title: "decode hit rate per layer at \(formatBytes(s.layerBudget))", xLabel: "MoE layer (block index)",
                              yLabel: "hit rate")
        layers.series = s.policies.map { p in
            let (c, dashed) = color(p, in: s.policies)
            let pts = (s.layerHitRates[p] ?? []).enumerated().compactMap { i, v in v.map { (x: Double(t.moeLayers[i]), y: $0) } }
            return SVGChart.Series(name: p, color: c, dashed: dashed, points: pts)
        }
        layers.yMaximum = 1
        layers.yFormat = { String(format: "%.0f%%", 100 * $0) }
        out += "<div>\(layers.render())</div>\n"
        // Use per layer and expert, each layer scaled to its most used expert.
        let binned = min(t.experts, 512)
        var use = Array(repeating: [Double](repeating: 0, count: binned), count: t.moeLayers.count)
        for token in 0..<t.routing.count {
            for c in 0..<t.moeLayers.count {
                for e in t.routing.experts(token: token, column: c) where e >= 0 {
                    use[c][Int(e) * binned / t.experts] += 1
                }
            }
        }
        let scaled = use.map { row -> [Double] in
            let top = row.max() ?? 0
            return top > 0 ? row.map { $0 / top } : row
        }
        let heat = SVGHeatMap(title: "use per layer and expert (each layer against its most used expert)",
                              rowLabels: t.moeLayers.map(String.init),
                              columnLabel: binned == t.experts ? "expert" : "expert (binned by \(t.experts / binned))", values: scaled)
        out += "<div>\(heat.render())</div>\n"
        var sch = SVGChart(title: "SCH: best hit rate of a c-expert cache per layer seeing m tokens ahead",
                           xLabel: "cache size c (experts per layer)", yLabel: "hit rate")
        let o = s.stats.options
        sch.series = o.segmentLengths.enumerated().map { i, m in
            SVGChart.Series(name: m == 0 ? "m=0 (LRU)" : "m=\(m)", color: Self.palette[i % Self.palette.count], dashed: m == 0,
                            points: zip(o.cacheSizes, s.stats.overall.sch[i]).compactMap { c, v in v.value.map { (x: Double(c), y: $0) } })
        }
        sch.yMaximum = 1
        sch.yFormat = { String(format: "%.0f%%", 100 * $0) }
        out += "<div>\(sch.render())</div>\n</div>\n"
        out += table(s)
        return out + "</section>\n"
    }

    /// The replay's figures, one row per budget: each policy's decode hit rate, the best
    /// online one marked.
    func table(_ s: Section) -> String {
        var out = "<h3>decode hit rate by budget</h3>\n<table class=\"results\">\n<tr><th>budget</th>"
            + s.policies.map { "<th>\(escape($0))</th>" }.joined() + "<th>MiB/token (best online)</th></tr>\n"
        for b in s.budgets {
            let row = s.policies.map { p in s.results.first { $0.budgetBytes == b && ($0.policy == p || $0.policy.hasPrefix(p + " (")) } }
            let online = row.compactMap { $0 }.filter { $0.policy != CacheReplay.beladyName }
            let best = online.max { $0.decodeHitRate < $1.decodeHitRate }
            out += "<tr><td>\(escape(formatBytes(b)))</td>"
            for r in row {
                guard let r else { out += "<td>-</td>"; continue }
                let mark = r.policy == best?.policy ? " class=\"best\"" : ""
                out += "<td\(mark)>\(String(format: "%.1f%%", 100 * r.decodeHitRate))</td>"
            }
            out += "<td>\(best.map { String(format: "%.1f", $0.bytesReadPerToken / Double(1 << 20)) } ?? "-")</td></tr>\n"
        }
        return out + "</table>\n"
    }
}
