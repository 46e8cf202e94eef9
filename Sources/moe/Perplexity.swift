import ArgumentParser
import Engine
import Foundation
import Tokenizer

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Perplexity of a text file, computed as llama.cpp's llama-perplexity computes it.",
        discussion: """
        The text is cut into chunks of --ctx tokens; each is evaluated from an empty context and \
        the second half of every chunk is scored. The same file, model and --ctx give the same \
        figure as `llama-perplexity -f FILE -c N`.
        """)

    @OptionGroup var options: ModelOptions

    @Option(name: [.customShort("f"), .customLong("file")], help: "The text file to score.")
    var file: String

    @Option(name: .customLong("chunks"), help: "Score at most this many chunks (default: all).")
    var chunks: Int?

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be positive") }
    }

    func run() throws {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
            printError("error: cannot read '\(file)': \(error.localizedDescription)")
            throw ExitCode.failure
        }
        let model = try options.load()
        let tokenizer = try runReporting { try Tokenizer(metadata: model.weights.file.metadata) }
        // As llama-perplexity: BOS only where the vocabulary adds it, special tokens as text.
        let tokens = tokenizer.encode(utf8: Array(data), addBOS: tokenizer.addsBOS, parseSpecial: false)
        let context = options.contextLength ?? min(512, model.hyperParameters.contextLength)
        let session = Session(model: model, contextLength: max(context, 1), threads: options.threads)
        let evaluator = PerplexityEvaluator(contextLength: context, maxChunks: chunks,
                                            bos: tokenizer.addsBOS ? tokenizer.bos : nil)
        let bar = ProgressBar("perplexity", total: evaluator.chunkCount(tokens: tokens.count))
        let clock = ContinuousClock()
        let started = clock.now
        let result: PerplexityResult
        do {
            result = try evaluator.evaluate(tokens, session: session) { done, _, ppl in
                bar.update(done, detail: String(format: "PPL %.4f", ppl))
            }
        } catch {
            bar.finish()
            printError("error: \(error.description)")
            throw ExitCode.failure
        }
        bar.finish()
        let seconds = (clock.now - started).seconds
        if json {
            let object: [String: Any] = [
                "perplexity": result.perplexity, "perplexity_error": result.perplexityError,
                "mean_nll": result.meanNLL, "context": result.contextLength,
                "chunks": result.chunkNLL.count, "scored_tokens": result.scoredTokens,
                "text_tokens": tokens.count, "seconds": seconds,
            ]
            let out = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: out, as: UTF8.self))
        } else {
            print(String(format: "perplexity: %.4f ± %.4f  (%d chunks of %d tokens, %d tokens scored of %d, %.1f s, %.0f tokens/s)",
                         result.perplexity, result.perplexityError, result.chunkNLL.count, context,
                         result.scoredTokens, tokens.count, seconds,
                         Double(result.chunkNLL.count * context) / max(seconds, 1e-9)))
        }
        try options.finish(model)
    }
}
