/// Every token's routing, token by token: what the routing statistics (`moe trace stats`)
/// read, where a cache replay reads lookup batches.
///
/// Tokens are kept in the order the run evaluated them and grouped into streams: the
/// tokens of one sequence, by position. A stream's next token sits at the next position;
/// a position that goes back (a rewound context, a new sequence) starts a new stream.
public struct TokenRouting: Sendable, Equatable {
    /// MoE layers, ascending (the layer index of each column).
    public var moeLayers: [Int]
    public var expertsPerToken: Int
    public var stream: [Int] = []
    public var position: [Int] = []
    public var isDecode: [Bool] = []
    /// `token × layers × k`, router order; -1 where the token has no routing at a layer.
    public var experts: [Int32] = []
    /// The cross-layer gate's top k in the same shape, -1 where there is no prediction; nil
    /// when the record holds none at all.
    public var predicted: [Int32]?

    public init(moeLayers: [Int], expertsPerToken: Int) {
        self.moeLayers = moeLayers
        self.expertsPerToken = expertsPerToken
    }

    public var count: Int { stream.count }
    public var streams: Int { (stream.max() ?? -1) + 1 }

    /// The k experts of `token` at the `layer`-th MoE layer (column index, not block index).
    @inline(__always)
    public func experts(token: Int, column: Int) -> ArraySlice<Int32> {
        let start = (token * moeLayers.count + column) * expertsPerToken
        return experts[start..<start + expertsPerToken]
    }

    @inline(__always)
    public func predicted(token: Int, column: Int) -> ArraySlice<Int32>? {
        guard let predicted else { return nil }
        let start = (token * moeLayers.count + column) * expertsPerToken
        let slice = predicted[start..<start + expertsPerToken]
        return slice.first == -1 ? nil : slice
    }

    /// The tokens of each stream, in order.
    public var tokensByStream: [[Int]] {
        var out = Array(repeating: [Int](), count: streams)
        for (t, s) in stream.enumerated() { out[s].append(t) }
        return out
    }
}

/// Assigns tokens to streams by position: a token continues a stream whose last token sat at
/// the position before, or starts one. When several wait for the same position (sequences
/// decoding together), the one waiting longest continues: a step lists its sequences in the
/// same order each time.
struct StreamAssigner {
    private var open: [Int: [Int]] = [:]  // next position → streams waiting for it
    private var streams = 0

    mutating func stream(at position: Int) -> Int {
        let s: Int
        if var waiting = open[position], !waiting.isEmpty {
            s = waiting.removeFirst()
            open[position] = waiting.isEmpty ? nil : waiting
        } else {
            s = streams
            streams += 1
        }
        open[position + 1, default: []].append(s)
        return s
    }
}
