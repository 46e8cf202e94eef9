import Foundation

/// Reads a routing record (see `RoutingRecordFormat`) line by line, checking every line
/// against the header: a wrong format or version, a malformed or inconsistent line, and a
/// file cut short are errors that name the file and the line.
public final class RoutingRecordReader {
    public let path: String
    public let header: RoutingRecordHeader
    private let file: UnsafeMutablePointer<FILE>
    private var lineNumber = 1
    private var pending: RoutingRecord?
    private let decoder = JSONDecoder()
    private var lineBuffer: UnsafeMutablePointer<CChar>?
    private var lineCapacity = 0

    public init(path: String) throws(RoutingRecordError) {
        self.path = path
        guard let f = fopen(path, "r") else {
            throw .cannotRead(path: path, reason: String(cString: strerror(errno)))
        }
        file = f
        var headerLine: (bytes: Data, complete: Bool)?
        do {
            headerLine = try Self.readLine(f, path: path, buffer: &lineBuffer, capacity: &lineCapacity)
        } catch {
            fclose(f)
            free(lineBuffer)
            throw error
        }
        guard let headerLine else {
            fclose(f)
            free(lineBuffer)
            throw .empty(path: path)
        }
        do {
            header = try Self.parseHeader(headerLine.bytes, complete: headerLine.complete, path: path, decoder: decoder)
        } catch {
            fclose(f)
            free(lineBuffer)
            throw error
        }
    }

    deinit {
        fclose(file)
        free(lineBuffer)
    }

    /// Reads a whole file.
    public static func read(path: String) throws(RoutingRecordError) -> (header: RoutingRecordHeader, records: [RoutingRecord]) {
        let reader = try RoutingRecordReader(path: path)
        var records: [RoutingRecord] = []
        while let r = try reader.next() { records.append(r) }
        return (reader.header, records)
    }

    /// The next record; nil at the end of the file.
    public func next() throws(RoutingRecordError) -> RoutingRecord? {
        if let p = pending {
            pending = nil
            return p
        }
        guard let line = try Self.readLine(file, path: path, buffer: &lineBuffer, capacity: &lineCapacity) else {
            return nil
        }
        lineNumber += 1
        let record: RoutingRecord
        do {
            record = try decoder.decode(RoutingRecord.self, from: line.bytes)
        } catch {
            if !line.complete { throw .truncated(path: path, line: lineNumber) }
            throw .malformed(path: path, line: lineNumber, detail: Self.explain(error))
        }
        try check(record)
        return record
    }

    /// The next token's path: its consecutive records of one batch and position.
    public func nextPath() throws(RoutingRecordError) -> RoutingPath? {
        guard let first = try next() else { return nil }
        var path = RoutingPath(batch: first.batch, position: first.position, token: first.token, layers: [first])
        while let r = try next() {
            if r.batch == first.batch && r.position == first.position && r.layer > path.layers.last!.layer {
                path.layers.append(r)
            } else {
                pending = r
                break
            }
        }
        return path
    }

    private func check(_ r: RoutingRecord) throws(RoutingRecordError) {
        let h = header
        func bad(_ detail: String) -> RoutingRecordError { .malformed(path: path, line: lineNumber, detail: detail) }
        guard h.moeLayers.contains(r.layer) else {
            throw bad("layer \(r.layer) is not one of the header's MoE layers \(h.moeLayers)")
        }
        guard r.experts.count == h.expertsPerToken, r.weights.count == h.expertsPerToken else {
            throw bad("\(r.experts.count) experts and \(r.weights.count) weights; the header says \(h.expertsPerToken) per token")
        }
        guard r.experts.allSatisfy({ $0 >= 0 && $0 < h.experts }) else {
            throw bad("expert ids \(r.experts) outside 0..<\(h.experts)")
        }
        guard (r.predicted == nil) == (r.predictedProbabilities == nil) else {
            throw bad("\"predicted\" and \"predicted_probs\" must come together")
        }
        if let p = r.predicted {
            guard p.count == h.expertsPerToken, p.allSatisfy({ $0 >= 0 && $0 < h.experts }) else {
                throw bad("\"predicted\" \(p) is not \(h.expertsPerToken) expert ids below \(h.experts)")
            }
        }
        if let p = r.predictedProbabilities, p.count != h.experts {
            throw bad("\"predicted_probs\" has \(p.count) values; the header says \(h.experts) experts")
        }
    }

    private static func parseHeader(_ bytes: Data, complete: Bool, path: String,
                                    decoder: JSONDecoder) throws(RoutingRecordError) -> RoutingRecordHeader {
        // Format and version first, so a newer file is named as such rather than as malformed.
        guard let object = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any] else {
            if !complete && bytes.first == UInt8(ascii: "{") { throw .truncated(path: path, line: 1) }
            throw .notARoutingRecord(path: path, detail: "line 1 is not a JSON object")
        }
        guard object["format"] as? String == RoutingRecordFormat.name else {
            throw .notARoutingRecord(path: path, detail: "line 1 has no \"format\":\"\(RoutingRecordFormat.name)\"")
        }
        guard let version = (object["version"] as? NSNumber)?.intValue else {
            throw .malformed(path: path, line: 1, detail: "the header has no \"version\"")
        }
        guard version == RoutingRecordFormat.version else { throw .unsupportedVersion(path: path, found: version) }
        let header: RoutingRecordHeader
        do { header = try decoder.decode(RoutingRecordHeader.self, from: bytes) } catch {
            throw .malformed(path: path, line: 1, detail: explain(error))
        }
        guard header.experts > 0, header.expertsPerToken > 0, header.expertsPerToken <= header.experts,
              !header.moeLayers.isEmpty, header.moeLayers == header.moeLayers.sorted(),
              header.moeLayers.allSatisfy({ $0 >= 0 && $0 < header.layers }) else {
            throw .malformed(path: path, line: 1, detail: "inconsistent header (experts \(header.experts), "
                             + "experts_per_token \(header.expertsPerToken), moe_layers \(header.moeLayers), layers \(header.layers))")
        }
        return header
    }

    /// One line without its newline, and whether it had one; nil at the end of the file.
    private static func readLine(_ f: UnsafeMutablePointer<FILE>, path: String, buffer: inout UnsafeMutablePointer<CChar>?,
                                 capacity: inout Int) throws(RoutingRecordError) -> (bytes: Data, complete: Bool)? {
        let n = getline(&buffer, &capacity, f)
        if n < 0 {
            if ferror(f) != 0 { throw .cannotRead(path: path, reason: String(cString: strerror(errno))) }
            return nil
        }
        let complete = n > 0 && buffer![n - 1] == 0x0A
        let bytes = Data(bytes: buffer!, count: complete ? n - 1 : n)
        return (bytes, complete)
    }

    /// A decoding error in a sentence: which field, and what was wrong with it.
    private static func explain(_ error: any Error) -> String {
        guard let e = error as? DecodingError else { return "not valid JSON" }
        func at(_ path: [any CodingKey]) -> String {
            path.isEmpty ? "the line" : "\"" + path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".") + "\""
        }
        switch e {
        case let .keyNotFound(key, _): return "no \"\(key.stringValue)\""
        case let .typeMismatch(_, c): return "\(at(c.codingPath)) has the wrong type"
        case let .valueNotFound(_, c): return "\(at(c.codingPath)) is null"
        case let .dataCorrupted(c): return c.codingPath.isEmpty ? "not valid JSON" : "\(at(c.codingPath)) is invalid"
        @unknown default: return "not a routing record line"
        }
    }
}
