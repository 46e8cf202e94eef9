import ArgumentParser
import Storage

@main
struct MoE: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe",
        abstract: "Mixture-of-Experts inference runtime for models larger than memory.",
        version: "0.1.0",
        subcommands: [Inspect.self, Tokenize.self, Logits.self, Generate.self, Chat.self, Perplexity.self, Bench.self, Pack.self,
                      TraceCommand.self, Serve.self]
    )
}

/// Options shared by every command that reads a model file.
struct StorageOptions: ParsableArguments {
    @Option(name: .long, help: "I/O backend: auto (io_uring, falling back to pread), io_uring or pread.")
    var ioBackend: StorageBackendPreference = .automatic
}
