/// Why a CPU placement asked for cannot be had.
public enum HostError: Error, Equatable, CustomStringConvertible {
    /// An empty list of CPUs to run on.
    case noCPUs
    /// A CPU list that does not read as "0-3,6,8-9".
    case unreadableCPUList(String)
    /// The kernel refused the affinity mask (`reason`: its error).
    case affinityRefused(cpus: [Int], reason: String)

    public var description: String {
        switch self {
        case .noCPUs: return "no CPU to run on"
        case let .unreadableCPUList(text): return "cannot read CPU list '\(text)' (expected e.g. 0-3,6)"
        case let .affinityRefused(cpus, reason):
            return "cannot run on CPUs \(cpus.map(String.init).joined(separator: ",")): \(reason)"
        }
    }
}
