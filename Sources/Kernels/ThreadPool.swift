#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Host
import Synchronization

/// A fixed set of worker threads for data-parallel loops with very low dispatch latency.
///
/// A decoded token makes hundreds of `parallelFor` calls, each only a few microseconds of
/// work, so workers do not block on a lock per task: after a dispatch they spin (with
/// `pause`) on a generation counter for a while (`spinDuration`) and only then sleep on a
/// condition variable. The caller publishes the loop body, bumps the generation, wakes
/// sleepers only if there are any, takes part in the loop itself, then spins until every
/// worker has checked out. Indices are claimed one at a time from a shared atomic counter,
/// so uneven iterations balance themselves; keep each iteration at least a microsecond or so.
///
/// Reentrancy: a `parallelFor` issued while the pool is already running one (from inside a
/// body, or concurrently from another thread) does not deadlock: it runs all its iterations
/// serially on the calling thread.
public final class ThreadPool: @unchecked Sendable {
    /// The number of CPUs this process may run on (`ComputePlacement.usableCPUCount`: its
    /// affinity mask and cgroup CPU quota).
    public static var defaultThreadCount: Int { ComputePlacement.usableCPUCount }

    /// Threads that run loop iterations, the calling thread included.
    public let threadCount: Int

    /// How long an idle worker spins before it sleeps, in nanoseconds.
    public var spinDuration: UInt64 {
        get { state.spinNanoseconds }
        set { state.spinNanoseconds = newValue }
    }

    private let state: PoolState
    private var threads: [pthread_t] = []

    public init(threadCount: Int = ThreadPool.defaultThreadCount) {
        precondition(threadCount >= 1, "a pool needs at least one thread")
        self.threadCount = threadCount
        self.state = PoolState(workers: threadCount - 1)
        for index in 0..<(threadCount - 1) {
            let context = Unmanaged.passRetained(WorkerContext(state: state, index: index)).toOpaque()
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let ctx = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                ctx.state.workerLoop(thread: ctx.index + 1)
                return nil
            }, context)
            precondition(rc == 0, "pthread_create failed: \(rc)")
            threads.append(thread)
        }
    }

    deinit {
        state.shutdown()
        for thread in threads { pthread_join(thread, nil) }
    }

    /// Runs `body(i)` for every `i` in `0..<count`, spread over the workers and the calling
    /// thread; returns when all iterations are done. Iterations must be independent.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        parallelForWithThread(count) { i, _ in body(i) }
    }

    /// Like `parallelFor`, but also passes the index (0..<threadCount) of the thread running
    /// the iteration, for per-thread scratch memory. The calling thread is 0. When the call
    /// runs serially (one thread, one iteration, nested or concurrent use) every iteration
    /// gets thread index 0.
    public func parallelForWithThread(_ count: Int, _ body: (_ index: Int, _ thread: Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threadCount == 1 || !state.tryAcquire() {
            for i in 0..<count { body(i, 0) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            state.run(count: count, body: escapable)
        }
        state.release()
    }

    // MARK: scratch memory for kernels

    private let scratchBusy = Atomic<Bool>(false)
    private let scratch = KernelScratch()

    /// Runs `body` with the pool's reusable scratch arenas, or with temporary ones when the
    /// pool's are in use (nested or concurrent callers).
    func withScratch<R>(_ body: (KernelScratch) -> R) -> R {
        if scratchBusy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
            defer { scratchBusy.store(false, ordering: .releasing) }
            return body(scratch)
        }
        let temp = KernelScratch()
        return body(temp)
    }

}

private final class WorkerContext {
    let state: PoolState
    let index: Int
    init(state: PoolState, index: Int) { self.state = state; self.index = index }
}

/// A spin-wait step. (`_mm_pause` is a compiler builtin that Swift's importer turns into a
/// call to a nonexistent symbol, and Swift has no inline assembly, so this is a plain
/// relaxed re-check; the atomic load in the loop keeps it from being optimized away.)
@inline(__always)
func spinPause() {}

@inline(__always)
private func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Shared state between the pool and its workers (the workers retain this, not the pool,
/// so dropping the pool shuts them down).
private final class PoolState: @unchecked Sendable {
    let workers: Int
    /// Bumped once per dispatch; workers wait for it to change. Odd values are never used
    /// specially; `Int.max` would take ~forever to reach.
    let generation = Atomic<Int>(0)
    /// Next iteration index to claim.
    let next = Atomic<Int>(0)
    /// Workers that have not yet finished the current dispatch.
    let pending = Atomic<Int>(0)
    /// Workers that are (about to be) blocked on the condition variable.
    let sleepers = Atomic<Int>(0)
    /// Set while a dispatch is in flight, so nested or concurrent calls run serially.
    let busy = Atomic<Bool>(false)
    let stopping = Atomic<Bool>(false)
    /// The loop body and count of the current dispatch (written before `generation` is
    /// bumped, read by workers after they observe the bump).
    let body: UnsafeMutablePointer<((Int, Int) -> Void)?>
    let countBox: UnsafeMutablePointer<Int>
    let mutex: UnsafeMutablePointer<pthread_mutex_t>
    let cond: UnsafeMutablePointer<pthread_cond_t>
    var spinNanoseconds: UInt64 = 2_000_000

    init(workers: Int) {
        self.workers = workers
        body = .allocate(capacity: 1)
        body.initialize(to: nil)
        countBox = .allocate(capacity: 1)
        countBox.initialize(to: 0)
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
        body.deinitialize(count: 1)
        body.deallocate()
        countBox.deallocate()
    }

    @inline(__always)
    func tryAcquire() -> Bool {
        busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
    }

    @inline(__always)
    func release() {
        busy.store(false, ordering: .releasing)
    }

    func run(count: Int, body: @escaping (Int, Int) -> Void) {
        self.body.pointee = body
        countBox.pointee = count
        next.store(0, ordering: .relaxed)
        pending.store(workers, ordering: .relaxed)
        // Sequentially consistent: either a worker going to sleep sees the new generation, or
        // we see its sleepers increment and wake it.
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(cond)
            pthread_mutex_unlock(mutex)
        }
        // The calling thread works too.
        while true {
            let i = next.add(1, ordering: .relaxed).oldValue
            if i >= count { break }
            body(i, 0)
        }
        // Wait for the workers to check out of this dispatch. Past a short spin, yield the
        // CPU each round: if the machine is oversubscribed, the worker we wait for may be
        // waiting for a core.
        var spins = 0
        while pending.load(ordering: .acquiring) != 0 {
            spins &+= 1
            if spins > 1024 { sched_yield() } else { spinPause() }
        }
        self.body.pointee = nil
    }

    func shutdown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Claims and runs iterations of the current dispatch; the worker's copy of the body is
    /// released before this returns (so before the worker checks out).
    @inline(never)
    func drain(thread: Int) {
        let count = countBox.pointee
        guard let body = body.pointee else { return }
        while true {
            let i = next.add(1, ordering: .relaxed).oldValue
            if i >= count { break }
            body(i, thread)
        }
    }

    func workerLoop(thread: Int) {
        // Generation 0 is the pool's initial state: a dispatch may bump it before this
        // thread first runs, so start from 0 rather than from whatever is current.
        var seen = 0
        while true {
            // Wait for a new generation: spin first, then sleep.
            var current = generation.load(ordering: .acquiring)
            if current == seen {
                let start = monotonicNanoseconds()
                var spins = 0
                while true {
                    spinPause()
                    current = generation.load(ordering: .acquiring)
                    if current != seen { break }
                    spins &+= 1
                    if spins & 255 == 0 {
                        if monotonicNanoseconds() &- start > spinNanoseconds { break }
                        // Let other runnable threads (a dispatcher, or a sibling worker
                        // still finishing) have the core when there are more threads than cores.
                        if spins > 2048 { sched_yield() }
                    }
                }
                if current == seen {
                    pthread_mutex_lock(mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while true {
                        current = generation.load(ordering: .sequentiallyConsistent)
                        if current != seen { break }
                        pthread_cond_wait(cond, mutex)
                    }
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    pthread_mutex_unlock(mutex)
                }
            }
            seen = current
            if stopping.load(ordering: .acquiring) { return }
            drain(thread: thread)
            pending.subtract(1, ordering: .releasing)
        }
    }
}

/// Scratch memory of one kernel call: a small arena for planning, a large one for data.
final class KernelScratch {
    var plan = ScratchArena()
    var data = ScratchArena()
    deinit {
        plan.free()
        data.free()
    }
}

/// A growable 64-byte-aligned buffer.
struct ScratchArena {
    private(set) var base: UnsafeMutableRawPointer?
    private(set) var capacity = 0

    mutating func reserve(_ bytes: Int) {
        if bytes <= capacity, base != nil { return }
        base?.deallocate()
        capacity = max(roundUp(bytes, 4096), 64 * 1024)
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
    }

    func free() { base?.deallocate() }
}
