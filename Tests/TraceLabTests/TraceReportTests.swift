import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import TestSupport
import Testing
@testable import TraceLab

/// The report's page as a structure: self-contained, every chart well-formed SVG with the
/// series and markers it claims.
@Suite("trace report")
struct TraceReportTests {
    static let MiB = 1 << 20
    static let trace = try! RouteTraceFile.read(path: SharedData.path("traces/gemma-4-26b-a4b.route.csv"))

    static let page: String = {
        let input = TraceReport.Input(trace: trace) { .bytesAfterBatch(budget: $0) }
        let report = try! TraceReport.build([input], budgets: [300 * MiB, 1000 * MiB, 3000 * MiB], policies: ["lru", "lfu", "belady"],
                                            cost: (disk: 2e9, compute: 0.05))
        return report.html(title: "a <test> & report")
    }()

    static func svgs(_ page: String) -> [String] {
        page.ranges(of: "<svg").map { start in
            let end = page[start.lowerBound...].range(of: "</svg>")!.upperBound
            return String(page[start.lowerBound..<end])
        }
    }

    @Test("one page that fetches and runs nothing: no scripts, links, imports or URLs but the SVG namespace")
    func selfContained() {
        let p = Self.page
        #expect(p.hasPrefix("<!DOCTYPE html>"))
        for banned in ["<script", "<link", "@import", "url(", "<img", "<iframe", "https:"] {
            #expect(!p.contains(banned), "\(banned)")
        }
        let http = p.ranges(of: "http://").map { String(p[$0.lowerBound...].prefix(26)) }
        #expect(http.allSatisfy { $0 == "http://www.w3.org/2000/svg" }, "\(Set(http))")
        #expect(p.contains("<h1>a &lt;test&gt; &amp; report</h1>"), "text is escaped")
    }

    @Test("six charts, each well-formed XML: hit rate, bytes, tokens/s, per layer, heat map, SCH")
    func charts() throws {
        let svgs = Self.svgs(Self.page)
        #expect(svgs.count == 6)
        for svg in svgs {
            let parser = XMLParser(data: Data(svg.utf8))
            #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "") in \(svg.prefix(200))")
        }
        let titles = svgs.map { svg in svg.firstMatch(of: /<title>([^<]*)<\/title>/).map { String($0.1) } ?? "" }
        #expect(titles[0] == "decode hit rate against budget")
        #expect(titles[3].hasPrefix("decode hit rate per layer at"))
        #expect(titles[4].hasPrefix("use per layer and expert"))
        #expect(titles[5].hasPrefix("SCH"))
        // The hit-rate chart: one polyline of 3 points per policy, Belady dashed, the cycle marked.
        let hit = svgs[0]
        let lines = hit.matches(of: /<polyline class="series" data-name="([a-z]+)" points="([^"]*)"[^>]*>/)
        #expect(lines.map { String($0.1) } == ["lru", "lfu", "belady"])
        #expect(lines.allSatisfy { $0.2.split(separator: " ").count == 3 })
        #expect(lines.last!.0.contains("stroke-dasharray"))
        #expect(hit.contains("class=\"marker\"") && hit.contains("one token&#39;s cycle"))
        // Belady's points lie above (smaller y) or on every other policy's at each budget.
        func ys(_ m: Regex<(Substring, Substring, Substring)>.Match) -> [Double] {
            m.2.split(separator: " ").map { Double($0.split(separator: ",")[1])! }
        }
        let belady = ys(lines.last!)
        for other in lines.dropLast() { #expect(zip(belady, ys(other)).allSatisfy { $0 <= $1 + 0.05 }) }
        // The heat map: 30 rows of layers, cells only where an expert was used.
        #expect(svgs[4].matches(of: /<rect x=/).count > 30 * 10)
        // The table: a row per budget, the best online policy marked.
        #expect(Self.page.matches(of: /<tr><td>/).count == 3)
        #expect(Self.page.contains("class=\"best\""))
    }

    @Test("default budgets run from a quarter of one token's cycle to twelve times it, within all experts")
    func defaultBudgets() {
        let b = TraceReport.defaultBudgets(Self.trace, minimum: 1)
        #expect(b.count == 11 && b.first! == Self.trace.oneTokenCycleBytes / 4 && b == b.sorted())
    }
}
