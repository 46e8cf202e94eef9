import Engine
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// `moe serve`: the HTTP front (Hummingbird) and the scheduler thread (which loads the
/// model, then runs every request's sequences) under one service group that shuts both down
/// in order. The server listens before the model is loaded, so `/health` can say 503 while
/// it loads; a model that fails to load ends `run` with the error.
public final class ModelServer: Sendable {
    public let configuration: ServerConfiguration
    public let runtimeConfiguration: RuntimeConfiguration
    public let metrics: ServerMetrics
    let scheduler: GenerationScheduler
    let logger: Logger
    private let group = GroupBox()

    public init(configuration: ServerConfiguration, runtime: RuntimeConfiguration, logger: Logger) {
        self.configuration = configuration
        runtimeConfiguration = runtime
        self.logger = logger
        metrics = ServerMetrics()
        scheduler = GenerationScheduler(configuration: configuration.scheduler, metrics: metrics, logger: logger)
    }

    /// Serves until SIGTERM or SIGINT (when `handlesSignals`), `shutdown()`, or the task is
    /// cancelled. `onListening` gets the port bound (the one asked, or the one picked for 0).
    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: RequestAccountingMiddleware(metrics: metrics, logger: logger))
        router.add(middleware: ErrorBodyMiddleware())
        if let key = configuration.apiKey { router.add(middleware: APIKeyMiddleware(key: Array(key.utf8))) }
        Routes(configuration: configuration, scheduler: scheduler, metrics: metrics, logger: logger).register(on: router)

        let idle = TimeAmount.nanoseconds(configuration.idleTimeout.nanoseconds)
        let logger = self.logger
        let host = configuration.host
        let app = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: idle)),
            configuration: .init(address: .hostname(host, port: configuration.port), serverName: "moe"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("listening", metadata: ["address": "\(host):\(port)"])
                await onListening(port)
            },
            logger: logger)
        scheduler.start(loading: runtimeConfiguration)
        let front = FrontService(app: app, scheduler: scheduler, grace: configuration.shutdownTimeout)
        let back = SchedulerService(scheduler: scheduler, grace: configuration.shutdownTimeout)
        // Shut down in reverse order: the front stops accepting and lets its streams end
        // (the scheduler ends them after the grace period), then the scheduler stops.
        let serviceGroup = ServiceGroup(configuration: .init(
            services: [.init(service: back), .init(service: front)],
            gracefulShutdownSignals: configuration.handlesSignals ? [.sigterm, .sigint] : [],
            logger: logger))
        group.set(serviceGroup)
        try await serviceGroup.run()
    }

    /// Begins a graceful shutdown, as SIGTERM does.
    public func shutdown() async {
        await group.get()?.triggerGracefulShutdown()
    }
}

private final class GroupBox: @unchecked Sendable {
    private let lock = NSLock()
    private var group: ServiceGroup?
    func set(_ g: ServiceGroup) { lock.withLock { group = g } }
    func get() -> ServiceGroup? { lock.withLock { group } }
}

/// The HTTP server; on graceful shutdown it also tells the scheduler to drain, so that the
/// streams the server waits for end within the grace period.
struct FrontService: Service {
    let app: Application<RouterResponder<BasicRequestContext>>
    let scheduler: GenerationScheduler
    let grace: Duration

    func run() async throws {
        let scheduler = self.scheduler
        let grace = self.grace
        try await withGracefulShutdownHandler {
            try await app.run()
        } onGracefulShutdown: {
            Task { await scheduler.drain(grace: grace) }
        }
    }
}

/// The scheduler thread as a service: it fails the group when the model does not load, and
/// stops the thread at shutdown (after the front has stopped).
struct SchedulerService: Service {
    let scheduler: GenerationScheduler
    let grace: Duration

    func run() async throws {
        let scheduler = self.scheduler
        try await withTaskCancellationHandler {
            try await scheduler.waitUntilLoaded()
            try? await gracefulShutdown()
            await scheduler.drain(grace: grace)
        } onCancel: {
            Task { await scheduler.drain(grace: .zero) }
        }
    }
}
