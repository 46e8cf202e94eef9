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
    /// Where each loaded tensor's first byte sits in `buffer`.
    private let bufferOffsets: [String: Int]
    /// Bytes of tensor data held in memory (what was read, page rounding included).
    public var residentBytes: Int { buffer.count }
    /// F32 copies of small vectors stored in other types (norms, biases), kept alive here.
    private var converted: [String: UnsafeMutableBufferPointer<Float>] = [:]

    /// Reads the tensors of `file` from `backend`, except those `skip` names (an offloading
    /// runtime skips the experts, which it loads on demand).
    public init(file: GGUFFile, backend: any StorageBackend, skip: (GGUFTensorInfo) -> Bool = { _ in false },
                progress: ((_ done: UInt64, _ total: UInt64) -> Void)? = nil) throws(ModelError) {
        self.file = file
        // Runs of adjacent loaded tensors, each read as one page-aligned range so the reads
        // go straight into the buffer with O_DIRECT.
        let page = UInt64(AlignedBuffer.minimumAlignment)
        let loaded = file.tensors.filter { !skip($0) }.sorted { $0.absoluteOffset < $1.absoluteOffset }
        var runs: [(start: UInt64, end: UInt64)] = []
        for t in loaded {
            let start = t.absoluteOffset & ~(page - 1)
            let end = t.absoluteOffset + t.byteCount
            if let last = runs.last, start <= (last.end + page - 1) & ~(page - 1) {
                runs[runs.count - 1].end = max(last.end, end)
            } else {
                runs.append((start, end))
            }
        }
        var offsets: [String: Int] = [:]
        var runOffsets: [Int] = []
        var total = 0
        for r in runs {
            runOffsets.append(total)
            let length = r.end - r.start
            guard length <= UInt64(Int.max / 4) else { throw .file("tensor data of \(length) bytes does not fit in memory") }
            total += (Int(length) + Int(page) - 1) & ~(Int(page) - 1)
        }
        for t in loaded {
            // The run holding t: the last one starting at or before it.
            var lo = 0, hi = runs.count - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if runs[mid].start <= t.absoluteOffset { lo = mid } else { hi = mid - 1 }
            }
            offsets[t.name] = runOffsets[lo] + Int(t.absoluteOffset - runs[lo].start)
        }
        do {
            buffer = try AlignedBuffer(byteCount: total)
        } catch {
            throw .storage(error)
        }
        bufferOffsets = offsets
        // Requests of at most 8 MiB, a window of them in flight: sequential, aligned, fast.
        let chunk = 8 << 20
        var requests: [ReadRequest] = []
        for (r, run) in runs.enumerated() {
            var offset = 0
            let length = Int(run.end - run.start)
            while offset < length {
                let n = min(chunk, length - offset)
                requests.append(ReadRequest(offset: run.start + UInt64(offset), length: n,
                                            destination: buffer.baseAddress + runOffsets[r] + offset,
                                            tag: UInt64(requests.count)))
                offset += n
            }
        }
        let totalToRead = requests.reduce(UInt64(0)) { $0 + UInt64($1.length) }
        do {
            let window = 32
            var next = 0
            var done: UInt64 = 0
            while next < requests.count {
                let batch = Array(requests[next..<min(next + window, requests.count)])
                try backend.readBatch(batch)
                next += batch.count
                done += batch.reduce(0) { $0 + UInt64($1.length) }
                progress?(done, totalToRead)
            }
        } catch let error as StorageError {
            throw .storage(error)
        } catch {
            throw .file("\(backend.path): \(error)")
        }
    }

    deinit {
        for (_, b) in converted { b.deallocate() }
    }

    public func info(_ name: String) -> GGUFTensorInfo? { file.tensor(named: name) }
    public func contains(_ name: String) -> Bool { file.tensor(named: name) != nil }
    /// Whether the tensor's data was read (false for tensors skipped at load).
    public func isLoaded(_ name: String) -> Bool { bufferOffsets[name] != nil }

    /// Address of a loaded tensor's first byte in memory.
    public func address(of info: GGUFTensorInfo) -> UnsafeRawPointer {
        guard let offset = bufferOffsets[info.name] else {
            preconditionFailure("tensor \(info.name) was not loaded; lookup checks this first")
        }
        return UnsafeRawPointer(buffer.baseAddress + offset)
    }

    private func lookup(_ name: String, shape: [Int]) throws(ModelError) -> GGUFTensorInfo {
        guard let info = file.tensor(named: name) else { throw .missingTensor(name) }
        guard bufferOffsets[name] != nil else { throw .file("tensor \(name) was not loaded (it is offloaded)") }
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
