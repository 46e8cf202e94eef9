import Storage

/// Buffered little-endian reads from a storage backend, bounded by the file size so a
/// hostile length or count fails before anything is allocated.
struct ByteCursor {
    let backend: any StorageBackend
    let fileSize: UInt64
    private(set) var position: UInt64 = 0
    private var buffer: [UInt8] = []
    private var bufferStart: UInt64 = 0
    private static let chunk = 1 << 20

    init(backend: any StorageBackend) {
        self.backend = backend
        self.fileSize = backend.fileSize
    }

    var remaining: UInt64 { fileSize - position }

    /// Makes `n` bytes at `position` available in `buffer`, or throws `.truncated`.
    private mutating func ensure(_ n: Int, _ field: @autoclosure () -> String) throws {
        if UInt64(n) > remaining {
            throw GGUFError(.truncated, field: field(), offset: position,
                            "needs \(n) bytes but the file ends after \(remaining)")
        }
        let bufferEnd = bufferStart + UInt64(buffer.count)
        if position >= bufferStart && position + UInt64(n) <= bufferEnd { return }
        // Refill from an aligned start so O_DIRECT backends can read in place.
        let start = position & ~4095
        let want = max(Self.chunk, Int(position - start) + n)
        let length = Int(min(UInt64(want), fileSize - start))
        do {
            buffer = try backend.readBytes(at: start, count: length)
        } catch let e as StorageError {
            throw GGUFError(.storage, field: field(), offset: position, e.description)
        }
        bufferStart = start
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, _ field: @autoclosure () -> String) throws -> T {
        let size = MemoryLayout<T>.size
        try ensure(size, field())
        let at = Int(position - bufferStart)
        let v = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: T.self) }
        position += UInt64(size)
        return T(littleEndian: v)
    }

    mutating func u8(_ f: @autoclosure () -> String) throws -> UInt8 { try load(UInt8.self, f()) }
    mutating func u32(_ f: @autoclosure () -> String) throws -> UInt32 { try load(UInt32.self, f()) }
    mutating func u64(_ f: @autoclosure () -> String) throws -> UInt64 { try load(UInt64.self, f()) }

    /// Copies `count` raw bytes into `destination`, reading large spans straight from the backend.
    mutating func copy(into destination: UnsafeMutableRawBufferPointer, _ field: @autoclosure () -> String) throws {
        let n = destination.count
        if UInt64(n) > remaining {
            throw GGUFError(.truncated, field: field(), offset: position,
                            "needs \(n) bytes but the file ends after \(remaining)")
        }
        if n == 0 { return }
        if n <= Self.chunk {
            try ensure(n, field())
            let at = Int(position - bufferStart)
            buffer.withUnsafeBytes { src in
                destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[at..<(at + n)]))
            }
        } else {
            do {
                try backend.read(into: destination, at: position)
            } catch let e as StorageError {
                throw GGUFError(.storage, field: field(), offset: position, e.description)
            }
        }
        position += UInt64(n)
    }

    mutating func bytes(_ n: Int, _ field: @autoclosure () -> String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        try out.withUnsafeMutableBytes { try copy(into: $0, field()) }
        return out
    }

    /// Checks that `count` items of at least `minSize` bytes each could fit in the rest of the file.
    func checkCount(_ count: UInt64, minSize: Int, _ field: @autoclosure () -> String, at offset: UInt64) throws {
        let (need, overflow) = count.multipliedReportingOverflow(by: UInt64(minSize))
        if overflow || need > remaining || count > UInt64(Int32.max) {
            throw GGUFError(.countTooLarge, field: field(), offset: offset,
                            "count \(count) needs at least \(overflow ? "more than 2^64" : String(need)) bytes but only \(remaining) remain (corrupt count or truncated file)")
        }
    }
}

struct GGUFParser {
    var cursor: ByteCursor
    let path: String
    static let maxNesting = 8

    init(backend: any StorageBackend) {
        cursor = ByteCursor(backend: backend)
        path = backend.path
    }

    mutating func parse() throws -> GGUFFile {
        let magic = try cursor.u32("header.magic")
        guard magic == GGUFFile.magic else {
            let text = withUnsafeBytes(of: magic.littleEndian) { raw in
                raw.map { (0x20..<0x7f).contains($0) ? String(UnicodeScalar($0)) : "." }.joined()
            }
            throw GGUFError(.badMagic, field: "header.magic", offset: 0,
                            "expected \"GGUF\", found \"\(text)\" (0x\(String(magic, radix: 16)))")
        }
        let version = try cursor.u32("header.version")
        guard version == 2 || version == 3 else {
            let detail: String
            if version == 1 {
                detail = "version 1 (pre-2023 layout with 32-bit counts) is not supported; re-convert the model"
            } else if version.byteSwapped == 2 || version.byteSwapped == 3 {
                detail = "big-endian GGUF files are not supported"
            } else {
                detail = "version \(version) is not supported (2 and 3 are)"
            }
            throw GGUFError(.unsupportedVersion, field: "header.version", offset: 4, detail)
        }
        let tensorCountOffset = cursor.position
        let tensorCount = try cursor.u64("header.tensor_count")
        let kvCountOffset = cursor.position
        let kvCount = try cursor.u64("header.metadata_kv_count")
        // Smallest tensor info: name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
        try cursor.checkCount(tensorCount, minSize: 32, "header.tensor_count", at: tensorCountOffset)
        // Smallest key–value pair: key length (8) + type (4) + one byte of value.
        try cursor.checkCount(kvCount, minSize: 13, "header.metadata_kv_count", at: kvCountOffset)

        var metadata = GGUFMetadata()
        for i in 0..<Int(kvCount) {
            let keyOffset = cursor.position
            let keyBytes = try readStringBytes("kv[\(i)].key")
            guard let key = String(validating: keyBytes, as: UTF8.self), !key.isEmpty else {
                throw GGUFError(.invalidString, field: "kv[\(i)].key", offset: keyOffset,
                                keyBytes.isEmpty ? "empty key" : "key is not valid UTF-8")
            }
            if metadata.contains(key) {
                throw GGUFError(.duplicateKey, field: "kv[\(i)].key", offset: keyOffset, "key '\(key)' appears twice")
            }
            let typeOffset = cursor.position
            let rawType = try cursor.u32("kv '\(key)'.type")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw GGUFError(.unknownValueType, field: "kv '\(key)'.type", offset: typeOffset,
                                "value type \(rawType) is not a GGUF type (0–12)")
            }
            metadata[key] = try readValue(type, field: "kv '\(key)'", depth: 0)
        }

        let alignment = try resolveAlignment(metadata)

        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(Int(tensorCount))
        var seen: Set<String> = []
        var relative: [(name: String, offset: UInt64, start: UInt64)] = []
        for i in 0..<Int(tensorCount) {
            let start = cursor.position
            let nameBytes = try readStringBytes("tensor[\(i)].name")
            guard let name = String(validating: nameBytes, as: UTF8.self), !name.isEmpty else {
                throw GGUFError(.invalidString, field: "tensor[\(i)].name", offset: start,
                                nameBytes.isEmpty ? "empty tensor name" : "tensor name is not valid UTF-8")
            }
            guard nameBytes.count < GGUFFile.maxTensorNameLength else {
                throw GGUFError(.invalidString, field: "tensor[\(i)].name", offset: start,
                                "name is \(nameBytes.count) bytes; ggml allows at most \(GGUFFile.maxTensorNameLength - 1)")
            }
            guard seen.insert(name).inserted else {
                throw GGUFError(.duplicateTensor, field: "tensor[\(i)].name", offset: start, "tensor '\(name)' appears twice")
            }
            let field = "tensor '\(name)'"
            let dimsOffset = cursor.position
            let nDims = try cursor.u32("\(field).n_dims")
            guard (1...UInt32(GGUFFile.maxDimensions)).contains(nDims) else {
                throw GGUFError(.invalidDimensions, field: "\(field).n_dims", offset: dimsOffset,
                                "\(nDims) dimensions; ggml supports 1 to \(GGUFFile.maxDimensions)")
            }
            var dims: [UInt64] = []
            var elements: UInt64 = 1
            for d in 0..<Int(nDims) {
                let at = cursor.position
                let n = try cursor.u64("\(field).dims[\(d)]")
                guard n <= UInt64(Int64.max) else {
                    throw GGUFError(.invalidDimensions, field: "\(field).dims[\(d)]", offset: at, "dimension \(n) is negative or absurd")
                }
                let (p, overflow) = elements.multipliedReportingOverflow(by: n)
                guard !overflow, p <= UInt64(Int64.max) else {
                    throw GGUFError(.invalidDimensions, field: "\(field).dims[\(d)]", offset: at,
                                    "element count overflows (dims \(dims + [n]))")
                }
                dims.append(n)
                elements = p
            }
            let typeOffset = cursor.position
            let rawType = try cursor.u32("\(field).type")
            guard let type = GGMLType(rawValue: rawType) else {
                throw GGUFError(.unknownTensorType, field: "\(field).type", offset: typeOffset,
                                "ggml type \(rawType) is unknown or was removed from ggml")
            }
            guard dims[0] % UInt64(type.blockSize) == 0, let bytes = type.byteCount(elements: elements) else {
                throw GGUFError(.invalidDimensions, field: "\(field).dims[0]", offset: dimsOffset + 4,
                                "row length \(dims[0]) is not a multiple of \(type.name)'s block size \(type.blockSize)")
            }
            let offsetAt = cursor.position
            let offset = try cursor.u64("\(field).offset")
            if offset % UInt64(alignment) != 0 {
                throw GGUFError(.misalignedTensor, field: "\(field).offset", offset: offsetAt,
                                "data offset \(offset) is not a multiple of the alignment \(alignment)")
            }
            relative.append((name, offset, offsetAt))
            tensors.append(GGUFTensorInfo(name: name, dimensions: dims, type: type, relativeOffset: offset,
                                          absoluteOffset: 0, elementCount: elements, byteCount: bytes))
        }

        let headerEnd = cursor.position
        let dataOffset = (headerEnd + UInt64(alignment) - 1) / UInt64(alignment) * UInt64(alignment)
        let fileSize = cursor.fileSize
        for i in tensors.indices {
            let t = tensors[i]
            let (abs, o1) = dataOffset.addingReportingOverflow(t.relativeOffset)
            let (end, o2) = abs.addingReportingOverflow(t.byteCount)
            if o1 || o2 || end > fileSize {
                throw GGUFError(.tensorOutOfBounds, field: "tensor '\(t.name)'.offset", offset: relative[i].start,
                                "data [\(o1 ? "overflow" : String(abs)), +\(t.byteCount)) runs past the end of the \(fileSize)-byte file")
            }
            tensors[i].absoluteOffset = abs
        }
        // Tensor data must not overlap (llama.cpp writes them back to back in table order).
        let byOffset = tensors.indices.sorted { tensors[$0].relativeOffset < tensors[$1].relativeOffset }
        for k in byOffset.indices.dropFirst() {
            let prev = tensors[byOffset[k - 1]], cur = tensors[byOffset[k]]
            if prev.relativeOffset + prev.byteCount > cur.relativeOffset && cur.byteCount > 0 && prev.byteCount > 0 {
                throw GGUFError(.overlappingTensors, field: "tensor '\(cur.name)'.offset", offset: relative[byOffset[k]].start,
                                "data overlaps tensor '\(prev.name)'")
            }
        }
        return GGUFFile(path: path, version: version, metadata: metadata, tensors: tensors,
                        alignment: alignment, headerSize: headerEnd, dataOffset: dataOffset, fileSize: fileSize)
    }

    private func resolveAlignment(_ metadata: GGUFMetadata) throws -> Int {
        guard let value = metadata[GGUFFile.alignmentKey] else { return GGUFFile.defaultAlignment }
        guard case let .uint32(a) = value else {
            throw GGUFError(.invalidAlignment, field: "kv '\(GGUFFile.alignmentKey)'", offset: 0,
                            "must be a u32, found \(value.type.name)")
        }
        guard a > 0, a & (a - 1) == 0, a <= 1 << 30 else {
            throw GGUFError(.invalidAlignment, field: "kv '\(GGUFFile.alignmentKey)'", offset: 0,
                            "alignment \(a) is not a power of two")
        }
        return Int(a)
    }

    private mutating func readStringBytes(_ field: @autoclosure () -> String) throws -> [UInt8] {
        let at = cursor.position
        let length = try cursor.u64("\(field()).length")
        if length > cursor.remaining {
            throw GGUFError(.truncated, field: field(), offset: at,
                            "string of \(length) bytes, but the file ends after \(cursor.remaining)")
        }
        return try cursor.bytes(Int(length), field())
    }

    private mutating func readValue(_ type: GGUFValueType, field: String, depth: Int) throws -> GGUFValue {
        let at = cursor.position
        switch type {
        case .uint8: return .uint8(try cursor.u8(field))
        case .int8: return .int8(Int8(bitPattern: try cursor.u8(field)))
        case .uint16: return .uint16(try cursor.load(UInt16.self, field))
        case .int16: return .int16(Int16(bitPattern: try cursor.load(UInt16.self, field)))
        case .uint32: return .uint32(try cursor.u32(field))
        case .int32: return .int32(Int32(bitPattern: try cursor.u32(field)))
        case .uint64: return .uint64(try cursor.u64(field))
        case .int64: return .int64(Int64(bitPattern: try cursor.u64(field)))
        case .float32: return .float32(Float(bitPattern: try cursor.u32(field)))
        case .float64: return .float64(Double(bitPattern: try cursor.u64(field)))
        case .bool:
            let b = try cursor.u8(field)
            guard b <= 1 else { throw GGUFError(.invalidValue, field: field, offset: at, "bool byte is \(b), not 0 or 1") }
            return .bool(b == 1)
        case .string: return .string(GGUFString(bytes: try readStringBytes(field)))
        case .array: return .array(try readArray(field: field, depth: depth + 1))
        }
    }

    private mutating func readArray(field: String, depth: Int) throws -> GGUFArray {
        let at = cursor.position
        guard depth <= Self.maxNesting else {
            throw GGUFError(.nestingTooDeep, field: field, offset: at, "arrays nested deeper than \(Self.maxNesting)")
        }
        let rawType = try cursor.u32("\(field).element_type")
        guard let type = GGUFValueType(rawValue: rawType) else {
            throw GGUFError(.unknownValueType, field: "\(field).element_type", offset: at,
                            "array element type \(rawType) is not a GGUF type (0–12)")
        }
        let countAt = cursor.position
        let count64 = try cursor.u64("\(field).count")
        try cursor.checkCount(count64, minSize: type.minimumEncodedSize, "\(field).count", at: countAt)
        let count = Int(count64)
        switch type {
        case .uint8: return .uint8(try fixedArray(UInt8.self, count, field))
        case .int8: return .int8(try fixedArray(Int8.self, count, field))
        case .uint16: return .uint16(try fixedArray(UInt16.self, count, field))
        case .int16: return .int16(try fixedArray(Int16.self, count, field))
        case .uint32: return .uint32(try fixedArray(UInt32.self, count, field))
        case .int32: return .int32(try fixedArray(Int32.self, count, field))
        case .uint64: return .uint64(try fixedArray(UInt64.self, count, field))
        case .int64: return .int64(try fixedArray(Int64.self, count, field))
        case .float32: return .float32(try fixedArray(UInt32.self, count, field).map { Float(bitPattern: $0) })
        case .float64: return .float64(try fixedArray(UInt64.self, count, field).map { Double(bitPattern: $0) })
        case .bool:
            let raw = try fixedArray(UInt8.self, count, field)
            if let bad = raw.firstIndex(where: { $0 > 1 }) {
                throw GGUFError(.invalidValue, field: "\(field)[\(bad)]", offset: countAt + 8 + UInt64(bad),
                                "bool byte is \(raw[bad]), not 0 or 1")
            }
            return .bool(raw.map { $0 == 1 })
        case .string:
            var out: [GGUFString] = []
            out.reserveCapacity(count)
            for i in 0..<count { out.append(GGUFString(bytes: try readStringBytes("\(field)[\(i)]"))) }
            return .string(out)
        case .array:
            var out: [GGUFArray] = []
            out.reserveCapacity(count)
            for i in 0..<count { out.append(try readArray(field: "\(field)[\(i)]", depth: depth + 1)) }
            return .array(out)
        }
    }

    private mutating func fixedArray<T: FixedWidthInteger>(_: T.Type, _ count: Int, _ field: String) throws -> [T] {
        var out = [T](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try cursor.copy(into: $0, field) }
        #if _endian(big)
        for i in out.indices { out[i] = T(littleEndian: out[i]) }
        #endif
        return out
    }
}
