import Foundation
import GGUF
import Storage
import Testing

@Suite("GGUF writer")
struct WriterTests {
    @Test("reading then writing a llama.cpp file gives back the same bytes", arguments: Shared.all)
    func roundTripIsByteExact(path: String) throws {
        let storage = try StorageFile.open(path: path)
        let file = try GGUFFile.read(from: storage)
        let out = temporaryPath("roundtrip.gguf")
        defer { unlink(out) }
        try GGUFWriter(copying: file, from: storage).write(to: out)
        let original = try readBytes(path)
        let copy = try readBytes(out)
        #expect(copy.count == original.count)
        let firstDifference = copy == original ? nil : zip(copy, original).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(firstDifference == nil, "first differing byte at \(firstDifference ?? -1)")
    }

    @Test("every metadata type, nested arrays and tensors survive a write and read")
    func allValueTypes() throws {
        var w = GGUFWriter()
        w.metadata["general.architecture"] = .string(GGUFString("test"))
        w.metadata["u8"] = .uint8(200)
        w.metadata["i8"] = .int8(-100)
        w.metadata["u16"] = .uint16(60000)
        w.metadata["i16"] = .int16(-30000)
        w.metadata["u32"] = .uint32(4_000_000_000)
        w.metadata["i32"] = .int32(-2_000_000_000)
        w.metadata["u64"] = .uint64(UInt64.max)
        w.metadata["i64"] = .int64(Int64.min)
        w.metadata["f32"] = .float32(3.25)
        w.metadata["f64"] = .float64(-1e300)
        w.metadata["bool"] = .bool(true)
        w.metadata["raw"] = .string(GGUFString(bytes: [0xff, 0xfe, 0x41])) // not UTF-8: kept as bytes
        w.metadata["strings"] = .array(.string([GGUFString("a"), GGUFString(""), GGUFString("ünï")]))
        w.metadata["nested"] = .array(.array([.int32([1, 2]), .string([GGUFString("x")]), .array([.bool([true, false])])]))
        w.metadata["floats"] = .array(.float32([1, -2, 0.5]))
        w.metadata["empty"] = .array(.uint64([]))
        let q = (0..<(2 * 34)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try w.addTensor(name: "a", dimensions: [64], type: .q8_0, source: .bytes(q))
        try w.addTensor(name: "b", dimensions: [3, 2], type: .f32, source: .generator { buf in
            for i in 0..<6 { buf.storeBytes(of: Float(i), toByteOffset: i * 4, as: Float.self) }
        })
        let out = temporaryPath("types.gguf")
        defer { unlink(out) }
        try w.write(to: out)

        let f = try GGUFFile.open(path: out)
        #expect(f.metadata == w.metadata)
        #expect(f.tensors.map(\.name) == ["a", "b"])
        #expect(f.tensors[1].relativeOffset == 96) // 68 bytes padded to 32
        let storage = try StorageFile.open(path: out)
        #expect(try f.readData(of: f.tensors[0], from: storage) == q)
        let b = try f.readData(of: f.tensors[1], from: storage)
        #expect(b.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } == [0, 1, 2, 3, 4, 5])
    }

    @Test("custom alignment is honoured")
    func customAlignment() throws {
        var w = GGUFWriter()
        w.metadata["general.alignment"] = .uint32(4096)
        try w.addTensor(name: "x", dimensions: [10], type: .f32, source: .bytes([UInt8](repeating: 1, count: 40)))
        try w.addTensor(name: "y", dimensions: [10], type: .f32, source: .bytes([UInt8](repeating: 2, count: 40)))
        let out = temporaryPath("align.gguf")
        defer { unlink(out) }
        try w.write(to: out)
        let f = try GGUFFile.open(path: out)
        #expect(f.alignment == 4096)
        #expect(f.dataOffset == 4096)
        #expect(f.tensors[1].absoluteOffset == 8192)
        #expect(f.fileSize == 3 * 4096)
    }

    @Test("bad tensors are refused before writing")
    func writerValidation() throws {
        var w = GGUFWriter()
        #expect(throws: GGUFError.self) { try w.addTensor(name: "x", dimensions: [33], type: .q4_0, source: .bytes([])) }
        #expect(throws: GGUFError.self) { try w.addTensor(name: "x", dimensions: [1, 1, 1, 1, 1], type: .f32, source: .bytes([])) }
        #expect(throws: GGUFError.self) { try w.addTensor(name: String(repeating: "n", count: 64), dimensions: [1], type: .f32, source: .bytes([0, 0, 0, 0])) }
        #expect(throws: GGUFError.self) { try w.addTensor(name: "x", dimensions: [4], type: .f32, source: .bytes([1])) }
        try w.addTensor(name: "x", dimensions: [1], type: .f32, source: .bytes([0, 0, 0, 0]))
        #expect(throws: GGUFError.self) { try w.addTensor(name: "x", dimensions: [1], type: .f32, source: .bytes([0, 0, 0, 0])) }
    }

    @Test("a failed write leaves an existing file untouched")
    func atomicWrite() throws {
        let out = temporaryPath("atomic.gguf")
        defer { unlink(out) }
        try Data("precious".utf8).write(to: URL(fileURLWithPath: out))
        var w = GGUFWriter()
        try w.addTensor(name: "x", dimensions: [4], type: .f32, source: .generator { _ in
            struct Boom: Error {}
            throw Boom()
        })
        #expect(throws: (any Error).self) { try w.write(to: out) }
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "precious")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory())
            .filter { $0.hasPrefix(URL(fileURLWithPath: out).lastPathComponent + ".tmp") }
        #expect(leftovers.isEmpty)
    }
}
