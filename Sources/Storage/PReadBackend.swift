import CMoeLinux
#if canImport(Glibc)
import Glibc
#endif

/// Reads with plain `pread`, for when io_uring is refused (seccomp, old kernels,
/// io_uring_disabled). Same chunking, O_DIRECT/bounce decisions, retries and errors as
/// `IOUringBackend`; the reads run synchronously inside `submit`, and `reap` hands out
/// the finished completions.
///
/// Not thread-safe (see `StorageBackend`).
public final class PReadBackend: StorageBackend {
    public let kind: StorageBackendKind = .pread
    public var path: String { file.path }
    public var fileSize: UInt64 { file.size }
    public var isDirect: Bool { file.directFD >= 0 && directEnabled }
    public var pending: Int { completed.count }
    /// Accepted for parity with io_uring; pread has one read in flight at a time.
    public let queueDepth: Int
    public let chunkSize: Int
    /// Reads that went through the bounce buffer so far (diagnostics and tests).
    public private(set) var bouncedReadCount = 0

    /// See `ReadResultFilter`; tests only.
    var resultFilter: ReadResultFilter?

    private var file: OpenedFile
    private var directEnabled = true
    private let planner: ChunkPlanner
    private var bounce: AlignedBuffer?
    private var completed: [ReadCompletion] = []

    public init(path: String, direct: Bool = true, queueDepth: Int = IOUringBackend.defaultQueueDepth,
                chunkSize: Int = IOUringBackend.defaultChunkSize) throws(StorageError) {
        guard queueDepth >= 1 else { throw StorageError.invalidRequest("queue depth \(queueDepth) < 1") }
        guard chunkSize >= directAlignment else {
            throw StorageError.invalidRequest("chunk size \(chunkSize) < \(directAlignment)")
        }
        self.queueDepth = queueDepth
        self.planner = ChunkPlanner(maxChunk: chunkSize, maxBounceChunk: IOUringBackend.defaultBounceChunkSize)
        self.chunkSize = planner.maxChunk
        self.file = try OpenedFile.open(path: path, direct: direct)
    }

    deinit { file.close() }

    public func submit(_ batch: [ReadRequest]) throws(StorageError) {
        try validate(batch)
        for r in batch {
            completed.append(ReadCompletion(tag: r.tag, error: read(r)))
        }
    }

    public func reap(minimum: Int) throws(StorageError) -> [ReadCompletion] {
        let out = completed
        completed.removeAll(keepingCapacity: true)
        return out
    }

    public func currentVersion() -> FileVersion? { file.currentVersion() }

    @discardableResult
    public func refreshFileSize() -> UInt64 {
        if let s = file.currentSize() { file.size = s }
        return file.size
    }

    /// Performs one request to the end; nil on success.
    private func read(_ r: ReadRequest) -> StorageError? {
        if r.length == 0 { return nil }
        let (end, overflow) = r.offset.addingReportingOverflow(UInt64(r.length))
        if overflow || end > file.size, let err = endOfFileError(&file, offset: r.offset, length: r.length) {
            return err
        }
        var fileOffset = r.offset
        var destination = r.destination
        var remaining = r.length
        var transient = 0
        var zeroProgress = 0
        while remaining > 0 {
            let chunk = planner.next(fileOffset: fileOffset, destination: destination,
                                     remaining: remaining, direct: isDirect)
            var bouncePtr: UnsafeMutableRawPointer?
            if chunk.mode == .bounce {
                if bounce == nil {
                    bounce = try? AlignedBuffer(byteCount: planner.bounceCapacity, adviseHugePages: false)
                }
                guard let b = bounce else { return .allocationFailed(bytes: planner.bounceCapacity) }
                bouncePtr = b.baseAddress
                bouncedReadCount += 1
            }
            let fd = chunk.mode == .buffered ? file.bufferedFD : file.directFD
            let target = bouncePtr ?? chunk.destination
            var result = pread(fd, target, chunk.ioLength, off_t(chunk.ioOffset))
            if result < 0 { result = -Int(currentErrno()) }
            if let filter = resultFilter { result = filter(chunk.ioOffset, chunk.ioLength, result) }

            switch settle(chunk, result: result, bounce: bouncePtr) {
            case .complete:
                fileOffset += UInt64(chunk.length)
                destination += chunk.length
                remaining -= chunk.length
                transient = 0
                zeroProgress = 0
            case .progressed(let n):
                fileOffset += UInt64(n)
                destination += n
                remaining -= n
                transient = 0
                zeroProgress = 0
            case .retry(let e):
                guard transient < maxTransientRetries else {
                    return .readFailed(path: file.path, offset: r.offset, length: r.length, errno: e)
                }
                transient += 1
                // EAGAIN means "not now": back off a little instead of spinning.
                if e == EAGAIN { usleep(UInt32(min(transient, 10) * 100)) }
            case .retryBuffered:
                directEnabled = false
            case .noProgress:
                if let err = endOfFileError(&file, offset: r.offset, length: r.length) { return err }
                guard zeroProgress < maxZeroProgressRetries else {
                    return .readFailed(path: file.path, offset: r.offset, length: r.length, errno: EIO)
                }
                zeroProgress += 1
            case .failed(let e):
                return .readFailed(path: file.path, offset: r.offset, length: r.length, errno: e)
            }
        }
        return nil
    }
}
