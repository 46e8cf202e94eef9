import ChatTemplate
import Testing

@Suite("Errors")
struct ErrorTests {
    private func at(_ line: Int, _ column: Int) -> TemplateLocation { TemplateLocation(line: line, column: column) }

    @Test("an unclosed block names the block, where it opened and where the template ended")
    func unclosedBlock() {
        #expect(parseError("{% for m in messages %}{{ m }}") == .syntax(
            "unexpected end of template: expected 'endfor' or 'else' to close the 'for' opened at 1:1", at: at(1, 31)))
        #expect(parseError("{% if a %}\nx\n{% elif b %}y") == .syntax(
            "unexpected end of template: expected 'endif' or 'elif' or 'else' to close the 'if' opened at 1:1", at: at(3, 14)))
        #expect(parseError("{% if a %}{% endfor %}") == .syntax(
            "unexpected 'endfor': expected 'endif' or 'elif' or 'else' to close the 'if' opened at 1:1", at: at(1, 14)))
        #expect(parseError("{% endif %}") == .syntax("unexpected 'endif' outside of any block", at: at(1, 4)))
        #expect(parseError("{% set x %}abc") == .syntax(
            "unexpected end of template: expected 'endset' to close the 'set' opened at 1:1", at: at(1, 15)))
    }

    @Test("unclosed tags, strings, comments and brackets")
    func unclosedTags() {
        #expect(parseError("a {{ x ") == .syntax(
            "unexpected end of template inside the tag opened at 1:3: expected '}}'", at: at(1, 8)))
        #expect(parseError("{% if x") == .syntax(
            "unexpected end of template inside the tag opened at 1:1: expected '%}'", at: at(1, 8)))
        #expect(parseError("{{ 'abc }}") == .syntax("unterminated string literal", at: at(1, 4)))
        #expect(parseError("x\n{# note") == .syntax("unclosed comment: expected '#}'", at: at(2, 1)))
        #expect(parseError("{{ (1 + 2 }}") == .syntax("unexpected '}': the '(' at 1:4 is not closed", at: at(1, 11)))
        #expect(parseError("{{ 1 + }}") == .syntax("expected an expression, found '}}'", at: at(1, 8)))
        #expect(parseError("{% raw %}abc") == .syntax("unclosed 'raw' block: expected '{% endraw %}'", at: at(1, 1)))
    }

    @Test("unknown tags, filters and tests are reported when parsing")
    func unknownNames() {
        #expect(parseError("{% frobnicate %}") == .syntax("unknown tag 'frobnicate'", at: at(1, 4)))
        #expect(parseError("{% include 'x.j2' %}") == .syntax("the 'include' tag is not supported", at: at(1, 4)))
        #expect(parseError("{{ messages | nosuchfilter }}") == .unknownFilter("nosuchfilter", at: at(1, 15)))
        #expect(parseError("line 1\n  {{ x|trim|shout(1) }}") == .unknownFilter("shout", at: at(2, 13)))
        #expect(parseError("{% if x is frobbable %}{% endif %}") == .unknownTest("frobbable", at: at(1, 12)))
        #expect(parseError("{% break %}") == .syntax("'break' outside of a loop", at: at(1, 4)))
        #expect(parseError("{% for x in y recursive %}{% endfor %}") == .syntax("recursive loops are not supported", at: at(1, 15)))
        #expect(parseError("{% set 1 = 2 %}") == .syntax("expected a variable name to assign to, found '1'", at: at(1, 8)))
        #expect(parseError("{{ f(a=1, 2) }}") == .syntax("positional argument after keyword arguments", at: at(1, 11)))
    }

    @Test("raise_exception carries the template's message")
    func raisedException() throws {
        let mistral = try ChatTemplate(Templates.mistralV1)
        #expect(throws: ChatTemplateError.raised("Conversation roles must alternate user/assistant/user/assistant/...")) {
            try mistral.render(messages: [.user("Hi"), .user("Hello?")], addGenerationPrompt: false, bosToken: "<s>", eosToken: "</s>")
        }
        #expect(throws: ChatTemplateError.raised("Only user and assistant roles are supported!")) {
            try mistral.render(messages: [.user("Hi"), ChatMessage(role: "tool", content: "{}")],
                               addGenerationPrompt: false, bosToken: "<s>", eosToken: "</s>")
        }
        #expect(try mistral.render(messages: [.user("Hi"), .assistant("Hello")], addGenerationPrompt: false,
                                   bosToken: "<s>", eosToken: "</s>") == "<s>[INST] Hi [/INST]Hello</s>")
        let error = ChatTemplateError.raised("System role not supported")
        #expect(error.description == "template raised an exception: System role not supported")
    }

    @Test("undefined values may be printed, tested and compared, but not used")
    func undefinedUse() throws {
        #expect(try renderError("{{ missing.attribute }}") == .undefined("'missing' is undefined (reading its attribute 'attribute')", at: at(1, 11)))
        #expect(try renderError("{{ missing['k'] }}") == .undefined("'missing' is undefined (reading the item 'k')", at: at(1, 11)))
        #expect(try renderError("{{ missing + 1 }}") == .undefined("'missing' is undefined (operand of '+')", at: at(1, 12)))
        #expect(try renderError("{{ missing() }}") == .undefined("'missing' is undefined (called as a function)", at: at(1, 11)))
        #expect(try renderError("{{ d.a.b }}", ["d": [:]]) == .undefined("'dict object' has no attribute 'a' (reading its attribute 'b')", at: at(1, 7)))
        #expect(try render("[{{ missing }}{{ missing is defined }}{{ missing == missing }}{{ missing|length }}]") == "[FalseTrue0]")
    }

    @Test("type errors")
    func typeErrors() throws {
        #expect(try renderError("{{ 'a' + 1 }}") == .type("unsupported operand types for +: 'str' and 'int'", at: at(1, 8)))
        #expect(try renderError("{% for x in 5 %}{% endfor %}") == .type("'int' object is not iterable", at: at(1, 13)))
        #expect(try renderError("{{ 1 // 0 }}") == .type("division by zero", at: at(1, 6)))
        #expect(try renderError("{{ 1 < 'a' }}") == .type("'<' is not supported between 'int' and 'str'", at: at(1, 6)))
        #expect(try renderError("{{ 'x'() }}") == .type("'str' object is not callable", at: at(1, 7)))
        #expect(try renderError("{{ 'abc'.split('') }}") == .type("empty separator", at: at(1, 15)))
        #expect(try renderError("{{ 'a'.startswith() }}") == .type("startswith() is missing the argument 'prefix'", at: at(1, 18)))
        #expect(try renderError("{{ 'a'|replace('a') }}") == .type("replace() is missing the argument 'new'", at: at(1, 8)))
        #expect(try renderError("{{ [1]|join(', ', bogus=1) }}") == .type("join() got an unexpected keyword argument 'bogus'", at: at(1, 8)))
        #expect(try renderError("{% set x = 1 %}{% set x.y = 2 %}") == .type(
            "cannot assign attribute 'y' on 'x', which is not a namespace()", at: at(1, 16)))
        #expect(try renderError("{% set a, b = [1, 2, 3] %}") == .type("cannot unpack 3 values into 2 names", at: at(1, 1)))
        #expect(try renderError("{{ x|tojson }}") == .type("tojson: object of type 'undefined' is not JSON serializable", at: at(1, 6)))
        #expect(try renderError("{{ 9223372036854775807 + 1 }}") == .type("integer overflow in '+'", at: at(1, 24)))
        #expect(try renderError("{{ [1, 2]|map('shout')|list }}") == .unknownFilter("shout", at: at(1, 11)))
        #expect(try renderError("{{ [1, 2]|select('frobbable')|list }}") == .unknownTest("frobbable", at: at(1, 11)))
    }

    @Test("descriptions name the place")
    func descriptions() {
        #expect(ChatTemplateError.syntax("expected 'endfor'", at: at(3, 7)).description == "template syntax error at 3:7: expected 'endfor'")
        #expect(ChatTemplateError.unknownFilter("shout", at: at(1, 2)).description == "unknown filter 'shout' at 1:2")
        #expect(ChatTemplateError.type("bad", at: at(2, 2)).description == "template type error at 2:2: bad")
        #expect(ChatTemplateError.limitExceeded("too big").description == "template limit exceeded: too big")
    }
}
