import Engine
import Foundation
import Kernels
import Models
import Testing

/// Our logits against llama.cpp's for every shared tiny model, with the bounds
/// ../shared/README.md states: f32/f16 files at most 0.002 relative error at every
/// position; quantized files a median of at most 0.05 and the same arg-max at ≥ 27 of 32.
@Suite("Logits match llama.cpp")
struct ReferenceLogitsTests {
    static let stems = Shared.referenceStems

    @Test("the shared reference files are there")
    func referencesExist() {
        #expect(Self.stems.count >= 28, "found \(Self.stems.count) reference files under \(Shared.root.path)")
    }

    @Test("every shared model", arguments: stems)
    func matchesReference(stem: String) throws {
        let reference = try Reference(stem: stem)
        let model = try DecoderModel.load(path: Shared.model("\(stem).gguf"))
        #expect(model.vocabularySize == reference.vocabularySize)
        let session = Session(model: model, contextLength: 64, threads: 2)
        let logits = try session.evaluate(reference.tokens, logits: .all)
        let v = model.vocabularySize
        var errors: [Double] = []
        var agree = 0
        for (i, row) in reference.logits.enumerated() {
            let ours = logits[(i * v)..<((i + 1) * v)]
            errors.append(relativeError(ours, row))
            if argmax(ours) - i * v == argmax(row) { agree += 1 }
        }
        let sorted = errors.sorted()
        let median = (sorted[15] + sorted[16]) / 2
        let worst = sorted.last!
        let isFloat = stem.hasSuffix(".f32") || stem.hasSuffix(".f16")
        print("\(stem): median \(String(format: "%.5f", median)), max \(String(format: "%.5f", worst)), arg-max agreement \(agree)/32")
        if isFloat {
            #expect(worst <= 0.002, "\(stem): worst position relative error \(worst)")
        } else {
            #expect(median <= 0.05, "\(stem): median relative error \(median)")
            #expect(agree >= 27, "\(stem): arg-max agrees at \(agree) of 32 positions")
        }

        // Greedy continuation: a smoke test (near-ties may part ways), so only the first token.
        var sampler = Sampler(.greedy)
        let next = logits.suffix(v).withUnsafeBufferPointer { sampler.sample($0) }
        if isFloat { #expect(next == reference.greedy.first) }
    }
}
