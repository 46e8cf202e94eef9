import Engine
import Foundation
import KV
import Models
import Storage
import Testing
import TestSupport
import Tokenizer

/// Sessions saved to disk and restored: exact keys and values back (load), the same logits
/// after a recomputed or half-recomputed prefix (compute, auto), and every bad file refused
/// with a clear error that leaves it as it was.
@Suite("Session files")
struct SessionFileTests {
    static let stems = ["tiny-llama.q8_0", "tiny-qwen3.f16", "tiny-qwen3moe.q8_0"]

    static func model(_ stem: String) throws -> DecoderModel {
        try DecoderModel.load(path: SharedData.path("models/\(stem).gguf"))
    }

    /// Deterministic token ids below the vocabulary size.
    static func tokens(_ count: Int, vocabulary: Int, seed: UInt64 = 7) -> [Int] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in Int(rng.next() % UInt64(min(vocabulary, 4000))) + 1 }
    }

    static func relativeError(_ a: [Float], _ b: [Float]) -> Double {
        var diff = 0.0, norm = 0.0
        for (x, y) in zip(a, b) {
            diff += Double(x - y) * Double(x - y)
            norm += Double(x) * Double(x)
        }
        return (diff / max(norm, 1e-30)).squareRoot()
    }

    /// A session that evaluated `prefix`, saved to `path`.
    static func savedSession(_ model: DecoderModel, _ prefix: [Int], path: String, type: KVType = .f16) throws -> Session {
        let pool = try model.makeKVPool(positions: 256, type: type)
        let session = Session(model: model, contextLength: 256, threads: 2, kvPool: pool)
        _ = try session.evaluate(prefix, logits: .none)
        try SessionFile.save(session, to: path, contents: SessionContents(kind: "generate"))
        return session
    }

    static func freshSession(_ model: DecoderModel, type: KVType = .f16, context: Int = 256) throws -> Session {
        Session(model: model, contextLength: context, threads: 2, kvPool: try model.makeKVPool(positions: context, type: type))
    }

    @Test("loaded blocks give bit-identical logits; recomputed ones, close ones", arguments: stems, KVType.allCases)
    func roundTrip(stem: String, type: KVType) throws {
        let model = try Self.model(stem)
        let tokens = Self.tokens(110, vocabulary: model.vocabularySize)
        let prefix = Array(tokens.prefix(100)), rest = Array(tokens[100...])
        try TemporaryDirectory.with(prefix: "moe-session") { dir in
            let path = dir.appendingPathComponent("s.session").path
            let original = try Self.savedSession(model, prefix, path: path, type: type)
            let expected = try original.evaluate(rest, logits: .all)

            let saved = try SessionFile.open(path: path)
            #expect(saved.tokens == prefix)
            #expect(saved.layout == original.cache.layout)
            #expect(saved.contents == SessionContents(kind: "generate"))
            #expect(saved.computeSecondsPerPosition != nil)

            let loaded = try Self.freshSession(model, type: type)
            try saved.check(against: loaded)
            let report = try loaded.restore(saved, positions: prefix.count, strategy: .load)
            #expect(report.loadedPositions == 100 && report.computedPositions == 0)
            #expect(report.bytesRead == 7 * model.kvLayout(type: type).blockBytes)
            #expect(loaded.position == 100 && loaded.cache.tokens == prefix)
            #expect(try loaded.evaluate(rest, logits: .all) == expected, "\(stem) \(type): logits after a loaded prefix differ")

            // Recomputed as the original computed it (one batch of 100): the same logits.
            let computed = try Self.freshSession(model, type: type)
            let r = try computed.restore(saved, positions: prefix.count, strategy: .compute)
            #expect(r.computedPositions == 100 && r.loadedPositions == 0 && r.bytesRead == 0)
            #expect(try computed.evaluate(rest, logits: .all) == expected)
        }
    }

    @Test("a prefix of the saved positions, ending inside a block", arguments: [1, 15, 16, 17, 63])
    func partialPrefix(positions: Int) throws {
        let model = try Self.model("tiny-qwen3moe.q8_0")
        let tokens = Self.tokens(80, vocabulary: model.vocabularySize)
        try TemporaryDirectory.with(prefix: "moe-session") { dir in
            let path = dir.appendingPathComponent("s.session").path
            _ = try Self.savedSession(model, tokens, path: path)
            let saved = try SessionFile.open(path: path)
            let session = try Self.freshSession(model)
            _ = try session.restore(saved, positions: positions, strategy: .load)
            #expect(session.position == positions)
            let restoredLogits = try session.evaluate(Array(tokens[positions...]), logits: .all)
            let fresh = try Self.freshSession(model)
            _ = try fresh.evaluate(Array(tokens.prefix(positions)), logits: .none)
            let freshLogits = try fresh.evaluate(Array(tokens[positions...]), logits: .all)
            #expect(restoredLogits == freshLogits)
            // The restored full blocks are in the pool's prefix cache like computed ones.
            #expect(session.cache.pool.cachedBlocks == 5)
        }
    }

    @Test("auto: a slow disk is met halfway by recomputation (Cake), with the same logits")
    func computeAndLoadMeet() throws {
        let model = try Self.model("tiny-qwen3moe.q8_0")
        let tokens = Self.tokens(250, vocabulary: model.vocabularySize)
        let prefix = Array(tokens.prefix(240)), rest = Array(tokens[240...])
        try TemporaryDirectory.with(prefix: "moe-session") { dir in
            let path = dir.appendingPathComponent("s.session").path
            let original = try Self.savedSession(model, prefix, path: path)
            let expected = try original.evaluate(rest, logits: .all)
            // Every block read takes 30 ms: 15 blocks take the loader 450 ms, far more than
            // computing the head.
            let inner = try StorageFile.open(path: path, direct: false)
            let slow = FaultInjectingBackend(wrapping: inner) { request, _ in
                request.offset >= 4096 ? .delay(.milliseconds(30)) : .none
            }
            let saved = try SessionFile.open(path: path, backend: slow)
            let session = try Self.freshSession(model)
            let blockBytes = model.kvLayout().blockBytes
            let report = try session.restore(saved, positions: 240, strategy: .automatic, chunkPositions: 32,
                                             loadChunkBytes: blockBytes)
            #expect(report.loadedPositions > 0 && report.computedPositions > 0, "\(report)")
            #expect(report.loadedPositions + report.computedPositions == 240)
            #expect(report.computedPositions % 16 == 0)
            #expect(session.position == 240 && session.cache.tokens == prefix)
            // Block by block: the loaded tail holds the saved bytes, the computed head what
            // the same chunks of 32 compute (other batch sizes round differently, and this
            // random-weight MoE's near-tied routing turns that into logit differences of ~1%).
            let layout = session.cache.layout
            let chunked = try Self.freshSession(model)
            for c in stride(from: 0, to: report.computedPositions, by: 32) {
                _ = try chunked.evaluate(Array(prefix[c..<(c + 32)]), logits: .none)
            }
            func bytes(_ s: Session, _ block: Int) -> [UInt8] {
                Array(UnsafeRawBufferPointer(start: s.cache.storageOfBlock(at: block), count: layout.blockBytes))
            }
            for block in 0..<15 {
                let reference = block < report.computedPositions / 16 ? chunked : original
                #expect(bytes(session, block) == bytes(reference, block), "block \(block)")
            }
            #expect(Self.relativeError(try session.evaluate(rest, logits: .all), expected) < 0.05)

            // A fast disk: nothing is worth computing.
            let fast = try Self.freshSession(model)
            fast.prefillSecondsPerPosition = 1e-3
            let r = try fast.restore(try SessionFile.open(path: path), positions: 240, strategy: .automatic)
            #expect(r.computedPositions == 0 && r.loadedPositions == 240)
        }
    }

    // MARK: Bad files

    /// Saves a session of 40 positions of tiny-qwen3moe and returns the model, path and bytes.
    static func withSavedFile(_ body: (DecoderModel, String, [UInt8]) throws -> Void) throws {
        let model = try Self.model("tiny-qwen3moe.q8_0")
        try TemporaryDirectory.with(prefix: "moe-session") { dir in
            let path = dir.appendingPathComponent("s.session").path
            _ = try Self.savedSession(model, Self.tokens(40, vocabulary: model.vocabularySize), path: path)
            try body(model, path, Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        }
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    @Test("a corrupted block is refused before it counts; the session stays empty, the file as it was")
    func corruptedBlock() throws {
        try Self.withSavedFile { model, path, bytes in
            var bad = bytes
            bad[bad.count - 100] ^= 0x40  // inside block 2, the last
            try Self.write(bad, to: path)
            let saved = try SessionFile.open(path: path)
            let session = try Self.freshSession(model)
            #expect {
                _ = try session.restore(saved, positions: 40, strategy: .load)
            } throws: { error in
                let e = error as! SessionFileError
                guard case .blockChecksumMismatch(block: 2, positions: 32..<40) = e.problem else { return false }
                return e.description == "session \(path): block 2 (positions 32..<40) fails its checksum (the file is corrupted)"
            }
            #expect(session.position == 0 && session.cache.blocks.isEmpty)
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: path))) == bad)
            // The session is usable afterwards.
            _ = try session.evaluate([1, 2, 3], logits: .last)
        }
    }

    @Test("an I/O error or a file cut short while loading: a clear error, an empty session",
          arguments: [InjectedFault.eio, .truncate(fileSize: 8192)])
    func faultsWhileLoading(fault: InjectedFault) throws {
        try Self.withSavedFile { model, path, _ in
            let backend = FaultInjectingBackend(wrapping: try StorageFile.open(path: path, direct: false)) { request, _ in
                request.offset >= 4096 + 24576 ? fault : .none  // blocks 1 and 2
            }
            let saved = try SessionFile.open(path: path, backend: backend)
            let session = try Self.freshSession(model)
            #expect {
                _ = try session.restore(saved, positions: 40, strategy: .load, loadChunkBytes: 24576)
            } throws: { error in
                let text = "\(error)"
                return text.hasPrefix("session \(path): ") && (text.contains("Input/output error") || text.contains("runs past its end"))
            }
            #expect(session.position == 0 && session.cache.blocks.isEmpty)
            #expect(backend.pending == 0, "a read still in flight after the restore returned")
        }
    }

    @Test("a corrupted header, a truncated file, a file of something else")
    func corruptedHeaderAndTruncation() throws {
        try Self.withSavedFile { _, path, bytes in
            var bad = bytes
            bad[90] ^= 1  // a token
            try Self.write(bad, to: path)
            #expect { _ = try SessionFile.open(path: path) } throws: {
                guard case .headerChecksumMismatch = ($0 as! SessionFileError).problem else { return false }
                return "\($0)".contains("the header's checksum does not match")
            }
            try Self.write(Array(bytes.dropLast(1000)), to: path)
            #expect { _ = try SessionFile.open(path: path) } throws: {
                "\($0)" == "session \(path): truncated: \(bytes.count - 1000) bytes, the header needs \(bytes.count)"
            }
            try Self.write(Array(bytes.prefix(40)), to: path)
            #expect { _ = try SessionFile.open(path: path) } throws: { "\($0)".contains("truncated: 40 bytes") }
            try Self.write(Array(bytes.prefix(20000)) + [0], to: path)
            #expect { _ = try SessionFile.open(path: path) } throws: { "\($0)".contains("truncated") }
            #expect { _ = try SessionFile.open(path: SharedData.path("models/tiny-llama.q8_0.gguf")) } throws: {
                "\($0)".hasSuffix("not a session file (no MOESESSN magic)")
            }
            var future = bytes
            future[8] = 9
            try Self.write(future, to: path)
            #expect { _ = try SessionFile.open(path: path) } throws: { "\($0)".contains("format version 9; this build reads version 1") }
            #expect { _ = try SessionFile.open(path: path + ".missing") } throws: { "\($0)".contains("cannot open") }
        }
    }

    @Test("hostile headers (fields at extremes, checksum recomputed) are errors, never crashes")
    func hostileHeaders() throws {
        try Self.withSavedFile { model, path, bytes in
            // The header checksum follows the name, tokens, contents and block checksums.
            func u32(_ o: Int) -> Int { Int(bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt32.self) }) }
            let crcOffset = 80 + u32(64) + 4 * u32(56) + u32(68) + 4 * u32(60)
            #expect(CRC32.checksum(Array(bytes[..<crcOffset])) == bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: crcOffset, as: UInt32.self) })
            // Every field but the model file's size (24..<32: for messages only; the
            // fingerprint identifies the model).
            for field in stride(from: 12, to: 72, by: 4) where !(24..<32).contains(field) {
                for value: UInt32 in [0, 1, 3, 0x7FFF_FFFF, 0xFFFF_FFFF] where value != UInt32(u32(field)) {
                    var bad = bytes
                    withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { bad[field + i] = b } }
                    withUnsafeBytes(of: CRC32.checksum(Array(bad[..<crcOffset])).littleEndian) {
                        for (i, b) in $0.enumerated() { bad[crcOffset + i] = b }
                    }
                    try Self.write(bad, to: path)
                    do {
                        let saved = try SessionFile.open(path: path)
                        let session = try Self.freshSession(model)
                        try saved.check(against: session)
                        _ = try session.restore(saved, positions: saved.count, strategy: .load)
                    } catch is SessionFileError {
                        continue
                    }
                    Issue.record("field \(field) = \(value) accepted")
                }
            }
        }
    }

    @Test("another model, another KV type, a context too small: refused with what to do")
    func mismatches() throws {
        try Self.withSavedFile { model, path, _ in
            let saved = try SessionFile.open(path: path)
            let other = try Self.model("tiny-qwen3moe.f16")
            #expect { try saved.check(against: try Self.freshSession(other)) } throws: {
                "\($0)" == "session \(path): saved by another model (tiny-qwen3moe.q8_0.gguf, \(saved.modelSize) bytes); "
                    + "this run uses tiny-qwen3moe.f16.gguf (\(other.weights.file.fileSize) bytes)"
            }
            #expect { try saved.check(against: try Self.freshSession(model, type: .q8_0)) } throws: {
                "\($0)" == "session \(path): holds f16 keys and values; this run uses q8_0 (pass --kv-type f16)"
            }
            #expect { try saved.check(against: try Self.freshSession(model, context: 32)) } throws: {
                "\($0)" == "session \(path): holds 40 positions, more than the context of 32 (use a larger --ctx)"
            }
            try saved.check(against: try Self.freshSession(model))
        }
    }

    @Test("a failed save leaves the previous file whole and no temporary file")
    func failedSaveKeepsTheOriginal() throws {
        try Self.withSavedFile { model, path, bytes in
            let session = try Self.freshSession(model)
            _ = try session.evaluate([5, 6, 7], logits: .none)
            // The directory turns read-only: the temporary file cannot be created.
            let dir = (path as NSString).deletingLastPathComponent
            chmod(dir, 0o500)
            defer { chmod(dir, 0o700) }
            if access(dir, W_OK) == 0 { return }  // root ignores the mode: nothing to test
            #expect(throws: SessionFileError.self) {
                try SessionFile.save(session, to: path, contents: SessionContents(kind: "generate"))
            }
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: path))) == bytes)
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["s.session"])
        }
    }

    @Test("a conversation saved and resumed replies as the original does")
    func conversationResumes() throws {
        let model = try Self.model("tiny-qwen3moe.f16")
        let metadata = model.weights.file.metadata
        let tokenizer = try Tokenizer(metadata: metadata)
        func conversation() throws -> Conversation {
            try Conversation(session: Session(model: model, contextLength: 256, threads: 2), tokenizer: tokenizer,
                             metadata: metadata, systemPrompt: "Be brief.")
        }
        try TemporaryDirectory.with(prefix: "moe-session") { dir in
            let path = dir.appendingPathComponent("chat.session").path
            let original = try conversation()
            var sampler = Sampler(.greedy)
            _ = try original.reply(to: "Hello there", maxTokens: 6, sampler: &sampler) { _ in true }
            _ = try original.reply(to: "Tell me more", maxTokens: 6, sampler: &sampler) { _ in true }
            try original.save(to: path)

            let resumed = try conversation()
            let report = try resumed.resume(from: try SessionFile.open(path: path), strategy: .load)
            #expect(report.loadedPositions == original.session.position)
            #expect(resumed.messages == original.messages)
            #expect(resumed.cachedTokens == original.cachedTokens)

            var a = Sampler(.greedy), b = Sampler(.greedy)
            let expected = try original.reply(to: "And then?", maxTokens: 8, sampler: &a) { _ in true }
            let got = try resumed.reply(to: "And then?", maxTokens: 8, sampler: &b) { _ in true }
            #expect(got.text == expected.text)
            #expect(got.reusedTokens == expected.reusedTokens)

            // A generate session is not a chat.
            let plain = dir.appendingPathComponent("plain.session").path
            try SessionFile.save(original.session, to: plain, contents: SessionContents(kind: "generate"))
            #expect { _ = try conversation().resume(from: try SessionFile.open(path: plain)) } throws: {
                "\($0)".hasSuffix("was saved by `moe generate`, not `moe chat`")
            }
        }
    }
}
