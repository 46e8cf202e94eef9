import ArgumentParser
import Experts
import Foundation
import GGUF
import Kernels
import Storage
#if canImport(Glibc)
import Glibc
#endif

struct Pack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rewrite a MoE GGUF file so each expert is one aligned read, with optional lower-precision copies.",
        discussion: """
        The pack holds every non-expert tensor unchanged, then one 4096-byte-aligned bundle per \
        expert (gate, up and down back to back): first at the file's own precision, then once more \
        for each --low-precision type, quantized from the native weights. Types: \
        \(PackError.supportedTypes.map(\.name).joined(separator: ", ")).
        """)

    @Argument(help: "The MoE GGUF file to pack.")
    var input: String

    @Argument(help: "Where to write the pack (a new file; the input is never overwritten).")
    var output: String

    @Option(name: .customLong("low-precision"),
            help: ArgumentHelp("A lower-precision copy of every expert (repeatable, or comma-separated).",
                               valueName: "TYPE"))
    var lowPrecision: [String] = []

    @Option(help: "Quantization threads (default: the cores this process may use).")
    var threads: Int?

    @OptionGroup var storage: StorageOptions

    func validate() throws {
        if let threads, threads < 1 || threads > 512 { throw ValidationError("--threads must be between 1 and 512") }
    }

    func run() throws {
        let backend = storage.ioBackend
        let clock = ContinuousClock()
        let started = clock.now
        var bar: ProgressBar?
        let summary: PackSummary
        do {
            let types = try ExpertPacker.lowPrecisionTypes(parsing: lowPrecision)
            let packer = try ExpertPacker(input: input, output: output, lowPrecisions: types, storage: backend,
                                          threads: threads ?? ThreadPool.defaultThreadCount)
            removeTemporaryFileOnInterrupt(output)
            defer { restoreInterruptHandlers() }
            summary = try packer.write { done, total in
                if bar == nil { bar = ProgressBar("packing", total: Int((total + (1 << 20) - 1) >> 20)) }
                bar?.update(Int(done >> 20), detail: "MiB")
            }
        } catch {
            bar?.finish()
            reportError(error)
            throw ExitCode.failure
        }
        bar?.finish()
        let seconds = (clock.now - started).seconds
        print(report(summary, seconds: seconds))
    }

    func report(_ s: PackSummary, seconds: Double) -> String {
        var lines = ["packed \(input) → \(s.path)"]
        lines.append("  experts:    \(s.expertsPacked) (\(s.expertCount) per layer in \(s.layers.count) layers) "
                     + "at \(s.precisions.count) precision\(s.precisions.count == 1 ? "" : "s"): \(s.bundleCount) bundles")
        let width = max(10, (s.precisions.map(\.name.count).max() ?? 0) + 1)
        for p in s.precisions {
            let label = (p.name + ":").padding(toLength: width, withPad: " ", startingAt: 0)
            let sizes = p.bytesPerExpert.map { UInt64($0) }
            let (smallest, largest) = (sizes.min() ?? 0, sizes.max() ?? 0)
            let perExpert = smallest == largest
                ? formatBytes(smallest) : "\(formatBytes(smallest)) to \(formatBytes(largest))"
            if Set(p.types).count == 1, smallest == largest, let types = p.types.first {
                lines.append("  \(label)  \(perExpert) per expert (\(describe(types))), \(formatBytes(p.totalBytes)) in all")
            } else {
                // Layers differ (llama.cpp's _M mixes give some layers a larger down matrix).
                lines.append("  \(label)  \(perExpert) per expert, \(formatBytes(p.totalBytes)) in all")
                for (layer, (bytes, types)) in zip(s.layers, zip(sizes, p.types)) {
                    lines.append("    layer \(layer):  \(formatBytes(bytes)) (\(describe(types)))")
                }
            }
        }
        lines.append("  file:       \(formatBytes(s.fileSize)) (input \(formatBytes(s.inputFileSize)))")
        let rate = Double(s.fileSize) / 1_048_576 / max(seconds, 1e-9)
        lines.append("  time:       " + String(format: "%.2f s (%.1f MiB/s written)", seconds, rate))
        return lines.joined(separator: "\n")
    }

    private func describe(_ types: [GGMLType]) -> String {
        zip(types, ["gate", "up", "down"]).map { "\($0.name) \($1)" }.joined(separator: ", ")
    }
}

/// Files are written through `AtomicFileWriter` (the pack's `GGUFWriter`, `perplexity
/// --kl-base`): to `OUTPUT.tmp-PID`, renamed at the end; a Ctrl-C in between would leave that file
/// (as large as the model) behind, so SIGINT and SIGTERM remove it. The path lives in a C
/// string because the handler may only make async-signal-safe calls.
nonisolated(unsafe) private var interruptedTemporaryPath: UnsafeMutablePointer<CChar>?
nonisolated(unsafe) private var previousActions: [Int32: sigaction] = [:]

func removeTemporaryFileOnInterrupt(_ output: String) {
    interruptedTemporaryPath = strdup(AtomicFileWriter.temporaryPath(for: output))
    var action = sigaction()
    action.__sigaction_handler.sa_handler = { signal in
        if let path = interruptedTemporaryPath { unlink(path) }
        _exit(128 + signal)
    }
    sigemptyset(&action.sa_mask)
    for signal in [SIGINT, SIGTERM] {
        var previous = sigaction()
        sigaction(signal, nil, &previous)
        // A signal the parent chose to ignore (background jobs of a script) stays ignored.
        if unsafeBitCast(previous.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self) {
            continue
        }
        previousActions[signal] = previous
        sigaction(signal, &action, nil)
    }
    // A parent may have started us with SIGINT blocked (some test runners and launchers do).
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGINT)
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
}

func restoreInterruptHandlers() {
    for (signal, var previous) in previousActions { sigaction(signal, &previous, nil) }
    previousActions = [:]
}
