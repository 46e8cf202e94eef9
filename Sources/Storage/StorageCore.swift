import CMoeLinux
#if canImport(Glibc)
import Glibc
#endif

// Pieces shared by IOUringBackend and PReadBackend, so both make the same decisions
// about alignment, short reads, retries and end of file: the observable behavior of
// the two must be identical.

/// O_DIRECT transfers are aligned to this in file offset, length and memory address.
/// (Many devices accept 512; 4096 is safe on every device and filesystem block size.)
let directAlignment = 4096

/// Consecutive transient failures (EINTR, EAGAIN) tolerated for one piece of a read.
let maxTransientRetries = 64
/// Reads that return 0 bytes although fstat says the range exists (a truncate/extend
/// race) are retried this often before the request fails with EIO.
let maxZeroProgressRetries = 3

/// Test hook: sees every low-level read's (file offset, length, result = bytes or -errno)
/// and returns the result to act on. It may turn a full read into a short one or into
/// -EINTR/-EAGAIN/-EIO, exercising the retry paths against real I/O.
typealias ReadResultFilter = (_ offset: UInt64, _ length: Int, _ result: Int) -> Int

@inline(__always)
func currentErrno() -> Int32 { errno }

/// The two descriptors a backend reads through, and the file's size.
struct OpenedFile {
    let path: String
    /// Always open; used when O_DIRECT is off or refused for a transfer.
    let bufferedFD: Int32
    /// O_DIRECT descriptor, or -1 when not asked for or the filesystem refuses it.
    let directFD: Int32
    var size: UInt64

    static func open(path: String, direct: Bool) throws(StorageError) -> OpenedFile {
        let buffered = openRetrying(path, O_RDONLY | O_CLOEXEC)
        guard buffered >= 0 else { throw StorageError.openFailed(path: path, errno: currentErrno()) }
        var st = stat()
        guard fstat(buffered, &st) == 0 else {
            let e = currentErrno()
            _ = Glibc.close(buffered)
            throw StorageError.statFailed(path: path, errno: e)
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            _ = Glibc.close(buffered)
            throw StorageError.openFailed(path: path, errno: EISDIR)
        }
        var directFD: Int32 = -1
        if direct {
            let fd = openRetrying(path, O_RDONLY | O_CLOEXEC | moe_o_direct())
            if fd >= 0 {
                directFD = fd
            } else {
                let e = currentErrno()
                // EINVAL: the filesystem has no O_DIRECT (tmpfs on older kernels, some
                // FUSE mounts). Reads still work through the buffered descriptor.
                if e != EINVAL {
                    _ = Glibc.close(buffered)
                    throw StorageError.openFailed(path: path, errno: e)
                }
            }
        }
        return OpenedFile(path: path, bufferedFD: buffered, directFD: directFD, size: UInt64(max(st.st_size, 0)))
    }

    private static func openRetrying(_ path: String, _ flags: Int32) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags)
            if fd >= 0 || currentErrno() != EINTR { return fd }
        }
    }

    /// Current size from fstat, or nil if fstat fails.
    /// Size and modification time of the open file, now (fstat).
    func currentVersion() -> FileVersion? {
        var st = stat()
        guard fstat(bufferedFD, &st) == 0 else { return nil }
        return FileVersion(size: UInt64(max(st.st_size, 0)), modifiedSeconds: Int64(st.st_mtim.tv_sec),
                           modifiedNanoseconds: Int64(st.st_mtim.tv_nsec))
    }

    func currentSize() -> UInt64? {
        var st = stat()
        let fd = bufferedFD
        guard fstat(fd, &st) == 0 else { return nil }
        return UInt64(max(st.st_size, 0))
    }

    func close() {
        if directFD >= 0 { _ = Glibc.close(directFD) }
        _ = Glibc.close(bufferedFD)
    }
}

/// How one low-level read of a chunk is done.
enum ChunkMode: Equatable {
    /// O_DIRECT straight into the caller's memory (all three aligned).
    case direct
    /// Buffered descriptor straight into the caller's memory (any alignment).
    case buffered
    /// O_DIRECT of the enclosing aligned span into a bounce buffer, then a copy out.
    case bounce
}

/// One low-level read: `length` wanted bytes at `fileOffset` going to `destination`.
struct Chunk {
    var fileOffset: UInt64
    var length: Int
    var destination: UnsafeMutableRawPointer
    var mode: ChunkMode
    /// Bounce only: the aligned span actually read.
    var spanOffset: UInt64 = 0
    var spanLength: Int = 0

    var ioOffset: UInt64 { mode == .bounce ? spanOffset : fileOffset }
    var ioLength: Int { mode == .bounce ? spanLength : length }
}

/// Splits the not-yet-read part of a request into chunks.
struct ChunkPlanner {
    /// Largest single direct/buffered read (a multiple of 4096).
    let maxChunk: Int
    /// Largest wanted length of one bounce chunk (a multiple of 4096).
    let maxBounceChunk: Int

    /// Room a bounce buffer needs: the wanted bytes plus partial blocks on both sides.
    var bounceCapacity: Int { maxBounceChunk + 2 * directAlignment }

    init(maxChunk: Int, maxBounceChunk: Int) {
        let a = directAlignment
        self.maxChunk = max(a, maxChunk / a * a)
        self.maxBounceChunk = max(a, min(maxBounceChunk, self.maxChunk) / a * a)
    }

    func next(fileOffset: UInt64, destination: UnsafeMutableRawPointer, remaining: Int, direct: Bool) -> Chunk {
        let a = directAlignment
        guard direct else {
            return Chunk(fileOffset: fileOffset, length: min(remaining, maxChunk), destination: destination, mode: .buffered)
        }
        let fileMisalign = Int(fileOffset % UInt64(a))
        let memMisalign = Int(UInt(bitPattern: destination) % UInt(a))
        if fileMisalign == 0 && memMisalign == 0 && remaining >= a {
            let len = min(remaining / a * a, maxChunk)
            return Chunk(fileOffset: fileOffset, length: len, destination: destination, mode: .direct)
        }
        var len: Int
        if fileMisalign == memMisalign {
            // Same misalignment in file and memory: bounce only up to the next block
            // boundary; everything after it can then go direct without a copy.
            len = fileMisalign == 0 ? remaining : min(remaining, a - fileMisalign)
        } else {
            len = remaining
        }
        len = min(len, maxBounceChunk)
        let spanStart = fileOffset - UInt64(fileMisalign)
        let spanEnd = (fileOffset + UInt64(len) + UInt64(a - 1)) / UInt64(a) * UInt64(a)
        return Chunk(fileOffset: fileOffset, length: len, destination: destination, mode: .bounce,
                     spanOffset: spanStart, spanLength: Int(spanEnd - spanStart))
    }
}

/// What a finished low-level read means for its chunk.
enum ChunkOutcome: Equatable {
    /// All wanted bytes are in place.
    case complete
    /// This many wanted bytes (fewer than asked) are in place; read the rest.
    case progressed(Int)
    /// Transient failure (EINTR, EAGAIN): issue the same chunk again.
    case retry(Int32)
    /// The O_DIRECT descriptor refused the transfer (EINVAL): redo it buffered.
    case retryBuffered
    /// No wanted byte arrived: the file ends before the chunk (or changed under us).
    case noProgress
    case failed(Int32)
}

/// Interprets a read's result (bytes or -errno) and, for bounce chunks, copies the
/// wanted bytes out of `bounce`.
func settle(_ chunk: Chunk, result: Int, bounce: UnsafeMutableRawPointer?) -> ChunkOutcome {
    if result < 0 {
        let e = Int32(truncatingIfNeeded: -result)
        switch e {
        case EINTR, EAGAIN: return .retry(e)
        case EINVAL where chunk.mode != .buffered: return .retryBuffered
        default: return .failed(e)
        }
    }
    // Never trust the kernel (or a test filter) to stay within what was asked.
    let got = min(result, chunk.ioLength)
    let useful: Int
    switch chunk.mode {
    case .direct, .buffered:
        useful = got
    case .bounce:
        let lead = Int(chunk.fileOffset - chunk.spanOffset)
        useful = max(0, min(got - lead, chunk.length))
        if useful > 0, let bounce {
            chunk.destination.copyMemory(from: bounce + lead, byteCount: useful)
        }
    }
    if useful == chunk.length { return .complete }
    if useful == 0 { return .noProgress }
    return .progressed(useful)
}

/// Checks a request's range against the file as it is now. Returns the EOF error when
/// the range runs past the end, nil when it fits (updating `file.size` either way).
func endOfFileError(_ file: inout OpenedFile, offset: UInt64, length: Int) -> StorageError? {
    if let size = file.currentSize() { file.size = size }
    let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
    if overflow || end > file.size {
        return .unexpectedEndOfFile(path: file.path, offset: offset, length: length, fileSize: file.size)
    }
    return nil
}

/// Validates a batch before anything is queued, so `submit` either takes all or none.
func validate(_ requests: [ReadRequest]) throws(StorageError) {
    for r in requests where r.length < 0 {
        throw StorageError.invalidRequest("negative length \(r.length) (tag \(r.tag))")
    }
}

/// A FIFO on an array with a moving head: O(1) amortized push/pop without Foundation.
struct FIFO<Element> {
    private var items: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }
    var first: Element? { isEmpty ? nil : items[head] }

    mutating func append(_ e: Element) { items.append(e) }

    mutating func popFirst() -> Element? {
        guard head < items.count else { return nil }
        let e = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return e
    }

    /// Replaces the first element (which must exist).
    mutating func replaceFirst(_ e: Element) { items[head] = e }

    mutating func removeAll(where predicate: (Element) -> Bool) {
        items.removeFirst(head)
        head = 0
        items.removeAll(where: predicate)
    }
}
