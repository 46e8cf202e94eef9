import Foundation
import GGUF
import Kernels
import Models
import Storage
import Testing
import TestSupport
@testable import Experts

/// The bytes of `expert`'s bundle at `precision` in a pack's contents.
private func bundleBytes(_ pack: Data, _ layout: ExpertLayout, layer: Int, expert: Int, precision: Int) -> [UInt8] {
    let slices = layout.slices(layer: layer, expert: expert, precision: precision)
    let start = Int(slices[0].fileOffset)
    return [UInt8](pack[start..<(start + slices.reduce(0) { $0 + $1.byteCount })])
}

/// Every class-1 slot holds a copy at the fallback precision, and no more copies are
/// resident than the class has slots.
private func checkClasses(_ provider: OffloadedExpertProvider, _ what: String) {
    let pool = provider.pool
    let resident = provider.residentSlots
    let copies = resident.filter { $0.key.precision > 0 }
    #expect(copies.count <= pool.classCounts[1], "\(what): \(copies.count) copies in \(pool.classCounts[1]) slots")
    #expect(resident.count - copies.count <= pool.classCounts[0], "\(what)")
    for (key, slot) in resident {
        #expect(pool.slotClass(slot) == (key.precision == 0 ? 0 : 1), "\(what): \(key) in slot \(slot)")
        if key.precision > 0 { #expect(key.precision == provider.fallback!.precision, "\(what): \(key)") }
    }
}

/// Precision fallback from copies made in memory, for files without them (issue 6).
@Suite("Precision fallback from copies made in memory", .serialized)
struct MemoryCopyTests {
    static let pool = OffloadingTests.pool
    static let name = "tiny-qwen3moe.f16.gguf"
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test("a copy made in memory is byte for byte the pack's copy of the same type",
          arguments: [("tiny-qwen3moe.f16.gguf", GGMLType.q4_0), ("tiny-qwen3moe.q8_0.gguf", .q4_0),
                      ("tiny-qwen3moe.q8_0.gguf", .q2_K), ("tiny-mixtral.q4_0.gguf", .q8_0)])
    func copiesMatchThePack(_ name: String, _ type: GGMLType) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let packPath = try makePack(name, in: dir, lowPrecisions: [type])
        let file = try GGUFFile.open(path: packPath, backend: .pread)
        let packLayout = try ExpertLayout(file: file, hyperParameters: HyperParameters(metadata: file.metadata))
        let pack = try Data(contentsOf: URL(fileURLWithPath: packPath))
        // Room for every expert at both precisions: every expert read is copied.
        let (model, provider) = try withFallback(Shared.model(name), budget: 64 << 20, threshold: 0, type: type.name)
        #expect(provider.makesCopies && provider.layout.precisions.last == type.name)
        _ = try scriptLogits(model, pool: Self.pool)
        provider.makePendingCopies()
        let precision = provider.fallback!.precision
        var compared = 0
        for layer in provider.layout.layers {
            for expert in 0..<provider.layout.expertCount {
                guard let (bytes, made) = provider.residentBytes(ExpertKey(layer: layer, expert: expert, precision: precision)) else {
                    continue
                }
                #expect(made)
                let expected = bundleBytes(pack, packLayout, layer: layer, expert: expert, precision: 1)
                #expect(Array(bytes) == expected, "\(name) \(type.name): layer \(layer) expert \(expert)")
                compared += 1
            }
        }
        #expect(compared == provider.stats.copiesMade && compared > 0)
        #expect(provider.stats.copySeconds > 0)
    }

    @Test("with every expert copied and none resident at full precision, every expert is computed from its copy: the logits of the pack's copies, bit for bit, and nothing is read")
    func everyExpertFromItsCopy() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pack = try makePack(Self.name, in: dir, lowPrecisions: [.q4_0])
        let expected = try scriptLogits(try residentAtPrecision(pack, precision: 1), pool: Self.pool)
        let (model, provider) = try withFallback(Shared.model(Self.name), budget: 64 << 20, threshold: 0, type: "q4_0")
        // First, at full precision, batches of 48 tokens select (so read and copy) every expert.
        let all = provider.layout.layers.count * provider.layout.expertCount
        for seed in 0..<4 where provider.stats.copiesMade < all {
            let tokens = (0..<48).map { ($0 &* 104_729 &+ 7 &* seed &+ 7) % model.vocabularySize }
            _ = try model.forward(tokens, cache: model.makeCache(capacity: 64), logits: .last, workspace: Workspace(), pool: Self.pool)
            provider.makePendingCopies()
        }
        try #require(provider.stats.copiesMade == all, "the batches select every expert (\(provider.stats.copiesMade) of \(all))")
        // Then with the full-precision experts gone and a threshold above every weight.
        provider.evictAll(slotClass: 0)
        provider.fallback!.threshold = 2
        provider.stats.reset()
        let got = try scriptLogits(model, pool: Self.pool)
        #expect(zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern }, "logits differ from the pack's copies")
        let s = provider.stats
        #expect(s.lowPrecisionUses == s.expertUses && s.madeCopyUses == s.expertUses)
        #expect(s.bytesRead == 0 && s.expertsRead == 0)
    }

    @Test("a zero threshold never falls back: copies are made, the logits are bit-identical to full precision")
    func zeroThreshold() throws {
        let expected = try scriptLogits(try DecoderModel.load(path: Shared.model(Self.name)), pool: Self.pool)
        let (model, provider) = try withFallback(Shared.model(Self.name), budget: 3 << 20, threshold: 0, type: "q4_0", prefetch: .gate)
        let got = try scriptLogits(model, pool: Self.pool)
        #expect(zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern })
        #expect(provider.stats.lowPrecisionUses == 0)
        #expect(provider.stats.copiesMade > 0)
        checkClasses(provider, "threshold 0")
    }

    @Test("every policy runs with copies made in memory: they are used, nothing low-precision is read, the classes hold",
          arguments: ExpertPolicies.names)
    func everyPolicy(_ policy: String) throws {
        let expected = try scriptLogits(try DecoderModel.load(path: Shared.model(Self.name)), pool: Self.pool)
        for (budget, prefetch) in [(3 << 20, PrefetchMode.none), (2 << 20, .gate), (6 << 20, .adaptive)] {
            let what = "\(policy), budget \(budget), prefetch \(prefetch)"
            let (model, provider) = try withFallback(Shared.model(Self.name), budget: budget, threshold: 0.3, type: "q4_0",
                                                     policy: policy, prefetch: prefetch, share: 0.5)
            #expect(provider.pool.totalBytes <= budget)
            var got: [Float] = []
            for _ in 0..<3 {
                got = try scriptLogits(model, pool: Self.pool)
                checkClasses(provider, what)
            }
            let s = provider.stats
            #expect(s.copiesMade > 0, "\(what)")
            #expect(s.lowPrecisionUses > 0 && s.lowPrecisionUses < s.expertUses, "\(what): \(s.lowPrecisionUses) of \(s.expertUses)")
            #expect(s.madeCopyUses == s.lowPrecisionUses && s.lowPrecisionBytesRead == 0, "\(what)")
            expectPromptLogitsClose(got, expected, vocabulary: model.vocabularySize, what)
        }
    }

    @Test("a pack without the type asked for gets copies of it made in memory, beside its own")
    func packWithOtherCopies() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pack = try makePack(Self.name, in: dir, lowPrecisions: [.q2_K])
        let (model, provider) = try withFallback(pack, budget: 3 << 20, threshold: 0.3, type: "q4_0")
        #expect(provider.layout.precisions == ["native", "q2_K", "q4_0"] && provider.makesCopies)
        _ = try scriptLogits(model, pool: Self.pool)
        _ = try scriptLogits(model, pool: Self.pool)
        #expect(provider.stats.copiesMade > 0 && provider.stats.madeCopyUses > 0)
        checkClasses(provider, "pack")
        // The pack's own type is read from it, as before.
        let (_, reading) = try withFallback(pack, budget: 3 << 20, threshold: 0.3, type: "q2_k")
        #expect(!reading.makesCopies && reading.layout.precisions == ["native", "q2_K"])
    }

    @Test("without a type or a pack, the copies are Q4_0 made in memory")
    func defaultType() throws {
        let (_, provider) = try withFallback(Shared.model("tiny-qwen3moe.q8_0.gguf"), budget: 3 << 20, threshold: 0.3, type: nil)
        #expect(provider.makesCopies && provider.layout.precisions == ["native", "q4_0"])
        #expect(provider.pool.classBytes[1] < provider.pool.classBytes[0])
    }

    @Test("a type that cannot hold the rows, is not a type, or is the model's own is a typed error")
    func typeErrors() throws {
        func layout(_ path: String) throws -> ExpertLayout {
            let file = try GGUFFile.open(path: path, backend: .pread)
            return try ExpertLayout(file: file, hyperParameters: HyperParameters(metadata: file.metadata))
        }
        func setting(_ path: String, _ type: String) throws(ExpertError) {
            var options = OffloadOptions()
            options.fallbackType = type
            _ = try OffloadedModel.fallbackSetting(options, layout: try! layout(path), path: path)
        }
        // The default model's experts are 384 wide: not a whole number of 256-value K blocks.
        let defaultModel = Self.repository.appendingPathComponent("models/moe-default.q8_0.gguf").path
        #expect(throws: ExpertError.fallbackTypeCannotHoldRows(type: .q2_K, matrix: "blk.0.ffn_down_exps.weight", rowLength: 384)) {
            try setting(defaultModel, "q2_K")
        }
        #expect(throws: ExpertError.fallbackTypeIsNative(.q8_0, path: Shared.model("tiny-qwen3moe.q8_0.gguf"))) {
            try setting(Shared.model("tiny-qwen3moe.q8_0.gguf"), "q8_0")
        }
        #expect {
            try setting(Shared.model(Self.name), "q9_9")
        } throws: { "\($0)".contains("--fallback-type q9_9 is not a type") && "\($0)".contains("q4_0") }
        #expect {
            try setting(Shared.model(Self.name), "iq2_xxs")
        } throws: { ($0 as? ExpertError).map { if case .unsupportedFallbackType = $0 { true } else { false } } == true }
        // Through the loader, the message names the type, the matrix and the block size.
        #expect {
            _ = try withFallback(defaultModel, budget: 8 << 20, threshold: 0.5, type: "q2_K")
        } throws: { "\($0)".contains("--fallback-type q2_K cannot hold blk.0.ffn_down_exps.weight: its rows of 384 values") }
    }
}
