import CoreMetrics
import Foundation
import Metrics
import Prometheus

/// What `/metrics` shows, recorded through swift-metrics into a Prometheus registry of this
/// server's own (not the process-wide default, so that several servers in one process, as
/// in the tests, keep their figures apart).
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    let promptTokens: CoreMetrics.Counter
    let generatedTokens: CoreMetrics.Counter
    let cachedPromptTokens: CoreMetrics.Counter
    let decodeTokensPerSecond: CoreMetrics.Gauge
    let timeToFirstToken: CoreMetrics.Timer
    let interTokenLatency: CoreMetrics.Timer
    let queueDepth: CoreMetrics.Gauge
    let activeSequences: CoreMetrics.Gauge
    let kvBlocksUsed: CoreMetrics.Gauge
    let kvBlocksFree: CoreMetrics.Gauge
    let kvBlocksTotal: CoreMetrics.Gauge
    let expertHitRate: CoreMetrics.Gauge
    let expertBytesRead: CoreMetrics.Counter
    let rejected: CoreMetrics.Counter

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        let latencyBuckets: [Duration] = [.milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
                                          .milliseconds(20), .milliseconds(50), .milliseconds(100), .milliseconds(200),
                                          .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30)]
        factory.defaultDurationHistogramBuckets = latencyBuckets
        self.factory = factory
        promptTokens = CoreMetrics.Counter(label: "moe_prompt_tokens_total", factory: factory)
        generatedTokens = CoreMetrics.Counter(label: "moe_generated_tokens_total", factory: factory)
        cachedPromptTokens = CoreMetrics.Counter(label: "moe_cached_prompt_tokens_total", factory: factory)
        decodeTokensPerSecond = CoreMetrics.Gauge(label: "moe_decode_tokens_per_second", factory: factory)
        timeToFirstToken = CoreMetrics.Timer(label: "moe_time_to_first_token_seconds", factory: factory)
        interTokenLatency = CoreMetrics.Timer(label: "moe_inter_token_latency_seconds", factory: factory)
        queueDepth = CoreMetrics.Gauge(label: "moe_queue_depth", factory: factory)
        activeSequences = CoreMetrics.Gauge(label: "moe_active_sequences", factory: factory)
        kvBlocksUsed = CoreMetrics.Gauge(label: "moe_kv_blocks_used", factory: factory)
        kvBlocksFree = CoreMetrics.Gauge(label: "moe_kv_blocks_free", factory: factory)
        kvBlocksTotal = CoreMetrics.Gauge(label: "moe_kv_blocks_total", factory: factory)
        expertHitRate = CoreMetrics.Gauge(label: "moe_expert_hit_rate", factory: factory)
        expertBytesRead = CoreMetrics.Counter(label: "moe_expert_bytes_read_total", factory: factory)
        rejected = CoreMetrics.Counter(label: "moe_requests_rejected_total", factory: factory)
        for gauge in [queueDepth, activeSequences, kvBlocksUsed, kvBlocksFree, kvBlocksTotal, decodeTokensPerSecond] {
            gauge.record(0)
        }
    }

    /// Counts one answered request by route and status.
    func countRequest(route: String, status: Int) {
        CoreMetrics.Counter(label: "moe_requests_total", dimensions: [("route", route), ("status", String(status))], factory: factory)
            .increment()
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> String { registry.emitToString() }
}
