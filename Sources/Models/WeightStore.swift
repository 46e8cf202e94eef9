import GGUF
import Kernels
import Storage

/// A GGUF file's tensors, read into memory through the storage layer, with checked
/// accessors that turn "missing", "wrong shape" and "unsupported type" into typed errors.
///
/// The whole data section is read with large aligned requests (many in flight), so loading
/// runs at disk speed. The offloading work replaces this for expert tensors.
public final class WeightStore: @unchecked Sendable {
    public let file: GGUFFile
    private let buffer: AlignedBuffer
    /// File offset of `buffer`'s first byte (the data section's start, rounded down to a page).
    private let bufferFileOffset: UInt64
    /// F32 copies of small vectors stored in other types (norms, biases), kept alive here.
    private var converted: [String: UnsafeMutableBufferPointer<Float>] = [:]

    /// Reads every tensor of `file` from `backend`.
    public init(file: GGUFFile, backend: any StorageBackend,
                progress: ((_ done: UInt64, _ total: UInt64) -> Void)? = nil) throws(ModelError) {
        self.file = file
        let start = file.dataOffset & ~UInt64(AlignedBuffer.minimumAlignment - 1)
        let end = file.tensors.map { $0.absoluteOffset + $0.byteCount }.max() ?? file.dataOffset
        let total = end - start
        guard total <= UInt64(Int.max / 2) else { throw .file("tensor data of \(total) bytes does not fit in memory") }
        do {
            buffer = try AlignedBuffer(byteCount: Int(total))
        } catch {
            throw .storage("cannot allocate \(total) bytes for the weights: \(error)")
        }
        bufferFileOffset = start
        // Requests of 8 MiB, a window of them in flight: sequential, aligned, fast.
        let chunk = 8 << 20
        var requests: [ReadRequest] = []
        var offset = 0
        while offset < Int(total) {
            let length = min(chunk, Int(total) - offset)
            requests.append(ReadRequest(offset: start + UInt64(offset), length: length,
                                        destination: buffer.baseAddress + offset, tag: UInt64(requests.count)))
            offset += length
        }
        do {
            let window = 32
            var next = 0
            var done: UInt64 = 0
            while next < requests.count {
                let batch = Array(requests[next..<min(next + window, requests.count)])
                try backend.readBatch(batch)
                next += batch.count
                done += batch.reduce(0) { $0 + UInt64($1.length) }
                progress?(done, total)
            }
        } catch {
            throw .storage("\(backend.path): \(error)")
        }
    }

    deinit {
        for (_, b) in converted { b.deallocate() }
    }

    public func info(_ name: String) -> GGUFTensorInfo? { file.tensor(named: name) }
    public func contains(_ name: String) -> Bool { file.tensor(named: name) != nil }

    /// Address of a tensor's first byte in memory.
    public func address(of info: GGUFTensorInfo) -> UnsafeRawPointer {
        UnsafeRawPointer(buffer.baseAddress + Int(info.absoluteOffset - bufferFileOffset))
    }

    private func lookup(_ name: String, shape: [Int]) throws(ModelError) -> GGUFTensorInfo {
        guard let info = file.tensor(named: name) else { throw .missingTensor(name) }
        var actual = info.dimensions.map { Int($0) }
        // ggml treats trailing 1-sized dimensions as absent.
        while actual.count > shape.count, actual.last == 1 { actual.removeLast() }
        guard actual == shape else { throw .wrongShape(tensor: name, expected: shape, actual: actual) }
        return info
    }

    /// A matrix of `rows` rows of `columns` values (ggml shape [columns, rows]) usable by MatMul.
    public func matrix(_ name: String, rows: Int, columns: Int) throws(ModelError) -> WeightMatrix {
        let info = try lookup(name, shape: [columns, rows])
        guard MatMul.supports(info.type), columns % info.type.blockSize == 0 else {
            throw .unsupportedType(tensor: name, type: info.type)
        }
        return WeightMatrix(type: info.type, rows: rows, columns: columns, base: address(of: info))
    }

    /// `count` stacked matrices (ggml shape [columns, rows, count]), e.g. a layer's experts.
    public func stackedMatrices(_ name: String, count: Int, rows: Int, columns: Int) throws(ModelError) -> [WeightMatrix] {
        let info = try lookup(name, shape: [columns, rows, count])
        guard MatMul.supports(info.type), columns % info.type.blockSize == 0 else {
            throw .unsupportedType(tensor: name, type: info.type)
        }
        let base = address(of: info)
        let stride = rows * (columns / info.type.blockSize * info.type.bytesPerBlock)
        return (0..<count).map { WeightMatrix(type: info.type, rows: rows, columns: columns, base: base + $0 * stride) }
    }

    /// A vector of `count` F32 values (norm weights, biases); other float types are converted once.
    public func vector(_ name: String, count: Int) throws(ModelError) -> UnsafePointer<Float> {
        let info = try lookup(name, shape: [count])
        if info.type == .f32 { return address(of: info).assumingMemoryBound(to: Float.self) }
        if let done = converted[name] { return UnsafePointer(done.baseAddress!) }
        guard Dequantize.supports(info.type), count % info.type.blockSize == 0 else {
            throw .unsupportedType(tensor: name, type: info.type)
        }
        let out = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        Dequantize.row(info.type, from: address(of: info), to: out.baseAddress!, count: count)
        converted[name] = out
        return UnsafePointer(out.baseAddress!)
    }

    public func optionalVector(_ name: String, count: Int) throws(ModelError) -> UnsafePointer<Float>? {
        contains(name) ? try vector(name, count: count) : nil
    }
}
