import Engine
import Experts
import Foundation
import KV
import Models
import TestSupport
import Testing

/// The runtime a front end builds from a `RuntimeConfiguration`: what is offloaded, the
/// context and KV pools it gives sessions and generators, its errors and notes, and the
/// benchmark it runs.
@Suite("Runtime")
struct RuntimeTests {
    static func configuration(_ stem: String) -> RuntimeConfiguration {
        var c = RuntimeConfiguration(modelPath: SharedData.path("models/\(stem).gguf"))
        c.threads = 2
        return c
    }

    @Test func aFileThatFitsIsReadWholeAndABudgetOffloadsIt() throws {
        let resident = try Runtime.load(Self.configuration("tiny-qwen3moe.q8_0"))
        #expect(resident.offloadedExperts == nil)
        #expect(resident.startupNotes.isEmpty)
        var c = Self.configuration("tiny-qwen3moe.q8_0")
        c.offload.expertMemory = 2 << 20
        let offloaded = try Runtime.load(c)
        let provider = try #require(offloaded.offloadedExperts)
        #expect(provider.pool.totalBytes <= 2 << 20)
        #expect(offloaded.expertStatisticsReport != nil)
        // A budget given is not reported unless asked for; with statistics it is.
        #expect(offloaded.startupNotes.isEmpty)
        c.statistics = true
        let reported = try Runtime.load(c)
        #expect(reported.startupNotes.count == 1 && reported.startupNotes[0].hasPrefix("experts: "), "\(reported.startupNotes)")
    }

    @Test func fallbackAloneOffloads() throws {
        var c = Self.configuration("tiny-qwen3moe.q8_0")
        c.offload.fallbackType = "q4_0"
        let runtime = try Runtime.load(c)
        #expect(runtime.offloadedExperts?.fallback != nil)
    }

    @Test func settingsADenseModelIgnoresAreNoted() throws {
        var c = Self.configuration("tiny-llama.q8_0")
        c.offload.expertMemory = 2 << 20
        c.recordRouting = "/nonexistent/never-written.jsonl"
        let runtime = try Runtime.load(c)
        #expect(runtime.offloadedExperts == nil)
        #expect(runtime.startupNotes.count == 2)
        #expect(runtime.startupNotes.contains { $0.hasSuffix("has no routed experts; --record-routing is ignored") })
        #expect(runtime.startupNotes.contains { $0.hasSuffix("has no routed experts; --expert-memory is ignored") })
    }

    @Test func contextIsAskedElseConfiguredElseTheModelsUpToTheLimit() throws {
        let runtime = try Runtime.load(Self.configuration("tiny-qwen3moe.q8_0"))
        let trained = runtime.model.hyperParameters.contextLength
        #expect(runtime.contextLength() == min(trained, DecoderModel.defaultContextLimit))
        #expect(try runtime.makeSession().cache.capacity == runtime.contextLength())
        #expect(try runtime.makeSession(context: 40).cache.capacity == 40)
        #expect(try runtime.makeSession(context: trained * 2).cache.capacity == trained)
        var c = Self.configuration("tiny-qwen3moe.q8_0")
        c.contextLength = 64
        let configured = try Runtime.load(c)
        #expect(try configured.makeSession().cache.capacity == 64)
        #expect(try configured.makeSession(context: 32).cache.capacity == 32)
        #expect(try configured.makeBatchGenerator().contextLength == 64)
    }

    @Test func kvSettingsShapeThePoolsAndAreReported() throws {
        var c = Self.configuration("tiny-qwen3moe.q8_0")
        c.kvType = .q8_0
        c.contextLength = 64
        c.sequences = 3
        var lines: [String] = []
        let runtime = try Runtime.load(c)
        runtime.log = { lines.append($0) }
        let session = try runtime.makeSession()
        #expect(session.cache.layout.type == .q8_0)
        let generator = try runtime.makeBatchGenerator()
        let layout = generator.kvPool.layout
        #expect(layout.type == .q8_0)
        #expect(generator.kvPool.capacity == runtime.model.kvBlocks(layout, positions: 64, sequences: 3))
        #expect(lines.count == 2)
        #expect(lines[0].hasPrefix("kv: q8_0, ") && lines[0].hasSuffix("context 64"), "\(lines)")
        #expect(lines[1].hasSuffix("(sized for 3 contexts) for 3 sequences of up to 64 tokens"), "\(lines)")
        // A resumed session's type applies only where the configuration names none.
        #expect(try runtime.makeSession(defaultKVType: .q4_0).cache.layout.type == .q8_0)
    }

    @Test func kvMemoryTooSmallForTheContextIsAnErrorWithTheFigures() throws {
        var c = Self.configuration("tiny-qwen3moe.q8_0")
        c.kvMemory = 64 << 10
        c.contextLength = 512
        let runtime = try Runtime.load(c)
        #expect {
            _ = try runtime.makeSession()
        } throws: { error in
            guard case let RuntimeError.kvMemoryTooSmall(_, memory, context) = error else { return false }
            return memory == 64 << 10 && context == 512
                && "\(error)".contains("give --kv-memory") && "\(error)".contains("or --ctx")
        }
    }

    @Test func benchmarkRunsEachTestTheTimesAsked() throws {
        var c = Self.configuration("tiny-qwen3moe.q8_0")
        c.offload.expertMemory = 2 << 20
        let runtime = try Runtime.load(c)
        let result = try runtime.benchmark(BenchmarkPlan(promptTokens: 8, generatedTokens: 4, runs: 3))
        #expect(result.prefillRates.count == 3 && result.decodeRates.count == 3)
        #expect(result.prefillRates.allSatisfy { $0 > 0 } && result.decodeRates.allSatisfy { $0 > 0 })
        #expect(result.threads == 2)
        #expect(result.weightBytesPerDecodedToken ?? 0 > 0)
        // Expert figures cover the timed runs only: 3 runs of 4 decoded tokens and 3 prefills.
        let stats = try #require(result.expertStatistics)
        #expect(stats.tokens == 3 * (4 + 8))
        #expect(BenchmarkResult.median([3, 1, 2]) == 2 && BenchmarkResult.median([4, 1, 2, 3]) == 2.5)
        #expect(BenchmarkResult.median([]) == nil)
    }

    @Test func aBenchmarkLongerThanTheContextIsRefused() throws {
        var c = Self.configuration("tiny-qwen3moe.q8_0")
        c.contextLength = 16
        let runtime = try Runtime.load(c)
        #expect(throws: RuntimeError.self) { try runtime.benchmark(BenchmarkPlan(promptTokens: 32)) }
    }

    @Test func severalSequencesBenchmarkTogether() throws {
        var c = Self.configuration("tiny-qwen3moe.q8_0")
        c.sequences = 2
        let runtime = try Runtime.load(c)
        let result = try runtime.benchmark(BenchmarkPlan(promptTokens: 0, generatedTokens: 4, runs: 1))
        #expect(result.sequences == 2 && result.decodeRates.count == 1)
        #expect(result.weightBytesPerDecodedToken == nil)
    }
}
