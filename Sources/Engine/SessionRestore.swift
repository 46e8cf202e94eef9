import Foundation
import KV
import Models
import Storage
import Synchronization

/// How a saved prefix gets back into the KV cache.
public enum RestoreStrategy: String, Sendable, CaseIterable {
    /// Cake's "compute or load, why not both": blocks load from the end of the prefix
    /// backwards while the model recomputes it from the start; before each chunk it would
    /// compute, the engine compares its measured compute time for the chunk with the time
    /// the loader, at its measured speed, needs to come down to it, and leaves the rest to
    /// the loader when the loader is faster. Where the disk is fast (as it is for a small
    /// model's KV) nothing is computed; where it is slow, both meet in the middle.
    case automatic = "auto"
    /// Read every block from the file.
    case load
    /// Recompute every position (the file's blocks are not read).
    case compute
}

/// What a restore did.
public struct RestoreReport: Sendable {
    public var positions = 0
    /// Positions read from the file, and recomputed through the model.
    public var loadedPositions = 0
    public var computedPositions = 0
    public var bytesRead = 0
    public var seconds = 0.0
}

extension Session {
    /// Puts the first `positions` saved positions of `saved` into this empty session, by
    /// `strategy`, and returns what it did. `saved` must have been checked against this
    /// session (`SavedSession.check(against:)`). A block whose checksum fails, a read error
    /// or a failed computation leaves the session empty and throws; the file is not changed.
    /// The model computes `chunkPositions` positions at a time; the loader reads about
    /// `loadChunkBytes` at a time.
    public func restore(_ saved: SavedSession, positions: Int, strategy: RestoreStrategy = .automatic,
                        chunkPositions: Int = 64, loadChunkBytes: Int = 4 << 20) throws(SessionFileError) -> RestoreReport {
        precondition(position == 0, "a restore starts an empty session")
        precondition(positions >= 0 && positions <= saved.count && cache.layout == saved.layout)
        let clock = ContinuousClock()
        let started = clock.now
        var report = RestoreReport()
        report.positions = positions
        guard positions > 0 else { return report }
        let tokens = Array(saved.tokens.prefix(positions))
        if saved.computeSecondsPerPosition != nil && prefillSecondsPerPosition == nil {
            prefillSecondsPerPosition = saved.computeSecondsPerPosition
        }
        if strategy == .compute {
            do { _ = try evaluate(tokens, logits: .none) } catch {
                rewind(to: 0)
                throw SessionFileError(path: saved.path, problem: .model(error))
            }
            report.computedPositions = positions
            report.seconds = (clock.now - started).seconds
            return report
        }

        do { try cache.beginRestore(positions: positions) } catch {
            throw SessionFileError(path: saved.path, problem: .kv(error))
        }
        let layout = cache.layout
        let blocks = layout.blocks(forPositions: positions)
        let loader = BlockLoader(saved: saved, destinations: (0..<blocks).map { cache.storageOfBlock(at: $0) },
                                 positions: positions, chunkBytes: loadChunkBytes)
        let thread = Thread { loader.run() }
        thread.start()

        // Compute chunks from the front while that is estimated to beat the loader.
        let step = max(layout.blockSize, chunkPositions / layout.blockSize * layout.blockSize)
        var computeError: ModelError?
        while strategy == .automatic, let secondsPerPosition = prefillSecondsPerPosition {
            guard let range = loader.claimComputeChunk(step: step, secondsPerPosition: secondsPerPosition) else { break }
            do {
                _ = try evaluate(Array(tokens[range]), logits: .none)
            } catch {
                // The failed batch gave back the blocks past the computed head, some of them
                // the loader's destinations: it may still write into them until it stops, which
                // is harmless (the pool's memory lives on, and nothing allocates meanwhile).
                computeError = error
                loader.stop()
                break
            }
        }
        loader.wait()

        let outcome = loader.outcome
        if let computeError {
            cache.truncate(to: 0)
            throw SessionFileError(path: saved.path, problem: .model(computeError))
        }
        if let error = outcome.error {
            cache.truncate(to: 0)
            throw error
        }
        report.computedPositions = position
        report.loadedPositions = positions - position
        report.bytesRead = outcome.bytesRead
        cache.finishRestore(tokens: tokens)
        report.seconds = (clock.now - started).seconds
        return report
    }
}

/// Reads a session's blocks from the last to the first, chunk by chunk, into the blocks a
/// restoring sequence allocated, checking each block's checksum; shares the frontier with
/// the computing thread, which claims chunks from the front.
final class BlockLoader: @unchecked Sendable {
    struct Outcome {
        var error: SessionFileError?
        var bytesRead = 0
    }

    private struct Frontier {
        /// Positions the model computes: 0..<computeEnd (a multiple of the block size unless
        /// it reached the end).
        var computeEnd = 0
        /// Blocks loadStart... are loaded or being loaded.
        var loadStart: Int
        var loadedBlocks = 0
        /// Seconds from the loader's start to its last finished chunk.
        var loadSeconds = 0.0
        var stopped = false
        var outcome = Outcome()
    }

    private let saved: SavedSession
    private let destinations: [UnsafeMutableRawPointer]
    private let positions: Int
    private let blockBytes: Int
    private let blockSize: Int
    private let frontier: Mutex<Frontier>
    private let finished = DispatchSemaphore(value: 0)
    /// Blocks per read.
    private let chunkBlocks: Int

    init(saved: SavedSession, destinations: [UnsafeMutableRawPointer], positions: Int, chunkBytes: Int) {
        self.saved = saved
        self.destinations = destinations
        self.positions = positions
        blockBytes = saved.layout.blockBytes
        blockSize = saved.layout.blockSize
        chunkBlocks = max(1, chunkBytes / blockBytes)
        frontier = Mutex(Frontier(loadStart: destinations.count))
    }

    var outcome: Outcome { frontier.withLock { $0.outcome } }

    func wait() { finished.wait() }

    /// Ends loading early (a failed computation).
    func stop() { frontier.withLock { $0.stopped = true } }

    /// The next positions the model should compute, or nil when the loader is estimated to
    /// get there first (or already has). Waits for the loader's first measurement.
    func claimComputeChunk(step: Int, secondsPerPosition: Double) -> Range<Int>? {
        while true {
            let decision: Range<Int>?? = frontier.withLock { f in
                if f.stopped || f.outcome.error != nil { return .some(nil) }
                let start = f.computeEnd
                let end = min(start + step, f.loadStart * blockSize, positions)
                guard end > start else { return .some(nil) }
                guard f.loadedBlocks > 0 else { return nil }  // not measured yet
                let loaderSecondsPerBlock = f.loadSeconds / Double(f.loadedBlocks)
                let blocksAbove = f.loadStart - (end + blockSize - 1) / blockSize
                let loaderSeconds = Double(blocksAbove) * loaderSecondsPerBlock
                guard Double(end - start) * secondsPerPosition < loaderSeconds else { return .some(nil) }
                f.computeEnd = end
                return .some(start..<end)
            }
            if let decision { return decision }
            usleep(200)
        }
    }

    /// Reads each block straight into its place in the pool (one request per block, two
    /// chunks in flight: the next chunk is read while the last one's checksums are checked);
    /// every read completes before `run` returns, since each targets the pool.
    func run() {
        defer { finished.signal() }
        let backend = saved.backend
        let clock = ContinuousClock()
        let started = clock.now
        var inFlight: [Range<Int>] = []
        var outcomes: [Int: StorageError?] = [:]
        var failed = false
        while true {
            while !failed && inFlight.count < 2, let claim = claimLoadChunk() {
                let requests = claim.map { block in
                    ReadRequest(offset: saved.payloadOffset + UInt64(block * blockBytes), length: blockBytes,
                                destination: destinations[block], tag: UInt64(block))
                }
                do { try backend.submit(requests) } catch {
                    // A batch that fails validation starts nothing; a ring that fails
                    // completes nothing more. Earlier chunks still drain below.
                    fail(.readFailed("\(error)"))
                    failed = true
                    break
                }
                inFlight.append(claim)
            }
            guard let claim = inFlight.first else { return }
            while !claim.allSatisfy({ outcomes[$0] != nil }) {
                do {
                    for c in try backend.reap(minimum: 1) { outcomes[Int(c.tag)] = .some(c.error) }
                } catch {
                    // The backend itself failed: nothing more will complete.
                    fail(.readFailed("\(error)"))
                    return
                }
            }
            inFlight.removeFirst()
            let errors = claim.compactMap { outcomes.removeValue(forKey: $0)! }
            if failed { continue }  // drain
            if let error = errors.first {
                fail(.readFailed(error.description))
                failed = true
                continue
            }
            for block in claim {
                var crc = CRC32()
                crc.update(UnsafeRawBufferPointer(start: destinations[block], count: blockBytes))
                guard crc.value == saved.checksums[block] else {
                    let first = block * blockSize
                    fail(.blockChecksumMismatch(block: block, positions: first..<min(first + blockSize, saved.count)))
                    failed = true
                    break
                }
            }
            if failed { continue }
            let elapsed = (clock.now - started).seconds
            frontier.withLock { f in
                f.loadedBlocks += claim.count
                f.loadSeconds = elapsed
                f.outcome.bytesRead += claim.count * blockBytes
            }
        }
    }

    /// The next blocks to read, from the top down, not below what the model computes.
    private func claimLoadChunk() -> Range<Int>? {
        frontier.withLock { f in
            let floor = (f.computeEnd + blockSize - 1) / blockSize
            guard !f.stopped, f.outcome.error == nil, f.loadStart > floor else { return nil }
            let low = max(floor, f.loadStart - chunkBlocks)
            defer { f.loadStart = low }
            return low..<f.loadStart
        }
    }

    private func fail(_ problem: SessionFileError.Problem) {
        frontier.withLock { f in
            if f.outcome.error == nil { f.outcome.error = SessionFileError(path: saved.path, problem: problem) }
        }
    }
}
