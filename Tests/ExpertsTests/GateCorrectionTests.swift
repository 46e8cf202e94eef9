import Testing
@testable import Experts

/// The online correction of read-ahead predictions, on a synthetic router whose prediction
/// misses by a fixed linear map plus a bias (what lies between two layers, to first order).
@Suite("Gate correction")
struct GateCorrectionTests {
    static let experts = 4, hidden = 16

    /// A deterministic stream of inputs, RMS-normalized as the router's inputs are.
    struct Inputs {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        mutating func next() -> [Float] {
            let x = (0..<GateCorrectionTests.hidden).map { _ in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000
            }
            let rms = (x.reduce(0) { $0 + $1 * $1 } / Float(x.count)).squareRoot()
            return x.map { $0 / rms }
        }
    }

    /// What the router really computes beyond the plain prediction: `shift · x + bias`.
    static func missed(_ x: [Float], shift: [Float], bias: [Float]) -> [Float] {
        (0..<experts).map { e in bias[e] + (0..<hidden).reduce(0) { $0 + shift[e * hidden + $1] * x[$1] } }
    }

    /// Mean absolute error of the corrected prediction over `steps` single-token rounds, in
    /// blocks of 50 steps.
    static func errors(_ correction: GateCorrection, steps: Int, distance: Int, shift: [Float], bias: [Float],
                       inputs: inout Inputs) -> [Float] {
        var blocks: [Float] = []
        var sum: Float = 0
        for step in 1...steps {
            let x = inputs.next()
            var predicted = [Float](repeating: 0, count: experts)  // the plain gate's logits: 0
            x.withUnsafeBufferPointer { correction.apply(input: $0.baseAddress!, tokens: 1, logits: &predicted, distance: distance) }
            let actual = missed(x, shift: shift, bias: bias)
            sum += zip(predicted, actual).reduce(0) { $0 + abs($1.0 - $1.1) } / Float(experts)
            correction.learn(actual: actual, tokens: 1)
            if step % 50 == 0 { blocks.append(sum / 50); sum = 0 }
        }
        return blocks
    }

    static let shift: [Float] = (0..<(experts * hidden)).map { Float(($0 * 37) % 11 - 5) / 10 }
    static let bias: [Float] = [0.8, -0.5, 0.3, -0.9]

    @Test("learns what the plain prediction misses: the error falls to a small part of where it began")
    func converges() {
        let correction = GateCorrection(experts: Self.experts, hidden: Self.hidden)
        correction.rate = 0.3
        var inputs = Inputs()
        let blocks = Self.errors(correction, steps: 600, distance: 1, shift: Self.shift, bias: Self.bias, inputs: &inputs)
        #expect(blocks.last! < 0.05 * blocks.first!, "\(blocks)")
        #expect(correction.updates == 600)
    }

    @Test("rate 0 is the plain gate: logits untouched, nothing learned")
    func offIsPlain() {
        let correction = GateCorrection(experts: Self.experts, hidden: Self.hidden)
        var inputs = Inputs()
        let x = inputs.next()
        var logits: [Float] = [0.25, -1, 2, 0.5]
        let before = logits
        x.withUnsafeBufferPointer { correction.apply(input: $0.baseAddress!, tokens: 1, logits: &logits, distance: 1) }
        correction.learn(actual: [9, 9, 9, 9], tokens: 1)
        #expect(logits == before)
        #expect(correction.updates == 0)
    }

    @Test("each distance learns its own map; batches keep the plain gate")
    func distancesAndBatches() {
        let correction = GateCorrection(experts: Self.experts, hidden: Self.hidden)
        correction.rate = 0.3
        var inputs = Inputs()
        // Distance 1 misses by the shift and bias, distance 2 by their negatives: one shared
        // map could not learn both.
        let negShift = Self.shift.map { -$0 }, negBias = Self.bias.map { -$0 }
        var first: [Float] = [], last: [Float] = []
        for round in 0..<300 {
            for (distance, shift, bias) in [(1, Self.shift, Self.bias), (2, negShift, negBias)] {
                let e = Self.errors(correction, steps: 50, distance: distance, shift: shift, bias: bias, inputs: &inputs)[0]
                if round == 0 { first.append(e) }
                if round == 299 { last.append(e) }
            }
            if round == 0 { #expect(correction.updates == 100) }
        }
        for d in 0..<2 { #expect(last[d] < 0.05 * first[d], "distance \(d + 1): \(first[d]) -> \(last[d])") }

        // A batch of two tokens keeps the plain gate's logits and is not learned from.
        let updates = correction.updates
        var batch: [Float] = [0.5, -0.5, 1, 2, 0.25, 0, -1, 3]
        let plain = batch
        (inputs.next() + inputs.next()).withUnsafeBufferPointer {
            correction.apply(input: $0.baseAddress!, tokens: 2, logits: &batch, distance: 1)
        }
        correction.learn(actual: [Float](repeating: 0, count: 2 * Self.experts), tokens: 2)
        #expect(batch == plain)
        #expect(correction.updates == updates)
    }
}
