import Foundation
import TestSupport
import GGUF
import Tokenizer

/// `../shared/` beside the repository (or `MOE_SHARED_DIR`): llama.cpp-made reference data.
enum Shared {
    static let root = SharedData.root

    static func vocab(_ name: String) -> String { root.appendingPathComponent("vocab/ggml-vocab-\(name).gguf").path }

    static var models: [String] {
        let dir = root.appendingPathComponent("models")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".gguf") }.sorted().map { dir.appendingPathComponent($0).path }
    }
}

/// The reference vocabularies llama.cpp ships test vectors for.
let vocabNames = ["llama-spm", "phi-3", "llama-bpe", "qwen2", "gpt-2", "deepseek-llm"]

/// Tokenizers are built once per process (the big BPE vocabularies take a moment).
final class TokenizerCache: @unchecked Sendable {
    static let shared = TokenizerCache()
    private let lock = NSLock()
    private var built: [String: Tokenizer] = [:]

    func tokenizer(path: String) throws -> Tokenizer {
        lock.lock()
        defer { lock.unlock() }
        if let t = built[path] { return t }
        let t = try Tokenizer(metadata: GGUFFile.open(path: path).metadata)
        built[path] = t
        return t
    }

    func vocab(_ name: String) throws -> Tokenizer { try tokenizer(path: Shared.vocab(name)) }
}

struct VocabCase {
    var text: [UInt8]
    var expected: [Int]
}

/// Reads `NAME.gguf.inp` / `.out` as llama.cpp's tests/test-tokenizer-0.cpp does: inputs are
/// separated by "\n__ggml_vocab_test__\n" (the separator's newlines are not part of the
/// texts), outputs are one line per input, stripped, ids separated by spaces.
func readVocabCases(_ name: String) throws -> [VocabCase] {
    let base = Shared.vocab(name)
    let inp = [UInt8](try Data(contentsOf: URL(fileURLWithPath: base + ".inp")))
    let out = [UInt8](try Data(contentsOf: URL(fileURLWithPath: base + ".out")))
    let sep = Array("\n__ggml_vocab_test__\n".utf8)

    var texts: [[UInt8]] = []
    var pos = 0
    while pos < inp.count {
        var next = -1
        var i = pos
        while i + sep.count <= inp.count {
            if inp[i] == sep[0] && Array(inp[i..<(i + sep.count)]) == sep { next = i; break }
            i += 1
        }
        if next < 0 { texts.append(Array(inp[pos...])); break }
        texts.append(Array(inp[pos..<next]))
        pos = next + sep.count
    }

    var lines = out.split(separator: 0x0A, omittingEmptySubsequences: false).map { Array($0) }
    if out.last == 0x0A { lines.removeLast() }   // getline: no empty line after the final newline
    let expected: [[Int]] = lines.map { line in
        let s = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        return s.isEmpty ? [] : s.split(separator: " ").map { Int($0)! }
    }
    precondition(texts.count == expected.count, "\(name): \(texts.count) inputs, \(expected.count) outputs")
    return zip(texts, expected).map { VocabCase(text: $0, expected: $1) }
}

func describe(_ bytes: [UInt8]) -> String {
    String(decoding: bytes, as: UTF8.self).debugDescription
}
