/// A backend over bytes already in memory: for parsing buffers (the fuzzer, tests
/// that mutate files) through the same interface as real files.
public final class MemoryBackend: StorageBackend {
    public let kind: StorageBackendKind = .pread
    public let path: String
    public let isDirect = false
    private let bytes: [UInt8]
    private var completed: [ReadCompletion] = []

    public init(bytes: [UInt8], name: String = "<memory>") {
        self.bytes = bytes
        self.path = name
    }

    public var fileSize: UInt64 { UInt64(bytes.count) }
    public var pending: Int { completed.count }

    public func submit(_ requests: [ReadRequest]) throws {
        for r in requests {
            guard r.length >= 0 else {
                throw StorageError.invalidRequest("negative length \(r.length)")
            }
            let (end, overflow) = r.offset.addingReportingOverflow(UInt64(r.length))
            if overflow || end > fileSize {
                completed.append(ReadCompletion(tag: r.tag, error: .unexpectedEndOfFile(
                    path: path, offset: r.offset, length: r.length, fileSize: fileSize)))
                continue
            }
            if r.length > 0 { bytes.withUnsafeBytes { src in
                r.destination.copyMemory(from: src.baseAddress! + Int(r.offset), byteCount: r.length)
            } }
            completed.append(ReadCompletion(tag: r.tag, error: nil))
        }
    }

    public func reap(minimum: Int) throws -> [ReadCompletion] {
        let out = completed
        completed.removeAll(keepingCapacity: true)
        return out
    }
}
