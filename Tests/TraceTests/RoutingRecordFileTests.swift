import Foundation
import TestSupport
import Testing
import Trace

/// The routing record file on its own: what is written reads back the same, and a file that
/// is not a good record is refused with an error that names the file and the line.
@Suite("Routing record file")
struct RoutingRecordFileTests {
    static let header = RoutingRecordHeader(model: "dir/a \"quoted\" \\ name\n.gguf", architecture: "qwen3moe", layers: 4,
                                            moeLayers: [1, 2, 3], experts: 8, expertsPerToken: 2)

    /// Random records in the file's order: batches of tokens, each with every MoE layer.
    static func records(seed: UInt64, batches: Int = 5) -> [RoutingRecord] {
        var rng = SplitMix64(seed: seed)
        var out: [RoutingRecord] = []
        var position = 0
        for batch in 0..<batches {
            let n = batch == 0 ? 7 : 1
            for t in 0..<n {
                let token = Int.random(in: 0..<512, using: &rng)
                for layer in header.moeLayers {
                    let experts = Array((0..<8).shuffled(using: &rng).prefix(2))
                    let w = Float.random(in: 0..<1, using: &rng)
                    var r = RoutingRecord(batch: batch, position: position + t, token: token, layer: layer,
                                          experts: experts, weights: [w, 1 - w])
                    if layer != header.moeLayers.first {
                        r.predicted = Array((0..<8).shuffled(using: &rng).prefix(2))
                        // Tiny, huge and ordinary values: all must come back bit for bit.
                        r.predictedProbabilities = (0..<8).map { i in
                            i == 0 ? 1e-38 : i == 1 ? 3.4e38 : Float.random(in: 0..<1, using: &rng)
                        }
                    }
                    out.append(r)
                }
            }
            position += n
        }
        return out
    }

    func write(_ records: [RoutingRecord], to path: String, header: RoutingRecordHeader = header,
               bufferBytes: Int = 256 << 10) throws {
        let w = try RoutingRecordWriter(path: path, header: header, bufferBytes: bufferBytes)
        for r in records { try w.append(r) }
        try w.close()
    }

    @Test("what is written reads back the same, whatever the buffer size", arguments: [1, 100, 256 << 10])
    func roundTrip(bufferBytes: Int) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let records = Self.records(seed: UInt64(bufferBytes))
        try write(records, to: dir.path("r.jsonl"), bufferBytes: bufferBytes)
        let (header, back) = try RoutingRecordReader.read(path: dir.path("r.jsonl"))
        #expect(header == Self.header)
        #expect(back.count == records.count)
        for (a, b) in zip(back, records) {
            #expect(a == b)
            #expect(a.weights.map(\.bitPattern) == b.weights.map(\.bitPattern))
            #expect(a.predictedProbabilities?.map(\.bitPattern) == b.predictedProbabilities?.map(\.bitPattern))
        }
        // Paths group each token's layers.
        let reader = try RoutingRecordReader(path: dir.path("r.jsonl"))
        var paths: [RoutingPath] = []
        while let p = try reader.nextPath() { paths.append(p) }
        #expect(paths.count == records.count / 3)
        #expect(paths.allSatisfy { $0.layers.map(\.layer) == [1, 2, 3] })
        #expect(paths.flatMap(\.layers) == records)
    }

    @Test func theFormatIsTheDocumentedOne() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let records = [
            RoutingRecord(batch: 0, position: 0, token: 7, layer: 1, experts: [3, 5], weights: [0.75, 0.25]),
            RoutingRecord(batch: 0, position: 0, token: 7, layer: 2, experts: [1, 0], weights: [0.5, .nan],
                          predicted: [1, 2], predictedProbabilities: [0, 0.5, 0.25, 0.125, 0.125, 0, 0, 0]),
        ]
        try write(records, to: dir.path("r.jsonl"))
        let text = try String(contentsOfFile: dir.path("r.jsonl"), encoding: .utf8)
        #expect(text == """
        {"format":"moe-routing","version":1,"model":"dir/a \\"quoted\\" \\\\ name\\n.gguf","architecture":"qwen3moe","layers":4,"moe_layers":[1,2,3],"experts":8,"experts_per_token":2}
        {"batch":0,"pos":0,"token":7,"layer":1,"experts":[3,5],"weights":[0.75,0.25]}
        {"batch":0,"pos":0,"token":7,"layer":2,"experts":[1,0],"weights":[0.5,null],"predicted":[1,2],"predicted_probs":[0.0,0.5,0.25,0.125,0.125,0.0,0.0,0.0]}

        """)
        let back = try RoutingRecordReader.read(path: dir.path("r.jsonl")).records
        #expect(back[1].weights[1].isNaN, "null stands for a non-finite number")
        #expect(back[0] == records[0])
    }

    /// Writes `text` as a file and returns the error reading it gives.
    func readError(_ text: String) throws -> RoutingRecordError? {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.path("bad.jsonl")
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        do {
            _ = try RoutingRecordReader.read(path: path)
            return nil
        } catch {
            return error
        }
    }

    var goodFile: String {
        get throws {
            let dir = try TemporaryDirectory()
            defer { dir.remove() }
            try write(Self.records(seed: 9, batches: 2), to: dir.path("r.jsonl"))
            return try String(contentsOfFile: dir.path("r.jsonl"), encoding: .utf8)
        }
    }

    @Test func aFileCutShortNamesTheLine() throws {
        let text = try goodFile
        let lines = text.split(separator: "\n").count
        for cut in [2, 7, 20] {  // (1 would drop only the newline: the last record is whole)
            let error = try readError(String(text.dropLast(cut)))
            #expect(error.map { if case let .truncated(_, line) = $0 { line == lines } else { false } } == true,
                    "cut \(cut): \(String(describing: error))")
            #expect(error?.description.contains("ends in the middle of line \(lines)") == true)
        }
        // A header cut short is named too.
        let header = try readError(String(text.prefix(30)))
        #expect(header.map { if case .truncated(_, 1) = $0 { true } else { false } } == true)
    }

    @Test func otherVersionsAndOtherFilesAreRefused() throws {
        let text = try goodFile
        let v2 = text.replacingOccurrences(of: "\"version\":1", with: "\"version\":2")
        #expect(try readError(v2)?.description.contains("a routing record of version 2; this moe reads version 1") == true)
        #expect(try readError("")?.description.contains("is empty") == true)
        #expect(try readError("{\"tokens\":[1,2]}\n")?.description.contains("is not a routing record") == true)
        #expect(try readError("GGUF\u{3}\0\0\0")?.description.contains("is not a routing record") == true)
        let noVersion = text.replacingOccurrences(of: "\"version\":1,", with: "")
        #expect(try readError(noVersion)?.description.contains("line 1: the header has no \"version\"") == true)
    }

    @Test func badLinesNameLineAndField() throws {
        let text = try goodFile
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        func with(line i: Int, _ s: String) -> String {
            var copy = lines
            copy[i] = s
            return copy.joined(separator: "\n")
        }
        let cases: [(String, String)] = [
            (with(line: 2, "{\"batch\":0}"), "line 3: no \"pos\""),
            (with(line: 2, lines[2].replacingOccurrences(of: "\"layer\":", with: "\"layer\":\"")), "line 3:"),
            (with(line: 2, lines[2].replacingOccurrences(of: "\"layer\":2", with: "\"layer\":0")),
             "line 3: layer 0 is not one of the header's MoE layers [1, 2, 3]"),
            (with(line: 1, "not json"), "line 2: not valid JSON"),
        ]
        for (file, message) in cases {
            let e = try readError(file)
            #expect(e?.description.contains(message) == true, "\(String(describing: e)) should mention \(message)")
        }
        lines[1] = lines[1].replacingOccurrences(of: "\"experts\":[", with: "\"experts\":[1,")
        #expect(try readError(lines.joined(separator: "\n"))?.description.contains("line 2: 3 experts and 2 weights") == true)
    }

    @Test func writeFailuresAreClear() throws {
        #expect(throws: RoutingRecordError.cannotCreate(path: "/nonexistent-dir/r.jsonl", reason: "No such file or directory")) {
            _ = try RoutingRecordWriter(path: "/nonexistent-dir/r.jsonl", header: Self.header)
        }
        // /dev/full accepts the open and refuses every write: the first flush fails, and so
        // does every call after it.
        let w = try RoutingRecordWriter(path: "/dev/full", header: Self.header, bufferBytes: 1 << 20)
        for r in Self.records(seed: 1, batches: 1) { try w.append(r) }
        let expected = RoutingRecordError.cannotWrite(path: "/dev/full", reason: "No space left on device")
        #expect(throws: expected) { try w.flush() }
        #expect(throws: expected) { try w.append(Self.records(seed: 2, batches: 1)[0]) }
        #expect(throws: expected) { try w.close() }
        #expect(expected.description == "writing routing record '/dev/full' failed: No space left on device")
    }
}
