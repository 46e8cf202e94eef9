import Foundation
import Storage
import Kernels
import Models
#if canImport(Glibc)
import Glibc
#endif

/// A saved reference run for KL divergence (`moe perplexity --kl-base FILE`, read back by
/// `--kl-compare FILE`): the next-token log-probabilities (log-softmax of the logits) of
/// every position a perplexity run scores, so a later run, of an approximation of the same
/// model on the same tokens, can be measured against them.
///
/// Format, version 1; every integer little-endian:
///
/// | offset | bytes | field |
/// | --- | --- | --- |
/// | 0 | 8 | magic `MOELOGPB` |
/// | 8 | 4 | format version (1) |
/// | 12 | 4 | header size H: where the first record starts (a multiple of 8) |
/// | 16 | 4 | vocabulary size V |
/// | 20 | 4 | context length (`--ctx`) |
/// | 24 | 4 | chunk count |
/// | 28 | 4 | zero (reserved) |
/// | 32 | 8 | scored positions N = chunks × (ctx − 1 − ctx/2) |
/// | 40 | 8 | token hash: 64-bit FNV-1a over the token ids the model was fed, chunk after chunk (each chunk's first token already replaced by BOS where the vocabulary adds one), each id as 4 bytes |
/// | 48 | 8 | size in bytes of the model file |
/// | 56 | 4 | length L of the model file's name (at most 1024) |
/// | 60 | L | the model file's name, UTF-8, without its directory |
/// | 60 + L | | zero bytes up to H |
/// | H | N × (4 + 2V) | one record per scored position, in evaluation order: the arg-max token of the logits (4 bytes), then the V log-probabilities as IEEE 754 half-precision floats |
/// | H + N × (4 + 2V) | 4 | CRC-32 (zlib's) of every byte before it |
///
/// Precision: a half keeps 11 significant bits, so a stored log-probability ℓ is within
/// |ℓ|·2⁻¹¹ of the computed one (under 0.004 where p > e⁻⁸; the likely tokens, which
/// weigh most in the KL, are the most precise); values below −65504 (p < e⁻⁶⁵⁵⁰⁴, nothing) are stored as −65504.
/// Readers renormalize each row before using it, so the rounding costs a KL of the order
/// of 1e-6 against the exact distribution. The arg-max token is stored exactly, from the
/// logits, because rounding can tie the top two log-probabilities.
///
/// The writer streams records into `FILE.tmp-PID` in the same directory, then fsyncs it
/// and renames it over `FILE` only once every position is written: an interrupted run
/// never leaves a partial file under the final name, and an existing file is replaced
/// whole. The reader checks the header, the file's size and the checksum when it opens a
/// file, before anything is computed.
public enum LogProbabilityFile {
    public static let magic: [UInt8] = Array("MOELOGPB".utf8)
    public static let version: UInt32 = 1
    static let fixedHeaderBytes = 60
    static let maximumNameBytes = 1024

    /// What a base file describes: the run it was made by, and the model that made it.
    public struct Header: Equatable, Sendable {
        public var vocabularySize: Int
        public var contextLength: Int
        public var chunkCount: Int
        public var scoredPositions: Int
        public var tokenHash: UInt64
        /// The model file's name (without directory) and size: which model made the base.
        public var modelName: String
        public var modelSize: UInt64

        public init(vocabularySize: Int, contextLength: Int, chunkCount: Int, scoredPositions: Int,
                    tokenHash: UInt64, modelName: String, modelSize: UInt64) {
            self.vocabularySize = vocabularySize
            self.contextLength = contextLength
            self.chunkCount = chunkCount
            self.scoredPositions = scoredPositions
            self.tokenHash = tokenHash
            self.modelName = modelName
            self.modelSize = modelSize
        }

        /// Bytes of one position's record.
        public var recordBytes: Int { 4 + 2 * vocabularySize }

        /// The name as stored: whole characters, at most `maximumNameBytes`.
        var nameBytes: [UInt8] {
            var name = Substring(modelName)
            while name.utf8.count > LogProbabilityFile.maximumNameBytes { name.removeLast() }
            return Array(name.utf8)
        }

        /// Bytes before the first record.
        var headerBytes: Int { (LogProbabilityFile.fixedHeaderBytes + nameBytes.count + 7) / 8 * 8 }

        /// The whole file's size.
        public var fileBytes: UInt64 { UInt64(headerBytes) + UInt64(scoredPositions) * UInt64(recordBytes) + 4 }

        func encoded() -> [UInt8] {
            var out = ByteWriter()
            out.bytes(LogProbabilityFile.magic)
            out.u32(LogProbabilityFile.version)
            out.u32(UInt32(headerBytes))
            out.u32(UInt32(vocabularySize))
            out.u32(UInt32(contextLength))
            out.u32(UInt32(chunkCount))
            out.u32(0)
            out.u64(UInt64(scoredPositions))
            out.u64(tokenHash)
            out.u64(modelSize)
            let name = nameBytes
            out.u32(UInt32(name.count))
            out.bytes(name)
            out.bytes([UInt8](repeating: 0, count: headerBytes - out.data.count))
            return out.data
        }

        /// Checks that a base with this header can be compared with a run described by
        /// `run`: same vocabulary, context, chunks, positions and tokens (the models may differ).
        public func requireCompatible(with run: Header, path: String) throws(LogProbabilityFileError) {
            func fail(_ p: LogProbabilityFileError.Problem) -> LogProbabilityFileError { .init(path: path, problem: p) }
            guard vocabularySize == run.vocabularySize else {
                throw fail(.vocabularyMismatch(base: vocabularySize, model: run.vocabularySize))
            }
            guard contextLength == run.contextLength else {
                throw fail(.contextMismatch(base: contextLength, run: run.contextLength))
            }
            guard chunkCount == run.chunkCount else { throw fail(.chunkCountMismatch(base: chunkCount, run: run.chunkCount)) }
            guard scoredPositions == run.scoredPositions else {
                throw fail(.positionCountMismatch(base: scoredPositions, run: run.scoredPositions))
            }
            guard tokenHash == run.tokenHash else { throw fail(.tokenMismatch(base: tokenHash, run: run.tokenHash)) }
        }
    }

    /// The name (without directory) and size of the model file behind `model`.
    public static func modelIdentity(_ model: DecoderModel) -> (name: String, size: UInt64) {
        let file = model.weights.file
        return (file.path.split(separator: "/").last.map(String.init) ?? file.path, file.fileSize)
    }

    // MARK: Writing

    /// Streams a base to a temporary file beside `path`; `commit()` makes it `path`.
    /// Dropped without `commit()` (an error, a failed run), it removes the temporary file.
    public final class Writer: PerplexityObserver {
        public let path: String
        public let header: Header
        /// Where the records go until `commit()`: `path.tmp-PID`.
        public var temporaryPath: String { file.temporaryPath }
        public private(set) var positionsWritten = 0
        private let file: AtomicFileWriter
        private var crc = CRC32()
        private var buffer: [UInt8] = []
        private var committed = false
        private static let flushBytes = 4 << 20

        public init(path: String, header: Header) throws(LogProbabilityFileError) {
            self.path = path
            self.header = header
            do { file = try AtomicFileWriter(path: path) } catch {
                throw LogProbabilityFileError(path: path, problem: .cannotCreate(AtomicFileWriter.temporaryPath(for: path),
                                                                                  error.description))
            }
            buffer.reserveCapacity(Self.flushBytes + header.recordBytes)
            buffer += header.encoded()
        }

        deinit { if !committed { discard() } }

        /// Appends one position: the log-softmax of `logits`, and its arg-max.
        public func append(logits: UnsafeBufferPointer<Float>) throws(LogProbabilityFileError) {
            guard logits.count == header.vocabularySize else {
                throw LogProbabilityFileError(path: path, problem: .badRecord(
                    "a row of \(logits.count) logits for a vocabulary of \(header.vocabularySize)"))
            }
            guard positionsWritten < header.scoredPositions else {
                throw LogProbabilityFileError(path: path, problem: .badRecord(
                    "more than the \(header.scoredPositions) positions the header announces"))
            }
            let top = UInt32(KLDivergence.argmax(logits))
            withUnsafeBytes(of: top.littleEndian) { buffer.append(contentsOf: $0) }
            let lse = KLDivergence.logSumExp(logits)
            let start = buffer.count
            buffer.append(contentsOf: repeatElement(0, count: 2 * logits.count))
            buffer.withUnsafeMutableBytes { raw in
                let out = raw.baseAddress! + start
                for i in 0..<logits.count {
                    let v = max(Float(Double(logits[i]) - lse), -65504)
                    out.storeBytes(of: FP16.fromFloat(v).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                }
            }
            positionsWritten += 1
            if buffer.count >= Self.flushBytes { try flush() }
        }

        /// Appends a chunk's scored rows (`PerplexityObserver`).
        public func observe(chunk: Int, logits: UnsafeBufferPointer<Float>, targets: ArraySlice<Int>) throws(LogProbabilityFileError) {
            let v = header.vocabularySize
            for row in 0..<targets.count {
                try append(logits: UnsafeBufferPointer(rebasing: logits[(row * v)..<((row + 1) * v)]))
            }
        }

        /// Writes the checksum, syncs the file and renames it to `path` (replacing any file
        /// there whole). Every announced position must have been written.
        public func commit() throws(LogProbabilityFileError) {
            guard !committed else { return }
            guard positionsWritten == header.scoredPositions else {
                throw LogProbabilityFileError(path: path, problem: .incomplete(written: positionsWritten,
                                                                                expected: header.scoredPositions))
            }
            try flush()
            let sum = crc.value.littleEndian
            buffer = withUnsafeBytes(of: sum) { Array($0) }
            try flush(updatingChecksum: false)
            do { try file.commit() } catch {
                throw LogProbabilityFileError(path: path, problem: .writeFailed(error.description))
            }
            committed = true
        }

        /// Closes and removes the temporary file (nothing is left behind; `path` is untouched).
        public func discard() {
            guard !committed else { return }
            file.discard()
        }

        private func flush(updatingChecksum: Bool = true) throws(LogProbabilityFileError) {
            if updatingChecksum { buffer.withUnsafeBytes { crc.update($0) } }
            do {
                try buffer.withUnsafeBytes { try file.write($0) }
            } catch {
                throw LogProbabilityFileError(path: path, problem: .writeFailed("\(error)"))
            }
            buffer.removeAll(keepingCapacity: true)
        }
    }

    // MARK: Reading

    /// A base file opened for reading, its header, size and checksum already checked.
    public final class Reader {
        public let path: String
        public let header: Header
        public let fileBytes: UInt64
        /// Positions read so far by `nextRecord`.
        public private(set) var positionsRead = 0
        private let fd: Int32
        private let dataOffset: UInt64
        private var record: [UInt8]

        public init(path: String) throws(LogProbabilityFileError) {
            self.path = path
            func fail(_ p: LogProbabilityFileError.Problem) -> LogProbabilityFileError { .init(path: path, problem: p) }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw fail(.cannotOpen(errnoText(errno))) }
            var ok = false
            defer { if !ok { close(fd) } }
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw fail(.readFailed(errnoText(errno))) }
            // A regular file.
            guard st.st_mode & 0o170000 == 0o100000 else { throw fail(.notALogProbabilityFile) }
            let size = UInt64(st.st_size)

            // The fixed part, then the name.
            var fixed = [UInt8](repeating: 0, count: LogProbabilityFile.fixedHeaderBytes)
            let got = try Self.read(fd, into: &fixed, at: 0, path: path)
            guard got >= 8, Array(fixed[0..<8]) == LogProbabilityFile.magic else { throw fail(.notALogProbabilityFile) }
            guard got == fixed.count else { throw fail(.truncated(expectedBytes: UInt64(fixed.count), actualBytes: size)) }
            var r = ByteReader(fixed)
            r.offset = 8  // past the magic
            let version = r.u32()
            guard version == LogProbabilityFile.version else {
                throw fail(.unsupportedVersion(found: version, supported: LogProbabilityFile.version))
            }
            let headerBytes = Int(r.u32()), vocabulary = Int(r.u32()), context = Int(r.u32()), chunks = Int(r.u32())
            let reserved = r.u32()
            let positions = r.u64(), tokenHash = r.u64(), modelSize = r.u64(), nameLength = Int(r.u32())
            guard vocabulary > 0 else { throw fail(.badHeader("vocabulary size 0")) }
            guard context >= 4 else { throw fail(.badHeader("context length \(context) (at least 4)")) }
            guard chunks > 0 else { throw fail(.badHeader("chunk count 0")) }
            guard reserved == 0 else { throw fail(.badHeader("reserved field \(reserved) is not 0")) }
            let perChunk = context - 1 - context / 2
            guard positions == UInt64(chunks) * UInt64(perChunk) else {
                throw fail(.badHeader("\(positions) scored positions, but \(chunks) chunks of \(context) score \(chunks * perChunk)"))
            }
            guard nameLength <= LogProbabilityFile.maximumNameBytes else {
                throw fail(.badHeader("model name of \(nameLength) bytes (at most \(LogProbabilityFile.maximumNameBytes))"))
            }
            guard headerBytes == (LogProbabilityFile.fixedHeaderBytes + nameLength + 7) / 8 * 8 else {
                throw fail(.badHeader("header size \(headerBytes) for a model name of \(nameLength) bytes"))
            }
            var name = [UInt8](repeating: 0, count: nameLength)
            if nameLength > 0 {
                guard try Self.read(fd, into: &name, at: UInt64(LogProbabilityFile.fixedHeaderBytes), path: path) == nameLength else {
                    throw fail(.truncated(expectedBytes: UInt64(headerBytes), actualBytes: size))
                }
            }
            guard let modelName = String(validating: name, as: UTF8.self) else { throw fail(.badHeader("model name is not UTF-8")) }
            let header = Header(vocabularySize: vocabulary, contextLength: context, chunkCount: chunks,
                                scoredPositions: Int(positions), tokenHash: tokenHash, modelName: modelName, modelSize: modelSize)

            // Size, then checksum.
            let expected = header.fileBytes
            guard size >= expected else { throw fail(.truncated(expectedBytes: expected, actualBytes: size)) }
            guard size == expected else { throw fail(.trailingBytes(expectedBytes: expected, actualBytes: size)) }
            var crc = CRC32()
            var piece = [UInt8](repeating: 0, count: 4 << 20)
            var offset: UInt64 = 0
            let body = expected - 4
            while offset < body {
                let n = Int(min(UInt64(piece.count), body - offset))
                guard try Self.read(fd, into: &piece, count: n, at: offset, path: path) == n else {
                    throw fail(.truncated(expectedBytes: expected, actualBytes: offset + UInt64(n)))
                }
                piece.withUnsafeBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                offset += UInt64(n)
            }
            var trailer = [UInt8](repeating: 0, count: 4)
            guard try Self.read(fd, into: &trailer, at: body, path: path) == 4 else {
                throw fail(.truncated(expectedBytes: expected, actualBytes: body))
            }
            let stored = trailer.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
            guard stored == crc.value else { throw fail(.checksumMismatch(stored: stored, computed: crc.value)) }

            self.fd = fd
            self.header = header
            fileBytes = size
            dataOffset = UInt64(headerBytes)
            record = [UInt8](repeating: 0, count: header.recordBytes)
            ok = true
        }

        deinit { close(fd) }

        /// Reads the next position: its log-probabilities into `logProbabilities` (V values)
        /// and returns its arg-max token.
        public func nextRecord(into logProbabilities: UnsafeMutableBufferPointer<Float>) throws(LogProbabilityFileError) -> Int {
            let v = header.vocabularySize
            guard positionsRead < header.scoredPositions else {
                throw LogProbabilityFileError(path: path, problem: .badRecord("read past the last of \(header.scoredPositions) positions"))
            }
            precondition(logProbabilities.count == v)
            let offset = dataOffset + UInt64(positionsRead) * UInt64(header.recordBytes)
            guard try Self.read(fd, into: &record, at: offset, path: path) == record.count else {
                throw LogProbabilityFileError(path: path, problem: .truncated(expectedBytes: header.fileBytes, actualBytes: offset))
            }
            let top = record.withUnsafeBytes { raw in
                for i in 0..<v {
                    let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 4 + 2 * i, as: UInt16.self))
                    logProbabilities[i] = FP16.toFloat(bits)
                }
                return Int(UInt32(littleEndian: raw.loadUnaligned(as: UInt32.self)))
            }
            guard top < v else {
                throw LogProbabilityFileError(path: path, problem: .badRecord("position \(positionsRead): arg-max token \(top) is outside the vocabulary of \(v)"))
            }
            positionsRead += 1
            return top
        }

        /// Reads up to `count` bytes (all of `buffer` by default) at `offset`; fewer only at the end of the file.
        static func read(_ fd: Int32, into buffer: inout [UInt8], count: Int? = nil, at offset: UInt64,
                         path: String) throws(LogProbabilityFileError) -> Int {
            let want = count ?? buffer.count
            var done = 0
            var failure: String?
            buffer.withUnsafeMutableBytes { raw in
                while done < want {
                    let n = pread(fd, raw.baseAddress! + done, want - done, off_t(offset) + off_t(done))
                    if n < 0 {
                        if errno == EINTR { continue }
                        failure = errnoText(errno)
                        return
                    }
                    if n == 0 { return }
                    done += n
                }
            }
            if let failure { throw LogProbabilityFileError(path: path, problem: .readFailed(failure)) }
            return done
        }
    }
}

/// A problem with a log-probability (KL base) file, naming the file.
public struct LogProbabilityFileError: Error, Equatable, CustomStringConvertible {
    public enum Problem: Equatable, Sendable {
        case cannotOpen(String)
        case cannotCreate(String, String)
        case readFailed(String)
        case writeFailed(String)
        case notALogProbabilityFile
        case unsupportedVersion(found: UInt32, supported: UInt32)
        case badHeader(String)
        case truncated(expectedBytes: UInt64, actualBytes: UInt64)
        case trailingBytes(expectedBytes: UInt64, actualBytes: UInt64)
        case checksumMismatch(stored: UInt32, computed: UInt32)
        case vocabularyMismatch(base: Int, model: Int)
        case contextMismatch(base: Int, run: Int)
        case chunkCountMismatch(base: Int, run: Int)
        case positionCountMismatch(base: Int, run: Int)
        case tokenMismatch(base: UInt64, run: UInt64)
        case incomplete(written: Int, expected: Int)
        case badRecord(String)
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
        case let .cannotCreate(tmp, e): what = "cannot create \(tmp): \(e)"
        case let .readFailed(e): what = "read failed: \(e)"
        case let .writeFailed(e): what = "write failed: \(e)"
        case .notALogProbabilityFile: what = "not a KL base file (no MOELOGPB magic; make one with --kl-base)"
        case let .unsupportedVersion(found, supported):
            what = "format version \(found) is not supported (this build reads version \(supported))"
        case let .badHeader(s): what = "bad header: \(s)"
        case let .truncated(expected, actual):
            what = "truncated: \(actual) bytes where the header announces \(expected)"
        case let .trailingBytes(expected, actual):
            what = "\(actual) bytes where the header announces \(expected): extra bytes at the end"
        case let .checksumMismatch(stored, computed):
            what = String(format: "checksum mismatch (stored %08x, computed %08x): the file is corrupted", stored, computed)
        case let .vocabularyMismatch(base, model):
            what = "the base has a vocabulary of \(base) tokens, the model \(model)"
        case let .contextMismatch(base, run):
            what = "the base was made with --ctx \(base), this run uses --ctx \(run)"
        case let .chunkCountMismatch(base, run):
            what = "the base has \(base) chunks, this run evaluates \(run) (same text and --chunks needed)"
        case let .positionCountMismatch(base, run):
            what = "the base has \(base) scored positions, this run \(run)"
        case let .tokenMismatch(base, run):
            what = String(format: "the base was made on other tokens (token hash %016llx, this run %016llx): another text, tokenizer or chunking", base, run)
        case let .incomplete(written, expected):
            what = "only \(written) of \(expected) positions were written"
        case let .badRecord(s): what = "bad record: \(s)"
        }
        return "\(path): \(what)"
    }
}

func errnoText(_ e: Int32) -> String {
    if let s = strerror(e) { return String(cString: s) }
    return "errno \(e)"
}
