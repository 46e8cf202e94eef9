import Foundation
import GGUF
import Storage
import Testing

/// Corrupts valid files in many ways; every corruption must give a typed `GGUFError`
/// (never a crash, hang, huge allocation or a silently accepted bad file).
@Suite("GGUF reader on corrupted files")
struct MutationTests {
    /// A small but complete file: scalars, strings, nested arrays, several tensors.
    static let sample: [UInt8] = {
        var w = GGUFWriter()
        w.metadata["general.architecture"] = .string(GGUFString("llama"))
        w.metadata["general.alignment"] = .uint32(32)
        w.metadata["llama.block_count"] = .uint32(1)
        w.metadata["flag"] = .bool(true)
        w.metadata["tokenizer.ggml.tokens"] = .array(.string((0..<20).map { GGUFString("tok\($0)") }))
        w.metadata["scores"] = .array(.float32((0..<20).map { Float($0) }))
        w.metadata["nested"] = .array(.array([.int32([1, 2, 3]), .string([GGUFString("z")])]))
        try! w.addTensor(name: "token_embd.weight", dimensions: [64, 4], type: .q8_0, source: .bytes([UInt8](repeating: 3, count: 8 * 34)))
        try! w.addTensor(name: "blk.0.ffn_up_exps.weight", dimensions: [32, 2, 4], type: .q4_0, source: .bytes([UInt8](repeating: 5, count: 8 * 18)))
        try! w.addTensor(name: "output_norm.weight", dimensions: [64], type: .f32, source: .bytes([UInt8](repeating: 0, count: 256)))
        let path = temporaryPath("sample.gguf")
        try! w.write(to: path)
        defer { unlink(path) }
        return try! readBytes(path)
    }()

    static let sampleLayout = FieldLocator(sample)

    func expectError(_ bytes: [UInt8], _ kind: GGUFError.Kind? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let f = try parse(bytes)
            Issue.record("corrupted file parsed without error (\(f.tensors.count) tensors)", sourceLocation: sourceLocation)
        } catch let e as GGUFError {
            if let kind { #expect(e.kind == kind, "\(e)", sourceLocation: sourceLocation) }
            #expect(!e.field.isEmpty, sourceLocation: sourceLocation)
        } catch {
            Issue.record("untyped error \(error)", sourceLocation: sourceLocation)
        }
    }

    func patched(_ at: Int, _ value: some FixedWidthInteger) -> [UInt8] {
        var b = Self.sample
        withUnsafeBytes(of: value.littleEndian) { raw in
            for (i, x) in raw.enumerated() { b[at + i] = x }
        }
        return b
    }

    @Test func sampleIsValid() throws {
        let f = try parse(Self.sample)
        #expect(f.tensors.count == 3)
        #expect(Self.sampleLayout.tensorOffsetFields.count == 3)
    }

    @Test("every truncation of the header fails, and of the data when a tensor is cut",
          arguments: Shared.vocabs.filter { $0.contains("gpt-2") } + [Shared.model("tiny-olmoe.q4_0.gguf"), ""])
    func truncations(path: String) throws {
        let bytes = path.isEmpty ? Self.sample : try readBytes(path)
        let full = try parse(bytes)
        let dataEnd = full.tensors.map { $0.absoluteOffset + $0.byteCount }.max() ?? full.headerSize
        var cuts = Set(0..<min(Int(full.headerSize), 4096))
        var rng = SeededRandom(seed: 42)
        for _ in 0..<300 { cuts.insert(Int(rng.next() % UInt64(bytes.count))) }
        for cut in cuts.sorted() where UInt64(cut) < dataEnd {
            expectError(Array(bytes[0..<cut]))
        }
    }

    @Test("random byte flips in the header give a typed error or a valid file",
          arguments: [Shared.model("tiny-qwen2moe.q4_k_m.gguf"), ""])
    func byteFlips(path: String) throws {
        let bytes = path.isEmpty ? Self.sample : try readBytes(path)
        let header = Int(try parse(bytes).headerSize)
        var rng = SeededRandom(seed: 7)
        var errors = 0
        for _ in 0..<1500 {
            var b = bytes
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                b[Int(rng.next() % UInt64(header))] ^= UInt8(1 + rng.next() % 255)
            }
            do {
                let f = try parse(b)
                for t in f.tensors { #expect(t.absoluteOffset + t.byteCount <= f.fileSize) }
            } catch is GGUFError {
                errors += 1
            } catch {
                Issue.record("untyped error \(error)")
            }
        }
        #expect(errors > 0)
    }

    @Test func badMagic() { expectError(patched(0, UInt32(0x4655_4746)), .badMagic) }
    @Test func versionOne() { expectError(patched(4, UInt32(1)), .unsupportedVersion) }
    @Test func versionFuture() { expectError(patched(4, UInt32(4)), .unsupportedVersion) }
    @Test func bigEndian() { expectError(patched(4, UInt32(3).byteSwapped), .unsupportedVersion) }
    @Test func absurdTensorCount() { expectError(patched(8, UInt64(1) << 60), .countTooLarge) }
    @Test func absurdKVCount() { expectError(patched(16, UInt64.max), .countTooLarge) }
    @Test func tensorCountSlightlyHigh() { expectError(patched(8, UInt64(4))) }

    @Test func hugeKeyLength() {
        expectError(patched(Self.sampleLayout.kvKeyLength[0], UInt64.max), .truncated)
    }

    @Test func emptyKey() {
        // Zero length then the old key bytes are read as the type: any typed error is right.
        expectError(patched(Self.sampleLayout.kvKeyLength[0], UInt64(0)))
    }

    @Test func unknownValueType() {
        expectError(patched(Self.sampleLayout.kvType[0], UInt32(13)), .unknownValueType)
    }

    @Test func absurdArrayCount() {
        expectError(patched(Self.sampleLayout.arrayCount["tokenizer.ggml.tokens"]!, UInt64(1) << 62), .countTooLarge)
    }

    @Test func hugeStringInArray() {
        let at = Self.sampleLayout.arrayCount["tokenizer.ggml.tokens"]! + 8
        expectError(patched(at, UInt64(1) << 40), .truncated)
    }

    @Test func unknownArrayElementType() {
        expectError(patched(Self.sampleLayout.arrayCount["scores"]! - 4, UInt32(99)), .unknownValueType)
    }

    @Test func invalidBool() {
        expectError(patched(Self.sampleLayout.value["flag"]!, UInt8(2)), .invalidValue)
    }

    @Test func duplicateKey() {
        // "scores" and "nested" keys are both 6 bytes: rename the second to the first.
        var b = Self.sample
        let a = Self.sampleLayout.kvKeyLength[Self.sampleLayout.keys.firstIndex(of: "scores")!] + 8
        let n = Self.sampleLayout.kvKeyLength[Self.sampleLayout.keys.firstIndex(of: "nested")!] + 8
        for i in 0..<6 { b[n + i] = b[a + i] }
        expectError(b, .duplicateKey)
    }

    @Test func invalidUTF8Key() {
        var b = Self.sample
        b[Self.sampleLayout.kvKeyLength[0] + 8] = 0xff
        expectError(b, .invalidString)
    }

    @Test func alignmentNotPowerOfTwo() {
        expectError(patched(Self.sampleLayout.value["general.alignment"]!, UInt32(48)), .invalidAlignment)
    }

    @Test func alignmentZero() {
        expectError(patched(Self.sampleLayout.value["general.alignment"]!, UInt32(0)), .invalidAlignment)
    }

    @Test func tooManyDimensions() {
        expectError(patched(Self.sampleLayout.tensorDims[0], UInt32(5)), .invalidDimensions)
    }

    @Test func zeroDimensions() {
        expectError(patched(Self.sampleLayout.tensorDims[0], UInt32(0)), .invalidDimensions)
    }

    @Test func absurdDimension() {
        expectError(patched(Self.sampleLayout.tensorDims[0] + 4, UInt64(1) << 63), .invalidDimensions)
    }

    @Test func overflowingElementCount() {
        var b = patched(Self.sampleLayout.tensorDims[1] + 4, UInt64(1) << 32)
        let second = Self.sampleLayout.tensorDims[1] + 12
        withUnsafeBytes(of: (UInt64(1) << 32).littleEndian) { for (i, x) in $0.enumerated() { b[second + i] = x } }
        expectError(b, .invalidDimensions)
    }

    @Test func rowNotMultipleOfBlock() {
        expectError(patched(Self.sampleLayout.tensorDims[0] + 4, UInt64(33)), .invalidDimensions)
    }

    @Test func removedTensorType() {
        expectError(patched(Self.sampleLayout.tensorType[0], UInt32(4)), .unknownTensorType)
    }

    @Test func unknownTensorType() {
        expectError(patched(Self.sampleLayout.tensorType[0], UInt32(1000)), .unknownTensorType)
    }

    @Test func misalignedOffset() {
        expectError(patched(Self.sampleLayout.tensorOffsetFields[1], UInt64(288 + 1)), .misalignedTensor)
    }

    @Test func offsetPastEnd() {
        expectError(patched(Self.sampleLayout.tensorOffsetFields[2], UInt64(1) << 40), .tensorOutOfBounds)
    }

    @Test func offsetOverflow() {
        expectError(patched(Self.sampleLayout.tensorOffsetFields[2], UInt64.max & ~31), .tensorOutOfBounds)
    }

    @Test func overlappingTensors() {
        expectError(patched(Self.sampleLayout.tensorOffsetFields[1], UInt64(0)), .overlappingTensors)
    }

    @Test func duplicateTensorName() {
        // "blk.0.ffn_up_exps.weight" → rename tensor 2 is a different length; use a copy of tensor 0's name bytes
        var w = GGUFWriter()
        try! w.addTensor(name: "aa", dimensions: [1], type: .f32, source: .bytes([0, 0, 0, 0]))
        try! w.addTensor(name: "ab", dimensions: [1], type: .f32, source: .bytes([0, 0, 0, 0]))
        let path = temporaryPath("dup.gguf")
        defer { unlink(path) }
        try! w.write(to: path)
        var b = try! readBytes(path)
        let loc = FieldLocator(b)
        b[loc.tensorName[1] + 8 + 1] = UInt8(ascii: "a")
        expectError(b, .duplicateTensor)
    }

    @Test func tensorNameTooLong() {
        var w = GGUFWriter()
        try! w.addTensor(name: String(repeating: "n", count: 63), dimensions: [1], type: .f32, source: .bytes([0, 0, 0, 0]))
        let path = temporaryPath("long.gguf")
        defer { unlink(path) }
        try! w.write(to: path)
        let ok = try! readBytes(path)
        #expect((try? parse(ok)) != nil)
        // Claim 64 bytes: the name swallows the first byte of n_dims, which ggml forbids anyway.
        var b = ok
        let at = FieldLocator(ok).tensorName[0]
        withUnsafeBytes(of: UInt64(64).littleEndian) { for (i, x) in $0.enumerated() { b[at + i] = x } }
        expectError(b, .invalidString)
    }

    @Test func deeplyNestedArrays() {
        // Hand-built: one KV whose value nests arrays 20 deep.
        var b: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        u32(GGUFFile.magic); u32(3); u64(0); u64(1)
        u64(1); b.append(UInt8(ascii: "k"))
        u32(9)
        for _ in 0..<20 { u32(9); u64(1) }
        u32(0); u64(0)
        expectError(b, .nestingTooDeep)
    }

    @Test func emptyFile() { expectError([], .truncated) }
}

/// Finds where each field of a well-formed GGUF file starts (an independent walk of the
/// format, so the mutation tests can corrupt exact fields).
struct FieldLocator {
    var keys: [String] = []
    var kvKeyLength: [Int] = []
    var kvType: [Int] = []
    var value: [String: Int] = [:]
    var arrayCount: [String: Int] = [:]
    var tensorName: [Int] = []
    var tensorDims: [Int] = []
    var tensorType: [Int] = []
    var tensorOffsetFields: [Int] = []

    init(_ b: [UInt8]) {
        var p = 0
        func u32() -> UInt32 { defer { p += 4 }; return b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p, as: UInt32.self) } }
        func u64() -> UInt64 { defer { p += 8 }; return b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p, as: UInt64.self) } }
        func str() -> String { let n = Int(u64()); defer { p += n }; return String(decoding: b[p..<(p + n)], as: UTF8.self) }
        func skip(_ type: UInt32, key: String?) {
            switch type {
            case 0, 1, 7: p += 1
            case 2, 3: p += 2
            case 4, 5, 6: p += 4
            case 10, 11, 12: p += 8
            case 8: _ = str()
            case 9:
                let et = u32()
                if let key { arrayCount[key] = p }
                let n = u64()
                for _ in 0..<n { skip(et, key: nil) }
            default: fatalError("bad sample")
        }
        }
        p = 8
        let nt = u64(), nkv = u64()
        for _ in 0..<nkv {
            kvKeyLength.append(p)
            let k = str()
            keys.append(k)
            kvType.append(p)
            let t = u32()
            value[k] = p
            skip(t, key: k)
        }
        for _ in 0..<nt {
            tensorName.append(p)
            _ = str()
            tensorDims.append(p)
            let nd = u32()
            p += 8 * Int(nd)
            tensorType.append(p)
            p += 4
            tensorOffsetFields.append(p)
            p += 8
        }
    }
}

/// Deterministic generator so failures reproduce.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
