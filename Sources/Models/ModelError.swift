import GGUF
import KV
import Kernels
import Storage

/// Why a model could not be loaded or run. Every case names what was wrong so the command
/// line can print one clear sentence; errors of the layers below (the file format, storage)
/// and of the parts plugged into the model (an expert provider, a routing observer) are
/// carried as they are, so a caller can still tell them apart.
public enum ModelError: Error, Equatable, CustomStringConvertible {
    case unknownArchitecture(String)
    case missingArchitecture
    case missingHyperParameter(String)
    case invalidHyperParameter(key: String, detail: String)
    case missingTensor(String)
    case wrongShape(tensor: String, expected: [Int], actual: [Int])
    case unsupportedType(tensor: String, type: GGMLType)
    case tokenOutOfRange(token: Int, vocabularySize: Int)
    case emptyInput
    case contextOverflow(needed: Int, capacity: Int)
    case kvCache(KVError)
    /// The model file is not valid GGUF.
    case format(path: String, GGUFError)
    /// Reading the model file (or allocating memory for it) failed.
    case storage(StorageError)
    /// The expert provider could not be set up or could not serve a layer.
    case experts(any ModelComponentError)
    /// The routing observer failed.
    case observer(any ModelComponentError)
    /// The file's contents are unusable in a way no other case names.
    case file(String)

    public var description: String {
        switch self {
        case let .unknownArchitecture(a):
            return "unknown architecture '\(a)' (supported: \(ArchitectureRegistry.names.joined(separator: ", ")))"
        case .missingArchitecture:
            return "the file has no general.architecture"
        case let .missingHyperParameter(k):
            return "missing hyper-parameter \(k)"
        case let .invalidHyperParameter(k, d):
            return "invalid hyper-parameter \(k): \(d)"
        case let .missingTensor(n):
            return "missing tensor \(n)"
        case let .wrongShape(n, e, a):
            return "tensor \(n) has shape \(a), expected \(e)"
        case let .unsupportedType(n, t):
            return "tensor \(n) has type \(t), which this runtime cannot compute with"
        case let .tokenOutOfRange(t, v):
            return "token id \(t) is out of range (vocabulary of \(v))"
        case .emptyInput:
            return "no input tokens"
        case let .contextOverflow(needed, capacity):
            return "context overflow: \(needed) positions needed, the context holds \(capacity)"
        case let .kvCache(e):
            return e.description
        case let .format(path, e):
            return "\(path): \(e.description)"
        case let .storage(e):
            return e.description
        case let .experts(e), let .observer(e):
            return e.description
        case let .file(d):
            return d
        }
    }

    public static func == (a: ModelError, b: ModelError) -> Bool {
        switch (a, b) {
        case let (.unknownArchitecture(x), .unknownArchitecture(y)): return x == y
        case (.missingArchitecture, .missingArchitecture), (.emptyInput, .emptyInput): return true
        case let (.missingHyperParameter(x), .missingHyperParameter(y)): return x == y
        case let (.invalidHyperParameter(k1, d1), .invalidHyperParameter(k2, d2)): return k1 == k2 && d1 == d2
        case let (.missingTensor(x), .missingTensor(y)): return x == y
        case let (.wrongShape(n1, e1, a1), .wrongShape(n2, e2, a2)): return n1 == n2 && e1 == e2 && a1 == a2
        case let (.unsupportedType(n1, t1), .unsupportedType(n2, t2)): return n1 == n2 && t1 == t2
        case let (.tokenOutOfRange(t1, v1), .tokenOutOfRange(t2, v2)): return t1 == t2 && v1 == v2
        case let (.contextOverflow(n1, c1), .contextOverflow(n2, c2)): return n1 == n2 && c1 == c2
        case let (.kvCache(x), .kvCache(y)): return x == y
        case let (.format(p1, x), .format(p2, y)): return p1 == p2 && x == y
        case let (.storage(x), .storage(y)): return x == y
        case let (.experts(x), .experts(y)), let (.observer(x), .observer(y)): return x.isEqual(to: y)
        case let (.file(x), .file(y)): return x == y
        default: return false
        }
    }
}

extension ModelError {
    /// A storage backend's failure (its calls throw untyped errors, in practice always
    /// `StorageError`) as a model error.
    public static func storageFailure(_ error: any Error, path: String) -> ModelError {
        (error as? StorageError).map { .storage($0) } ?? .file("\(path): \(error)")
    }
}

/// An error of a part another module plugs into the model (an expert provider, a routing
/// observer): `ModelError` carries it as a value through the model's typed throws.
public protocol ModelComponentError: Error, CustomStringConvertible, Sendable {
    /// Whether `other` is the same error (of the same type, equal).
    func isEqual(to other: any ModelComponentError) -> Bool
}

extension ModelComponentError where Self: Equatable {
    public func isEqual(to other: any ModelComponentError) -> Bool { (other as? Self) == self }
}
