/// Rotary position embedding. Two layouts exist in GGUF models: `normal` rotates pairs of
/// neighbouring values (x[2i], x[2i+1]) — llama; `neox` rotates x[i] with x[i + d/2] —
/// qwen2/3, olmoe. Only the first `dimensions` values of each head are rotated.
public struct RoPE: Sendable {
    public enum Layout: Sendable { case normal, neox }
    public let layout: Layout
    public let dimensions: Int
    public let base: Float
    public let frequencyScale: Float
    /// Per-pair divisors of the angle (llama 3's `rope_freqs`), or nil.
    public let frequencyFactors: [Float]?

    public init(layout: Layout, dimensions: Int, base: Float, frequencyScale: Float = 1, frequencyFactors: [Float]? = nil) {
        self.layout = layout
        self.dimensions = dimensions
        self.base = base
        self.frequencyScale = frequencyScale
        self.frequencyFactors = frequencyFactors
    }

    /// cos/sin of every pair's angle at `position`: `table` receives dimensions/2 cosines
    /// then dimensions/2 sines. The angle is built by repeated multiplication, as ggml does,
    /// so rounding matches llama.cpp's.
    public func angles(position: Int, into table: UnsafeMutablePointer<Float>) {
        let half = dimensions / 2
        let thetaScale = Float.pow(base, -2 / Float(dimensions))
        var theta = Float(position)
        for i in 0..<half {
            var t = theta * frequencyScale
            if let f = frequencyFactors { t /= f[i] }
            table[i] = Float.cos(t)
            table[half + i] = Float.sin(t)
            theta *= thetaScale
        }
    }

    /// Rotates `heads` heads of `headSize` values at `x`, using a table from `angles`.
    @inline(__always)
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, headSize: Int, table: UnsafePointer<Float>) {
        let half = dimensions / 2
        for h in 0..<heads {
            let v = x + h &* headSize
            switch layout {
            case .normal:
                for i in 0..<half {
                    let c = table[i], s = table[half &+ i]
                    let a = v[2 &* i], b = v[2 &* i &+ 1]
                    v[2 &* i] = a * c - b * s
                    v[2 &* i &+ 1] = a * s + b * c
                }
            case .neox:
                for i in 0..<half {
                    let c = table[i], s = table[half &+ i]
                    let a = v[i], b = v[i &+ half]
                    v[i] = a * c - b * s
                    v[i &+ half] = a * s + b * c
                }
            }
        }
    }
}

extension Float {
    @inline(__always) static func pow(_ a: Float, _ b: Float) -> Float { Foundation.powf(a, b) }
    @inline(__always) static func cos(_ a: Float) -> Float { Foundation.cos(a) }
    @inline(__always) static func sin(_ a: Float) -> Float { Foundation.sin(a) }
}

import Foundation
