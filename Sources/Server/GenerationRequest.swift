import ChatTemplate
import Engine

/// What a completion request asks for, beyond its prompt: how much to generate, how to
/// sample, when to stop, how many choices and whether to stream. Parsed the same way for
/// `/v1/completions` and `/v1/chat/completions`; every field is checked for type and range.
struct GenerationParameters: Sendable {
    var maxTokens: Int?
    var sampling: SamplingParameters
    var stop: [String] = []
    var n = 1
    var stream = false
    var includeUsage = false
    var ignoreEOS = false

    static let maxStopStrings = 16
    static let maxStopLength = 256

    /// Reads the fields of `body` over `defaults` (the server's sampling flags). `maxChoices`
    /// bounds `n` (the sequences the server runs at once).
    init(_ body: RequestFields, defaults: SamplingParameters, maxChoices: Int) throws(APIError) {
        sampling = defaults
        let maxCompletion = try body.integer("max_completion_tokens", in: Int.min...Int.max)
        let legacy = try body.integer("max_tokens", in: Int.min...Int.max)
        let asked = maxCompletion ?? legacy
        if let asked, asked < 1 {
            throw .invalid("'\(maxCompletion != nil ? "max_completion_tokens" : "max_tokens")' must be at least 1, not \(asked)",
                           param: maxCompletion != nil ? "max_completion_tokens" : "max_tokens")
        }
        maxTokens = asked
        if let t = try body.number("temperature", in: 0...2) { sampling.temperature = Float(t) }
        if let p = try body.number("top_p", in: 0...1) {
            guard p > 0 else { throw .invalid("'top_p' must be above 0", param: "top_p") }
            sampling.topP = Float(p)
        }
        if let k = try body.integer("top_k", in: 0...Int(Int32.max)) { sampling.topK = k }
        if let m = try body.number("min_p", in: 0...1) { sampling.minP = Float(m) }
        if let r = try body.number("repeat_penalty", in: 0...100) {
            guard r > 0 else { throw .invalid("'repeat_penalty' must be above 0", param: "repeat_penalty") }
            sampling.repeatPenalty = Float(r)
        }
        if let w = try body.integer("repeat_last_n", in: 0...65536) { sampling.repeatWindow = w }
        if let p = try body.number("presence_penalty", in: -2...2) { sampling.presencePenalty = Float(p) }
        if let f = try body.number("frequency_penalty", in: -2...2) { sampling.frequencyPenalty = Float(f) }
        if let seed = try body.integer("seed", in: Int.min...Int.max) { sampling.seed = UInt64(bitPattern: Int64(seed)) }
        stop = try Self.stopStrings(body)
        if let n = try body.integer("n", in: 1...maxChoices) { self.n = n }
        stream = try body.bool("stream") ?? false
        if let options = try body.object("stream_options") {
            includeUsage = try options.bool("include_usage") ?? false
        }
        ignoreEOS = try body.bool("ignore_eos") ?? false
        if try body.bool("logprobs") == true || body.has("top_logprobs") {
            throw .invalid("log probabilities are not supported by this server", param: "logprobs", code: "unsupported")
        }
        if body.has("tools") || body.has("functions") {
            throw .invalid("tool calls are not supported by this server", param: body.has("tools") ? "tools" : "functions",
                           code: "unsupported")
        }
        if try body.bool("echo") == true {
            throw .invalid("'echo' is not supported by this server", param: "echo", code: "unsupported")
        }
    }

    static func stopStrings(_ body: RequestFields) throws(APIError) -> [String] {
        let list: [String]
        switch body.fields["stop"] {
        case nil, .null?: return []
        case let .string(s)?: list = [s]
        case let .array(items)?:
            var strings: [String] = []
            for item in items {
                guard case let .string(s) = item else {
                    throw .invalid("'stop' must be a string or a list of strings, not a list holding \(item.kind)", param: "stop")
                }
                strings.append(s)
            }
            list = strings
        case let v?: throw .invalid("'stop' must be a string or a list of strings, not \(v.kind)", param: "stop")
        }
        guard list.count <= maxStopStrings else {
            throw .invalid("'stop' holds \(list.count) strings; at most \(maxStopStrings) are accepted", param: "stop")
        }
        for s in list {
            guard !s.isEmpty else { throw .invalid("'stop' holds an empty string", param: "stop") }
            guard s.utf8.count <= maxStopLength else {
                throw .invalid("a 'stop' string is \(s.utf8.count) bytes long; at most \(maxStopLength) are accepted", param: "stop")
            }
        }
        return list
    }
}

/// The prompt of `/v1/completions`: text, or token ids as they are.
enum PromptInput: Sendable, Equatable {
    case text(String)
    case tokens([Int])

    static func parse(_ body: RequestFields, vocabularySize: Int) throws(APIError) -> PromptInput {
        switch body.fields["prompt"] {
        case nil, .null?: throw .invalid("'prompt' is required", param: "prompt")
        case let .string(s)?: return .text(s)
        case let .array(items)?:
            if items.count == 1, case let .string(s) = items[0] { return .text(s) }
            if items.count == 1, case let .array(inner) = items[0] { return try tokens(inner, vocabularySize: vocabularySize) }
            if items.count > 1, items.allSatisfy({ if case .string = $0 { true } else { false } }) {
                throw .invalid("'prompt' holds \(items.count) prompts; send one prompt per request", param: "prompt", code: "unsupported")
            }
            return try tokens(items, vocabularySize: vocabularySize)
        case let v?: throw .invalid("'prompt' must be a string or a list of token ids, not \(v.kind)", param: "prompt")
        }
    }

    private static func tokens(_ items: [JSONValue], vocabularySize: Int) throws(APIError) -> PromptInput {
        var ids: [Int] = []
        ids.reserveCapacity(items.count)
        for item in items {
            guard case let .number(n) = item, n == n.rounded(), abs(n) < 1e15 else {
                throw .invalid("'prompt' must be a string or a list of token ids; it holds \(item.kind)", param: "prompt")
            }
            let id = Int(n)
            guard id >= 0 && id < vocabularySize else {
                throw .invalid("token id \(id) in 'prompt' is outside the vocabulary (0..<\(vocabularySize))", param: "prompt")
            }
            ids.append(id)
        }
        return .tokens(ids)
    }
}

/// The `messages` of `/v1/chat/completions`, as the chat template reads them.
enum ChatMessages {
    /// Roles a chat template knows; `developer` (OpenAI's newer name) is passed as `system`.
    static let roles: Set<String> = ["system", "user", "assistant", "tool"]

    static func parse(_ body: RequestFields) throws(APIError) -> [ChatMessage] {
        guard case let .array(items)? = body.fields["messages"] else {
            if body.has("messages") { throw .invalid("'messages' must be a list of messages", param: "messages") }
            throw .invalid("'messages' is required", param: "messages")
        }
        guard !items.isEmpty else { throw .invalid("'messages' is empty", param: "messages") }
        var messages: [ChatMessage] = []
        for (i, item) in items.enumerated() {
            let param = "messages[\(i)]"
            guard case let .object(fields) = item else { throw .invalid("'\(param)' must be an object, not \(item.kind)", param: param) }
            let message = RequestFields(fields: fields)
            guard let role = try? message.string("role") else {
                throw .invalid("'\(param).role' must be a string", param: "\(param).role")
            }
            guard !role.isEmpty else { throw .invalid("'\(param).role' is empty", param: "\(param).role") }
            let templateRole = role == "developer" ? "system" : role
            guard roles.contains(templateRole) else {
                throw .invalid("'\(param).role' is '\(role)'; expected one of system, developer, user, assistant, tool",
                               param: "\(param).role")
            }
            messages.append(ChatMessage(role: templateRole, content: try content(fields["content"], param: "\(param).content")))
        }
        return messages
    }

    /// A message's content: a string, or a list of parts of which only text is understood.
    static func content(_ value: JSONValue?, param: String) throws(APIError) -> String {
        switch value {
        case nil, .null?: return ""
        case let .string(s)?: return s
        case let .array(parts)?:
            var text = ""
            for (i, part) in parts.enumerated() {
                guard case let .object(fields) = part, case let .string(type)? = fields["type"] else {
                    throw .invalid("'\(param)[\(i)]' must be an object with a 'type'", param: "\(param)[\(i)]")
                }
                guard type == "text", case let .string(t)? = fields["text"] else {
                    throw .invalid("'\(param)[\(i)]' is a '\(type)' part; only text parts are supported", param: "\(param)[\(i)]",
                                   code: "unsupported")
                }
                text += t
            }
            return text
        case let v?: throw .invalid("'\(param)' must be a string or a list of text parts, not \(v.kind)", param: param)
        }
    }
}
