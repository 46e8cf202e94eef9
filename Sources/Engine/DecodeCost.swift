import Experts
import Foundation

/// What a decoded token costs on this machine apart from its expert reads, and how fast
/// those reads come off the disk: the two figures that turn a cache replay's bytes per
/// token into tokens/s. Measured by decoding a few tokens of the model itself with its
/// experts offloaded.
public struct DecodeCost: Sendable {
    /// Seconds of computation per decoded token (the decode time less the time it waited
    /// for reads).
    public var computeSeconds: Double
    /// Bytes per second of expert reads as decoding feels them: the bytes the run read over
    /// the time it waited for them (per-read latency included, which a sequential figure
    /// leaves out), or the device probe's figure when the run read too little to tell.
    public var diskBytesPerSecond: Double
    /// The bandwidth the reads achieved while outstanding.
    public var readBytesPerSecond: Double
    /// The probe's sequential figure (1 MiB O_DIRECT reads, 16 in flight), when it ran.
    public var probedBytesPerSecond: Double?
    /// The measuring run itself: its tokens/s, hit rate and bytes read per token.
    public var tokensPerSecond: Double
    public var hitRate: Double
    public var bytesPerToken: Double
    public var expertMemory: Int

    /// Decodes `tokens` random tokens three times (after a warm-up; the median run counts)
    /// with the experts in a pool of
    /// `expertMemory` bytes, one sequence, with `prefetch` (none: the replay's model, a token
    /// waits for its reads; gate: what read-ahead's own work adds to the computation).
    public static func measure(modelPath: String, expertMemory: Int, tokens: Int = 24, threads: Int? = nil,
                               policy: String = ExpertPolicies.defaultName, prefetch: PrefetchMode = .none) throws(RuntimeError) -> DecodeCost {
        var configuration = RuntimeConfiguration(modelPath: modelPath)
        configuration.offload.expertMemory = expertMemory
        configuration.offload.policy = policy
        configuration.offload.prefetch = prefetch
        configuration.statistics = true
        configuration.threads = threads
        configuration.contextLength = max(tokens + 8, 64)
        let runtime = try Runtime.load(configuration)
        let result = try runtime.benchmark(BenchmarkPlan(promptTokens: 0, generatedTokens: tokens, runs: 3))
        guard let rate = result.decodeMedian, rate > 0, let stats = result.expertStatistics, stats.tokens > 0 else {
            throw .nothingToMeasure("'\(modelPath)' decoded nothing to measure (is it a MoE model?)")
        }
        let stall = stats.stallSeconds / Double(stats.tokens)
        let compute = max(1 / rate - stall, 0)
        // A run that read little (most experts hit) tells little about the disk.
        let felt = stats.bytesRead >= 8 << 20 && stall > 0 ? stats.bytesPerToken / stall : 0
        let disk = felt > 0 ? felt : (stats.diskBandwidth ?? 0)
        guard disk > 0 else { throw .nothingToMeasure("could not measure the disk under '\(modelPath)'") }
        return DecodeCost(computeSeconds: compute, diskBytesPerSecond: disk, readBytesPerSecond: stats.readBandwidth,
                          probedBytesPerSecond: stats.diskBandwidth,
                          tokensPerSecond: rate, hitRate: stats.hitRate, bytesPerToken: stats.bytesPerToken,
                          expertMemory: expertMemory)
    }
}
