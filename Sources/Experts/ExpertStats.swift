import Foundation

/// What the offloading provider measured: hits and misses per layer, bytes read, time the
/// reads kept the disk busy, and time the computation waited for them.
public final class ExpertStats {
    public private(set) var hits: [Int: Int] = [:]
    public private(set) var misses: [Int: Int] = [:]
    /// Hits on experts whose prefetch was still being read (counted in `hits` too).
    public private(set) var inFlightHits = 0
    public internal(set) var prefetchesIssued = 0
    /// Prefetched experts a layer then asked for, and those evicted before any did.
    public internal(set) var prefetchesUsed = 0
    public internal(set) var prefetchesWasted = 0
    /// Cross-layer prediction: experts predicted, selected, and both.
    public private(set) var predicted = 0
    public private(set) var selected = 0
    public private(set) var predictedAndSelected = 0
    private var predictions: [Int: Set<Int>] = [:]
    /// The same three counts per layer.
    public private(set) var predictionByLayer: [Int: (predicted: Int, selected: Int, both: Int)] = [:]
    /// Expert uses computed from a low-precision copy (precision fallback), and the bytes
    /// of such copies read (counted in `bytesRead` too).
    public internal(set) var lowPrecisionUses = 0
    public internal(set) var lowPrecisionBytesRead: UInt64 = 0
    /// Copies made in memory (quantized from experts read at full precision), the seconds
    /// that took, and the expert uses computed from such copies (counted in
    /// `lowPrecisionUses` too; the rest of those are copies read from a pack).
    public internal(set) var copiesMade = 0
    public internal(set) var copySeconds = 0.0
    public internal(set) var madeCopyUses = 0
    /// Of `copiesMade`, those made while reads were in flight (off the critical path); the
    /// rest were made just before their expert's slot was reused, delaying that read.
    public internal(set) var copiesMadeWhileWaiting = 0
    /// Every expert use (hits and misses, both precisions).
    public var expertUses: Int { totalHits + totalMisses }
    public internal(set) var bytesRead: UInt64 = 0
    public internal(set) var expertsRead = 0
    /// Seconds during which at least one read was outstanding.
    public internal(set) var readBusySeconds = 0.0
    /// Seconds the computation spent blocked waiting for reads.
    public internal(set) var stallSeconds = 0.0
    /// Tokens evaluated (every forward pass adds its batch size).
    public internal(set) var tokens = 0
    /// Sequential read bandwidth of the device, when measured (bytes per second).
    public var diskBandwidth: Double?

    public init() {}

    func hit(layer: Int, inFlight: Bool = false) {
        hits[layer, default: 0] += 1
        if inFlight { inFlightHits += 1 }
    }

    func recordHint(layer: Int, experts: [Int]) { predictions[layer] = Set(experts) }

    /// Scores the prediction made for `layer`, if any, against what it selected.
    func recordPrediction(layer: Int, actual: [Int]) {
        guard let p = predictions.removeValue(forKey: layer) else { return }
        let both = actual.filter { p.contains($0) }.count
        predicted += p.count
        selected += actual.count
        predictedAndSelected += both
        let c = predictionByLayer[layer] ?? (0, 0, 0)
        predictionByLayer[layer] = (c.predicted + p.count, c.selected + actual.count, c.both + both)
    }

    /// Of the experts layers selected, the share that had been predicted.
    public var predictionRecall: Double { selected > 0 ? Double(predictedAndSelected) / Double(selected) : 0 }
    /// Of the experts predicted, the share then selected.
    public var predictionPrecision: Double { predicted > 0 ? Double(predictedAndSelected) / Double(predicted) : 0 }
    func miss(layer: Int) { misses[layer, default: 0] += 1 }

    public var totalHits: Int { hits.values.reduce(0, +) }
    public var totalMisses: Int { misses.values.reduce(0, +) }
    public var hitRate: Double {
        let n = totalHits + totalMisses
        return n > 0 ? Double(totalHits) / Double(n) : 0
    }
    /// Bytes per second while reads were outstanding.
    public var readBandwidth: Double { readBusySeconds > 0 ? Double(bytesRead) / readBusySeconds : 0 }
    public var bytesPerToken: Double { tokens > 0 ? Double(bytesRead) / Double(tokens) : 0 }
    /// The tokens/s the disk allows if every byte read per token has to come off it.
    public var diskBoundTokensPerSecond: Double? {
        guard let bw = diskBandwidth, bytesPerToken > 0 else { return nil }
        return bw / bytesPerToken
    }

    public func reset() {
        hits = [:]
        misses = [:]
        bytesRead = 0
        expertsRead = 0
        readBusySeconds = 0
        stallSeconds = 0
        tokens = 0
        inFlightHits = 0
        prefetchesIssued = 0
        prefetchesUsed = 0
        prefetchesWasted = 0
        predicted = 0
        selected = 0
        predictedAndSelected = 0
        predictionByLayer = [:]
        lowPrecisionUses = 0
        lowPrecisionBytesRead = 0
        copiesMade = 0
        copySeconds = 0
        madeCopyUses = 0
        copiesMadeWhileWaiting = 0
    }

    /// A readable report (several lines, no trailing newline).
    public func report(perLayer: Bool = true) -> String {
        var lines: [String] = []
        let lookups = totalHits + totalMisses
        lines.append(String(format: "experts: hit rate %.1f%% (%d of %d lookups), %d read", 100 * hitRate, totalHits, lookups, expertsRead))
        if selected > 0 {
            lines.append(String(format: "prediction: recall %.1f%%, precision %.1f%%; prefetched %d experts: %d used (%d still arriving when asked for), %d evicted unused",
                                100 * predictionRecall, 100 * predictionPrecision, prefetchesIssued, prefetchesUsed,
                                inFlightHits, prefetchesWasted))
        }
        if lowPrecisionUses > 0 || copiesMade > 0 {
            var line = String(format: "precision fallback: %d of %d expert uses from low-precision copies (%.1f%%)",
                              lowPrecisionUses, lookups, 100 * Double(lowPrecisionUses) / Double(max(lookups, 1)))
            if copiesMade > 0 {
                line += String(format: ", %d from copies made in memory, %d from copies read (%@); %d copies made in %.1f ms (%.2f ms each, %d while waiting for reads)",
                               madeCopyUses, lowPrecisionUses - madeCopyUses, formatBytes(lowPrecisionBytesRead),
                               copiesMade, 1000 * copySeconds, 1000 * copySeconds / Double(copiesMade), copiesMadeWhileWaiting)
            } else {
                line += ", \(formatBytes(lowPrecisionBytesRead)) of them read"
            }
            lines.append(line)
        }
        if perLayer && selected > 0 {
            let cells = predictionByLayer.keys.sorted().map { l -> String in
                let c = predictionByLayer[l]!
                return String(format: "%d:%.0f/%.0f", l, c.selected > 0 ? 100 * Double(c.both) / Double(c.selected) : 0,
                              c.predicted > 0 ? 100 * Double(c.both) / Double(c.predicted) : 0)
            }
            lines.append("prediction recall/precision % per layer: " + cells.joined(separator: " "))
        }
        if perLayer {
            let layers = Set(hits.keys).union(misses.keys).sorted()
            let cells = layers.map { l -> String in
                let h = hits[l] ?? 0, n = h + (misses[l] ?? 0)
                return String(format: "%d:%.0f%%", l, n > 0 ? 100 * Double(h) / Double(n) : 0)
            }
            lines.append("hit rate per layer: " + cells.joined(separator: " "))
        }
        lines.append(String(format: "read: %@ (%@ per token), %.2f GB/s while reading, I/O stall %.1f ms per token",
                            formatBytes(bytesRead), formatBytes(Int(bytesPerToken)), readBandwidth / 1e9,
                            tokens > 0 ? 1000 * stallSeconds / Double(tokens) : 0))
        if let bw = diskBandwidth {
            if let bound = diskBoundTokensPerSecond {
                lines.append(String(format: "disk bound: %.2f tokens/s (%.2f GB/s disk / %@ read per token)",
                                    bound, bw / 1e9, formatBytes(Int(bytesPerToken))))
            } else {
                lines.append(String(format: "disk bound: none (nothing read; disk %.2f GB/s)", bw / 1e9))
            }
        }
        return lines.joined(separator: "\n")
    }
}
