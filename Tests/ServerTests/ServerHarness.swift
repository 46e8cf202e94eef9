import Engine
import Foundation
import Logging
import Server
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` on a thread of its own, so that blocking work (a client process, a socket)
/// never takes one of the few threads the server's own tasks run on.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
        let thread = Thread {
            do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
        }
        thread.start()
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
}

/// A `ModelServer` in this process, on an ephemeral loopback port.
final class TestServer: @unchecked Sendable {
    let server: ModelServer
    let port: Int
    private let task: Task<Void, any Error>

    static func model(_ name: String) -> String { SharedData.path("models/\(name)") }

    /// Starts a server on `model` and waits until it listens and its model is loaded.
    static func start(model: String = "tiny-qwen3moe.q8_0.gguf", configure: (inout ServerConfiguration) -> Void = { _ in },
                      runtime: (inout RuntimeConfiguration) -> Void = { _ in }) async throws -> TestServer {
        var configuration = ServerConfiguration(modelName: "test-model")
        configuration.port = 0
        configuration.handlesSignals = false
        configuration.scheduler.parallel = 16
        configure(&configuration)
        var r = RuntimeConfiguration(modelPath: Self.model(model))
        r.threads = 2
        r.sequences = configuration.scheduler.parallel
        r.sampling = .greedy
        runtime(&r)
        var logger = Logger(label: "test.server")
        logger.logLevel = .warning
        let server = ModelServer(configuration: configuration, runtime: r, logger: logger)
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let task = Task {
            try await server.run { port in portContinuation.yield(port) }
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw HarnessError(description: "the server never listened") }
        let started = TestServer(server: server, port: port, task: task)
        for _ in 0..<300 {
            if (try? await started.request("GET", "/health").status) == 200 { return started }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw HarnessError(description: "the server's model did not load")
    }

    private init(server: ModelServer, port: Int, task: Task<Void, any Error>) {
        self.server = server
        self.port = port
        self.task = task
    }

    /// Shuts the server down gracefully and waits until it stopped.
    func stop() async throws {
        await server.shutdown()
        try await task.value
    }

    struct Reply: Sendable {
        var status: Int
        var body: Data
        var headers: [String: String]
        var text: String { String(decoding: body, as: UTF8.self) }
        func json() throws -> [String: Any] {
            guard let object = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
                throw HarnessError(description: "not a JSON object: \(text)")
            }
            return object
        }
        /// The `error` object of an OpenAI-shaped error body.
        func error() throws -> [String: Any] {
            guard let e = try json()["error"] as? [String: Any] else { throw HarnessError(description: "no error object: \(text)") }
            return e
        }
        /// The JSON objects of a Server-Sent Events body, and whether it ended with [DONE].
        func events() throws -> (objects: [[String: Any]], done: Bool) {
            var objects: [[String: Any]] = []
            var done = false
            for line in text.split(separator: "\n") where line.hasPrefix("data: ") {
                let payload = line.dropFirst(6)
                if payload == "[DONE]" { done = true; continue }
                guard let o = try JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any] else {
                    throw HarnessError(description: "an event is not an object: \(payload)")
                }
                objects.append(o)
            }
            return (objects, done)
        }
    }

    /// One request with curl, a real HTTP client.
    func request(_ method: String, _ path: String, json object: Any? = nil, body: Data? = nil,
                 headers: [String: String] = [:]) async throws -> Reply {
        let data = try object.map { try JSONSerialization.data(withJSONObject: $0) } ?? body
        let url = "http://127.0.0.1:\(port)\(path)"
        return try await offPool { try Self.curl(method: method, url: url, body: data, headers: headers) }
    }

    static func curl(method: String, url: String, body: Data?, headers: [String: String]) throws -> Reply {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moe-curl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bodyFile = dir.appendingPathComponent("body"), headerFile = dir.appendingPathComponent("headers")
        var arguments = ["-s", "-N", "-X", method, "-o", bodyFile.path, "-D", headerFile.path, "-w", "%{http_code}", "--max-time", "120"]
        if let body {
            let requestFile = dir.appendingPathComponent("request")
            try body.write(to: requestFile)
            arguments += ["--data-binary", "@\(requestFile.path)", "-H", "Content-Type: application/json"]
        }
        for (k, v) in headers { arguments += ["-H", "\(k): \(v)"] }
        arguments.append(url)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let code = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0, let status = Int(String(decoding: code, as: UTF8.self)) else {
            throw HarnessError(description: "curl \(url) failed with status \(process.terminationStatus)")
        }
        var fields: [String: String] = [:]
        for line in (try? String(contentsOf: headerFile, encoding: .utf8))?.split(separator: "\r\n") ?? [] {
            if let colon = line.firstIndex(of: ":") {
                fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return Reply(status: status, body: (try? Data(contentsOf: bodyFile)) ?? Data(), headers: fields)
    }

    /// The value of one unlabelled sample of `/metrics` (nil when absent).
    func metric(_ name: String) async throws -> Double? {
        let text = try await request("GET", "/metrics").text
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            if parts.count == 2 && parts[0] == name { return Double(parts[1]) }
        }
        return nil
    }

    /// Polls `/metrics` until `name` is `value` (true) or `seconds` passed (false).
    func waitForMetric(_ name: String, toBe value: Double, seconds: Double = 10) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            if try await metric(name) == value { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}

/// A hand-driven TCP connection, for what no well-behaved client does: bytes that are not
/// UTF-8, a body that never comes, going away mid-stream.
final class RawConnection: @unchecked Sendable {
    private let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError(description: "socket() failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw HarnessError(description: "connect() failed")
        }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }

    func send(_ text: String) { send(Array(text.utf8)) }

    /// Reads until `until` is in what was read, the peer closes, or the timeout passes.
    func read(until marker: String? = nil, limit: Int = 1 << 20) -> String {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while received.count < limit {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            received += buffer[..<n]
            if let marker, String(decoding: received, as: UTF8.self).contains(marker) { break }
        }
        return String(decoding: received, as: UTF8.self)
    }

    func close() { Glibc.close(fd) }
}


/// Runs `moe` to the end; its exit status, stdout and stderr.
func runMoe(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
    try await offPool {
        let process = Process()
        process.executableURL = moeExecutable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }
}
