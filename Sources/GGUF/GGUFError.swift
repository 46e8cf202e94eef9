/// A malformed or unsupported GGUF file. Every error names what was wrong, the field
/// being read and the byte offset where it starts.
public struct GGUFError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case badMagic
        case unsupportedVersion
        case truncated
        case countTooLarge
        case invalidString
        case unknownValueType
        case invalidValue
        case nestingTooDeep
        case duplicateKey
        case duplicateTensor
        case invalidAlignment
        case invalidDimensions
        case unknownTensorType
        case misalignedTensor
        case tensorOutOfBounds
        case overlappingTensors
        case wrongValueType
        case missingKey
        case storage
        case writeFailed
    }

    public var kind: Kind
    /// What was being read ("header.tensor_count", "kv[3].key", "tensor 'blk.0.attn_q.weight'.type").
    public var field: String
    /// Absolute byte offset in the file where `field` starts (0 when not applicable).
    public var offset: UInt64
    public var detail: String

    public init(_ kind: Kind, field: String, offset: UInt64, _ detail: String) {
        self.kind = kind
        self.field = field
        self.offset = offset
        self.detail = detail
    }

    public var description: String {
        "invalid GGUF (\(kind.rawValue)) at byte \(offset), \(field): \(detail)"
    }
}
