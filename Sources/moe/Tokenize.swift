import ArgumentParser
import Foundation
import GGUF
import Tokenizer

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the token ids of a text, space separated, on one line.")

    @Option(name: [.customShort("m"), .customLong("model")], help: "GGUF file with a tokenizer (weights are not read).")
    var model: String

    @Flag(help: "Do not add the beginning-of-sequence token, even where the model asks for it.")
    var noBos = false

    @Option(help: "Text to tokenize.")
    var text: String?

    @Option(help: "File whose contents to tokenize.")
    var file: String?

    @OptionGroup var storage: StorageOptions

    func validate() throws {
        if (text == nil) == (file == nil) { throw ValidationError("give exactly one of --text and --file") }
    }

    func run() throws {
        let input: String
        if let text {
            input = text
        } else {
            guard let data = FileManager.default.contents(atPath: file!) else {
                printError("error: cannot read \(file!)")
                throw ExitCode.failure
            }
            input = String(decoding: data, as: UTF8.self)
        }
        let gguf = try runReporting { try GGUFFile.open(path: model) }
        let tokenizer = try runReporting { try Tokenizer(metadata: gguf.metadata) }
        let ids = tokenizer.encode(input, addBOS: !noBos && tokenizer.addsBOS)
        print(ids.map(String.init).joined(separator: " "))
    }
}
