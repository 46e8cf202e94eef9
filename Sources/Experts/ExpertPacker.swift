import GGUF
import Kernels
import Models
import Storage
#if canImport(Glibc)
import Glibc
#endif

/// Why a pack could not be written. Each case names the file, type or matrix at fault.
public enum PackError: Error, Equatable, CustomStringConvertible {
    /// The output path names the input file (same path, a link to it, or a hard link).
    case outputIsInput(String)
    /// The input already has `moe.pack.version`: packs are made from plain GGUF files.
    case alreadyPacked(String)
    /// The input has no routed experts.
    case notMoE(path: String, detail: String)
    /// The input's hyper-parameters or expert tensors are unusable.
    case invalidModel(path: String, detail: String)
    case unknownType(String)
    /// A ggml type the quantizer cannot produce or the kernels cannot multiply.
    case unsupportedType(GGMLType)
    case duplicateType(GGMLType)
    /// The type every expert matrix already has: the copy would repeat precision 0.
    case nativeType(GGMLType, path: String)
    /// `matrix`'s rows are not a whole number of `type` blocks.
    case blockSizeMismatch(type: GGMLType, matrix: String, rowLength: Int)
    /// Reading the input failed.
    case input(String)
    /// Writing the output failed (nothing is left at the output path).
    case output(String)

    /// Types `--low-precision` accepts: what the quantizer writes and the kernels can multiply
    /// (the pack reader refuses the rest).
    public static var supportedTypes: [GGMLType] {
        GGMLType.allCases.filter { Quantize.supports($0) && Dequantize.supports($0) && MatMul.supports($0) }
    }

    public var description: String {
        let supported = Self.supportedTypes.map(\.name).joined(separator: ", ")
        switch self {
        case let .outputIsInput(path):
            return "the output \(path) is the input file; write the pack to a new path"
        case let .alreadyPacked(path):
            return "\(path) is already a pack (it has \(PackFormat.versionKey)); pack the original GGUF file instead"
        case let .notMoE(path, detail):
            return "\(path) is not a Mixture-of-Experts model: \(detail)"
        case let .invalidModel(path, detail):
            return "\(path): \(detail)"
        case let .unknownType(name):
            return "unknown low-precision type '\(name)' (supported: \(supported))"
        case let .unsupportedType(type):
            return "\(type.name) cannot be a low precision: the quantizer or the kernels do not support it (supported: \(supported))"
        case let .duplicateType(type):
            return "low precision \(type.name) is given more than once"
        case let .nativeType(type, path):
            return "\(type.name) is already the type of every expert matrix in \(path); a copy at that precision would repeat the native one"
        case let .blockSizeMismatch(type, matrix, rowLength):
            return "\(type.name) cannot hold \(matrix): its rows of \(rowLength) values are not a whole number of "
                + "\(type.name) blocks of \(type.blockSize)"
        case let .input(detail):
            return "reading the input failed: \(detail)"
        case let .output(detail):
            return "writing the pack failed: \(detail)"
        }
    }
}

/// What a pack holds, read back from the written file.
public struct PackSummary: Sendable {
    public struct Precision: Sendable {
        public var name: String
        /// Per layer of `layers`: the gate, up and down types.
        public var types: [[GGMLType]]
        /// Per layer of `layers`: bytes of one expert's bundle.
        public var bytesPerExpert: [Int]
        /// Bytes of all bundles at this precision (without padding).
        public var totalBytes: UInt64
    }

    public var path: String
    public var layers: [Int]
    public var expertCount: Int
    public var precisions: [Precision]
    public var fileSize: UInt64
    public var inputFileSize: UInt64

    /// Experts packed at each precision (layers × experts per layer).
    public var expertsPacked: Int { layers.count * expertCount }
    /// Bundle tensors in the file.
    public var bundleCount: Int { expertsPacked * precisions.count }
}

/// Rewrites a plain MoE GGUF as a pack (see `PackFormat`): the non-expert tensors unchanged,
/// then one 4096-aligned bundle per expert and precision. Precision 0 copies the input's
/// bytes; each low precision dequantizes the native rows to F32 and quantizes them to its
/// type. Memory stays at about one expert plus one matrix: bundles are filled one at a time
/// while `GGUFWriter` streams the file.
public final class ExpertPacker {
    public let input: GGUFFile
    public let layout: ExpertLayout
    public let outputPath: String
    public let lowPrecisions: [GGMLType]
    private let backend: any StorageBackend
    private let threads: Int

    /// Opens `input` and checks everything that can be checked before writing.
    public convenience init(input: String, output: String, lowPrecisions: [GGMLType] = [],
                            storage: StorageBackendPreference = .automatic,
                            threads: Int = ThreadPool.defaultThreadCount) throws(PackError) {
        let backend: any StorageBackend
        do { backend = try StorageFile.open(path: input, backend: storage) } catch {
            throw .input(error.description)
        }
        try self.init(reading: backend, output: output, lowPrecisions: lowPrecisions, threads: threads)
    }

    /// Packs the file behind `backend` (tests pass a fault-injecting one).
    public init(reading backend: any StorageBackend, output: String, lowPrecisions: [GGMLType] = [],
                threads: Int = ThreadPool.defaultThreadCount) throws(PackError) {
        let path = backend.path
        if Self.sameFile(path, output) { throw .outputIsInput(output) }
        let file: GGUFFile
        do { file = try GGUFFile.read(from: backend) } catch let e as GGUFError {
            throw .input(e.description)
        } catch {
            throw .input("\(path): \(error)")
        }
        if file.metadata.contains(PackFormat.versionKey) { throw .alreadyPacked(path) }
        let hp: HyperParameters
        do { hp = try HyperParameters(metadata: file.metadata) } catch {
            throw .invalidModel(path: path, detail: error.description)
        }
        guard hp.isMoE else {
            throw .notMoE(path: path, detail: "\(hp.architecture) without \(hp.architecture).expert_count")
        }
        let experts: ExpertLayout
        do { experts = try ExpertLayout(file: file, hyperParameters: hp) } catch {
            throw .invalidModel(path: path, detail: error.description)
        }

        var seen = Set<GGMLType>()
        for type in lowPrecisions {
            guard seen.insert(type).inserted else { throw .duplicateType(type) }
            guard PackError.supportedTypes.contains(type) else { throw .unsupportedType(type) }
            let matrices = experts.layers.flatMap { experts.slices(layer: $0, expert: 0) }
            if matrices.allSatisfy({ $0.type == type }) { throw .nativeType(type, path: path) }
            for layer in experts.layers {
                for (part, slice) in zip(Self.parts, experts.slices(layer: layer, expert: 0))
                where slice.columns % type.blockSize != 0 {
                    throw .blockSizeMismatch(type: type, matrix: "blk.\(layer).ffn_\(part)_exps.weight",
                                             rowLength: slice.columns)
                }
            }
        }
        input = file
        layout = experts
        outputPath = output
        self.lowPrecisions = lowPrecisions
        self.backend = backend
        self.threads = max(1, threads)
    }

    static let parts = ["gate", "up", "down"]

    /// Parses type names as `--low-precision` takes them: repeated or comma-separated.
    public static func lowPrecisionTypes(parsing names: [String]) throws(PackError) -> [GGMLType] {
        var types: [GGMLType] = []
        for item in names.flatMap({ $0.split(separator: ",") }) {
            let name = String(item.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
            if name.isEmpty { continue }
            guard let type = GGMLType(name: name) else { throw .unknownType(name) }
            guard !types.contains(type) else { throw .duplicateType(type) }
            types.append(type)
        }
        return types
    }

    /// Writes the pack and reads it back. `progress` receives (bytes written, bytes in all).
    /// On any failure nothing is left at the output path (an existing file there is kept).
    @discardableResult
    public func write(progress: ((_ done: UInt64, _ total: UInt64) -> Void)? = nil) throws(PackError) -> PackSummary {
        var writer = GGUFWriter()
        writer.version = 3
        writer.metadata = input.metadata
        writer.metadata[GGUFFile.alignmentKey] = .uint32(UInt32(PackFormat.alignment))
        writer.metadata[PackFormat.versionKey] = .uint32(PackFormat.version)
        let names = ["native"] + lowPrecisions.map(\.name)
        writer.metadata[PackFormat.precisionsKey] = .array(.string(names.map { GGUFString($0) }))
        writer.metadata[PackFormat.layersKey] = .array(.uint32(layout.layers.map { UInt32($0) }))
        let nativeTypes = layout.layers.map { layer in layout.slices(layer: layer, expert: 0).map(\.type) }
        for p in names.indices {
            let types = p == 0 ? nativeTypes : nativeTypes.map { $0.map { _ in lowPrecisions[p - 1] } }
            writer.metadata[PackFormat.typesKey(precision: p)] = .array(.uint32(types.flatMap { $0.map(\.rawValue) }))
        }

        let allSlices = layout.layers.flatMap { layout.slices(layer: $0, expert: 0) }
        let nativeScratch = UnsafeMutableRawBufferPointer.allocate(
            byteCount: allSlices.map(\.byteCount).max() ?? 0, alignment: 64)
        defer { nativeScratch.deallocate() }
        let maxColumns = allSlices.map(\.columns).max() ?? 0
        let rowScratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: maxColumns * threads)
        defer { rowScratch.deallocate() }
        let pool = ThreadPool(threadCount: threads)
        let scratch = Scratch(native: nativeScratch, rows: rowScratch, rowStride: maxColumns, pool: pool)

        do {
            for t in input.tensors where !layout.expertTensorNames.contains(t.name) {
                try writer.addTensor(name: t.name, dimensions: t.dimensions, type: t.type,
                                     source: .file(backend, offset: t.absoluteOffset))
            }
            for p in names.indices {
                let target = p == 0 ? nil : lowPrecisions[p - 1]
                for layer in layout.layers {
                    for expert in 0..<layout.expertCount {
                        let slices = layout.slices(layer: layer, expert: expert)
                        let bytes = slices.reduce(0) { $0 + Self.byteCount($1, as: target) }
                        try writer.addTensor(
                            name: PackFormat.bundleName(layer: layer, expert: expert, precision: p),
                            dimensions: [UInt64(bytes)], type: .i8,
                            source: .generator { [self] buffer in
                                try fill(buffer, from: slices, as: target, layer: layer, scratch: scratch)
                            })
                    }
                }
            }
            try writer.write(to: outputPath, progress: progress)
        } catch let e as PackError {
            throw e
        } catch let e as GGUFError where e.kind == .storage {
            // The writer wraps the input's read failures; the detail names the file and offset.
            throw .input(e.detail)
        } catch let e as GGUFError {
            throw .output(e.description)
        } catch {
            throw .output("\(error)")
        }
        return try verify()
    }

    /// Scratch memory shared by every bundle: one native matrix, one F32 row per thread.
    private struct Scratch {
        var native: UnsafeMutableRawBufferPointer
        var rows: UnsafeMutableBufferPointer<Float>
        var rowStride: Int
        var pool: ThreadPool
    }

    /// Bytes of `slice` once converted to `target` (nil: as it is).
    private static func byteCount(_ slice: ExpertSlice, as target: GGMLType?) -> Int {
        guard let target else { return slice.byteCount }
        return target.byteCount(rows: slice.rows, columns: slice.columns)
    }

    /// Fills one bundle: gate, up and down back to back, copied or converted to `target`.
    private func fill(_ buffer: UnsafeMutableRawBufferPointer, from slices: [ExpertSlice], as target: GGMLType?,
                      layer: Int, scratch: Scratch) throws(PackError) {
        let base = buffer.baseAddress!
        var offset = 0
        var copies: [ReadRequest] = []
        for (k, slice) in slices.enumerated() {
            let destination = base + offset
            offset += Self.byteCount(slice, as: target)
            guard let target, target != slice.type else {
                // Same type: the native bytes are already what quantizing would aim for, and
                // requantizing them would only add rounding error.
                copies.append(ReadRequest(offset: slice.fileOffset, length: slice.byteCount,
                                          destination: destination, tag: UInt64(k)))
                continue
            }
            try read([ReadRequest(offset: slice.fileOffset, length: slice.byteCount,
                                  destination: scratch.native.baseAddress!, tag: 0)])
            let source = UnsafeRawPointer(scratch.native.baseAddress!)
            let sourceRow = slice.type.byteCount(rows: 1, columns: slice.columns)
            let targetRow = target.byteCount(rows: 1, columns: slice.columns)
            let columns = slice.columns
            scratch.pool.parallelForWithThread(slice.rows) { row, thread in
                let values = scratch.rows.baseAddress! + thread * scratch.rowStride
                Dequantize.row(slice.type, from: source + row * sourceRow, to: values, count: columns)
                Quantize.row(target, from: values, to: destination + row * targetRow, count: columns)
            }
        }
        try read(copies)
        precondition(offset == buffer.count, "bundle of layer \(layer) is \(buffer.count) bytes, filled \(offset)")
    }

    private func read(_ requests: [ReadRequest]) throws(PackError) {
        do { try backend.readBatch(requests) } catch let e as StorageError {
            throw .input(e.description)
        } catch {
            throw .input("\(backend.path): \(error)")
        }
    }

    /// Reads the written pack back through `ExpertLayout`, so a pack the runtime would refuse
    /// is never left behind, and describes it.
    private func verify() throws(PackError) -> PackSummary {
        func fail(_ detail: String) -> PackError {
            unlink(outputPath)
            return .output("\(outputPath) does not read back as a pack: \(detail)")
        }
        let file: GGUFFile
        let packed: ExpertLayout
        do {
            file = try GGUFFile.open(path: outputPath, backend: .pread)
            packed = try ExpertLayout(file: file, hyperParameters: HyperParameters(metadata: file.metadata))
        } catch let e as GGUFError {
            throw fail(e.description)
        } catch let e as ModelError {
            throw fail(e.description)
        } catch {
            throw fail("\(error)")
        }
        guard packed.isPacked, packed.layers == layout.layers, packed.expertCount == layout.expertCount,
              packed.precisions.count == lowPrecisions.count + 1 else {
            throw fail("its expert layout differs from the input's")
        }
        guard file.fileSize % UInt64(PackFormat.alignment) == 0 else {
            throw fail("its size \(file.fileSize) is not a multiple of \(PackFormat.alignment)")
        }
        let precisions = packed.precisions.indices.map { p in
            let perLayer = packed.layers.map { packed.slices(layer: $0, expert: 0, precision: p) }
            return PackSummary.Precision(
                name: packed.precisions[p], types: perLayer.map { $0.map(\.type) },
                bytesPerExpert: perLayer.map { $0.reduce(0) { $0 + $1.byteCount } },
                totalBytes: packed.totalBytes(precision: p))
        }
        return PackSummary(path: outputPath, layers: packed.layers, expertCount: packed.expertCount,
                           precisions: precisions, fileSize: file.fileSize, inputFileSize: input.fileSize)
    }

    /// Whether `a` and `b` are the same file: equal paths, or one inode behind both.
    private static func sameFile(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        var sa = stat(), sb = stat()
        guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }
}
