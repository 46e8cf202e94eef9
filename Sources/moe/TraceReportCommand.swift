import ArgumentParser
import Engine
import Experts
import Foundation
import TraceLab

/// `moe trace report`: the replay, the statistics and the routing itself as one HTML page.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write one self-contained HTML page of charts for one or more traces.",
        discussion: """
        For each FILE: decode hit rate against budget for every policy with Belady's optimum \
        over it and one token's cycle marked; bytes read and predicted tokens/s per budget; \
        hit rate per layer; a layer × expert heat map of use; SCH curves; and the table of \
        figures. Inline SVG only: nothing is fetched and nothing runs when it opens.
        """)

    @Argument(help: "Routing records (--record-routing, with -m) or route_trace v1 CSV files.")
    var files: [String]

    @Option(name: .shortAndLong, help: "The HTML file to write (replaced whole, never left half-written).")
    var output: String

    @Option(name: .shortAndLong, help: "The model the records were made with; also measures its compute and disk here.")
    var model: String?

    @Option(help: "Budgets, comma separated (default: a quarter of one token's cycle to twelve times it).")
    var budget: String?

    @Option(help: "Policies, comma separated (default: every policy and belady).")
    var policy: String?

    @OptionGroup var cost: DecodeCostOptions


    @Option(help: "The page's heading.")
    var title: String = "moe trace report"

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give at least one trace file") }
        _ = try ReplayCommand.parseBudgets(budget)
        _ = try ReplayCommand.parsePolicies(policy)
    }

    func run() throws {
        var inputs: [TraceReport.Input] = []
        for file in files {
            let input = try TraceInput(file: file, model: model, needSizes: true)
            if let sizes = input.sizes {
                inputs.append(TraceReport.Input(trace: input.trace, minimumBudget: sizes.budget.minimum) { CacheReplay.poolAccounting(sizes.budget, bytes: $0).0 })
            } else {
                inputs.append(TraceReport.Input(trace: input.trace) { .bytesAfterBatch(budget: $0) })
            }
        }
        let (disk, compute, _) = try cost.resolve(model: model, budget: nil)
        let known = disk.flatMap { d in compute.map { (disk: d, compute: $0) } }
        let report = try runReporting {
            try TraceReport.build(inputs, budgets: try? ReplayCommand.parseBudgets(budget), policies: try ReplayCommand.parsePolicies(policy),
                                  cost: known)
        }
        let page = report.html(title: title)
        do {
            try Data(page.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
        } catch {
            throw ValidationError("cannot write '\(output)': \((error as NSError).localizedDescription)")
        }
        FileHandle.standardError.write(Data("wrote \(output) (\(formatBytes(page.utf8.count)), \(files.count) trace\(files.count == 1 ? "" : "s"))\n".utf8))
    }
}
