import ArgumentParser
import Engine
import Experts
import Foundation

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
        let runtime = try options.load(sequences: parallel)
        let plan = BenchmarkPlan(promptTokens: promptTokens, generatedTokens: generatedTokens, runs: runs)
        let result = try runReporting { try runtime.benchmark(plan) }
        let p = result.prefillMedian, d = result.decodeMedian
        let peak = result.peakResidentBytes
        // Where one-sequence decode stands against memory bandwidth: the weight bytes a token
        // reads once they are in memory, and the rate that reading them at the median implies.
        let weightBytes = d != nil ? result.weightBytesPerDecodedToken : nil
        let stats = result.expertStatistics
        if json {
            var fields: [String] = []
            if let p { fields.append("\"prefill_tokens_per_second\": \(String(format: "%.3f", p))") }
            if let d { fields.append("\"decode_tokens_per_second\": \(String(format: "%.3f", d))") }
            if let weightBytes, let d {
                fields.append("\"weight_bytes_per_token\": \(weightBytes)")
                fields.append("\"weight_bytes_per_second\": \(Int(Double(weightBytes) * d))")
            }
            fields.append("\"peak_rss_bytes\": \(peak)")
            fields.append("\"threads\": \(result.threads)")
            fields.append("\"parallel\": \(parallel)")
            if let stats {
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
            print("model: \(runtime.configuration.modelPath) (\(runtime.model.hyperParameters.architecture)), threads: \(result.threads), runs: \(runs)")
            if let p {
                print(String(format: "prefill %4d tokens: %8.2f tokens/s (median; min %.2f, max %.2f)", promptTokens, p,
                             result.prefillRates.min()!, result.prefillRates.max()!))
            }
            if let d {
                let label = parallel > 1 ? String(format: "decode  %4d tokens × %d sequences (aggregate)", generatedTokens, parallel)
                    : String(format: "decode  %4d tokens", generatedTokens)
                print(String(format: "%@: %8.2f tokens/s (median; min %.2f, max %.2f)", label, d,
                             result.decodeRates.min()!, result.decodeRates.max()!))
            }
            if let weightBytes, let d {
                print(String(format: "decode reads %@ of weights per token: %.1f GB/s at the median",
                             formatBytes(Int(weightBytes)), Double(weightBytes) * d / 1e9))
            }
            if let stats {
                print(String(format: "experts: hit rate %.1f%%, %@ read per token", 100 * stats.hitRate, formatBytes(Int(stats.bytesPerToken))))
            }
            print("peak memory: \(formatBytes(peak))")
        }
        try options.finish(runtime)
    }
}
