import Storage

/// One tensor's entry in the file's tensor table.
public struct GGUFTensorInfo: Sendable, Equatable {
    public var name: String
    /// Dimensions as stored: `dimensions[0]` varies fastest (ggml's ne[0], a row's length).
    public var dimensions: [UInt64]
    public var type: GGMLType
    /// Offset from the start of the data section, as stored.
    public var relativeOffset: UInt64
    /// Offset from the start of the file.
    public var absoluteOffset: UInt64
    public var elementCount: UInt64
    public var byteCount: UInt64

    /// Elements per row (ne[0]).
    public var rowLength: Int { Int(dimensions[0]) }
    /// Rows across all higher dimensions.
    public var rowCount: Int { Int(elementCount / max(dimensions[0], 1)) }
    /// Bytes of one row.
    public var rowBytes: Int { Int(dimensions[0]) / type.blockSize * type.bytesPerBlock }
}

/// Metadata key–value pairs in file order, with lookup by key.
public struct GGUFMetadata: Sendable, Equatable {
    public private(set) var entries: [(key: String, value: GGUFValue)] = []
    private var index: [String: Int] = [:]

    public init() {}

    public var count: Int { entries.count }
    public var keys: [String] { entries.map(\.key) }

    public subscript(key: String) -> GGUFValue? {
        get { index[key].map { entries[$0].value } }
        set {
            if let i = index[key] {
                if let newValue { entries[i].value = newValue } else { remove(key) }
            } else if let newValue {
                index[key] = entries.count
                entries.append((key, newValue))
            }
        }
    }

    public func contains(_ key: String) -> Bool { index[key] != nil }

    public mutating func remove(_ key: String) {
        guard let i = index[key] else { return }
        entries.remove(at: i)
        index = [:]
        for (j, e) in entries.enumerated() { index[e.key] = j }
    }

    public static func == (a: GGUFMetadata, b: GGUFMetadata) -> Bool {
        a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

/// A parsed GGUF file: header, metadata and tensor table. Tensor data stays on disk;
/// callers read it through the storage layer at `absoluteOffset`.
public struct GGUFFile: Sendable {
    public static let magic: UInt32 = 0x4655_4747 // "GGUF" little-endian
    public static let defaultAlignment = 32
    public static let alignmentKey = "general.alignment"
    /// ggml's GGML_MAX_NAME: tensor names must be shorter.
    public static let maxTensorNameLength = 64
    /// ggml's GGML_MAX_DIMS.
    public static let maxDimensions = 4

    public var path: String
    public var version: UInt32
    public var metadata: GGUFMetadata
    public var tensors: [GGUFTensorInfo]
    public var alignment: Int
    /// End of the tensor table (the alignment padding and data section follow).
    public var headerSize: UInt64
    /// Start of the data section in the file.
    public var dataOffset: UInt64
    public var fileSize: UInt64

    private var tensorIndex: [String: Int]

    init(path: String, version: UInt32, metadata: GGUFMetadata, tensors: [GGUFTensorInfo],
         alignment: Int, headerSize: UInt64, dataOffset: UInt64, fileSize: UInt64) {
        self.headerSize = headerSize
        self.path = path
        self.version = version
        self.metadata = metadata
        self.tensors = tensors
        self.alignment = alignment
        self.dataOffset = dataOffset
        self.fileSize = fileSize
        var idx: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { idx[t.name] = i }
        self.tensorIndex = idx
    }

    public func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// `general.architecture`, if present.
    public var architecture: String? { metadata["general.architecture"]?.string }

    /// Total bytes of tensor data (without padding).
    public var tensorBytes: UInt64 { tensors.reduce(0) { $0 + $1.byteCount } }

    /// Parses the header, metadata and tensor table through `backend`.
    public static func read(from backend: any StorageBackend) throws -> GGUFFile {
        var parser = GGUFParser(backend: backend)
        return try parser.parse()
    }

    /// Opens `path` through the storage layer and parses it.
    public static func open(path: String, backend: StorageBackendPreference = .automatic) throws -> GGUFFile {
        let file = try StorageFile.open(path: path, backend: backend)
        return try read(from: file)
    }

    /// Reads one tensor's bytes.
    public func readData(of tensor: GGUFTensorInfo, from backend: any StorageBackend) throws -> [UInt8] {
        guard tensor.byteCount <= UInt64(Int.max) else {
            throw GGUFError(.tensorOutOfBounds, field: "tensor '\(tensor.name)'", offset: tensor.absoluteOffset,
                            "size \(tensor.byteCount) does not fit in memory")
        }
        do {
            return try backend.readBytes(at: tensor.absoluteOffset, count: Int(tensor.byteCount))
        } catch let e as StorageError {
            throw GGUFError(.storage, field: "tensor '\(tensor.name)'.data", offset: tensor.absoluteOffset, e.description)
        }
    }
}
