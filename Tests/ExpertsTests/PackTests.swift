import Experts
import Foundation
import TestSupport
import GGUF
import Kernels
import Models
import Storage
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The tiny llama.cpp models in `../shared/models` (or `$MOE_SHARED_DIR/models`), read in place,
/// and a scratch directory per test for the packs.
private enum PackFixture {
    static let models = SharedData.root.appendingPathComponent("models")

    static func model(_ name: String) -> String { models.appendingPathComponent(name).path }

    /// Runs `body` with a fresh directory that is removed afterwards.
    static func withDirectory<T>(_ body: (URL) throws -> T) throws -> T {
        try TemporaryDirectory.with(prefix: "moe-pack", body)
    }

    static func contents(_ dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
    }
}

/// A parsed GGUF file with its storage backend, for reading tensor and expert bytes.
private struct OpenFile {
    let file: GGUFFile
    let storage: any StorageBackend
    let layout: ExpertLayout

    init(_ path: String) throws {
        storage = try StorageFile.open(path: path)
        file = try GGUFFile.read(from: storage)
        layout = try ExpertLayout(file: file, hyperParameters: HyperParameters(metadata: file.metadata))
    }

    func bytes(_ slice: ExpertSlice) throws -> [UInt8] {
        try storage.readBytes(at: slice.fileOffset, count: slice.byteCount)
    }

    func bytes(_ tensor: GGUFTensorInfo) throws -> [UInt8] {
        try storage.readBytes(at: tensor.absoluteOffset, count: Int(tensor.byteCount))
    }
}

/// What a low-precision copy of `native` must hold: each row dequantized to F32 and quantized
/// to `type`, or the bytes themselves when the matrix already has that type.
private func requantized(_ native: [UInt8], _ slice: ExpertSlice, to type: GGMLType) -> [UInt8] {
    if slice.type == type { return native }
    let sourceRow = slice.type.byteCount(rows: 1, columns: slice.columns)
    let targetRow = type.byteCount(rows: 1, columns: slice.columns)
    var out = [UInt8](repeating: 0, count: slice.rows * targetRow)
    var values = [Float](repeating: 0, count: slice.columns)
    native.withUnsafeBytes { source in
        out.withUnsafeMutableBytes { target in
            values.withUnsafeMutableBufferPointer { v in
                for row in 0..<slice.rows {
                    Dequantize.row(slice.type, from: source.baseAddress! + row * sourceRow, to: v.baseAddress!,
                                   count: slice.columns)
                    Quantize.row(type, from: v.baseAddress!, to: target.baseAddress! + row * targetRow,
                                 count: slice.columns)
                }
            }
        }
    }
    return out
}

/// Writes a one-layer qwen3moe file with F32 experts whose feed-forward width (96) is a whole
/// number of 32-value blocks but not of 256-value K-quant blocks.
private func writeOddWidthModel(to path: String) throws {
    let embedding = 256, width = 96, experts = 2
    var writer = GGUFWriter()
    writer.metadata["general.architecture"] = .string(GGUFString("qwen3moe"))
    writer.metadata["qwen3moe.embedding_length"] = .uint32(UInt32(embedding))
    writer.metadata["qwen3moe.block_count"] = .uint32(1)
    writer.metadata["qwen3moe.attention.head_count"] = .uint32(4)
    writer.metadata["qwen3moe.expert_count"] = .uint32(UInt32(experts))
    writer.metadata["qwen3moe.expert_used_count"] = .uint32(1)
    writer.metadata["qwen3moe.expert_feed_forward_length"] = .uint32(UInt32(width))
    writer.metadata["tokenizer.ggml.tokens"] = .array(.string(["a", "b", "c", "d"].map { GGUFString($0) }))
    func matrix(_ count: Int, seed: Int) -> [UInt8] {
        let values = (0..<count).map { Float(sin(Double($0 &* 7919 &+ seed))) * 0.05 }
        return values.withUnsafeBytes { Array($0) }
    }
    try writer.addTensor(name: "token_embd.weight", dimensions: [UInt64(embedding), 4], type: .f32,
                         source: .bytes(matrix(embedding * 4, seed: 0)))
    for (k, (part, dims)) in [("gate", [embedding, width]), ("up", [embedding, width]), ("down", [width, embedding])].enumerated() {
        try writer.addTensor(name: "blk.0.ffn_\(part)_exps.weight",
                             dimensions: (dims + [experts]).map { UInt64($0) }, type: .f32,
                             source: .bytes(matrix(embedding * width * experts, seed: k + 1)))
    }
    try writer.write(to: path)
}

@Suite("moe pack: packed expert layout")
struct PackTests {
    @Test("bundles hold the input's experts; everything else is unchanged", arguments: [
        ("tiny-qwen3moe.q8_0.gguf", [GGMLType.q4_0]),
        ("tiny-qwen2moe.q4_k_m.gguf", [.q4_0, .q2_K, .q4_K]),
        ("tiny-mixtral.q4_0.gguf", [.q4_K]),
        ("tiny-olmoe.q6_k.gguf", [.q2_K, .q8_0]),
    ])
    func packMatchesInput(name: String, lowPrecisions: [GGMLType]) throws {
        try PackFixture.withDirectory { dir in
            let inputPath = PackFixture.model(name)
            let outputPath = dir.appendingPathComponent("packed.gguf").path
            let packer = try ExpertPacker(input: inputPath, output: outputPath, lowPrecisions: lowPrecisions, threads: 2)
            var reports: [(UInt64, UInt64)] = []
            let summary = try packer.write { reports.append(($0, $1)) }
            #expect(PackFixture.contents(dir) == ["packed.gguf"], "no temporary file is left")

            let input = try OpenFile(inputPath)
            let pack = try OpenFile(outputPath)
            let layout = pack.layout

            // Layout and alignment.
            #expect(layout.isPacked)
            #expect(layout.precisions == ["native"] + lowPrecisions.map(\.name))
            #expect(layout.layers == input.layout.layers)
            #expect(layout.expertCount == input.layout.expertCount)
            #expect(pack.file.alignment == PackFormat.alignment)
            #expect(pack.file.fileSize % UInt64(PackFormat.alignment) == 0)
            #expect(pack.file.fileSize == UInt64(try FileManager.default.attributesOfItem(atPath: outputPath)[.size] as! Int))
            #expect(reports.last.map { $0.0 == $0.1 && $0.1 == pack.file.fileSize } == true)

            // Metadata: the input's, alignment 4096, then the pack keys.
            let m = pack.file.metadata
            for (key, value) in input.file.metadata.entries where key != GGUFFile.alignmentKey {
                #expect(m[key] == value, "metadata \(key)")
            }
            #expect(m[GGUFFile.alignmentKey] == .uint32(4096))
            #expect(m[PackFormat.versionKey] == .uint32(PackFormat.version))
            #expect(m[PackFormat.precisionsKey] == .array(.string(layout.precisions.map { GGUFString($0) })))
            #expect(m[PackFormat.layersKey] == .array(.uint32(input.layout.layers.map { UInt32($0) })))
            let nativeTypes = input.layout.layers.flatMap { input.layout.slices(layer: $0, expert: 0).map(\.type.rawValue) }
            #expect(m[PackFormat.typesKey(precision: 0)] == .array(.uint32(nativeTypes)))
            for (i, type) in lowPrecisions.enumerated() {
                #expect(m[PackFormat.typesKey(precision: i + 1)]
                        == .array(.uint32(Array(repeating: type.rawValue, count: nativeTypes.count))))
            }

            // Non-expert tensors first, in the input's order and byte for byte; then the bundles
            // by precision, layer and expert, each on a 4096-byte boundary.
            let others = input.file.tensors.filter { !input.layout.expertTensorNames.contains($0.name) }
            #expect(Array(pack.file.tensors.prefix(others.count).map(\.name)) == others.map(\.name))
            for t in others {
                let copy = try #require(pack.file.tensor(named: t.name))
                #expect(copy.type == t.type && copy.dimensions == t.dimensions)
                #expect(try pack.bytes(copy) == input.bytes(t), "tensor \(t.name)")
            }
            var bundleNames: [String] = []
            for p in layout.precisions.indices {
                for layer in layout.layers {
                    for e in 0..<layout.expertCount {
                        bundleNames.append(PackFormat.bundleName(layer: layer, expert: e, precision: p))
                    }
                }
            }
            let bundles = Array(pack.file.tensors.dropFirst(others.count))
            #expect(bundles.map(\.name) == bundleNames)
            #expect(bundles.allSatisfy { $0.type == .i8 && $0.absoluteOffset % 4096 == 0 })

            // Expert bytes: native copies exact, low precisions as dequantize → quantize makes them.
            for layer in layout.layers {
                for e in 0..<layout.expertCount {
                    let original = input.layout.slices(layer: layer, expert: e)
                    let nativeBytes = try original.map { try input.bytes($0) }
                    let packedNative = layout.slices(layer: layer, expert: e, precision: 0)
                    #expect(packedNative.map(\.type) == original.map(\.type))
                    for k in 0..<3 {
                        #expect(try pack.bytes(packedNative[k]) == nativeBytes[k], "layer \(layer) expert \(e) matrix \(k)")
                    }
                    for (i, type) in lowPrecisions.enumerated() {
                        let low = layout.slices(layer: layer, expert: e, precision: i + 1)
                        for k in 0..<3 {
                            #expect(low[k].type == type && low[k].rows == original[k].rows && low[k].columns == original[k].columns)
                            #expect(try pack.bytes(low[k]) == requantized(nativeBytes[k], original[k], to: type),
                                    "\(type.name) layer \(layer) expert \(e) matrix \(k)")
                        }
                    }
                }
            }

            // The summary describes the file.
            #expect(summary.fileSize == pack.file.fileSize)
            #expect(summary.expertsPacked == layout.layers.count * layout.expertCount)
            #expect(summary.bundleCount == bundles.count)
            #expect(summary.precisions.map(\.name) == layout.precisions)
            for (p, precision) in summary.precisions.enumerated() {
                #expect(precision.totalBytes == layout.totalBytes(precision: p))
                #expect(precision.bytesPerExpert.max() == layout.expertBytes(precision: p))
            }
        }
    }

    @Test("shared experts stay ordinary tensors")
    func sharedExperts() throws {
        try PackFixture.withDirectory { dir in
            let outputPath = dir.appendingPathComponent("qwen2moe.pack.gguf").path
            try ExpertPacker(input: PackFixture.model("tiny-qwen2moe.q4_k_m.gguf"), output: outputPath).write()
            let pack = try OpenFile(outputPath)
            let shared = pack.file.tensors.filter { $0.name.contains("_shexp") }
            #expect(shared.count == 3 * 4)
            #expect(shared.allSatisfy { !pack.layout.expertTensorNames.contains($0.name) && $0.type != .i8 })
            #expect(!pack.file.tensors.contains { $0.name.contains("_exps") })
        }
    }

    @Test("a pack's description shows its bundles; plain files have none")
    func description() throws {
        try PackFixture.withDirectory { dir in
            let inputPath = PackFixture.model("tiny-qwen2moe.q4_k_m.gguf")
            let outputPath = dir.appendingPathComponent("described.gguf").path
            try ExpertPacker(input: inputPath, output: outputPath, lowPrecisions: [.q4_0]).write()
            let pack = try OpenFile(outputPath)
            let d = ModelDescription(pack.file)
            let p = try #require(d.pack)
            #expect(d.experts == nil)
            #expect(p.version == 1 && p.expertCount == 8 && p.expertsUsedPerToken == 4 && p.layers == [0, 1, 2])
            #expect(p.precisions.map(\.name) == ["native", "q4_0"])
            for (i, precision) in p.precisions.enumerated() {
                #expect(precision.totalBytes == pack.layout.totalBytes(precision: i))
                for l in precision.layers {
                    let slices = pack.layout.slices(layer: l.layer, expert: 0, precision: i)
                    #expect(l.expertCount == 8)
                    #expect(l.types == slices.map(\.type))
                    #expect(l.bytesPerExpert == UInt64(slices.reduce(0) { $0 + $1.byteCount }))
                }
            }
            #expect(p.precisions[0].layers.map(\.types.last) == [.q4_K, .q4_K, .q6_K])
            #expect(p.bundleBytes + p.nonBundleBytes == pack.file.tensorBytes)

            // The text and JSON `moe inspect` makes of it: moeTests.

            let plain = try GGUFFile.open(path: inputPath)
            #expect(ModelDescription(plain).pack == nil)
            // A token reads the same weights from the pack as from the file it was made of.
            #expect(d.weightBytesPerDecodedToken == ModelDescription(plain).weightBytesPerDecodedToken)
        }
    }

    @Test("a damaged pack is still described, as far as it goes")
    func damagedPackDescription() throws {
        try PackFixture.withDirectory { dir in
            let packPath = dir.appendingPathComponent("pack.gguf").path
            try ExpertPacker(input: PackFixture.model("tiny-mixtral.q4_0.gguf"), output: packPath,
                             lowPrecisions: [.q8_0]).write()
            let storage = try StorageFile.open(path: packPath)
            var writer = GGUFWriter(copying: try GGUFFile.read(from: storage), from: storage)
            writer.metadata.remove(PackFormat.typesKey(precision: 1))
            writer.metadata[PackFormat.precisionsKey] = .array(.string([GGUFString("native")]))
            writer.metadata[PackFormat.versionKey] = .string(GGUFString("one"))
            writer.metadata["llama.expert_count"] = .int32(-1)
            let damaged = dir.appendingPathComponent("damaged.gguf").path
            try writer.write(to: damaged)

            let file = try GGUFFile.open(path: damaged)
            let d = ModelDescription(file)
            let p = try #require(d.pack)
            #expect(p.version == nil && p.expertCount == 8)
            #expect(p.precisions.map(\.name) == ["native", "precision 1"])
            #expect(p.precisions[0].layers.allSatisfy { $0.types == [.q4_0, .q4_0, .q4_0] })
            #expect(p.precisions[1].layers.allSatisfy { $0.types.isEmpty && $0.expertCount == 8 })
            // The runtime's reader refuses it.
            #expect(throws: ModelError.self) {
                try ExpertLayout(file: file, hyperParameters: HyperParameters(metadata: file.metadata))
            }
        }
    }

    @Test("--low-precision names: repeated or comma-separated, any case")
    func parsingTypes() throws {
        #expect(try ExpertPacker.lowPrecisionTypes(parsing: ["q4_0,Q2_K", " q8_0 ", ""]) == [.q4_0, .q2_K, .q8_0])
        #expect(throws: PackError.unknownType("q9_9")) { try ExpertPacker.lowPrecisionTypes(parsing: ["q4_0,q9_9"]) }
        #expect(throws: PackError.duplicateType(.q4_0)) { try ExpertPacker.lowPrecisionTypes(parsing: ["q4_0", "Q4_0"]) }
        for type in [GGMLType.q8_0, .q4_0, .q4_K, .q2_K] { #expect(PackError.supportedTypes.contains(type)) }
        #expect(!PackError.supportedTypes.contains(.iq2_xxs))
    }

    @Test("bad input is a typed error that names the problem, and writes nothing")
    func refusals() throws {
        try PackFixture.withDirectory { dir in
            let q8 = PackFixture.model("tiny-qwen3moe.q8_0.gguf")
            let out = dir.appendingPathComponent("out.gguf").path
            func refusal(_ input: String, output: String? = nil, _ types: [GGMLType] = []) -> PackError? {
                do {
                    try ExpertPacker(input: input, output: output ?? out, lowPrecisions: types).write()
                    return nil
                } catch {
                    return error  // typed: both calls throw PackError
                }
            }

            let dense = PackFixture.model("tiny-qwen3.q8_0.gguf")
            #expect(refusal(dense) == .notMoE(path: dense, detail: "qwen3 without qwen3.expert_count"))
            #expect(refusal(q8, [.iq2_xxs]) == .unsupportedType(.iq2_xxs))
            #expect(refusal(q8, [.q4_0, .q2_K, .q4_0]) == .duplicateType(.q4_0))
            #expect(refusal(q8, [.q8_0]) == .nativeType(.q8_0, path: q8))
            #expect(refusal(q8, output: q8) == .outputIsInput(q8))
            // The same file by another name.
            let link = dir.appendingPathComponent("link.gguf").path
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: q8)
            #expect(refusal(q8, output: link) == .outputIsInput(link))
            #expect(refusal(link, output: q8) == .outputIsInput(q8))
            let missing = dir.appendingPathComponent("missing.gguf").path
            guard case .input(let why)? = refusal(missing) else {
                Issue.record("a missing input is an input error")
                return
            }
            #expect(why.contains(missing))
            #expect(PackFixture.contents(dir) == ["link.gguf"])

            // Messages name the type, the matrix or the file.
            #expect(PackError.nativeType(.q8_0, path: q8).description.contains("q8_0"))
            #expect(PackError.unsupportedType(.iq2_xxs).description.contains("iq2_xxs"))
            #expect(PackError.notMoE(path: dense, detail: "x").description.contains(dense))
        }
    }

    @Test("a pack is not packed again")
    func packOfPack() throws {
        try PackFixture.withDirectory { dir in
            let first = dir.appendingPathComponent("first.gguf").path
            try ExpertPacker(input: PackFixture.model("tiny-mixtral.q4_0.gguf"), output: first).write()
            let second = dir.appendingPathComponent("second.gguf").path
            #expect(throws: PackError.alreadyPacked(first)) {
                try ExpertPacker(input: first, output: second)
            }
            #expect(PackError.alreadyPacked(first).description.contains(PackFormat.versionKey))
            #expect(PackFixture.contents(dir) == ["first.gguf"])
        }
    }

    @Test("a type whose blocks do not divide a row names the matrix; one that does converts F32")
    func blockSizeMismatch() throws {
        try PackFixture.withDirectory { dir in
            let input = dir.appendingPathComponent("odd.gguf").path
            try writeOddWidthModel(to: input)
            let out = dir.appendingPathComponent("odd.pack.gguf").path
            #expect(throws: PackError.blockSizeMismatch(type: .q4_K, matrix: "blk.0.ffn_down_exps.weight", rowLength: 96)) {
                try ExpertPacker(input: input, output: out, lowPrecisions: [.q4_0, .q4_K])
            }
            #expect(PackError.blockSizeMismatch(type: .q4_K, matrix: "blk.0.ffn_down_exps.weight", rowLength: 96)
                .description.contains("blk.0.ffn_down_exps.weight"))

            try ExpertPacker(input: input, output: out, lowPrecisions: [.q4_0], threads: 1).write()
            let original = try OpenFile(input), pack = try OpenFile(out)
            for e in 0..<2 {
                let source = original.layout.slices(layer: 0, expert: e)
                let low = pack.layout.slices(layer: 0, expert: e, precision: 1)
                for k in 0..<3 {
                    #expect(try pack.bytes(low[k]) == requantized(original.bytes(source[k]), source[k], to: .q4_0))
                }
            }
        }
    }

    @Test("a read failure while writing leaves no file; an existing output is kept", arguments: [false, true])
    func failedPackLeavesNothing(existingOutput: Bool) throws {
        try PackFixture.withDirectory { dir in
            let out = dir.appendingPathComponent("out.gguf").path
            let previous = Array("an earlier pack".utf8)
            if existingOutput { #expect(FileManager.default.createFile(atPath: out, contents: Data(previous))) }
            let faulty = FaultInjectingBackend(wrapping: try StorageFile.open(path: PackFixture.model("tiny-olmoe.q6_k.gguf")))
            let packer = try ExpertPacker(reading: faulty, output: out, lowPrecisions: [.q4_0])
            // The header is read; fail the 40th read from here on, partway through the bundles.
            let start = faulty.requestCount
            faulty.rule = { _, index in index >= start + 40 ? .eio : .none }
            var written: UInt64 = 0
            #expect(throws: PackError.self) { try packer.write { done, _ in written = done } }
            #expect(written > 0, "the failure came while writing")
            #expect(PackFixture.contents(dir) == (existingOutput ? ["out.gguf"] : []))
            if existingOutput { #expect(FileManager.default.contents(atPath: out) == Data(previous)) }
            do {
                try packer.write()
                Issue.record("the second write should fail too")
            } catch let e as PackError {
                guard case .input(let why) = e else { Issue.record("expected an input error, got \(e)"); return }
                #expect(why.contains("tiny-olmoe.q6_k.gguf"))
            }
        }
    }

    @Test("an unwritable output is an output error")
    func unwritableOutput() throws {
        try PackFixture.withDirectory { dir in
            let out = dir.appendingPathComponent("no/such/dir/out.gguf").path
            let packer = try ExpertPacker(input: PackFixture.model("tiny-mixtral.q4_0.gguf"), output: out)
            do {
                try packer.write()
                Issue.record("writing into a missing directory should fail")
            } catch let e as PackError {
                guard case .output(let why) = e else { Issue.record("expected an output error, got \(e)"); return }
                #expect(why.contains(out))
            }
            #expect(PackFixture.contents(dir).isEmpty)
        }
    }
}
