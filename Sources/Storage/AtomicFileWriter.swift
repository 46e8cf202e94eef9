#if canImport(Glibc)
import Glibc
#endif

/// A file written whole or not at all. Bytes go to `PATH.tmp-PID` beside the destination;
/// `commit()` syncs them, renames the temporary file over `PATH` and syncs the directory, so
/// after a crash at any point `PATH` is either the old file or the complete new one. Dropped
/// (or `discard()`ed) without `commit()`, the temporary file is removed. Models, packs, KL
/// bases and sessions are all written through it.
public final class AtomicFileWriter {
    public let path: String
    /// Where the bytes go until `commit()`.
    public let temporaryPath: String
    public private(set) var bytesWritten: UInt64 = 0
    private var fd: Int32
    private var committed = false

    public init(path: String) throws(StorageError) {
        self.path = path
        temporaryPath = Self.temporaryPath(for: path)
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .writeFailed(path: temporaryPath, operation: "creating", errno: errno) }
    }

    /// The temporary name this process uses for `path` (a Ctrl-C handler can remove it).
    public static func temporaryPath(for path: String) -> String { path + ".tmp-\(getpid())" }

    deinit { discard() }

    /// Appends `bytes` (short writes and EINTR retried).
    public func write(_ bytes: UnsafeRawBufferPointer) throws(StorageError) {
        guard fd >= 0, !committed else { throw .writeFailed(path: temporaryPath, operation: "writing to the closed file", errno: EBADF) }
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw .writeFailed(path: temporaryPath, operation: "writing at offset \(bytesWritten + UInt64(done)) of", errno: errno)
            }
            done += n
        }
        bytesWritten += UInt64(bytes.count)
    }

    public func write(_ bytes: [UInt8]) throws(StorageError) {
        do {
            try bytes.withUnsafeBytes { try write($0) }
        } catch let e as StorageError {
            throw e
        } catch {
            throw .writeFailed(path: temporaryPath, operation: "writing", errno: EIO)
        }
    }

    /// Syncs the file, renames it to `path` (replacing any file there whole) and syncs the
    /// directory so the rename itself survives a crash.
    public func commit() throws(StorageError) {
        guard !committed else { return }
        guard fd >= 0 else { throw .writeFailed(path: temporaryPath, operation: "committing the discarded file", errno: EBADF) }
        guard fsync(fd) == 0 else { throw .writeFailed(path: temporaryPath, operation: "syncing", errno: errno) }
        let closed = close(fd)
        fd = -1
        guard closed == 0 else { throw .writeFailed(path: temporaryPath, operation: "closing", errno: errno) }
        guard rename(temporaryPath, path) == 0 else {
            throw .writeFailed(path: path, operation: "renaming \(temporaryPath) to", errno: errno)
        }
        committed = true
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// Closes and removes the temporary file; `path` is untouched.
    public func discard() {
        guard !committed else { return }
        if fd >= 0 { close(fd); fd = -1 }
        unlink(temporaryPath)
    }
}
