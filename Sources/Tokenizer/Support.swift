import GGUF

@inline(__always) func isCSpace(_ b: UInt8) -> Bool { b == 0x20 || (b >= 0x09 && b <= 0x0D) }

@inline(__always) func hexDigit(_ b: UInt8) -> Int? {
    switch b {
    case 0x30...0x39: return Int(b - 0x30)
    case 0x41...0x46: return Int(b - 0x41 + 10)
    case 0x61...0x66: return Int(b - 0x61 + 10)
    default: return nil
    }
}

func hex2(_ b: UInt8) -> [UInt8] {
    let digits = Array("0123456789abcdef".utf8)
    return [digits[Int(b >> 4)], digits[Int(b & 15)]]
}

/// Classes of the ASCII code points (hot path).
let asciiClasses: [CodepointClass] = (0..<128).map { CodepointClass.compute(UInt32($0)) }

/// Strict UTF-8 validity (what Swift accepts as a String).
func validUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    var i = 0
    let n = bytes.count
    while i < n {
        let b = bytes[i]
        if b < 0x80 { i += 1; continue }
        let need = utf8ExpectedLength(b)
        if need == 0 || i + need > n { return false }
        for k in 1..<need where !utf8ContinuationOK(lead: b, index: k, bytes[i + k]) { return false }
        i += need
    }
    return true
}

/// Length of a well-formed sequence starting with `lead`, or 0 if no sequence starts so.
@inline(__always) func utf8ExpectedLength(_ lead: UInt8) -> Int {
    switch lead {
    case 0x00...0x7F: return 1
    case 0xC2...0xDF: return 2
    case 0xE0...0xEF: return 3
    case 0xF0...0xF4: return 4
    default: return 0
    }
}

/// Whether `b` may be the `index`-th byte (1-based after the lead) of a well-formed sequence.
@inline(__always) func utf8ContinuationOK(lead: UInt8, index: Int, _ b: UInt8) -> Bool {
    if index == 1 {
        switch lead {
        case 0xE0: return (0xA0...0xBF).contains(b)
        case 0xED: return (0x80...0x9F).contains(b)
        case 0xF0: return (0x90...0xBF).contains(b)
        case 0xF4: return (0x80...0x8F).contains(b)
        default: return b & 0xC0 == 0x80
        }
    }
    return b & 0xC0 == 0x80
}

/// Metadata keys llama.cpp reads for the tokenizer.
enum Keys {
    static let model = "tokenizer.ggml.model"
    static let pre = "tokenizer.ggml.pre"
    static let tokens = "tokenizer.ggml.tokens"
    static let tokenType = "tokenizer.ggml.token_type"
    static let scores = "tokenizer.ggml.scores"
    static let merges = "tokenizer.ggml.merges"
    static let bos = "tokenizer.ggml.bos_token_id"
    static let eos = "tokenizer.ggml.eos_token_id"
    static let eot = "tokenizer.ggml.eot_token_id"
    static let eom = "tokenizer.ggml.eom_token_id"
    static let unk = "tokenizer.ggml.unknown_token_id"
    static let sep = "tokenizer.ggml.seperator_token_id"   // sic, as llama.cpp spells it
    static let pad = "tokenizer.ggml.padding_token_id"
    static let mask = "tokenizer.ggml.mask_token_id"
    static let fim = ["tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id",
                      "tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.fim_pad_token_id",
                      "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id"]
    static let prefix = "tokenizer.ggml.prefix_token_id"
    static let suffix = "tokenizer.ggml.suffix_token_id"
    static let middle = "tokenizer.ggml.middle_token_id"
    static let addBOS = "tokenizer.ggml.add_bos_token"
    static let addEOS = "tokenizer.ggml.add_eos_token"
    static let addSpacePrefix = "tokenizer.ggml.add_space_prefix"
}

/// Token texts llama.cpp uses to find markers the metadata does not name. Where several
/// could match, llama.cpp takes whichever its hash map yields first; the list order here
/// (most specific first) reproduces its choice on the reference vocabularies.
enum KnownTexts {
    static let eot = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                      "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"]
    static let eom = ["<|eom_id|>"]
    static let fim: [[String]] = [
        ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"],
        ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"],
        ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"],
        ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
        ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
        ["<|file_sep|>"],
    ]
    static let eog = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
                      "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
                      "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
                      "<｜end▁of▁sentence｜>", "[e~["]
    /// gpt-oss markers llama.cpp always renders (typed user-defined).
    static let alwaysRendered = ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"]
}

/// Typed access to the metadata values the tokenizer reads.
struct MetadataReader {
    let metadata: GGUFMetadata
    init(_ metadata: GGUFMetadata) { self.metadata = metadata }

    func string(_ key: String) throws(TokenizerError) -> String? {
        guard let v = metadata[key] else { return nil }
        guard let s = v.string else { throw .invalidValue(key: key, detail: "expected a string, found \(typeName(v))") }
        return s
    }

    func bool(_ key: String) throws(TokenizerError) -> Bool? {
        guard let v = metadata[key] else { return nil }
        guard let b = v.bool else { throw .invalidValue(key: key, detail: "expected a bool, found \(typeName(v))") }
        return b
    }
}

/// "str", "u32", "array of i32"...
func typeName(_ v: GGUFValue) -> String {
    if case let .array(a) = v { return "array of \(a.elementType.name)" }
    return v.type.name
}
