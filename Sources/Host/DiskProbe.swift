import Storage

/// A short measurement of the device's read bandwidth on a file itself: 1 MiB O_DIRECT
/// reads at random places between `offset` and the end of the file, 16 in flight (what the
/// expert loader does at its best), 256 MiB in all. It reads through the project's storage
/// backend, so it measures the path the loader takes.
public enum DiskProbe {
    /// Bytes per second, or nil when the file is too short past `offset`, a read fails, or
    /// the backend has reads in flight.
    public static func sequentialBandwidth(_ backend: any StorageBackend, from offset: UInt64) -> Double? {
        let size = 1 << 20, depth = 16, total = 256
        guard backend.pending == 0, let buffer = try? AlignedBuffer(byteCount: size * depth) else { return nil }
        let first = offset & ~UInt64(4095)
        guard backend.fileSize > first + UInt64(size) else { return nil }
        let span = (backend.fileSize - first - UInt64(size)) / UInt64(size)
        var rng = SystemRandomNumberGenerator()
        func request(_ i: Int) -> ReadRequest {
            let block = span > 0 ? UInt64.random(in: 0..<span, using: &rng) : 0
            return ReadRequest(offset: first + block * UInt64(size), length: size,
                               destination: buffer.baseAddress + (i % depth) * size, tag: UInt64(i % depth))
        }
        let start = ContinuousClock.now
        do {
            try backend.submit((0..<depth).map(request))
            var issued = depth, done = 0
            while done < total {
                let completions = try backend.reap(minimum: 1)
                if completions.contains(where: { $0.error != nil }) { _ = try? backend.reap(minimum: backend.pending); return nil }
                done += completions.count
                let more = min(completions.count, total - issued)
                if more > 0 {
                    try backend.submit(completions.prefix(more).map { request(Int($0.tag)) })
                    issued += more
                }
            }
        } catch {
            while backend.pending > 0, (try? backend.reap(minimum: 1)) != nil {}
            return nil
        }
        let elapsed = (ContinuousClock.now - start).components
        let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) * 1e-18
        return seconds > 0 ? Double(size * total) / seconds : nil
    }
}
