import ArgumentParser
import Foundation
import Engine
import Experts
import TraceLab

/// A trace file as the `moe trace` commands take it: a route_trace v1 CSV file (sizes in its
/// preamble) or this runtime's routing record (sizes from `-m MODEL`, the model it was made
/// with; without it only the routing itself can be studied).
struct TraceInput {
    var trace: CacheTrace
    /// The model's expert sizes and slot arithmetic, for this runtime's records given `-m`.
    var sizes: ModelExpertSizes?

    init(file: String, model: String?, needSizes: Bool) throws {
        // The first bytes tell the formats apart; the reader then reads the file once.
        let isRouteTrace = FileHandle(forReadingAtPath: file).map { handle in
            defer { try? handle.close() }
            return (try? handle.read(upToCount: 13)).map { $0.elementsEqual("# route_trace".utf8) } ?? false
        } ?? false
        if isRouteTrace {
            trace = try runReporting { try RouteTraceFile.read(path: file) }
            return
        }
        guard let model else {
            guard !needSizes else {
                throw ValidationError("'\(file)' is a routing record of this runtime, which holds no expert sizes: give -m MODEL, the model it was made with")
            }
            trace = try runReporting { try CacheTrace.fromRoutingRecord(path: file, expertBytes: nil) }
            return
        }
        let s = try runReporting { try ModelExpertSizes(modelPath: model) }
        sizes = s
        trace = try runReporting { try CacheTrace.fromRoutingRecord(path: file, expertBytes: s.expertBytes) }
    }
}

extension DecodeCost {
    /// Measures `model` on this machine at `budget` (the model's smallest useful budget when
    /// nil: a quarter of its experts), saying on stderr what it found.
    static func measureForTrace(model: String, budget: Int?, prefetch: PrefetchMode = .none) throws -> DecodeCost {
        let sizes = try runReporting { try ModelExpertSizes(modelPath: model) }
        let all = sizes.expertBytes.values.reduce(0, +) * sizes.expertsPerLayer
        let b = max(budget ?? all / 4, sizes.budget.minimum)
        FileHandle.standardError.write(Data("measuring \(model) on this machine (3 × 32 tokens, --expert-memory \(formatBytes(b)), \(prefetch == .none ? "no read-ahead" : "--prefetch \(prefetch.rawValue)"))...\n".utf8))
        let cost = try runReporting { try DecodeCost.measure(modelPath: model, expertMemory: b, tokens: 32, prefetch: prefetch) }
        FileHandle.standardError.write(Data(String(
            format: "measured: %.2f ms compute per token, expert reads at %.2f GB/s as decoding waits for them (%.2f GB/s while outstanding%@; the run: %.1f tokens/s, %.1f%% hits, %@ read per token)\n",
            1000 * cost.computeSeconds, cost.diskBytesPerSecond / 1e9, cost.readBytesPerSecond / 1e9,
            cost.probedBytesPerSecond.map { String(format: ", device probe %.2f GB/s", $0 / 1e9) } ?? "",
            cost.tokensPerSecond, 100 * cost.hitRate, formatBytes(Int(cost.bytesPerToken))).utf8))
        return cost
    }
}

/// `--disk-gbps` and `--compute-ms`, which turn bytes read per token into tokens/s; with `-m`
/// whichever is not given is measured on this machine.
struct DecodeCostOptions: ParsableArguments {
    @Option(name: .customLong("disk-gbps"), help: "Disk read bandwidth (GB/s) for predicted tokens/s (measured with -m when not given).")
    var diskGBps: Double?

    @Option(name: .customLong("compute-ms"), help: "Compute per decoded token (ms) for predicted tokens/s (measured with -m when not given).")
    var computeMs: Double?

    func validate() throws {
        if let diskGBps, !(diskGBps > 0 && diskGBps.isFinite) { throw ValidationError("--disk-gbps must be a positive number") }
        if let computeMs, !(computeMs >= 0 && computeMs.isFinite) { throw ValidationError("--compute-ms must be a number ≥ 0") }
    }

    /// Disk bytes per second and compute seconds per token as given, the missing ones
    /// measured on `model` at `budget` (see `DecodeCost.measureForTrace`); nil where neither.
    func resolve(model: String?, budget: Int?) throws -> (disk: Double?, compute: Double?, measured: DecodeCost?) {
        var disk = diskGBps.map { $0 * 1e9 }, compute = computeMs.map { $0 / 1000 }
        var measured: DecodeCost?
        if let model, disk == nil || compute == nil {
            let cost = try DecodeCost.measureForTrace(model: model, budget: budget)
            measured = cost
            disk = disk ?? cost.diskBytesPerSecond
            compute = compute ?? cost.computeSeconds
        }
        return (disk, compute, measured)
    }
}
