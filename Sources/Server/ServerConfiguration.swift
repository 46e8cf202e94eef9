/// How `moe serve` listens and what it accepts (its flags); the model and its runtime are
/// Engine's `RuntimeConfiguration`.
public struct ServerConfiguration: Sendable {
    /// Address to bind: loopback unless the user says otherwise.
    public var host = "127.0.0.1"
    /// Port (0: any free one, reported once listening).
    public var port = 8080
    /// The id `/v1/models` lists and responses name (default: the file's name).
    public var modelName: String
    public var scheduler = SchedulerConfiguration()
    /// Largest request body accepted (`--max-body`); larger is refused with 413.
    public var maxBodyBytes = 4 << 20
    /// Time a client has to send its whole request body (`--read-timeout`); then 408.
    public var readTimeout: Duration = .seconds(30)
    /// A connection with nothing to read or write for this long is closed (`--idle-timeout`).
    public var idleTimeout: Duration = .seconds(60)
    /// How long running streams may go on after SIGTERM before they are ended (`--shutdown-timeout`).
    public var shutdownTimeout: Duration = .seconds(10)
    /// When set, every route but `/health` needs `Authorization: Bearer <key>`.
    public var apiKey: String?
    /// Shut down gracefully on SIGTERM and SIGINT (off for servers inside the tests' process).
    public var handlesSignals = true

    public init(modelName: String) {
        self.modelName = modelName
    }
}
