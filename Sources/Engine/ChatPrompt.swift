import ChatTemplate
import GGUF
import Tokenizer

/// Messages turned into prompt tokens the way the model was trained to read them: rendered
/// with the GGUF's own chat template (ChatML when the file has none), then tokenized with
/// special tokens parsed. Shared by `moe chat` (through `Conversation`) and the server.
public struct ChatPrompt: Sendable {
    public let tokenizer: Tokenizer
    public let template: ChatTemplate
    /// True when the GGUF had no chat template and ChatML stands in.
    public let usesFallbackTemplate: Bool
    /// The texts templates receive as `bos_token` and `eos_token`.
    let bosText: String
    let eosText: String

    /// Used when a model file carries no `tokenizer.chat_template`.
    public static let chatMLTemplate = """
    {%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
    """

    public init(tokenizer: Tokenizer, metadata: GGUFMetadata) throws(ConversationError) {
        self.tokenizer = tokenizer
        func text(_ id: Int?) -> String {
            id.flatMap { tokenizer.tokenText($0) }.map { String(decoding: $0, as: UTF8.self) } ?? ""
        }
        bosText = text(tokenizer.bos)
        eosText = text(tokenizer.eos)
        let source = metadata["tokenizer.chat_template"]?.string
        usesFallbackTemplate = source == nil
        do {
            template = try ChatTemplate(source ?? Self.chatMLTemplate)
        } catch {
            throw .template(error)
        }
    }

    /// `messages` rendered with a generation prompt (when asked), as text.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws(ConversationError) -> String {
        do {
            return try template.render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                       bosToken: bosText, eosToken: eosText)
        } catch {
            throw .template(error)
        }
    }

    /// `messages` rendered with a generation prompt (when asked), as tokens.
    public func tokens(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws(ConversationError) -> [Int] {
        let rendered = try render(messages, addGenerationPrompt: addGenerationPrompt)
        // Templates that write the BOS text themselves must not get a second one.
        let addBOS = tokenizer.addsBOS && (bosText.isEmpty || !rendered.hasPrefix(bosText))
        let tokens = tokenizer.encode(rendered, addBOS: addBOS, parseSpecial: true)
        guard !tokens.isEmpty else { throw .emptyPrompt }
        return tokens
    }
}
