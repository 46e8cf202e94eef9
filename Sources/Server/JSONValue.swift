import Foundation

/// A JSON value as a request carries it, kept apart by kind so that a field of the wrong
/// type is reported as such (`"temperature": "hot"` is an error naming `temperature`, not a
/// decoding failure somewhere in the body).
public enum JSONValue: Sendable, Equatable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    /// What a message about a value of the wrong type calls it.
    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    /// Parses a request body: UTF-8 JSON whose top level is an object.
    public static func parseObject(_ bytes: [UInt8]) throws(APIError) -> [String: JSONValue] {
        guard !bytes.isEmpty else { throw .invalid("the request body is empty; expected a JSON object", code: "invalid_json") }
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw .invalid("the request body is not valid UTF-8", code: "invalid_utf8")
        }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
        } catch {
            throw .invalid("the request body is not valid JSON: \(Self.describe(error))", code: "invalid_json")
        }
        guard case let .object(fields) = value else {
            throw .invalid("the request body must be a JSON object, not \(value.kind)", code: "invalid_json")
        }
        return fields
    }

    private static func describe(_ error: any Error) -> String {
        if case let DecodingError.dataCorrupted(context) = error {
            let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return underlying ?? context.debugDescription
        }
        return "\(error)"
    }
}

/// Typed access to a request's fields: each accessor returns nil for a field that is absent
/// (or null) and throws an error naming the field when it has the wrong type or range.
struct RequestFields {
    let fields: [String: JSONValue]

    func has(_ key: String) -> Bool {
        if let v = fields[key], v != .null { return true }
        return false
    }

    func string(_ key: String) throws(APIError) -> String? {
        switch fields[key] {
        case nil, .null?: return nil
        case let .string(s)?: return s
        case let v?: throw .invalid("'\(key)' must be a string, not \(v.kind)", param: key)
        }
    }

    func bool(_ key: String) throws(APIError) -> Bool? {
        switch fields[key] {
        case nil, .null?: return nil
        case let .bool(b)?: return b
        case let v?: throw .invalid("'\(key)' must be a boolean, not \(v.kind)", param: key)
        }
    }

    func number(_ key: String, in range: ClosedRange<Double>) throws(APIError) -> Double? {
        switch fields[key] {
        case nil, .null?: return nil
        case let .number(n)?:
            guard range.contains(n) else {
                throw .invalid("'\(key)' must be between \(Self.show(range.lowerBound)) and \(Self.show(range.upperBound)), not \(Self.show(n))",
                               param: key)
            }
            return n
        case let v?: throw .invalid("'\(key)' must be a number, not \(v.kind)", param: key)
        }
    }

    func integer(_ key: String, in range: ClosedRange<Int>) throws(APIError) -> Int? {
        switch fields[key] {
        case nil, .null?: return nil
        case let .number(n)?:
            guard n == n.rounded(), abs(n) < 1e15 else { throw .invalid("'\(key)' must be an integer, not \(Self.show(n))", param: key) }
            let i = Int(n)
            guard range.contains(i) else {
                throw .invalid("'\(key)' must be between \(range.lowerBound) and \(range.upperBound), not \(i)", param: key)
            }
            return i
        case let v?: throw .invalid("'\(key)' must be an integer, not \(v.kind)", param: key)
        }
    }

    func object(_ key: String) throws(APIError) -> RequestFields? {
        switch fields[key] {
        case nil, .null?: return nil
        case let .object(o)?: return RequestFields(fields: o)
        case let v?: throw .invalid("'\(key)' must be an object, not \(v.kind)", param: key)
        }
    }

    static func show(_ x: Double) -> String {
        x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x)
    }
}
