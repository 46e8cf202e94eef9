import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `moe serve` as a user starts it: a process that prints where it listens, serves the
/// official openai client, and on SIGTERM ends its streams and exits 0.
@Suite("moe serve command", .serialized)
struct ServeCommandTests {
    /// A `moe serve` subprocess on a free port.
    final class ServeProcess: @unchecked Sendable {
        let process = Process()
        private let lock = NSLock()
        private var stderrText = ""
        private(set) var port = 0

        init(_ arguments: [String]) throws {
            process.executableURL = moeExecutable
            process.arguments = ["serve", "--port", "0"] + arguments
            let err = Pipe()
            process.standardError = err
            process.standardOutput = FileHandle.nullDevice
            err.fileHandleForReading.readabilityHandler = { [weak self] handle in
                let data = handle.availableData
                guard let self, !data.isEmpty else { return }
                self.lock.withLock { self.stderrText += String(decoding: data, as: UTF8.self) }
            }
            try process.run()
        }

        var stderr: String { lock.withLock { stderrText } }

        /// Waits for the "listening on" line and a healthy model.
        func waitUntilReady() async throws {
            for _ in 0..<500 {
                if port == 0, let range = stderr.range(of: "listening on http://127.0.0.1:") {
                    port = Int(stderr[range.upperBound...].prefix { $0.isNumber }) ?? 0
                }
                if port != 0, (try? await offPool { [port] in
                    try TestServer.curl(method: "GET", url: "http://127.0.0.1:\(port)/health", body: nil, headers: [:]) })?.status == 200 {
                    return
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            throw HarnessError(description: "moe serve did not become ready: \(stderr)")
        }

        /// Waits for the process to exit, at most 30 s (then kills it: a hang is a failure,
        /// never a stuck test run).
        func waitForExit() async throws -> Int32 {
            let deadline = ContinuousClock.now + .seconds(30)
            while process.isRunning {
                guard ContinuousClock.now < deadline else {
                    kill(process.processIdentifier, SIGKILL)
                    throw HarnessError(description: "moe serve did not exit within 30 s: \(stderr)")
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            return process.terminationStatus
        }
    }

    static var python: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".venv/bin/python").path
    }

    @Test("the official openai client: models, completions and chat, whole and streamed, n, stop, errors, metrics")
    func openAIClient() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.python),
                     "no \(Self.python): run tools/setup.sh, which makes it with the openai package")
        let model = TestServer.model("tiny-qwen3moe.q8_0.gguf")
        let prompt = "The openai client asks"
        let generated = try await runMoe(["generate", "-m", model, "-p", prompt, "-n", "20", "--temp", "0", "--threads", "2"])
        #expect(generated.status == 0)
        let expected = try TemporaryDirectory(prefix: "moe-openai")
        defer { expected.remove() }
        let file = expected.path("expected.json")
        try JSONSerialization.data(withJSONObject: ["prompt": prompt, "max_tokens": 20, "text": String(generated.stdout.dropLast())])
            .write(to: URL(fileURLWithPath: file))
        let server = try ServeProcess(["-m", model, "--api-key", "test-key", "--alias", "served-model", "--threads", "2",
                                       "--parallel", "4"])
        defer { if server.process.isRunning { server.process.terminate() } }
        try await server.waitUntilReady()
        let result = try await offPool { [port = server.port] () -> (Int32, String) in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Self.python)
            p.arguments = [URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Clients/openai_client_check.py").path,
                           "http://127.0.0.1:\(port)", "test-key", file]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            try p.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, text)
        }
        #expect(result.0 == 0, "\(result.1)\n--- server:\n\(server.stderr)")
        kill(server.process.processIdentifier, SIGTERM)
        #expect(try await server.waitForExit() == 0)
        // One structured line per request, with its tokens and times.
        #expect(server.stderr.contains("route=/v1/chat/completions status=200"), "\(server.stderr)")
        #expect(server.stderr.contains("ttft_ms="))
    }

    @Test("SIGTERM during streams: no new requests, streams end with a final chunk and [DONE] within the grace period, exit 0")
    func sigtermDuringStreams() async throws {
        let server = try ServeProcess(["-m", TestServer.model("tiny-qwen3moe.q8_0.gguf"), "--threads", "2", "--shutdown-timeout", "0.5"])
        defer { if server.process.isRunning { server.process.terminate() } }
        try await server.waitUntilReady()
        let url = "http://127.0.0.1:\(server.port)/v1/completions"
        let streams = (0..<3).map { i in
            Task {
                try await offPool {
                    try TestServer.curl(method: "POST", url: url, body: Data("{\"prompt\": \"Term \(i)\", \"max_tokens\": 500, \"ignore_eos\": true, \"stream\": true}".utf8),
                                        headers: [:])
                }
            }
        }
        // Wait until all three stream, then SIGTERM.
        for _ in 0..<200 {
            if server.stderr.contains("model loaded"), (try? await offPool { [port = server.port] in
                try TestServer.curl(method: "GET", url: "http://127.0.0.1:\(port)/metrics", body: nil, headers: [:]).text
            })?.contains("moe_active_sequences 3.0") == true { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        let signalled = ContinuousClock.now
        kill(server.process.processIdentifier, SIGTERM)
        for s in streams {
            let reply = try await s.value
            let (events, done) = try reply.events()
            #expect(done, "\(reply.text.suffix(300))")
            let reasons = events.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
            #expect(reasons.count == 1)
        }
        #expect(try await server.waitForExit() == 0, "\(server.stderr)")
        #expect(ContinuousClock.now - signalled < .seconds(10))
    }

    @Test("a model that cannot be loaded: the server exits 1 with the error naming the file")
    func modelThatFailsToLoad() async throws {
        let dir = try TemporaryDirectory(prefix: "moe-serve-bad")
        defer { dir.remove() }
        let bad = dir.path("bad.gguf")
        try Data("GGUF not really a model".utf8).write(to: URL(fileURLWithPath: bad))
        let server = try ServeProcess(["-m", bad])
        #expect(try await server.waitForExit() == 1)
        #expect(server.stderr.contains("error:"), "\(server.stderr)")
        #expect(server.stderr.contains("bad.gguf"), "\(server.stderr)")
    }

    @Test("while the model loads (its file a pipe no one writes yet) /health and completions say 503; SIGTERM still exits 0 at once")
    func healthWhileLoading() async throws {
        let dir = try TemporaryDirectory(prefix: "moe-serve-fifo")
        defer { dir.remove() }
        let fifo = dir.path("model.gguf")
        try #require(mkfifo(fifo, 0o600) == 0)
        let server = try ServeProcess(["-m", fifo])
        defer { if server.process.isRunning { server.process.terminate() } }
        var port = 0
        for _ in 0..<500 where port == 0 {
            if let range = server.stderr.range(of: "listening on http://127.0.0.1:") {
                port = Int(server.stderr[range.upperBound...].prefix { $0.isNumber }) ?? 0
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        try #require(port != 0, "\(server.stderr)")
        let url = "http://127.0.0.1:\(port)"
        let health = try await offPool { try TestServer.curl(method: "GET", url: url + "/health", body: nil, headers: [:]) }
        #expect(health.status == 503)
        #expect(try health.error()["code"] as? String == "model_loading")
        let completion = try await offPool {
            try TestServer.curl(method: "POST", url: url + "/v1/completions", body: Data("{\"prompt\": \"x\"}".utf8),
                                headers: [:])
        }
        #expect(completion.status == 503)
        let signalled = ContinuousClock.now
        kill(server.process.processIdentifier, SIGTERM)
        #expect(try await server.waitForExit() == 0)
        #expect(ContinuousClock.now - signalled < .seconds(5))
    }
}
