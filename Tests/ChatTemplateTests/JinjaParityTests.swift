import ChatTemplate
import Testing

@Suite("Renders as Python jinja2 does")
struct JinjaParityTests {
    @Test("real templates and feature snippets", arguments: RenderCase.all)
    func matchesJinja(_ c: RenderCase) throws {
        let template = try ChatTemplate(try c.source(), options: c.options)
        switch c.expected {
        case .output(let text):
            #expect(try template.render(c.context) == text)
        case .exception(let message):
            #expect(throws: ChatTemplateError.raised(message)) { try template.render(c.context) }
        }
    }

    @Test("the GGUF files carry the templates the cases were made from")
    func ggufTemplates() throws {
        let qwen2 = try Shared.chatTemplate(vocab: "qwen2")
        #expect(qwen2.hasPrefix("{% for message in messages %}"))
        #expect(qwen2.contains("You are a helpful assistant"))
        let phi3 = try Shared.chatTemplate(vocab: "phi-3")
        #expect(phi3.hasPrefix("{{ bos_token }}"))
        #expect(phi3.contains("<|assistant|>"))
    }
}
