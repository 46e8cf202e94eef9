import GGUF

/// One matrix product `output = input × weightᵀ` for `multiply(_ jobs:pool:)`.
///
/// `input` holds `tokens` rows of `weight.columns` floats; `output` receives `tokens` rows of
/// `weight.rows` floats (`output[t * weight.rows + r]` = dot(weight row r, input row t)).
public struct MatMulJob: @unchecked Sendable {
    public var weight: WeightMatrix
    public var input: UnsafePointer<Float>
    public var tokens: Int
    public var output: UnsafeMutablePointer<Float>

    public init(weight: WeightMatrix, input: UnsafePointer<Float>, tokens: Int, output: UnsafeMutablePointer<Float>) {
        self.weight = weight
        self.input = input
        self.tokens = tokens
        self.output = output
    }
}

/// Matrix × activations products for every weight type the model files use.
///
/// Quantized weights are multiplied the way llama.cpp does it: the activation rows are
/// quantized once per call to 8-bit blocks (per 32 values for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1, per
/// 256 values with 16-value sums for the K-quants) and the inner products run on integers
/// (AVX2 `maddubs`/`madd`, or portable SIMD), scaled to F32 per block. F32/F16/BF16
/// weights use F32 activations. Other types go through `Dequantize.row` and an F32 dot.
///
/// Work is split into row ranges across the pool; with one token the rows are streamed
/// 4 at a time (memory-bound), with several tokens each group of 4 rows is used for all
/// tokens while it sits in L1.
public enum MatMul {
    enum Kernel {
        case f32, f16, bf16
        case q8_0, q4_0, q4_1, q5_0, q5_1
        case q2_K, q3_K, q4_K, q5_K, q6_K
        case dequantized

        var activationFormat: ActivationFormat {
            switch self {
            case .f32, .f16, .bf16, .dequantized: return .f32
            case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1: return .q8x32
            case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return .q8x256
            }
        }

        func scratchBytes(columns: Int) -> Int {
            switch self {
            case .f16, .bf16, .dequantized: return FloatKernel.scratchBytes(columns: columns)
            case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return KQuantKernel.scratchBytes(columns: columns)
            default: return 0
            }
        }
    }

    static func kernel(for type: GGMLType) -> Kernel? {
        switch type {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        case .q8_0: return .q8_0
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        case .q5_0: return .q5_0
        case .q5_1: return .q5_1
        case .q2_K: return .q2_K
        case .q3_K: return .q3_K
        case .q4_K: return .q4_K
        case .q5_K: return .q5_K
        case .q6_K: return .q6_K
        default: return Dequantize.supports(type) ? .dequantized : nil
        }
    }

    /// Whether `multiply` accepts weights of `type`.
    public static func supports(_ type: GGMLType) -> Bool { kernel(for: type) != nil }

    /// Whether `type` has a dedicated integer or float kernel (rather than the dequantize
    /// fallback).
    public static func hasFastKernel(_ type: GGMLType) -> Bool {
        guard let k = kernel(for: type) else { return false }
        if case .dequantized = k { return false }
        return true
    }

    /// `output = input × weightᵀ` for `tokens` input rows.
    public static func multiply(_ weight: WeightMatrix, input: UnsafePointer<Float>, tokens: Int,
                                output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        withUnsafePointer(to: MatMulJob(weight: weight, input: input, tokens: tokens, output: output)) {
            multiply(UnsafeBufferPointer(start: $0, count: 1), pool: pool)
        }
    }

    /// Several independent products in one parallel dispatch. Jobs that share an input
    /// pointer (and token count and width) and need the same activation format share one
    /// quantization of it. Outputs must not overlap each other or any input.
    public static func multiply(_ jobs: [MatMulJob], pool: ThreadPool) {
        jobs.withUnsafeBufferPointer { multiply($0, pool: pool) }
    }

    /// Per-job plan: kernel, activation slot (-1 for F32 input), rows per task and the index
    /// of the job's first task (tasks are numbered job by job, so no task list is built).
    struct JobPlan {
        var kernel: Kernel
        var slot: Int
        var chunk: Int
        var firstTask: Int
    }

    public static func multiply(_ jobs: UnsafeBufferPointer<MatMulJob>, pool: ThreadPool) {
        let jobCount = jobs.count
        if jobCount == 0 { return }
        // Planning state and data live in the pool's reusable arenas: a decoded token makes
        // hundreds of calls, so a call allocates nothing.
        pool.withScratch { scratch in
            let planBytes = roundUp(jobCount * MemoryLayout<JobPlan>.stride, 64) + jobCount * MemoryLayout<Activations>.stride
            scratch.plan.reserve(planBytes)
            let base = scratch.plan.base!
            let plans = base.bindMemory(to: JobPlan.self, capacity: jobCount)
            let acts = (base + roundUp(jobCount * MemoryLayout<JobPlan>.stride, 64)).bindMemory(to: Activations.self, capacity: jobCount)
            run(jobs, plans: plans, acts: acts, scratch: scratch, pool: pool)
        }
    }

    private static func run(_ jobs: UnsafeBufferPointer<MatMulJob>, plans: UnsafeMutablePointer<JobPlan>,
                            acts: UnsafeMutablePointer<Activations>, scratch: KernelScratch, pool: ThreadPool) {
        let jobCount = jobs.count
        let threads = pool.threadCount

        // Kernels, activation slots (deduplicated by input, format, width and token count),
        // scratch sizes, total work.
        var slotCount = 0
        var activationBytes = 0
        var threadScratch = 0
        var totalWork = 0
        for j in 0..<jobCount {
            let job = jobs[j]
            guard let k = kernel(for: job.weight.type) else {
                preconditionFailure("MatMul: no kernel for \(job.weight.type); check MatMul.supports first")
            }
            precondition(job.tokens >= 0)
            let format = k.activationFormat
            var slot = -1
            if format != .f32 {
                precondition(job.weight.columns % format.blockSize == 0)
                for s in 0..<slotCount {
                    let a = acts[s]
                    if a.input == job.input && a.pendingFormat == format && a.columns == job.weight.columns && a.tokens == job.tokens {
                        slot = s
                        break
                    }
                }
                if slot < 0 {
                    slot = slotCount
                    // Memory is assigned once the scratch arena is known (offset kept in `qs` for now).
                    (acts + slotCount).initialize(to: Activations(format: .f32, input: job.input, columns: job.weight.columns,
                                                                   tokens: job.tokens, memory: nil))
                    acts[slotCount].pendingFormat = format
                    acts[slotCount].pendingOffset = activationBytes
                    slotCount += 1
                    activationBytes += roundUp(format.bytesPerToken(columns: job.weight.columns) * job.tokens, 64)
                }
            }
            (plans + j).initialize(to: JobPlan(kernel: k, slot: slot, chunk: 0, firstTask: 0))
            threadScratch = max(threadScratch, roundUp(k.scratchBytes(columns: job.weight.columns), 64))
            totalWork += job.weight.rows * job.weight.columns * (job.tokens + 2)
        }
        if totalWork == 0 { return }

        // Rows per task: aim for ~16 tasks per thread (claimed dynamically, so a preempted or
        // slower thread costs at most a task's worth at the end), at least 4 rows each.
        let targetWork = max(totalWork / (threads * 16), 32 * 1024)
        var taskCount = 0
        for j in 0..<jobCount {
            let job = jobs[j]
            plans[j].firstTask = taskCount
            guard job.tokens > 0, job.weight.rows > 0 else { plans[j].chunk = 1; continue }
            let rowWork = job.weight.columns * (job.tokens + 2)
            let rows = job.weight.rows
            var chunk = max(4, roundUp(targetWork / max(rowWork, 1), 4))
            let pieces = max(1, (rows + chunk - 1) / chunk)
            chunk = roundUp((rows + pieces - 1) / pieces, 4)
            plans[j].chunk = chunk
            taskCount += (rows + chunk - 1) / chunk
        }
        if taskCount == 0 { return }

        let scratchBytes = activationBytes + threadScratch * threads + 64
        scratch.data.reserve(scratchBytes)
        do {
            let arena = scratch.data.base!
            // Place and quantize the activations.
            var quantWork = 0
            for s in 0..<slotCount {
                let a = acts[s]
                acts[s] = Activations(format: a.pendingFormat, input: a.input, columns: a.columns, tokens: a.tokens,
                                      memory: arena + a.pendingOffset)
                quantWork += a.columns * a.tokens
            }
            if slotCount > 0 {
                if quantWork <= 64 * 1024 || threads == 1 {
                    for s in 0..<slotCount { for t in 0..<acts[s].tokens { acts[s].quantize(token: t) } }
                } else {
                    // One parallel pass over groups of tokens of every slot.
                    var groups = 0
                    for s in 0..<slotCount { groups += (acts[s].tokens + groupSize(acts[s]) - 1) / groupSize(acts[s]) }
                    pool.parallelFor(groups) { g in
                        var rest = g
                        for s in 0..<slotCount {
                            let size = groupSize(acts[s])
                            let n = (acts[s].tokens + size - 1) / size
                            if rest < n {
                                let t0 = rest * size
                                for t in t0..<min(acts[s].tokens, t0 + size) { acts[s].quantize(token: t) }
                                return
                            }
                            rest -= n
                        }
                    }
                }
            }

            let threadBase = arena + activationBytes
            pool.parallelForWithThread(taskCount) { i, thread in
                // The job whose task range holds i (binary search over first-task indices).
                var lo = 0, hi = jobCount - 1
                while lo < hi {
                    let mid = (lo + hi + 1) / 2
                    if plans[mid].firstTask <= i { lo = mid } else { hi = mid - 1 }
                }
                // Skip jobs without tasks that share the same first index.
                while lo + 1 < jobCount && plans[lo + 1].firstTask <= i { lo += 1 }
                let plan = plans[lo]
                let job = jobs[lo]
                let start = (i - plan.firstTask) * plan.chunk
                let end = min(job.weight.rows, start + plan.chunk)
                let act = plan.slot >= 0 ? acts[plan.slot]
                    : Activations(format: .f32, input: job.input, columns: job.weight.columns, tokens: job.tokens, memory: nil)
                run(plan.kernel, weight: job.weight, rows: start..<end, tokens: job.tokens, act: act,
                    output: job.output, scratch: threadBase + thread * threadScratch)
            }
        }
    }

    /// Tokens per parallel quantization unit.
    @inline(__always)
    static func groupSize(_ a: Activations) -> Int { max(1, 8192 / max(a.columns, 1)) }

    /// Tokens per pass over a range of rows (keeps the activations of a pass in L1/L2).
    static let tokenBlock = 32

    static func run(_ kernel: Kernel, weight: WeightMatrix, rows: Range<Int>, tokens: Int, act: Activations,
                    output: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawPointer) {
        let stride = weight.rows
        switch kernel {
        case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1:
            var t = 0
            while t < tokens {
                let te = min(tokens, t + tokenBlock)
                switch kernel {
                case .q8_0: Block32Kernel.run(Q8_0Format.self, weight: weight, rows: rows, tokens: t..<te, act: act, output: output, outputStride: stride)
                case .q4_0: Block32Kernel.run(Q4_0Format.self, weight: weight, rows: rows, tokens: t..<te, act: act, output: output, outputStride: stride)
                case .q4_1: Block32Kernel.run(Q4_1Format.self, weight: weight, rows: rows, tokens: t..<te, act: act, output: output, outputStride: stride)
                case .q5_0: Block32Kernel.run(Q5_0Format.self, weight: weight, rows: rows, tokens: t..<te, act: act, output: output, outputStride: stride)
                default: Block32Kernel.run(Q5_1Format.self, weight: weight, rows: rows, tokens: t..<te, act: act, output: output, outputStride: stride)
                }
                t = te
            }
        case .q4_K:
            KQuantKernel.run(Q4_KFormat.self, weight: weight, rows: rows, tokens: 0..<tokens, act: act, output: output, outputStride: stride, scratch: scratch)
        case .q6_K:
            KQuantKernel.run(Q6_KFormat.self, weight: weight, rows: rows, tokens: 0..<tokens, act: act, output: output, outputStride: stride, scratch: scratch)
        case .q5_K:
            KQuantKernel.run(Q5_KFormat.self, weight: weight, rows: rows, tokens: 0..<tokens, act: act, output: output, outputStride: stride, scratch: scratch)
        case .q3_K:
            KQuantKernel.run(Q3_KFormat.self, weight: weight, rows: rows, tokens: 0..<tokens, act: act, output: output, outputStride: stride, scratch: scratch)
        case .q2_K:
            KQuantKernel.run(Q2_KFormat.self, weight: weight, rows: rows, tokens: 0..<tokens, act: act, output: output, outputStride: stride, scratch: scratch)
        case .f32:
            FloatKernel.run(F32Format.self, weight: weight, rows: rows, tokens: 0..<tokens, act: act, output: output, outputStride: stride, scratch: scratch)
        case .f16:
            FloatKernel.run(F16Format.self, weight: weight, rows: rows, tokens: 0..<tokens, act: act, output: output, outputStride: stride, scratch: scratch)
        case .bf16:
            FloatKernel.run(BF16Format.self, weight: weight, rows: rows, tokens: 0..<tokens, act: act, output: output, outputStride: stride, scratch: scratch)
        case .dequantized:
            FloatKernel.runDequantized(weight: weight, rows: rows, tokens: 0..<tokens, act: act, output: output, outputStride: stride, scratch: scratch)
        }
    }
}
