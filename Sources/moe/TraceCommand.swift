import ArgumentParser
import Experts
import Foundation
import Trace
import TraceLab

/// `moe trace ...`: the expert-caching lab over recorded routing (`--record-routing` records, route_trace files).
struct TraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "The expert-caching lab: replay, statistics, report and tuning over recorded routing (--record-routing records, route_trace files).",
        subcommands: [ReplayCommand.self, StatsCommand.self, ReportCommand.self, TuneCommand.self, RoutingRecallCommand.self])
}

struct RoutingRecallCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "routing-recall",
        abstract: "Top-k recall per layer of the cross-layer gate, the routing-path predictor and their mix.",
        discussion: """
        For every token and every MoE layer with a MoE layer before it: of the k experts the \
        layer chose, the share among those predicted by (a) the cross-layer gate as recorded, \
        (b) the routing-path predictor (expert-to-expert transition counts between consecutive \
        layers), learned online over the file: each token is predicted from the tokens before \
        it, and (c) the mix (1 - a) * gate + a * path for each weight a.
        """)

    @Argument(help: "A routing record (JSON Lines from --record-routing).")
    var file: String

    @Option(help: "Mix weights a, comma separated (0: the gate alone, 1: the path alone).")
    var weights: String = RoutingRecall.defaultWeights.map { String(describing: $0) }.joined(separator: ",")

    @Option(name: .customLong("seed-from"),
            help: ArgumentHelp("Start the path predictor from the statistics of another record of the same model.",
                               valueName: "record"))
    var seedFrom: String?

    @Option(name: .customLong("predict"),
            help: "Experts each predictor names per token and layer (default: the router's k); recall stays out of the k chosen.")
    var predictCount: Int?

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        if let predictCount, predictCount < 1 { throw ValidationError("--predict must be ≥ 1") }
        var mix: [Float] = []
        for part in weights.split(separator: ",") {
            guard let a = Float(part.trimmingCharacters(in: .whitespaces)), a >= 0, a <= 1 else {
                throw ValidationError("--weights: '\(part)' is not a number in [0, 1]")
            }
            mix.append(a)
        }
        let seed = try seedFrom.map { path in try runReporting { try RoutingPathPredictor(recordFile: path) } }
        let r = try runReporting {
            try RoutingRecall.measure(recordFile: file, weights: mix, seed: seed, predictCount: predictCount)
        }
        let k = r.header.expertsPerToken
        if json {
            func row(_ x: RoutingRecall.Row) -> [String: Any] {
                var o: [String: Any] = ["selected": x.selected, "gate": x.gate, "path": x.path, "combined": x.combined]
                if let l = x.layer { o["layer"] = l }
                return o
            }
            var object: [String: Any] = [
                "model": r.header.model, "architecture": r.header.architecture, "experts": r.header.experts,
                "experts_per_token": k, "predicted_per_token": r.predictCount, "tokens": r.tokens,
                "predictions": r.predictions, "weights": r.weights.map { Double(String(describing: $0))! },
                "layers": r.layers.map(row), "overall": row(r.overall),
            ]
            if let best = r.bestWeight { object["best_weight"] = Double(String(describing: best))! }
            let out = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: out, as: UTF8.self))
            return
        }
        print("recall of the router's top \(k) among \(r.predictCount) predicted, for \(r.header.model) "
              + "(\(r.header.architecture), \(r.header.experts) experts): \(r.tokens) tokens, \(r.predictions) layer predictions"
              + (seedFrom.map { ", path statistics seeded from \($0)" } ?? ""))
        guard r.overall.selected > 0 else {
            print("nothing to measure: no layer has a cross-layer prediction")
            return
        }
        func percent(_ x: Double) -> String { String(format: "%.1f%%", 100 * x).leftPad(8) }
        print("layer".leftPad(5) + "gate".leftPad(8) + "path".leftPad(8) + r.weights.map { String(format: "a=%.2f", $0).leftPad(8) }.joined())
        func line(_ label: String, _ x: RoutingRecall.Row) {
            print(label.leftPad(5) + percent(x.gate) + percent(x.path) + x.combined.map(percent).joined())
        }
        for row in r.layers { line(String(row.layer!), row) }
        line("all", r.overall)
        if let best = r.bestWeight, let i = r.weights.firstIndex(of: best) {
            print(String(format: "best mix: a = %.2f, recall %.1f%% (gate alone %.1f%%, path alone %.1f%%)",
                         best, 100 * r.overall.combined[i], 100 * r.overall.gate, 100 * r.overall.path))
        }
    }
}
