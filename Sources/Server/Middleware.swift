import Foundation
import Hummingbird
import Logging

/// Requires `Authorization: Bearer <key>` on every route but `/health`. The key is compared
/// in time that depends on its length only, never on how much of it a guess got right.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: [UInt8]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path != "/health" else { return try await next(request, context) }
        let header = request.headers[.authorization] ?? ""
        let prefix = "Bearer "
        let given = header.hasPrefix(prefix) ? Array(header.utf8.dropFirst(prefix.utf8.count)) : []
        guard constantTimeEqual(given, key) else {
            var response = try APIError(status: .unauthorized,
                                        message: header.isEmpty ? "this server needs an API key: send 'Authorization: Bearer <key>'"
                                            : "the API key given is not the server's",
                                        type: "invalid_request_error", code: "invalid_api_key")
                .response(from: request, context: context)
            response.headers[.wwwAuthenticate] = "Bearer"
            return response
        }
        return try await next(request, context)
    }
}

/// Whether `given` is `key`, in time that depends on the key's length only.
func constantTimeEqual(_ given: [UInt8], _ key: [UInt8]) -> Bool {
    var difference = UInt8(given.count == key.count ? 0 : 1)
    for i in 0..<key.count {
        difference |= key[i] ^ (i < given.count ? given[i] : 0)
    }
    return difference == 0
}

/// Counts every answered request by route and status, and logs one line for each route
/// that is not a completion (those log their own line, with their tokens and times, when
/// their stream ends).
struct RequestAccountingMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics
    let logger: Logger
    static var knownRoutes: Set<String> {
        ["/health", "/metrics", "/v1/models", "/models", "/v1/completions", "/completions", "/v1/chat/completions",
         "/chat/completions", "/tokenize", "/detokenize"]
    }
    static var generationRoutes: Set<String> { ["/v1/completions", "/completions", "/v1/chat/completions", "/chat/completions"] }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let response = try await next(request, context)
        let path = request.uri.path
        // Unknown paths are counted under one label, so a scanner cannot grow the metrics.
        let route = Self.knownRoutes.contains(path) ? path : "other"
        metrics.countRequest(route: route, status: response.status.code)
        if !Self.generationRoutes.contains(path) || response.status.code != 200 {
            let ms = Double((ContinuousClock.now - started).nanoseconds) / 1e6
            logger.info("request", metadata: ["method": "\(request.method)", "route": "\(path)", "status": "\(response.status.code)",
                                              "ms": "\(String(format: "%.1f", ms))"])
        }
        return response
    }
}
