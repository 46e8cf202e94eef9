/// Finds a request's stop strings in the text a sequence generates, across the pieces the
/// tokens decode to: text that could be the start of a stop string is held back until the
/// next piece decides, so a client never sees part of a stop string. Matching is over
/// Unicode scalars, so a stop string is found wherever it appears, whatever the tokens.
struct StopMatcher {
    private let stops: [[Unicode.Scalar]]
    private var held: [Unicode.Scalar] = []

    init(_ stops: [String]) {
        self.stops = stops.map { Array($0.unicodeScalars) }.filter { !$0.isEmpty }
    }

    /// Adds `text`; returns what may be shown now and whether a stop string was found (then
    /// the text ends before it, and nothing more should be appended).
    mutating func append(_ text: String) -> (text: String, stopped: Bool) {
        guard !stops.isEmpty else { return (text, false) }
        held.append(contentsOf: text.unicodeScalars)
        if let at = firstMatch() {
            let shown = String(String.UnicodeScalarView(held[..<at]))
            held = []
            return (shown, true)
        }
        let keep = longestSuffixStartingAStop()
        let shown = String(String.UnicodeScalarView(held[..<(held.count - keep)]))
        held.removeFirst(held.count - keep)
        return (shown, false)
    }

    /// The text held back, when the sequence ends without a stop string.
    mutating func finish() -> String {
        defer { held = [] }
        return String(String.UnicodeScalarView(held))
    }

    private func firstMatch() -> Int? {
        var best: Int?
        for stop in stops where stop.count <= held.count {
            var i = 0
            while i + stop.count <= held.count, best.map({ i < $0 }) ?? true {
                if held[i] == stop[0] && held[i..<(i + stop.count)].elementsEqual(stop) {
                    best = i
                    break
                }
                i += 1
            }
        }
        return best
    }

    /// The length of the longest end of the held text that is a proper prefix of a stop string.
    private func longestSuffixStartingAStop() -> Int {
        var longest = 0
        for stop in stops {
            var length = min(stop.count - 1, held.count)
            while length > longest {
                if held[(held.count - length)...].elementsEqual(stop[..<length]) {
                    longest = length
                    break
                }
                length -= 1
            }
        }
        return longest
    }
}
