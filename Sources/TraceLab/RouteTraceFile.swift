import Foundation

/// Reads `route_trace v1` CSV files, the format BigMoeOnEdge's `--route-trace` writes (see
/// `../shared/traces/README.md`): `#` preamble lines (`# route_trace v1`, the model line
/// with `n_layer`, `n_expert`, `n_expert_used`, one `# layer=L expert_bytes=B ...` per
/// layer), a column header, then one row per routed expert:
/// `turn,phase,step,layer,slot,expert,weight,residency,expert_bytes`.
///
/// Batches: a prompt (phase 0) is one pass, so all its rows of one layer (within a turn) are
/// one batch; a decoded token (phase 1) is one batch per layer. Within a batch the experts
/// are listed by their last use (see `parse`).
public enum RouteTraceFile {
    public static let columns = ["turn", "phase", "step", "layer", "slot", "expert", "weight", "residency", "expert_bytes"]

    public static func read(path: String) throws(TraceFileError) -> CacheTrace {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw .cannotRead(path: path, reason: (error as NSError).localizedDescription)
        }
        return try parse(data, path: path)
    }

    public static func parse(_ data: Data, path: String) throws(TraceFileError) -> CacheTrace {
        guard let text = String(data: data, encoding: .utf8) else {
            throw .invalid(path: path, detail: "not UTF-8 text")
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last == "" { lines.removeLast() }
        guard let first = lines.first, first.trimmingCharacters(in: .whitespaces) == "# route_trace v1" else {
            throw .malformed(path: path, line: 1, detail: "expected '# route_trace v1'")
        }
        var model = "", architecture = ""
        var layerCount: Int?, expertCount: Int?, used: Int?
        var expertBytes: [Int: Int] = [:]
        var denseBytes: [Int: Int] = [:]
        var index = 1
        // The preamble.
        while index < lines.count, lines[index].hasPrefix("#") {
            let lineNumber = index + 1
            let fields = keyValues(lines[index].dropFirst())
            if let l = fields["layer"] {
                guard let layer = Int(l), layer >= 0, layer < TraceLimits.maxLayers else {
                    throw .malformed(path: path, line: lineNumber, detail: "layer '\(l)' is not a layer index")
                }
                guard let b = fields["expert_bytes"], let bytes = Int(b), bytes > 0, bytes <= TraceLimits.maxExpertBytes else {
                    throw .malformed(path: path, line: lineNumber, detail: "layer \(layer) has no valid expert_bytes")
                }
                expertBytes[layer] = bytes
                if let d = fields["dense_bytes"], let dense = Int(d), dense >= 0, dense <= TraceLimits.maxExpertBytes {
                    denseBytes[layer] = dense
                }
            } else if fields["n_layer"] != nil || fields["n_expert"] != nil {
                model = fields["model"] ?? ""
                architecture = fields["arch"] ?? ""
                func count(_ key: String, _ limit: Int) throws(TraceFileError) -> Int {
                    guard let s = fields[key], let v = Int(s), v > 0, v <= limit else {
                        throw .malformed(path: path, line: lineNumber, detail: "\(key) is missing or out of range (1...\(limit))")
                    }
                    return v
                }
                layerCount = try count("n_layer", TraceLimits.maxLayers)
                expertCount = try count("n_expert", TraceLimits.maxExperts)
                used = try count("n_expert_used", TraceLimits.maxExperts)
            }
            index += 1
        }
        guard let layerCount, let expertCount, let used else {
            throw .invalid(path: path, detail: "the preamble has no line with n_layer, n_expert and n_expert_used")
        }
        guard used <= expertCount else {
            throw .invalid(path: path, detail: "n_expert_used \(used) exceeds n_expert \(expertCount)")
        }
        guard index < lines.count else { throw .invalid(path: path, detail: "no column header after the preamble") }
        let header = lines[index].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard header == columns else {
            throw .malformed(path: path, line: index + 1, detail: "expected the columns \(columns.joined(separator: ","))")
        }
        index += 1

        struct Key: Hashable { var turn: Int, phase: Int, step: Int, layer: Int }
        var batchIndex: [Key: Int] = [:]
        var batches: [CacheTrace.Batch] = []
        var seen: [Set<Int>] = []
        var tokensSeen: [Set<Int>] = []
        var decodeSteps = Set<[Int]>()
        var promptSteps = Set<[Int]>()
        var usedLayers = Set<Int>()
        struct TokenKey: Hashable { var turn: Int, phase: Int, step: Int }
        var tokenIndex: [TokenKey: Int] = [:]
        var tokenStream: [Int] = [], tokenStep: [Int] = [], tokenDecode: [Bool] = []
        var routed: [Int: [Int32]] = [:]  // token × n_layer + layer → the k experts, by slot
        var streams = StreamAssigner()
        while index < lines.count {
            let lineNumber = index + 1
            let line = lines[index]
            index += 1
            if line.isEmpty || line.hasPrefix("#") { continue }
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            guard cells.count == columns.count else {
                throw .malformed(path: path, line: lineNumber, detail: "\(cells.count) fields, expected \(columns.count)")
            }
            func integer(_ i: Int) throws(TraceFileError) -> Int {
                guard let v = Int(cells[i].trimmingCharacters(in: .whitespaces)) else {
                    throw .malformed(path: path, line: lineNumber, detail: "\(columns[i]) '\(cells[i])' is not an integer")
                }
                return v
            }
            let turn = try integer(0), phase = try integer(1), step = try integer(2), layer = try integer(3)
            let slot = try integer(4), expert = try integer(5), residency = try integer(7), bytes = try integer(8)
            guard let weight = Double(cells[6].trimmingCharacters(in: .whitespaces)), weight.isFinite else {
                throw .malformed(path: path, line: lineNumber, detail: "weight '\(cells[6])' is not a number")
            }
            guard turn >= 0, step >= 0 else { throw .malformed(path: path, line: lineNumber, detail: "turn and step must be ≥ 0") }
            guard phase == 0 || phase == 1 else {
                throw .malformed(path: path, line: lineNumber, detail: "phase \(phase) is neither 0 (prefill) nor 1 (decode)")
            }
            guard layer >= 0, layer < layerCount else {
                throw .malformed(path: path, line: lineNumber, detail: "layer \(layer) is out of range (n_layer \(layerCount))")
            }
            guard expert >= 0, expert < expertCount else {
                throw .malformed(path: path, line: lineNumber, detail: "expert \(expert) is out of range (n_expert \(expertCount))")
            }
            guard slot >= 0, slot < used else {
                throw .malformed(path: path, line: lineNumber, detail: "slot \(slot) is out of range (n_expert_used \(used))")
            }
            guard (0...2).contains(residency) else {
                throw .malformed(path: path, line: lineNumber, detail: "residency \(residency) is not 0, 1 or 2")
            }
            guard bytes >= 0, bytes <= TraceLimits.maxExpertBytes else {
                throw .malformed(path: path, line: lineNumber, detail: "expert_bytes \(bytes) is out of range")
            }
            guard expertBytes[layer] != nil else {
                throw .malformed(path: path, line: lineNumber, detail: "layer \(layer) has no expert_bytes in the preamble")
            }
            usedLayers.insert(layer)
            let tokenKey = TokenKey(turn: turn, phase: phase, step: step)
            let token: Int
            if let t = tokenIndex[tokenKey] {
                token = t
            } else {
                // Tokens in the order they first appear: a prompt's rows of its first layer
                // list its tokens in order, decoded tokens come one by one.
                token = tokenStep.count
                tokenIndex[tokenKey] = token
                tokenStream.append(streams.stream(at: step))
                tokenStep.append(step)
                tokenDecode.append(phase == 1)
            }
            let cell = token * layerCount + layer
            var slots = routed[cell] ?? Array(repeating: -1, count: used)
            guard slots[slot] == -1 else {
                throw .malformed(path: path, line: lineNumber, detail: "slot \(slot) of step \(step) at layer \(layer) appears twice")
            }
            slots[slot] = Int32(expert)
            routed[cell] = slots
            let key = Key(turn: turn, phase: phase, step: phase == 0 ? -1 : step, layer: layer)
            let b: Int
            if let existing = batchIndex[key] {
                b = existing
            } else {
                b = batches.count
                batchIndex[key] = b
                batches.append(CacheTrace.Batch(layer: layer, experts: [], isDecode: phase == 1, tokens: 0, recordedHits: []))
                seen.append([])
                tokensSeen.append([])
            }
            if tokensSeen[b].insert(step).inserted { batches[b].tokens += 1 }
            if phase == 1 { decodeSteps.insert([turn, step]) } else { promptSteps.insert([turn, step]) }
            if seen[b].insert(expert).inserted {
                batches[b].experts.append(expert)
                batches[b].recordedHits!.append(residency != 0)
                batches[b].weights.append(Float(weight))
            } else if let at = batches[b].experts.lastIndex(of: expert) {
                let w = max(batches[b].weights[at], Float(weight))
                batches[b].weights[at] = w
                // A repeat refreshes the entry's recency: the batch lists experts by last use,
                // so a replay's order of events within the batch leaves recency as the
                // recording engine had it (the lookup and its outcome stay the first row's).
                if at != batches[b].experts.count - 1 {
                    batches[b].experts.append(batches[b].experts.remove(at: at))
                    batches[b].recordedHits!.append(batches[b].recordedHits!.remove(at: at))
                    batches[b].weights.append(batches[b].weights.remove(at: at))
                }
            }
        }
        guard !batches.isEmpty else { throw .invalid(path: path, detail: "no routing rows") }
        let layers = usedLayers.sorted()
        var routing = TokenRouting(moeLayers: layers, expertsPerToken: used)
        routing.stream = tokenStream
        routing.position = tokenStep
        routing.isDecode = tokenDecode
        routing.experts.reserveCapacity(tokenStep.count * layers.count * used)
        for t in 0..<tokenStep.count {
            for layer in layers {
                routing.experts += routed[t * layerCount + layer] ?? Array(repeating: -1, count: used)
            }
        }
        var trace = CacheTrace(source: path, format: "route_trace v1", model: model, architecture: architecture, moeLayers: layers,
                               experts: expertCount, expertsPerToken: used, expertBytes: expertBytes.filter { usedLayers.contains($0.key) },
                               batches: batches, decodedTokens: decodeSteps.count, promptTokens: promptSteps.count, routing: routing)
        if !denseBytes.isEmpty { trace.denseBytes = denseBytes.values.reduce(0, +) }
        return trace
    }

    /// `key=value` pairs separated by spaces (a value runs to the next space).
    static func keyValues(_ line: Substring) -> [String: String] {
        var out: [String: String] = [:]
        for part in line.split(separator: " ") {
            guard let eq = part.firstIndex(of: "=") else { continue }
            out[String(part[..<eq])] = String(part[part.index(after: eq)...])
        }
        return out
    }
}
