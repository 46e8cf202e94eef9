import ArgumentParser
import Engine
import Experts
import Foundation
import Tokenizer

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Perplexity of a text file, computed as llama.cpp's llama-perplexity computes it.",
        discussion: """
        The text is cut into chunks of --ctx tokens; each is evaluated from an empty context and \
        the second half of every chunk is scored. The same file, model and --ctx give the same \
        figure as `llama-perplexity -f FILE -c N`.

        To measure an approximation (another quantization, offloaded or low-precision experts), \
        save a reference run with --kl-base FILE, then run the approximation on the same text \
        with --kl-compare FILE: it reports the mean KL divergence of the next-token \
        distributions from the reference, its spread, how often the top token agrees and the \
        change in perplexity. The same text, --ctx and --chunks are required.
        """)

    @OptionGroup var options: ModelOptions

    @Option(name: [.customShort("f"), .customLong("file")], help: "The text file to score.")
    var file: String

    @Option(name: .customLong("chunks"), help: "Score at most this many chunks (default: all).")
    var chunks: Int?

    @Option(name: [.customShort("b"), .customLong("batch-size")],
            help: "Tokens per forward pass within a chunk (default: the whole chunk); 1 runs each token as decoding does.")
    var batchSize: Int?

    @Option(name: .customLong("kl-base"),
            help: ArgumentHelp("Also save every scored position's next-token log-probabilities (half precision) to FILE, a base for --kl-compare.",
                               valueName: "FILE"))
    var klBase: String?

    @Option(name: .customLong("kl-compare"),
            help: ArgumentHelp("Compare with a base saved by --kl-base: KL divergence, same top token, perplexity change.",
                               valueName: "FILE"))
    var klCompare: String?

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be positive") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be positive") }
        if klBase?.isEmpty == true { throw ValidationError("--kl-base needs a file name") }
    }

    /// Reports an error as one line and fails.
    private func fail(_ message: String) -> ExitCode {
        printError("error: \(message)")
        return ExitCode.failure
    }

    func run() throws {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
            printError("error: cannot read '\(file)': \(error.localizedDescription)")
            throw ExitCode.failure
        }
        let runtime = try options.load()
        let model = runtime.model
        let tokenizer = try runReporting { try runtime.makeTokenizer() }
        // As llama-perplexity: BOS only where the vocabulary adds it, special tokens as text.
        let tokens = tokenizer.encode(utf8: Array(data), addBOS: tokenizer.addsBOS, parseSpecial: false)
        let context = options.contextLength ?? min(512, model.hyperParameters.contextLength)
        let session = try runReporting { try runtime.makeSession(context: max(context, 1)) }
        var evaluator = PerplexityEvaluator(contextLength: context, maxChunks: chunks,
                                            bos: tokenizer.addsBOS ? tokenizer.bos : nil)
        evaluator.batchSize = batchSize
        do { try evaluator.check(tokenCount: tokens.count, session: session) } catch { throw fail(error.description) }

        // The base to compare with must describe this very run: checked before any work.
        let header = evaluator.logProbabilityHeader(tokens: tokens, model: model)
        var comparison: KLDivergenceComparison?
        var writer: LogProbabilityFile.Writer?
        do {
            if let klCompare {
                let base = try LogProbabilityFile.Reader(path: klCompare)
                try base.header.requireCompatible(with: header, path: klCompare)
                comparison = KLDivergenceComparison(base: base)
            }
            if let klBase { writer = try LogProbabilityFile.Writer(path: klBase, header: header) }
        } catch { throw fail(error.description) }
        if let klBase { removeTemporaryFileOnInterrupt(klBase) }
        defer { if klBase != nil { restoreInterruptHandlers() } }
        let observers: [any PerplexityObserver] = [comparison as (any PerplexityObserver)?, writer].compactMap { $0 }

        let bar = ProgressBar("perplexity", total: evaluator.chunkCount(tokens: tokens.count))
        let clock = ContinuousClock()
        let started = clock.now
        let result: PerplexityResult
        var kl: KLDivergenceSummary?
        do {
            result = try evaluator.evaluate(tokens, session: session, observers: observers) { done, _, ppl in
                bar.update(done, detail: String(format: "PPL %.4f", ppl))
            }
            bar.finish()
            kl = try comparison?.summary()
            try writer?.commit()
        } catch let error as PerplexityError {
            bar.finish()
            throw fail(error.description)
        } catch {
            throw fail("\(error)")
        }
        let seconds = (clock.now - started).seconds
        if json {
            var object: [String: Any] = [
                "perplexity": result.perplexity, "perplexity_error": result.perplexityError,
                "mean_nll": result.meanNLL, "context": result.contextLength,
                "chunks": result.chunkNLL.count, "scored_tokens": result.scoredTokens,
                "text_tokens": tokens.count, "seconds": seconds,
            ]
            if let klBase { object["kl_base_file"] = klBase }
            if let kl, let base = comparison?.base {
                func number(_ v: Double) -> Any { v.isFinite ? v : NSNull() }
                object["kl_divergence"] = [
                    "base_file": base.path, "base_model": base.header.modelName, "base_model_bytes": base.header.modelSize,
                    "base_perplexity": number(kl.basePerplexity), "base_perplexity_error": number(kl.basePerplexityError),
                    "perplexity_change_percent": number(kl.perplexityChangePercent(result.perplexity)),
                    "mean": number(kl.mean), "mean_error": number(kl.meanError), "median": number(kl.median),
                    "p99": number(kl.p99), "max": number(kl.maximum),
                    "same_top_token": kl.sameTopTokenFraction, "positions": kl.positions,
                ] as [String: Any]
            }
            let out = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: out, as: UTF8.self))
        } else {
            print(String(format: "perplexity: %.4f ± %.4f  (%d chunks of %d tokens, %d tokens scored of %d, %.1f s, %.0f tokens/s)",
                         result.perplexity, result.perplexityError, result.chunkNLL.count, context,
                         result.scoredTokens, tokens.count, seconds,
                         Double(result.chunkNLL.count * context) / max(seconds, 1e-9)))
            if let kl, let base = comparison?.base { print(report(kl, base: base, perplexity: result.perplexity)) }
            if let writer {
                print("saved base:     \(writer.positionsWritten) positions to \(writer.path) (\(formatBytes(writer.header.fileBytes)))")
            }
        }
        try options.finish(runtime)
    }

    func report(_ kl: KLDivergenceSummary, base: LogProbabilityFile.Reader, perplexity: Double) -> String {
        [
            "kl base:        \(base.path) (made by \(base.header.modelName), \(formatBytes(base.header.modelSize)))",
            String(format: "base perplexity: %.4f ± %.4f (from its saved log-probabilities); change %+.3f %%",
                   kl.basePerplexity, kl.basePerplexityError, kl.perplexityChangePercent(perplexity)),
            String(format: "KL divergence:  mean %.6f ± %.6f, median %.6f, 99th percentile %.6f, max %.6f (nats, %d positions)",
                   kl.mean, kl.meanError, kl.median, kl.p99, kl.maximum, kl.positions),
            String(format: "same top token: %.2f %% (%d of %d)", kl.sameTopTokenFraction * 100, kl.sameTopToken, kl.positions),
        ].joined(separator: "\n")
    }
}
