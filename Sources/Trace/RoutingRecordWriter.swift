#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a routing record (see `RoutingRecordFormat`): the header at creation, then lines
/// as they are appended, through a buffer flushed every `bufferBytes` and at `close`.
public final class RoutingRecordWriter {
    public let path: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private let bufferBytes: Int
    /// The first write failure; every later call throws it again.
    private var failure: RoutingRecordError?

    /// Creates (or truncates) `path` and writes `header`.
    public init(path: String, header: RoutingRecordHeader, bufferBytes: Int = 256 << 10) throws(RoutingRecordError) {
        self.path = path
        self.bufferBytes = max(bufferBytes, 1)
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .cannotCreate(path: path, reason: String(cString: strerror(errno))) }
        buffer.reserveCapacity(self.bufferBytes + 4096)
        appendHeader(header)
        try flushIfFull()
    }

    deinit {
        if fd >= 0 { try? close() }
    }

    public var isOpen: Bool { fd >= 0 }

    /// Appends one record line.
    public func append(_ r: RoutingRecord) throws(RoutingRecordError) {
        if let failure { throw failure }
        precondition(fd >= 0, "append to a closed routing record")
        put("{\"batch\":"); put(r.batch)
        put(",\"pos\":"); put(r.position)
        put(",\"token\":"); put(r.token)
        put(",\"layer\":"); put(r.layer)
        put(",\"experts\":"); put(r.experts)
        put(",\"weights\":"); put(r.weights)
        if let p = r.predicted { put(",\"predicted\":"); put(p) }
        if let p = r.predictedProbabilities { put(",\"predicted_probs\":"); put(p) }
        put("}\n")
        try flushIfFull()
    }

    /// Writes what is buffered.
    public func flush() throws(RoutingRecordError) {
        if let failure { throw failure }
        var done = 0
        while done < buffer.count {
            let n = buffer.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                let e = RoutingRecordError.cannotWrite(path: path, reason: String(cString: strerror(errno)))
                failure = e
                throw e
            }
            done += n
        }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Flushes and closes the file; further appends are a programming error.
    public func close() throws(RoutingRecordError) {
        guard fd >= 0 else { return }
        defer { fd = -1 }
        do { try flush() } catch {
            _ = Glibc.close(fd)
            throw error
        }
        if Glibc.close(fd) != 0 {
            throw .cannotWrite(path: path, reason: String(cString: strerror(errno)))
        }
    }

    private func flushIfFull() throws(RoutingRecordError) {
        if buffer.count >= bufferBytes { try flush() }
    }

    private func appendHeader(_ h: RoutingRecordHeader) {
        put("{\"format\":"); put(string: h.format)
        put(",\"version\":"); put(h.version)
        put(",\"model\":"); put(string: h.model)
        put(",\"architecture\":"); put(string: h.architecture)
        put(",\"layers\":"); put(h.layers)
        put(",\"moe_layers\":"); put(h.moeLayers)
        put(",\"experts\":"); put(h.experts)
        put(",\"experts_per_token\":"); put(h.expertsPerToken)
        put("}\n")
    }

    // MARK: JSON pieces

    private func put(_ s: StaticString) {
        s.withUTF8Buffer { buffer.append(contentsOf: $0) }
    }

    private func put(_ i: Int) { buffer.append(contentsOf: String(i).utf8) }

    private func put(_ x: Float) {
        // Swift prints the shortest decimal that reads back to the same Float.
        if x.isFinite { buffer.append(contentsOf: x.description.utf8) } else { put("null") }
    }

    private func put(_ a: [Int]) {
        buffer.append(UInt8(ascii: "["))
        for (i, v) in a.enumerated() {
            if i > 0 { buffer.append(UInt8(ascii: ",")) }
            put(v)
        }
        buffer.append(UInt8(ascii: "]"))
    }

    private func put(_ a: [Float]) {
        buffer.append(UInt8(ascii: "["))
        for (i, v) in a.enumerated() {
            if i > 0 { buffer.append(UInt8(ascii: ",")) }
            put(v)
        }
        buffer.append(UInt8(ascii: "]"))
    }

    private func put(string s: String) {
        buffer.append(UInt8(ascii: "\""))
        for u in s.unicodeScalars {
            switch u {
            case "\"": put("\\\"")
            case "\\": put("\\\\")
            case "\n": put("\\n")
            case "\r": put("\\r")
            case "\t": put("\\t")
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    buffer.append(contentsOf: ("\\u" + String(repeating: "0", count: 4 - hex.count) + hex).utf8)
                } else {
                    buffer.append(contentsOf: String(u).utf8)
                }
            }
        }
        buffer.append(UInt8(ascii: "\""))
    }
}
