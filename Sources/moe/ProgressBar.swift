import Engine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress bar on standard error, drawn only when it is a terminal (logs and
/// pipes get the final figures alone).
final class ProgressBar {
    private let title: String
    private let total: Int
    private let isTerminal = isatty(STDERR_FILENO) == 1
    private let started = ContinuousClock.now
    private var lastDraw = ContinuousClock.now - .seconds(1)

    init(_ title: String, total: Int) {
        self.title = title
        self.total = max(total, 1)
    }

    /// Draws `done` of `total`, with an optional figure after the bar (throttled to 10 Hz).
    func update(_ done: Int, detail: String = "") {
        guard isTerminal else { return }
        let now = ContinuousClock.now
        guard done >= total || now - lastDraw >= .milliseconds(100) else { return }
        lastDraw = now
        let width = 30
        let fraction = min(1, Double(done) / Double(total))
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let seconds = (now - started).seconds
        let eta = fraction > 0 ? seconds / fraction - seconds : 0
        let line = String(format: "\r%@ %@ %3.0f%% %d/%d  %@  %.0fs left\u{1B}[K",
                          title, bar, fraction * 100, done, total, detail, eta)
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Clears the bar's line.
    func finish() {
        guard isTerminal else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
