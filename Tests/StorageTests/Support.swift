import Glibc
import Testing
import TestSupport
@testable import Storage

/// A temporary file under /tmp with known pseudo-random content; removed on deinit.
final class TestFile {
    let path: String
    let bytes: [UInt8]
    var size: Int { bytes.count }

    init(size: Int, seed: UInt64 = 1) throws {
        var rng = SplitMix64(seed: seed)
        var data = [UInt8](repeating: 0, count: size)
        data.withUnsafeMutableBytes { raw in
            let words = raw.count / 8
            let p = raw.baseAddress!
            for i in 0..<words { (p + i * 8).storeBytes(of: rng.next(), toByteOffset: 0, as: UInt64.self) }
            for i in (words * 8)..<raw.count { raw[i] = UInt8(truncatingIfNeeded: rng.next()) }
        }
        bytes = data
        var template = Array("/tmp/moe-storage-test-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw StorageError.openFailed(path: "/tmp/moe-storage-test-XXXXXX", errno: errno) }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { close(fd) }
        var written = 0
        try data.withUnsafeBytes { raw in
            while written < raw.count {
                let n = write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw StorageError.readFailed(path: path, offset: UInt64(written), length: raw.count, errno: errno)
                }
                written += n
            }
        }
    }

    deinit { unlink(path) }

    func truncate(to newSize: Int) {
        let rc = Glibc.truncate(path, off_t(newSize))
        #expect(rc == 0, "truncate failed: errno \(errno)")
    }

    func slice(_ offset: Int, _ length: Int) -> ArraySlice<UInt8> { bytes[offset..<(offset + length)] }

    /// Whether `buffer` holds the file's bytes at `offset` (memcmp: debug-build
    /// element-wise comparison would dominate the test time).
    func matches(_ buffer: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        guard offset >= 0, offset + buffer.count <= bytes.count else { return false }
        if buffer.count == 0 { return true }
        return bytes.withUnsafeBytes { memcmp($0.baseAddress! + offset, buffer.baseAddress!, buffer.count) == 0 }
    }

    func matches(_ buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Bool {
        matches(UnsafeRawBufferPointer(buffer), at: offset)
    }
}

/// One backend configuration the shared tests run against.
struct BackendConfig: Sendable, CustomTestStringConvertible {
    var kind: StorageBackendKind
    var direct: Bool
    var testDescription: String { "\(kind.rawValue)\(direct ? "+direct" : "+buffered")" }

    static let all: [BackendConfig] = [
        BackendConfig(kind: .ioUring, direct: true), BackendConfig(kind: .ioUring, direct: false),
        BackendConfig(kind: .pread, direct: true), BackendConfig(kind: .pread, direct: false),
    ]

    func open(_ path: String, queueDepth: Int = 16, chunkSize: Int = IOUringBackend.defaultChunkSize) throws -> any StorageBackend {
        switch kind {
        case .ioUring: return try IOUringBackend(path: path, direct: direct, queueDepth: queueDepth, chunkSize: chunkSize)
        case .pread: return try PReadBackend(path: path, direct: direct, queueDepth: queueDepth, chunkSize: chunkSize)
        }
    }

    /// Sets the low-level result filter (internal test hook) on either concrete backend.
    static func setFilter(_ backend: any StorageBackend, _ filter: ReadResultFilter?) {
        if let b = backend as? IOUringBackend { b.resultFilter = filter }
        if let b = backend as? PReadBackend { b.resultFilter = filter }
    }
}

/// Reads everything in `requests` (submitting all at once) and returns completions by tag.
func runAll(_ backend: any StorageBackend, _ requests: [ReadRequest]) throws -> [UInt64: StorageError?] {
    try backend.submit(requests)
    var results: [UInt64: StorageError?] = [:]
    var guardRounds = 0
    while results.count < requests.count {
        let done = try backend.reap(minimum: 1)
        for c in done {
            #expect(results[c.tag] == nil, "tag \(c.tag) completed twice")
            results[c.tag] = c.error
        }
        guardRounds += 1
        if guardRounds > 1_000_000 { Issue.record("no progress"); break }
    }
    #expect(backend.pending == 0)
    return results
}

func expectEOF(_ error: StorageError?, fileSize: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
    guard case let .unexpectedEndOfFile(_, _, _, size)? = error else {
        Issue.record("expected unexpectedEndOfFile, got \(String(describing: error))", sourceLocation: sourceLocation)
        return
    }
    #expect(size == fileSize, sourceLocation: sourceLocation)
}
