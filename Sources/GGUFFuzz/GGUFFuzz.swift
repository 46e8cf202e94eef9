// Coverage-guided fuzz target for the GGUF reader.
//
// Built by tools/fuzz-gguf.sh with `-sanitize=fuzzer,address -D FUZZING`: `main` hands
// control to libFuzzer's driver (SwiftPM renames an executable's `main`, so libFuzzer's
// own `main` is never linked in). In ordinary builds the same entry point replays files
// given on the command line (crash reproducers).
import GGUF
import Storage
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    checkInput(bytes)
    return 0
}

/// Parses arbitrary bytes. Anything other than success or a `GGUFError` is a bug; so is
/// a file that parses but does not survive being written and read back.
func checkInput(_ bytes: [UInt8]) {
    let file: GGUFFile
    do {
        file = try GGUFFile.read(from: MemoryBackend(bytes: bytes))
    } catch is GGUFError {
        return
    } catch {
        fatalError("untyped error from the reader: \(error)")
    }
    for t in file.tensors where t.absoluteOffset + t.byteCount > file.fileSize {
        fatalError("tensor \(t.name) accepted outside the file")
    }
    // `moe inspect`'s renderings live in the command, out of reach here; the description's
    // own arithmetic is what a damaged file can break.
    _ = ModelDescription(file).weightBytesPerDecodedToken

    // Re-serialize the header and parse it again: the tensor table and metadata must
    // come back identical (compared as bytes, so NaN values compare equal).
    var writer = GGUFWriter()
    writer.version = file.version
    writer.metadata = file.metadata
    for t in file.tensors {
        do {
            try writer.addTensor(name: t.name, dimensions: t.dimensions, type: t.type, source: .generator { _ in })
        } catch {
            fatalError("reader accepted tensor '\(t.name)' that the writer refuses: \(error)")
        }
    }
    let header = writer.headerBytes()
    let dataBytes = writer.dataOffsets().last.map { Int($0) + Int(file.tensors.last!.byteCount) } ?? 0
    let rebuilt = header + [UInt8](repeating: 0, count: dataBytes)
    do {
        let again = try GGUFFile.read(from: MemoryBackend(bytes: rebuilt))
        var w2 = GGUFWriter()
        w2.version = again.version
        w2.metadata = again.metadata
        for t in again.tensors {
            try w2.addTensor(name: t.name, dimensions: t.dimensions, type: t.type, source: .generator { _ in })
        }
        if w2.headerBytes() != header { fatalError("header changed across a write/read round trip") }
    } catch {
        fatalError("re-written file does not parse: \(error)")
    }
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

@main
struct FuzzDriver {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
    }
}
#else
@main
struct FuzzReplay {
    static func main() {
        let args = CommandLine.arguments.dropFirst()
        if args.isEmpty {
            print("usage: gguf-fuzz FILE...   (replays inputs; fuzzing builds come from tools/fuzz-gguf.sh)")
            return
        }
        for path in args {
            guard let f = fopen(path, "rb") else { print("cannot open \(path)"); continue }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = fread(&chunk, 1, chunk.count, f)
                if n <= 0 { break }
                bytes += chunk[0..<n]
            }
            fclose(f)
            checkInput(bytes)
            print("ok \(path) (\(bytes.count) bytes)")
        }
    }
}
#endif
