@testable import Server
import Testing

@Suite("Stop strings")
struct StopMatcherTests {
    /// Feeds `pieces` and returns what was shown and whether a stop string was found.
    static func run(_ stops: [String], _ pieces: [String]) -> (String, Bool) {
        var m = StopMatcher(stops)
        var shown = ""
        for p in pieces {
            let (text, stopped) = m.append(p)
            shown += text
            if stopped { return (shown, true) }
        }
        return (shown + m.finish(), false)
    }

    @Test("a stop string split across pieces is found, and none of it is shown")
    func splitAcrossPieces() {
        #expect(Self.run(["</end>"], ["Hello </", "en", "d> after"]) == ("Hello ", true))
        #expect(Self.run(["ab"], ["xa", "b"]) == ("x", true))
    }

    @Test("text that only looked like the start of a stop string is shown once the next piece decides")
    func falseStartsAreReleased() {
        var m = StopMatcher(["STOP"])
        #expect(m.append("abc ST") == ("abc ", false))
        #expect(m.append("ART") == ("START", false))
        #expect(Self.run(["STOP"], ["a ST"]) == ("a ST", false))
    }

    @Test("the earliest of several stop strings wins; multi-byte text is matched by scalars")
    func earliestAndUnicode() {
        #expect(Self.run(["world", "lo"], ["hello world"]) == ("hel", true))
        #expect(Self.run(["é!"], ["caf", "é", "! more"]) == ("caf", true))
        #expect(Self.run([], ["any", "thing"]) == ("anything", false))
    }
}

@Suite("API key")
struct APIKeyTests {
    @Test("only the exact key matches, whatever its prefix or length")
    func exactMatchOnly() {
        let key = Array("s3cret".utf8)
        #expect(constantTimeEqual(Array("s3cret".utf8), key))
        #expect(!constantTimeEqual(Array("s3cre".utf8), key))
        #expect(!constantTimeEqual(Array("s3cret!".utf8), key))
        #expect(!constantTimeEqual(Array("s3creT".utf8), key))
        #expect(!constantTimeEqual([], key))
    }
}
