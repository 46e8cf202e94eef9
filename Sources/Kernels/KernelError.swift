import GGUF

/// Why a kernel refused to run. Callers (model loading) check support up front, so these
/// surface as clear load-time errors rather than traps in the middle of a token.
public enum KernelError: Error, Equatable, CustomStringConvertible {
    /// `operation` (dequantize, quantize, matmul) has no implementation for `type`.
    case unsupportedType(GGMLType, operation: String)
    /// Sizes that do not fit together (row length not a multiple of the block size, ...).
    case shapeMismatch(String)

    public var description: String {
        switch self {
        case let .unsupportedType(type, operation):
            return "tensor type \(type) is not supported for \(operation)"
        case let .shapeMismatch(detail):
            return "shape mismatch: \(detail)"
        }
    }
}
