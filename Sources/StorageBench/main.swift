// storage-bench: sequential or random read throughput of a Storage backend, in the
// same shape as fio (fixed block size, fixed number of requests in flight, each block
// of the file read once), so tools/bench-storage.sh can compare the two.
//
//   storage-bench FILE [BS] [seq|rand] [QD] [io_uring|pread|auto] [options]
//     BS         request size: 4096, 512K, 1M, 4M... (default 1M)
//     QD         requests kept in flight (default 8)
//   options:
//     --limit N  read at most N bytes (K/M/G suffixes) instead of the whole file
//     --buffered no O_DIRECT
//     --no-register   don't register the destination buffers (no READ_FIXED)
//     --no-hugepages  don't advise transparent huge pages for the destination buffers
//     --chunk N  backend chunk size (default: the backend's)
//     --seed N   shuffle seed for rand (default 1)
//
// Prints one line: `storage-bench backend=... pattern=... bs=... qd=... bytes=... seconds=... GBps=...`
// (GB = 10^9 bytes). Exit status 1 on any read error, 2 on bad arguments.
import Storage
#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var path = ""
    var blockSize = 1 << 20
    var random = false
    var queueDepth = 8
    var backend: StorageBackendPreference = .automatic
    var limit: UInt64?
    var direct = true
    var register = true
    var hugePages = true
    var prefault = true
    var chunk: Int?
    var seed: UInt64 = 1
}

func fail(_ message: String, code: Int32 = 2) -> Never {
    let line = Array("storage-bench: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(code)
}

/// "4096", "512K", "1M", "4G" (binary multiples).
func parseSize(_ text: String) -> UInt64? {
    guard let last = text.last else { return nil }
    let shifts: [Character: UInt64] = ["K": 10, "k": 10, "M": 20, "m": 20, "G": 30, "g": 30]
    if let shift = shifts[last] {
        guard let n = UInt64(text.dropLast()), n <= (UInt64.max >> shift) else { return nil }
        return n << shift
    }
    return UInt64(text)
}

func parseArguments() -> Options {
    var o = Options()
    var positional: [String] = []
    var args = CommandLine.arguments.dropFirst()
    func value(_ flag: String) -> String {
        guard let v = args.popFirst() else { fail("\(flag) needs a value") }
        return v
    }
    while let a = args.popFirst() {
        switch a {
        case "--limit":
            guard let v = parseSize(value(a)) else { fail("bad --limit") }
            o.limit = v
        case "--buffered": o.direct = false
        case "--no-register": o.register = false
        case "--no-hugepages": o.hugePages = false
        case "--no-prefault": o.prefault = false
        case "--chunk":
            guard let v = parseSize(value(a)), v >= 4096, v <= 1 << 30 else { fail("bad --chunk") }
            o.chunk = Int(v)
        case "--seed":
            guard let v = UInt64(value(a)) else { fail("bad --seed") }
            o.seed = v
        case "-h", "--help":
            print("usage: storage-bench FILE [BS] [seq|rand] [QD] [io_uring|pread|auto] [--limit N] [--buffered] [--no-register] [--no-hugepages] [--chunk N] [--seed N]")
            exit(0)
        default:
            if a.hasPrefix("--") { fail("unknown option \(a)") }
            positional.append(a)
        }
    }
    guard !positional.isEmpty, positional.count <= 5 else { fail("usage: storage-bench FILE [BS] [seq|rand] [QD] [BACKEND]") }
    o.path = positional[0]
    if positional.count > 1 {
        guard let bs = parseSize(positional[1]), bs >= 512, bs <= 1 << 30 else { fail("bad block size \(positional[1])") }
        o.blockSize = Int(bs)
    }
    if positional.count > 2 {
        switch positional[2] {
        case "seq", "read": o.random = false
        case "rand", "randread": o.random = true
        default: fail("pattern must be seq or rand")
        }
    }
    if positional.count > 3 {
        guard let qd = Int(positional[3]), qd >= 1, qd <= 1024 else { fail("bad queue depth \(positional[3])") }
        o.queueDepth = qd
    }
    if positional.count > 4 {
        guard let b = StorageBackendPreference(parsing: positional[4]) else { fail("backend must be io_uring, pread or auto") }
        o.backend = b
    }
    return o
}

/// SplitMix64, for a reproducible shuffle without Foundation.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func openBackend(_ o: Options, queueDepth: Int, chunk: Int) throws(StorageError) -> any StorageBackend {
    let choice = try StorageFile.resolve(o.backend)
    if choice == .pread {
        return try PReadBackend(path: o.path, direct: o.direct, queueDepth: queueDepth, chunkSize: chunk)
    }
    do {
        return try IOUringBackend(path: o.path, direct: o.direct, queueDepth: queueDepth, chunkSize: chunk)
    } catch {
        guard choice == .automatic, case .ioUringUnavailable = error else { throw error }
        return try PReadBackend(path: o.path, direct: o.direct, queueDepth: queueDepth, chunkSize: chunk)
    }
}

func fixed(_ x: Double, _ digits: Int) -> String {
    // Avoids Foundation's String(format:) for one number.
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    var t = "\((x * scale).rounded() / scale)"
    if let dot = t.firstIndex(of: ".") {
        let decimals = t.distance(from: dot, to: t.endIndex) - 1
        if decimals < digits { t += String(repeating: "0", count: digits - decimals) }
    }
    return t
}

func run(_ o: Options) throws {
    let bs = o.blockSize
    // Enough ring entries for QD whole requests even when the backend splits them.
    let chunk = o.chunk ?? IOUringBackend.defaultChunkSize
    let sqesPerRequest = (bs + chunk - 1) / chunk
    let backend = try openBackend(o, queueDepth: o.queueDepth * sqesPerRequest, chunk: chunk)
    var total = backend.fileSize
    if let limit = o.limit { total = min(total, limit) }
    let blocks = Int(total / UInt64(bs))
    guard blocks > 0 else { fail("file smaller than one block (\(backend.fileSize) bytes)") }

    var order = Array(0..<blocks)
    if o.random {
        var rng = SplitMix64(state: o.seed)
        order.shuffle(using: &rng)
    }
    let slots = min(o.queueDepth, blocks)
    let buffers = try AlignedBuffer(byteCount: slots * bs, adviseHugePages: o.hugePages)
    if o.prefault { buffers.prefault() }  // keep first-touch page faults out of the timing
    if o.register { try backend.registerBuffers([buffers.bytes]) }

    var next = 0
    let base = buffers.baseAddress
    let clock = ContinuousClock()
    let start = clock.now
    var batch: [ReadRequest] = []
    batch.reserveCapacity(slots)
    for s in 0..<slots {
        batch.append(ReadRequest(offset: UInt64(order[next]) * UInt64(bs), length: bs, destination: base + s * bs, tag: UInt64(s)))
        next += 1
    }
    try backend.submit(batch)
    var done = 0
    while done < blocks {
        let completions = try backend.reap(minimum: 1)
        batch.removeAll(keepingCapacity: true)
        for c in completions {
            if let e = c.error { fail("\(e)", code: 1) }
            done += 1
            if next < blocks {
                batch.append(ReadRequest(offset: UInt64(order[next]) * UInt64(bs), length: bs,
                                         destination: base + Int(c.tag) * bs, tag: c.tag))
                next += 1
            }
        }
        if !batch.isEmpty { try backend.submit(batch) }
    }
    let elapsed = clock.now - start
    let (s, atto) = elapsed.components
    let seconds = Double(s) + Double(atto) / 1e18
    let bytes = UInt64(blocks) * UInt64(bs)
    let gbps = Double(bytes) / seconds / 1e9
    print("storage-bench backend=\(backend.kind.rawValue) direct=\(backend.isDirect) pattern=\(o.random ? "rand" : "seq") bs=\(bs) qd=\(o.queueDepth) bytes=\(bytes) seconds=\(fixed(seconds, 3)) GBps=\(fixed(gbps, 3))")
}

let options = parseArguments()
do {
    try run(options)
} catch {
    fail("\(error)", code: 1)
}
