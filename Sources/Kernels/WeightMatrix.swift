import GGUF

/// A 2-D weight in ggml's layout: `rows` rows (output features, ggml ne[1]) of `columns`
/// values (input features, ne[0]), each row a run of `type` blocks, rows `rowBytes` apart.
///
/// The memory is not owned: the model (or, later, the expert pool) keeps it alive for as
/// long as kernels may read it.
public struct WeightMatrix: @unchecked Sendable {
    public let type: GGMLType
    public let rows: Int
    public let columns: Int
    public let base: UnsafeRawPointer
    public let rowBytes: Int

    public init(type: GGMLType, rows: Int, columns: Int, base: UnsafeRawPointer) {
        precondition(columns % type.blockSize == 0, "row length must be a whole number of blocks")
        self.type = type
        self.rows = rows
        self.columns = columns
        self.base = base
        self.rowBytes = columns / type.blockSize * type.bytesPerBlock
    }

    /// The matrix of rows `range` (a slice of the same memory).
    public func rows(_ range: Range<Int>) -> WeightMatrix {
        WeightMatrix(type: type, rows: range.count, columns: columns, base: base + range.lowerBound * rowBytes)
    }

    /// Pointer to row `r`.
    @inline(__always)
    public func row(_ r: Int) -> UnsafeRawPointer { base + r &* rowBytes }
}
