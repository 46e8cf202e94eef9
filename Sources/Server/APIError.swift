import Foundation
import Hummingbird
import NIOCore

/// A failure as OpenAI's API reports it: a status and `{"error": {"message", "type",
/// "param", "code"}}`. Every route throws these; `ErrorBodyMiddleware` gives the rest
/// (unknown routes, Hummingbird's own errors, anything unexpected) the same shape.
public struct APIError: Error, HTTPResponseError, CustomStringConvertible, Equatable {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?

    public init(status: HTTPResponse.Status, message: String, type: String, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public var description: String { message }

    /// A request the server cannot act on (400), naming the field at fault.
    public static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: .badRequest, message: message, type: "invalid_request_error", param: param, code: code)
    }

    /// The server cannot take the request now (the model loads, it shuts down, memory ran out).
    public static func unavailable(_ message: String, code: String) -> APIError {
        APIError(status: .serviceUnavailable, message: message, type: "server_error", code: code)
    }

    public static func internalError(_ message: String) -> APIError {
        APIError(status: .internalServerError, message: message, type: "server_error", code: "internal_error")
    }

    /// The error body, as JSON bytes.
    public var body: Data {
        func quoted(_ s: String?) -> Any { s.map { $0 as Any } ?? NSNull() }
        let object: [String: Any] = ["error": ["message": message, "type": type, "param": quoted(param), "code": quoted(code)]]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if status == .tooManyRequests || status == .serviceUnavailable { headers[.retryAfter] = "1" }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Turns whatever a route throws into an OpenAI-shaped error response, so a client never
/// sees an HTML page or an empty body.
struct ErrorBodyMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return try error.response(from: request, context: context)
        } catch is NIOTooManyBytesError {
            return try APIError(status: .contentTooLarge, message: "the request body is larger than the server accepts (--max-body)",
                           type: "invalid_request_error", code: "body_too_large").response(from: request, context: context)
        } catch let error as HTTPError {
            let message: String
            let code: String
            switch error.status {
            case .notFound:
                message = "no route \(request.method) \(request.uri.path)"
                code = "not_found"
            case .methodNotAllowed:
                message = "\(request.uri.path) does not take \(request.method)"
                code = "method_not_allowed"
            default:
                message = error.body ?? error.status.reasonPhrase
                code = "http_\(error.status.code)"
            }
            return try APIError(status: error.status, message: message,
                                type: error.status.code >= 500 ? "server_error" : "invalid_request_error", code: code)
                .response(from: request, context: context)
        } catch let error as any HTTPResponseError {
            return try APIError(status: error.status, message: error.status.reasonPhrase,
                                type: error.status.code >= 500 ? "server_error" : "invalid_request_error",
                                code: "http_\(error.status.code)").response(from: request, context: context)
        } catch {
            return try APIError.internalError("internal error: \(error)").response(from: request, context: context)
        }
    }
}
