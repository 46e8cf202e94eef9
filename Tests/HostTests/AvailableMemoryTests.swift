import Foundation
import Testing
import TestSupport
@testable import Host

/// The automatic budget's view of cgroup limits, on made-up cgroup trees.
@Suite("Available memory")
struct AvailableMemoryTests {
    func tree(_ files: [String: String]) throws -> TemporaryDirectory {
        let dir = try TemporaryDirectory()
        for (path, text) in files {
            let url = dir.url.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        return dir
    }

    @Test("cgroup v2: the tightest room over the group and its ancestors")
    func v2() throws {
        let dir = try tree([
            "memory.max": "max\n",
            "a/memory.max": "2000000000\n", "a/memory.current": "500000000\n",
            "a/b/memory.max": "max\n", "a/b/memory.current": "100000000\n",
            "a/b/c/memory.max": "838860800\n", "a/b/c/memory.current": "104857600\n",
        ])
        defer { dir.remove() }
        let m = AvailableMemory.cgroupMemory(root: dir.url.path, membership: "0::/a/b/c\n")
        #expect(m?.0 == 838_860_800 && m?.1 == 104_857_600)
        // An ancestor with less room wins.
        try "1000000000\n".write(to: dir.url.appendingPathComponent("a/memory.max"), atomically: true, encoding: .utf8)
        let n = AvailableMemory.cgroupMemory(root: dir.url.path, membership: "0::/a/b/c\n")
        #expect(n?.0 == 1_000_000_000 && n?.1 == 500_000_000)
    }

    @Test("cgroup v1: the group's limit or the hierarchical one, whichever is tighter")
    func v1() throws {
        let dir = try tree([
            "memory/job/memory.limit_in_bytes": "9223372036854771712\n",
            "memory/job/memory.usage_in_bytes": "52428800\n",
            "memory/job/memory.stat": "cache 0\nhierarchical_memory_limit 838860800\nrss 1\n",
        ])
        defer { dir.remove() }
        let m = AvailableMemory.cgroupMemory(root: dir.url.path,
                                             membership: "9:name=systemd:/\n4:memory:/job\n0::/\n")
        #expect(m?.0 == 838_860_800 && m?.1 == 52_428_800)
    }

    @Test("no limit anywhere: nil, and the budget falls back to MemAvailable")
    func unlimited() throws {
        let dir = try tree(["memory.max": "max\n", "memory/memory.limit_in_bytes": "9223372036854771712\n",
                            "memory/memory.usage_in_bytes": "1\n"])
        defer { dir.remove() }
        #expect(AvailableMemory.cgroupMemory(root: dir.url.path, membership: "4:memory:/\n0::/\n") == nil)
        #expect(AvailableMemory.bytes() > 0)
    }
}
