import Foundation

/// Line charts and heat maps as inline SVG: what `moe trace report` draws, with nothing
/// fetched or run (no scripts, no web fonts), so a report opens anywhere, offline.
struct SVGChart {
    struct Series {
        var name: String
        var color: String
        var dashed = false
        var points: [(x: Double, y: Double)]
    }

    var title: String
    var xLabel: String
    var yLabel: String
    var series: [Series] = []
    /// Vertical lines with a label (e.g. one token's cycle).
    var markers: [(x: Double, label: String)] = []
    var logX = false
    /// The y axis starts at 0; it ends at this value when given (1 for hit rates).
    var yMaximum: Double?
    var xFormat: (Double) -> String = { String(format: "%g", $0) }
    var yFormat: (Double) -> String = { String(format: "%g", $0) }
    var width = 680.0
    var height = 380.0

    private let left = 64.0, right = 150.0, top = 34.0, bottom = 48.0

    func render() -> String {
        let xs = series.flatMap { $0.points.map(\.x) } + markers.map(\.x)
        let ys = series.flatMap { $0.points.map(\.y) }
        guard let x0 = xs.min(), let x1 = xs.max(), !ys.isEmpty else {
            return "<p class=\"empty\">\(escape(title)): nothing to plot</p>"
        }
        let lowX = logX ? max(x0, 1e-12) : x0
        let highX = x1 > lowX ? x1 : lowX * 2 + 1
        let yTop = yMaximum ?? niceCeiling(ys.max() ?? 1)
        let plotW = width - left - right, plotH = height - top - bottom
        func px(_ x: Double) -> Double {
            let f = logX ? (log(max(x, lowX)) - log(lowX)) / (log(highX) - log(lowX)) : (x - lowX) / (highX - lowX)
            return left + f * plotW
        }
        func py(_ y: Double) -> Double { top + plotH - (yTop > 0 ? min(max(y, 0), yTop) / yTop : 0) * plotH }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"\(Int(width))\" height=\"\(Int(height))\" "
            + "viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(escape(title))\">\n"
        out += "<title>\(escape(title))</title>\n"
        out += "<rect x=\"0\" y=\"0\" width=\"\(Int(width))\" height=\"\(Int(height))\" fill=\"#ffffff\"/>\n"
        out += text(left, 20, title, size: 14, weight: "600")
        // Grid and ticks.
        for t in yTicks(yTop) {
            let y = py(t)
            out += line(left, y, left + plotW, y, color: "#e4e4e4")
            out += text(left - 6, y + 4, yFormat(t), size: 11, anchor: "end")
        }
        for t in xTicks(lowX, highX) {
            let x = px(t)
            out += line(x, top, x, top + plotH, color: "#efefef")
            out += text(x, top + plotH + 16, xFormat(t), size: 11, anchor: "middle")
        }
        out += line(left, top + plotH, left + plotW, top + plotH, color: "#444444")
        out += line(left, top, left, top + plotH, color: "#444444")
        out += text(left + plotW / 2, height - 10, xLabel, size: 12, anchor: "middle")
        out += "<text x=\"16\" y=\"\(fmt(top + plotH / 2))\" font-size=\"12\" text-anchor=\"middle\" "
            + "transform=\"rotate(-90 16 \(fmt(top + plotH / 2)))\">\(escape(yLabel))</text>\n"
        for m in markers {
            let x = px(m.x)
            out += "<line class=\"marker\" x1=\"\(fmt(x))\" y1=\"\(fmt(top))\" x2=\"\(fmt(x))\" y2=\"\(fmt(top + plotH))\" "
                + "stroke=\"#888888\" stroke-width=\"1.5\" stroke-dasharray=\"3 3\"/>\n"
            out += text(x + 4, top + 12, m.label, size: 11, color: "#555555")
        }
        for (i, s) in series.enumerated() {
            let pts = s.points.sorted { $0.x < $1.x }.map { "\(fmt(px($0.x))),\(fmt(py($0.y)))" }.joined(separator: " ")
            out += "<polyline class=\"series\" data-name=\"\(escape(s.name))\" points=\"\(pts)\" fill=\"none\" stroke=\"\(s.color)\" "
                + "stroke-width=\"\(s.dashed ? 2.5 : 2)\"\(s.dashed ? " stroke-dasharray=\"7 4\"" : "")/>\n"
            for p in s.points {
                out += "<circle cx=\"\(fmt(px(p.x)))\" cy=\"\(fmt(py(p.y)))\" r=\"2.6\" fill=\"\(s.color)\"/>\n"
            }
            let ly = top + 8 + Double(i) * 18
            out += line(left + plotW + 14, ly, left + plotW + 38, ly, color: s.color, width: 3, dashed: s.dashed)
            out += text(left + plotW + 44, ly + 4, s.name, size: 12)
        }
        return out + "</svg>\n"
    }

    private func xTicks(_ a: Double, _ b: Double) -> [Double] {
        guard logX else { return linearTicks(a, b) }
        var ticks: [Double] = []
        var decade = pow(10, floor(log10(a)))
        while decade <= b * 1.0001 {
            for m in [1.0, 2, 5] where decade * m >= a * 0.9999 && decade * m <= b * 1.0001 { ticks.append(decade * m) }
            decade *= 10
        }
        return ticks.count >= 2 ? ticks : [a, b]
    }

    private func yTicks(_ top: Double) -> [Double] { linearTicks(0, top) }

    private func linearTicks(_ a: Double, _ b: Double) -> [Double] {
        guard b > a else { return [a] }
        let raw = (b - a) / 5
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var ticks: [Double] = []
        var t = ceil(a / step) * step
        while t <= b + step * 1e-6 { ticks.append(t); t += step }
        return ticks
    }

    private func niceCeiling(_ v: Double) -> Double {
        guard v > 0 else { return 1 }
        let magnitude = pow(10, floor(log10(v)))
        return ([1.0, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map { $0 * magnitude }.first { $0 >= v }) ?? v
    }
}

/// A rows × columns grid of shares in [0, 1], darker for more.
struct SVGHeatMap {
    var title: String
    var rowLabels: [String]
    var columnLabel: String
    var values: [[Double]]
    var width = 680.0

    func render() -> String {
        let columns = values.map(\.count).max() ?? 0
        guard columns > 0, !values.isEmpty else { return "<p class=\"empty\">\(escape(title)): nothing to plot</p>" }
        let left = 44.0, top = 30.0, cellH = max(4, min(12, 360 / Double(values.count)))
        let cellW = (width - left - 20) / Double(columns)
        let height = top + cellH * Double(values.count) + 40
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\" width=\"\(Int(width))\" height=\"\(Int(height))\" "
            + "viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(escape(title))\">\n<title>\(escape(title))</title>\n"
        out += "<rect x=\"0\" y=\"0\" width=\"\(Int(width))\" height=\"\(Int(height))\" fill=\"#ffffff\"/>\n"
        out += text(left, 20, title, size: 14, weight: "600")
        for (r, row) in values.enumerated() {
            let y = top + Double(r) * cellH
            if values.count <= 40 || r % 4 == 0 { out += text(left - 4, y + cellH - 2, rowLabels[r], size: min(10, cellH), anchor: "end") }
            for (c, v) in row.enumerated() where v > 0 {
                // White to deep blue.
                let t = min(max(v, 0), 1)
                let red = Int(255 - 227 * t), green = Int(255 - 177 * t), blue = Int(255 - 75 * t)
                out += "<rect x=\"\(fmt(left + Double(c) * cellW))\" y=\"\(fmt(y))\" width=\"\(fmt(cellW + 0.2))\" height=\"\(fmt(cellH + 0.2))\" "
                    + "fill=\"rgb(\(red),\(green),\(blue))\"/>\n"
            }
        }
        out += "<rect x=\"\(fmt(left))\" y=\"\(fmt(top))\" width=\"\(fmt(cellW * Double(columns)))\" height=\"\(fmt(cellH * Double(values.count)))\" "
            + "fill=\"none\" stroke=\"#888888\"/>\n"
        out += text(left + cellW * Double(columns) / 2, height - 12, columnLabel, size: 12, anchor: "middle")
        return out + "</svg>\n"
    }
}

func escape(_ s: String) -> String {
    var out = ""
    for ch in s {
        switch ch {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(ch)
        }
    }
    return out
}

private func fmt(_ v: Double) -> String { String(format: "%.1f", v) }

private func text(_ x: Double, _ y: Double, _ s: String, size: Double, anchor: String = "start", weight: String = "400",
                  color: String = "#222222") -> String {
    "<text x=\"\(fmt(x))\" y=\"\(fmt(y))\" font-size=\"\(fmt(size))\" font-weight=\"\(weight)\" text-anchor=\"\(anchor)\" fill=\"\(color)\">\(escape(s))</text>\n"
}

private func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, color: String, width: Double = 1, dashed: Bool = false) -> String {
    "<line x1=\"\(fmt(x1))\" y1=\"\(fmt(y1))\" x2=\"\(fmt(x2))\" y2=\"\(fmt(y2))\" stroke=\"\(color)\" stroke-width=\"\(fmt(width))\""
        + (dashed ? " stroke-dasharray=\"7 4\"" : "") + "/>\n"
}
