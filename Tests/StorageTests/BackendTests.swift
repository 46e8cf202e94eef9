import Glibc
import Testing
import TestSupport
@testable import Storage

/// Behavior every backend shares, run against io_uring and pread, each with and without O_DIRECT.
@Suite("Backends")
struct BackendTests {
    @Test(arguments: BackendConfig.all)
    func alignedReads(_ config: BackendConfig) throws {
        let file = try TestFile(size: (3 << 20) + 1234, seed: 11)
        let backend = try config.open(file.path)
        #expect(backend.kind == config.kind)
        #expect(backend.fileSize == UInt64(file.size))
        #expect(backend.isDirect == config.direct)  // /tmp is a local filesystem with O_DIRECT
        let buffer = try AlignedBuffer(byteCount: 2 << 20)
        for (offset, length) in [(0, 4096), (4096, 8192), (1 << 20, 1 << 20), (0, 2 << 20), (3 << 20, 1234)] {
            let dst = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<length])
            try backend.read(into: dst, at: UInt64(offset))
            #expect(file.matches(dst, at: offset), "offset \(offset) length \(length)")
        }
        if let u = backend as? IOUringBackend, config.direct {
            // Only the last (partial-block) read needed a bounce.
            #expect(u.bouncedReadCount == 1)
        }
    }

    @Test(arguments: BackendConfig.all)
    func unalignedReads(_ config: BackendConfig) throws {
        let file = try TestFile(size: 1 << 20, seed: 12)
        let backend = try config.open(file.path)
        let buffer = try AlignedBuffer(byteCount: 600 << 10)
        let cases: [(offset: Int, length: Int, memShift: Int)] = [
            (1, 1, 0), (4095, 2, 0), (100, 5000, 100), (100, 5000, 7), (4096, 4096, 1),
            (12345, 300_000, 12345 % 4096), (12345, 300_000, 3), (0, 4095, 0), (8191, 4097, 0),
            (4000, 200_000, 4000), (0, 1, 4095),
        ]
        for c in cases {
            let dst = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[c.memShift..<(c.memShift + c.length)])
            try backend.read(into: dst, at: UInt64(c.offset))
            #expect(file.matches(dst, at: c.offset), "\(c)")
        }
        // Into ordinary (malloc-aligned) Swift arrays too.
        let bytes = try backend.readBytes(at: 777, count: 70_000)
        #expect(bytes == Array(file.slice(777, 70_000)))
    }

    @Test(arguments: BackendConfig.all)
    func readsSpanningTheEndOfFileTail(_ config: BackendConfig) throws {
        let size = (256 << 10) + 1000  // last block is partial
        let file = try TestFile(size: size, seed: 13)
        let backend = try config.open(file.path)
        let buffer = try AlignedBuffer(byteCount: 64 << 10)
        let tailStart = size / 4096 * 4096
        for (offset, length) in [(size - 100, 100), (size - 5000, 5000), (tailStart, size - tailStart),
                                 (tailStart - 4096, size - tailStart + 4096), (size - 1, 1)] {
            let dst = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<length])
            try backend.read(into: dst, at: UInt64(offset))
            #expect(file.matches(dst, at: offset), "offset \(offset) length \(length)")
        }
    }

    @Test(arguments: BackendConfig.all)
    func readingPastTheEndIsAnError(_ config: BackendConfig) throws {
        let size = 10_000
        let file = try TestFile(size: size, seed: 14)
        let backend = try config.open(file.path)
        var out = [UInt8](repeating: 0, count: 8192)
        let cases: [(UInt64, Int)] = [(UInt64(size - 10), 11), (UInt64(size), 1), (UInt64(size) + 5000, 10),
                                      (0, size + 1), (UInt64.max, 1), (UInt64.max - 3, 8)]
        try out.withUnsafeMutableBytes { raw in
            var requests: [ReadRequest] = []
            for (i, (offset, length)) in cases.enumerated() {
                requests.append(ReadRequest(offset: offset, length: min(length, raw.count), destination: raw.baseAddress!, tag: UInt64(i)))
            }
            // Lengths above were clipped to the buffer; (0, size+1) needs its own buffer.
            let big = UnsafeMutableRawBufferPointer.allocate(byteCount: size + 1, alignment: 4096)
            defer { big.deallocate() }
            requests[3] = ReadRequest(offset: 0, length: size + 1, destination: big.baseAddress!, tag: 3)
            let results = try runAll(backend, requests)
            for i in 0..<cases.count { expectEOF(results[UInt64(i)] ?? nil, fileSize: UInt64(size)) }
        }
        // Reading exactly up to the end is fine, and a zero-length read at the end too.
        let last = try backend.readBytes(at: UInt64(size - 10), count: 10)
        #expect(last == Array(file.slice(size - 10, 10)))
        #expect(try backend.readBytes(at: UInt64(size), count: 0).isEmpty)
        do {
            _ = try backend.readBytes(at: UInt64(size - 1), count: 2)
            Issue.record("read past the end succeeded")
        } catch let e as StorageError {
            #expect(e == .unexpectedEndOfFile(path: file.path, offset: UInt64(size - 1), length: 2, fileSize: UInt64(size)))
            #expect(e.description.contains("runs past its end"))
        }
    }

    @Test(arguments: BackendConfig.all)
    func manyRandomReads(_ config: BackendConfig) throws {
        let size = 8 << 20
        let file = try TestFile(size: size, seed: 15)
        let backend = try config.open(file.path, queueDepth: 8, chunkSize: 128 << 10)
        var rng = SplitMix64(seed: 99)
        let slot = 320 << 10
        let batch = 48
        let pool = try AlignedBuffer(byteCount: slot * batch)
        for _ in 0..<20 {
            var requests: [ReadRequest] = []
            for i in 0..<batch {
                let aligned = rng.next() % 3 == 0
                var length = Int(rng.next() % UInt64(300 << 10)) + 1
                var offset = Int(rng.next() % UInt64(size - length))
                var shift = Int(rng.next() % 4096)
                if aligned {
                    offset = offset / 4096 * 4096
                    length = max(4096, length / 4096 * 4096)
                    shift = 0
                }
                requests.append(ReadRequest(offset: UInt64(offset), length: length,
                                            destination: pool.baseAddress + i * slot + shift, tag: UInt64(i)))
            }
            let results = try runAll(backend, requests)
            for r in requests {
                #expect(results[r.tag] != nil && results[r.tag]! == nil, "read \(r.tag) failed: \(String(describing: results[r.tag]))")
                let got = UnsafeRawBufferPointer(start: r.destination, count: r.length)
                if !file.matches(got, at: Int(r.offset)) {
                    Issue.record("mismatch: offset \(r.offset) length \(r.length)")
                }
            }
        }
    }

    @Test(arguments: BackendConfig.all)
    func batchLargerThanQueueDepth(_ config: BackendConfig) throws {
        let file = try TestFile(size: 4 << 20, seed: 16)
        let backend = try config.open(file.path, queueDepth: 4, chunkSize: 64 << 10)
        let count = 300
        let slot = 20 << 10
        let pool = try AlignedBuffer(byteCount: count * slot)
        var requests: [ReadRequest] = []
        for i in 0..<count {
            // Alternate aligned and unaligned so both paths queue behind each other.
            let offset = i % 2 == 0 ? i * 8192 : i * 8192 + 333
            let length = i % 2 == 0 ? 16384 : 10_001
            requests.append(ReadRequest(offset: UInt64(offset), length: length, destination: pool.baseAddress + i * slot, tag: UInt64(1000 + i)))
        }
        try backend.submit(requests)
        #expect(backend.pending == count)
        var seen = Set<UInt64>()
        while seen.count < count {
            let before = backend.pending
            let done = try backend.reap(minimum: 1)
            #expect(!done.isEmpty)
            #expect(backend.pending == before - done.count)
            for c in done {
                #expect(c.error == nil)
                #expect(seen.insert(c.tag).inserted)
            }
        }
        #expect(try backend.reap(minimum: 1).isEmpty)  // nothing pending: returns at once
        for r in requests {
            #expect(file.matches(UnsafeRawBufferPointer(start: r.destination, count: r.length), at: Int(r.offset)))
        }
    }

    @Test(arguments: BackendConfig.all)
    func largeRequestsAreChunked(_ config: BackendConfig) throws {
        let size = (9 << 20) + 321
        let file = try TestFile(size: size, seed: 17)
        let backend = try config.open(file.path, queueDepth: 3, chunkSize: 256 << 10)
        let buffer = try AlignedBuffer(byteCount: size + 4096)
        // Whole file aligned, then whole file shifted by the same amount in file and memory,
        // then with different misalignment (every byte bounced).
        for (offset, shift) in [(0, 0), (100, 100), (100, 7)] {
            let length = size - offset
            let dst = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[shift..<(shift + length)])
            try backend.read(into: dst, at: UInt64(offset))
            #expect(file.matches(dst, at: offset), "offset \(offset) shift \(shift)")
        }
    }

    @Test(arguments: BackendConfig.all)
    func zeroLengthAndInvalidRequests(_ config: BackendConfig) throws {
        let file = try TestFile(size: 5000, seed: 18)
        let backend = try config.open(file.path)
        var byte: UInt8 = 0xAA
        try withUnsafeMutableBytes(of: &byte) { raw in
            let results = try runAll(backend, [
                ReadRequest(offset: 0, length: 0, destination: raw.baseAddress!, tag: 1),
                ReadRequest(offset: 4999, length: 0, destination: raw.baseAddress!, tag: 2),
                ReadRequest(offset: 123_456, length: 0, destination: raw.baseAddress!, tag: 3),
            ])
            #expect(results.count == 3)
            #expect(results.values.allSatisfy { $0 == nil })
            // A negative length rejects the whole batch before anything starts.
            #expect(throws: StorageError.self) {
                try backend.submit([
                    ReadRequest(offset: 0, length: 1, destination: raw.baseAddress!, tag: 4),
                    ReadRequest(offset: 0, length: -1, destination: raw.baseAddress!, tag: 5),
                ])
            }
            #expect(backend.pending == 0)
        }
        #expect(byte == 0xAA)
        #expect(try backend.reap(minimum: 0).isEmpty)
    }

    @Test(arguments: BackendConfig.all)
    func registeredBufferReads(_ config: BackendConfig) throws {
        let file = try TestFile(size: 2 << 20, seed: 19)
        let backend = try config.open(file.path)
        let pool = try AlignedBuffer(byteCount: 1 << 20)
        let outside = try AlignedBuffer(byteCount: 64 << 10)
        try backend.registerBuffers([pool.bytes])
        let cases: [(offset: Int, length: Int, at: Int)] = [(0, 64 << 10, 0), (1 << 20, 512 << 10, 256 << 10), (4097, 5000, 4097), (8192, 4096, 3)]
        for c in cases {
            let dst = UnsafeMutableRawBufferPointer(rebasing: pool.bytes[c.at..<(c.at + c.length)])
            try backend.read(into: dst, at: UInt64(c.offset))
            #expect(file.matches(dst, at: c.offset), "\(c)")
        }
        // Memory outside the registration still works (plain reads).
        let dst = UnsafeMutableRawBufferPointer(rebasing: outside.bytes[0..<(64 << 10)])
        try backend.read(into: dst, at: 4096)
        #expect(file.matches(dst, at: 4096))
        if let u = backend as? IOUringBackend {
            #expect(u.registeredSegmentCount == 1)
            #expect(u.fixedReadCount >= 2)  // both aligned reads into the pool used READ_FIXED
        }
        // Re-registering replaces; unregistering leaves plain reads working.
        try backend.registerBuffers([pool.bytes, outside.bytes])
        try backend.unregisterBuffers()
        try backend.read(into: dst, at: 0)
        #expect(file.matches(dst, at: 0))
    }

    @Test(arguments: BackendConfig.all)
    func truncationWhileOpen(_ config: BackendConfig) throws {
        let size = 1 << 20
        let file = try TestFile(size: size, seed: 20)
        let backend = try config.open(file.path, queueDepth: 4)
        let buffer = try AlignedBuffer(byteCount: 256 << 10)
        let whole = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<(128 << 10)])
        try backend.read(into: whole, at: 512 << 10)
        #expect(file.matches(whole, at: 512 << 10))

        let newSize = (300 << 10) + 17
        file.truncate(to: newSize)
        // Entirely past the new end (aligned: goes straight to O_DIRECT), straddling it,
        // and inside it.
        for (offset, length) in [(512 << 10, 128 << 10), (newSize - 1000, 2000), (newSize + 3, 5)] {
            let dst = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<length])
            do {
                try backend.read(into: dst, at: UInt64(offset))
                Issue.record("read at \(offset) past the truncated end succeeded")
            } catch let e as StorageError {
                expectEOF(e, fileSize: UInt64(newSize))
            }
        }
        #expect(backend.fileSize == UInt64(newSize))
        let inside = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<(100 << 10)])
        try backend.read(into: inside, at: 200 << 10)
        #expect(file.matches(inside, at: 200 << 10))
    }

    @Test(arguments: BackendConfig.all)
    func truncationWithReadsInFlight(_ config: BackendConfig) throws {
        let size = 4 << 20
        let file = try TestFile(size: size, seed: 21)
        let backend = try config.open(file.path, queueDepth: 4, chunkSize: 64 << 10)
        let pool = try AlignedBuffer(byteCount: size)
        var requests: [ReadRequest] = []
        for i in 0..<64 {
            requests.append(ReadRequest(offset: UInt64(i * (64 << 10)), length: 64 << 10, destination: pool.baseAddress + i * (64 << 10), tag: UInt64(i)))
        }
        try backend.submit(requests)
        let newSize = 1 << 20
        file.truncate(to: newSize)
        var results: [UInt64: StorageError?] = [:]
        while backend.pending > 0 {
            for c in try backend.reap(minimum: 1) { results[c.tag] = c.error }
        }
        #expect(results.count == 64)
        for (tag, error) in results {
            if let error {
                expectEOF(error, fileSize: UInt64(newSize))
            } else if tag < 16 {
                // Before the new end: the data must be right.
                let r = requests[Int(tag)]
                #expect(file.matches(UnsafeRawBufferPointer(start: r.destination, count: r.length), at: Int(r.offset)))
            }
        }
        // Everything past the new end that had not been read yet failed cleanly; whatever
        // raced ahead of the truncate completed before it.
        #expect(results.values.contains { $0 != nil } || config.kind == .pread)
    }

    @Test(arguments: BackendConfig.all)
    func openErrors(_ config: BackendConfig) throws {
        #expect(throws: StorageError.openFailed(path: "/nonexistent/moe/file", errno: ENOENT)) {
            _ = try config.open("/nonexistent/moe/file")
        }
        #expect(throws: StorageError.openFailed(path: "/tmp", errno: EISDIR)) {
            _ = try config.open("/tmp")
        }
    }

    @Test(arguments: [StorageBackendKind.ioUring, .pread])
    func droppingABackendWithReadsInFlight(_ kind: StorageBackendKind) throws {
        let file = try TestFile(size: 2 << 20, seed: 22)
        let pool = try AlignedBuffer(byteCount: 2 << 20)
        do {
            let backend = try BackendConfig(kind: kind, direct: true).open(file.path, queueDepth: 8, chunkSize: 64 << 10)
            var requests: [ReadRequest] = []
            for i in 0..<32 {
                requests.append(ReadRequest(offset: UInt64(i * 65536 + 5), length: 60_000, destination: pool.baseAddress + i * 65536, tag: UInt64(i)))
            }
            try backend.submit(requests)
            // Dropped here without reaping: deinit must wait for the kernel, not crash.
        }
        // The file and memory are still fine to use afterwards.
        let again = try BackendConfig(kind: kind, direct: true).open(file.path)
        let dst = UnsafeMutableRawBufferPointer(rebasing: pool.bytes[0..<60_000])
        try again.read(into: dst, at: 5)
        #expect(file.matches(dst, at: 5))
    }
}
