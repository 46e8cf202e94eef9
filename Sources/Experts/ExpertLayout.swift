import GGUF
import Kernels
import Models

/// The pack format's keys and names, defined in GGUF (`moe inspect` describes packs there);
/// the alias lets Experts' files that import only this module keep naming it.
public typealias PackFormat = GGUF.PackFormat

/// Where one matrix of an expert sits in the file.
public struct ExpertSlice: Sendable, Equatable {
    public var type: GGMLType
    public var rows: Int
    public var columns: Int
    /// For a copy made in memory (`ExpertLayout.isInFile` false): the offset within the copy.
    public var fileOffset: UInt64
    public var byteCount: Int
}

/// Where every routed expert's weights live in a model file, plain GGUF or pack, and what it
/// takes to hold one in memory. The offloading provider reads experts through this alone.
public struct ExpertLayout: Sendable {
    /// The layers that have routed experts, in order.
    public let layers: [Int]
    public let expertCount: Int
    public let expertsPerToken: Int
    /// Precision names: "native" first, then the low-precision copies of a pack, then those
    /// made in memory (`addingMemoryCopies`).
    public private(set) var precisions: [String]
    /// Precisions whose copies are in the file: the native one and a pack's copies. Later
    /// ones are made in memory from the native weights, never read.
    public private(set) var filePrecisionCount: Int
    public let isPacked: Bool
    /// Names of the tensors that hold expert weights (not read at start-up).
    public let expertTensorNames: Set<String>
    /// [precision][layer position][expert] → gate, up, down.
    private var slices: [[[[ExpertSlice]]]]
    private let layerPosition: [Int: Int]

    /// The gate, up and down slices of `expert` in `layer` at `precision`.
    public func slices(layer: Int, expert: Int, precision: Int = 0) -> [ExpertSlice] {
        slices[precision][layerPosition[layer]!][expert]
    }

    /// Where the first expert's first matrix starts in the file: the expert data runs from
    /// here (with other tensors between, in a plain GGUF file) to the end.
    public var firstExpertOffset: UInt64 { slices(layer: layers[0], expert: 0)[0].fileOffset }

    public func hasExperts(layer: Int) -> Bool { layerPosition[layer] != nil }

    /// Whether `precision`'s copies are read from the file (false: made in memory).
    public func isInFile(precision: Int) -> Bool { precision < filePrecisionCount }

    /// Types copies made in memory can have: what the quantizer writes and the kernels multiply.
    public static var memoryCopyTypes: [GGMLType] {
        GGMLType.allCases.filter { Quantize.supports($0) && MatMul.supports($0) }
    }

    /// This layout with one more precision: copies of every expert in `type`, made in memory
    /// by expanding the native rows to F32 and quantizing them (as `moe pack` makes a
    /// pack's), gate, up and down back to back. Checks that every native matrix can be
    /// expanded and that `type`'s blocks divide every row.
    public func addingMemoryCopies(_ type: GGMLType, path: String) throws(ExpertError) -> ExpertLayout {
        guard Self.memoryCopyTypes.contains(type) else {
            throw .unsupportedFallbackType(type.name, supported: Self.memoryCopyTypes.map(\.name))
        }
        let parts = ["gate", "up", "down"]
        var allNative = true
        for layer in layers {
            for (part, slice) in zip(parts, slices(layer: layer, expert: 0)) {
                let matrix = "blk.\(layer).ffn_\(part)_exps.weight"
                guard Dequantize.supports(slice.type) else { throw .fallbackSourceUnsupported(slice.type, matrix: matrix) }
                guard slice.columns % type.blockSize == 0 else {
                    throw .fallbackTypeCannotHoldRows(type: type, matrix: matrix, rowLength: slice.columns)
                }
                allNative = allNative && slice.type == type
            }
        }
        if allNative { throw .fallbackTypeIsNative(type, path: path) }
        var copy = self
        copy.precisions.append(type.name)
        copy.slices.append(slices[0].map { experts in
            experts.map { native in
                var offset = 0
                return native.map { s in
                    let bytes = type.byteCount(rows: s.rows, columns: s.columns)
                    defer { offset += bytes }
                    return ExpertSlice(type: type, rows: s.rows, columns: s.columns, fileOffset: UInt64(offset), byteCount: bytes)
                }
            }
        })
        return copy
    }

    /// Bytes of weights of one expert (largest over layers) at `precision`.
    public func expertBytes(precision: Int = 0) -> Int {
        slices[precision].flatMap { $0 }.map { $0.reduce(0) { $0 + $1.byteCount } }.max() ?? 0
    }

    /// Bytes of all experts at `precision`.
    public func totalBytes(precision: Int = 0) -> UInt64 {
        slices[precision].flatMap { $0 }.reduce(UInt64(0)) { t, s in t + UInt64(s.reduce(0) { $0 + $1.byteCount }) }
    }

    /// Describes `file`'s experts, checking shapes, types and bounds.
    public init(file: GGUFFile, hyperParameters hp: HyperParameters) throws(ModelError) {
        guard hp.isMoE else { throw .experts(ExpertError.noRoutedExperts(path: file.path)) }
        expertCount = hp.expertCount
        expertsPerToken = hp.expertUsedCount
        let h = hp.embeddingLength, f = hp.expertFeedForwardLength
        let shapes = [(rows: f, columns: h), (rows: f, columns: h), (rows: h, columns: f)]
        if let value = file.metadata[PackFormat.versionKey] {
            guard case let .uint32(v) = value else {
                throw .experts(ExpertError.invalidPack(path: file.path, problem: "\(PackFormat.versionKey) must be a u32, not \(value)"))
            }
            guard v == PackFormat.version else {
                throw .experts(ExpertError.invalidPack(path: file.path, problem: "pack format version \(v) is not supported (this build reads \(PackFormat.version))"))
            }
            isPacked = true
            guard let names = file.metadata[PackFormat.precisionsKey]?.array?.strings, !names.isEmpty else {
                throw .experts(ExpertError.invalidPack(path: file.path, problem: "pack without \(PackFormat.precisionsKey)"))
            }
            precisions = names.map(\.string)
            guard Set(precisions).count == precisions.count else {
                throw .experts(ExpertError.invalidPack(path: file.path, problem: "\(PackFormat.precisionsKey) names a precision twice"))
            }
            guard let ls = file.metadata[PackFormat.layersKey]?.array?.integers, !ls.isEmpty,
                  ls.allSatisfy({ $0 >= 0 && $0 < hp.blockCount }), Set(ls).count == ls.count else {
                throw .experts(ExpertError.invalidPack(path: file.path, problem: "pack has a missing or invalid \(PackFormat.layersKey)"))
            }
            layers = ls.map { Int($0) }
            var all: [[[[ExpertSlice]]]] = []
            var tensorNames = Set<String>()
            for p in precisions.indices {
                let key = PackFormat.typesKey(precision: p)
                guard let codes = file.metadata[key]?.array?.integers, codes.count == 3 * layers.count else {
                    throw .experts(ExpertError.invalidPack(path: file.path, problem: "pack has a missing or invalid \(key)"))
                }
                var perLayer: [[[ExpertSlice]]] = []
                for (i, layer) in layers.enumerated() {
                    var types: [GGMLType] = []
                    for k in 0..<3 {
                        guard let code = UInt32(exactly: codes[3 * i + k]), let type = GGMLType(rawValue: code),
                              MatMul.supports(type), shapes[k].columns % type.blockSize == 0 else {
                            throw .experts(ExpertError.invalidPack(path: file.path, problem: "\(key) names an unusable type for layer \(layer)"))
                        }
                        types.append(type)
                    }
                    let bytes = (0..<3).map { types[$0].byteCount(rows: shapes[$0].rows, columns: shapes[$0].columns) }
                    var experts: [[ExpertSlice]] = []
                    for e in 0..<hp.expertCount {
                        let name = PackFormat.bundleName(layer: layer, expert: e, precision: p)
                        guard let t = file.tensor(named: name) else { throw .missingTensor(name) }
                        let total = bytes.reduce(0, +)
                        guard t.type == .i8, t.byteCount == UInt64(total) else {
                            throw .wrongShape(tensor: name, expected: [total], actual: t.dimensions.map { Int($0) })
                        }
                        guard t.absoluteOffset % UInt64(PackFormat.alignment) == 0 else {
                            throw .experts(ExpertError.invalidPack(path: file.path, problem: "bundle \(name) is not \(PackFormat.alignment)-byte aligned"))
                        }
                        tensorNames.insert(name)
                        var offset = t.absoluteOffset
                        experts.append((0..<3).map { k in
                            defer { offset += UInt64(bytes[k]) }
                            return ExpertSlice(type: types[k], rows: shapes[k].rows, columns: shapes[k].columns,
                                               fileOffset: offset, byteCount: bytes[k])
                        })
                    }
                    perLayer.append(experts)
                }
                all.append(perLayer)
            }
            slices = all
            filePrecisionCount = all.count
            expertTensorNames = tensorNames
        } else {
            isPacked = false
            precisions = ["native"]
            var ls: [Int] = []
            var perLayer: [[[ExpertSlice]]] = []
            var tensorNames = Set<String>()
            let parts = ["gate", "up", "down"]
            for layer in 0..<hp.blockCount {
                let names = parts.map { "blk.\(layer).ffn_\($0)_exps.weight" }
                let infos = names.map { file.tensor(named: $0) }
                if infos.allSatisfy({ $0 == nil }) { continue }
                var stacked: [GGUFTensorInfo] = []
                for (k, name) in names.enumerated() {
                    guard let t = infos[k] else { throw .missingTensor(name) }
                    var dims = t.dimensions.map { Int($0) }
                    while dims.count > 3, dims.last == 1 { dims.removeLast() }
                    let expected = [shapes[k].columns, shapes[k].rows, hp.expertCount]
                    guard dims == expected else { throw .wrongShape(tensor: name, expected: expected, actual: dims) }
                    guard MatMul.supports(t.type), shapes[k].columns % t.type.blockSize == 0 else {
                        throw .unsupportedType(tensor: name, type: t.type)
                    }
                    stacked.append(t)
                    tensorNames.insert(name)
                }
                ls.append(layer)
                perLayer.append((0..<hp.expertCount).map { e in
                    (0..<3).map { k in
                        let t = stacked[k]
                        let bytes = t.type.byteCount(rows: shapes[k].rows, columns: shapes[k].columns)
                        return ExpertSlice(type: t.type, rows: shapes[k].rows, columns: shapes[k].columns,
                                           fileOffset: t.absoluteOffset + UInt64(e * bytes), byteCount: bytes)
                    }
                })
            }
            guard !ls.isEmpty else { throw .missingTensor("blk.0.ffn_gate_exps.weight") }
            layers = ls
            slices = [perLayer]
            filePrecisionCount = 1
            expertTensorNames = tensorNames
        }
        var positions: [Int: Int] = [:]
        for (i, l) in layers.enumerated() { positions[l] = i }
        layerPosition = positions
    }
}

extension GGMLType {
    /// Bytes of a `rows` × `columns` matrix of this type.
    public func byteCount(rows: Int, columns: Int) -> Int {
        rows * (columns / blockSize * bytesPerBlock)
    }
}
