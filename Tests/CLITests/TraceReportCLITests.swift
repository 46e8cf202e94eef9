import Foundation
import Testing

/// `moe trace report` end to end: the page written, then rendered by a real headless browser
/// (Debian's chromium), whose screenshot must show the plots.
@Suite("moe trace report on the command line")
struct TraceReportCLITests {
    private let cli = CLITests()
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var chromium: String? {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func run(_ executable: String, _ arguments: [String]) throws -> (Int32, String, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    @Test("the shared trace's report renders in chromium: not blank, every policy's colour and Belady's on screen")
    func rendersInABrowser() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moe-report-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let html = dir.appendingPathComponent("report.html").path
        let trace = CLITests.shared.appendingPathComponent("traces/gemma-4-26b-a4b.route.csv").path
        let r = try cli.run(["trace", "report", trace, "-o", html, "--budget", "300M,1000M,3000M,6000M", "--policy", "lru,lfu,belady",
                             "--disk-gbps", "2", "--compute-ms", "50"])
        #expect(r.status == 0 && r.stderr.contains("wrote \(html)"), "\(r.stderr)")
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(page.contains("</html>"))

        let browser = try #require(Self.chromium, "no chromium: tools/setup.sh installs it")
        let png = dir.appendingPathComponent("shot.png").path
        let shot = try run(browser, ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1500,2400",
                                     "--user-data-dir=\(dir.appendingPathComponent("profile").path)", "--screenshot=\(png)", "file://\(html)"])
        #expect(FileManager.default.fileExists(atPath: png), "chromium wrote no screenshot: \(shot.2.suffix(500))")
        // lru's and lfu's colours, Belady's near-black and the heat map's deepest blue.
        let colours = ["#1f77b4", "#ff7f0e", "#111111", "#1c4eb4"]
        let stats = try run("/usr/bin/env", ["python3", Self.root.appendingPathComponent("tools/png-stats.py").path, png] + colours)
        #expect(stats.0 == 0, "\(stats.2)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(stats.1.utf8)) as? [String: Any])
        let inked = try #require(o["inked_share"] as? Double)
        #expect(inked > 0.03 && inked < 0.6, "share of non-white pixels: \(inked)")
        let counts = try #require(o["colours"] as? [String: Int])
        for c in colours { #expect((counts[c] ?? 0) > 50, "\(c): \(counts[c] ?? 0) pixels") }
    }

    @Test("an output path that cannot be written is one clear error, and a file already there is left whole")
    func errors() throws {
        let trace = CLITests.shared.appendingPathComponent("traces/gemma-4-26b-a4b.route.csv").path
        let bad = try cli.run(["trace", "report", trace, "-o", "/nonexistent-dir/r.html", "--budget", "1000M", "--policy", "lru"])
        #expect(bad.status != 0 && bad.stderr.contains("cannot write '/nonexistent-dir/r.html'"), "\(bad.stderr)")
        let existing = FileManager.default.temporaryDirectory.appendingPathComponent("moe-report-\(UUID().uuidString).html").path
        defer { try? FileManager.default.removeItem(atPath: existing) }
        try "kept".write(toFile: existing, atomically: true, encoding: .utf8)
        let noPolicy = try cli.run(["trace", "report", trace, "-o", existing, "--policy", "nope"])
        #expect(noPolicy.status != 0 && noPolicy.stderr.contains("no policy 'nope'"), "\(noPolicy.stderr)")
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "kept")
    }
}
