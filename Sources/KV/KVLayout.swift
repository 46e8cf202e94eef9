/// How one row of a block (the keys, or the values, of one layer at one position) is stored.
///
/// Only F16 today. The block format is a sequence of rows of a fixed byte size, so the
/// quantized types of a later step (Q8_0: 34 bytes per 32 values, Q4_0: 18 per 32) fit by
/// giving their row size here and an encoder/decoder in the kernels; nothing else changes.
public enum KVType: String, Sendable, CaseIterable {
    case f16

    /// Bytes of one row of `width` values.
    public func rowBytes(width: Int) -> Int {
        switch self {
        case .f16: return width * 2
        }
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

    public var description: String {
        switch self {
        case let .memoryExhausted(needed, available, total, blockBytes, positions):
            return "KV memory exhausted: \(needed) blocks of \(positions) positions (\(blockBytes) bytes each) needed, "
                + "\(available) can be had; all \(total) blocks (\(total * blockBytes) bytes) hold positions of live sequences"
        case let .memoryTooSmall(bytes, blockBytes):
            return "KV memory of \(bytes) bytes is less than one block (\(blockBytes) bytes)"
        }
    }
}
