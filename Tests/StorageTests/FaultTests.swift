import Glibc
import Testing
@testable import Storage

/// Mutable state for result filters (closures run on the test's own thread).
final class Attempts {
    var byOffset: [UInt64: Int] = [:]
}

/// Low-level faults injected under the backends (via the internal result filter), so the
/// retry, short-read and error paths run against real reads.
@Suite("Low-level faults")
struct LowLevelFaultTests {
    @Test(arguments: BackendConfig.all)
    func interruptsRetriesAndShortReadsAreAbsorbed(_ config: BackendConfig) throws {
        let file = try TestFile(size: 3 << 20, seed: 31)
        let backend = try config.open(file.path, queueDepth: 4, chunkSize: 256 << 10)
        let attempts = Attempts()
        BackendConfig.setFilter(backend) { offset, _, result in
            let n = attempts.byOffset[offset, default: 0]
            attempts.byOffset[offset] = n + 1
            switch n {
            case 0: return -Int(EINTR)
            case 1: return -Int(EAGAIN)
            case 2: return result > 1 ? result / 2 + 1 : result  // short: odd size, unaligned remainder
            default: return result
            }
        }
        let buffer = try AlignedBuffer(byteCount: 3 << 20)
        for (offset, length, shift) in [(0, 3 << 20, 0), (5, 1_000_000, 5), (4096, 777_777, 0), (123, 4000, 9)] {
            let dst = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[shift..<(shift + length)])
            try backend.read(into: dst, at: UInt64(offset))
            #expect(file.matches(dst, at: offset), "offset \(offset) length \(length)")
        }
        #expect(attempts.byOffset.values.contains { $0 >= 3 })  // EINTR, EAGAIN, short, ...
    }

    @Test(arguments: BackendConfig.all)
    func ioErrorsFailOnlyTheirRequest(_ config: BackendConfig) throws {
        let file = try TestFile(size: 4 << 20, seed: 32)
        let backend = try config.open(file.path, queueDepth: 4, chunkSize: 64 << 10)
        let bad: ClosedRange<UInt64> = 1_500_000...1_500_001
        BackendConfig.setFilter(backend) { offset, length, result in
            let range = offset..<(offset + UInt64(length))
            return range.contains(bad.lowerBound) ? -Int(EIO) : result
        }
        let pool = try AlignedBuffer(byteCount: 4 << 20)
        // Request 1 spans many chunks, one of which fails; the others don't touch it.
        let requests = [
            ReadRequest(offset: 0, length: 1 << 20, destination: pool.baseAddress, tag: 0),
            ReadRequest(offset: 1 << 20, length: 2 << 20, destination: pool.baseAddress + (1 << 20), tag: 1),
            ReadRequest(offset: 3 << 20, length: 1 << 20, destination: pool.baseAddress + (3 << 20), tag: 2),
            ReadRequest(offset: 1_499_999, length: 3, destination: pool.baseAddress + 100, tag: 3),
        ]
        let results = try runAll(backend, requests)
        #expect(results.count == 4)
        #expect(results[0]! == nil)
        #expect(results[2]! == nil)
        #expect(results[1]! == .readFailed(path: file.path, offset: 1 << 20, length: 2 << 20, errno: EIO))
        #expect(results[3]! == .readFailed(path: file.path, offset: 1_499_999, length: 3, errno: EIO))
        #expect(file.matches(UnsafeRawBufferPointer(start: pool.baseAddress + (3 << 20), count: 1 << 20), at: 3 << 20))
        // The backend stays usable after failures.
        BackendConfig.setFilter(backend, nil)
        #expect(try backend.readBytes(at: 1_499_990, count: 20) == Array(file.slice(1_499_990, 20)))
    }

    @Test(arguments: BackendConfig.all)
    func endlessInterruptsAndZeroReadsGiveUp(_ config: BackendConfig) throws {
        let file = try TestFile(size: 64 << 10, seed: 33)
        let backend = try config.open(file.path)
        BackendConfig.setFilter(backend) { _, _, _ in -Int(EINTR) }
        #expect(throws: StorageError.readFailed(path: file.path, offset: 0, length: 10, errno: EINTR)) {
            _ = try backend.readBytes(at: 0, count: 10)
        }
        // A read that keeps returning 0 although the file is long enough is not an EOF.
        BackendConfig.setFilter(backend) { _, _, _ in 0 }
        #expect(throws: StorageError.readFailed(path: file.path, offset: 4096, length: 8192, errno: EIO)) {
            _ = try backend.readBytes(at: 4096, count: 8192)
        }
    }

    @Test(arguments: BackendConfig.all.filter(\.direct))
    func directRefusalFallsBackToBuffered(_ config: BackendConfig) throws {
        let file = try TestFile(size: 1 << 20, seed: 34)
        let backend = try config.open(file.path)
        #expect(backend.isDirect)
        // Some filesystems accept O_DIRECT at open and reject the transfers (EINVAL).
        BackendConfig.setFilter(backend) { [weak backend] _, _, result in
            backend?.isDirect == true ? -Int(EINVAL) : result
        }
        let buffer = try AlignedBuffer(byteCount: 256 << 10)
        try backend.read(into: buffer.bytes, at: 4096)
        #expect(file.matches(buffer.bytes, at: 4096))
        #expect(!backend.isDirect)
        #expect(try backend.readBytes(at: 3, count: 5000) == Array(file.slice(3, 5000)))
    }
}

@Suite("FaultInjectingBackend")
struct FaultInjectingBackendTests {
    @Test(arguments: BackendConfig.all)
    func injectsEIOPerRule(_ config: BackendConfig) throws {
        let file = try TestFile(size: 1 << 20, seed: 41)
        let faulty = FaultInjectingBackend(wrapping: try config.open(file.path)) { _, index in
            index % 3 == 1 ? .eio : .none
        }
        #expect(faulty.kind == config.kind)
        #expect(faulty.path == file.path)
        let pool = try AlignedBuffer(byteCount: 12 * 10_000)
        var requests: [ReadRequest] = []
        for i in 0..<12 {
            // The same tag twice on purpose: completions carry the caller's tags back untouched.
            requests.append(ReadRequest(offset: UInt64(i * 50_000 + 7), length: 10_000, destination: pool.baseAddress + i * 10_000, tag: UInt64(i % 6)))
        }
        try faulty.submit(requests)
        #expect(faulty.pending == 12)
        var completions: [ReadCompletion] = []
        while faulty.pending > 0 { completions += try faulty.reap(minimum: 1) }
        #expect(completions.count == 12)
        let failures = completions.filter { $0.error != nil }
        #expect(failures.count == 4)
        for f in failures {
            guard case let .readFailed(path, _, length, e)? = f.error else { Issue.record("\(String(describing: f.error))"); continue }
            #expect(path == file.path && length == 10_000 && e == EIO)
        }
        #expect(faulty.injectedCount == 4)
        #expect(faulty.requestCount == 12)
        for i in 0..<12 where i % 3 != 1 {
            #expect(file.matches(UnsafeRawBufferPointer(start: pool.baseAddress + i * 10_000, count: 10_000), at: i * 50_000 + 7))
        }
        // readBatch reports the first failure.
        faulty.rule = { _, _ in .error(.injected("disk on fire")) }
        #expect(throws: StorageError.injected("disk on fire")) { _ = try faulty.readBytes(at: 0, count: 1) }
    }

    @Test(arguments: [StorageBackendKind.ioUring, .pread])
    func shortReadsAndTruncation(_ kind: StorageBackendKind) throws {
        let file = try TestFile(size: 1 << 20, seed: 42)
        let faulty = FaultInjectingBackend(wrapping: try BackendConfig(kind: kind, direct: true).open(file.path))
        var out = [UInt8](repeating: 0, count: 10_000)

        faulty.rule = { _, _ in .shortRead(bytes: 3000) }
        try out.withUnsafeMutableBytes { raw in
            do {
                try faulty.read(into: raw, at: 5000)
                Issue.record("short read succeeded")
            } catch let e as StorageError {
                #expect(e == .unexpectedEndOfFile(path: file.path, offset: 5000, length: 10_000, fileSize: 8000))
            }
        }
        // The bytes that did "arrive" are real.
        #expect(out[0..<3000] == file.slice(5000, 3000))

        faulty.rule = { _, _ in .truncate(fileSize: 100_000) }
        #expect(try faulty.readBytes(at: 90_000, count: 10_000) == Array(file.slice(90_000, 10_000)))
        #expect(throws: StorageError.unexpectedEndOfFile(path: file.path, offset: 95_000, length: 10_000, fileSize: 100_000)) {
            _ = try faulty.readBytes(at: 95_000, count: 10_000)
        }
        #expect(throws: StorageError.unexpectedEndOfFile(path: file.path, offset: 200_000, length: 1, fileSize: 100_000)) {
            _ = try faulty.readBytes(at: 200_000, count: 1)
        }
        faulty.rule = { _, _ in .shortRead(bytes: 0) }
        #expect(throws: StorageError.unexpectedEndOfFile(path: file.path, offset: 7, length: 1, fileSize: 7)) {
            _ = try faulty.readBytes(at: 7, count: 1)
        }
        // Real errors from the inner backend pass through unchanged.
        faulty.rule = { _, _ in .none }
        #expect(throws: StorageError.unexpectedEndOfFile(path: file.path, offset: UInt64(file.size), length: 1, fileSize: UInt64(file.size))) {
            _ = try faulty.readBytes(at: UInt64(file.size), count: 1)
        }
    }

    @Test(arguments: [StorageBackendKind.ioUring, .pread])
    func delaysHoldCompletions(_ kind: StorageBackendKind) throws {
        let file = try TestFile(size: 256 << 10, seed: 43)
        let faulty = FaultInjectingBackend(wrapping: try BackendConfig(kind: kind, direct: true).open(file.path)) { r, _ in
            r.tag == 1 ? .delay(.milliseconds(80)) : .none
        }
        let pool = try AlignedBuffer(byteCount: 2 * 4096)
        let clock = ContinuousClock()
        let start = clock.now
        try faulty.submit([
            ReadRequest(offset: 0, length: 4096, destination: pool.baseAddress, tag: 0),
            ReadRequest(offset: 4096, length: 4096, destination: pool.baseAddress + 4096, tag: 1),
        ])
        var first: [ReadCompletion] = []
        while first.isEmpty { first = try faulty.reap(minimum: 1) }
        #expect(first.map(\.tag) == [0])
        #expect(faulty.pending == 1)
        #expect(try faulty.reap(minimum: 0).isEmpty)  // polling does not wait for the delay
        let second = try faulty.reap(minimum: 1)
        #expect(second.map(\.tag) == [1] && second[0].error == nil)
        #expect(clock.now - start >= .milliseconds(80))
        #expect(file.matches(pool.bytes, at: 0))
    }

    @Test func registrationIsForwarded() throws {
        let file = try TestFile(size: 64 << 10, seed: 44)
        let inner = try IOUringBackend(path: file.path)
        let faulty = FaultInjectingBackend(wrapping: inner)
        let pool = try AlignedBuffer(byteCount: 64 << 10)
        try faulty.registerBuffers([pool.bytes])
        #expect(inner.registeredSegmentCount == 1)
        try faulty.read(into: pool.bytes, at: 0)
        #expect(inner.fixedReadCount == 1)
        try faulty.unregisterBuffers()
        #expect(inner.registeredSegmentCount == 0)
    }
}
