/// A chat template: the Jinja subset that `tokenizer.chat_template` in GGUF files (and
/// `chat_template` in Hugging Face tokenizer configs) is written in.
///
///     let template = try ChatTemplate(source)
///     let prompt = try template.render(messages: [.system("Be brief."), .user("Hi")],
///                                      addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
///
/// Rendering follows Jinja2 as transformers configures it (`trim_blocks` and `lstrip_blocks`
/// on, `raise_exception(message)` available, `tojson` keeping key order) and never crashes:
/// malformed templates, runaway nesting, loops and output all end in a `ChatTemplateError`.
public struct ChatTemplate: Sendable {
    public struct Options: Sendable, Equatable {
        /// Drop the first newline after a block tag (`%}`) or comment. Jinja's default is off.
        public var trimBlocks: Bool
        /// Drop spaces and tabs between the start of a line and a block tag or comment.
        public var lstripBlocks: Bool
        /// Keep a single newline at the end of the source (Jinja drops it by default).
        public var keepTrailingNewline: Bool
        /// Largest rendered text (and largest string built while rendering), in UTF-8 bytes.
        public var maxOutputBytes: Int
        /// Deepest nesting the parser accepts: blocks inside blocks plus brackets, unary
        /// operators and inline `if`s inside them (an expression tree may grow to four times
        /// this through operator, filter and attribute chains).
        public var maxNestingDepth: Int
        /// Deepest chain of macro calls.
        public var maxMacroDepth: Int
        /// Deepest recursion while rendering (blocks, subexpressions, macro calls) and deepest
        /// nesting of lists and dicts. The default keeps a rendering within about 1 MiB of
        /// stack in a debug build and a fraction of that optimized.
        public var maxEvaluationDepth: Int
        /// Most loop iterations (and macro calls) in one rendering, and the longest `range()`.
        public var maxLoopIterations: Int

        public init(trimBlocks: Bool = true, lstripBlocks: Bool = true, keepTrailingNewline: Bool = false,
                    maxOutputBytes: Int = 16 << 20, maxNestingDepth: Int = 64, maxMacroDepth: Int = 16,
                    maxEvaluationDepth: Int = 256, maxLoopIterations: Int = 1_000_000)
        {
            self.trimBlocks = trimBlocks
            self.lstripBlocks = lstripBlocks
            self.keepTrailingNewline = keepTrailingNewline
            self.maxOutputBytes = maxOutputBytes
            self.maxNestingDepth = maxNestingDepth
            self.maxMacroDepth = maxMacroDepth
            self.maxEvaluationDepth = maxEvaluationDepth
            self.maxLoopIterations = maxLoopIterations
        }

        /// How transformers renders chat templates: `trim_blocks` and `lstrip_blocks` on.
        public static let huggingFace = Options()
        /// Jinja2's own defaults: no block trimming.
        public static let jinjaDefaults = Options(trimBlocks: false, lstripBlocks: false)
    }

    public let source: String
    public let options: Options
    private let nodes: [Node]

    /// Parses `source`; syntax errors, unknown filters and unknown tests are reported here.
    public init(_ source: String, options: Options = .huggingFace) throws(ChatTemplateError) {
        self.source = source
        self.options = options
        var lexer = Lexer(source, options: options)
        var parser = Parser(tokens: try lexer.tokenize(), maxDepth: options.maxNestingDepth)
        nodes = try parser.parseTemplate()
    }

    /// Renders with the given variables. Besides them the template sees `range`,
    /// `namespace`, `dict` and `raise_exception`.
    public func render(_ context: [String: TemplateValue]) throws(ChatTemplateError) -> String {
        try Renderer(options: options).render(nodes, context: context)
    }

    /// Renders a conversation the way transformers' `apply_chat_template` does: `messages`,
    /// `add_generation_prompt`, `bos_token` and `eos_token`, plus `extra` variables
    /// (`tools`, `enable_thinking`, `date_string`, ...).
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String = "", eosToken: String = "",
                       extra: [String: TemplateValue] = [:]) throws(ChatTemplateError) -> String
    {
        var context = extra
        context["messages"] = .array(messages.map(TemplateValue.init))
        context["add_generation_prompt"] = .bool(addGenerationPrompt)
        context["bos_token"] = .string(bosToken)
        context["eos_token"] = .string(eosToken)
        return try render(context)
    }
}
