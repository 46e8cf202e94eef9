import Foundation
import KV
import Models
import Storage

/// A conversation's keys and values saved to disk (`moe generate --session FILE`, `moe chat
/// --session FILE`), so a later run resumes it without recomputing the prompt.
///
/// Format, version 1; every integer little-endian:
///
/// | offset | bytes | field |
/// | --- | --- | --- |
/// | 0 | 8 | magic `MOESESSN` |
/// | 8 | 4 | format version (1) |
/// | 12 | 4 | payload offset P: where block 0 starts (a multiple of 4096) |
/// | 16 | 8 | model fingerprint (`SessionFile.fingerprint`) |
/// | 24 | 8 | size in bytes of the model file |
/// | 32 | 4 | layers |
/// | 36 | 4 | key width: values per position and layer (all KV heads) |
/// | 40 | 4 | value width |
/// | 44 | 4 | KV block type: 0 F16, 1 Q8_0, 2 Q4_0 |
/// | 48 | 4 | positions per block S |
/// | 52 | 4 | bytes per block K |
/// | 56 | 4 | positions saved N |
/// | 60 | 4 | blocks saved B = ⌈N / S⌉ |
/// | 64 | 4 | length L of the model file's name (at most 1024) |
/// | 68 | 4 | length A of the application data (at most 16 MiB) |
/// | 72 | 8 | nanoseconds one position took to compute when these were computed (0: unknown) |
/// | 80 | L | the model file's name, UTF-8, without its directory |
/// | 80 + L | 4N | the token at each saved position (int32) |
/// | | A | application data: UTF-8 JSON (`SessionContents`: what kind of run saved it, chat messages) |
/// | | 4B | CRC-32 (zlib's) of each block's K bytes |
/// | | 4 | CRC-32 of every byte of the header before it |
/// | | | zero bytes up to P |
/// | P | B × K | the blocks: block i holds positions iS ..< (i+1)S of every layer, laid out as the pool lays a block out (`KVLayout`: layer by layer, S key rows then S value rows); the last block's slots past N are unused |
///
/// The file's size is exactly P + B × K. A reader checks the header's checksum, the size,
/// the model and the layout before anything is used, and each block's checksum before its
/// positions count. Files are written whole or not at all (`AtomicFileWriter`).
public enum SessionFile {
    public static let magic: [UInt8] = Array("MOESESSN".utf8)
    public static let version: UInt32 = 1
    static let fixedHeaderBytes = 80
    static let maximumNameBytes = 1024
    static let maximumApplicationBytes = 16 << 20
    static let payloadAlignment = 4096

    /// What identifies the model whose keys and values a session holds: 64-bit FNV-1a over
    /// the GGUF file's header (metadata and tensor table: architecture, hyper-parameters,
    /// tokenizer, every tensor's name, type, shape and offset) and over every norm vector's
    /// weights (so two fine-tunes with the same header differ). The same file, or a byte-equal
    /// copy, always gives the same fingerprint; a pack of a model is another file.
    public static func fingerprint(of model: DecoderModel) throws(SessionFileError) -> UInt64 {
        let file = model.weights.file
        var hash = FNV1a64()
        do {
            let backend = try StorageFile.open(path: file.path, direct: false)
            let header = try backend.readBytes(at: 0, count: Int(file.headerSize))
            hash.update(header)
        } catch {
            throw SessionFileError(path: file.path, problem: .cannotReadModel("\(error)"))
        }
        let h = model.hidden
        func add(_ p: UnsafePointer<Float>, _ count: Int) {
            hash.update(UnsafeRawBufferPointer(start: UnsafeRawPointer(p), count: count * 4))
        }
        add(model.outputNorm, h)
        for layer in model.layers {
            add(layer.attentionNorm, h)
            add(layer.feedForwardNorm, h)
        }
        return hash.value
    }

    /// The fingerprint of `session`'s model, computed once per session (a chat saves after
    /// every reply; the header read and hashed does not change).
    static func fingerprint(of session: Session) throws(SessionFileError) -> UInt64 {
        if let known = session.modelFingerprint { return known }
        let value = try fingerprint(of: session.model)
        session.modelFingerprint = value
        return value
    }

    static func typeCode(_ t: KVType) -> UInt32 {
        switch t {
        case .f16: return 0
        case .q8_0: return 1
        case .q4_0: return 2
        }
    }

    static func type(code: UInt32) -> KVType? {
        switch code {
        case 0: return .f16
        case 1: return .q8_0
        case 2: return .q4_0
        default: return nil
        }
    }

    // MARK: Writing

    /// Saves every position of `session`'s sequence, with `contents` as application data,
    /// atomically: the file at `path` is the old one or the complete new one.
    public static func save(_ session: Session, to path: String, contents: SessionContents) throws(SessionFileError) {
        let fingerprint = try fingerprint(of: session)
        let cache = session.cache
        let layout = cache.layout
        let blocks = layout.blocks(forPositions: cache.count)
        var checksums: [UInt32] = []
        checksums.reserveCapacity(blocks)
        for i in 0..<blocks {
            var crc = CRC32()
            crc.update(UnsafeRawBufferPointer(start: cache.storageOfBlock(at: i), count: layout.blockBytes))
            checksums.append(crc.value)
        }
        let identity = LogProbabilityFile.modelIdentity(session.model)
        var name = Substring(identity.name)
        while name.utf8.count > maximumNameBytes { name.removeLast() }
        let application: [UInt8]
        do { application = Array(try JSONEncoder().encode(contents)) } catch {
            throw SessionFileError(path: path, problem: .corruptHeader("cannot encode the session's contents: \(error)"))
        }
        guard application.count <= maximumApplicationBytes else {
            throw SessionFileError(path: path, problem: .corruptHeader("the conversation's text is over \(maximumApplicationBytes >> 20) MiB"))
        }
        let nanos = session.prefillSecondsPerPosition.map { UInt64(max(0, $0 * 1e9).rounded()) } ?? 0

        var header = ByteWriter()
        header.bytes(magic)
        header.u32(version)
        header.u32(0)  // payload offset, patched below
        header.u64(fingerprint)
        header.u64(identity.size)
        header.u32(UInt32(layout.layers))
        header.u32(UInt32(layout.keyWidth))
        header.u32(UInt32(layout.valueWidth))
        header.u32(typeCode(layout.type))
        header.u32(UInt32(layout.blockSize))
        header.u32(UInt32(layout.blockBytes))
        header.u32(UInt32(cache.count))
        header.u32(UInt32(blocks))
        header.u32(UInt32(name.utf8.count))
        header.u32(UInt32(application.count))
        header.u64(nanos)
        header.bytes(Array(name.utf8))
        for t in cache.tokens.prefix(cache.count) { header.u32(UInt32(truncatingIfNeeded: t)) }
        header.bytes(application)
        for c in checksums { header.u32(c) }
        let payload = (header.data.count + 4 + payloadAlignment - 1) / payloadAlignment * payloadAlignment
        header.patch32(at: 12, UInt32(payload))
        header.u32(CRC32.checksum(header.data))
        header.bytes([UInt8](repeating: 0, count: payload - header.data.count))

        do {
            let writer = try AtomicFileWriter(path: path)
            try writer.write(header.data)
            for i in 0..<blocks {
                try writer.write(UnsafeRawBufferPointer(start: cache.storageOfBlock(at: i), count: layout.blockBytes))
            }
            try writer.commit()
        } catch {
            throw SessionFileError(path: path, problem: .writeFailed(error))
        }
    }

    // MARK: Reading

    /// Opens a session file through the storage layer and checks its header (magic,
    /// version, checksum, sizes, the file's length); the blocks are checked as they load.
    public static func open(path: String, backend preference: StorageBackendPreference = .automatic) throws(SessionFileError) -> SavedSession {
        let backend: any StorageBackend
        do { backend = try StorageFile.open(path: path, backend: preference) } catch {
            throw SessionFileError(path: path, problem: .cannotOpen(error))
        }
        return try open(path: path, backend: backend)
    }

    /// The same, through a given backend (tests wrap one to inject faults and delays).
    public static func open(path: String, backend: any StorageBackend) throws(SessionFileError) -> SavedSession {
        func fail(_ problem: SessionFileError.Problem) -> SessionFileError { SessionFileError(path: path, problem: problem) }
        let size = backend.fileSize
        func read(_ offset: Int, _ count: Int) throws(SessionFileError) -> [UInt8] {
            guard UInt64(offset + count) <= size else {
                throw fail(.truncated(size: size, needed: UInt64(offset + count)))
            }
            do { return try backend.readBytes(at: UInt64(offset), count: count) } catch {
                throw fail(.readFailed("\(error)"))
            }
        }
        guard size >= UInt64(fixedHeaderBytes) else {
            if size >= 8, let head = try? backend.readBytes(at: 0, count: 8), head == magic {
                throw fail(.truncated(size: size, needed: UInt64(fixedHeaderBytes)))
            }
            throw fail(.notASession)
        }
        let fixed = try read(0, fixedHeaderBytes)
        var r = ByteReader(fixed)
        guard r.bytes(8) == magic else { throw fail(.notASession) }
        let version = r.u32()
        guard version == Self.version else { throw fail(.unsupportedVersion(version)) }
        let payload = Int(r.u32())
        let fingerprint = r.u64()
        let modelSize = r.u64()
        let layers = Int(r.u32()), keyWidth = Int(r.u32()), valueWidth = Int(r.u32())
        let typeCode = r.u32()
        let blockSize = Int(r.u32()), blockBytes = Int(r.u32())
        let positions = Int(r.u32()), blocks = Int(r.u32())
        let nameBytes = Int(r.u32()), applicationBytes = Int(r.u32())
        let nanos = r.u64()
        guard let type = type(code: typeCode) else { throw fail(.corruptHeader("unknown KV block type \(typeCode)")) }
        guard nameBytes <= maximumNameBytes, applicationBytes <= maximumApplicationBytes else {
            throw fail(.corruptHeader("a name of \(nameBytes) bytes or contents of \(applicationBytes) bytes"))
        }
        // Bounds that keep every product below overflow and the layout's preconditions.
        guard layers > 0, layers <= 4096, keyWidth > 0, valueWidth > 0, keyWidth <= 1 << 20, valueWidth <= 1 << 20,
              keyWidth % type.groupSize == 0, valueWidth % type.groupSize == 0,
              blockSize > 0, blockSize <= 4096, blockSize & (blockSize - 1) == 0, positions <= 1 << 28 else {
            throw fail(.corruptHeader("layout of \(layers) layers, widths \(keyWidth)/\(valueWidth), blocks of \(blockSize), \(positions) positions"))
        }
        let layout = KVLayout(layers: layers, keyWidth: keyWidth, valueWidth: valueWidth, blockSize: blockSize, type: type)
        guard layout.blockBytes == blockBytes, blocks == layout.blocks(forPositions: positions) else {
            throw fail(.corruptHeader("\(blocks) blocks of \(blockBytes) bytes for \(positions) positions (the layout needs \(layout.blocks(forPositions: positions)) of \(layout.blockBytes))"))
        }
        let headerBytes = fixedHeaderBytes + nameBytes + 4 * positions + applicationBytes + 4 * blocks
        guard payload % payloadAlignment == 0, payload >= headerBytes + 4 else {
            throw fail(.corruptHeader("payload offset \(payload)"))
        }
        let (payloadBytes, overflow) = UInt64(blocks).multipliedReportingOverflow(by: UInt64(blockBytes))
        guard !overflow, payloadBytes <= UInt64(Int.max / 2) else {
            throw fail(.corruptHeader("\(blocks) blocks of \(blockBytes) bytes"))
        }
        let expected = UInt64(payload) + payloadBytes
        guard size == expected else {
            throw size < expected ? fail(.truncated(size: size, needed: expected)) : fail(.corruptHeader("\(size) bytes where the header says \(expected)"))
        }
        let rest = try read(fixedHeaderBytes, headerBytes + 4 - fixedHeaderBytes)
        var crc = CRC32()
        crc.update(fixed)
        crc.update(Array(rest.dropLast(4)))
        var tail = ByteReader(Array(rest.suffix(4)))
        guard crc.value == tail.u32() else { throw fail(.headerChecksumMismatch) }

        r = ByteReader(rest)
        let name = String(decoding: r.bytes(nameBytes), as: UTF8.self)
        var tokens: [Int] = []
        tokens.reserveCapacity(positions)
        for _ in 0..<positions { tokens.append(Int(Int32(bitPattern: r.u32()))) }
        let application = r.bytes(applicationBytes)
        var checksums: [UInt32] = []
        checksums.reserveCapacity(blocks)
        for _ in 0..<blocks { checksums.append(r.u32()) }
        let contents: SessionContents
        do { contents = try JSONDecoder().decode(SessionContents.self, from: Data(application)) } catch {
            throw fail(.corruptHeader("unreadable contents: \(error)"))
        }
        return SavedSession(path: path, backend: backend, fingerprint: fingerprint, modelName: name, modelSize: modelSize,
                            layout: layout, tokens: tokens, contents: contents,
                            computeSecondsPerPosition: nanos > 0 ? Double(nanos) / 1e9 : nil,
                            payloadOffset: UInt64(payload), checksums: checksums)
    }
}

/// What a run keeps in a session besides keys and values (the JSON application data).
public struct SessionContents: Codable, Sendable, Equatable {
    /// The command that saved it: "generate" or "chat".
    public var kind: String
    /// A chat's messages so far (chat sessions).
    public var messages: [Message]?

    public struct Message: Codable, Sendable, Equatable {
        public var role: String
        public var content: String
        public init(role: String, content: String) {
            self.role = role
            self.content = content
        }
    }

    public init(kind: String, messages: [Message]? = nil) {
        self.kind = kind
        self.messages = messages
    }
}

/// An opened, header-checked session file.
public final class SavedSession {
    public let path: String
    let backend: any StorageBackend
    public let fingerprint: UInt64
    /// The model file that saved it (name without directory, size), for messages.
    public let modelName: String
    public let modelSize: UInt64
    public let layout: KVLayout
    /// The token at each saved position.
    public let tokens: [Int]
    public let contents: SessionContents
    /// What a position cost to compute when saved (nil: unknown).
    public let computeSecondsPerPosition: Double?
    let payloadOffset: UInt64
    let checksums: [UInt32]

    init(path: String, backend: any StorageBackend, fingerprint: UInt64, modelName: String, modelSize: UInt64,
         layout: KVLayout, tokens: [Int], contents: SessionContents, computeSecondsPerPosition: Double?,
         payloadOffset: UInt64, checksums: [UInt32]) {
        self.path = path
        self.backend = backend
        self.fingerprint = fingerprint
        self.modelName = modelName
        self.modelSize = modelSize
        self.layout = layout
        self.tokens = tokens
        self.contents = contents
        self.computeSecondsPerPosition = computeSecondsPerPosition
        self.payloadOffset = payloadOffset
        self.checksums = checksums
    }

    /// Positions saved.
    public var count: Int { tokens.count }

    /// Throws unless `session` can take these keys and values: the same model (fingerprint),
    /// the same layout (block type included) and a context that holds them.
    public func check(against session: Session) throws(SessionFileError) {
        let fingerprint = try SessionFile.fingerprint(of: session)
        let identity = LogProbabilityFile.modelIdentity(session.model)
        guard fingerprint == self.fingerprint else {
            throw SessionFileError(path: path, problem: .modelMismatch(saved: modelName, savedSize: modelSize,
                                                                      current: identity.name, currentSize: identity.size))
        }
        let current = session.cache.layout
        guard current == layout else {
            throw SessionFileError(path: path, problem: .layoutMismatch(saved: layout, current: current))
        }
        guard count <= session.cache.capacity else {
            throw SessionFileError(path: path, problem: .contextTooSmall(positions: count, context: session.cache.capacity))
        }
    }

    /// The longest prefix of `tokens` this session holds.
    public func commonPrefix(with tokens: [Int]) -> Int {
        var n = 0
        let limit = min(tokens.count, self.tokens.count)
        while n < limit && tokens[n] == self.tokens[n] { n += 1 }
        return n
    }
}

/// Why a session file could not be written or used. The original file is never changed by
/// a failed read, and a failed write leaves the old file in place.
public struct SessionFileError: Error, CustomStringConvertible {
    public enum Problem: Sendable {
        case cannotOpen(StorageError)
        case cannotReadModel(String)
        case notASession
        case unsupportedVersion(UInt32)
        case truncated(size: UInt64, needed: UInt64)
        case corruptHeader(String)
        case headerChecksumMismatch
        case blockChecksumMismatch(block: Int, positions: Range<Int>)
        case readFailed(String)
        case modelMismatch(saved: String, savedSize: UInt64, current: String, currentSize: UInt64)
        case layoutMismatch(saved: KVLayout, current: KVLayout)
        case contextTooSmall(positions: Int, context: Int)
        case wrongKind(saved: String, wanted: String)
        case writeFailed(StorageError)
        case kv(KVError)
        case model(ModelError)
    }

    public var path: String
    public var problem: Problem

    public init(path: String, problem: Problem) {
        self.path = path
        self.problem = problem
    }

    public var description: String {
        let what: String
        switch problem {
        case let .cannotOpen(e): what = "cannot open: \(e)"
        case let .cannotReadModel(why): what = "cannot read the model's header to identify it: \(why)"
        case .notASession: what = "not a session file (no MOESESSN magic)"
        case let .unsupportedVersion(v): what = "format version \(v); this build reads version \(SessionFile.version)"
        case let .truncated(size, needed): what = "truncated: \(size) bytes, the header needs \(needed)"
        case let .corruptHeader(why): what = "corrupt header: \(why)"
        case .headerChecksumMismatch: what = "the header's checksum does not match (the file is corrupted)"
        case let .blockChecksumMismatch(block, positions):
            what = "block \(block) (positions \(positions.lowerBound)..<\(positions.upperBound)) fails its checksum (the file is corrupted)"
        case let .readFailed(why): what = why
        case let .modelMismatch(saved, savedSize, current, currentSize):
            what = "saved by another model (\(saved), \(savedSize) bytes); this run uses \(current) (\(currentSize) bytes)"
        case let .layoutMismatch(saved, current):
            if saved.type != current.type {
                what = "holds \(saved.type.rawValue) keys and values; this run uses \(current.type.rawValue) (pass --kv-type \(saved.type.rawValue))"
            } else {
                what = "its KV layout (\(saved)) is not this model's (\(current))"
            }
        case let .contextTooSmall(positions, context):
            what = "holds \(positions) positions, more than the context of \(context) (use a larger --ctx)"
        case let .wrongKind(saved, wanted): what = "was saved by `moe \(saved)`, not `moe \(wanted)`"
        case let .writeFailed(e): what = "cannot save: \(e)"
        case let .kv(e): what = e.description
        case let .model(e): what = e.description
        }
        return "session \(path): \(what)"
    }
}
