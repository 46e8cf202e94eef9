import ArgumentParser
import Engine
import Experts
import Foundation
import Host
import TraceLab

/// `moe trace tune`: the flags with the most predicted tokens/s under a memory limit.
struct TuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune",
        abstract: "The expert pool, KV, policy, fallback and read-ahead with the most predicted tokens/s for a memory limit.",
        discussion: """
        Splits --memory into the weights outside the experts, the KV pool for --ctx, the \
        runtime's reserve, this process's own footprint, and the expert pool; replays FILE \
        under every policy, read-ahead mode (gate, where the record holds the gate's \
        predictions) and fallback setting (where -m is a pack with low-precision copies); \
        lists each candidate's predicted decode tokens/s from this machine's measured compute \
        and disk (or --compute-ms, --disk-gbps), best first, and prints the flags to run with. \
        What the prediction leaves out is printed with it.
        """)

    @Argument(help: "A routing record (--record-routing) or a route_trace v1 CSV file.")
    var file: String

    @Option(help: "The memory limit to fit, e.g. 800M (M and G are MiB and GiB).")
    var memory: String

    @Option(name: .shortAndLong, help: "The model the record was made with (needed for this runtime's records); measures compute and disk here.")
    var model: String?

    @Option(name: .customLong("ctx"), help: "Context length the KV pool is sized for (default: min(model's, 4096)).")
    var context: Int?

    @Option(name: .customLong("kv-memory"), help: "KV pool bytes for a route_trace file (its record does not size KV; default 0).")
    var kvMemory: String?

    @Option(help: "Policies, comma separated (default: every policy).")
    var policy: String?

    @OptionGroup var cost: DecodeCostOptions


    @Option(help: "Candidates to list (best first).")
    var top: Int = 12

    @Option(help: "Decoded tokens that fill the cache before counting starts (moe bench's warm-up: its -n).")
    var warmup: Int = 0

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard warmup >= 0 else { throw ValidationError("--warmup must be ≥ 0") }
        _ = try byteCountFlag(memory, flag: "--memory", example: "800M, 2G", allowZero: false)
        if let kvMemory { _ = try byteCountFlag(kvMemory, flag: "--kv-memory", example: "64M", allowZero: true) }
        if let context, context < 1 { throw ValidationError("--ctx must be ≥ 1") }
        guard top >= 1 else { throw ValidationError("--top must be ≥ 1") }
        _ = try ReplayCommand.parsePolicies(policy)
    }

    func run() throws {
        // This process's own footprint before any model is loaded stands for the runtime's.
        let baseline = ProcessMemory.residentBytes()
        let limit = try byteCountFlag(memory, flag: "--memory", example: "800M, 2G", allowZero: false)
        let input = try TraceInput(file: file, model: model, needSizes: true)
        let trace = input.trace
        let policies = try ReplayCommand.parsePolicies(policy).filter { $0 != CacheReplay.beladyName }
        let (givenDisk, givenCompute, measured) = try cost.resolve(model: model, budget: nil)
        guard let disk = givenDisk, let compute = givenCompute else {
            throw ValidationError("give -m MODEL to measure this machine, or both --disk-gbps and --compute-ms")
        }
        let dense: Int, kv: Int
        if let sizes = input.sizes {
            dense = sizes.denseBytes
            kv = sizes.kvBytes(context: context)
        } else {
            guard let d = trace.denseBytes else {
                throw ValidationError("'\(file)' does not say the bytes outside its experts (dense_bytes): it cannot be split")
            }
            dense = d
            kv = try kvMemory.map { try byteCountFlag($0, flag: "--kv-memory", example: "64M", allowZero: true) } ?? 0
        }
        var request = Tuner.Request(memory: limit, denseBytes: dense, kvBytes: kv, reserveBytes: OffloadedModel.reserveBytes,
                                    baselineBytes: baseline, diskBytesPerSecond: disk, computeSeconds: compute, policies: policies)
        request.budget = input.sizes?.budget
        request.copies = input.sizes?.lowPrecision.first
        request.gateCorrectionBytes = input.sizes?.correctionBytesPerDistance ?? 0
        request.gateRecall = Self.decodeGateRecall(trace.routing)
        if let model, cost.computeMs == nil, request.gateRecall != nil {
            request.gateComputeSeconds = try DecodeCost.measureForTrace(model: model, budget: nil, prefetch: .gate).computeSeconds
        }
        request.warmup = warmup
        let plan = try runReporting { try Tuner.plan(trace, request) }
        let copyType = request.copies?.name
        let shown = Array(plan.candidates.prefix(top))
        let best = plan.best
        let flags = Tuner.flags(best, request: request, copyType: copyType)
        if json {
            func row(_ c: Tuner.Candidate) -> [String: Any] {
                var o: [String: Any] = [
                    "policy": c.policy, "prefetch": c.prefetch, "expert_memory": c.expertMemory,
                    "hit_rate": c.result.decodeHitRate, "bytes_read_per_token": c.result.bytesReadPerToken,
                    "predicted_tokens_per_second": c.tokensPerSecond, "flags": Tuner.flags(c, request: request, copyType: copyType),
                ]
                if let t = c.fallbackThreshold, let s = c.fallbackShare {
                    o["fallback_threshold"] = Double(t)
                    o["fallback_share"] = s
                    o["low_precision_uses"] = c.result.lowPrecisionUses
                }
                return o
            }
            var object: [String: Any] = [
                "file": file, "memory": limit,
                "split": ["dense_bytes": dense, "kv_bytes": kv, "reserve_bytes": request.reserveBytes, "process_bytes": baseline,
                          "expert_pool_bytes": request.poolBytes],
                "disk_bytes_per_second": disk, "compute_ms_per_token": 1000 * compute,
                "gate_compute_ms_per_token": request.gateComputeSeconds.map { 1000 * $0 } ?? NSNull(),
                "candidates": plan.candidates.map(row), "best": row(best), "flags": flags, "leaves_out": Tuner.omissions,
            ]
            if let r = request.gateRecall { object["gate_recall"] = r }
            if let m = measured { object["measured_tokens_per_second"] = m.tokensPerSecond }
            let out = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: out, as: UTF8.self))
            return
        }
        print("\(formatBytes(limit)) for \(trace.model.isEmpty ? file : trace.model): weights outside the experts \(formatBytes(dense)), "
              + "KV \(formatBytes(kv))\(input.sizes != nil ? " (\(context.map { "\($0)" } ?? "default") positions)" : kvMemory == nil ? " (not in the record: --kv-memory)" : ""), "
              + "reserve \(formatBytes(request.reserveBytes)), this process \(formatBytes(baseline)): expert pool \(formatBytes(request.poolBytes))")
        print(String(format: "prediction from %.2f ms compute per token", 1000 * compute)
              + (request.gateComputeSeconds.map { String(format: " (%.2f with --prefetch gate)", 1000 * $0) } ?? "")
              + String(format: " and expert reads at %.2f GB/s", disk / 1e9)
              + (request.gateRecall.map { String(format: "; the gate foresaw %.1f%% of decode lookups", 100 * $0) } ?? "; no gate predictions in the record")
              + (copyType.map { "; fallback copies: \($0)" } ?? "; no low-precision copies (a pack made with --low-precision has them)"))
        print("#".leftPad(3) + "policy".leftPad(8) + "prefetch".leftPad(10) + "fallback".leftPad(16) + "hit rate".leftPad(10) + "read/token".leftPad(12) + "tok/s".leftPad(9))
        for (i, c) in shown.enumerated() {
            let fb = c.fallbackThreshold.map { String(format: "%.3g, share %g", $0, c.fallbackShare ?? 0) } ?? "off"
            print(String(i + 1).leftPad(3) + c.policy.leftPad(8) + c.prefetch.leftPad(10) + fb.leftPad(16)
                  + String(format: "%.1f%%", 100 * c.result.decodeHitRate).leftPad(10) + formatBytes(Int(c.result.bytesReadPerToken)).leftPad(12)
                  + String(format: "%.2f", c.tokensPerSecond).leftPad(9))
        }
        if plan.candidates.count > shown.count { print("   (\(plan.candidates.count - shown.count) more: --top \(plan.candidates.count))") }
        print("\nrun with: " + flags.joined(separator: " "))
        print("\nthe prediction leaves out:")
        for o in Tuner.omissions { print("- " + o) }
    }

    /// Of all decode lookups, the share the cross-layer gate named among its top k (lookups
    /// at a layer without a prediction count as missed); nil when the record has none.
    static func decodeGateRecall(_ routing: TokenRouting) -> Double? {
        guard routing.predicted != nil else { return nil }
        var named = 0, uses = 0
        for t in 0..<routing.count where routing.isDecode[t] {
            for c in 0..<routing.moeLayers.count {
                let e = routing.experts(token: t, column: c)
                let p = routing.predicted(token: t, column: c)
                for x in e where x >= 0 {
                    uses += 1
                    if p?.contains(x) == true { named += 1 }
                }
            }
        }
        return uses > 0 ? Double(named) / Double(uses) : nil
    }
}
