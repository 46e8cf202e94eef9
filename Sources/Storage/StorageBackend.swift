/// The storage layer's contract: positional reads from one file, submitted in batches,
/// completed asynchronously, with failures reported per request.
///
/// Two implementations exist: `IOUringBackend` (liburing, O_DIRECT where it can) and
/// `PReadBackend` (plain `pread`, used when io_uring is refused). `StorageFile.open`
/// picks one; both behave identically from the caller's side.

/// One positional read into caller-owned memory.
// @unchecked: `destination` is a raw pointer into caller-owned memory; handing a request
// to another thread is as safe as the caller's ownership of that memory, which the
// contract below already requires.
public struct ReadRequest: @unchecked Sendable {
    /// Byte offset in the file.
    public var offset: UInt64
    /// Number of bytes wanted; the read completes only when all arrive (short reads
    /// are retried internally; end-of-file before `length` is an error).
    public var length: Int
    /// Where the bytes go. Must stay valid until the request completes.
    public var destination: UnsafeMutableRawPointer
    /// Caller's identifier, echoed back in the completion.
    public var tag: UInt64

    public init(offset: UInt64, length: Int, destination: UnsafeMutableRawPointer, tag: UInt64) {
        self.offset = offset
        self.length = length
        self.destination = destination
        self.tag = tag
    }
}

/// The outcome of one `ReadRequest`.
public struct ReadCompletion: Sendable {
    public var tag: UInt64
    /// nil on success; otherwise why the read failed.
    public var error: StorageError?

    public init(tag: UInt64, error: StorageError?) {
        self.tag = tag
        self.error = error
    }
}

public enum StorageBackendKind: String, Sendable, CaseIterable {
    case ioUring = "io_uring"
    case pread = "pread"
}

/// Errors from the storage layer. Each names the file and, where relevant, the offset.
public enum StorageError: Error, Equatable, Sendable, CustomStringConvertible {
    case openFailed(path: String, errno: Int32)
    case statFailed(path: String, errno: Int32)
    case ioUringUnavailable(errno: Int32)
    case readFailed(path: String, offset: UInt64, length: Int, errno: Int32)
    /// The file ended before the requested range did.
    case unexpectedEndOfFile(path: String, offset: UInt64, length: Int, fileSize: UInt64)
    case invalidRequest(String)
    case allocationFailed(bytes: Int)
    /// A fault injected by a test backend.
    case injected(String)
    /// The io_uring instance itself failed after it was set up (submission, waiting,
    /// buffer registration); per-read failures are `readFailed` instead.
    case ioUringFailed(path: String, operation: String, errno: Int32)
    /// Writing a file (`AtomicFileWriter`) failed; `operation` names the step ("creating",
    /// "writing at offset N of", "syncing", ...), read before the path.
    case writeFailed(path: String, operation: String, errno: Int32)

    public var description: String {
        switch self {
        case let .openFailed(path, e): return "cannot open \(path): \(errnoText(e))"
        case let .statFailed(path, e): return "cannot stat \(path): \(errnoText(e))"
        case let .ioUringUnavailable(e): return "io_uring is unavailable: \(errnoText(e))"
        case let .readFailed(path, off, len, e):
            return "read of \(len) bytes at offset \(off) in \(path) failed: \(errnoText(e))"
        case let .unexpectedEndOfFile(path, off, len, size):
            return "\(path) is \(size) bytes; a read of \(len) bytes at offset \(off) runs past its end (file truncated?)"
        case let .invalidRequest(why): return "invalid read request: \(why)"
        case let .writeFailed(path, operation, e): return "\(operation) \(path) failed: \(errnoText(e))"
        case let .allocationFailed(bytes): return "cannot allocate \(bytes) bytes of aligned memory"
        case let .injected(why): return "injected fault: \(why)"
        case let .ioUringFailed(path, op, e): return "io_uring \(op) for \(path) failed: \(errnoText(e))"
        }
    }
}

/// What identifies the contents of an open file: its size and modification time. A file
/// overwritten in place shows a new version; one replaced by rename does not affect the
/// descriptor a backend holds, which keeps reading the old contents.
public struct FileVersion: Equatable, Sendable {
    public var size: UInt64
    public var modifiedSeconds: Int64
    public var modifiedNanoseconds: Int64

    public init(size: UInt64, modifiedSeconds: Int64, modifiedNanoseconds: Int64) {
        self.size = size
        self.modifiedSeconds = modifiedSeconds
        self.modifiedNanoseconds = modifiedNanoseconds
    }
}

/// A readable file behind some I/O mechanism.
///
/// Not thread-safe: one thread submits and reaps. (The expert loader owns one per file.)
public protocol StorageBackend: AnyObject {
    var kind: StorageBackendKind { get }
    var path: String { get }
    var fileSize: UInt64 { get }
    /// Whether reads go around the page cache (O_DIRECT).
    var isDirect: Bool { get }

    /// Queues reads and starts them; returns without waiting.
    /// Requests beyond the backend's queue depth are held and started as earlier ones finish.
    func submit(_ requests: [ReadRequest]) throws

    /// Returns completions: waits until at least `minimum` are available (0 = poll).
    /// Never returns more completions than requests submitted.
    func reap(minimum: Int) throws -> [ReadCompletion]

    /// Number of submitted requests not yet reaped.
    var pending: Int { get }

    /// Declares long-lived memory (e.g. the expert pool) that reads will target, so a
    /// backend that can (io_uring) pins it once and reads into it with READ_FIXED.
    /// Replaces any earlier registration. Backends without the notion accept and ignore it.
    /// The memory must stay valid until `unregisterBuffers()` or the backend's end.
    func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws

    /// Drops the registration made by `registerBuffers`. Only with nothing in flight.
    func unregisterBuffers() throws

    /// The open file's current version (one fstat), so long-running readers can notice a
    /// file rewritten under them; nil where there is no file.
    func currentVersion() -> FileVersion?
}

extension StorageBackend {
    public func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws {}
    public func unregisterBuffers() throws {}
    public func currentVersion() -> FileVersion? { nil }
}

extension StorageBackend {
    /// Reads exactly `buffer.count` bytes at `offset`, synchronously.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard buffer.count > 0, let base = buffer.baseAddress else { return }
        try readBatch([ReadRequest(offset: offset, length: buffer.count, destination: base, tag: 0)])
    }

    /// Submits all requests and waits for all of them; throws the first failure.
    /// Only for callers with nothing else in flight on this backend.
    public func readBatch(_ requests: [ReadRequest]) throws {
        if requests.isEmpty { return }
        guard pending == 0 else {
            throw StorageError.invalidRequest("synchronous read while \(pending) asynchronous reads are in flight")
        }
        try submit(requests)
        var firstError: StorageError?
        var outstanding = requests.count
        while outstanding > 0 {
            let done = try reap(minimum: 1)
            outstanding -= done.count
            if firstError == nil { firstError = done.first(where: { $0.error != nil })?.error }
        }
        if let firstError { throw firstError }
    }

    /// Reads `count` bytes at `offset` into a new array.
    public func readBytes(at offset: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return out
    }
}

@inline(never)
func errnoText(_ e: Int32) -> String {
    #if canImport(Glibc)
    if let s = strerror(e) { return "\(String(cString: s)) (errno \(e))" }
    #endif
    return "errno \(e)"
}

#if canImport(Glibc)
import Glibc
#endif
