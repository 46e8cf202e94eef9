import ArgumentParser
import Engine
import Experts
import Foundation
import GGUF
import Models
import Tokenizer

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a prompt, streaming it as it is produced.")

    @OptionGroup var options: ModelOptions

    @Option(name: [.customShort("p"), .customLong("prompt")], help: "The prompt.")
    var prompt: String

    @Option(name: [.customShort("n"), .customLong("n-predict")], help: "Tokens to generate at most.")
    var tokens: Int = 128

    @OptionGroup var sampling: SamplingOptions

    func run() throws {
        guard tokens >= 0 else { throw ValidationError("-n must be ≥ 0") }
        guard !prompt.isEmpty else {
            printError("error: the prompt is empty")
            throw ExitCode.failure
        }
        let model = try options.load()
        let tokenizer = try runReporting { try Tokenizer(metadata: model.weights.file.metadata) }
        let ids = tokenizer.encode(prompt, addBOS: tokenizer.addsBOS)
        guard !ids.isEmpty else {
            printError("error: the prompt has no tokens")
            throw ExitCode.failure
        }
        let session = try options.session(model)
        var sampler = Sampler(sampling.parameters)
        var decoder = StreamingDecoder(tokenizer: tokenizer, stripLeadingSpace: false)
        let out = FileHandle.standardOutput
        let stats = try runReporting {
            try session.generate(prompt: ids, maxTokens: tokens, sampler: &sampler,
                                 isEndOfGeneration: tokenizer.isEndOfGeneration) { id in
                let text = decoder.append(id)
                if !text.isEmpty { out.write(Data(text.utf8)) }
                return true
            }
        }
        let rest = decoder.finish()
        if !rest.isEmpty { out.write(Data(rest.utf8)) }
        out.write(Data("\n".utf8))
        printError(String(format: "prompt: %d tokens, %.1f tokens/s | generation: %d tokens, %.1f tokens/s | peak memory %@",
                          stats.promptTokens, stats.promptTokensPerSecond, stats.generatedTokens,
                          stats.generationTokensPerSecond, formatBytes(stats.peakResidentBytes)))
        try options.finish(model)
    }
}
