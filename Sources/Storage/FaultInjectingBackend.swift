#if canImport(Glibc)
import Glibc
#endif

/// What `FaultInjectingBackend` does to one request.
public enum InjectedFault: Sendable, Equatable {
    /// Pass the request through untouched.
    case none
    /// Complete with `readFailed(errno:)` without reading (`.eio` for the common case).
    case fail(errno: Int32)
    /// Complete with this error without reading.
    case error(StorageError)
    /// Deliver only the first `bytes` bytes, then report end of file there, as if the
    /// file ended after them.
    case shortRead(bytes: Int)
    /// Behave as if the file were `fileSize` bytes long: bytes before it are read,
    /// and a request running past it fails with `unexpectedEndOfFile(fileSize:)`.
    case truncate(fileSize: UInt64)
    /// Pass through, but hold the completion until at least this long after submission.
    case delay(Duration)

    public static let eio = InjectedFault.fail(errno: EIO)
}

/// Wraps a backend and injects faults chosen per request by a rule, so code above the
/// storage layer (GGUF reader, expert loader, engine) can be tested against I/O errors,
/// truncated files and slow disks. Completions keep the caller's tags.
///
/// Not thread-safe, like every backend.
public final class FaultInjectingBackend: StorageBackend {
    /// Chooses the fault for a request; `index` counts requests submitted so far (from 0).
    public typealias Rule = (_ request: ReadRequest, _ index: Int) -> InjectedFault

    public let inner: any StorageBackend
    public var rule: Rule
    /// Requests that got a fault other than `.none`.
    public private(set) var injectedCount = 0
    /// Requests seen so far.
    public private(set) var requestCount = 0

    public var kind: StorageBackendKind { inner.kind }
    public var path: String { inner.path }
    public var fileSize: UInt64 { inner.fileSize }
    public var isDirect: Bool { inner.isDirect }
    public func currentVersion() -> FileVersion? { inner.currentVersion() }
    public var pending: Int { forwarded.count + held.count + ready.count }

    private struct Forwarded {
        var request: ReadRequest
        var fault: InjectedFault
        var submittedAt: ContinuousClock.Instant
    }

    private var nextInnerTag: UInt64 = 0
    private var forwarded: [UInt64: Forwarded] = [:]
    private var held: [(due: ContinuousClock.Instant, completion: ReadCompletion)] = []
    private var ready: [ReadCompletion] = []

    public init(wrapping inner: any StorageBackend, rule: @escaping Rule = { _, _ in .none }) {
        self.inner = inner
        self.rule = rule
    }

    public func submit(_ batch: [ReadRequest]) throws {
        for r in batch where r.length < 0 {
            throw StorageError.invalidRequest("negative length \(r.length) (tag \(r.tag))")
        }
        var toInner: [ReadRequest] = []
        var newTags: [UInt64] = []
        let now = ContinuousClock.now
        for r in batch {
            let fault = rule(r, requestCount)
            requestCount += 1
            if fault != .none { injectedCount += 1 }
            var forward = r
            switch fault {
            case .none, .delay:
                break
            case .fail(let e):
                ready.append(ReadCompletion(tag: r.tag, error: .readFailed(path: path, offset: r.offset, length: r.length, errno: e)))
                continue
            case .error(let err):
                ready.append(ReadCompletion(tag: r.tag, error: err))
                continue
            case .shortRead(let bytes):
                let n = max(0, min(bytes, r.length))
                if n == r.length { break }  // "short" by nothing: a plain read
                if n == 0 {
                    ready.append(ReadCompletion(tag: r.tag, error: eof(r, at: r.offset)))
                    continue
                }
                forward.length = n
            case .truncate(let size):
                let (end, overflow) = r.offset.addingReportingOverflow(UInt64(r.length))
                if !overflow && end <= size { break }
                if r.offset >= size {
                    ready.append(ReadCompletion(tag: r.tag, error: eof(r, at: size)))
                    continue
                }
                forward.length = Int(size - r.offset)
            }
            forward.tag = nextInnerTag
            nextInnerTag &+= 1
            forwarded[forward.tag] = Forwarded(request: r, fault: fault, submittedAt: now)
            newTags.append(forward.tag)
            toInner.append(forward)
        }
        if toInner.isEmpty { return }
        do {
            try inner.submit(toInner)
        } catch {
            for t in newTags { forwarded[t] = nil }
            throw error
        }
    }

    public func reap(minimum: Int) throws -> [ReadCompletion] {
        let want = min(max(minimum, 0), pending)
        var out = ready
        ready.removeAll()
        try absorb(inner.reap(minimum: 0), into: &out)
        while true {
            let now = ContinuousClock.now
            if !held.isEmpty {
                for h in held where h.due <= now { out.append(h.completion) }
                held.removeAll { $0.due <= now }
            }
            if out.count >= want { break }
            if held.isEmpty {
                guard inner.pending > 0 else { break }  // nothing left that could complete
                try absorb(inner.reap(minimum: 1), into: &out)
                continue
            }
            // Sleep toward the earliest due completion, waking now and then for the inner
            // backend when it has work.
            let due = held.map(\.due).min() ?? now
            var wait = due - now
            if inner.pending > 0 { wait = min(wait, .milliseconds(1)) }
            sleep(wait)
            try absorb(inner.reap(minimum: 0), into: &out)
        }
        return out
    }

    public func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws {
        try inner.registerBuffers(buffers)
    }

    public func unregisterBuffers() throws {
        try inner.unregisterBuffers()
    }

    private func absorb(_ completions: [ReadCompletion], into out: inout [ReadCompletion]) {
        for c in completions {
            guard let f = forwarded.removeValue(forKey: c.tag) else { continue }
            let r = f.request
            var error = c.error
            if error == nil {
                switch f.fault {
                case .shortRead(let bytes) where bytes < r.length:
                    error = eof(r, at: r.offset + UInt64(max(0, bytes)))
                case .truncate(let size):
                    let (end, overflow) = r.offset.addingReportingOverflow(UInt64(r.length))
                    if overflow || end > size { error = eof(r, at: size) }
                default:
                    break
                }
            }
            let completion = ReadCompletion(tag: r.tag, error: error)
            if case .delay(let d) = f.fault {
                let due = f.submittedAt + d
                if due > ContinuousClock.now {
                    held.append((due, completion))
                    continue
                }
            }
            out.append(completion)
        }
    }

    private func eof(_ r: ReadRequest, at size: UInt64) -> StorageError {
        .unexpectedEndOfFile(path: path, offset: r.offset, length: r.length, fileSize: size)
    }

    private func sleep(_ d: Duration) {
        guard d > .zero else { return }
        let (seconds, attoseconds) = d.components
        var ts = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var rem = timespec()
        while nanosleep(&ts, &rem) != 0 && errno == EINTR { ts = rem }
    }
}
