import Foundation
import GGUF
import Host
import Kernels
import Models
import Storage
import Testing
import TestSupport
@testable import Experts

/// Runs a fixed script on `model`: an 8-token batch (logits at every position, so the
/// batch's experts run in waves when the pool is small), then 6 greedy decode steps.
func scriptLogits(_ model: DecoderModel, pool: ThreadPool) throws -> [Float] {
    let cache = model.makeCache(capacity: 64)
    let workspace = Workspace()
    let vocab = model.vocabularySize
    let prompt = (0..<8).map { (($0 &* 7919) &+ 13) % vocab }
    var all = try model.forward(prompt, cache: cache, logits: .all, workspace: workspace, pool: pool)
    var last = Array(all.suffix(vocab))
    for _ in 0..<6 {
        let next = last.indices.max { last[$0] < last[$1] }!
        last = try model.forward([next], cache: cache, logits: .last, workspace: workspace, pool: pool)
        all += last
    }
    return all
}

func offloaded(_ path: String, slots: Int?, policy: String = "arc", prefetch: PrefetchMode = .gate,
               expertReads: (any StorageBackend) -> any StorageBackend = { $0 }) throws -> (DecoderModel, OffloadedExpertProvider) {
    var options = OffloadOptions()
    options.policy = policy
    options.prefetch = prefetch
    if let slots {
        // Size the budget in slots: read the layout the way the loader will.
        // Read-ahead's learned corrections come out of the budget too.
        let probe = try offloaded(path, slots: nil)
        options.expertMemory = slots * probe.1.pool.slotBytes
            + OffloadedModel.predictionCorrectionBytes(probe.1.layout, hidden: probe.0.hidden, options: options)
    }
    let (model, provider) = try OffloadedModel.load(path: path, options: options, expertReads: expertReads)
    guard let provider else { throw ModelError.file("\(path) was not offloaded") }
    return (model, provider)
}

/// A pack of the shared model `name`, written into `dir`.
func makePack(_ name: String, in dir: TemporaryDirectory, lowPrecisions: [GGMLType] = []) throws -> String {
    let pack = dir.path("pack.gguf")
    _ = try ExpertPacker(input: Shared.model(name), output: pack, lowPrecisions: lowPrecisions).write()
    return pack
}

/// A private copy of tiny-qwen3moe in `dir` (for tests that change the file under a running
/// model), offloaded with 4 slots and run once.
func runningCopy(in dir: TemporaryDirectory) throws -> (path: String, model: DecoderModel) {
    let copy = dir.path("model.gguf")
    try FileManager.default.copyItem(atPath: Shared.model("tiny-qwen3moe.q8_0.gguf"), toPath: copy)
    let (model, _) = try offloaded(copy, slots: 4)
    _ = try scriptLogits(model, pool: OffloadingTests.pool)
    return (copy, model)
}

@Suite("Offloaded experts", .serialized)
struct OffloadingTests {
    static let pool = ThreadPool(threadCount: 2)

    @Test("logits are bit-identical to the all-resident run at every budget and with every policy",
          arguments: Shared.moeModels)
    func bitIdentical(_ name: String) throws {
        let path = Shared.model(name)
        let resident = try DecoderModel.load(path: path)
        let expected = try scriptLogits(resident, pool: Self.pool)
        let (_, probe) = try offloaded(path, slots: nil)
        let k = probe.layout.expertsPerToken
        let all = probe.layout.layers.count * probe.layout.expertCount
        for slots in Set([k, k + 1, all / 2, all]).sorted() {
            for policy in ExpertPolicies.names {
                // Each read-ahead mode with some policies.
                let prefetch: PrefetchMode = ["lfu": .none, "hobbit": .near, "fate": .adaptive, "lru": .path][policy] ?? .gate
                let (model, provider) = try offloaded(path, slots: slots, policy: policy, prefetch: prefetch)
                #expect(provider.pool.slotCount == slots)
                let got = try scriptLogits(model, pool: Self.pool)
                #expect(got.count == expected.count)
                let same = zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern }
                #expect(same, "\(name): \(slots) slots, policy \(policy), prefetch \(prefetch): logits differ from the resident run")
                // Read-ahead goes to the disk once a layer's own reads are in; in a pool of the
                // minimum size it can only take slots this layer has finished with.
                if prefetch == .none {
                    #expect(provider.stats.prefetchesIssued == 0)
                } else if prefetch == .near || slots > k {
                    #expect(provider.stats.prefetchesIssued > 0)
                }
                #expect(provider.stats.totalMisses > 0)
                if slots == all {
                    // Everything fits: each expert is read at most once.
                    #expect(provider.stats.expertsRead <= all)
                }
            }
        }
    }

    @Test("a pack runs with one read per expert and the same logits as the plain file",
          arguments: ["tiny-qwen3moe.q8_0.gguf", "tiny-qwen2moe.q4_k_m.gguf", "tiny-olmoe.q6_k.gguf"])
    func packedFile(_ name: String) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pack = try makePack(name, in: dir, lowPrecisions: [.q4_0])
        let expected = try scriptLogits(try DecoderModel.load(path: Shared.model(name)), pool: Self.pool)
        var reads: [Int] = []
        for slots in [4, 1000] {
            let (model, provider) = try offloaded(pack, slots: slots) { inner in
                FaultInjectingBackend(wrapping: inner) { request, _ in reads.append(request.length); return .none }
            }
            #expect(provider.layout.isPacked)
            reads.removeAll()
            let got = try scriptLogits(model, pool: Self.pool)
            #expect(zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(name), \(slots) slots")
            // One aligned read per expert loaded (or still loading, from a prefetch): these
            // experts are smaller than a read piece.
            #expect(reads.count == provider.stats.expertsRead + provider.loadingCount)
            #expect(reads.allSatisfy { $0 % 4096 == 0 })
        }
    }

    @Test("with io_uring, experts are read straight into the registered pool (READ_FIXED, O_DIRECT)")
    func fixedBufferReads() throws {
        // A pack: every extent is whole pages, so no read needs a bounce buffer. (A plain
        // file whose last tensor is an expert ends mid-page; that one read is bounced.)
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pack = try makePack("tiny-qwen3moe.q8_0.gguf", in: dir)
        var uring: IOUringBackend?
        var before = (fixed: 0, bounced: 0)  // the start-up reads of the other weights
        let (model, provider) = try offloaded(pack, slots: 8) { inner in
            uring = inner as? IOUringBackend
            before = (uring?.fixedReadCount ?? 0, uring?.bouncedReadCount ?? 0)
            return inner
        }
        _ = try scriptLogits(model, pool: Self.pool)
        let backend = try #require(uring, "the automatic backend is io_uring here")
        #expect(backend.registeredSegmentCount >= 1)
        #expect(backend.isDirect)
        #expect(backend.fixedReadCount - before.fixed >= provider.stats.expertsRead, "fixed reads \(backend.fixedReadCount)")
        #expect(backend.bouncedReadCount == before.bounced)
    }

    @Test("the pread fallback serves experts with the same logits")
    func preadBackend() throws {
        let path = Shared.model("tiny-mixtral.q4_0.gguf")
        let expected = try scriptLogits(try DecoderModel.load(path: path), pool: Self.pool)
        var options = OffloadOptions()
        options.expertMemory = 1 << 20
        let (model, offloaded) = try OffloadedModel.load(path: path, backend: .pread, options: options)
        let provider = try #require(offloaded)
        let got = try scriptLogits(model, pool: Self.pool)
        #expect(zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern })
        #expect(provider.stats.totalMisses > 0 && provider.stats.totalHits > 0)
    }

    @Test("a pool that holds every expert reads each once and then only hits")
    func warmPoolOnlyHits() throws {
        let path = Shared.model("tiny-qwen3moe.q8_0.gguf")
        let (model, provider) = try offloaded(path, slots: nil)
        let slots = provider.layout.layers.count * provider.layout.expertCount
        #expect(provider.pool.slotCount == slots)
        _ = try scriptLogits(model, pool: Self.pool)
        // A read is counted when it lands: one still in flight (a prefetch) lands in the
        // second run.
        let readBefore = provider.stats.expertsRead + provider.loadingCount
        _ = try scriptLogits(model, pool: Self.pool)
        #expect(provider.stats.expertsRead + provider.loadingCount == readBefore)
        #expect(provider.stats.bytesRead + UInt64(provider.loadingCount * provider.layout.expertBytes())
                == UInt64(readBefore) * UInt64(provider.layout.expertBytes()))
    }

    @Test("without a budget, a file that fits is read whole; a pack is offloaded all the same; dense stays dense")
    func offloadOnlyWhenNeeded() throws {
        var options = OffloadOptions()
        options.decision = .whenNeeded
        let (fits, none) = try OffloadedModel.load(path: Shared.model("tiny-qwen3moe.q8_0.gguf"), options: options)
        #expect(none == nil)
        #expect(fits.experts is ResidentExpertProvider)
        let (dense, noExperts) = try OffloadedModel.load(path: Shared.model("tiny-qwen3.q8_0.gguf"), options: options)
        #expect(noExperts == nil && dense.experts == nil)
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pack = try makePack("tiny-qwen3moe.q8_0.gguf", in: dir)
        let (_, packed) = try OffloadedModel.load(path: pack, options: options)
        #expect(packed?.layout.isPacked == true)
    }

    @Test("a budget below the minimum is an error that states the minimum")
    func budgetBelowMinimum() throws {
        let path = Shared.model("tiny-qwen3moe.q8_0.gguf")
        var options = OffloadOptions()
        options.expertMemory = 4096
        #expect {
            _ = try OffloadedModel.load(path: path, options: options)
        } throws: { error in
            let text = "\(error)"
            return text.contains("below the minimum") && text.contains("KiB") && text.contains("4 experts")
        }
    }

    @Test("a budget just below the minimum shows both in bytes, not as equal rounded figures")
    func budgetJustBelowMinimum() {
        let close = "\(ExpertError.budgetTooSmall(budget: 1 << 20, minimum: 1_081_344, expertBytes: 208_896, lowCopyBytes: 61_440))"
        #expect(close.contains("1.0 MiB (1048576 bytes) is below the minimum of 1.0 MiB (1081344 bytes)"), "\(close)")
        let apart = "\(ExpertError.budgetTooSmall(budget: 65_536, minimum: 884_736, expertBytes: 221_184))"
        #expect(apart.contains("64.0 KiB is below the minimum of 864.0 KiB (4 experts"), "\(apart)")
    }

    @Test("an unknown policy is named in the error")
    func unknownPolicy() throws {
        var options = OffloadOptions()
        options.policy = "mru"
        #expect(throws: ModelError.self) { _ = try OffloadedModel.load(path: Shared.model("tiny-qwen3moe.q8_0.gguf"), options: options) }
    }

    @Test("read faults give a clear error, leave the pool consistent, and later tokens are right again",
          arguments: [InjectedFault.eio, .shortRead(bytes: 100), .truncate(fileSize: 4096)])
    func readFaults(_ fault: InjectedFault) throws {
        let path = Shared.model("tiny-qwen3moe.q8_0.gguf")
        let resident = try DecoderModel.load(path: path)
        let expected = try scriptLogits(resident, pool: Self.pool)
        var injecting: FaultInjectingBackend?
        var armed = false
        let (model, provider) = try offloaded(path, slots: 6) { inner in
            let b = FaultInjectingBackend(wrapping: inner) { _, index in armed && index % 5 == 3 ? fault : .none }
            injecting = b
            return b
        }
        armed = true
        #expect {
            _ = try scriptLogits(model, pool: Self.pool)
        } throws: { error in
            guard let e = error as? ModelError, case let .storage(storage) = e else { return false }
            let text = storage.description
            return text.contains("tiny-qwen3moe.q8_0.gguf") || text.contains("injected") || text.contains("failed")
        }
        #expect(injecting!.pending == 0, "reads left in flight after the failure")
        // Without faults the same provider gives the exact resident logits again.
        armed = false
        let again = try scriptLogits(model, pool: Self.pool)
        #expect(zip(again, expected).allSatisfy { $0.bitPattern == $1.bitPattern })
        #expect(provider.residentCount <= provider.pool.slotCount)
    }

    @Test("a model file truncated while running gives an error naming the truncation, not a crash")
    func truncatedWhileRunning() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let (copy, model) = try runningCopy(in: dir)
        let size = try FileManager.default.attributesOfItem(atPath: copy)[.size] as! UInt64
        #expect(truncate(copy, off_t(size / 2)) == 0)
        #expect {
            _ = try scriptLogits(model, pool: Self.pool)
        } throws: { error in
            "\(error)".contains("truncated") || "\(error)".contains("past its end")
        }
    }

    @Test("a model file overwritten in place while running is noticed, not read as if unchanged")
    func overwrittenWhileRunning() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let (copy, model) = try runningCopy(in: dir)
        // Same size, other bytes in an expert tensor, as `cp other.gguf model.gguf` would leave.
        let handle = try #require(FileHandle(forWritingAtPath: copy))
        try handle.seek(toOffset: 10_000_000)
        handle.write(Data(repeating: 0x55, count: 4096))
        try handle.close()
        #expect {
            _ = try scriptLogits(model, pool: Self.pool)
        } throws: { error in
            "\(error)".contains("changed while running")
        }
    }

    @Test("a model file replaced by rename keeps being read from the open file, exactly")
    func replacedByRename() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let copy = dir.path("model.gguf")
        try FileManager.default.copyItem(atPath: Shared.model("tiny-qwen3moe.q8_0.gguf"), toPath: copy)
        let expected = try scriptLogits(try DecoderModel.load(path: copy), pool: Self.pool)
        let (model, _) = try offloaded(copy, slots: 4)
        try FileManager.default.copyItem(atPath: Shared.model("tiny-qwen3moe.q4_0.gguf"), toPath: dir.path("other.gguf"))
        #expect(rename(dir.path("other.gguf"), copy) == 0)
        let got = try scriptLogits(model, pool: Self.pool)
        #expect(zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern })
    }

    @Test("the pool's pages are on the NUMA node it reports")
    func numaPlacement() throws {
        let node = ComputePlacement.computeNode
        let pool = try ExpertPool(slotBytes: 64 << 10, slotCount: 8, numaNode: node)
        if let node {
            #expect(pool.memory.placement == .numaNode(node))
            #expect(pool.residentNode == node)
        } else {
            #expect(pool.memory.placement == .standard)
        }
        #expect(pool.slotBytes % 4096 == 0)
        #expect(Int(bitPattern: pool.slot(3)) % 4096 == 0)
    }

    @Test("a pool asked for a node that does not exist is refused")
    func missingNode() {
        #expect(throws: StorageError.self) { _ = try ExpertPool(slotBytes: 4096, slotCount: 2, numaNode: 4095) }
    }

    @Test("byte counts parse as the flags document")
    func parsing() throws {
        #expect(parseByteCount("800M") == 800 << 20)
        #expect(parseByteCount("1.5G") == 3 << 29)
        #expect(parseByteCount("64K") == 64 << 10)
        #expect(parseByteCount("4096") == 4096)
        #expect(parseByteCount("2GB") == 2 << 30)
        #expect(parseByteCount("lots") == nil)
        #expect(parseByteCount("-1M") == nil)
    }
}
