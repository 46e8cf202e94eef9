import Storage
import Testing
import Host

@Suite("Disk probe")
struct DiskProbeTests {
    @Test("measures reads past the offset; nil where less than one read remains")
    func bandwidth() throws {
        let backend = MemoryBackend(bytes: [UInt8](repeating: 7, count: 4 << 20))
        let measured = try #require(DiskProbe.sequentialBandwidth(backend, from: 4096 + 100))
        #expect(measured > 0)
        #expect(backend.pending == 0)
        #expect(DiskProbe.sequentialBandwidth(backend, from: 3 << 20 + 1) == nil)
    }
}
