import ArgumentParser
import Engine
import Experts
import KV
import Storage

// The runtime's enumerations as flag values: swift-argument-parser checks them and lists
// their values in --help. The conformances live here, at the edge, so the libraries do
// not depend on the argument parser.

extension KVType: ExpressibleByArgument {}

extension PrefetchMode: ExpressibleByArgument {}

extension RestoreStrategy: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument.lowercased()) }
}

extension StorageBackendPreference: ExpressibleByArgument {
    /// Also the spellings `init(parsing:)` accepts (`iouring`, `uring`, any case).
    public init?(argument: String) { self.init(parsing: argument) }
}

/// A cache policy's name (`ExpertPolicies.choices`: `auto` and one per policy file).
struct ExpertPolicyName: ExpressibleByArgument {
    let name: String

    init(_ name: String) { self.name = name }

    init?(argument: String) {
        guard ExpertPolicies.choices.contains(argument) else { return nil }
        name = argument
    }

    var defaultValueDescription: String { name }
    static var allValueStrings: [String] { ExpertPolicies.choices }
}

/// A byte-count flag's value (`600M`, `1.5G`, `4096`), or a validation error naming the flag.
func byteCountFlag(_ text: String, flag: String, example: String, allowZero: Bool = true) throws -> Int {
    guard let bytes = parseByteCount(text), allowZero || bytes > 0 else {
        throw ValidationError("cannot read \(flag) '\(text)' (expected e.g. \(example) or a byte count)")
    }
    return bytes
}
