import Trace

extension CacheTrace {
    /// This runtime's routing record (`--record-routing`) as a cache trace. The record does
    /// not hold expert sizes: `expertBytes` gives one expert's bytes per MoE layer (from the
    /// model, as the runtime's pool sizes its slots); nil reads the routing alone, for the
    /// statistics, and leaves `expertBytes` empty.
    ///
    /// A batch (`batch` in the record) is one lookup batch per MoE layer, its experts in the
    /// order the pool is asked for them: tokens in order, each token's experts in router
    /// order, first request kept. A batch decodes when no two of its tokens sit at
    /// consecutive positions (one token per sequence); a prompt chunk, alone or beside
    /// decoding sequences, counts as a prompt batch.
    public static func fromRoutingRecord(path: String, expertBytes: [Int: Int]?) throws(TraceFileError) -> CacheTrace {
        let reader: RoutingRecordReader
        do { reader = try RoutingRecordReader(path: path) } catch {
            throw .invalid(path: path, detail: error.description)
        }
        let header = reader.header
        for layer in header.moeLayers where expertBytes != nil && (expertBytes?[layer] ?? 0) <= 0 {
            throw .invalid(path: path, detail: "no expert size for MoE layer \(layer): give the model the record was made with (-m)")
        }
        var batches: [Batch] = []
        var positions: [Int] = []
        var currentBatch = -1
        var open: [Int: Int] = [:]  // layer → index in batches, for the current record batch
        var seen: [Int: Set<Int>] = [:]
        var decodedTokens = 0, promptTokens = 0
        func close() {
            let ps = Set(positions)
            let decode = !ps.contains { ps.contains($0 + 1) }
            for i in open.values { batches[i].isDecode = decode }
            for t in batchTokens { routing.isDecode[t] = decode }
            if decode { decodedTokens += positions.count } else { promptTokens += positions.count }
        }
        var lastToken: (Int, Int)?
        let k = header.expertsPerToken
        var routing = TokenRouting(moeLayers: header.moeLayers, expertsPerToken: k)
        let column = Dictionary(uniqueKeysWithValues: header.moeLayers.enumerated().map { ($1, $0) })
        var streams = StreamAssigner()
        var batchTokens: [Int] = []
        while true {
            let record: RoutingRecord?
            do { record = try reader.next() } catch { throw .invalid(path: path, detail: error.description) }
            guard let r = record else { break }
            if r.batch != currentBatch {
                if currentBatch >= 0 { close() }
                currentBatch = r.batch
                open = [:]
                seen = [:]
                positions = []
                batchTokens = []
                lastToken = nil
            }
            // Lines come token by token, layer by layer: a new token starts at a layer not
            // above the previous line's.
            if lastToken == nil || r.layer <= lastToken!.1 || r.position != lastToken!.0 {
                positions.append(r.position)
                batchTokens.append(routing.count)
                routing.stream.append(streams.stream(at: r.position))
                routing.position.append(r.position)
                routing.isDecode.append(false)
                routing.experts += repeatElement(-1, count: header.moeLayers.count * k)
                routing.predicted? += repeatElement(-1, count: header.moeLayers.count * k)
            }
            lastToken = (r.position, r.layer)
            if let c = column[r.layer] {
                let start = ((routing.count - 1) * header.moeLayers.count + c) * k
                for (slot, e) in r.experts.prefix(k).enumerated() { routing.experts[start + slot] = Int32(e) }
                if let predicted = r.predicted {
                    if routing.predicted == nil { routing.predicted = Array(repeating: -1, count: routing.experts.count) }
                    for (slot, e) in predicted.prefix(k).enumerated() { routing.predicted![start + slot] = Int32(e) }
                }
            }
            let b: Int
            if let i = open[r.layer] {
                b = i
                batches[b].tokens += 1
            } else {
                b = batches.count
                open[r.layer] = b
                batches.append(Batch(layer: r.layer, experts: [], isDecode: false, tokens: 1))
            }
            for (slot, e) in r.experts.enumerated() {
                let w = slot < r.weights.count ? r.weights[slot] : 0
                if seen[r.layer, default: []].insert(e).inserted {
                    batches[b].experts.append(e)
                    batches[b].weights.append(w)
                } else if let at = batches[b].experts.firstIndex(of: e) {
                    batches[b].weights[at] = max(batches[b].weights[at], w)
                }
            }
        }
        if currentBatch >= 0 { close() }
        guard !batches.isEmpty else { throw .invalid(path: path, detail: "the record holds no routing") }
        // Batches in the order the runtime ran them: record batch, then layer ascending.
        return CacheTrace(source: path, format: RoutingRecordFormat.name, model: header.model, architecture: header.architecture,
                          moeLayers: header.moeLayers, experts: header.experts, expertsPerToken: header.expertsPerToken,
                          expertBytes: (expertBytes ?? [:]).filter { header.moeLayers.contains($0.key) }, batches: batches,
                          decodedTokens: decodedTokens, promptTokens: promptTokens, routing: routing)
    }
}
