/// "1.50 GiB", "320.00 MiB", "100 B": how `moe inspect` and every message given a `UInt64`
/// show a size. (Experts' generic `formatBytes`, which other integers resolve to, shows one
/// decimal; both stay so that no output changes.)
public func formatBytes(_ b: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(b)
    var i = 0
    while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
    return i == 0 ? "\(b) B" : "\(formatTwoDecimals(v)) \(units[i])"
}

/// `v` rounded to two decimals and written with both ("1.50"), as sizes and counts show.
public func formatTwoDecimals(_ v: Double) -> String {
    let r = (v * 100).rounded() / 100
    var s = "\(r)"
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < 2 { s += String(repeating: "0", count: 2 - decimals) }
    }
    return s
}
