import ArgumentParser
import Experts
import Engine
import Foundation
import GGUF
import TraceLab

/// `moe trace replay`: every policy at every budget over a recorded run, against Belady.
struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay a run's expert lookups under cache policies and budgets, against Belady's optimum.",
        discussion: """
        FILE is a routing record of this runtime (--record-routing; give -m MODEL, the model it \
        was made with, for the experts' sizes: a budget then means what --expert-memory means, \
        the same slots) or a route_trace v1 CSV file (expert sizes from its preamble; a budget \
        is expert bytes, evicted after each batch as its engine does). A forward pass is one \
        batch per MoE layer; inside a batch each distinct expert is one lookup; the experts a \
        batch uses are never evicted while it runs. M and G are MiB and GiB.
        """)

    @Argument(help: "A routing record (--record-routing) or a route_trace v1 CSV file.")
    var file: String

    @Option(name: .shortAndLong, help: "The model the record was made with (needed for this runtime's records); also measures its compute and disk here.")
    var model: String?

    @Option(help: "Budgets, comma separated, e.g. 500M,1G,3000M (default: 5% to 75% of all experts' bytes).")
    var budget: String?

    @Option(help: "Policies, comma separated (default: every policy and belady): \(CacheReplay.policyNames.joined(separator: ", ")).")
    var policy: String?

    @Flag(name: .customLong("decode-only"), help: "Show decode lookups only (prompt batches still fill the cache).")
    var decodeOnly = false

    @OptionGroup var cost: DecodeCostOptions


    @Option(help: "Sequences the run decoded together (what `auto` resolves with; default 1).")
    var sequences: Int = 1

    @Option(name: .customLong("fallback-threshold"),
            help: "Precision fallback as --fallback-threshold runs it, with -m a pack holding low-precision copies.")
    var fallbackThreshold: Float?

    @Option(name: .customLong("fallback-share"), help: "Share of the budget for low-precision copies with --fallback-threshold.")
    var fallbackShare: Double = 0.4

    @Option(help: "Decoded tokens that fill the cache before counting starts (moe bench's warm-up: its -n).")
    var warmup: Int = 0

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard warmup >= 0 else { throw ValidationError("--warmup must be ≥ 0") }
        if let fallbackThreshold, !(fallbackThreshold >= 0 && fallbackThreshold.isFinite) {
            throw ValidationError("--fallback-threshold must be a routing weight ≥ 0")
        }
        guard fallbackShare > 0 && fallbackShare < 1 else { throw ValidationError("--fallback-share must be between 0 and 1") }
        guard sequences >= 1 else { throw ValidationError("--sequences must be ≥ 1") }
        _ = try budgets()
        _ = try policies()
    }

    func budgets() throws -> [Int]? { try Self.parseBudgets(budget) }

    func policies() throws -> [String] { try Self.parsePolicies(policy) }

    static func parseBudgets(_ budget: String?) throws -> [Int]? {
        guard let budget else { return nil }
        return try budget.split(separator: ",").map { part in
            try byteCountFlag(part.trimmingCharacters(in: .whitespaces), flag: "--budget", example: "500M, 3000M, 1.5G",
                              allowZero: false)
        }
    }

    static func parsePolicies(_ policy: String?) throws -> [String] {
        guard let policy else { return ExpertPolicies.names + [CacheReplay.beladyName] }
        return try policy.split(separator: ",").map { part in
            let name = part.trimmingCharacters(in: .whitespaces)
            guard CacheReplay.policyNames.contains(name) else {
                throw ValidationError("--policy: no policy '\(name)' (policies: \(CacheReplay.policyNames.joined(separator: ", ")))")
            }
            return name
        }
    }

    func run() throws {
        let input = try TraceInput(file: file, model: model, needSizes: true)
        let trace = input.trace, sizes = input.sizes
        let allBytes = trace.moeLayers.reduce(0) { $0 + trace.experts * (trace.expertBytes[$1] ?? 0) }
        let budgetList = try budgets() ?? [0.05, 0.1, 0.2, 0.3, 0.5, 0.75].map { Int(Double(allBytes) * $0) }
        let policyList = try policies()
        var jobs: [CacheReplay.Job] = []
        for b in budgetList {
            if let sizes, b < sizes.budget.minimum {
                throw ValidationError("--budget \(formatBytes(b)) is below the pool's minimum of \(formatBytes(sizes.budget.minimum)) for this model")
            }
            var copies: (threshold: Float, share: Double, copySlotBytes: Int)?
            if let threshold = fallbackThreshold {
                guard let c = sizes?.lowPrecision.first else {
                    throw ValidationError("--fallback-threshold needs -m, a pack with low-precision copies (moe pack --low-precision)")
                }
                copies = (threshold, fallbackShare, c.slotBytes)
            }
            let (accounting, fallback) = sizes.map { CacheReplay.poolAccounting($0.budget, bytes: b, fallback: copies) }
                ?? (.bytesAfterBatch(budget: b), nil)
            jobs += policyList.map { CacheReplay.Job(policy: $0, budget: b, accounting: accounting, fallback: fallback) }
        }
        let results = try runReporting { try CacheReplay.runAll(trace, jobs, sequences: sequences, warmup: warmup) }
        let (disk, compute, measured) = try cost.resolve(model: model, budget: sizes != nil ? budgetList.min() : nil)
        if json {
            var rows: [[String: Any]] = []
            for r in results {
                var o: [String: Any] = [
                    "policy": r.policy, "budget_bytes": r.budgetBytes, "lookups": r.lookups, "hits": r.hits, "hit_rate": r.hitRate,
                    "decode_lookups": r.decodeLookups, "decode_hits": r.decodeHits, "decode_hit_rate": r.decodeHitRate,
                    "bytes_read": r.bytesRead, "bytes_read_per_token": r.bytesReadPerToken,
                ]
                if fallbackThreshold != nil { o["low_precision_uses"] = r.lowPrecisionUses }
                if let disk, let compute { o["tokens_per_second"] = r.tokensPerSecond(diskBytesPerSecond: disk, computeSeconds: compute) }
                rows.append(o)
            }
            var object: [String: Any] = [
                "file": file, "format": trace.format, "model": trace.model, "architecture": trace.architecture,
                "layers": trace.moeLayers.count, "experts": trace.experts, "experts_per_token": trace.expertsPerToken,
                "decoded_tokens": trace.decodedTokens, "prompt_tokens": trace.promptTokens,
                "one_token_cycle_bytes": trace.oneTokenCycleBytes, "results": rows,
            ]
            if let disk, let compute { object["disk_bytes_per_second"] = disk; object["compute_ms_per_token"] = 1000 * compute }
            if let m = measured {
                object["measured"] = ["compute_ms_per_token": 1000 * m.computeSeconds, "disk_bytes_per_second": m.diskBytesPerSecond,
                                      "tokens_per_second": m.tokensPerSecond, "hit_rate": m.hitRate, "expert_memory": m.expertMemory]
            }
            let out = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: out, as: UTF8.self))
            return
        }
        print("\(file) (\(trace.format)): \(trace.architecture), \(trace.moeLayers.count) MoE layers × \(trace.experts) experts, top \(trace.expertsPerToken); "
              + "\(trace.promptTokens) prompt and \(trace.decodedTokens) decoded tokens; one token's experts over all layers: \(formatBytes(trace.oneTokenCycleBytes))")
        if let sizes { print("budgets as --expert-memory: slots of \(formatBytes(sizes.budget.slotBytes)) for \(model ?? "")") }
        var head = "budget".leftPad(10) + "policy".leftPad(15)
        if !decodeOnly { head += "hit rate".leftPad(10) + "lookups".leftPad(10) + "hits".leftPad(10) }
        head += "decode hit".leftPad(12) + "read".leftPad(12) + "read/token".leftPad(12)
        if disk != nil && compute != nil { head += "tok/s".leftPad(9) }
        print(head)
        for r in results {
            var line = formatBytes(r.budgetBytes).leftPad(10) + r.policy.leftPad(15)
            if !decodeOnly {
                line += String(format: "%.1f%%", 100 * r.hitRate).leftPad(10) + String(r.lookups).leftPad(10) + String(r.hits).leftPad(10)
            }
            line += String(format: "%.1f%%", 100 * r.decodeHitRate).leftPad(12) + formatBytes(r.bytesRead).leftPad(12)
                + formatBytes(Int(r.bytesReadPerToken)).leftPad(12)
            if let disk, let compute {
                line += String(format: "%.2f", r.tokensPerSecond(diskBytesPerSecond: disk, computeSeconds: compute)).leftPad(9)
            }
            print(line)
        }
    }
}
