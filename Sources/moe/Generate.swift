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

    @OptionGroup var sessionOptions: SessionOptions

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
        let saved = try sessionOptions.openSaved()
        let session = try options.session(model, defaultKVType: saved?.layout.type)
        var sampler = Sampler(sampling.parameters)
        // A saved session gives back the longest prefix of the prompt it holds (leaving the
        // last prompt token to evaluate, for its logits).
        var reused = 0
        var restoreSeconds = 0.0
        if let saved {
            let strategy = try sessionOptions.strategy()
            let report = try runReporting { () throws(SessionFileError) -> RestoreReport in
                guard saved.contents.kind == "generate" else {
                    throw SessionFileError(path: saved.path, problem: .wrongKind(saved: saved.contents.kind, wanted: "generate"))
                }
                try saved.check(against: session)
                return try session.restore(saved, positions: min(saved.commonPrefix(with: ids), ids.count - 1),
                                           strategy: strategy)
            }
            reused = report.positions
            restoreSeconds = report.seconds
            printError(SessionOptions.describe(report, of: ids.count, unit: "prompt tokens"))
            for t in ids[..<reused] { sampler.accept(t) }
        }
        var decoder = StreamingDecoder(tokenizer: tokenizer, stripLeadingSpace: false)
        let out = FileHandle.standardOutput
        let stats = try runReporting {
            try session.generate(prompt: Array(ids[reused...]), maxTokens: tokens, sampler: &sampler,
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
        if let path = sessionOptions.path {
            printError(String(format: "time to first token: %.1f ms (restore %.1f ms, prompt %.1f ms)",
                              (restoreSeconds + stats.promptSeconds) * 1000, restoreSeconds * 1000, stats.promptSeconds * 1000))
            try runReporting { try SessionFile.save(session, to: path, contents: SessionContents(kind: "generate")) }
        }
        try options.finish(model)
    }
}
