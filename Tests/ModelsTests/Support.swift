import Foundation
import TestSupport

/// `../shared/` beside the repository (or `MOE_SHARED_DIR`): llama.cpp-made reference data.
enum Shared {
    static let root = SharedData.root

    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }

    /// Stems like "tiny-qwen3moe.q8_0" that have both a model and a reference file.
    static var referenceStems: [String] {
        let dir = root.appendingPathComponent("reference")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
    }
}

/// One `reference/STEM.json`: llama.cpp's logits for 32 tokens and its greedy continuation.
struct Reference {
    var tokens: [Int]
    var logits: [[Float]]
    var greedy: [Int]
    var vocabularySize: Int

    init(stem: String) throws {
        let url = Shared.root.appendingPathComponent("reference/\(stem).json")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        tokens = (object["tokens"] as! [NSNumber]).map(\.intValue)
        logits = (object["logits"] as! [[NSNumber]]).map { $0.map(\.floatValue) }
        greedy = (object["greedy"] as! [NSNumber]).map(\.intValue)
        vocabularySize = (object["n_vocab"] as! NSNumber).intValue
    }
}

/// ‖a − b‖₂ / ‖b‖₂.
func relativeError(_ a: ArraySlice<Float>, _ b: [Float]) -> Double {
    var diff = 0.0, norm = 0.0
    for (x, y) in zip(a, b) {
        diff += Double(x - y) * Double(x - y)
        norm += Double(y) * Double(y)
    }
    return (diff / max(norm, 1e-30)).squareRoot()
}

func argmax<C: Collection>(_ c: C) -> C.Index where C.Element == Float {
    c.indices.max(by: { c[$0] < c[$1] })!
}
