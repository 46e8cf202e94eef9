// kernel-bench: throughput of the matmul kernels on the shapes of the target MoE model
// (qwen3moe-like: hidden 1024, experts of width 512, 8 of 64 experts per token).
//
//   kernel-bench [--threads N] [--types q8_0,q4_0,q4_K,q6_K,f16,f32] [--runs R] [--quick] [--mb M]
//
// --mb M sizes the weight sets to M MB (e.g. 1 to measure in-cache compute speed).
//
// Decode: per "layer", one multiply(jobs:) with the gate and up projections (512×1024) of
// 8 experts on one token, then one with their down projections (1024×512), cycling over
// enough experts (~200 MB) that the weights stream from DRAM. Reported as GB/s of weight
// bytes and the MoE-FFN-only tokens/s this implies for 16 layers.
// Prefill: 128 tokens routed 8-of-64 (16 tokens per expert): gate/up of all 64 experts in
// one call, then down; reported in GFLOP/s (2 flops per multiply-add). Also a dense
// 2048×1024 projection at 1 and 128 tokens. Medians over several runs.
#if canImport(Glibc)
import Glibc
#endif
import GGUF
import Kernels

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

struct Rng {
    var s: UInt64 = 0x1234_5678_9ABC_DEF1
    mutating func next() -> UInt64 { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s }
    mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
}

// MARK: arguments

nonisolated(unsafe) var threads = ThreadPool.defaultThreadCount
nonisolated(unsafe) var typeNames = ["q8_0", "q4_0", "q4_K", "q6_K", "f16", "f32"]
nonisolated(unsafe) var runs = 7
nonisolated(unsafe) var quick = false
nonisolated(unsafe) var megabytes = 0
nonisolated(unsafe) var micro = false
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--threads": threads = Int(args.popFirst() ?? "") ?? threads
    case "--types": typeNames = (args.popFirst() ?? "").split(separator: ",").map(String.init)
    case "--runs": runs = Int(args.popFirst() ?? "") ?? runs
    case "--quick": quick = true
    case "--micro": micro = true
    case "--mb": megabytes = Int(args.popFirst() ?? "") ?? 0
    default:
        print("usage: kernel-bench [--threads N] [--types q8_0,q4_K,...] [--runs R] [--quick] [--mb M]")
        exit(2)
    }
}
nonisolated(unsafe) let types = typeNames.compactMap { GGMLType(name: $0) }
nonisolated(unsafe) let pool = ThreadPool(threadCount: threads)

nonisolated(unsafe) let hidden = 1024, expertWidth = 512, expertsPerToken = 8, expertCount = 64, layers = 16
nonisolated(unsafe) let targetBytes = megabytes > 0 ? megabytes << 20 : (quick ? 64 << 20 : 224 << 20)

/// Fills `bytes` with a valid random row of `type` (quantizing random floats once and
/// repeating that row keeps setup fast).
func fillMatrix(_ type: GGMLType, rows: Int, columns: Int, into base: UnsafeMutableRawPointer, rng: inout Rng) {
    let rowBytes = columns / type.blockSize * type.bytesPerBlock
    var values = [Float](repeating: 0, count: columns)
    let distinct = 8
    let proto = UnsafeMutableRawPointer.allocate(byteCount: rowBytes * distinct, alignment: 64)
    defer { proto.deallocate() }
    for k in 0..<distinct {
        for c in 0..<columns { values[c] = rng.float() * 0.1 }
        Quantize.row(type, from: values, to: proto + k * rowBytes, count: columns)
    }
    for r in 0..<rows {
        (base + r * rowBytes).copyMemory(from: proto + (r % distinct) * rowBytes, byteCount: rowBytes)
    }
}

// MARK: memory bandwidth reference (read-only, all threads)

func readBandwidth() -> Double {
    let bytes = targetBytes
    let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
    defer { buf.deallocate() }
    memset(buf, 1, bytes)
    let chunks = 64
    let chunk = bytes / chunks
    let sink = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: chunks)
    defer { sink.deallocate() }
    var times = [Double]()
    for _ in 0..<max(3, runs / 2) {
        let t0 = now()
        pool.parallelFor(chunks) { c in
            let p = buf + c * chunk
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var o = 0
            while o < chunk {
                a0 += p.load(fromByteOffset: o, as: SIMD8<Float>.self)
                a1 += p.load(fromByteOffset: o + 32, as: SIMD8<Float>.self)
                a2 += p.load(fromByteOffset: o + 64, as: SIMD8<Float>.self)
                a3 += p.load(fromByteOffset: o + 96, as: SIMD8<Float>.self)
                o += 128
            }
            sink[c] = a0 + a1 + a2 + a3
        }
        times.append(now() - t0)
    }
    return Double(bytes) / median(times) / 1e9
}

// MARK: benchmarks

struct Experts {
    let type: GGMLType
    let count: Int
    let gateUp: [WeightMatrix]   // 2 per expert
    let down: [WeightMatrix]
    let storage: UnsafeMutableRawPointer
    let bytesPerExpert: Int
}

func makeExperts(_ type: GGMLType, count: Int) -> Experts {
    let gateBytes = expertWidth * (hidden / type.blockSize * type.bytesPerBlock)
    let downBytes = hidden * (expertWidth / type.blockSize * type.bytesPerBlock)
    let per = 2 * gateBytes + downBytes
    let storage = UnsafeMutableRawPointer.allocate(byteCount: per * count, alignment: 4096)
    var rng = Rng()
    var gu = [WeightMatrix](), dn = [WeightMatrix]()
    for e in 0..<count {
        let base = storage + e * per
        fillMatrix(type, rows: expertWidth, columns: hidden, into: base, rng: &rng)
        fillMatrix(type, rows: expertWidth, columns: hidden, into: base + gateBytes, rng: &rng)
        fillMatrix(type, rows: hidden, columns: expertWidth, into: base + 2 * gateBytes, rng: &rng)
        gu.append(WeightMatrix(type: type, rows: expertWidth, columns: hidden, base: base))
        gu.append(WeightMatrix(type: type, rows: expertWidth, columns: hidden, base: base + gateBytes))
        dn.append(WeightMatrix(type: type, rows: hidden, columns: expertWidth, base: base + 2 * gateBytes))
    }
    return Experts(type: type, count: count, gateUp: gu, down: dn, storage: storage, bytesPerExpert: per)
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
func fmt(_ x: Double, _ digits: Int = 1) -> String {
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let v = (x * p).rounded() / p
    return "\(v)"
}

// --micro: in-L2 single-token speed (256 rows × 1024 columns, one thread): ns per 32 weights.
if micro {
    let one = ThreadPool(threadCount: 1)
    let xs = UnsafeMutablePointer<Float>.allocate(capacity: 1024)
    let ys = UnsafeMutablePointer<Float>.allocate(capacity: 256)
    let xs16 = UnsafeMutablePointer<Float>.allocate(capacity: 16 * 1024)
    let ys16 = UnsafeMutablePointer<Float>.allocate(capacity: 16 * 256)
    var rng = Rng()
    for i in 0..<1024 { xs[i] = rng.float() }
    for i in 0..<(16 * 1024) { xs16[i] = rng.float() }
    for type in types {
        let rowBytes = 1024 / type.blockSize * type.bytesPerBlock
        let mem = UnsafeMutableRawPointer.allocate(byteCount: 256 * rowBytes, alignment: 64)
        fillMatrix(type, rows: 256, columns: 1024, into: mem, rng: &rng)
        let m = WeightMatrix(type: type, rows: 256, columns: 1024, base: mem)
        var best = Double.infinity
        for _ in 0..<5 {
            let t0 = now()
            for _ in 0..<2000 { MatMul.multiply(m, input: xs, tokens: 1, output: ys, pool: one) }
            best = min(best, (now() - t0) / 2000)
        }
        var bestP = Double.infinity
        for _ in 0..<5 {
            let t0 = now()
            for _ in 0..<50 { MatMul.multiply(m, input: xs16, tokens: 16, output: ys16, pool: one) }
            bestP = min(bestP, (now() - t0) / 50)
        }
        let gflops = 2.0 * 16 * 256 * 1024 / bestP / 1e9
        let ns = best * 1e9 / Double(256 * 32)
        print("\(pad(type.name, 6)) \(fmt(ns, 2)) ns per 32 weights, \(fmt(Double(256 * rowBytes) / best / 1e9)) GB/s in L2; 16 tokens: \(fmt(gflops)) GFLOP/s")
        mem.deallocate()
    }
    // Fixed cost of a call: a 4×256 Q8_0 product, alone and as 16 jobs in one call.
    let tinyBytes = 4 * (256 / 32 * 34)
    let tinyMem = UnsafeMutableRawPointer.allocate(byteCount: 16 * tinyBytes, alignment: 64)
    fillMatrix(.q8_0, rows: 64, columns: 256, into: tinyMem, rng: &rng)
    let tiny = (0..<16).map { WeightMatrix(type: .q8_0, rows: 4, columns: 256, base: tinyMem + $0 * tinyBytes) }
    for p in [one, pool] {
        var best1 = Double.infinity, best16 = Double.infinity
        let jobs = tiny.enumerated().map { MatMulJob(weight: $0.1, input: xs, tokens: 1, output: ys + 4 * $0.0) }
        for _ in 0..<5 {
            var t0 = now()
            for _ in 0..<20000 { MatMul.multiply(tiny[0], input: xs, tokens: 1, output: ys, pool: p) }
            best1 = min(best1, (now() - t0) / 20000)
            t0 = now()
            for _ in 0..<20000 { MatMul.multiply(jobs, pool: p) }
            best16 = min(best16, (now() - t0) / 20000)
        }
        print("call overhead, \(p.threadCount) thread(s): 4×256 q8_0 \(fmt(best1 * 1e6, 2)) µs, 16 such jobs in one call \(fmt(best16 * 1e6, 2)) µs")
    }
    exit(0)
}

print("kernel-bench: \(threads) threads, runs \(runs)")
let bw = readBandwidth()
print("memory read bandwidth (\(threads) threads, \(targetBytes >> 20) MB): \(fmt(bw)) GB/s")
print("")
print(pad("type", 6), pad("decode GB/s", 12), pad("FFN tok/s", 10), pad("prefill GFLOP/s", 16),
      pad("dense1 GB/s", 12), pad("dense128 GFLOP/s", 17))

let x = UnsafeMutablePointer<Float>.allocate(capacity: 128 * 4096)
let y = UnsafeMutablePointer<Float>.allocate(capacity: 128 * 4096 * 2 * 8)
let mid = UnsafeMutablePointer<Float>.allocate(capacity: 128 * 4096 * 2 * 8)
do {
    var rng = Rng()
    for i in 0..<(128 * 4096) { x[i] = rng.float() }
    for i in 0..<(128 * 4096 * 16) { mid[i] = rng.float() }
}

for type in types {
    guard MatMul.supports(type) else { print("\(type): unsupported"); continue }
    let rowBytes = hidden / type.blockSize * type.bytesPerBlock
    let perExpert = 3 * expertWidth * rowBytes
    let count = max(megabytes > 0 ? 8 : 16, min(1024, targetBytes / perExpert))
    let experts = makeExperts(type, count: count)
    defer { experts.storage.deallocate() }

    // Decode: one layer = gate/up of 8 experts (shared input), then down of 8 experts.
    var cursor = 0
    func decodeLayer() {
        var jobs = [MatMulJob]()
        jobs.reserveCapacity(16)
        let first = cursor
        for k in 0..<expertsPerToken {
            let e = (first + k) % count
            jobs.append(MatMulJob(weight: experts.gateUp[2 * e], input: x, tokens: 1, output: y + k * 2 * expertWidth))
            jobs.append(MatMulJob(weight: experts.gateUp[2 * e + 1], input: x, tokens: 1,
                                  output: y + k * 2 * expertWidth + expertWidth))
        }
        MatMul.multiply(jobs, pool: pool)
        jobs.removeAll(keepingCapacity: true)
        for k in 0..<expertsPerToken {
            let e = (first + k) % count
            jobs.append(MatMulJob(weight: experts.down[e], input: mid + k * expertWidth, tokens: 1, output: y + 16 * hidden + k * hidden))
        }
        MatMul.multiply(jobs, pool: pool)
        cursor = (cursor + expertsPerToken) % count
    }
    let layersPerRun = max(count / expertsPerToken, 32)
    for _ in 0..<layersPerRun { decodeLayer() }  // warm-up
    var decodeTimes = [Double]()
    for _ in 0..<runs {
        let t0 = now()
        for _ in 0..<layersPerRun { decodeLayer() }
        decodeTimes.append((now() - t0) / Double(layersPerRun))
    }
    let layerTime = median(decodeTimes)
    let decodeGBs = Double(expertsPerToken * perExpert) / layerTime / 1e9
    let ffnTokens = 1 / (layerTime * Double(layers))

    // Prefill: 64 experts × 16 tokens each.
    let tokensPerExpert = 128 * expertsPerToken / expertCount
    func prefillLayer(base: Int) {
        var jobs = [MatMulJob]()
        for e in 0..<expertCount {
            let w = (base + e) % count
            let input = x + (e % 8) * tokensPerExpert * hidden
            jobs.append(MatMulJob(weight: experts.gateUp[2 * w], input: input, tokens: tokensPerExpert,
                                  output: y + e * 2 * tokensPerExpert * expertWidth))
            jobs.append(MatMulJob(weight: experts.gateUp[2 * w + 1], input: input, tokens: tokensPerExpert,
                                  output: y + e * 2 * tokensPerExpert * expertWidth + tokensPerExpert * expertWidth))
        }
        MatMul.multiply(jobs, pool: pool)
        jobs.removeAll(keepingCapacity: true)
        for e in 0..<expertCount {
            let w = (base + e) % count
            jobs.append(MatMulJob(weight: experts.down[w], input: mid + e * tokensPerExpert * expertWidth,
                                  tokens: tokensPerExpert, output: y + e * tokensPerExpert * hidden))
        }
        MatMul.multiply(jobs, pool: pool)
    }
    prefillLayer(base: 0)
    var prefillTimes = [Double]()
    let prefillRuns = quick ? 3 : max(3, runs / 2)
    for r in 0..<prefillRuns {
        let t0 = now()
        prefillLayer(base: (r * expertCount) % count)
        prefillTimes.append(now() - t0)
    }
    let prefillFlops = 2.0 * Double(expertCount * tokensPerExpert) * Double(3 * expertWidth * hidden)
    let prefillGF = prefillFlops / median(prefillTimes) / 1e9

    // Dense 2048×1024 (attention-sized) at 1 and 128 tokens; cycle over several copies for decode.
    let denseRows = 2048
    let denseCopies = max(2, min(64, targetBytes / (denseRows * rowBytes)))
    let dense = UnsafeMutableRawPointer.allocate(byteCount: denseRows * rowBytes * denseCopies, alignment: 4096)
    defer { dense.deallocate() }
    do {
        var rng = Rng()
        fillMatrix(type, rows: denseRows * denseCopies, columns: hidden, into: dense, rng: &rng)
    }
    let denseMats = (0..<denseCopies).map {
        WeightMatrix(type: type, rows: denseRows, columns: hidden, base: dense + $0 * denseRows * rowBytes)
    }
    var dense1 = [Double]()
    for _ in 0..<runs {
        let t0 = now()
        for m in denseMats { MatMul.multiply(m, input: x, tokens: 1, output: y, pool: pool) }
        dense1.append((now() - t0) / Double(denseCopies))
    }
    let dense1GBs = Double(denseRows * rowBytes) / median(dense1) / 1e9
    var dense128 = [Double]()
    for r in 0..<max(3, runs / 2) {
        let t0 = now()
        MatMul.multiply(denseMats[r % denseCopies], input: x, tokens: 128, output: y, pool: pool)
        dense128.append(now() - t0)
    }
    let dense128GF = 2.0 * 128 * Double(denseRows * hidden) / median(dense128) / 1e9

    print(pad(type.name, 6), pad(fmt(decodeGBs), 12), pad(fmt(ffnTokens, 0), 10), pad(fmt(prefillGF), 16),
          pad(fmt(dense1GBs), 12), pad(fmt(dense128GF), 17))
}

// Dispatch latency: an empty parallelFor (median and best of 5 batches).
do {
    var times = [Double]()
    for _ in 0..<5 {
        let n = 20000
        let t0 = now()
        for _ in 0..<n { pool.parallelFor(threads) { _ in } }
        times.append((now() - t0) / Double(n))
    }
    print("")
    print("empty parallelFor(\(threads)) round trip: median \(fmt(median(times) * 1e6, 2)) µs, best \(fmt(times.min()! * 1e6, 2)) µs")
}
