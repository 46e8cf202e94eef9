import CMoeLinux
import Glibc
import Testing
@testable import Storage

@Suite("StorageFile")
struct StorageFileTests {
    /// Whether this kernel lets us have io_uring at all (CI machines might not).
    static var ioUringWorks: Bool {
        guard let file = try? TestFile(size: 4096, seed: 1) else { return false }
        return (try? IOUringBackend(path: file.path)) != nil
    }

    @Test func automaticPrefersIOUring() throws {
        let file = try TestFile(size: 100_000, seed: 51)
        let backend = try StorageFile.$environmentOverride.withValue("") { () throws -> any StorageBackend in
            try StorageFile.open(path: file.path)
        }
        #expect(backend.kind == (Self.ioUringWorks ? .ioUring : .pread))
        #expect(backend.isDirect)
        #expect(try backend.readBytes(at: 3, count: 99_000) == Array(file.slice(3, 99_000)))
    }

    @Test(arguments: [EPERM, ENOSYS, ENOMEM])
    func refusedIOUringFallsBackToPRead(_ refusal: Int32) throws {
        let file = try TestFile(size: 100_000, seed: 52)
        try IOUringBackend.$simulatedUnavailability.withValue(refusal) { () throws in
            try StorageFile.$environmentOverride.withValue("") { () throws in
                let backend = try StorageFile.open(path: file.path, queueDepth: 8)
                #expect(backend.kind == .pread)
                #expect(backend is PReadBackend)
                #expect(try backend.readBytes(at: 12_345, count: 50_000) == Array(file.slice(12_345, 50_000)))

                #expect(throws: StorageError.ioUringUnavailable(errno: refusal)) {
                    _ = try StorageFile.open(path: file.path, backend: .ioUring)
                }
                #expect(try StorageFile.open(path: file.path, backend: .pread).kind == .pread)
                // The environment may force io_uring; then the refusal is an error, not a fallback.
                try StorageFile.$environmentOverride.withValue("io_uring") { () throws in
                    #expect(throws: StorageError.ioUringUnavailable(errno: refusal)) {
                        _ = try StorageFile.open(path: file.path)
                    }
                }
            }
        }
        // The hook is scoped: outside it io_uring works again.
        if Self.ioUringWorks {
            #expect(try StorageFile.open(path: file.path, backend: .ioUring).kind == .ioUring)
        }
    }

    @Test func fallbackDoesNotHideOpenErrors() throws {
        try IOUringBackend.$simulatedUnavailability.withValue(EPERM) { () throws in
            #expect(throws: StorageError.openFailed(path: "/nonexistent/x.gguf", errno: ENOENT)) {
                _ = try StorageFile.open(path: "/nonexistent/x.gguf")
            }
        }
        #expect(throws: StorageError.openFailed(path: "/nonexistent/x.gguf", errno: ENOENT)) {
            _ = try StorageFile.open(path: "/nonexistent/x.gguf")
        }
    }

    @Test func environmentOverride() throws {
        let file = try TestFile(size: 10_000, seed: 53)
        try StorageFile.$environmentOverride.withValue("pread") { () throws in
            #expect(try StorageFile.resolve(.automatic) == .pread)
            #expect(try StorageFile.open(path: file.path).kind == .pread)
            // Forced choices ignore the variable.
            #expect(try StorageFile.resolve(.ioUring) == .ioUring)
            if Self.ioUringWorks {
                #expect(try StorageFile.open(path: file.path, backend: .ioUring).kind == .ioUring)
            }
        }
        try StorageFile.$environmentOverride.withValue("IO_URING") { () throws in
            #expect(try StorageFile.resolve(.automatic) == .ioUring)
            if Self.ioUringWorks {
                #expect(try StorageFile.open(path: file.path).kind == .ioUring)
            }
        }
        try StorageFile.$environmentOverride.withValue("auto") { () throws in
            #expect(try StorageFile.resolve(.automatic) == .automatic)
        }
        try StorageFile.$environmentOverride.withValue("posix_aio") { () throws in
            #expect(throws: StorageError.self) { _ = try StorageFile.open(path: file.path) }
            #expect(throws: StorageError.self) { _ = try StorageFile.resolve(.automatic) }
        }
        #expect(StorageBackendPreference(parsing: "uring") == .ioUring)
        #expect(StorageBackendPreference(parsing: "PREAD") == .pread)
        #expect(StorageBackendPreference(parsing: "nope") == nil)
        #expect(StorageFile.environmentVariable == "MOE_STORAGE_BACKEND")
    }

    @Test func openedBuffered() throws {
        let file = try TestFile(size: 10_000, seed: 54)
        for pref in [StorageBackendPreference.ioUring, .pread] where pref != .ioUring || Self.ioUringWorks {
            let b = try StorageFile.open(path: file.path, backend: pref, direct: false, queueDepth: 2)
            #expect(!b.isDirect)
            #expect(try b.readBytes(at: 1, count: 9_999) == Array(file.slice(1, 9_999)))
        }
    }

    @Test func invalidConfiguration() throws {
        let file = try TestFile(size: 4096, seed: 55)
        #expect(throws: StorageError.self) { _ = try IOUringBackend(path: file.path, queueDepth: 0) }
        #expect(throws: StorageError.self) { _ = try PReadBackend(path: file.path, queueDepth: 0) }
        #expect(throws: StorageError.self) { _ = try IOUringBackend(path: file.path, chunkSize: 100) }
    }

    @Test func errorDescriptionsNameTheFile() {
        let e = StorageError.readFailed(path: "/m/x.gguf", offset: 4096, length: 10, errno: EIO)
        #expect(e.description.contains("/m/x.gguf") && e.description.contains("4096") && e.description.contains("errno 5"))
        let u = StorageError.ioUringFailed(path: "/m/x.gguf", operation: "submit", errno: EBUSY)
        #expect(u.description.contains("submit") && u.description.contains("/m/x.gguf"))
    }
}

@Suite("AlignedBuffer")
struct AlignedBufferTests {
    @Test func alignmentAndSize() throws {
        for size in [0, 1, 4095, 4096, 100_000] {
            let b = try AlignedBuffer(byteCount: size)
            #expect(b.count == size)
            #expect(b.bytes.count == size)
            #expect(UInt(bitPattern: b.baseAddress) % 4096 == 0)
            #expect(b.allocatedCount >= max(size, 1) && b.allocatedCount % 4096 == 0)
            #expect(b.placement == .standard)
        }
        let wide = try AlignedBuffer(byteCount: 10, alignment: 65536)
        #expect(UInt(bitPattern: wide.baseAddress) % 65536 == 0)
        #expect(throws: StorageError.self) { _ = try AlignedBuffer(byteCount: 10, alignment: 3000) }
        #expect(throws: StorageError.self) { _ = try AlignedBuffer(byteCount: -1) }
        #expect(throws: StorageError.self) { _ = try AlignedBuffer(byteCount: Int.max - 8192) }
        #expect(throws: StorageError.allocationFailed(bytes: Int.max)) { _ = try AlignedBuffer(byteCount: Int.max) }
    }

    @Test func largeBuffersUseHugePageAlignment() throws {
        let b = try AlignedBuffer(byteCount: 6 << 20)
        #expect(UInt(bitPattern: b.baseAddress) % UInt(2 << 20) == 0)
        #expect(b.allocatedCount % (2 << 20) == 0)
        b.prefault()
        b.zero()
        #expect(b.bytes.allSatisfy { $0 == 0 })
        b.bytes[b.count - 1] = 7
        #expect(b.bytes[b.count - 1] == 7)
        let plain = try AlignedBuffer(byteCount: 6 << 20, adviseHugePages: false)
        #expect(!plain.hugePagesAdvised)
    }

    @Test func numaPlacement() throws {
        guard moe_numa_available() >= 0 else {
            // No NUMA support: a node request still yields usable (standard) memory.
            let b = try AlignedBuffer(byteCount: 1 << 20, numaNode: 0)
            #expect(b.placement == .standard)
            return
        }
        let b = try AlignedBuffer(byteCount: 1 << 20, numaNode: 0)
        #expect(b.placement == .numaNode(0))
        #expect(UInt(bitPattern: b.baseAddress) % 4096 == 0)
        b.prefault()
        #expect(b.numaNode(ofByteAt: 0) == 0)
        #expect(b.numaNode(ofByteAt: (1 << 20) - 1) == 0)
        #expect(throws: StorageError.self) { _ = try AlignedBuffer(byteCount: 4096, numaNode: 100_000) }
        #expect(throws: StorageError.self) { _ = try AlignedBuffer(byteCount: 4096, numaNode: -1) }
    }
}
