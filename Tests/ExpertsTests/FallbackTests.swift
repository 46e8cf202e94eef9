import Foundation
import GGUF
import Kernels
import Models
import Storage
import Testing
import TestSupport
@testable import Experts

/// The model in pack `path` with every expert computed from its copy at `precision`, all in
/// memory: what precision fallback must compute when every expert falls back.
func residentAtPrecision(_ path: String, precision: Int) throws -> DecoderModel {
    var layout: ExpertLayout?
    return try DecoderModel.load(path: path, skip: { layout?.expertTensorNames.contains($0.name) ?? false },
                                 prepare: { file, hp throws(ModelError) in
        layout = try ExpertLayout(file: file, hyperParameters: hp)
    }) { model, _ throws(ModelError) in
        let layout = layout!
        guard let bytes = FileManager.default.contents(atPath: path) else { throw .file("cannot read \(path)") }
        // Kept for the life of the test process, like the pool would be.
        let memory = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 64)
        bytes.withUnsafeBytes { memory.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        let layers = (0..<model.hyperParameters.blockCount).map { layer -> [ExpertWeights] in
            guard layout.hasExperts(layer: layer) else { return [] }
            return (0..<layout.expertCount).map { e in
                let m = layout.slices(layer: layer, expert: e, precision: precision).map {
                    WeightMatrix(type: $0.type, rows: $0.rows, columns: $0.columns, base: memory + Int($0.fileOffset))
                }
                return ExpertWeights(gate: m[0], up: m[1], down: m[2])
            }
        }
        return ResidentExpertProvider(layers: layers)
    }
}

@Suite("Precision fallback", .serialized)
struct FallbackTests {
    static let pool = OffloadingTests.pool
    static let name = "tiny-qwen3moe.f16.gguf"

    @Test("every expert falling back computes exactly what the low-precision copies give, under every policy")
    func allFallBack() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pack = try makePack(Self.name, in: dir, lowPrecisions: [.q8_0, .q4_0])
        for (precision, type) in [(1, "q8_0"), (2, "q4_0")] {
            let expected = try scriptLogits(try residentAtPrecision(pack, precision: precision), pool: Self.pool)
            let native = try scriptLogits(try DecoderModel.load(path: Shared.model(Self.name)), pool: Self.pool)
            #expect(zip(expected, native).contains { $0.bitPattern != $1.bitPattern }, "the copies differ from the original")
            for policy in ExpertPolicies.names {
                for budget in [3 << 20, 64 << 20] {
                    // A threshold above every routing weight: every expert not resident at full
                    // precision falls back, and none ever is (nothing asks for it).
                    let (model, provider) = try withFallback(pack, budget: budget, threshold: 2, type: type, policy: policy)
                    let got = try scriptLogits(model, pool: Self.pool)
                    #expect(zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern },
                            "\(type), \(policy), budget \(budget): logits differ from the low-precision model")
                    let s = provider.stats
                    #expect(s.lowPrecisionUses == s.expertUses)
                    #expect(s.lowPrecisionBytesRead == s.bytesRead && s.bytesRead > 0)
                }
            }
        }
    }

    @Test("read-ahead with fallback reads the copies the layers then use, and the results stay exact",
          arguments: [PrefetchMode.gate, .adaptive, .near])
    func readAheadWithFallback(_ prefetch: PrefetchMode) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pack = try makePack(Self.name, in: dir, lowPrecisions: [.q4_0])
        let expected = try scriptLogits(try residentAtPrecision(pack, precision: 1), pool: Self.pool)
        let (model, provider) = try withFallback(pack, budget: 8 << 20, threshold: 2, prefetch: prefetch)
        let got = try scriptLogits(model, pool: Self.pool)
        #expect(zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(prefetch)")
        let s = provider.stats
        #expect(s.prefetchesIssued > 0)
        // Every byte read, prefetched or not, was a low-precision copy: nothing asked for the rest.
        #expect(s.lowPrecisionBytesRead == s.bytesRead, "\(prefetch): \(s.lowPrecisionBytesRead) of \(s.bytesRead)")
    }

    @Test("a zero threshold never falls back: logits are bit-identical to the full-precision run")
    func zeroThreshold() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pack = try makePack(Self.name, in: dir, lowPrecisions: [.q4_0])
        let expected = try scriptLogits(try DecoderModel.load(path: Shared.model(Self.name)), pool: Self.pool)
        let (model, provider) = try withFallback(pack, budget: 2 << 20, threshold: 0, prefetch: .gate)
        let got = try scriptLogits(model, pool: Self.pool)
        #expect(zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern })
        #expect(provider.stats.lowPrecisionUses == 0)
    }

    @Test("with a threshold in between, the unimportant misses fall back and the logits stay close",
          arguments: ["tiny-qwen3moe.f16.gguf", "tiny-olmoe.q6_k.gguf", "tiny-qwen2moe.q4_k_m.gguf"])
    func partialFallback(_ name: String) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pack = try makePack(name, in: dir, lowPrecisions: [.q4_0])
        let expected = try scriptLogits(try DecoderModel.load(path: Shared.model(name)), pool: Self.pool)
        let (_, probe) = try withFallback(pack, budget: 64 << 20, threshold: 0)
        let k = probe.layout.expertsPerToken
        let (model, provider) = try withFallback(pack, budget: 3 << 20, threshold: 1 / Float(k))
        let got = try scriptLogits(model, pool: Self.pool)
        let s = provider.stats
        #expect(s.lowPrecisionUses > 0 && s.lowPrecisionUses < s.expertUses, "\(s.lowPrecisionUses) of \(s.expertUses)")
        expectPromptLogitsClose(got, expected, vocabulary: model.vocabularySize, name)
    }

    @Test("the copies get their own smaller slots within the budget, at least a token's worth")
    func poolClasses() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pack = try makePack(Self.name, in: dir, lowPrecisions: [.q4_0])
        let budget = 3 << 20
        let (_, provider) = try withFallback(pack, budget: budget, threshold: 0.2)
        let pool = provider.pool
        #expect(pool.classBytes.count == 2 && pool.classBytes[1] < pool.classBytes[0])
        #expect(pool.classCounts.allSatisfy { $0 >= provider.layout.expertsPerToken })
        #expect(pool.totalBytes <= budget)
        // Slots are page aligned and do not overlap.
        let starts = (0..<pool.slotCount).map { pool.slot($0) - pool.memory.baseAddress }
        #expect(starts.allSatisfy { $0 % 4096 == 0 })
        for c in 0..<2 {
            for s in pool.slots(ofClass: c) where s + 1 < pool.slotCount {
                #expect(starts[s + 1] - starts[s] >= pool.classBytes[c])
            }
        }
    }

    @Test("fallback with an unknown type or below the minimum is a clear error; a type the pack lacks is made in memory")
    func errors() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let plain = Shared.model(Self.name)
        #expect {
            _ = try withFallback(plain, budget: 8 << 20, threshold: 0.1, type: "q9_9")
        } throws: { "\($0)".contains("--fallback-type q9_9 is not a type precision fallback can make copies in") }
        let pack = try makePack(Self.name, in: dir, lowPrecisions: [.q4_0])
        let (_, inMemory) = try withFallback(pack, budget: 8 << 20, threshold: nil, type: "q2_k")
        #expect(inMemory.makesCopies && inMemory.layout.precisions == ["native", "q4_0", "q2_K"])
        #expect {
            _ = try withFallback(pack, budget: 1 << 20, threshold: 0.1)
        } throws: { "\($0)".contains("is below the minimum") && "\($0)".contains("low-precision copies of") }
    }
}
