import Engine
import Foundation
import Models
import TestSupport
import Testing
import Tokenizer

@Suite("KL divergence math")
struct KLDivergenceMathTests {
    /// P = (½, ¼, ¼), Q = (¼, ½, ¼): KL(P‖Q) = ½ ln 2 + ¼ ln ½ + 0 = ¼ ln 2. P = (0.9, 0.1),
    /// Q = (½, ½): 0.9 ln 1.8 + 0.1 ln 0.2. Given as log-probabilities, and as logits
    /// (shifted log-probabilities), which the function normalizes.
    @Test func handComputedExamples() {
        let p: [Double] = [0.5, 0.25, 0.25], q: [Double] = [0.25, 0.5, 0.25]
        let kl = KLDivergence.divergence(base: p.map { Float(log($0)) }, other: q.map { Float(log($0)) })
        #expect(abs(kl - 0.25 * log(2.0)) < 1e-7)
        let shifted = KLDivergence.divergence(base: p.map { Float(log($0) + 3) }, other: q.map { Float(log($0) - 7) })
        #expect(abs(shifted - 0.25 * log(2.0)) < 1e-6)
        let reverse = KLDivergence.divergence(base: q.map { Float(log($0)) }, other: p.map { Float(log($0)) })
        #expect(abs(reverse - 0.25 * log(2.0)) < 1e-7)  // symmetric here by construction

        let two = KLDivergence.divergence(base: [Float(log(0.9)), Float(log(0.1))], other: [0, 0])
        #expect(abs(two - (0.9 * log(1.8) + 0.1 * log(0.2))) < 1e-7)
        #expect(abs(two - 0.368064) < 1e-6)
    }

    @Test func identicalIsZeroAndAnyPairIsNonNegative() {
        var rng = SplitMix64(seed: 7)
        for trial in 0..<200 {
            let n = [2, 3, 17, 512, 4099][trial % 5]
            let scale = Float([0.1, 1, 5, 30][trial % 4])
            let a = (0..<n).map { _ in Float.random(in: -scale...scale, using: &rng) }
            let b = (0..<n).map { _ in Float.random(in: -scale...scale, using: &rng) }
            #expect(KLDivergence.divergence(base: a, other: a) < 1e-12)
            #expect(KLDivergence.divergence(base: a, other: a.map { $0 + 2.5 }) < 1e-6, "a shift is the same distribution")
            let kl = KLDivergence.divergence(base: a, other: b)
            #expect(kl >= 0 && kl.isFinite)
        }
        // A token the base finds possible and the other impossible.
        #expect(KLDivergence.divergence(base: [0, 0], other: [0, -.infinity]) == .infinity)
        // One the base finds impossible costs nothing.
        #expect(abs(KLDivergence.divergence(base: [0, -.infinity], other: [0, 0]) - log(2.0)) < 1e-9)
    }

    @Test func statistics() {
        let s = KLDivergence.summarize(divergences: [3, 0, 4, 1, 2], sameTopToken: 4,
                                       baseTokenLogProbabilities: [log(0.5), log(0.25)])
        #expect(s.positions == 5 && s.sameTopToken == 4 && s.sameTopTokenFraction == 0.8)
        #expect(s.mean == 2)
        #expect(abs(s.meanError - 0.5.squareRoot()) < 1e-12)  // sample variance 2.5, over 5
        #expect(s.median == 2 && s.maximum == 4)
        #expect(abs(s.p99 - 3.96) < 1e-12)  // rank 0.99 × 4 = 3.96, between 3 and 4
        #expect(abs(s.basePerplexity - 8.0.squareRoot()) < 1e-12)  // exp of the mean NLL (ln 2 + ln 4) / 2
        #expect(abs(s.perplexityChangePercent(8.0.squareRoot() * 1.1) - 10) < 1e-9)
        #expect(KLDivergence.quantile(sorted: [1, 2, 3, 4], 0.5) == 2.5)
        #expect(KLDivergence.quantile(sorted: [5], 0.99) == 5)
    }

    @Test func checksums() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)  // the standard check value
        #expect(CRC32.checksum([]) == 0)
        var rng = SplitMix64(seed: 1)
        let data = (0..<1001).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var pieces = CRC32()
        for range in [0..<3, 3..<11, 11..<500, 500..<1001] { pieces.update(Array(data[range])) }
        #expect(pieces.value == CRC32.checksum(data), "piecewise equals whole, at any alignment")
        var fnv = FNV1a64()
        fnv.update(Array("a".utf8))
        #expect(fnv.value == 0xAF63_DC4C_8601_EC8C)
        #expect(FNV1a64.tokens([1, 2]) != FNV1a64.tokens([2, 1]))
    }
}

/// A KL base from a real run, read back and compared; its validation; its atomic writing.
@Suite("KL base files")
struct LogProbabilityFileTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// Tokens of a slice of the repository's held-out text, with the tiny models' tokenizer.
    static func tokens(model: DecoderModel, bytes: Range<Int> = 0..<3000) throws -> [Int] {
        let text = try Data(contentsOf: repository.appendingPathComponent("models/heldout.txt"))
        let tokenizer = try Tokenizer(metadata: model.weights.file.metadata)
        return tokenizer.encode(utf8: Array(text[bytes]), addBOS: tokenizer.addsBOS, parseSpecial: false)
    }

    func withDirectory(_ body: (URL) throws -> Void) throws {
        try TemporaryDirectory.with(prefix: "moe-kl", body)
    }

    func contents(_ dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
    }

    /// Runs perplexity on `tokens`, saving a base to `path`.
    @discardableResult
    func saveBase(model: DecoderModel, tokens: [Int], context: Int = 32, chunks: Int = 3, path: String) throws -> PerplexityResult {
        let evaluator = PerplexityEvaluator(contextLength: context, maxChunks: chunks)
        let session = Session(model: model, contextLength: context, threads: 2)
        let writer = try LogProbabilityFile.Writer(path: path, header: evaluator.logProbabilityHeader(tokens: tokens, model: model))
        let result = try evaluator.evaluate(tokens, session: session, observers: [writer])
        try writer.commit()
        return result
    }

    /// Runs perplexity on `tokens` against the base at `path`.
    func compare(model: DecoderModel, tokens: [Int], context: Int = 32, chunks: Int = 3,
                 path: String) throws -> (PerplexityResult, KLDivergenceSummary) {
        let evaluator = PerplexityEvaluator(contextLength: context, maxChunks: chunks)
        let base = try LogProbabilityFile.Reader(path: path)
        try base.header.requireCompatible(with: evaluator.logProbabilityHeader(tokens: tokens, model: model), path: path)
        let comparison = KLDivergenceComparison(base: base)
        let session = Session(model: model, contextLength: context, threads: 2)
        let result = try evaluator.evaluate(tokens, session: session, observers: [comparison])
        return (result, try comparison.summary())
    }

    @Test func aRunComparedWithItsOwnBaseDiffersByNothing() throws {
        try withDirectory { dir in
            let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.q8_0.gguf"))
            let tokens = try Self.tokens(model: model)
            let path = dir.appendingPathComponent("base.klb").path
            let saved = try saveBase(model: model, tokens: tokens, path: path)
            let reader = try LogProbabilityFile.Reader(path: path)
            #expect(reader.header.modelName == "tiny-qwen3moe.q8_0.gguf")
            #expect(reader.header.modelSize == model.weights.file.fileSize)
            #expect(reader.header.scoredPositions == 3 * 15 && reader.header.chunkCount == 3)
            #expect(reader.header.vocabularySize == model.vocabularySize)
            // 60 header bytes and 23 of name, padded to 88; 45 records; the checksum.
            #expect(reader.fileBytes == UInt64(88 + 45 * (4 + 2 * model.vocabularySize) + 4))

            let (result, kl) = try compare(model: model, tokens: tokens, path: path)
            #expect(result.perplexity == saved.perplexity)
            print("self comparison: KL mean \(kl.mean), max \(kl.maximum); base perplexity \(kl.basePerplexity) for \(result.perplexity)")
            #expect(kl.positions == 45)
            #expect(kl.mean < 1e-4 && kl.maximum < 1e-4)
            #expect(kl.sameTopToken == 45)
            #expect(abs(kl.perplexityChangePercent(result.perplexity)) < 0.1, "half-precision log-probs give the base's perplexity")
        }
    }

    /// The same weights quantized differently: a small, positive, finite divergence, larger
    /// for the coarser quantization. (The random weights leave near-flat distributions, a
    /// perplexity near the vocabulary's 512, so top tokens are near-tied and often swap.)
    @Test func otherQuantizationsOfTheSameModelDivergeALittle() throws {
        try withDirectory { dir in
            let reference = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.f16.gguf"))
            let tokens = try Self.tokens(model: reference)
            let path = dir.appendingPathComponent("f16.klb").path
            try saveBase(model: reference, tokens: tokens, path: path)
            var means: [Double] = []
            for type in ["q8_0", "q4_0"] {
                let quantized = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.\(type).gguf"))
                #expect(try Self.tokens(model: quantized) == tokens)
                let (result, kl) = try compare(model: quantized, tokens: tokens, path: path)
                print("\(type) against f16: KL mean \(kl.mean) ± \(kl.meanError), median \(kl.median), p99 \(kl.p99), "
                      + "max \(kl.maximum), same top \(kl.sameTopTokenFraction), perplexity \(result.perplexity) against \(kl.basePerplexity)")
                #expect(kl.mean > 1e-4 && kl.mean < 0.1 && kl.mean.isFinite)
                #expect(kl.meanError > 0 && kl.meanError < kl.mean)
                #expect(kl.median > 0 && kl.median <= kl.p99 && kl.p99 <= kl.maximum && kl.maximum.isFinite)
                #expect(kl.sameTopToken > 0 && kl.sameTopToken < kl.positions)
                #expect(abs(kl.perplexityChangePercent(result.perplexity)) < 10)
                means.append(kl.mean)
            }
            #expect(means[0] < means[1], "q8_0 is closer to f16 than q4_0")
        }
    }

    @Test func otherTokensOrAnotherChunkingAreRefused() throws {
        try withDirectory { dir in
            let model = try DecoderModel.load(path: Shared.path("models/tiny-qwen3moe.q8_0.gguf"))
            let tokens = try Self.tokens(model: model)
            let path = dir.appendingPathComponent("base.klb").path
            try saveBase(model: model, tokens: tokens, path: path)
            let header = try LogProbabilityFile.Reader(path: path).header
            func problem(tokens: [Int], context: Int = 32, chunks: Int = 3) -> LogProbabilityFileError.Problem? {
                let run = PerplexityEvaluator(contextLength: context, maxChunks: chunks).logProbabilityHeader(tokens: tokens, model: model)
                do { try header.requireCompatible(with: run, path: path) } catch { return error.problem }
                return nil
            }
            #expect(problem(tokens: tokens) == nil)
            let other = try Self.tokens(model: model, bytes: 3000..<6000)
            guard case .tokenMismatch = problem(tokens: other) else { Issue.record("other text accepted"); return }
            #expect(problem(tokens: tokens, context: 16, chunks: 3) == .contextMismatch(base: 32, run: 16))
            #expect(problem(tokens: tokens, chunks: 2) == .chunkCountMismatch(base: 3, run: 2))
            var otherVocabulary = header
            otherVocabulary.vocabularySize += 1
            #expect(throws: LogProbabilityFileError.self) { try otherVocabulary.requireCompatible(with: header, path: path) }

            // Through the evaluator: the comparison fails before a position is scored.
            #expect(throws: LogProbabilityFileError(path: path, problem: .contextMismatch(base: 32, run: 16))) {
                _ = try compare(model: model, tokens: tokens, context: 16, path: path)
            }
            let text = LogProbabilityFileError(path: path, problem: .contextMismatch(base: 32, run: 16)).description
            #expect(text == "\(path): the base was made with --ctx 32, this run uses --ctx 16")
        }
    }

    /// Synthetic bases (no model) for the file checks.
    func writeSynthetic(_ path: String, positions: Int = 6, vocabulary: Int = 40, name: String = "synthetic.gguf") throws {
        let header = LogProbabilityFile.Header(vocabularySize: vocabulary, contextLength: 8, chunkCount: positions / 3,
                                               scoredPositions: positions, tokenHash: 42, modelName: name, modelSize: 1234)
        let writer = try LogProbabilityFile.Writer(path: path, header: header)
        var rng = SplitMix64(seed: 3)
        for _ in 0..<positions {
            let row = (0..<vocabulary).map { _ in Float.random(in: -4...4, using: &rng) }
            try row.withUnsafeBufferPointer { try writer.append(logits: $0) }
        }
        try writer.commit()
    }

    func problem(opening path: String) -> LogProbabilityFileError.Problem? {
        do { _ = try LogProbabilityFile.Reader(path: path) } catch {
            #expect(error.description.hasPrefix(path + ": "))
            return error.problem
        }
        return nil
    }

    @Test func damagedFilesAreClearErrors() throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("base.klb").path
            try writeSynthetic(path)
            let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(good.count == 80 + 6 * (4 + 80) + 4)  // header 60 + 14 name bytes, padded to 80
            #expect(problem(opening: path) == nil)
            // The checksum is zlib's CRC-32 of everything before it.
            let stored = good.suffix(4).withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
            #expect(stored == CRC32.checksum(Array(good.dropLast(4))))

            func damaged(_ bytes: [UInt8]) throws -> LogProbabilityFileError.Problem? {
                try Data(bytes).write(to: URL(fileURLWithPath: path))
                return problem(opening: path)
            }
            func changed(_ offset: Int, _ value: UInt8) -> [UInt8] {
                var bytes = good
                bytes[offset] = value
                return bytes
            }
            guard case .checksumMismatch = try damaged(changed(200, good[200] ^ 0x10)) else { Issue.record("flipped bit not found"); return }
            guard case .checksumMismatch = try damaged(changed(good.count - 1, good[good.count - 1] ^ 1)) else {
                Issue.record("bad checksum not found"); return
            }
            #expect(try damaged(Array(good.prefix(300))) == .truncated(expectedBytes: UInt64(good.count), actualBytes: 300))
            #expect(try damaged(Array(good.prefix(30))) == .truncated(expectedBytes: 60, actualBytes: 30))
            #expect(try damaged(good + [0]) == .trailingBytes(expectedBytes: UInt64(good.count), actualBytes: UInt64(good.count + 1)))
            #expect(try damaged(changed(0, UInt8(ascii: "X"))) == .notALogProbabilityFile)
            #expect(try damaged([]) == .notALogProbabilityFile)
            #expect(try damaged(changed(8, 2)) == .unsupportedVersion(found: 2, supported: 1))
            guard case .badHeader = try damaged(changed(32, 7)) else { Issue.record("bad position count accepted"); return }
            guard case .badHeader = try damaged(changed(16, 0)) else { Issue.record("vocabulary 0 accepted"); return }
            guard case .cannotOpen = problem(opening: dir.appendingPathComponent("missing.klb").path) else {
                Issue.record("missing file"); return
            }
            #expect(problem(opening: dir.path) == .notALogProbabilityFile)
        }
    }

    @Test func readsBackWhatWasWritten() throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("base.klb").path
            try writeSynthetic(path, positions: 3, vocabulary: 7, name: "ünïcode name.gguf")
            let reader = try LogProbabilityFile.Reader(path: path)
            #expect(reader.header == LogProbabilityFile.Header(vocabularySize: 7, contextLength: 8, chunkCount: 1, scoredPositions: 3,
                                                               tokenHash: 42, modelName: "ünïcode name.gguf", modelSize: 1234))
            var rng = SplitMix64(seed: 3)
            var row = [Float](repeating: 0, count: 7)
            for _ in 0..<3 {
                let logits = (0..<7).map { _ in Float.random(in: -4...4, using: &rng) }
                let top = try row.withUnsafeMutableBufferPointer { try reader.nextRecord(into: $0) }
                #expect(top == logits.indices.max { logits[$0] < logits[$1] })
                let lse = logits.withUnsafeBufferPointer { KLDivergence.logSumExp($0) }
                for (stored, x) in zip(row, logits) {
                    let exact = Double(x) - lse
                    #expect(abs(Double(stored) - exact) <= abs(exact) * 0x1p-11 + 1e-7)
                }
            }
            #expect(throws: LogProbabilityFileError.self) { try row.withUnsafeMutableBufferPointer { try reader.nextRecord(into: $0) } }
        }
    }

    @Test func writingIsAtomic() throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("base.klb").path
            let old = Data("an older file that must survive a failed write".utf8)
            try old.write(to: URL(fileURLWithPath: path))
            let header = LogProbabilityFile.Header(vocabularySize: 5, contextLength: 8, chunkCount: 1, scoredPositions: 3,
                                                   tokenHash: 1, modelName: "m", modelSize: 1)
            // Abandoned half way (the run failed): the temporary file goes, the old file stays.
            do {
                let writer = try LogProbabilityFile.Writer(path: path, header: header)
                try [Float](repeating: 0, count: 5).withUnsafeBufferPointer { try writer.append(logits: $0) }
                #expect(contents(dir) == ["base.klb", "base.klb.tmp-\(getpid())"])
                #expect(throws: LogProbabilityFileError(path: path, problem: .incomplete(written: 1, expected: 3))) {
                    try writer.commit()
                }
            }
            #expect(contents(dir) == ["base.klb"])
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == old)

            // Completed: the old file is replaced whole, nothing else is left.
            try writeSynthetic(path)
            #expect(contents(dir) == ["base.klb"])
            #expect(try LogProbabilityFile.Reader(path: path).header.modelName == "synthetic.gguf")

            // A directory that does not exist: a clear error, nothing created.
            let nowhere = dir.appendingPathComponent("no/such/dir/base.klb").path
            #expect(throws: LogProbabilityFileError.self) { _ = try LogProbabilityFile.Writer(path: nowhere, header: header) }
        }
    }
}
