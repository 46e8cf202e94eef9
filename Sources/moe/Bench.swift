import ArgumentParser
import Engine
import Experts
import Foundation
import GGUF
import Host
import KV
import Models

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prefill and decode speed (medians of several runs), as llama-bench does.")

    @OptionGroup var options: ModelOptions

    @Option(name: [.customShort("p"), .customLong("n-prompt")], help: "Prompt tokens evaluated as one batch (0: skip prefill).")
    var promptTokens: Int = 128

    @Option(name: [.customShort("n"), .customLong("n-gen")], help: "Tokens decoded one at a time (0: skip decode).")
    var generatedTokens: Int = 32

    @Option(name: [.customShort("r"), .customLong("repetitions")], help: "Timed runs of each test; the median is reported.")
    var runs: Int = 5

    @Option(help: "Sequences decoding together in one batch: the decode figure is their aggregate tokens/s (prefill stays one sequence).")
    var parallel: Int = 1

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        guard promptTokens >= 0, generatedTokens >= 0, promptTokens + generatedTokens > 0 else {
            throw ValidationError("-p and -n must be ≥ 0 and not both 0")
        }
        guard runs >= 1 else { throw ValidationError("-r must be ≥ 1") }
        guard parallel >= 1 else { throw ValidationError("--parallel must be ≥ 1") }
        let model = try options.load(sequences: parallel)
        let session = try options.session(model)
        // --parallel N > 1: N sequences of their own in one pool, decoding together.
        let batch = parallel > 1 ? try options.batchKVPool(model, sequences: parallel) : nil
        let sequences = batch.map { b in (0..<parallel).map { _ in b.pool.makeSequence(capacity: b.context) } } ?? []
        let workspace = Workspace()
        guard max(promptTokens, generatedTokens) <= session.cache.capacity else {
            printError("error: context overflow: \(max(promptTokens, generatedTokens)) tokens, the context holds \(session.cache.capacity)")
            throw ExitCode.failure
        }
        // Random tokens, like llama-bench: the speed of a dense pass does not depend on them.
        var rng = SystemRandomNumberGenerator()
        let vocab = model.vocabularySize
        let clock = ContinuousClock()

        func prefill() throws -> Double {
            session.rewind(to: 0)
            let ids = (0..<promptTokens).map { _ in Int.random(in: 0..<vocab, using: &rng) }
            let start = clock.now
            _ = try runReporting { try session.evaluate(ids, logits: .last) }
            return Double(promptTokens) / (clock.now - start).seconds
        }
        func decode() throws -> Double {
            if let batch { return try decodeTogether(layout: batch.pool.layout) }
            session.rewind(to: 0)
            // A random token each step, as llama-bench feeds: on a MoE model the routing
            // then varies from token to token, as it does in real text, instead of settling
            // into the loop a greedy continuation of a random-weight model falls into.
            let start = clock.now
            for _ in 0..<generatedTokens {
                let token = Int.random(in: 0..<vocab, using: &rng)
                _ = try runReporting { try session.evaluate([token], logits: .last) }
            }
            return Double(generatedTokens) / (clock.now - start).seconds
        }
        // Every sequence gets a random token each step; one forward pass per step.
        func decodeTogether(layout: KVLayout) throws -> Double {
            for s in sequences { s.truncate(to: 0) }
            let start = clock.now
            for _ in 0..<generatedTokens {
                let chunks = sequences.map { SequenceChunk(tokens: [Int.random(in: 0..<vocab, using: &rng)], cache: $0) }
                do {
                    _ = try model.forward(chunks, workspace: workspace, pool: session.pool)
                } catch let ModelError.kvCache(error) {
                    printError("error: " + ModelOptions.kvExhausted(error, sequences: parallel, positionsEach: generatedTokens,
                                                                    layout: layout))
                    throw ExitCode.failure
                } catch {
                    _ = try runReporting { throw error }
                }
            }
            return Double(generatedTokens * parallel) / (clock.now - start).seconds
        }
        // One untimed warm-up of each test (page faults, thread start-up).
        if promptTokens > 0 { _ = try prefill() }
        if generatedTokens > 0 { _ = try decode() }
        // Expert figures cover the timed runs only.
        let offloaded = model.experts as? OffloadedExpertProvider
        offloaded?.stats.reset()
        var prefillRates: [Double] = []
        var decodeRates: [Double] = []
        for _ in 0..<runs {
            if promptTokens > 0 { prefillRates.append(try prefill()) }
            if generatedTokens > 0 { decodeRates.append(try decode()) }
        }
        let peak = ProcessMemory.peakResidentBytes()
        let p = median(prefillRates), d = median(decodeRates)
        // Where one-sequence decode stands against memory bandwidth: the weight bytes a token
        // reads once they are in memory, and the rate that reading them at the median implies.
        let weightBytes = parallel == 1 && d != nil ? ModelDescription(model.weights.file).weightBytesPerDecodedToken : nil
        if json {
            var fields: [String] = []
            if let p { fields.append("\"prefill_tokens_per_second\": \(String(format: "%.3f", p))") }
            if let d { fields.append("\"decode_tokens_per_second\": \(String(format: "%.3f", d))") }
            if let weightBytes, let d {
                fields.append("\"weight_bytes_per_token\": \(weightBytes)")
                fields.append("\"weight_bytes_per_second\": \(Int(Double(weightBytes) * d))")
            }
            fields.append("\"peak_rss_bytes\": \(peak)")
            fields.append("\"threads\": \(session.pool.threadCount)")
            fields.append("\"parallel\": \(parallel)")
            if let stats = offloaded?.stats {
                fields.append("\"expert_hit_rate\": \(String(format: "%.4f", stats.hitRate))")
                fields.append("\"expert_bytes_read_per_token\": \(Int(stats.bytesPerToken))")
                fields.append("\"io_stall_ms_per_token\": \(String(format: "%.3f", stats.tokens > 0 ? 1000 * stats.stallSeconds / Double(stats.tokens) : 0))")
                if let bw = stats.diskBandwidth { fields.append("\"disk_bytes_per_second\": \(Int(bw))") }
                if stats.selected > 0 {
                    fields.append("\"prediction_recall\": \(String(format: "%.4f", stats.predictionRecall))")
                    fields.append("\"prediction_precision\": \(String(format: "%.4f", stats.predictionPrecision))")
                }
                if stats.expertUses > 0 {
                    fields.append("\"low_precision_share\": \(String(format: "%.4f", Double(stats.lowPrecisionUses) / Double(stats.expertUses)))")
                }
                if let bound = stats.diskBoundTokensPerSecond {
                    fields.append("\"disk_bound_tokens_per_second\": \(String(format: "%.3f", bound))")
                }
            }
            print("{" + fields.joined(separator: ", ") + "}")
        } else {
            print("model: \(try options.modelPath()) (\(model.hyperParameters.architecture)), threads: \(session.pool.threadCount), runs: \(runs)")
            if let p { print(String(format: "prefill %4d tokens: %8.2f tokens/s (median; min %.2f, max %.2f)", promptTokens, p, prefillRates.min()!, prefillRates.max()!)) }
            if let d {
                let label = parallel > 1 ? String(format: "decode  %4d tokens × %d sequences (aggregate)", generatedTokens, parallel)
                    : String(format: "decode  %4d tokens", generatedTokens)
                print(String(format: "%@: %8.2f tokens/s (median; min %.2f, max %.2f)", label, d, decodeRates.min()!, decodeRates.max()!))
            }
            if let weightBytes, let d {
                print(String(format: "decode reads %@ of weights per token: %.1f GB/s at the median",
                             formatBytes(Int(weightBytes)), Double(weightBytes) * d / 1e9))
            }
            if let stats = offloaded?.stats {
                print(String(format: "experts: hit rate %.1f%%, %@ read per token", 100 * stats.hitRate, formatBytes(Int(stats.bytesPerToken))))
            }
            print("peak memory: \(formatBytes(peak))")
        }
        try options.finish(model)
    }
}

func median(_ values: [Double]) -> Double? {
    guard !values.isEmpty else { return nil }
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
