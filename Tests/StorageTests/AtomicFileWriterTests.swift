import Foundation
import Storage
import Testing
import TestSupport

@Suite("Atomic file writer")
struct AtomicFileWriterTests {
    func contents(_ dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    }

    @Test("commit replaces the destination whole and leaves no temporary file")
    func commitReplaces() throws {
        let temporary = try TemporaryDirectory(prefix: "moe-atomic")
        defer { temporary.remove() }
        let dir = temporary.url
        let path = dir.appendingPathComponent("f.bin").path
        try Data("old".utf8).write(to: URL(fileURLWithPath: path))
        let w = try AtomicFileWriter(path: path)
        try w.write(Array("new ".utf8))
        // Until the commit, the old file is what is there.
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "old")
        #expect(try contents(dir) == ["f.bin", "f.bin.tmp-\(getpid())"])
        try w.write(Array("contents".utf8))
        #expect(w.bytesWritten == 12)
        try w.commit()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "new contents")
        #expect(try contents(dir) == ["f.bin"])
        #expect(throws: StorageError.self) { try w.write([1]) }
    }

    @Test("dropped or discarded without a commit, nothing changes and nothing is left")
    func discardLeavesTheOriginal() throws {
        let temporary = try TemporaryDirectory(prefix: "moe-atomic")
        defer { temporary.remove() }
        let dir = temporary.url
        let path = dir.appendingPathComponent("f.bin").path
        try Data("old".utf8).write(to: URL(fileURLWithPath: path))
        do {
            let w = try AtomicFileWriter(path: path)
            try w.write(Array("half".utf8))
        }
        #expect(try contents(dir) == ["f.bin"])
        let w = try AtomicFileWriter(path: path)
        try w.write(Array("half".utf8))
        w.discard()
        #expect(try contents(dir) == ["f.bin"])
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "old")
    }

    @Test("a destination that cannot be created is a clear error")
    func cannotCreate() {
        #expect {
            _ = try AtomicFileWriter(path: "/nonexistent-dir/f.bin")
        } throws: { "\($0)".contains("creating /nonexistent-dir/f.bin.tmp-") && "\($0)".contains("No such file or directory") }
    }
}
