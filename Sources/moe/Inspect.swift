import ArgumentParser
import Engine
import GGUF
import Storage
import Trace
import Models
import Tokenizer

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a GGUF file: architecture, hyper-parameters, tokenizer, tensors, expert layout.")

    @Argument(help: "Path to a GGUF file.")
    var file: String

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @OptionGroup var storage: StorageOptions

    func run() throws {
        let backend = storage.ioBackend
        let gguf = try runReporting { try GGUFFile.open(path: file, backend: backend) }
        let description = ModelDescription(gguf)
        print(json ? description.json() : description.text())
    }
}
