import ArgumentParser
import Engine
import GGUF
import Storage
import Trace
import Models
import Tokenizer

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a GGUF file: architecture, hyper-parameters, tokenizer, tensors, expert layout.")

    @Argument(help: "Path to a GGUF file.")
    var file: String

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @OptionGroup var storage: StorageOptions

    func run() throws {
        let backend = storage.ioBackend
        let gguf = try runReporting { try GGUFFile.open(path: file, backend: backend) }
        let description = ModelDescription(gguf)
        print(json ? description.json() : description.text())
    }
}

/// Runs `body`, turning the runtime's typed errors into a one-line message and exit code 1.
func runReporting<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as GGUFError {
        printError("error: \(e.description)")
        throw ExitCode.failure
    } catch let e as StorageError {
        printError("error: \(e.description)")
        throw ExitCode.failure
    } catch let e as ModelError {
        printError("error: \(e.description)")
        throw ExitCode.failure
    } catch let e as TokenizerError {
        printError("error: \(e)")
        throw ExitCode.failure
    } catch let e as RoutingRecordError {
        printError("error: \(e.description)")
        throw ExitCode.failure
    } catch let e as SessionFileError {
        printError("error: \(e.description)")
        throw ExitCode.failure
    } catch let e as RuntimeError {
        printError("error: \(e.description)")
        throw ExitCode.failure
    }
}

func printError(_ s: String) {
    var stderr = StandardError()
    print(s, to: &stderr)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        #if canImport(Glibc)
        var bytes = Array(string.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#endif
