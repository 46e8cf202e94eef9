import ArgumentParser
import ChatTemplate
import Engine
import Experts
import Foundation
import Synchronization
import Tokenizer
#if canImport(Glibc)
import Glibc
#endif

/// Set by SIGINT while a reply streams; the generation loop polls it. An atomic, so the
/// signal handler touches nothing but a lock-free store.
private let interruptRequested = Atomic<Bool>(false)
private let replying = Atomic<Bool>(false)

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with a model, using its own chat template.",
        discussion: """
        Type a message and press Enter. Ctrl-C stops a reply (not the program); Ctrl-D or /exit \
        quits. Commands: /reset forgets the conversation, /help lists the commands.
        """)

    @OptionGroup var options: ModelOptions
    @OptionGroup var sampling: SamplingOptions

    @Option(name: [.customShort("n"), .customLong("n-predict")], help: "Tokens per reply at most.")
    var tokens: Int = 256

    @Option(name: .customLong("system"), help: "A system prompt that starts the conversation.")
    var system: String?

    @OptionGroup var sessionOptions: SessionOptions

    func validate() throws {
        guard tokens > 0 else { throw ValidationError("-n must be positive") }
    }

    func run() throws {
        let runtime = try options.load(sampling: sampling.parameters)
        let metadata = runtime.model.weights.file.metadata
        let tokenizer = try runReporting { try runtime.makeTokenizer() }
        let saved = try sessionOptions.openSaved()
        let session = try runReporting { try runtime.makeSession(defaultKVType: saved?.layout.type) }
        let conversation: Conversation
        do {
            conversation = try Conversation(session: session, tokenizer: tokenizer, metadata: metadata,
                                            systemPrompt: system)
        } catch {
            reportError(error)
            throw ExitCode.failure
        }
        if conversation.usesFallbackTemplate {
            printError("note: the model has no chat template; using ChatML")
        }
        if let saved {
            // The saved conversation goes on as it was (its own system prompt included).
            let report = try runReporting { try conversation.resume(from: saved, strategy: sessionOptions.strategy) }
            let turns = conversation.messages.filter { $0.role != "system" }.count
            printError(SessionOptions.describe(report, of: saved.count, unit: "positions") + ", \(turns) messages")
            if system != nil { printError("note: --system is ignored: the resumed conversation has its own") }
        }
        installInterruptHandler()
        let interactive = isatty(STDIN_FILENO) == 1
        var input = LineReader(fd: STDIN_FILENO)
        let out = FileHandle.standardOutput
        var sampler = Sampler(runtime.configuration.sampling)
        // Pace between streamed pieces, to rehearse a slow device (the terminal tests use it
        // to have time to press Ctrl-C mid-reply).
        let pace = ProcessInfo.processInfo.environment["MOE_CHAT_PIECE_DELAY_MS"].flatMap { UInt32($0) } ?? 0
        if interactive {
            printError("moe chat: \(session.model.hyperParameters.architecture), context \(session.cache.capacity) tokens. "
                       + "/help for commands, Ctrl-D to quit.")
        }
        while true {
            if interactive { out.write(Data("\n> ".utf8)) }
            guard let line = input.nextLine() else { break }
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            if text.hasPrefix("/") {
                if !command(text, conversation: conversation, sampler: &sampler) { break }
                continue
            }
            interruptRequested.store(false, ordering: .relaxed)
            replying.store(true, ordering: .relaxed)
            let reply: Conversation.Reply
            do {
                reply = try conversation.reply(to: line, maxTokens: tokens, sampler: &sampler) { piece in
                    out.write(Data(piece.utf8))
                    if pace > 0 { usleep(pace * 1000) }
                    return !interruptRequested.load(ordering: .relaxed)
                }
            } catch {
                replying.store(false, ordering: .relaxed)
                out.write(Data("\n".utf8))
                reportError(error)
                continue
            }
            replying.store(false, ordering: .relaxed)
            out.write(Data("\n".utf8))
            if reply.interrupted { printError("[stopped]") }
            save(conversation)
            if reply.droppedMessages > 0 {
                printError("[context full: dropped the \(reply.droppedMessages) oldest message(s)]")
            }
            if options.offload.stats {
                let s = reply.stats
                printError(String(format: "[prompt %d tokens (%d reused), %.1f tokens/s | reply %d tokens, %.1f tokens/s]",
                                  s.promptTokens, reply.reusedTokens, s.promptTokensPerSecond,
                                  s.generatedTokens, s.generationTokensPerSecond))
                options.printExpertStats(runtime)
            }
        }
        try runReporting { try runtime.closeRecording() }
    }

    /// Runs a slash command; false means quit.
    private func command(_ text: String, conversation: Conversation, sampler: inout Sampler) -> Bool {
        let parts = text.split(separator: " ", maxSplits: 1).map(String.init)
        switch parts[0] {
        case "/exit", "/quit", "/bye":
            return false
        case "/reset":
            conversation.reset()
            sampler = Sampler(sampling.parameters)
            printError("[conversation reset]")
            save(conversation)
        case "/save":
            guard let path = parts.count > 1 ? parts[1] : sessionOptions.path else {
                printError("error: /save FILE (or start with --session FILE)")
                break
            }
            save(conversation, to: path)
            printError("[saved to \(path)]")
        case "/load":
            guard parts.count > 1 else {
                printError("error: /load FILE")
                break
            }
            do {
                let saved = try SessionFile.open(path: parts[1])
                let report = try conversation.resume(from: saved, strategy: sessionOptions.strategy)
                sampler = Sampler(sampling.parameters)
                printError("[" + SessionOptions.describe(report, of: saved.count, unit: "positions") + "]")
            } catch {
                reportError(error, note: " (the conversation goes on as it was)")
            }
        case "/help":
            printError("""
            /reset        forget the conversation (the system prompt stays)
            /save [FILE]  save the conversation (default: the --session file)
            /load FILE    resume a saved conversation
            /exit         quit (Ctrl-D too)
            Ctrl-C        stop the current reply
            """)
        default:
            printError("error: unknown command \(parts[0]) (/help lists them)")
        }
        return true
    }

    /// Saves the conversation to `path` (default: `--session`); a failure is reported and
    /// the chat goes on (the previous file stays whole).
    private func save(_ conversation: Conversation, to path: String? = nil) {
        guard let path = path ?? sessionOptions.path else { return }
        do { try conversation.save(to: path) } catch { reportError(error) }
    }
}

/// Ctrl-C during a reply stops the reply; at the prompt it reminds how to quit.
private func installInterruptHandler() {
    var action = sigaction()
    action.__sigaction_handler.sa_handler = { _ in
        if replying.load(ordering: .relaxed) {
            interruptRequested.store(true, ordering: .relaxed)
        } else {
            let hint = "\n(Ctrl-D or /exit quits)\n> "
            _ = hint.withCString { write(STDERR_FILENO, $0, strlen($0)) }
        }
    }
    sigemptyset(&action.sa_mask)
    action.sa_flags = SA_RESTART
    sigaction(SIGINT, &action, nil)
    // A parent may have started us with SIGINT blocked (some test runners and launchers do).
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGINT)
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
}

/// Lines from a file descriptor through read(2): stdio's buffered stdin is avoided so that
/// end of input (Ctrl-D) and interrupted reads behave the same in a terminal and a pipe.
struct LineReader {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var chunk = [UInt8](repeating: 0, count: 4096)
    private var atEnd = false

    init(fd: Int32) { self.fd = fd }

    /// The next line without its newline; nil at end of input (a last unterminated line is
    /// still returned).
    mutating func nextLine() -> String? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                var line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            if atEnd {
                guard !buffer.isEmpty else { return nil }
                defer { buffer.removeAll() }
                return String(decoding: buffer, as: UTF8.self)
            }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                buffer += chunk[..<n]
            } else if n == 0 || errno != EINTR {
                atEnd = true
            }
        }
    }
}
