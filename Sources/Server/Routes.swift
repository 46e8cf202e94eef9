import ChatTemplate
import Engine
import Foundation
import Hummingbird
import Logging
import NIOCore
import Tokenizer

/// The HTTP routes, as OpenAI's clients and llama-server's users expect them. Handlers parse
/// and check the request, tokenize it, hand the work to the scheduler and turn its events
/// into a JSON body or a stream of Server-Sent Events.
struct Routes: Sendable {
    let configuration: ServerConfiguration
    let scheduler: GenerationScheduler
    let metrics: ServerMetrics
    let logger: Logger
    private let counter = RequestCounter()
    private let created = Int(Date().timeIntervalSince1970)

    init(configuration: ServerConfiguration, scheduler: GenerationScheduler, metrics: ServerMetrics, logger: Logger) {
        self.configuration = configuration
        self.scheduler = scheduler
        self.metrics = metrics
        self.logger = logger
    }

    func register(on router: Router<BasicRequestContext>) {
        router.get("/health") { _, _ in try self.health() }
        router.get("/metrics") { _, _ in self.metricsResponse() }
        router.get("/v1/models") { _, _ in try self.models() }
        router.get("/models") { _, _ in try self.models() }
        router.post("/v1/completions") { request, _ in try await self.generate(request, chat: false) }
        router.post("/completions") { request, _ in try await self.generate(request, chat: false) }
        router.post("/v1/chat/completions") { request, _ in try await self.generate(request, chat: true) }
        router.post("/chat/completions") { request, _ in try await self.generate(request, chat: true) }
        router.post("/tokenize") { request, _ in try await self.tokenize(request) }
        router.post("/detokenize") { request, _ in try await self.detokenize(request) }
    }

    // MARK: - Small routes

    private func health() throws -> Response {
        if let error = scheduler.currentPhase.unavailableError { throw error }
        return json(["status": "ok"])
    }

    private func metricsResponse() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.exposition())))
    }

    private func models() throws -> Response {
        var entry: [String: Any] = ["id": configuration.modelName, "object": "model", "created": created, "owned_by": "moe"]
        if let facts = scheduler.modelFacts {
            entry["meta"] = ["n_ctx": facts.contextLength, "n_vocab": facts.vocabularySize]
        }
        return json(["object": "list", "data": [entry]])
    }

    private func tokenize(_ request: Request) async throws -> Response {
        let body = RequestFields(fields: try JSONValue.parseObject(try await readBody(request)))
        let facts = try loadedFacts()
        guard let content = try body.string("content") else { throw APIError.invalid("'content' is required", param: "content") }
        let addSpecial = try body.bool("add_special") ?? false
        let withPieces = try body.bool("with_pieces") ?? false
        let parseSpecial = try body.bool("parse_special") ?? true
        let tokens = facts.tokenizer.encode(content, addBOS: addSpecial && facts.tokenizer.addsBOS, parseSpecial: parseSpecial)
        if withPieces {
            let pieces: [[String: Any]] = tokens.map { id in
                let bytes = facts.tokenizer.pieceBytes(id, special: true)
                let piece: Any = String(validating: bytes, as: UTF8.self) ?? bytes.map { Int($0) }
                return ["id": id, "piece": piece]
            }
            return json(["tokens": pieces])
        }
        return json(["tokens": tokens])
    }

    private func detokenize(_ request: Request) async throws -> Response {
        let body = RequestFields(fields: try JSONValue.parseObject(try await readBody(request)))
        let facts = try loadedFacts()
        guard case let .array(items)? = body.fields["tokens"] else {
            throw APIError.invalid("'tokens' must be a list of token ids", param: "tokens")
        }
        var ids: [Int] = []
        for item in items {
            guard case let .number(n) = item, n == n.rounded(), n >= 0, n < Double(facts.vocabularySize) else {
                throw APIError.invalid("'tokens' must hold token ids in 0..<\(facts.vocabularySize)", param: "tokens")
            }
            ids.append(Int(n))
        }
        return json(["content": facts.tokenizer.decode(ids)])
    }

    // MARK: - Completions

    private func generate(_ request: Request, chat: Bool) async throws -> Response {
        let started = ContinuousClock.now
        let route = request.uri.path
        let body = RequestFields(fields: try JSONValue.parseObject(try await readBody(request)))
        let facts = try loadedFacts()
        let number = counter.next()
        var defaults = facts.sampling
        // Requests without a seed each get their own, so that two identical ones differ.
        defaults.seed = defaults.seed &+ UInt64(number) &* 0x9E37_79B9_7F4A_7C15
        let parameters = try GenerationParameters(body, defaults: defaults, maxChoices: configuration.scheduler.parallel)
        let prompt: [Int]
        if chat {
            let messages = try ChatMessages.parse(body)
            do {
                prompt = try facts.chat.tokens(messages)
            } catch {
                throw APIError.invalid("the messages could not be rendered with the model's chat template: \(error.description)",
                                       param: "messages", code: "template_error")
            }
        } else {
            switch try PromptInput.parse(body, vocabularySize: facts.vocabularySize) {
            case let .text(text):
                prompt = facts.tokenizer.encode(text, addBOS: facts.tokenizer.addsBOS)
            case let .tokens(ids):
                prompt = ids
            }
            guard !prompt.isEmpty else { throw APIError.invalid("the prompt is empty", param: "prompt") }
        }
        let context = facts.contextLength
        guard prompt.count < context else {
            throw APIError.invalid("the prompt has \(prompt.count) tokens but the context holds \(context), with room for at least one generated token",
                                   param: chat ? "messages" : "prompt", code: "context_length_exceeded")
        }
        let room = context - prompt.count
        let maxTokens = parameters.maxTokens ?? room
        guard maxTokens <= room else {
            throw APIError.invalid("max_tokens is \(maxTokens), but the prompt has \(prompt.count) tokens and the context holds \(context): at most \(room) can be generated",
                                   param: body.has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
                                   code: "context_length_exceeded")
        }
        let id = (chat ? "chatcmpl-" : "cmpl-") + String(number, radix: 16) + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let job = GenerationJob(id: id, prompt: prompt, parameters: parameters, maxTokens: maxTokens)
        let events = EventSource(try scheduler.submit(job))
        let reply = Reply(id: id, chat: chat, model: configuration.modelName, created: Int(Date().timeIntervalSince1970),
                          choices: parameters.n)
        let log = RequestLog(logger: logger, id: id, route: route, started: started, promptTokens: prompt.count)
        // Wait for the first event before answering, so that a request refused in the queue
        // or failing before any text gets its own status, not a 200 with an error inside.
        guard let first = await events.next() else {
            throw APIError.unavailable("the request was ended before it started", code: "cancelled")
        }
        if case let .failed(error) = first {
            log.write(status: Int(error.status.code), usage: nil, firstToken: nil)
            throw error
        }
        if parameters.stream {
            return streamResponse(first: first, events: events, reply: reply, includeUsage: parameters.includeUsage, log: log,
                                  jobID: id)
        }
        return try await wholeResponse(first: first, events: events, reply: reply, log: log)
    }

    private func wholeResponse(first: GenerationEvent, events: EventSource, reply: Reply, log: RequestLog) async throws -> Response {
        var texts = Array(repeating: "", count: reply.choices)
        var reasons = Array(repeating: FinishReason.length, count: reply.choices)
        var event: GenerationEvent? = first
        var firstToken: ContinuousClock.Instant?
        while let e = event {
            switch e {
            case let .text(i, piece):
                if firstToken == nil { firstToken = .now }
                texts[i] += piece
            case let .finished(i, reason, _):
                if firstToken == nil { firstToken = .now }
                reasons[i] = reason
            case let .failed(error):
                log.write(status: Int(error.status.code), usage: nil, firstToken: firstToken)
                throw error
            case let .done(usage):
                log.write(status: 200, usage: usage, firstToken: firstToken)
                return json(reply.whole(texts: texts, reasons: reasons, usage: usage))
            }
            event = await events.next()
        }
        throw APIError.internalError("the generation ended without a result")
    }

    private func streamResponse(first: GenerationEvent, events: EventSource, reply: Reply, includeUsage: Bool, log: RequestLog,
                                jobID: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        let scheduler = self.scheduler
        let body = ResponseBody { writer in
            var firstToken: ContinuousClock.Instant?
            var usage: Usage?
            do {
                if reply.chat {
                    for i in 0..<reply.choices { try await writer.write(sse(reply.chunk(choice: i, role: true, text: "", reason: nil))) }
                }
                var event: GenerationEvent? = first
                loop: while let e = event {
                    switch e {
                    case let .text(i, piece):
                        if firstToken == nil { firstToken = .now }
                        try await writer.write(sse(reply.chunk(choice: i, role: false, text: piece, reason: nil)))
                    case let .finished(i, reason, _):
                        if firstToken == nil { firstToken = .now }
                        try await writer.write(sse(reply.chunk(choice: i, role: false, text: nil, reason: reason)))
                    case let .failed(error):
                        // Headers are gone: the error goes as an event, as OpenAI's API does.
                        try await writer.write(sseData(error.body))
                        log.write(status: Int(error.status.code), usage: nil, firstToken: firstToken)
                        break loop
                    case let .done(u):
                        usage = u
                        if includeUsage { try await writer.write(sse(reply.usageChunk(u))) }
                        break loop
                    }
                    event = await events.next()
                }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await writer.finish(nil)
                if let usage { log.write(status: 200, usage: usage, firstToken: firstToken) }
            } catch {
                // The client went away: its sequences stop at the next step.
                scheduler.cancel(jobID)
                log.write(status: 499, usage: usage, firstToken: firstToken, note: "client disconnected")
                throw error
            }
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    // MARK: - Helpers

    private func loadedFacts() throws(APIError) -> GenerationScheduler.ModelFacts {
        let phase = scheduler.currentPhase
        if let facts = scheduler.modelFacts, phase == .ready { return facts }
        throw phase.unavailableError ?? .unavailable("the model is still loading", code: "model_loading")
    }

    /// The whole body, at most `--max-body` bytes, within `--read-timeout`.
    private func readBody(_ request: Request) async throws -> [UInt8] {
        let limit = configuration.maxBodyBytes
        let timeout = configuration.readTimeout
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw APIError(status: .contentTooLarge, message: "the request body is \(length) bytes; this server accepts at most \(limit) (--max-body)",
                           type: "invalid_request_error", code: "body_too_large")
        }
        return try await withThrowingTaskGroup(of: [UInt8].self) { group in
            group.addTask {
                do {
                    let buffer = try await request.body.collect(upTo: limit)
                    return Array(buffer: buffer)
                } catch is NIOTooManyBytesError {
                    throw APIError(status: .contentTooLarge, message: "the request body is larger than the \(limit) bytes this server accepts (--max-body)",
                                   type: "invalid_request_error", code: "body_too_large")
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw APIError(status: .requestTimeout, message: "the request body did not arrive within \(timeout) (--read-timeout)",
                               type: "invalid_request_error", code: "read_timeout")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }
}

/// Numbers requests (for their ids and default seeds).
final class RequestCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int { lock.withLock { value += 1; return value } }
}

/// The scheduler's events for one request, read by one task at a time.
final class EventSource: @unchecked Sendable {
    private var iterator: AsyncStream<GenerationEvent>.AsyncIterator
    init(_ stream: AsyncStream<GenerationEvent>) { iterator = stream.makeAsyncIterator() }
    func next() async -> GenerationEvent? { await iterator.next() }
}

/// The one log line of a completion request.
struct RequestLog: Sendable {
    let logger: Logger
    let id: String
    let route: String
    let started: ContinuousClock.Instant
    let promptTokens: Int

    func write(status: Int, usage: Usage?, firstToken: ContinuousClock.Instant?, note: String? = nil) {
        let now = ContinuousClock.now
        var metadata: Logger.Metadata = ["id": "\(id)", "route": "\(route)", "status": "\(status)",
                                         "prompt_tokens": "\(promptTokens)",
                                         "ms": "\(String(format: "%.1f", Double((now - started).nanoseconds) / 1e6))"]
        if let usage {
            metadata["completion_tokens"] = "\(usage.completionTokens)"
            metadata["cached_tokens"] = "\(usage.cachedTokens)"
        }
        if let firstToken {
            metadata["ttft_ms"] = "\(String(format: "%.1f", Double((firstToken - started).nanoseconds) / 1e6))"
        }
        if let note { metadata["note"] = "\(note)" }
        logger.info("request", metadata: metadata)
    }
}

/// Builds the response objects of one completion request.
struct Reply: Sendable {
    let id: String
    let chat: Bool
    let model: String
    let created: Int
    let choices: Int

    func usageObject(_ u: Usage) -> [String: Any] {
        ["prompt_tokens": u.promptTokens, "completion_tokens": u.completionTokens, "total_tokens": u.promptTokens + u.completionTokens,
         "prompt_tokens_details": ["cached_tokens": u.cachedTokens]]
    }

    func whole(texts: [String], reasons: [FinishReason], usage: Usage) -> [String: Any] {
        let list: [[String: Any]] = texts.indices.map { i in
            chat ? ["index": i, "message": ["role": "assistant", "content": texts[i]], "finish_reason": reasons[i].rawValue,
                    "logprobs": NSNull()]
                : ["index": i, "text": texts[i], "finish_reason": reasons[i].rawValue, "logprobs": NSNull()]
        }
        return ["id": id, "object": chat ? "chat.completion" : "text_completion", "created": created, "model": model,
                "choices": list, "usage": usageObject(usage)]
    }

    func chunk(choice i: Int, role: Bool, text: String?, reason: FinishReason?) -> [String: Any] {
        var entry: [String: Any] = ["index": i, "finish_reason": reason.map { $0.rawValue as Any } ?? NSNull(), "logprobs": NSNull()]
        if chat {
            var delta: [String: Any] = [:]
            if role { delta["role"] = "assistant" }
            if let text { delta["content"] = text }
            entry["delta"] = delta
        } else {
            entry["text"] = text ?? ""
        }
        return ["id": id, "object": chat ? "chat.completion.chunk" : "text_completion", "created": created, "model": model,
                "choices": [entry]]
    }

    func usageChunk(_ u: Usage) -> [String: Any] {
        ["id": id, "object": chat ? "chat.completion.chunk" : "text_completion", "created": created, "model": model,
         "choices": [] as [Any], "usage": usageObject(u)]
    }
}

func jsonData(_ object: Any) -> Data {
    (try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8)
}

func json(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: jsonData(object))))
}

func sse(_ object: Any) -> ByteBuffer { sseData(jsonData(object)) }

func sseData(_ data: Data) -> ByteBuffer {
    var buffer = ByteBuffer(string: "data: ")
    buffer.writeBytes(data)
    buffer.writeString("\n\n")
    return buffer
}
