import ArgumentParser
import Engine
import Foundation

/// `--session FILE` and how a saved session comes back (`generate` and `chat`).
struct SessionOptions: ParsableArguments {
    @Option(name: .customLong("session"),
            help: ArgumentHelp("Save the conversation's keys and values to this file when done (atomically) and, when it exists, resume from it without recomputing what it holds.",
                               valueName: "file"))
    var path: String?

    @Option(name: .customLong("session-restore"),
            help: ArgumentHelp("How a saved session comes back: auto (load the blocks from the end while recomputing from the start, whichever is estimated faster for each chunk: Cake), load, or compute.",
                               valueName: "strategy"))
    var strategy: RestoreStrategy = .automatic

    /// The saved session at `--session`, header checked; nil when none is given or the file
    /// does not exist yet. A file that is not a valid session is an error (it is left as it is).
    func openSaved() throws -> SavedSession? {
        guard let path, FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            return try SessionFile.open(path: path)
        } catch {
            reportError(error)
            throw ExitCode.failure
        }
    }

    /// One line on what a restore did.
    static func describe(_ r: RestoreReport, of total: Int, unit: String) -> String {
        String(format: "session: %d of %d %@ restored (%d loaded, %.1f MiB; %d recomputed) in %.1f ms",
               r.positions, total, unit, r.loadedPositions, Double(r.bytesRead) / 1048576, r.computedPositions,
               r.seconds * 1000)
    }
}
