/// How one row of a block (the keys, or the values, of one layer at one position) is stored.
///
/// F16 (the default, as llama.cpp's cache), or ggml's Q8_0 (34 bytes per 32 values: an F16
/// scale and 32 signed bytes) and Q4_0 (18 bytes per 32 values: an F16 scale and 32 nibbles)
/// block layouts over the row, quantized when a position is written. A quantized row is
/// whole 32-value blocks head by head, so every head's keys and values must be a multiple
/// of 32 wide (`fits`).
public enum KVType: String, Sendable, CaseIterable {
    case f16
    case q8_0
    case q4_0

    /// Values per quantization block (1 for F16).
    public var groupSize: Int {
        switch self {
        case .f16: return 1
        case .q8_0, .q4_0: return 32
        }
    }

    /// Bytes of one group of `groupSize` values.
    public var groupBytes: Int {
        switch self {
        case .f16: return 2
        case .q8_0: return 34
        case .q4_0: return 18
        }
    }

    /// Bytes of one row of `width` values (a multiple of `groupSize`).
    public func rowBytes(width: Int) -> Int {
        switch self {
        case .f16: return width * 2
        case .q8_0, .q4_0: return width / 32 * groupBytes
        }
    }

    /// Whether heads of these sizes can be stored in this type: quantized rows are whole
    /// 32-value blocks per head.
    public func fits(keyHeadSize: Int, valueHeadSize: Int) -> Bool {
        keyHeadSize % groupSize == 0 && valueHeadSize % groupSize == 0
    }
}

/// The shape of a block: `blockSize` positions, each holding every layer's keys and values.
///
/// Inside a block, layer by layer: the `blockSize` key rows, then the `blockSize` value rows,
/// so attention walks one layer's keys of a block as rows of a fixed stride.
public struct KVLayout: Sendable, Equatable, CustomStringConvertible {
    public let layers: Int
    public let keyWidth: Int
    public let valueWidth: Int
    /// Positions per block (a power of two).
    public let blockSize: Int
    public let type: KVType
    public let keyRowBytes: Int
    public let valueRowBytes: Int
    /// Bytes of one layer's keys and values in a block.
    public let layerBytes: Int
    /// Bytes of a whole block, rounded up to a cache line.
    public let blockBytes: Int
    /// log2(blockSize): position >> shift is the block index, position & mask the slot.
    public let shift: Int

    public init(layers: Int, keyWidth: Int, valueWidth: Int, blockSize: Int = 16, type: KVType = .f16) {
        precondition(layers > 0 && keyWidth > 0 && valueWidth > 0)
        precondition(blockSize > 0 && blockSize & (blockSize - 1) == 0, "block size must be a power of two")
        precondition(keyWidth % type.groupSize == 0 && valueWidth % type.groupSize == 0,
                     "\(type.rawValue) rows need widths that are multiples of \(type.groupSize)")
        self.layers = layers
        self.keyWidth = keyWidth
        self.valueWidth = valueWidth
        self.blockSize = blockSize
        self.type = type
        keyRowBytes = type.rowBytes(width: keyWidth)
        valueRowBytes = type.rowBytes(width: valueWidth)
        layerBytes = blockSize * (keyRowBytes + valueRowBytes)
        blockBytes = (layers * layerBytes + 63) / 64 * 64
        shift = blockSize.trailingZeroBitCount
    }

    public var mask: Int { blockSize - 1 }

    /// Bytes of KV per token position (all layers, keys and values).
    public var bytesPerPosition: Int { layers * (keyRowBytes + valueRowBytes) }

    /// Byte offset in a block of the key row of `layer` at slot `slot`.
    @inline(__always)
    public func keyOffset(layer: Int, slot: Int) -> Int { layer &* layerBytes &+ slot &* keyRowBytes }

    /// Byte offset in a block of the value row of `layer` at slot `slot`.
    @inline(__always)
    public func valueOffset(layer: Int, slot: Int) -> Int {
        layer &* layerBytes &+ blockSize &* keyRowBytes &+ slot &* valueRowBytes
    }

    /// Blocks that hold `positions` positions.
    public func blocks(forPositions positions: Int) -> Int { (positions + blockSize - 1) >> shift }

    /// The most positions one sequence can hold in a pool of `memoryBytes` (whole blocks;
    /// 0 when not even one block fits).
    public func positions(fittingIn memoryBytes: Int) -> Int { max(memoryBytes, 0) / blockBytes * blockSize }

    /// Bytes of pool that hold `positions` positions (whole blocks).
    public func bytes(forPositions positions: Int) -> Int { blocks(forPositions: positions) * blockBytes }

    /// Throws `KVError.contextDoesNotFit`, with the figures, when a pool of `memoryBytes`
    /// cannot hold one sequence of `context` positions.
    public func checkContext(_ context: Int, memoryBytes: Int) throws(KVError) {
        let fitting = positions(fittingIn: memoryBytes)
        guard context <= fitting else {
            throw .contextDoesNotFit(context: context, fitting: fitting, memoryBytes: memoryBytes,
                                     neededBytes: bytes(forPositions: context), bytesPerPosition: bytesPerPosition, type: type)
        }
    }

    public var description: String {
        "\(layers) layers, keys \(keyWidth) and values \(valueWidth) wide, \(type.rawValue), \(blockSize) positions per block of \(blockBytes) bytes"
    }
}

/// Why the KV manager could not do what was asked. Figures included, so the command line can
/// say how much memory would do.
public enum KVError: Error, Equatable, CustomStringConvertible {
    /// No free block and no unreferenced cached block to evict: every block holds positions
    /// of a live sequence.
    case memoryExhausted(neededBlocks: Int, availableBlocks: Int, totalBlocks: Int, blockBytes: Int, blockPositions: Int)
    /// The memory given cannot hold even one block.
    case memoryTooSmall(bytes: Int, blockBytes: Int)
    /// A quantized block type needs head sizes that are multiples of its group size.
    case typeDoesNotFit(type: KVType, keyHeadSize: Int, valueHeadSize: Int)
    /// The pool cannot hold the context a sequence was asked to have.
    case contextDoesNotFit(context: Int, fitting: Int, memoryBytes: Int, neededBytes: Int, bytesPerPosition: Int, type: KVType)

    public var description: String {
        switch self {
        case let .memoryExhausted(needed, available, total, blockBytes, positions):
            return "KV memory exhausted: \(needed) blocks of \(positions) positions (\(blockBytes) bytes each) needed, "
                + "\(available) can be had; all \(total) blocks (\(total * blockBytes) bytes) hold positions of live sequences"
        case let .memoryTooSmall(bytes, blockBytes):
            return "KV memory of \(bytes) bytes is less than one block (\(blockBytes) bytes)"
        case let .typeDoesNotFit(type, k, v):
            return "KV type \(type.rawValue) stores rows in blocks of \(type.groupSize) values per head, "
                + "but this model's heads are \(k) (keys) and \(v) (values) wide; use f16"
        case let .contextDoesNotFit(context, fitting, memory, needed, perPosition, type):
            return "KV memory of \(memory) bytes holds \(fitting) positions (\(perPosition) bytes per position in \(type.rawValue)), "
                + "less than the context of \(context) asked for, which needs \(needed) bytes"
        }
    }
}
