import ChatTemplate
import Foundation
import TestSupport
import GGUF
import Testing

/// `../shared/` beside the repository (or `MOE_SHARED_DIR`): llama.cpp-made reference data.
enum Shared {
    static let root = SharedData.root

    static func vocab(_ name: String) -> String { root.appendingPathComponent("vocab/ggml-vocab-\(name).gguf").path }

    /// `tokenizer.chat_template` of a vocabulary file, read in place once per process.
    static func chatTemplate(vocab name: String) throws -> String {
        try GGUFTemplates.shared.template(vocab: name)
    }
}

final class GGUFTemplates: @unchecked Sendable {
    static let shared = GGUFTemplates()
    private let lock = NSLock()
    private var read: [String: String] = [:]

    struct Missing: Error, CustomStringConvertible {
        var path: String
        var description: String { "\(path) has no tokenizer.chat_template" }
    }

    func template(vocab name: String) throws -> String {
        lock.lock()
        defer { lock.unlock() }
        if let t = read[name] { return t }
        let path = Shared.vocab(name)
        guard let t = try GGUFFile.open(path: path).metadata["tokenizer.chat_template"]?.string else { throw Missing(path: path) }
        read[name] = t
        return t
    }
}

/// One rendering checked against Python's jinja2 (see Fixtures/make_expected.py, which
/// writes ExpectedOutputs.swift).
struct RenderCase: Sendable, CustomTestStringConvertible {
    enum Template: Sendable {
        /// A published template embedded in TemplateSources.swift.
        case source(String)
        /// The `tokenizer.chat_template` of ../shared/vocab/ggml-vocab-NAME.gguf.
        case gguf(String)
        /// A small template exercising one feature.
        case inline(String)
    }

    enum Expected: Sendable, Equatable {
        case output(String)
        /// The template called `raise_exception` with this message.
        case exception(String)
    }

    var name: String
    var template: Template
    var context: [String: TemplateValue]
    var options: ChatTemplate.Options = .huggingFace
    var expected: Expected

    var testDescription: String { name }

    func source() throws -> String {
        switch template {
        case .source(let s), .inline(let s): s
        case .gguf(let vocab): try Shared.chatTemplate(vocab: vocab)
        }
    }
}

/// The error a parse throws, or nil.
func parseError(_ source: String, options: ChatTemplate.Options = .huggingFace) -> ChatTemplateError? {
    do throws(ChatTemplateError) {
        _ = try ChatTemplate(source, options: options)
        return nil
    } catch {
        return error
    }
}

/// The error rendering throws (parsing must succeed), or nil.
func renderError(_ source: String, _ context: [String: TemplateValue] = [:], options: ChatTemplate.Options = .huggingFace)
    throws -> ChatTemplateError?
{
    let template = try ChatTemplate(source, options: options)
    do throws(ChatTemplateError) {
        _ = try template.render(context)
        return nil
    } catch {
        return error
    }
}

func render(_ source: String, _ context: [String: TemplateValue] = [:], options: ChatTemplate.Options = .huggingFace) throws -> String {
    try ChatTemplate(source, options: options).render(context)
}
