import Testing
@testable import Host

@Suite("Compute placement")
struct ComputePlacementTests {
    @Test("CPU lists parse as --cpus documents")
    func cpuLists() throws {
        #expect(try ComputePlacement.parseCPUList("0-2,5") == [0, 1, 2, 5])
        #expect(try ComputePlacement.parseCPUList("3, 1-2,3") == [1, 2, 3])
        #expect(throws: HostError.unreadableCPUList("3-1")) { _ = try ComputePlacement.parseCPUList("3-1") }
        #expect(throws: HostError.unreadableCPUList("x")) { _ = try ComputePlacement.parseCPUList("x") }
        #expect(HostError.unreadableCPUList("x").description == "cannot read CPU list 'x' (expected e.g. 0-3,6)")
    }

    @Test("the process may use at least one CPU, and no more than it is allowed")
    func usableCPUs() throws {
        let allowed = ComputePlacement.allowedCPUs
        #expect(!allowed.isEmpty)
        #expect(ComputePlacement.usableCPUCount >= 1)
        #expect(ComputePlacement.usableCPUCount <= allowed.count)
        if let node = ComputePlacement.computeNode { #expect(node >= 0) }
    }

    @Test("an empty CPU list is refused before the kernel is asked")
    func emptyRestriction() {
        #expect(throws: HostError.noCPUs) { try ComputePlacement.restrict(to: []) }
    }
}
