import GGUF
import KV
import Kernels
import Storage

/// Why a model could not be loaded or run. Every case names what was wrong so the command
/// line can print one clear sentence.
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
    case storage(String)
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
        case let .storage(d):
            return "read failed: \(d)"
        case let .file(d):
            return d
        }
    }
}
