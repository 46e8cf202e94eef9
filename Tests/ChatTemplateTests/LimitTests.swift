import ChatTemplate
import Testing

@Suite("Limits")
struct LimitTests {
    private func repeated(_ s: String, _ n: Int) -> String { String(repeating: s, count: n) }

    @Test("output and string sizes are bounded")
    func outputSize() throws {
        #expect(try renderError("{{ 'x' * 20000000 }}") == .limitExceeded("a string longer than 16777216 bytes at 1:8"))
        let small = ChatTemplate.Options(maxOutputBytes: 1000)
        #expect(try renderError("{% for i in range(100) %}{{ '0123456789abcdef' }}{% endfor %}", options: small)
            == .limitExceeded("output larger than 1000 bytes"))
        #expect(try renderError("{% set ns = namespace(s='ab') %}{% for i in range(20) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                                options: small) == .limitExceeded("a string longer than 1000 bytes at 1:76"))
        #expect(try renderError("{{ [1, 2] * 600000 }}") == .limitExceeded("a list longer than 1000000 items at 1:11"))
        // Filters and methods that could build huge strings check before they build.
        #expect(try renderError("{{ 'x'|center(10 ** 12) }}") == .limitExceeded("center: width 1000000000000 is too large"))
        #expect(try renderError("{{ ('a\\n' * 400)|indent(100) }}", options: small)
            == .limitExceeded("a string longer than 1000 bytes at 1:18"))
        #expect(try renderError("{{ ('x' * 900).replace('x', 'yy') }}", options: small)
            == .limitExceeded("a string longer than 1000 bytes at 1:23"))
        #expect(try renderError("{{ 'abc'|replace('', 'x' * 600) }}", options: small)
            == .limitExceeded("a string longer than 1000 bytes at 1:10"))
        #expect(try renderError("{{ ['x' * 600, 'y' * 600]|join }}", options: small)
            == .limitExceeded("a string longer than 1000 bytes at 1:27"))
        #expect(try renderError("{{ ['x' * 600, 'y' * 600, 'z']|tojson(indent=2) }}", options: small)
            == .limitExceeded("tojson: text longer than 1000 bytes at 1:32"))
        #expect(try renderError("{{ ['a', 'b']|sum(start='') }}") == .type("sum() can't sum strings (use join)", at: TemplateLocation(line: 1, column: 15)))
        #expect(try render("{{ 'ab' * 500 }}", options: small).count == 1000)
    }

    @Test("loops are bounded")
    func loops() throws {
        let small = ChatTemplate.Options(maxLoopIterations: 10_000)
        #expect(try renderError("{% for i in range(200) %}{% for j in range(200) %}{% endfor %}{% endfor %}", options: small)
            == .limitExceeded("more than 10000 loop iterations"))
        #expect(try renderError("{% for i in range(10 ** 12) %}{% endfor %}") == .limitExceeded("range() of 1000000000000 items is longer than 1000000"))
        #expect(try render("{{ range(1000000)|length }}") == "1000000")
    }

    @Test("runaway nesting is refused when parsing", arguments: [
        ("parentheses", "{{ " + String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000) + " }}"),
        ("lists", "{{ " + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000) + " }}"),
        ("not", "{{ " + String(repeating: "not ", count: 5000) + "x }}"),
        ("minus", "{{ " + String(repeating: "-", count: 5000) + "1 }}"),
        ("inline if", "{{ " + String(repeating: "1 if x else ", count: 5000) + "2 }}"),
        ("operator chain", "{{ 1" + String(repeating: " + 1", count: 100_000) + " }}"),
        ("attribute chain", "{{ x" + String(repeating: ".a", count: 100_000) + " }}"),
        ("filter chain", "{{ x" + String(repeating: "|trim", count: 100_000) + " }}"),
        ("blocks", String(repeating: "{% if true %}", count: 5000) + String(repeating: "{% endif %}", count: 5000)),
        ("loops", String(repeating: "{% for x in y %}", count: 5000) + String(repeating: "{% endfor %}", count: 5000)),
    ])
    func deepNesting(_ name: String, _ source: String) {
        guard case .limitExceeded? = parseError(source) else {
            Issue.record("\(name): expected a nesting limit error, got \(String(describing: parseError(source)))")
            return
        }
    }

    @Test("recursive macros are bounded")
    func recursiveMacro() throws {
        #expect(try renderError("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
            == .limitExceeded("macro calls nested deeper than 16 levels at 1:21"))
        // Within the limit recursion works.
        let countdown = "{% macro f(n) %}{{ n }}{% if n > 0 %},{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(15) }}"
        #expect(try render(countdown) == "15,14,13,12,11,10,9,8,7,6,5,4,3,2,1,0")
    }

    @Test("values built in loops cannot nest or grow without bound")
    func valueGrowth() throws {
        #expect(try renderError("{% set ns = namespace(x=0) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}")
            == .limitExceeded("values nested deeper than 256 levels at 1:56"))
        #expect(try renderError("{% set ns = namespace(x=0) %}{% for i in range(1000) %}{% set ns.x = {'a': ns.x} %}{% endfor %}")
            == .limitExceeded("values nested deeper than 256 levels at 1:56"))
        #expect(try renderError("{% set ns = namespace(x=none) %}{% for i in range(1000) %}{% set ns.x = namespace(prev=ns.x) %}{% endfor %}")
            == .limitExceeded("values nested deeper than 256 levels at 1:59"))
        #expect(try renderError("{% set ns = namespace(x={}) %}{% for i in range(1000) %}{% set ns.x = dict(a=ns.x) %}{% endfor %}")
            == .limitExceeded("values nested deeper than 256 levels at 1:57"))
        #expect(try renderError("{% set ns = namespace(x=1) %}{% for i in range(40) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}")
            == .limitExceeded("a value holding more than 4000000 items at 1:68"))
        // A namespace that holds itself counts as nested without end.
        #expect(try renderError("{% set ns = namespace() %}{% set ns.me = [ns] %}")
            == .limitExceeded("values nested deeper than 256 levels at 1:27"))
        #expect(try render("{% set ns = namespace() %}{{ [ns] }}") == "[<Namespace>]")
        let deep: TemplateValue = (0..<300).reduce(TemplateValue.int(0)) { inner, _ in .array([inner]) }
        #expect(try renderError("{{ x }}", ["x": deep]) == .limitExceeded("the variable 'x' nests deeper than 256 levels"))
    }

    @Test("the deepest templates the limits allow end in an error, not a crash")
    func deepestAllowed() throws {
        // Recursing macros through long operator chains inside nested blocks reach the
        // evaluation limit first.
        for (blocks, chain) in [(0, 250), (30, 200), (60, 150)] {
            let open = repeated("{% if true %}", blocks / 2) + repeated("{% for i in [1] %}", blocks - blocks / 2)
            let close = repeated("{% endfor %}", blocks - blocks / 2) + repeated("{% endif %}", blocks / 2)
            let source = "{% macro f(n) %}{% if n < 16 %}" + open + "{{ f(n + 1)" + repeated(" ~ 'x'", chain) + " }}" + close
                + "{% else %}end{% endif %}{% endmacro %}{{ f(1)|length }}"
            guard case .limitExceeded(let message)? = try renderError(source) else {
                Issue.record("expected the evaluation limit for \(blocks) blocks, \(chain) operators")
                continue
            }
            #expect(message.hasPrefix("evaluation nested deeper than 256 levels"))
        }
        // Just within the parser's limits.
        #expect(try render("{{ " + repeated("(", 60) + "1" + repeated(")", 60) + " }}") == "1")
        #expect(try render(repeated("{% if true %}", 60) + "x" + repeated("{% endif %}", 60)) == "x")
        #expect(try render("{{ 0" + repeated(" + 1", 250) + " }}") == "250")
    }
}
