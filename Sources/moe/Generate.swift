import ArgumentParser
import Engine
import Experts
import Foundation
import GGUF
import Host
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

    @Option(help: "Continuations of the prompt decoded together in one batch (the prompt is evaluated once; continuation i samples with seed S+i).")
    var parallel: Int = 1

    @OptionGroup var sampling: SamplingOptions

    @OptionGroup var sessionOptions: SessionOptions

    func run() throws {
        guard tokens >= 0 else { throw ValidationError("-n must be ≥ 0") }
        guard parallel >= 1 else { throw ValidationError("--parallel must be ≥ 1") }
        guard parallel == 1 || sessionOptions.path == nil else {
            throw ValidationError("--session keeps one sequence; it cannot be combined with --parallel")
        }
        guard !prompt.isEmpty else {
            printError("error: the prompt is empty")
            throw ExitCode.failure
        }
        let runtime = try options.load(sequences: parallel, sampling: sampling.parameters)
        let tokenizer = try runReporting { try runtime.makeTokenizer() }
        let ids = tokenizer.encode(prompt, addBOS: tokenizer.addsBOS)
        guard !ids.isEmpty else {
            printError("error: the prompt has no tokens")
            throw ExitCode.failure
        }
        if parallel > 1 {
            try runParallel(runtime, tokenizer: tokenizer, prompt: ids)
            try options.finish(runtime)
            return
        }
        let saved = try sessionOptions.openSaved()
        let session = try runReporting { try runtime.makeSession(defaultKVType: saved?.layout.type) }
        var sampler = Sampler(runtime.configuration.sampling)
        // A saved session gives back the longest prefix of the prompt it holds (leaving the
        // last prompt token to evaluate, for its logits).
        var reused = 0
        var restoreSeconds = 0.0
        if let saved {
            let strategy = sessionOptions.strategy
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
        try options.finish(runtime)
    }

    /// `--parallel N`: the prompt once, then N continuations (forks sharing its KV blocks)
    /// stepping together; each printed whole, labelled, when all are done.
    private func runParallel(_ runtime: Runtime, tokenizer: Tokenizer, prompt ids: [Int]) throws {
        let generator = try runReporting { try runtime.makeBatchGenerator() }
        guard ids.count < generator.contextLength else {
            printError("error: context overflow: the prompt has \(ids.count) tokens, the context holds \(generator.contextLength)")
            throw ExitCode.failure
        }
        let clock = ContinuousClock()
        var started = clock.now
        let shared = try runReporting { try generator.prefill(ids) }
        let promptSeconds = (clock.now - started).seconds
        let base = runtime.configuration.sampling
        var labels: [BatchGenerator.SequenceID: Int] = [:]
        var decoders: [StreamingDecoder] = []
        var texts: [String] = []
        for i in 0..<parallel {
            var parameters = base
            parameters.seed = base.seed &+ UInt64(i)
            let id = generator.add(continuing: shared, sampler: Sampler(parameters), maxTokens: max(tokens, 1),
                                   isEndOfGeneration: tokenizer.isEndOfGeneration)
            labels[id] = i
            decoders.append(StreamingDecoder(tokenizer: tokenizer, stripLeadingSpace: false))
            texts.append("")
        }
        started = clock.now
        var generated = 0
        while tokens > 0 && !generator.isEmpty {
            let step: [BatchGenerator.Token]
            do {
                step = try generator.step()
            } catch let ModelError.kvCache(error) {
                _ = try runReporting {
                    throw RuntimeError.kvExhausted(error, sequences: parallel, positionsEach: min(ids.count + tokens, generator.contextLength),
                                                   layout: generator.kvPool.layout)
                }
                return
            } catch {
                _ = try runReporting { throw error }
                return
            }
            for t in step {
                let i = labels[t.sequence]!
                texts[i] += decoders[i].append(t.token)
                generated += 1
            }
        }
        let decodeSeconds = (clock.now - started).seconds
        let out = FileHandle.standardOutput
        for i in 0..<parallel {
            texts[i] += decoders[i].finish()
            out.write(Data("[\(i + 1)/\(parallel), seed \(base.seed &+ UInt64(i))] \(texts[i])\n".utf8))
        }
        printError(String(format: "prompt: %d tokens, %.1f tokens/s | generation: %d sequences, %d tokens, %.1f tokens/s aggregate | peak memory %@",
                          ids.count, promptSeconds > 0 ? Double(ids.count) / promptSeconds : 0, parallel, generated,
                          decodeSeconds > 0 ? Double(generated) / decodeSeconds : 0,
                          formatBytes(ProcessMemory.peakResidentBytes())))
    }
}
