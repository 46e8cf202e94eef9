import Foundation
import Server
import TestSupport
import Testing

/// The routes as clients use them: completions and chat, whole and streamed, against what
/// `moe generate` prints for the same prompt, alone and among 15 other streams.
@Suite("moe serve routes", .serialized)
struct RoutesTests {
    static let prompts = (0..<16).map { "Request \($0): the quick brown fox number \($0 * 7 + 3) jumps" }

    /// What `moe generate --temp 0` prints for `prompt` (without its final newline).
    static func generated(_ prompt: String, tokens: Int, model: String = "tiny-qwen3moe.q8_0.gguf") async throws -> String {
        let r = try await runMoe(["generate", "-m", TestServer.model(model), "-p", prompt, "-n", String(tokens), "--temp", "0",
                                  "--threads", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        return String(r.stdout.dropLast())
    }

    static func completionText(_ reply: TestServer.Reply) throws -> String {
        let choices = try #require(try reply.json()["choices"] as? [[String: Any]])
        return try #require(choices.first?["text"] as? String)
    }

    /// The text of every choice of a streamed reply, by index.
    static func streamedTexts(_ reply: TestServer.Reply, chat: Bool) throws -> [Int: String] {
        var texts: [Int: String] = [:]
        for event in try reply.events().objects {
            for choice in event["choices"] as? [[String: Any]] ?? [] {
                let i = choice["index"] as! Int
                let piece = chat ? (choice["delta"] as? [String: Any])?["content"] as? String : choice["text"] as? String
                texts[i, default: ""] += piece ?? ""
            }
        }
        return texts
    }

    @Test("greedy completions equal moe generate, alone and while 15 other clients stream")
    func completionsEqualGenerate() async throws {
        let server = try await TestServer.start()
        var expected: [String] = []
        for p in Self.prompts { expected.append(try await Self.generated(p, tokens: 24)) }
        // Alone.
        let alone = try await server.request("POST", "/v1/completions",
                                             json: ["prompt": Self.prompts[0], "max_tokens": 24, "temperature": 0])
        #expect(alone.status == 200, "\(alone.text)")
        #expect(try Self.completionText(alone) == expected[0])
        // Sixteen at once, streamed: every stream is its own prompt's text, token for token.
        let replies = try await withThrowingTaskGroup(of: (Int, TestServer.Reply).self) { group in
            for (i, p) in Self.prompts.enumerated() {
                group.addTask {
                    (i, try await server.request("POST", "/v1/completions",
                                                 json: ["prompt": p, "max_tokens": 24, "temperature": 0, "stream": true]))
                }
            }
            var all: [Int: TestServer.Reply] = [:]
            for try await (i, r) in group { all[i] = r }
            return all
        }
        for (i, reply) in replies {
            #expect(reply.status == 200)
            #expect(try reply.events().done)
            #expect(try Self.streamedTexts(reply, chat: false)[0] == expected[i], "prompt \(i)")
        }
        try await server.stop()
    }

    @Test("chat completions, whole and streamed, agree; usage counts the tokens; the prefix cache serves a repeated prompt")
    func chatWholeAndStreamed() async throws {
        let server = try await TestServer.start()
        let messages: [[String: Any]] = [["role": "system", "content": "You are terse."], ["role": "user", "content": "Say hi."]]
        let whole = try await server.request("POST", "/v1/chat/completions",
                                             json: ["messages": messages, "max_tokens": 20, "temperature": 0, "model": "x"])
        #expect(whole.status == 200, "\(whole.text)")
        let object = try whole.json()
        #expect(object["object"] as? String == "chat.completion")
        let choice = try #require((object["choices"] as? [[String: Any]])?.first)
        let message = try #require(choice["message"] as? [String: Any])
        #expect(message["role"] as? String == "assistant")
        let text = try #require(message["content"] as? String)
        let usage = try #require(object["usage"] as? [String: Any])
        let promptTokens = try #require(usage["prompt_tokens"] as? Int)
        #expect(promptTokens > 10)
        let completionTokens = try #require(usage["completion_tokens"] as? Int)
        #expect(completionTokens >= 1 && completionTokens <= 20)
        #expect(usage["total_tokens"] as? Int == promptTokens + completionTokens)
        #expect((choice["finish_reason"] as? String).map { ["stop", "length"].contains($0) } == true)

        let streamed = try await server.request("POST", "/v1/chat/completions",
                                                json: ["messages": messages, "max_tokens": 20, "temperature": 0, "stream": true,
                                                       "stream_options": ["include_usage": true]])
        #expect(streamed.status == 200)
        #expect(streamed.headers["content-type"] == "text/event-stream")
        let (events, done) = try streamed.events()
        #expect(done)
        #expect(try Self.streamedTexts(streamed, chat: true)[0] == text)
        let first = try #require((events.first?["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])
        #expect(first["role"] as? String == "assistant")
        let last = try #require(events.last)
        #expect((last["choices"] as? [Any])?.isEmpty == true)
        let streamedUsage = try #require(last["usage"] as? [String: Any])
        #expect(streamedUsage["completion_tokens"] as? Int == completionTokens)
        // The same prompt a second time: its full blocks come from the prefix cache.
        let details = try #require(streamedUsage["prompt_tokens_details"] as? [String: Any])
        let cached = try #require(details["cached_tokens"] as? Int)
        #expect(cached >= 16 && cached < promptTokens, "cached \(cached) of \(promptTokens)")
        try await server.stop()
    }

    @Test("n choices fork one prompt evaluation: choice i samples what a single request with seed S+i samples")
    func choicesAreSeededForks() async throws {
        let server = try await TestServer.start()
        let base: [String: Any] = ["prompt": "Once upon a time", "max_tokens": 16, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                                   "min_p": 0.0]
        var together = base
        together["n"] = 3
        together["seed"] = 42
        let reply = try await server.request("POST", "/v1/completions", json: together)
        #expect(reply.status == 200, "\(reply.text)")
        let choices = try #require(try reply.json()["choices"] as? [[String: Any]])
        #expect(choices.map { $0["index"] as? Int } == [0, 1, 2])
        var texts: [String] = []
        for (i, choice) in choices.enumerated() {
            var alone = base
            alone["seed"] = 42 + i
            let single = try await server.request("POST", "/v1/completions", json: alone)
            #expect(choice["text"] as? String == (try Self.completionText(single)), "choice \(i)")
            texts.append(choice["text"] as? String ?? "")
        }
        #expect(Set(texts).count > 1, "three seeds gave one text")
        let usage = try #require(try reply.json()["usage"] as? [String: Any])
        let completion = try #require(usage["completion_tokens"] as? Int)
        #expect(completion >= 3 && completion <= 48)
        try await server.stop()
    }

    @Test("a stop string ends the text before it, with finish_reason stop, whole and streamed")
    func stopStrings() async throws {
        let server = try await TestServer.start()
        let full = try Self.completionText(try await server.request(
            "POST", "/v1/completions", json: ["prompt": "The stop test", "max_tokens": 40, "temperature": 0, "ignore_eos": true]))
        let scalars = Array(full.unicodeScalars)
        try #require(scalars.count > 12, "the greedy text is too short: \(full)")
        let stop = String(String.UnicodeScalarView(scalars[8..<11]))
        let expected = String(full[..<full.range(of: stop)!.lowerBound])
        for stream in [false, true] {
            let reply = try await server.request(
                "POST", "/v1/completions",
                json: ["prompt": "The stop test", "max_tokens": 40, "temperature": 0, "ignore_eos": true, "stop": ["zzzz-never", stop],
                       "stream": stream])
            #expect(reply.status == 200)
            if stream {
                #expect(try Self.streamedTexts(reply, chat: false)[0] == expected)
                let reasons = try reply.events().objects.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
                #expect(reasons == ["stop"])
            } else {
                #expect(try Self.completionText(reply) == expected)
                #expect((try reply.json()["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String == "stop")
            }
        }
        try await server.stop()
    }

    @Test("token ids as the prompt; tokenize and detokenize as llama-server has them; models and health")
    func tokensAndSmallRoutes() async throws {
        let server = try await TestServer.start()
        let tokenized = try await server.request("POST", "/tokenize", json: ["content": "Hello world", "add_special": true])
        #expect(tokenized.status == 200)
        let ids = try #require(try tokenized.json()["tokens"] as? [Int])
        #expect(!ids.isEmpty)
        let text = try await server.request("POST", "/detokenize", json: ["tokens": ids])
        #expect((try text.json()["content"] as? String)?.hasSuffix("Hello world") == true)
        let pieces = try await server.request("POST", "/tokenize", json: ["content": "Hello", "with_pieces": true])
        let first = try #require((try pieces.json()["tokens"] as? [[String: Any]])?.first)
        #expect(first["id"] is Int && first["piece"] is String)

        let byText = try Self.completionText(try await server.request(
            "POST", "/v1/completions", json: ["prompt": "Hello world", "max_tokens": 8, "temperature": 0]))
        let byIDs = try Self.completionText(try await server.request(
            "POST", "/v1/completions", json: ["prompt": ids, "max_tokens": 8, "temperature": 0]))
        #expect(byText == byIDs)

        let models = try await server.request("GET", "/v1/models")
        let data = try #require(try models.json()["data"] as? [[String: Any]])
        #expect(data.first?["id"] as? String == "test-model")
        #expect(try await server.request("GET", "/health").status == 200)
        try await server.stop()
    }

    @Test("with experts offloaded under a 6M budget, 8 concurrent streams give the resident model's greedy text; the hit rate and bytes read show in /metrics")
    func offloadedExpertsServeTheSameText() async throws {
        let resident = try await TestServer.start()
        let prompts = Array(Self.prompts.prefix(8))
        var expected: [String] = []
        for p in prompts {
            expected.append(try Self.completionText(try await resident.request(
                "POST", "/v1/completions", json: ["prompt": p, "max_tokens": 16, "temperature": 0])))
        }
        try await resident.stop()
        let server = try await TestServer.start(runtime: { $0.offload.expertMemory = 6 << 20 })
        let texts = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (i, p) in prompts.enumerated() {
                group.addTask {
                    let reply = try await server.request("POST", "/v1/completions",
                                                         json: ["prompt": p, "max_tokens": 16, "temperature": 0, "stream": true])
                    return (i, try Self.streamedTexts(reply, chat: false)[0] ?? "")
                }
            }
            var all: [Int: String] = [:]
            for try await (i, t) in group { all[i] = t }
            return all
        }
        for i in prompts.indices { #expect(texts[i] == expected[i], "prompt \(i)") }
        let hitRate = try #require(try await server.metric("moe_expert_hit_rate"))
        #expect(hitRate > 0 && hitRate < 1)
        #expect(try await server.metric("moe_expert_bytes_read_total").map { $0 > 0 } == true)
        try await server.stop()
    }
}
