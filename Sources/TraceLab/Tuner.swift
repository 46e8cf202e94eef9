import Experts
import Foundation

/// `moe trace tune`: for a memory limit, the configuration with the most predicted decode
/// tokens/s on a recorded run. It splits the memory into what stays outside the expert pool
/// (the weights outside the experts, the KV pool, the runtime's reserve and the process
/// itself) and the pool, then replays the run under every candidate (policy, read-ahead,
/// fallback threshold and share) and turns each one's bytes read per token into tokens/s.
public enum Tuner {
    public struct Request: Sendable {
        public var memory: Int
        /// Bytes outside the pool: the model's weights outside the experts, the KV pool, the
        /// runtime's reserve and the process's own baseline.
        public var denseBytes: Int
        public var kvBytes: Int
        public var reserveBytes: Int
        public var baselineBytes: Int
        public var diskBytesPerSecond: Double
        public var computeSeconds: Double
        public var policies: [String]
        /// The cross-layer gate's recall on the record (k predicted of k), for `--prefetch gate`.
        public var gateRecall: Double?
        /// Compute per token with `--prefetch gate` (the gate's router and its corrections
        /// cost time of their own); `computeSeconds` when not measured.
        public var gateComputeSeconds: Double?
        /// Bytes the read-ahead corrections' maps take from the pool with `--prefetch gate`.
        public var gateCorrectionBytes = 0
        /// A pack's first low-precision copies: their type and slot bytes, for fallback.
        public var copies: (name: String, slotBytes: Int)?
        /// Slot bytes and minimum of the pool (this runtime's records); nil for route_trace
        /// files, whose budgets are expert bytes.
        public var budget: ExpertBudget?
        public var sequences = 1
        /// Decoded tokens that warm the cache uncounted (`moe bench`'s warm-up run).
        public var warmup = 0

        public init(memory: Int, denseBytes: Int, kvBytes: Int, reserveBytes: Int, baselineBytes: Int,
                    diskBytesPerSecond: Double, computeSeconds: Double, policies: [String]) {
            self.memory = memory
            self.denseBytes = denseBytes
            self.kvBytes = kvBytes
            self.reserveBytes = reserveBytes
            self.baselineBytes = baselineBytes
            self.diskBytesPerSecond = diskBytesPerSecond
            self.computeSeconds = computeSeconds
            self.policies = policies
        }

        public var poolBytes: Int { memory - denseBytes - kvBytes - reserveBytes - baselineBytes }
    }

    public struct Candidate: Sendable {
        public var policy: String
        public var prefetch: String
        public var fallbackThreshold: Float?
        public var fallbackShare: Double?
        public var expertMemory: Int
        public var result: CacheReplay.Result
        public var tokensPerSecond: Double
    }

    public struct Plan: Sendable {
        public var request: Request
        public var candidates: [Candidate]
        public var best: Candidate { candidates[0] }
    }

    /// What the prediction leaves out, for the user to weigh.
    public static let omissions = [
        "compute is the same for every candidate (a low-precision copy computes faster than measured; fallback's accuracy cost is not counted)",
        "read-ahead is modelled from the gate's recall on this record (predicted reads overlap the layer before, wrong ones cost disk time) and its compute as measured with it; the corrections it learns online and the slots its wrong reads take are not",
        "reads and compute do not overlap without read-ahead (a token waits for its reads), and the disk figure is the one measured here",
        "the record's routing stands for the workload: another prompt or sampling routes differently",
    ]

    public static func plan(_ trace: CacheTrace, _ request: Request) throws(TraceFileError) -> Plan {
        let pool = request.poolBytes
        let minimum = request.budget?.minimum ?? trace.moeLayers.reduce(0) { $0 + trace.expertsPerToken * (trace.expertBytes[$1] ?? 0) } / 8
        guard pool >= minimum else {
            throw .invalid(path: trace.source, detail: "\(formatBytes(request.memory)) leaves \(formatBytes(max(pool, 0))) for experts "
                           + "(weights outside the experts \(formatBytes(request.denseBytes)), KV \(formatBytes(request.kvBytes)), "
                           + "reserve and process \(formatBytes(request.reserveBytes + request.baselineBytes))), below the pool's minimum of \(formatBytes(minimum))")
        }
        struct Setting { var policy: String; var prefetch: String; var threshold: Float?; var share: Double? }
        var settings: [Setting] = []
        let prefetchModes = ["none"] + (request.gateRecall != nil ? ["gate"] : [])
        let k = Float(max(trace.expertsPerToken, 1))
        for policy in request.policies {
            for prefetch in prefetchModes {
                settings.append(Setting(policy: policy, prefetch: prefetch))
                if request.copies != nil {
                    for threshold in [1.0 / k, 1.6 / k, 2.5 / k] {
                        for share in [0.2, 0.4] { settings.append(Setting(policy: policy, prefetch: prefetch, threshold: threshold, share: share)) }
                    }
                }
            }
        }
        // Each setting's pool: read-ahead's maps come out of it; fallback splits it in two.
        let jobs = settings.map { s -> CacheReplay.Job in
            var budget = pool
            if s.prefetch == "gate", pool - request.gateCorrectionBytes >= minimum { budget -= request.gateCorrectionBytes }
            guard let b = request.budget else {
                return CacheReplay.Job(policy: s.policy, budget: budget, accounting: .bytesAfterBatch(budget: budget))
            }
            var fallback: (threshold: Float, share: Double, copySlotBytes: Int)?
            if let threshold = s.threshold, let share = s.share, let copies = request.copies {
                fallback = (threshold, share, copies.slotBytes)
            }
            let (accounting, copies) = CacheReplay.poolAccounting(b, bytes: budget, fallback: fallback)
            return CacheReplay.Job(policy: s.policy, budget: budget, accounting: accounting, fallback: copies)
        }
        let results = try CacheReplay.runAll(trace, jobs, sequences: request.sequences, warmup: request.warmup)
        let disk = request.diskBytesPerSecond, compute = request.computeSeconds
        let candidates = zip(settings, results).map { s, r -> Candidate in
            let bytes = r.bytesReadPerToken
            let seconds: Double
            if s.prefetch == "gate", let recall = request.gateRecall {
                let gateCompute = request.gateComputeSeconds ?? compute
                seconds = max(bytes * (2 - recall) / disk, gateCompute + (1 - recall) * bytes / disk)
            } else {
                seconds = bytes / disk + compute
            }
            return Candidate(policy: s.policy, prefetch: s.prefetch, fallbackThreshold: s.threshold, fallbackShare: s.share,
                             expertMemory: pool, result: r, tokensPerSecond: seconds > 0 ? 1 / seconds : 0)
        }
        return Plan(request: request, candidates: candidates.sorted { $0.tokensPerSecond > $1.tokensPerSecond })
    }

    /// The flags that run `candidate` (`--expert-memory` is the whole pool: the runtime takes
    /// read-ahead's maps and fallback's share out of it as the replay did).
    public static func flags(_ c: Candidate, request: Request, copyType: String?) -> [String] {
        var f = ["--expert-memory", budgetFlag(c.expertMemory), "--expert-policy", c.policy, "--prefetch", c.prefetch]
        if request.budget != nil { f += ["--kv-memory", "\((request.kvBytes + (1 << 20) - 1) >> 20)M"] }
        if let t = c.fallbackThreshold, let s = c.fallbackShare {
            if let copyType { f += ["--fallback-type", copyType] }
            f += ["--fallback-threshold", String(format: "%.3g", t), "--fallback-share", String(format: "%g", s)]
        }
        return f
    }

    /// Bytes as a flag value, rounded down to whole MiB (never above what was planned; the
    /// KV pool is rounded up instead, from the MiB the pool gives up).
    static func budgetFlag(_ bytes: Int) -> String { "\(bytes >> 20)M" }
}
