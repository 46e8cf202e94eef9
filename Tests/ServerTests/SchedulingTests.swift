import Foundation
import Server
import TestSupport
import Testing

/// The scheduler under load and faults: clients that go away, a full queue, a queue wait
/// that times out, shutdown during streams, and the metrics that show it.
@Suite("moe serve scheduling", .serialized)
struct SchedulingTests {
    static func longStream(_ prompt: String, tokens: Int = 400) -> String {
        let body = "{\"prompt\": \"\(prompt)\", \"max_tokens\": \(tokens), \"ignore_eos\": true, \"stream\": true}"
        return "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    @Test("a client that disconnects mid-stream has its sequence stopped and its KV blocks freed")
    func disconnectFreesBlocks() async throws {
        let server = try await TestServer.start()
        #expect(try await server.metric("moe_kv_blocks_used") == 0)
        let port = server.port
        let seen = try await offPool { () -> String in
            let c = try RawConnection(port: port)
            c.send(Self.longStream("Going away"))
            let text = c.read(until: "data: ")
            c.close()
            return text
        }
        #expect(seen.contains("HTTP/1.1 200"), "\(seen)")
        #expect(try await server.waitForMetric("moe_active_sequences", toBe: 0))
        #expect(try await server.waitForMetric("moe_kv_blocks_used", toBe: 0))
        // It did not run to its 400 tokens.
        let generated = try #require(try await server.metric("moe_generated_tokens_total"))
        #expect(generated < 400, "\(generated) tokens were generated for a stream whose client left")
        #expect(try await server.request("POST", "/v1/completions", json: BadInputTests.good).status == 200)
        try await server.stop()
    }

    @Test("past --parallel requests queue; past --queue they are refused with 429; a wait past --queue-timeout gets 503")
    func queueLimits() async throws {
        let server = try await TestServer.start {
            $0.scheduler.parallel = 1
            $0.scheduler.queueLimit = 1
            $0.scheduler.queueTimeout = .milliseconds(300)
        }
        let port = server.port
        // One long stream holds the only sequence.
        let holder = RawHolder(port: port, request: Self.longStream("Holding", tokens: 480))
        try await offPool { try holder.open() }
        #expect(try await server.waitForMetric("moe_active_sequences", toBe: 1))
        // The next waits in the queue, and times out there.
        async let queued = server.request("POST", "/v1/completions", json: BadInputTests.good)
        #expect(try await server.waitForMetric("moe_queue_depth", toBe: 1))
        let refused = try await server.request("POST", "/v1/completions", json: BadInputTests.good)
        #expect(refused.status == 429, "\(refused.text)")
        #expect(try refused.error()["code"] as? String == "queue_full")
        #expect(refused.headers["retry-after"] != nil)
        let timedOut = try await queued
        #expect(timedOut.status == 503, "\(timedOut.text)")
        #expect(try timedOut.error()["code"] as? String == "queue_timeout")
        holder.close()
        #expect(try await server.waitForMetric("moe_active_sequences", toBe: 0))
        #expect(try await server.request("POST", "/v1/completions", json: BadInputTests.good).status == 200)
        try await server.stop()
    }

    @Test("shutdown lets streams run up to the grace period, then ends them with a final chunk and [DONE]")
    func shutdownEndsStreams() async throws {
        let server = try await TestServer.start { $0.shutdownTimeout = .milliseconds(300) }
        let streams = (0..<3).map { i in
            Task { try await server.request("POST", "/v1/completions",
                                            json: ["prompt": "Shut \(i)", "max_tokens": 480, "ignore_eos": true, "stream": true]) }
        }
        #expect(try await server.waitForMetric("moe_active_sequences", toBe: 3))
        try await server.stop()
        for s in streams {
            let reply = try await s.value
            let (events, done) = try reply.events()
            #expect(done)
            let reasons = events.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
            #expect(reasons == ["length"])
        }
    }

    @Test("--api-key: every route but /health needs the bearer key")
    func apiKey() async throws {
        let server = try await TestServer.start { $0.apiKey = "s3cret-key" }
        #expect(try await server.request("GET", "/health").status == 200)
        let none = try await server.request("POST", "/v1/completions", json: BadInputTests.good)
        #expect(none.status == 401)
        #expect(try none.error()["code"] as? String == "invalid_api_key")
        let wrong = try await server.request("GET", "/v1/models", headers: ["Authorization": "Bearer s3cret-kez"])
        #expect(wrong.status == 401)
        let short = try await server.request("GET", "/metrics", headers: ["Authorization": "Bearer s3cret"])
        #expect(short.status == 401)
        let right = try await server.request("POST", "/v1/completions", json: BadInputTests.good,
                                             headers: ["Authorization": "Bearer s3cret-key"])
        #expect(right.status == 200)
        try await server.stop()
    }

    @Test("/metrics counters move as requests are made")
    func metricsMove() async throws {
        let server = try await TestServer.start()
        let before = try await server.request("GET", "/metrics").text
        #expect(!before.contains("route=\"/v1/completions\",status=\"200\""))
        _ = try await server.request("POST", "/v1/completions", json: ["prompt": "Count me", "max_tokens": 5, "temperature": 0,
                                                                       "ignore_eos": true])
        _ = try await server.request("POST", "/v1/completions", body: Data("nope".utf8))
        let after = try await server.request("GET", "/metrics").text
        #expect(after.contains("moe_requests_total{route=\"/v1/completions\",status=\"200\"} 1"), "\(after)")
        #expect(after.contains("moe_requests_total{route=\"/v1/completions\",status=\"400\"} 1"))
        #expect(try await server.metric("moe_generated_tokens_total") == 5)
        #expect(try await server.metric("moe_prompt_tokens_total").map { $0 > 0 } == true)
        #expect(try await server.metric("moe_time_to_first_token_seconds_count") == 1)
        #expect(try await server.metric("moe_inter_token_latency_seconds_count") == 4)
        #expect(try await server.metric("moe_kv_blocks_total").map { $0 > 0 } == true)
        try await server.stop()
    }
}

/// A raw connection kept open with a streaming request on it, read in the background.
final class RawHolder: @unchecked Sendable {
    let port: Int
    let request: String
    private var connection: RawConnection?
    init(port: Int, request: String) {
        self.port = port
        self.request = request
    }
    func open() throws {
        let c = try RawConnection(port: port)
        c.send(request)
        _ = c.read(until: "data: ")
        connection = c
    }
    func close() { connection?.close() }
}
