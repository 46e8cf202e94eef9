import Foundation
import Server
import TestSupport
import Testing

/// Every kind of bad request gets an OpenAI-shaped error with the right status, and the
/// server answers the next good request as if nothing happened.
@Suite("moe serve bad input", .serialized)
struct BadInputTests {
    static var good: [String: Any] { ["prompt": "Hello", "max_tokens": 4, "temperature": 0] }

    /// Checks an error reply's status and body, then that a good request still works.
    static func expectError(_ reply: TestServer.Reply, status: Int, param: String? = nil, mentioning words: [String] = [],
                            on server: TestServer, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        #expect(reply.status == status, "\(reply.text)", sourceLocation: sourceLocation)
        #expect(reply.headers["content-type"] == "application/json", sourceLocation: sourceLocation)
        let error = try reply.error()
        let message = try #require(error["message"] as? String, sourceLocation: sourceLocation)
        #expect(error["type"] is String, sourceLocation: sourceLocation)
        #expect(error.keys.contains("param") && error.keys.contains("code"), sourceLocation: sourceLocation)
        if let param { #expect(error["param"] as? String == param, "\(message)", sourceLocation: sourceLocation) }
        for w in words { #expect(message.contains(w), "'\(message)' lacks '\(w)'", sourceLocation: sourceLocation) }
        let next = try await server.request("POST", "/v1/completions", json: good)
        #expect(next.status == 200, "the request after the bad one: \(next.text)", sourceLocation: sourceLocation)
    }

    @Test("malformed bodies, wrong types and values out of range")
    func malformedAndOutOfRange() async throws {
        let server = try await TestServer.start { $0.maxBodyBytes = 64 << 10 }
        let post = { (body: String) in try await server.request("POST", "/v1/completions", body: Data(body.utf8)) }
        try await Self.expectError(try await post("{\"prompt\": \"x\""), status: 400, mentioning: ["JSON"], on: server)
        try await Self.expectError(try await post(""), status: 400, mentioning: ["empty"], on: server)
        try await Self.expectError(try await post("[1, 2]"), status: 400, mentioning: ["object"], on: server)
        try await Self.expectError(try await post("{\"prompt\": \"x\", \"temperature\": \"hot\"}"), status: 400,
                                   param: "temperature", mentioning: ["number"], on: server)
        try await Self.expectError(try await post("{\"prompt\": \"x\", \"temperature\": 7}"), status: 400, param: "temperature",
                                   on: server)
        try await Self.expectError(try await post("{\"prompt\": \"x\", \"stream\": 1}"), status: 400, param: "stream", on: server)
        try await Self.expectError(try await post("{\"prompt\": \"x\", \"max_tokens\": 0}"), status: 400, param: "max_tokens",
                                   on: server)
        try await Self.expectError(try await post("{\"prompt\": \"x\", \"max_tokens\": 2.5}"), status: 400, param: "max_tokens",
                                   on: server)
        // The tiny model's context is 512: both numbers are in the message.
        try await Self.expectError(try await post("{\"prompt\": \"x\", \"max_tokens\": 100000}"), status: 400, param: "max_tokens",
                                   mentioning: ["100000", "512"], on: server)
        try await Self.expectError(try await post("{\"max_tokens\": 3}"), status: 400, param: "prompt", on: server)
        try await Self.expectError(try await post("{\"prompt\": [1, 99999]}"), status: 400, param: "prompt",
                                   mentioning: ["99999"], on: server)
        try await Self.expectError(try await post("{\"prompt\": \"x\", \"n\": 99}"), status: 400, param: "n", on: server)
        try await Self.expectError(try await post("{\"prompt\": \"x\", \"logprobs\": true}"), status: 400, param: "logprobs",
                                   on: server)
        try await server.stop()
    }

    @Test("a prompt longer than the context: the message gives both numbers")
    func promptTooLong() async throws {
        let server = try await TestServer.start()
        let long = String(repeating: "many words here ", count: 400)
        let reply = try await server.request("POST", "/v1/completions", json: ["prompt": long])
        try await Self.expectError(reply, status: 400, param: "prompt", mentioning: ["512", "tokens"], on: server)
        let error = try reply.error()
        #expect(error["code"] as? String == "context_length_exceeded")
        let chat = try await server.request("POST", "/v1/chat/completions",
                                            json: ["messages": [["role": "user", "content": long]]])
        try await Self.expectError(chat, status: 400, param: "messages", mentioning: ["512"], on: server)
        try await server.stop()
    }

    @Test("chat messages: empty, not objects, empty or unknown roles, non-text parts")
    func badMessages() async throws {
        let server = try await TestServer.start()
        let chat = { (messages: Any) in try await server.request("POST", "/v1/chat/completions", json: ["messages": messages]) }
        try await Self.expectError(try await chat([] as [Any]), status: 400, param: "messages", mentioning: ["empty"], on: server)
        try await Self.expectError(try await chat("hi"), status: 400, param: "messages", on: server)
        try await Self.expectError(try await chat([["role": "", "content": "x"]]), status: 400, param: "messages[0].role",
                                   mentioning: ["empty"], on: server)
        try await Self.expectError(try await chat([["role": "user", "content": "a"], ["role": "wizard", "content": "x"]]),
                                   status: 400, param: "messages[1].role", mentioning: ["wizard"], on: server)
        try await Self.expectError(try await chat([["content": "x"]]), status: 400, param: "messages[0].role", on: server)
        try await Self.expectError(try await chat([["role": "user", "content": [["type": "image_url", "image_url": ["url": "x"]]]]]),
                                   status: 400, param: "messages[0].content[0]", on: server)
        // Text parts and the developer role are understood.
        let parts = try await chat([["role": "developer", "content": "Be brief."],
                                    ["role": "user", "content": [["type": "text", "text": "Hi"]]]])
        #expect(parts.status == 200, "\(parts.text)")
        try await server.stop()
    }

    @Test("bodies over --max-body, invalid UTF-8, too many or too long stop strings, unknown routes")
    func limits() async throws {
        let server = try await TestServer.start { $0.maxBodyBytes = 4096 }
        let big = try await server.request("POST", "/v1/completions",
                                           json: ["prompt": String(repeating: "a", count: 10000)])
        try await Self.expectError(big, status: 413, mentioning: ["4096"], on: server)
        var invalid = Array("{\"prompt\": \"".utf8)
        invalid += [0xC3, 0x28, 0xFF]
        invalid += Array("\"}".utf8)
        try await Self.expectError(try await server.request("POST", "/v1/completions", body: Data(invalid)), status: 400,
                                   mentioning: ["UTF-8"], on: server)
        let many = (0..<17).map { "s\($0)" }
        try await Self.expectError(try await server.request("POST", "/v1/completions", json: ["prompt": "x", "stop": many]),
                                   status: 400, param: "stop", mentioning: ["17"], on: server)
        try await Self.expectError(try await server.request("POST", "/v1/completions",
                                                            json: ["prompt": "x", "stop": String(repeating: "z", count: 300)]),
                                   status: 400, param: "stop", on: server)
        try await Self.expectError(try await server.request("POST", "/v1/completions", json: ["prompt": "x", "stop": [1]]),
                                   status: 400, param: "stop", on: server)
        try await Self.expectError(try await server.request("GET", "/v2/nothing"), status: 404, on: server)
        try await Self.expectError(try await server.request("GET", "/v1/completions"), status: 404, on: server)
        try await server.stop()
    }

    @Test("a client that stalls mid-body gets 408 after --read-timeout; an idle connection is closed")
    func slowClients() async throws {
        let server = try await TestServer.start {
            $0.readTimeout = .milliseconds(500)
            $0.idleTimeout = .seconds(1)
        }
        let port = server.port
        let stalled = try await offPool { () -> String in
            let c = try RawConnection(port: port)
            defer { c.close() }
            c.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prom")
            return c.read(until: "}}")
        }
        #expect(stalled.hasPrefix("HTTP/1.1 408"), "\(stalled)")
        #expect(stalled.contains("read_timeout"))
        // Connected, sending nothing: the server closes the connection (read returns at once
        // with nothing, well before the socket's 30 s timeout).
        let started = ContinuousClock.now
        let idle = try await offPool { () -> String in
            let c = try RawConnection(port: port)
            defer { c.close() }
            return c.read()
        }
        #expect(idle.isEmpty)
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(try await server.request("POST", "/v1/completions", json: Self.good).status == 200)
        try await server.stop()
    }
}
