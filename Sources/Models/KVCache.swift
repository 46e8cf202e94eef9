/// Keys and values of every layer for one sequence, contiguous per layer.
///
/// Values are rounded through F16 as they are stored, so attention sees what llama.cpp's
/// F16 cache holds (the paged KV manager will store F16 and quantized blocks for real).
public final class KVCache: @unchecked Sendable {
    public let layers: Int
    public let capacity: Int
    public let keyWidth: Int
    public let valueWidth: Int
    /// Positions filled so far (the next token goes at `count`).
    public internal(set) var count = 0
    private let keys: UnsafeMutableBufferPointer<Float>
    private let values: UnsafeMutableBufferPointer<Float>

    public init(layers: Int, capacity: Int, keyWidth: Int, valueWidth: Int) {
        self.layers = layers
        self.capacity = capacity
        self.keyWidth = keyWidth
        self.valueWidth = valueWidth
        keys = .allocate(capacity: layers * capacity * keyWidth)
        values = .allocate(capacity: layers * capacity * valueWidth)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    public var bytes: Int { (keys.count + values.count) * MemoryLayout<Float>.size }

    /// Forgets positions from `position` on (the next token goes there).
    public func truncate(to position: Int) {
        precondition(position >= 0 && position <= count)
        count = position
    }

    @inline(__always)
    func key(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        keys.baseAddress! + (layer &* capacity &+ position) &* keyWidth
    }

    @inline(__always)
    func value(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        values.baseAddress! + (layer &* capacity &+ position) &* valueWidth
    }

    /// Stores one position's key and value for `layer`.
    func store(layer: Int, position: Int, key k: UnsafePointer<Float>, value v: UnsafePointer<Float>) {
        let kd = key(layer: layer, position: position)
        for i in 0..<keyWidth { kd[i] = Float(Float16(k[i])) }
        let vd = value(layer: layer, position: position)
        for i in 0..<valueWidth { vd[i] = Float(Float16(v[i])) }
    }
}
