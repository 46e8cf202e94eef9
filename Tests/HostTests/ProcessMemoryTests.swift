import Testing
import Host

@Suite("Process memory")
struct ProcessMemoryTests {
    @Test("the peak resident set is at least the current one")
    func residentSet() {
        let current = ProcessMemory.residentBytes()
        #expect(current > 0)
        #expect(ProcessMemory.peakResidentBytes() >= current)
    }
}
