import ChatTemplate
import GGUF
import Models
import Tokenizer

/// A multi-turn chat on one session: the messages so far, rendered with the model's own
/// chat template. Each turn re-renders the whole conversation, keeps the longest prefix of
/// tokens already in the KV cache and evaluates only the rest.
public final class Conversation {
    public let session: Session
    public let tokenizer: Tokenizer
    public let prompt: ChatPrompt
    public var template: ChatTemplate { prompt.template }
    /// True when the GGUF had no chat template and ChatML stands in.
    public var usesFallbackTemplate: Bool { prompt.usesFallbackTemplate }
    public private(set) var messages: [ChatMessage] = []
    public let systemPrompt: String?
    /// Tokens whose keys and values are in the cache, in order.
    private var cached: [Int] = []

    public init(session: Session, tokenizer: Tokenizer, metadata: GGUFMetadata,
                systemPrompt: String? = nil) throws(ConversationError) {
        self.session = session
        self.tokenizer = tokenizer
        self.systemPrompt = systemPrompt
        prompt = try ChatPrompt(tokenizer: tokenizer, metadata: metadata)
        reset()
    }

    /// Forgets every turn (the system prompt stays).
    public func reset() {
        messages = systemPrompt.map { [.system($0)] } ?? []
    }

    /// The tokens whose keys and values the session holds, in order.
    public var cachedTokens: [Int] { cached }

    /// Saves the conversation (its messages, keys and values) to a session file, atomically.
    public func save(to path: String) throws(SessionFileError) {
        let saved = messages.map { SessionContents.Message(role: $0.role, content: $0.content) }
        try SessionFile.save(session, to: path, contents: SessionContents(kind: "chat", messages: saved))
    }

    /// Replaces this conversation by one saved with `save(to:)`: its messages, and its keys
    /// and values restored by `strategy` (every saved position: the next turn extends them).
    /// On an error nothing of the saved conversation is taken and the session is empty.
    public func resume(from saved: SavedSession, strategy: RestoreStrategy = .automatic) throws(SessionFileError) -> RestoreReport {
        guard saved.contents.kind == "chat", let savedMessages = saved.contents.messages else {
            throw SessionFileError(path: saved.path, problem: .wrongKind(saved: saved.contents.kind, wanted: "chat"))
        }
        try saved.check(against: session)
        session.rewind(to: 0)
        cached = []
        let report = try session.restore(saved, positions: saved.count, strategy: strategy)
        messages = savedMessages.map { ChatMessage(role: $0.role, content: $0.content) }
        cached = saved.tokens
        return report
    }

    /// Result of one reply.
    public struct Reply: Sendable {
        public var text: String
        public var stats: GenerationStats
        /// Prompt tokens that were already in the cache and not recomputed.
        public var reusedTokens: Int
        /// Older turns dropped to fit the context.
        public var droppedMessages: Int
        public var interrupted: Bool
    }

    /// Adds `userText` as a user turn and generates the assistant's reply, calling
    /// `onText` with each decoded piece (return false to stop the reply early).
    public func reply(to userText: String, maxTokens: Int, sampler: inout Sampler,
                      onText: (String) -> Bool) throws(ConversationError) -> Reply {
        let original = messages
        messages.append(.user(userText))
        let tokens: [Int], dropped: Int
        do {
            (tokens, dropped) = try promptFittingContext(room: min(maxTokens, 64))
        } catch {
            messages = original
            throw error
        }
        var common = 0
        let limit = min(cached.count, tokens.count - 1, session.position)
        while common < limit && cached[common] == tokens[common] { common += 1 }
        session.rewind(to: common)
        cached = Array(cached.prefix(common))

        var decoder = StreamingDecoder(tokenizer: tokenizer, stripLeadingSpace: false)
        var text = ""
        var generated: [Int] = []
        var interrupted = false
        let stats: GenerationStats
        do {
            stats = try session.generate(prompt: Array(tokens[common...]), maxTokens: maxTokens, sampler: &sampler,
                                         isEndOfGeneration: tokenizer.isEndOfGeneration) { id in
                generated.append(id)
                let piece = decoder.append(id)
                text += piece
                if !piece.isEmpty && !onText(piece) {
                    interrupted = true
                    return false
                }
                return true
            }
        } catch {
            messages = original
            throw .model(error)
        }
        let rest = decoder.finish()
        if !rest.isEmpty {
            text += rest
            _ = onText(rest)
        }
        cached = Array((tokens + generated).prefix(session.position))
        messages.append(.assistant(text))
        return Reply(text: text, stats: stats, reusedTokens: common, droppedMessages: dropped, interrupted: interrupted)
    }

    /// The prompt tokens, after dropping the oldest turns (the system prompt stays) until
    /// they leave `room` tokens of context for the answer; also how many were dropped.
    private func promptFittingContext(room: Int) throws(ConversationError) -> ([Int], Int) {
        var prompt = try promptTokens()
        var dropped = 0
        while prompt.count + room > session.cache.capacity {
            let firstTurn = messages.firstIndex { $0.role != "system" } ?? messages.count
            guard messages.count - firstTurn > 1 else {
                throw .promptTooLong(tokens: prompt.count, context: session.cache.capacity)
            }
            messages.remove(at: firstTurn)
            dropped += 1
            prompt = try promptTokens()
        }
        return (prompt, dropped)
    }

    /// The conversation so far, rendered with a generation prompt, as tokens.
    func promptTokens() throws(ConversationError) -> [Int] {
        try prompt.tokens(messages)
    }
}

public enum ConversationError: Error, CustomStringConvertible {
    case template(ChatTemplateError)
    case promptTooLong(tokens: Int, context: Int)
    case emptyPrompt
    case model(ModelError)

    public var description: String {
        switch self {
        case let .template(e): return "chat template: \(e.description)"
        case let .promptTooLong(tokens, context):
            return "the message needs \(tokens) tokens but the context holds \(context); use a larger --ctx or a shorter message"
        case .emptyPrompt: return "the chat template rendered an empty prompt"
        case let .model(e): return e.description
        }
    }
}
