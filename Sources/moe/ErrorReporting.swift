import ArgumentParser
import ChatTemplate
import Engine
import Experts
import GGUF
import Host
import KV
import Kernels
import Models
import Storage
import Tokenizer
import Trace
#if canImport(Glibc)
import Glibc
#endif

// The one path by which the command line reports the project's errors: one line on
// stderr, "error: " and the error's own description, and exit code 1. Every error type of
// the libraries is listed here once; an error of another kind (the argument parser's own,
// an exit code) passes through to the argument parser.

/// An error of the project's libraries, reported as one line.
protocol ReportedError: Error, CustomStringConvertible {}

extension ChatTemplateError: ReportedError {}
extension ConversationError: ReportedError {}
extension ExpertError: ReportedError {}
extension GGUFError: ReportedError {}
extension HostError: ReportedError {}
extension KernelError: ReportedError {}
extension KVError: ReportedError {}
extension LogProbabilityFileError: ReportedError {}
extension ModelError: ReportedError {}
extension PackError: ReportedError {}
extension PerplexityError: ReportedError {}
extension RoutingRecordError: ReportedError {}
extension RuntimeError: ReportedError {}
extension SessionFileError: ReportedError {}
extension StorageError: ReportedError {}
extension TokenizerError: ReportedError {}

/// Runs `body`, turning the project's errors into a one-line message and exit code 1.
func runReporting<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as ReportedError {
        reportError(e)
        throw ExitCode.failure
    }
}

/// Prints `error` as the one line the command line reports errors with.
func reportError(_ error: any ReportedError, note: String = "") {
    printError("error: \(error.description)\(note)")
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
