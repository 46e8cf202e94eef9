/// Quantizers of the 256-value "K" super-block formats. Each super-block holds
/// sub-blocks of 16 or 32 values with their own scale (and minimum), themselves quantized to
/// 4, 6 or 8 bits against one or two F16 super-scales.
///
/// The searches below (`affineSearch`, `symmetricSearch`, `q3Search`) are ggml's
/// `make_qkx2_quants`, `make_qx_quants` (rmse_type 1, no weights) and `make_q3_quants`.
/// Their float sums must accumulate in ggml's order, one element at a time, for the chosen
/// scales (and hence the output bytes) to match llama.cpp.
enum KQuantizers {
    /// A group whose largest magnitude is below this counts as all zero (ggml's GROUP_MAX_EPS).
    static let groupMaxEps: Float = 1e-15

    /// Stack scratch for one call: quant levels for a super-block and per-value weights,
    /// plus per-group scales and mins.
    @inline(__always)
    static func withScratch<R>(_ body: (_ levels: UnsafeMutablePointer<UInt8>, _ weights: UnsafeMutablePointer<Float>,
                                        _ scales: UnsafeMutablePointer<Float>, _ mins: UnsafeMutablePointer<Float>) -> R) -> R {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { bytes in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 256 + 16 + 16) { floats in
                let f = floats.baseAddress!
                return body(bytes.baseAddress!, f, f + 256, f + 272)
            }
        }
    }

    // MARK: Searches, eight groups at a time
    //
    // The per-group searches are sequential float reductions whose order decides the result,
    // so they cannot be vectorized along a group. Instead each SIMD lane runs one group's
    // search, performing exactly the scalar operations in the same order (conditionals become
    // lane masks): ggml's bits, four to five times faster than one group at a time.
    //
    // Unoptimized (-Onone) builds do not specialize the generic SIMD operations, which makes
    // the lane version ~100x slower than the scalar one there; they search one group at a
    // time instead (same results; the tests run both).

    static var searchInLanes: Bool { !_isDebugAssertConfiguration() }

    /// Affine fit x ≈ scale * L - min with L in 0...nmax, for 8 groups of `n` values (and
    /// weights) stored one after another (ggml's make_qkx2_quants). Tries `nstep + 1` trial
    /// inverse scales around nmax / (max - min) and keeps the least weighted error (absolute
    /// if `mad`, else squared). Writes the levels; returns per group scale and (positive) min.
    @inline(__always)
    static func affineSearch(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                             _ levels: UnsafeMutablePointer<UInt8>, rmin: Float, rdelta: Float, nstep: Int,
                             mad: Bool, lanes: Bool) -> (scale: Lanes, min: Lanes) {
        if lanes {
            return affineSearchLanes(n, nmax, x, w, levels, rmin: rmin, rdelta: rdelta, nstep: nstep, mad: mad)
        }
        var scale = Lanes(), min = Lanes()
        for k in 0..<8 {
            (scale[k], min[k]) = affineSearchGroup(n, nmax, x + k &* n, w + k &* n, levels + k &* n,
                                                   rmin: rmin, rdelta: rdelta, nstep: nstep, mad: mad)
        }
        return (scale, min)
    }

    /// Symmetric fit x ≈ scale * (L - nmax), L in 0..<2*nmax, weights x², for 8 groups of `n`
    /// values stored one after another (ggml's make_qx_quants, rmse_type 1): 18 trial inverse
    /// scales around -nmax / max, keeping the best least-squares scale. Writes the levels.
    @inline(__always)
    static func symmetricSearch(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>,
                                _ levels: UnsafeMutablePointer<UInt8>, lanes: Bool) -> Lanes {
        if lanes { return symmetricSearchLanes(n, nmax, x, levels) }
        var scale = Lanes()
        for k in 0..<8 { scale[k] = symmetricSearchGroup(n, nmax, x + k &* n, levels + k &* n) }
        return scale
    }

    typealias Lanes = SIMD8<Float>
    typealias LaneInts = SIMD8<Int32>

    /// `ggmlNearestInt` per lane.
    @inline(__always)
    static func nearest(_ v: Lanes) -> LaneInts {
        (unsafeBitCast(v + 12_582_912, to: LaneInts.self) & 0x007F_FFFF) &- 0x0040_0000
    }

    @inline(__always)
    static func magnitude(_ v: Lanes) -> Lanes {
        unsafeBitCast(unsafeBitCast(v, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF, to: Lanes.self)
    }

    @inline(__always)
    static func clamp(_ v: LaneInts, _ lo: Int32, _ hi: Int32) -> LaneInts {
        pointwiseMax(LaneInts(repeating: lo), pointwiseMin(LaneInts(repeating: hi), v))
    }

    /// Gathers value i of each of the 8 groups of `n` (stored one after another) into lane k.
    @inline(__always)
    static func transpose(_ x: UnsafePointer<Float>, _ n: Int, into out: UnsafeMutablePointer<Lanes>) {
        for i in 0..<n {
            var v = Lanes()
            for k in 0..<8 { v[k] = x[k &* n &+ i] }
            out[i] = v
        }
    }

    @inline(__always)
    static func store(_ levels: UnsafePointer<LaneInts>, _ n: Int, to out: UnsafeMutablePointer<UInt8>) {
        for i in 0..<n {
            let l = levels[i]
            for k in 0..<8 { out[k &* n &+ i] = UInt8(truncatingIfNeeded: l[k]) }
        }
    }

    /// `affineSearch`, one group per lane.
    static func affineSearchLanes(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                  _ levels: UnsafeMutablePointer<UInt8>,
                                  rmin: Float, rdelta: Float, nstep: Int, mad: Bool) -> (scale: Lanes, min: Lanes) {
        withUnsafeTemporaryAllocation(of: Lanes.self, capacity: 2 &* n) { floats in
            withUnsafeTemporaryAllocation(of: LaneInts.self, capacity: 2 &* n) { ints in
                let xs = floats.baseAddress!, ws = xs + n
                let best = ints.baseAddress!, trial = best + n
                transpose(x, n, into: xs)
                transpose(w, n, into: ws)
                @inline(__always) func error(_ d: Lanes) -> Lanes { mad ? magnitude(d) : d * d }

                var lo = xs[0], hi = xs[0]
                var sumW = ws[0]
                var sumX = sumW * xs[0]
                for i in 1..<n {
                    lo.replace(with: xs[i], where: xs[i] .< lo)
                    hi.replace(with: xs[i], where: xs[i] .> hi)
                    sumW += ws[i]
                    sumX += ws[i] * xs[i]
                }
                lo.replace(with: 0, where: lo .> 0)
                let flat = hi .== lo
                let top = Float(nmax)
                var iscale = top / (hi - lo)
                var scale = 1 / iscale
                var bestError = Lanes()
                for i in 0..<n {
                    let l = clamp(nearest(iscale * (xs[i] - lo)), 0, nmax)
                    best[i] = l
                    bestError += ws[i] * error(scale * Lanes(l) + lo - xs[i])
                }
                for step in 0...nstep {
                    iscale = (rmin + rdelta * Float(step) + top) / (hi - lo)
                    var sumL = Lanes(), sumL2 = Lanes(), sumXL = Lanes()
                    for i in 0..<n {
                        let l = clamp(nearest(iscale * (xs[i] - lo)), 0, nmax)
                        trial[i] = l
                        let fl = Lanes(l)
                        sumL += ws[i] * fl
                        sumL2 += ws[i] * fl * fl
                        sumXL += ws[i] * fl * xs[i]
                    }
                    let det = sumW * sumL2 - sumL * sumL
                    var thisScale = (sumW * sumXL - sumX * sumL) / det
                    var thisMin = (sumL2 * sumX - sumL * sumXL) / det
                    let positive = thisMin .> 0
                    thisMin.replace(with: 0, where: positive)
                    thisScale.replace(with: sumXL / sumL2, where: positive)
                    var err = Lanes()
                    for i in 0..<n { err += ws[i] * error(thisScale * Lanes(trial[i]) + thisMin - xs[i]) }
                    let take = (det .> 0) .& (err .< bestError)
                    if any(take) {
                        for i in 0..<n { best[i].replace(with: trial[i], where: take) }
                        bestError.replace(with: err, where: take)
                        scale.replace(with: thisScale, where: take)
                        lo.replace(with: thisMin, where: take)
                    }
                }
                // Constant groups: all levels 0, scale 0 (the arithmetic above already lands
                // there, but say it outright).
                if any(flat) {
                    for i in 0..<n { best[i].replace(with: 0, where: flat) }
                    scale.replace(with: 0, where: flat)
                }
                store(best, n, to: levels)
                return (scale, -lo)
            }
        }
    }

    /// `symmetricSearch`, one group per lane.
    static func symmetricSearchLanes(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>,
                                     _ levels: UnsafeMutablePointer<UInt8>) -> Lanes {
        withUnsafeTemporaryAllocation(of: Lanes.self, capacity: n) { floats in
            withUnsafeTemporaryAllocation(of: LaneInts.self, capacity: n) { ints in
                let xs = floats.baseAddress!, best = ints.baseAddress!
                transpose(x, n, into: xs)
                var max = Lanes(), amax = Lanes()
                for i in 0..<n {
                    let a = magnitude(xs[i])
                    let larger = a .> amax
                    amax.replace(with: a, where: larger)
                    max.replace(with: xs[i], where: larger)
                }
                let zero = amax .< groupMaxEps
                let top = Float(nmax)
                var iscale = Lanes(repeating: -top) / max
                var sumLX = Lanes(), sumL2 = Lanes()
                for i in 0..<n {
                    let l = clamp(nearest(iscale * xs[i]), -nmax, nmax &- 1)
                    best[i] = l &+ nmax
                    let w = xs[i] * xs[i], fl = Lanes(l)
                    sumLX += w * xs[i] * fl
                    sumL2 += w * fl * fl
                }
                var scale = sumLX / sumL2
                scale.replace(with: 0, where: sumL2 .== 0)
                var bestGain = scale * sumLX
                for step in -9...9 where step != 0 {
                    iscale = Lanes(repeating: -(top + 0.1 * Float(step))) / max
                    sumLX = Lanes()
                    sumL2 = Lanes()
                    for i in 0..<n {
                        let fl = Lanes(clamp(nearest(iscale * xs[i]), -nmax, nmax &- 1))
                        let w = xs[i] * xs[i]
                        sumLX += w * xs[i] * fl
                        sumL2 += w * fl * fl
                    }
                    let take = (sumL2 .> 0) .& (sumLX * sumLX .> bestGain * sumL2)
                    if any(take) {
                        for i in 0..<n {
                            best[i].replace(with: clamp(nearest(iscale * xs[i]), -nmax, nmax &- 1) &+ nmax, where: take)
                        }
                        let newScale = sumLX / sumL2
                        scale.replace(with: newScale, where: take)
                        bestGain.replace(with: newScale * sumLX, where: take)
                    }
                }
                if any(zero) {
                    for i in 0..<n { best[i].replace(with: 0, where: zero) }
                    scale.replace(with: 0, where: zero)
                }
                store(best, n, to: levels)
                return scale
            }
        }
    }

    // MARK: Searches, one group at a time

    /// `affineSearch` for one group of `n` ≤ 32 values.
    static func affineSearchGroup(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                  _ levels: UnsafeMutablePointer<UInt8>,
                                  rmin: Float, rdelta: Float, nstep: Int, mad: Bool) -> (scale: Float, min: Float) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: n) { trialBuffer in
            let trial = trialBuffer.baseAddress!
            var lo = x[0], hi = x[0]
            var sumW = w[0]
            var sumX = sumW * x[0]
            for i in 1..<n {
                if x[i] < lo { lo = x[i] }
                if x[i] > hi { hi = x[i] }
                sumW += w[i]
                sumX += w[i] * x[i]
            }
            if lo > 0 { lo = 0 }
            if hi == lo {
                for i in 0..<n { levels[i] = 0 }
                return (0, -lo)
            }
            let top = Float(nmax)
            var iscale = top / (hi - lo)
            var scale = 1 / iscale
            var bestError: Float = 0
            for i in 0..<n {
                let l = clampLevel(ggmlNearestInt(iscale * (x[i] - lo)), 0, nmax)
                levels[i] = UInt8(truncatingIfNeeded: l)
                var diff = scale * Float(l) + lo - x[i]
                diff = mad ? abs(diff) : diff * diff
                bestError += w[i] * diff
            }
            for step in 0...nstep {
                iscale = (rmin + rdelta * Float(step) + top) / (hi - lo)
                var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
                for i in 0..<n {
                    let l = clampLevel(ggmlNearestInt(iscale * (x[i] - lo)), 0, nmax)
                    trial[i] = UInt8(truncatingIfNeeded: l)
                    let fl = Float(l)
                    sumL += w[i] * fl
                    sumL2 += w[i] * fl * fl
                    sumXL += w[i] * fl * x[i]
                }
                let det = sumW * sumL2 - sumL * sumL
                if det > 0 {
                    var thisScale = (sumW * sumXL - sumX * sumL) / det
                    var thisMin = (sumL2 * sumX - sumL * sumXL) / det
                    if thisMin > 0 {
                        thisMin = 0
                        thisScale = sumXL / sumL2
                    }
                    var error: Float = 0
                    for i in 0..<n {
                        var diff = thisScale * Float(trial[i]) + thisMin - x[i]
                        diff = mad ? abs(diff) : diff * diff
                        error += w[i] * diff
                    }
                    if error < bestError {
                        levels.update(from: trial, count: n)
                        bestError = error
                        scale = thisScale
                        lo = thisMin
                    }
                }
            }
            return (scale, -lo)
        }
    }

    /// `symmetricSearch` for one group of `n` values.
    static func symmetricSearchGroup(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>,
                                     _ levels: UnsafeMutablePointer<UInt8>) -> Float {
        var max: Float = 0, amax: Float = 0
        for i in 0..<n where abs(x[i]) > amax { amax = abs(x[i]); max = x[i] }
        if amax < groupMaxEps {
            for i in 0..<n { levels[i] = 0 }
            return 0
        }
        let top = Float(nmax)
        var iscale = -top / max
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = clampLevel(ggmlNearestInt(iscale * x[i]), -nmax, nmax &- 1)
            levels[i] = UInt8(truncatingIfNeeded: l &+ nmax)
            let w = x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        var scale: Float = sumL2 != 0 ? sumLX / sumL2 : 0
        var best = scale * sumLX
        for step in -9...9 where step != 0 {
            iscale = -(top + 0.1 * Float(step)) / max
            sumLX = 0
            sumL2 = 0
            for i in 0..<n {
                let fl = Float(clampLevel(ggmlNearestInt(iscale * x[i]), -nmax, nmax &- 1))
                let w = x[i] * x[i]
                sumLX += w * x[i] * fl
                sumL2 += w * fl * fl
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n {
                    let l = clampLevel(ggmlNearestInt(iscale * x[i]), -nmax, nmax &- 1)
                    levels[i] = UInt8(truncatingIfNeeded: l &+ nmax)
                }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }

    /// Q3_K's symmetric fit: start from -nmax / max, then up to five rounds of moving single
    /// levels whenever that raises the weighted (x²) least-squares gain.
    /// Levels are signed during the search; stored as bytes (two's complement), biased by
    /// nmax at the end.
    static func q3Search(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>,
                         _ levels: UnsafeMutablePointer<UInt8>) -> Float {
        @inline(__always) func level(_ i: Int) -> Int32 { Int32(Int8(bitPattern: levels[i])) }
        var max: Float = 0, amax: Float = 0
        for i in 0..<n where abs(x[i]) > amax { amax = abs(x[i]); max = x[i] }
        if amax < groupMaxEps {
            for i in 0..<n { levels[i] = 0 }
            return 0
        }
        let iscale = -Float(nmax) / max
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = clampLevel(ggmlNearestInt(iscale * x[i]), -nmax, nmax &- 1)
            levels[i] = UInt8(truncatingIfNeeded: l)
            let w = x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        for _ in 0..<5 {
            var changed = 0
            for i in 0..<n {
                let w = x[i] * x[i]
                let li = Float(level(i))
                var slx = sumLX - w * x[i] * li
                if slx > 0 {
                    var sl2 = sumL2 - w * li * li
                    let newL = clampLevel(ggmlNearestInt(x[i] * sl2 / slx), -nmax, nmax &- 1)
                    if newL != level(i) {
                        let fl = Float(newL)
                        slx += w * x[i] * fl
                        sl2 += w * fl * fl
                        if sl2 > 0 && slx * slx * sumL2 > sumLX * sumLX * sl2 {
                            levels[i] = UInt8(truncatingIfNeeded: newL)
                            sumLX = slx
                            sumL2 = sl2
                            changed &+= 1
                        }
                    }
                }
            }
            if changed == 0 { break }
        }
        for i in 0..<n { levels[i] = UInt8(truncatingIfNeeded: level(i) &+ nmax) }
        return sumL2 > 0 ? sumLX / sumL2 : 0
    }

    /// Packs 256 2-bit levels: byte 32*(e/128) + e%32 holds value e at bit 2*((e%128)/32).
    @inline(__always)
    static func pack2Bit(_ levels: UnsafePointer<UInt8>, _ qs: UnsafeMutableRawPointer) {
        for half in 0..<2 {
            let l = levels + 128 &* half
            for i in 0..<32 {
                let byte = l[i] | (l[i &+ 32] &<< 2) | (l[i &+ 64] &<< 4) | (l[i &+ 96] &<< 6)
                qs.storeBytes(of: byte, toByteOffset: 32 &* half &+ i, as: UInt8.self)
            }
        }
    }

    // MARK: Formats

    static func q2_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int, lanes: Bool = searchInLanes) {
        withScratch { levels, weights, scales, mins in
            for b in 0..<blocks {
                let v = x + b &* 256, p = y + b &* 84
                let sc = p.assumingMemoryBound(to: UInt8.self)
                for i in 0..<256 { weights[i] = abs(v[i]) }
                for half in 0..<2 {
                    let (s, m) = affineSearch(16, 3, v + 128 &* half, weights + 128 &* half, levels + 128 &* half,
                                              rmin: -0.5, rdelta: 0.1, nstep: 15, mad: true, lanes: lanes)
                    for k in 0..<8 {
                        scales[8 &* half &+ k] = s[k]
                        mins[8 &* half &+ k] = m[k]
                    }
                }
                var maxScale: Float = 0, maxMin: Float = 0
                for j in 0..<16 {
                    if scales[j] > maxScale { maxScale = scales[j] }
                    if mins[j] > maxMin { maxMin = mins[j] }
                }
                // Sub-block scales and mins to 4 bits each against the two super-scales.
                if maxScale > 0 {
                    let iscale = 15 / maxScale
                    for j in 0..<16 { sc[j] = UInt8(truncatingIfNeeded: ggmlNearestInt(iscale * scales[j])) }
                    FP16.store(maxScale / 15, p, KBlockLayout.q2KD)
                } else {
                    for j in 0..<16 { sc[j] = 0 }
                    FP16.store(0, p, KBlockLayout.q2KD)
                }
                if maxMin > 0 {
                    let iscale = 15 / maxMin
                    for j in 0..<16 { sc[j] |= UInt8(truncatingIfNeeded: ggmlNearestInt(iscale * mins[j]) &<< 4) }
                    FP16.store(maxMin / 15, p, KBlockLayout.q2KDmin)
                } else {
                    FP16.store(0, p, KBlockLayout.q2KDmin)
                }
                // Re-fit the levels to the scales actually stored.
                let d = FP16.load(p, KBlockLayout.q2KD), dmin = FP16.load(p, KBlockLayout.q2KDmin)
                for j in 0..<16 {
                    let dl = d * Float(sc[j] & 0xF)
                    if dl == 0 { continue }
                    let ml = dmin * Float(sc[j] &>> 4)
                    for i in 0..<16 {
                        let l = clampLevel(ggmlNearestInt((v[16 &* j &+ i] + ml) / dl), 0, 3)
                        levels[16 &* j &+ i] = UInt8(truncatingIfNeeded: l)
                    }
                }
                pack2Bit(levels, p + KBlockLayout.q2KQs)
            }
        }
    }

    static func q3_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int) {
        withScratch { levels, _, scales, _ in
            for b in 0..<blocks {
                let v = x + b &* 256, p = y + b &* 110
                var maxScale: Float = 0, amax: Float = 0
                for j in 0..<16 {
                    scales[j] = q3Search(16, 4, v + 16 &* j, levels + 16 &* j)
                    let a = abs(scales[j])
                    if a > amax { amax = a; maxScale = scales[j] }
                }
                let sc = (p + KBlockLayout.q3KScales).assumingMemoryBound(to: UInt8.self)
                for j in 0..<12 { sc[j] = 0 }
                if maxScale != 0 {
                    // Signed 6-bit scales, bias 32: low nibbles in bytes 0-7, top bits in 8-11.
                    let iscale = -32 / maxScale
                    for j in 0..<16 {
                        let l8 = Int8(truncatingIfNeeded: ggmlNearestInt(iscale * scales[j]))
                        let l = UInt8(truncatingIfNeeded: Int32(max(-32, min(31, l8))) &+ 32)
                        if j < 8 { sc[j] = l & 0xF } else { sc[j &- 8] |= (l & 0xF) &<< 4 }
                        sc[8 &+ (j & 3)] |= (l &>> 4) &<< UInt8(truncatingIfNeeded: 2 &* (j &>> 2))
                    }
                    FP16.store(1 / iscale, p, KBlockLayout.q3KD)
                } else {
                    FP16.store(0, p, KBlockLayout.q3KD)
                }
                let d = FP16.load(p, KBlockLayout.q3KD)
                for j in 0..<16 {
                    let dl = d * Float(q3KScale(sc, j))
                    if dl == 0 { continue }
                    for i in 0..<16 {
                        let l = clampLevel(ggmlNearestInt(v[16 &* j &+ i] / dl), -4, 3)
                        levels[16 &* j &+ i] = UInt8(truncatingIfNeeded: l &+ 4)
                    }
                }
                // Third bit of value e goes to bit e/32 of hmask[e%32]; two low bits as Q2_K.
                let hmask = p.assumingMemoryBound(to: UInt8.self)
                for j in 0..<32 { hmask[j] = 0 }
                for e in 0..<256 where levels[e] > 3 {
                    hmask[e & 31] |= UInt8(1) &<< UInt8(truncatingIfNeeded: e &>> 5)
                    levels[e] &-= 4
                }
                pack2Bit(levels, p + KBlockLayout.q3KQs)
            }
        }
    }

    /// Q4_K (nmax 15) and Q5_K (nmax 31): eight sub-blocks of 32 with 6-bit scales and mins.
    static func q4_K_or_q5_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int, nmax: Int32,
                             lanes: Bool = searchInLanes) {
        let five = nmax == 31
        let blockBytes = five ? 176 : 144
        // Q5_K searches a narrower range of trial scales than Q4_K (as ggml does).
        let rmin: Float = five ? -0.5 : -1, nstep = five ? 15 : 20
        withScratch { levels, weights, scales, mins in
            for b in 0..<blocks {
                let v = x + b &* 256, p = y + b &* blockBytes
                for j in 0..<8 {
                    let g = v + 32 &* j
                    var sumX2: Float = 0
                    for l in 0..<32 { sumX2 += g[l] * g[l] }
                    let avX = (sumX2 / 32).squareRoot()
                    for l in 0..<32 { weights[32 &* j &+ l] = avX + abs(g[l]) }
                }
                let (s, m) = affineSearch(32, nmax, v, weights, levels,
                                          rmin: rmin, rdelta: 0.1, nstep: nstep, mad: false, lanes: lanes)
                var maxScale: Float = 0, maxMin: Float = 0
                for j in 0..<8 {
                    scales[j] = s[j]
                    mins[j] = m[j]
                    if s[j] > maxScale { maxScale = s[j] }
                    if m[j] > maxMin { maxMin = m[j] }
                }
                let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
                let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
                let sc = (p + KBlockLayout.q4KScales).assumingMemoryBound(to: UInt8.self)
                for j in 0..<8 {
                    let ls = min(63, UInt8(truncatingIfNeeded: ggmlNearestInt(invScale * scales[j])))
                    let lm = min(63, UInt8(truncatingIfNeeded: ggmlNearestInt(invMin * mins[j])))
                    if j < 4 {
                        sc[j] = ls
                        sc[j &+ 4] = lm
                    } else {
                        sc[j &+ 4] = (ls & 0xF) | ((lm & 0xF) &<< 4)
                        sc[j &- 4] |= (ls &>> 4) &<< 6
                        sc[j] |= (lm &>> 4) &<< 6
                    }
                }
                FP16.store(maxScale / 63, p, KBlockLayout.q4KD)
                FP16.store(maxMin / 63, p, KBlockLayout.q4KDmin)
                let d = FP16.load(p, KBlockLayout.q4KD), dmin = FP16.load(p, KBlockLayout.q4KDmin)
                for j in 0..<8 {
                    let (s, m) = kScaleMin(sc, j)
                    let dl = d * Float(s)
                    if dl == 0 { continue }
                    let ml = dmin * Float(m)
                    for i in 0..<32 {
                        let l = clampLevel(ggmlNearestInt((v[32 &* j &+ i] + ml) / dl), 0, nmax)
                        levels[32 &* j &+ i] = UInt8(truncatingIfNeeded: l)
                    }
                }
                if five {
                    // Low nibbles as Q4_K; the fifth bit of value e is bit e/32 of qh[e%32].
                    let qh = (p + KBlockLayout.q5KQh).assumingMemoryBound(to: UInt8.self)
                    let qs = (p + KBlockLayout.q5KQs).assumingMemoryBound(to: UInt8.self)
                    for j in 0..<32 { qh[j] = 0 }
                    for c in 0..<4 {
                        for j in 0..<32 {
                            let l1 = levels[64 &* c &+ j], l2 = levels[64 &* c &+ 32 &+ j]
                            qh[j] |= ((l1 &>> 4) & 1) &<< UInt8(truncatingIfNeeded: 2 &* c)
                            qh[j] |= ((l2 &>> 4) & 1) &<< UInt8(truncatingIfNeeded: 2 &* c &+ 1)
                            qs[32 &* c &+ j] = (l1 & 0xF) | ((l2 & 0xF) &<< 4)
                        }
                    }
                } else {
                    let qs = (p + KBlockLayout.q4KQs).assumingMemoryBound(to: UInt8.self)
                    for c in 0..<4 {
                        for j in 0..<32 {
                            qs[32 &* c &+ j] = levels[64 &* c &+ j] | (levels[64 &* c &+ 32 &+ j] &<< 4)
                        }
                    }
                }
            }
        }
    }

    static func q6_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int, lanes: Bool = searchInLanes) {
        withScratch { levels, _, scales, _ in
            for b in 0..<blocks {
                let v = x + b &* 256, p = y + b &* 210
                for half in 0..<2 {
                    let s = symmetricSearch(16, 32, v + 128 &* half, levels + 128 &* half, lanes: lanes)
                    for k in 0..<8 { scales[8 &* half &+ k] = s[k] }
                }
                var maxScale: Float = 0, maxAbs: Float = 0
                for j in 0..<16 where abs(scales[j]) > maxAbs {
                    maxAbs = abs(scales[j])
                    maxScale = scales[j]
                }
                if maxAbs < groupMaxEps {
                    p.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
                    continue
                }
                let iscale = -128 / maxScale
                FP16.store(1 / iscale, p, KBlockLayout.q6KD)
                let sc = (p + KBlockLayout.q6KScales).assumingMemoryBound(to: UInt8.self)
                for j in 0..<16 {
                    sc[j] = UInt8(truncatingIfNeeded: min(127, ggmlNearestInt(iscale * scales[j])))
                }
                let d = FP16.load(p, KBlockLayout.q6KD)
                for j in 0..<16 {
                    let dl = d * Float(Int8(bitPattern: sc[j]))
                    if dl == 0 { continue }
                    for i in 0..<16 {
                        let l = clampLevel(ggmlNearestInt(v[16 &* j &+ i] / dl), -32, 31)
                        levels[16 &* j &+ i] = UInt8(truncatingIfNeeded: l &+ 32)
                    }
                }
                // Per 128 values: low nibbles of values l and l+64 share ql[l], of l+32 and
                // l+96 share ql[l+32]; the four 2-bit high parts share qh[l].
                for n in 0..<2 {
                    let l = levels + 128 &* n
                    let ql = (p + KBlockLayout.q6KQl + 64 &* n).assumingMemoryBound(to: UInt8.self)
                    let qh = (p + KBlockLayout.q6KQh + 32 &* n).assumingMemoryBound(to: UInt8.self)
                    for i in 0..<32 {
                        let a = l[i], b = l[i &+ 32], c = l[i &+ 64], e = l[i &+ 96]
                        ql[i] = (a & 0xF) | ((c & 0xF) &<< 4)
                        ql[i &+ 32] = (b & 0xF) | ((e & 0xF) &<< 4)
                        qh[i] = (a &>> 4) | ((b &>> 4) &<< 2) | ((c &>> 4) &<< 4) | ((e &>> 4) &<< 6)
                    }
                }
            }
        }
    }

    static func q8_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ blocks: Int) {
        for b in 0..<blocks {
            let v = x + b &* 256, p = y + b &* 292
            let qs = (p + KBlockLayout.q8KQs).assumingMemoryBound(to: UInt8.self)
            var max: Float = 0, amax: Float = 0
            for j in 0..<256 where abs(v[j]) > amax { amax = abs(v[j]); max = v[j] }
            if amax == 0 {
                // ggml leaves the block sums untouched here; we zero them.
                p.initializeMemory(as: UInt8.self, repeating: 0, count: 292)
                continue
            }
            let iscale = -127 / max
            for j in 0..<256 { qs[j] = UInt8(truncatingIfNeeded: min(127, ggmlNearestInt(iscale * v[j]))) }
            for j in 0..<16 {
                var sum: Int32 = 0
                for i in 0..<16 { sum &+= Int32(Int8(bitPattern: qs[16 &* j &+ i])) }
                p.storeBytes(of: Int16(truncatingIfNeeded: sum), toByteOffset: KBlockLayout.q8KBsums &+ 2 &* j, as: Int16.self)
            }
            p.storeBytes(of: 1 / iscale, toByteOffset: KBlockLayout.q8KD, as: Float.self)
        }
    }
}
