/// Why a tokenizer could not be built from GGUF metadata, or a token id was rejected.
public enum TokenizerError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A required metadata key is absent (e.g. "tokenizer.ggml.tokens").
    case missingKey(String)
    /// A key is present but has the wrong type or an unusable value.
    case invalidValue(key: String, detail: String)
    /// `tokenizer.ggml.model` names a tokenizer this module does not implement.
    case unsupportedModel(String)
    /// `tokenizer.ggml.pre` names a pre-tokenizer this module does not implement.
    case unsupportedPreTokenizer(String)
    /// A token id outside the vocabulary.
    case tokenOutOfRange(Int)

    public var description: String {
        switch self {
        case let .missingKey(key):
            return "tokenizer: missing metadata key '\(key)'"
        case let .invalidValue(key, detail):
            return "tokenizer: invalid value for '\(key)': \(detail)"
        case let .unsupportedModel(name):
            return "tokenizer: unsupported tokenizer model '\(name)' (supported: llama, gpt2)"
        case let .unsupportedPreTokenizer(name):
            return "tokenizer: unsupported pre-tokenizer '\(name)'"
        case let .tokenOutOfRange(id):
            return "tokenizer: token id \(id) is outside the vocabulary"
        }
    }
}
