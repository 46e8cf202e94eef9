import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `--session FILE` for generate and chat as a user meets it: resume without recomputing,
/// bad files refused with the file left alone, and a save killed halfway leaving the old
/// session in place.
@Suite("Sessions on the command line")
struct SessionCLITests {
    private let cli = CLITests()
    static let prompt = "Once upon a time, in a small village at the edge of a great forest, there lived a baker"

    func generate(_ model: String, session: String, prompt: String = Self.prompt, _ extra: [String] = []) throws -> CLITests.Result {
        try cli.run(["generate", "-m", cli.model(model), "-p", prompt, "-n", "8", "--temp", "0", "--session", session] + extra)
    }

    @Test func generateResumesAndContinuesTheSame() throws {
        try TemporaryDirectory.with(prefix: "moe-session-cli") { dir in
            let path = dir.appendingPathComponent("g.session").path
            let first = try generate("tiny-qwen3moe.q8_0.gguf", session: path)
            #expect(first.status == 0, "\(first.stderr)")
            #expect(!first.stderr.contains("session:"))
            #expect(FileManager.default.fileExists(atPath: path))

            for strategy in ["load", "compute", "auto"] {
                let again = try generate("tiny-qwen3moe.q8_0.gguf", session: path, ["--session-restore", strategy])
                #expect(again.status == 0, "\(again.stderr)")
                #expect(again.stdout == first.stdout, "\(strategy): the continuation changed")
                #expect(again.stderr.contains("time to first token"))
                // The saved session held prompt + generated tokens: all but the prompt's last
                // token come back.
                let line = again.stderr.split(separator: "\n").first { $0.hasPrefix("session: ") } ?? ""
                let counts = line.split(separator: " ")
                #expect(counts.count > 4 && counts[1] == Substring(String(Int(counts[3])! - 1)), "\(line)")
                #expect(line.contains(strategy == "compute" ? "(0 loaded" : "; 0 recomputed"), "\(line)")
            }
            // Another prompt sharing the beginning reuses that much.
            let other = try generate("tiny-qwen3moe.q8_0.gguf", session: path, prompt: "Once upon a time, in a big city")
            #expect(other.status == 0, "\(other.stderr)")
            #expect(other.stderr.contains("session: "), "\(other.stderr)")
        }
    }

    @Test func badSessionsAreRefusedAndLeftAlone() throws {
        try TemporaryDirectory.with(prefix: "moe-session-cli") { dir in
            let path = dir.appendingPathComponent("g.session").path
            #expect(try generate("tiny-qwen3moe.q8_0.gguf", session: path).status == 0)
            var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            bytes[bytes.count - 10] ^= 0xFF
            try Data(bytes).write(to: URL(fileURLWithPath: path))

            let corrupted = try generate("tiny-qwen3moe.q8_0.gguf", session: path, ["--session-restore", "load"])
            #expect(corrupted.status == 1)
            #expect(corrupted.stderr.contains("error: session \(path): block "), "\(corrupted.stderr)")
            #expect(corrupted.stderr.contains("fails its checksum (the file is corrupted)"))
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: path))) == bytes)

            let otherModel = try generate("tiny-qwen3moe.f16.gguf", session: path)
            #expect(otherModel.status == 1)
            #expect(otherModel.stderr.contains("saved by another model (tiny-qwen3moe.q8_0.gguf"), "\(otherModel.stderr)")

            let notASession = dir.appendingPathComponent("text.session").path
            try Data("hello".utf8).write(to: URL(fileURLWithPath: notASession))
            let text = try generate("tiny-qwen3moe.q8_0.gguf", session: notASession)
            #expect(text.status == 1)
            #expect(text.stderr.contains("not a session file"), "\(text.stderr)")
            #expect(try String(contentsOfFile: notASession, encoding: .utf8) == "hello")

            let badFlag = try generate("tiny-qwen3moe.q8_0.gguf", session: path, ["--session-restore", "guess"])
            #expect(badFlag.status != 0 && badFlag.stderr.contains("The value 'guess' is invalid for '--session-restore <strategy>'. Please provide one of 'auto', 'load' or 'compute'."))
        }
    }

    @Test func quantizedSessionsKeepTheirType() throws {
        try TemporaryDirectory.with(prefix: "moe-session-cli") { dir in
            let path = dir.appendingPathComponent("q.session").path
            let first = try generate("tiny-qwen3.f16.gguf", session: path, ["--kv-type", "q8_0"])
            #expect(first.status == 0, "\(first.stderr)")
            // Without --kv-type the session's own type is used.
            let again = try generate("tiny-qwen3.f16.gguf", session: path)
            #expect(again.status == 0, "\(again.stderr)")
            #expect(again.stdout == first.stdout)
            let clash = try generate("tiny-qwen3.f16.gguf", session: path, ["--kv-type", "f16"])
            #expect(clash.status == 1)
            #expect(clash.stderr.contains("holds q8_0 keys and values; this run uses f16 (pass --kv-type q8_0)"), "\(clash.stderr)")
        }
    }

    @Test func chatResumesTheConversation() throws {
        try TemporaryDirectory.with(prefix: "moe-session-cli") { dir in
            let path = dir.appendingPathComponent("c.session").path
            let model = cli.model("tiny-qwen3moe.f16.gguf")
            let first = try cli.run(["chat", "-m", model, "-n", "6", "--temp", "0", "--session", path],
                                    input: "Hello\nHow are you\n")
            #expect(first.status == 0, "\(first.stderr)")
            let second = try cli.run(["chat", "-m", model, "-n", "6", "--temp", "0", "--session", path, "--stats"],
                                     input: "Tell me more\n")
            #expect(second.status == 0, "\(second.stderr)")
            #expect(second.stderr.contains(", 4 messages"), "\(second.stderr)")
            // The third turn's prompt reuses the whole saved conversation.
            #expect(second.stderr.contains(" reused),"), "\(second.stderr)")
            #expect(!second.stderr.contains("(0 reused)"), "\(second.stderr)")

            // The same three turns in one run give the same last reply.
            let oneRun = try cli.run(["chat", "-m", model, "-n", "6", "--temp", "0"], input: "Hello\nHow are you\nTell me more\n")
            #expect(oneRun.stdout.split(separator: "\n").last == second.stdout.split(separator: "\n").last)

            // A generate session is not a chat, and the reverse.
            let generated = dir.appendingPathComponent("g.session").path
            #expect(try generate("tiny-qwen3moe.f16.gguf", session: generated).status == 0)
            let wrong = try cli.run(["chat", "-m", model, "--session", generated], input: "Hi\n")
            #expect(wrong.status == 1 && wrong.stderr.contains("was saved by `moe generate`, not `moe chat`"), "\(wrong.stderr)")
            let reverse = try generate("tiny-qwen3moe.f16.gguf", session: path)
            #expect(reverse.status == 1 && reverse.stderr.contains("was saved by `moe chat`, not `moe generate`"))
        }
    }

    /// A save killed halfway: the temporary file is a FIFO the test reads a little of and
    /// then stops reading, so the writer blocks mid-file; it is killed there.
    @Test func killedDuringSaveLeavesTheOldSession() throws {
        try TemporaryDirectory.with(prefix: "moe-session-cli") { dir in
            let path = dir.appendingPathComponent("k.session").path
            // About 70 positions: 5 blocks of 24 KiB, more than a pipe's 64 KiB buffer.
            let long = String(repeating: Self.prompt + ". ", count: 3)
            #expect(try generate("tiny-qwen3moe.f16.gguf", session: path, prompt: long).status == 0)
            let before = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(before.count > 100_000)

            let process = Process()
            process.executableURL = CLITests.executable
            process.arguments = ["generate", "-m", cli.model("tiny-qwen3moe.f16.gguf"), "-p", long + " And more.", "-n", "4",
                                 "--temp", "0", "--session", path]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            defer { if process.isRunning { process.terminate() } }
            let temporary = path + ".tmp-\(process.processIdentifier)"
            #expect(mkfifo(temporary, 0o600) == 0)
            let fd = open(temporary, O_RDONLY | O_NONBLOCK)
            #expect(fd >= 0)
            defer { close(fd); unlink(temporary) }
            var received = 0
            var chunk = [UInt8](repeating: 0, count: 1000)
            let deadline = Date().addingTimeInterval(60)
            while received == 0 && Date() < deadline && process.isRunning {
                let n = read(fd, &chunk, chunk.count)
                if n > 0 { received += n } else { usleep(2000) }
            }
            #expect(received > 0, "the save never started")
            #expect(Array(chunk.prefix(8)) == Array("MOESESSN".utf8))
            usleep(50_000)
            #expect(process.isRunning, "the writer should be blocked on the full pipe")
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()

            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: path))) == before)
            let resumed = try generate("tiny-qwen3moe.f16.gguf", session: path, prompt: long)
            #expect(resumed.status == 0, "\(resumed.stderr)")
            #expect(resumed.stderr.contains("session: "), "\(resumed.stderr)")
        }
    }
}
