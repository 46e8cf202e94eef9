import ArgumentParser
import Engine
import Experts
import Foundation
import Logging
import Server

/// A synchronous command like the others, so that every command's code runs on the main
/// thread (`--cpus` sets the affinity of the thread that builds the runtime): the server's
/// async work runs on the concurrency pool while the main thread waits for it.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model over HTTP in the OpenAI dialect (chat and text completions, streaming), batching every client's sequences together.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var sampling: SamplingOptions

    @Option(help: "Address to listen on (loopback unless you say otherwise).")
    var host = "127.0.0.1"
    @Option(help: "Port to listen on (0: any free port, printed once listening).")
    var port = 8080
    @Option(help: "Sequences decoded at once; a request's n choices count as n. The KV pool and the automatic expert budget are sized for them.")
    var parallel = 4
    @Option(help: "Requests that may wait for a free sequence; more are refused with 429.")
    var queue = 64
    @Option(name: .customLong("queue-timeout"), help: "Seconds a request may wait for a free sequence before it is refused with 503.")
    var queueTimeout: Double = 60
    @Option(name: .customLong("prompt-chunk"), help: "Prompt tokens evaluated per step, between the running sequences' decode steps.")
    var promptChunk = 128
    @Option(name: .customLong("max-body"), help: "Largest request body accepted, e.g. 4M.")
    var maxBody = "4M"
    @Option(name: .customLong("read-timeout"), help: "Seconds a client has to send its request body.")
    var readTimeout: Double = 30
    @Option(name: .customLong("idle-timeout"), help: "Seconds after which a connection with nothing to read or write is closed.")
    var idleTimeout: Double = 60
    @Option(name: .customLong("shutdown-timeout"), help: "Seconds running streams may go on after SIGTERM before they are ended.")
    var shutdownTimeout: Double = 10
    @Option(name: .customLong("api-key"), help: "Require 'Authorization: Bearer KEY' on every route but /health.")
    var apiKey: String?
    @Option(name: .customLong("api-key-file"), help: "Read the API key from this file (its first line).")
    var apiKeyFile: String?
    @Option(help: "The model id clients see (default: the file's name).")
    var alias: String?

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        guard parallel >= 1 && parallel <= 256 else { throw ValidationError("--parallel must be between 1 and 256") }
        guard queue >= 0 else { throw ValidationError("--queue must be ≥ 0") }
        guard promptChunk >= 1 else { throw ValidationError("--prompt-chunk must be ≥ 1") }
        for (name, value) in [("--queue-timeout", queueTimeout), ("--read-timeout", readTimeout), ("--idle-timeout", idleTimeout),
                              ("--shutdown-timeout", shutdownTimeout)] {
            guard value.isFinite && value >= 0 else { throw ValidationError("\(name) must be a number of seconds ≥ 0") }
        }
        _ = try maxBodyBytes()
        guard apiKey == nil || apiKeyFile == nil else { throw ValidationError("give --api-key or --api-key-file, not both") }
    }

    func maxBodyBytes() throws -> Int {
        try byteCountFlag(maxBody, flag: "--max-body", example: "4M", allowZero: false)
    }

    func run() throws {
        let runtime = try options.configuration(sequences: parallel, sampling: sampling.parameters)
        let name = alias ?? (runtime.modelPath.split(separator: "/").last.map(String.init) ?? runtime.modelPath)
        var server = ServerConfiguration(modelName: name)
        server.host = host
        server.port = port
        server.scheduler.parallel = parallel
        server.scheduler.queueLimit = queue
        server.scheduler.queueTimeout = .milliseconds(Int64(queueTimeout * 1000))
        server.scheduler.promptChunk = promptChunk
        server.maxBodyBytes = try maxBodyBytes()
        server.readTimeout = .milliseconds(Int64(readTimeout * 1000))
        server.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        server.shutdownTimeout = .milliseconds(Int64(shutdownTimeout * 1000))
        server.apiKey = try readAPIKey()
        if server.apiKey == nil && !Self.isLoopback(host) {
            printError("warning: listening on \(host) without --api-key: anyone who can reach this address can use the model")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        let logger = Logger(label: "moe.serve")
        let modelServer = ModelServer(configuration: server, runtime: runtime, logger: logger)
        let shownHost = host
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do {
                try await modelServer.run { port in
                    printError("moe serve: listening on http://\(shownHost):\(port)")
                }
            } catch let error as ServerError {
                outcome.set("error: \(error.description)")
            } catch {
                outcome.set("error: \(error)")
            }
            done.signal()
        }
        done.wait()
        if let message = outcome.get() {
            printError(message)
            throw ExitCode.failure
        }
    }

    /// What the server's task ended with, handed to the waiting main thread.
    private final class Outcome: @unchecked Sendable {
        private let lock = NSLock()
        private var message: String?
        func set(_ m: String) { lock.withLock { message = m } }
        func get() -> String? { lock.withLock { message } }
    }



    private func readAPIKey() throws -> String? {
        if let apiKey {
            guard !apiKey.isEmpty else { throw ValidationError("--api-key is empty") }
            return apiKey
        }
        guard let apiKeyFile else { return nil }
        guard let text = try? String(contentsOfFile: apiKeyFile, encoding: .utf8) else {
            printError("error: cannot read the API key file \(apiKeyFile)")
            throw ExitCode.failure
        }
        let key = text.split(whereSeparator: \.isNewline).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard !key.isEmpty else {
            printError("error: the API key file \(apiKeyFile) is empty")
            throw ExitCode.failure
        }
        return key
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "127.0.0.1" || host == "::1" || host == "localhost" || host.hasPrefix("127.")
    }
}
