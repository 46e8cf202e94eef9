import Storage
#if canImport(Glibc)
import Glibc
#endif

/// Writes GGUF v3 files the way llama.cpp's gguf writer lays them out: header, metadata
/// in insertion order, tensor table, zero padding to the alignment, then each tensor's
/// data padded to the alignment. Files are written to a temporary name, synced and
/// renamed, so a crash never leaves a half-written file in place.
public struct GGUFWriter {
    /// Where a tensor's bytes come from when the file is written.
    public enum TensorSource {
        case bytes([UInt8])
        /// `count` bytes at `offset` in another file (for copying and repacking).
        case file(any StorageBackend, offset: UInt64)
        /// Fills the given buffer (exactly the tensor's byte count).
        case generator((UnsafeMutableRawBufferPointer) throws -> Void)
    }

    public struct Tensor {
        public var name: String
        public var dimensions: [UInt64]
        public var type: GGMLType
        public var source: TensorSource
        public var byteCount: UInt64
    }

    public var version: UInt32 = 3
    public var metadata = GGUFMetadata()
    /// Whether a file without tensors still gets its header padded to the alignment.
    /// gguf.cpp pads; gguf-py's vocab-only files do not. Copies keep the source's choice.
    public var padsWhenEmpty = true
    public private(set) var tensors: [Tensor] = []

    public init() {}

    /// A writer holding everything in `file`, with tensor data copied from `backend`.
    public init(copying file: GGUFFile, from backend: any StorageBackend) {
        version = file.version
        metadata = file.metadata
        padsWhenEmpty = file.fileSize >= file.dataOffset
        for t in file.tensors {
            tensors.append(Tensor(name: t.name, dimensions: t.dimensions, type: t.type,
                                  source: .file(backend, offset: t.absoluteOffset), byteCount: t.byteCount))
        }
    }

    public var alignment: Int {
        if case let .uint32(a)? = metadata[GGUFFile.alignmentKey], a > 0, a & (a - 1) == 0 { return Int(a) }
        return GGUFFile.defaultAlignment
    }

    public mutating func addTensor(name: String, dimensions: [UInt64], type: GGMLType, source: TensorSource) throws {
        let field = "tensor '\(name)'"
        guard !name.isEmpty, name.utf8.count < GGUFFile.maxTensorNameLength else {
            throw GGUFError(.invalidString, field: field, offset: 0, "tensor names must be 1 to \(GGUFFile.maxTensorNameLength - 1) bytes")
        }
        guard !tensors.contains(where: { $0.name == name }) else {
            throw GGUFError(.duplicateTensor, field: field, offset: 0, "tensor '\(name)' added twice")
        }
        guard (1...GGUFFile.maxDimensions).contains(dimensions.count) else {
            throw GGUFError(.invalidDimensions, field: field, offset: 0, "\(dimensions.count) dimensions")
        }
        var elements: UInt64 = 1
        for d in dimensions {
            let (p, o) = elements.multipliedReportingOverflow(by: d)
            guard !o else { throw GGUFError(.invalidDimensions, field: field, offset: 0, "element count overflows") }
            elements = p
        }
        guard dimensions[0] % UInt64(type.blockSize) == 0, let bytes = type.byteCount(elements: elements) else {
            throw GGUFError(.invalidDimensions, field: field, offset: 0,
                            "row length \(dimensions[0]) is not a multiple of \(type.name)'s block size \(type.blockSize)")
        }
        if case let .bytes(b) = source, UInt64(b.count) != bytes {
            throw GGUFError(.invalidValue, field: field, offset: 0, "\(b.count) bytes given, \(bytes) expected")
        }
        tensors.append(Tensor(name: name, dimensions: dimensions, type: type, source: source, byteCount: bytes))
    }

    /// Relative data offsets, as llama.cpp assigns them: back to back, each padded to the alignment.
    public func dataOffsets() -> [UInt64] {
        let a = UInt64(alignment)
        var offsets: [UInt64] = []
        var next: UInt64 = 0
        for t in tensors {
            offsets.append(next)
            next += (t.byteCount + a - 1) / a * a
        }
        return offsets
    }

    /// Header, metadata and tensor table, padded to the alignment (the data section follows).
    public func headerBytes() -> [UInt8] {
        var out = ByteSink()
        out.u32(GGUFFile.magic)
        out.u32(version)
        out.u64(UInt64(tensors.count))
        out.u64(UInt64(metadata.count))
        for (key, value) in metadata.entries {
            out.string(Array(key.utf8))
            out.u32(value.type.rawValue)
            out.value(value)
        }
        for (t, offset) in zip(tensors, dataOffsets()) {
            out.string(Array(t.name.utf8))
            out.u32(UInt32(t.dimensions.count))
            for d in t.dimensions { out.u64(d) }
            out.u32(t.type.rawValue)
            out.u64(offset)
        }
        if !tensors.isEmpty || padsWhenEmpty { out.pad(to: alignment) }
        return out.bytes
    }

    /// Writes the file atomically to `path`. `progress` receives (bytes written, total).
    public func write(to path: String, progress: ((UInt64, UInt64) -> Void)? = nil) throws {
        let file: AtomicFileWriter
        do { file = try AtomicFileWriter(path: path) } catch {
            throw GGUFError(.writeFailed, field: path, offset: 0, error.description)
        }
        let header = headerBytes()
        let a = UInt64(alignment)
        let total = UInt64(header.count) + tensors.reduce(0) { $0 + ($1.byteCount + a - 1) / a * a }
        var written: UInt64 = 0
        func emit(_ buffer: UnsafeRawBufferPointer) throws {
            do { try file.write(buffer) } catch {
                throw GGUFError(.writeFailed, field: path, offset: written, error.description)
            }
            written += UInt64(buffer.count)
            progress?(written, total)
        }
        try header.withUnsafeBytes { try emit($0) }

        let chunk = 4 << 20
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { scratch.deallocate() }
        let zeros = [UInt8](repeating: 0, count: alignment)
        for t in tensors {
            switch t.source {
            case let .bytes(b):
                try b.withUnsafeBytes { try emit($0) }
            case let .file(backend, offset):
                var done: UInt64 = 0
                while done < t.byteCount {
                    let n = Int(min(UInt64(chunk), t.byteCount - done))
                    let view = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n])
                    do { try backend.read(into: view, at: offset + done) } catch let e as StorageError {
                        throw GGUFError(.storage, field: "tensor '\(t.name)'.data", offset: offset + done, e.description)
                    }
                    try emit(UnsafeRawBufferPointer(view))
                    done += UInt64(n)
                }
            case let .generator(fill):
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(t.byteCount), alignment: 64)
                defer { buf.deallocate() }
                try fill(buf)
                try emit(UnsafeRawBufferPointer(buf))
            }
            let pad = Int((a - t.byteCount % a) % a)
            if pad > 0 { try zeros.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<pad])) } }
        }
        do { try file.commit() } catch {
            throw GGUFError(.writeFailed, field: path, offset: written, error.description)
        }
    }
}

/// Little-endian serialization of GGUF primitives.
struct ByteSink {
    var bytes: [UInt8] = []

    mutating func int<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
    mutating func u32(_ v: UInt32) { int(v) }
    mutating func u64(_ v: UInt64) { int(v) }
    mutating func string(_ s: [UInt8]) { u64(UInt64(s.count)); bytes.append(contentsOf: s) }
    mutating func pad(to alignment: Int) {
        let r = bytes.count % alignment
        if r != 0 { bytes.append(contentsOf: repeatElement(0, count: alignment - r)) }
    }

    mutating func value(_ v: GGUFValue) {
        switch v {
        case let .uint8(x): int(x)
        case let .int8(x): int(x)
        case let .uint16(x): int(x)
        case let .int16(x): int(x)
        case let .uint32(x): int(x)
        case let .int32(x): int(x)
        case let .uint64(x): int(x)
        case let .int64(x): int(x)
        case let .float32(x): int(x.bitPattern)
        case let .float64(x): int(x.bitPattern)
        case let .bool(x): int(UInt8(x ? 1 : 0))
        case let .string(s): string(s.bytes)
        case let .array(a): array(a)
        }
    }

    mutating func array(_ a: GGUFArray) {
        u32(a.elementType.rawValue)
        u64(UInt64(a.count))
        switch a {
        case let .uint8(x): bytes.append(contentsOf: x)
        case let .int8(x): x.forEach { int($0) }
        case let .uint16(x): x.forEach { int($0) }
        case let .int16(x): x.forEach { int($0) }
        case let .uint32(x): x.forEach { int($0) }
        case let .int32(x): x.forEach { int($0) }
        case let .uint64(x): x.forEach { int($0) }
        case let .int64(x): x.forEach { int($0) }
        case let .float32(x): x.forEach { int($0.bitPattern) }
        case let .float64(x): x.forEach { int($0.bitPattern) }
        case let .bool(x): x.forEach { int(UInt8($0 ? 1 : 0)) }
        case let .string(x): x.forEach { string($0.bytes) }
        case let .array(x): x.forEach { array($0) }
        }
    }
}
