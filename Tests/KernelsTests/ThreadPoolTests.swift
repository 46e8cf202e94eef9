#if canImport(Glibc)
import Glibc
#endif
@testable import Kernels
import Synchronization
import Testing

@Suite struct ThreadPoolTests {
    @Test(arguments: [1, 2, 4])
    func everyIndexRunsExactlyOnce(threads: Int) {
        let pool = ThreadPool(threadCount: threads)
        #expect(pool.threadCount == threads)
        for count in [0, 1, 2, 3, 17, 1000] {
            let hits = UnsafeMutablePointer<Int>.allocate(capacity: max(count, 1))
            hits.initialize(repeating: 0, count: max(count, 1))
            defer { hits.deallocate() }
            pool.parallelFor(count) { i in hits[i] += 1 }
            for i in 0..<count { #expect(hits[i] == 1, "index \(i) of \(count) ran \(hits[i]) times") }
        }
    }

    @Test func threadIndicesAreInRange() {
        let pool = ThreadPool(threadCount: 3)
        let seen = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        seen.initialize(repeating: -1, count: 64)
        defer { seen.deallocate() }
        pool.parallelForWithThread(64) { i, thread in seen[i] = thread }
        for i in 0..<64 { #expect((0..<3).contains(seen[i])) }
    }

    @Test func manyBackToBackDispatches() {
        let pool = ThreadPool(threadCount: 3)
        let total = Atomic<Int>(0)
        for round in 0..<5_000 {
            let n = 1 + round % 7
            pool.parallelFor(n) { i in total.add(i + 1, ordering: .relaxed) }
        }
        var expected = 0
        for round in 0..<5_000 { let n = 1 + round % 7; expected += n * (n + 1) / 2 }
        #expect(total.load(ordering: .relaxed) == expected)
    }

    /// A parallelFor issued from inside a body runs serially on that thread, and completes.
    @Test func nestedCallsRunInline() {
        let pool = ThreadPool(threadCount: 2)
        let total = Atomic<Int>(0)
        pool.parallelFor(8) { _ in
            pool.parallelFor(10) { j in total.add(j, ordering: .relaxed) }
        }
        #expect(total.load(ordering: .relaxed) == 8 * 45)
    }

    /// Two threads using the same pool at once: one gets the workers, the other runs inline.
    @Test func concurrentCallers() {
        let pool = ThreadPool(threadCount: 2)
        final class Box: @unchecked Sendable {
            let pool: ThreadPool
            let total = Atomic<Int>(0)
            init(_ p: ThreadPool) { pool = p }
        }
        let box = Box(pool)
        var thread = pthread_t()
        let ctx = Unmanaged.passRetained(box).toOpaque()
        pthread_create(&thread, nil, { raw in
            let b = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            for _ in 0..<2000 { b.pool.parallelFor(4) { _ in b.total.add(1, ordering: .relaxed) } }
            return nil
        }, ctx)
        for _ in 0..<2000 { pool.parallelFor(4) { _ in box.total.add(1, ordering: .relaxed) } }
        pthread_join(thread, nil)
        #expect(box.total.load(ordering: .relaxed) == 2 * 2000 * 4)
    }

    /// Workers fall asleep after the spin period and wake for the next dispatch.
    @Test func wakesAfterSleeping() {
        let pool = ThreadPool(threadCount: 3)
        pool.spinDuration = 100_000 // 0.1 ms
        let total = Atomic<Int>(0)
        for _ in 0..<5 {
            usleep(5_000)
            pool.parallelFor(100) { _ in total.add(1, ordering: .relaxed) }
        }
        #expect(total.load(ordering: .relaxed) == 500)
    }

    @Test func defaultThreadCountIsPositive() {
        #expect(ThreadPool.defaultThreadCount >= 1)
    }

    @Test func poolsShutDown() {
        for _ in 0..<20 {
            let pool = ThreadPool(threadCount: 3)
            pool.parallelFor(10) { _ in }
        }
    }
}
