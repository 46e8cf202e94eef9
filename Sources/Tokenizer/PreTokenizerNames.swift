extension Tokenizer {
    /// What a `tokenizer.ggml.pre` name selects, with the flags llama.cpp sets alongside.
    struct PreTokenizerFamily {
        var pre: PreTokenizer
        /// nil keeps the BPE default (clean-up on).
        var cleanSpaces: Bool? = nil
        var ignoreMerges = false
        var addBOS = false
        /// The family has no BOS token by default.
        var noBOS = false
    }

    /// The pre-tokenizer names llama.cpp accepts whose splitting this module implements,
    /// mapped as llama.cpp maps them (several names share one regex list). nil for others.
    static func preTokenizer(named name: String) -> PreTokenizerFamily? {
        switch name {
        case "", "default":
            return .init(pre: .standard)
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano":
            return .init(pre: .llama3, ignoreMerges: true, addBOS: true)
        case "dbrx", "smaug-bpe":
            return .init(pre: .llama3)
        case "chatglm-bpe":
            return .init(pre: .llama3, noBOS: true)
        case "glm4", "glm5":
            return .init(pre: .llama3, ignoreMerges: true, noBOS: true)
        case "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open", "grok-2":
            return .init(pre: .qwen2, cleanSpaces: false)
        case "megrez", "stablelm2":
            return .init(pre: .qwen2)
        case "deepseek-llm":
            return .init(pre: .deepseekLLM, cleanSpaces: false)
        case "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
             "modern-bert", "exaone4", "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais":
            return .init(pre: .gpt2)
        case "trillion", "granite-docling":
            return .init(pre: .gpt2, cleanSpaces: false)
        case "starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2":
            return .init(pre: .starcoder)
        case "command-r", "smollm":
            return .init(pre: .starcoder, cleanSpaces: false)
        default:
            return nil
        }
    }

    /// Whether `tokenizer.ggml.pre` = `name` is supported.
    public static func supportsPreTokenizer(_ name: String) -> Bool { preTokenizer(named: name) != nil }
}
