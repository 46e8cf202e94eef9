import ArgumentParser
import Engine
import Models

struct Logits: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Feed token ids as one batch at positions 0... and print every position's logits as JSON.")

    @OptionGroup var options: ModelOptions

    @Option(help: "Token ids, space separated (no BOS is added).")
    var tokens: String

    @Option(help: "Then greedily decode this many tokens, one at a time.")
    var greedy: Int = 0

    @Flag(help: "Print JSON (the only output format; accepted for clarity).")
    var json = false

    func run() throws {
        let parts = tokens.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\n" || $0 == "\t" })
        var ids: [Int] = []
        for p in parts {
            guard let id = Int(p) else {
                printError("error: '\(p)' in --tokens is not a token id")
                throw ExitCode.failure
            }
            ids.append(id)
        }
        guard greedy >= 0 else { throw ValidationError("--greedy must be ≥ 0") }
        let runtime = try options.load()
        let session = try runReporting { try runtime.makeSession() }
        let vocab = runtime.model.vocabularySize
        let logits = try runReporting { try session.evaluate(ids, logits: .all) }
        var greedyIds: [Int] = []
        var last = Array(logits.suffix(vocab))
        for _ in 0..<greedy {
            guard session.position < session.cache.capacity else { break }
            var sampler = Sampler(.greedy)
            let next = last.withUnsafeBufferPointer { sampler.sample($0) }
            greedyIds.append(next)
            last = try runReporting { try session.evaluate([next]) }
        }
        var out = "{\"logits\": ["
        out.reserveCapacity(logits.count * 12)
        for row in 0..<ids.count {
            if row > 0 { out += ", " }
            out += "["
            for i in 0..<vocab {
                if i > 0 { out += ", " }
                out += "\(logits[row * vocab + i])"
            }
            out += "]"
        }
        out += "], \"greedy\": [" + greedyIds.map(String.init).joined(separator: ", ") + "]}"
        try runReporting { try runtime.closeRecording() }
        print(out)
    }
}
