import ChatTemplate
import Testing

@Suite("Public API")
struct APITests {
    let conversation: [ChatMessage] = [.system("Be brief."), .user("Hi!"), .assistant("Hello."), .user("2+2?")]

    @Test("render(messages:) passes messages, add_generation_prompt and the special tokens")
    func conveniences() throws {
        let chatml = try ChatTemplate(Templates.chatml)
        #expect(try chatml.render(messages: conversation, addGenerationPrompt: true) == """
            <|im_start|>system
            Be brief.<|im_end|>
            <|im_start|>user
            Hi!<|im_end|>
            <|im_start|>assistant
            Hello.<|im_end|>
            <|im_start|>user
            2+2?<|im_end|>
            <|im_start|>assistant

            """)
        let llama3 = try ChatTemplate(Templates.llama3)
        let viaMessages = try llama3.render(messages: conversation, addGenerationPrompt: false, bosToken: "<|begin_of_text|>",
                                            eosToken: "<|eot_id|>")
        let viaContext = try llama3.render([
            "messages": .array(conversation.map(TemplateValue.init)), "add_generation_prompt": false,
            "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        ])
        #expect(viaMessages == viaContext)
        #expect(viaMessages.hasPrefix("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"))
    }

    @Test("extra variables reach the template")
    func extraVariables() throws {
        let qwen3 = try ChatTemplate(Templates.qwen3)
        let thinking = try qwen3.render(messages: [.user("Hi")], addGenerationPrompt: true)
        let notThinking = try qwen3.render(messages: [.user("Hi")], addGenerationPrompt: true, extra: ["enable_thinking": false])
        #expect(thinking == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        #expect(notThinking == thinking + "<think>\n\n</think>\n\n")
    }

    @Test("the Qwen2 template from the GGUF file adds its default system message")
    func ggufQwen2() throws {
        let template = try ChatTemplate(try Shared.chatTemplate(vocab: "qwen2"))
        #expect(try template.render(messages: [.user("Hi")], addGenerationPrompt: true) == """
            <|im_start|>system
            You are a helpful assistant<|im_end|>
            <|im_start|>user
            Hi<|im_end|>
            <|im_start|>assistant

            """)
    }

    @Test("template values from literals")
    func literals() {
        let v: TemplateValue = ["role": "user", "n": 3, "x": 2.5, "ok": true, "none": nil, "list": [1, "a"]]
        guard case .dictionary(let d) = v else {
            Issue.record("expected a dictionary")
            return
        }
        #expect(d.keys == ["role", "n", "x", "ok", "none", "list"])
        #expect(d["n"] == .int(3) && d["x"] == .double(2.5) && d["none"] == TemplateValue.none)
        #expect(d["list"] == .array([.int(1), .string("a")]))
        var e = d
        e["role"] = nil
        e["extra"] = "last"
        #expect(e.keys == ["n", "x", "ok", "none", "list", "extra"])
        // Equality ignores key order, as Python's does.
        #expect(TemplateDictionary([("a", 1), ("b", 2)]) == TemplateDictionary([("b", 2), ("a", 1)]))
        #expect(TemplateValue(ChatMessage.user("hi")) == ["role": "user", "content": "hi"])
    }

    @Test("dictionaries keep insertion order through items() and tojson")
    func order() throws {
        let tool: TemplateValue = ["type": "function", "function": ["name": "f", "description": "d", "parameters": [:]]]
        #expect(try render("{{ t|tojson }}|{% for k, v in t.function.items() %}{{ k }} {% endfor %}", ["t": tool])
            == #"{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}|name description parameters "#)
    }

    @Test("options: transformers' block trimming by default, Jinja's defaults on request")
    func options() throws {
        let source = "<s>\n  {% for m in messages %}\n  [{{ m }}]\n  {% endfor %}\n</s>\n"
        let context: [String: TemplateValue] = ["messages": ["a", "b"]]
        #expect(try render(source, context) == "<s>\n  [a]\n  [b]\n</s>")
        #expect(try render(source, context, options: .jinjaDefaults) == "<s>\n  \n  [a]\n  \n  [b]\n  \n</s>")
        #expect(try render(source, context, options: .init(keepTrailingNewline: true)) == "<s>\n  [a]\n  [b]\n</s>\n")
        #expect(ChatTemplate.Options.huggingFace.trimBlocks && ChatTemplate.Options.huggingFace.lstripBlocks)
        let template = try ChatTemplate(source, options: .jinjaDefaults)
        #expect(template.source == source && template.options == .jinjaDefaults)
    }

    @Test("transformers' generation tag renders its body")
    func generationTag() throws {
        #expect(try render("{% for m in ms %}{% generation %}<{{ m }}>{% endgeneration %}{% endfor %}", ["ms": ["a", "b"]]) == "<a><b>")
    }

    @Test("a parsed template renders from several tasks at once")
    func concurrentRendering() async throws {
        let template = try ChatTemplate(Templates.qwen25)
        let outputs = await withTaskGroup(of: String?.self) { group in
            for i in 0..<8 {
                group.addTask {
                    try? template.render(messages: [.user("question \(i)")], addGenerationPrompt: true)
                }
            }
            var all: [String] = []
            for await o in group { all.append(o ?? "") }
            return all
        }
        #expect(outputs.count == 8)
        for i in 0..<8 {
            #expect(outputs.contains { $0.contains("<|im_start|>user\nquestion \(i)<|im_end|>") })
        }
    }
}

@Suite("Features")
struct FeatureTests {
    @Test("whitespace control")
    func whitespace() throws {
        #expect(try render("a  {{- 'b' -}}  c") == "abc")
        #expect(try render("a\n  {%- if true -%}\n  b\n  {%- endif -%}\n  c") == "abc")
        #expect(try render("{% if true %}\nyes\n{% endif %}\n") == "yes\n")
        #expect(try render("  {%+ if true %}x{% endif %}") == "  x")
        #expect(try render("{# comment #}\nx") == "x")
    }

    @Test("loop variables and for-else")
    func loops() throws {
        let source = "{% for m in ms %}{{ loop.index }}{{ loop.index0 }}{{ loop.first|int }}{{ loop.last|int }}{{ loop.length }} {% else %}none{% endfor %}"
        #expect(try render(source, ["ms": ["a", "b", "c"]]) == "10103 21003 32013 ")
        #expect(try render(source, ["ms": []]) == "none")
        #expect(try render(source) == "none")
    }

    @Test("namespace() carries state out of loops, set does not")
    func namespaces() throws {
        let source = "{% set ns = namespace(last=-1) %}{% set plain = -1 %}{% for m in ms %}{% if m == 'user' %}"
            + "{% set ns.last = loop.index0 %}{% set plain = loop.index0 %}{% endif %}{% endfor %}{{ ns.last }} {{ plain }}"
        #expect(try render(source, ["ms": ["system", "user", "assistant", "user", "assistant"]]) == "3 -1")
    }

    @Test("slices and negative indices")
    func slicing() throws {
        let context: [String: TemplateValue] = ["xs": [1, 2, 3, 4, 5], "s": "héllo"]
        #expect(try render("{{ xs[1:] }} {{ xs[:-2] }} {{ xs[::-1] }} {{ xs[-1] }} {{ xs[-2] }} {{ xs[::2] }}", context)
            == "[2, 3, 4, 5] [1, 2, 3] [5, 4, 3, 2, 1] 5 4 [1, 3, 5]")
        #expect(try render("{{ s[1] }} {{ s[-1] }} {{ s[1:3] }} {{ s[::-1] }} [{{ xs[9] }}]", context) == "é o él olléh []")
    }

    @Test("filters and methods")
    func filters() throws {
        #expect(try render("{{ '  Hi  '|trim|upper }} {{ [3, 1, 2]|sort|join(',') }} {{ ms|selectattr('role', 'equalto', 'user')|list|length }}",
                           ["ms": [["role": "user"], ["role": "assistant"], ["role": "user"]]]) == "HI 1,2,3 2")
        #expect(try render("{{ x|default('none') }} {{ 'a-b'.split('-')|last }} {{ '<think>x</think>y'.split('</think>')[0].lstrip('<think>') }}")
            == "none b x")
        #expect(try render("{{ {'b': 1, 'a': [true, none]}|tojson }}") == #"{"b": 1, "a": [true, null]}"#)
    }
}
