#if canImport(Glibc)
import Glibc
#endif

/// Which backend `StorageFile.open` should use.
public enum StorageBackendPreference: String, Sendable, CaseIterable {
    /// io_uring when the kernel allows it, otherwise pread. `MOE_STORAGE_BACKEND`
    /// (`pread` or `io_uring`) overrides the choice.
    case automatic = "auto"
    /// io_uring or an error (`ioUringUnavailable`).
    case ioUring = "io_uring"
    case pread = "pread"

    /// Parses `auto`, `io_uring` (also `iouring`, `uring`) and `pread`, case-insensitively.
    public init?(parsing text: String) {
        switch text.lowercased() {
        case "auto", "automatic", "": self = .automatic
        case "io_uring", "iouring", "io-uring", "uring": self = .ioUring
        case "pread": self = .pread
        default: return nil
        }
    }
}

/// Opens files for reading through the best available backend.
public enum StorageFile {
    /// Environment variable that forces the backend `.automatic` picks: `pread` or `io_uring`.
    public static let environmentVariable = "MOE_STORAGE_BACKEND"

    /// Test hook: when bound, used instead of the process environment's
    /// `MOE_STORAGE_BACKEND` (task-local, so tests running in parallel don't see it).
    @TaskLocal public static var environmentOverride: String? = nil

    /// Opens `path` for positional reads.
    ///
    /// - Parameters:
    ///   - backend: `.automatic` tries io_uring and falls back to pread when the kernel
    ///     refuses io_uring (not on other errors: a missing file is still an error).
    ///   - direct: read around the page cache with O_DIRECT where the filesystem allows.
    ///   - queueDepth: reads kept in flight (io_uring); pread accepts and ignores it.
    /// - Throws: `StorageError`: `openFailed`, `statFailed`, `ioUringUnavailable` (only
    ///   when io_uring was demanded), `invalidRequest` for a bad `MOE_STORAGE_BACKEND`.
    public static func open(path: String, backend: StorageBackendPreference = .automatic, direct: Bool = true,
                            queueDepth: Int = IOUringBackend.defaultQueueDepth) throws(StorageError) -> any StorageBackend {
        switch try resolve(backend) {
        case .pread:
            return try PReadBackend(path: path, direct: direct, queueDepth: queueDepth)
        case .ioUring:
            return try IOUringBackend(path: path, direct: direct, queueDepth: queueDepth)
        case .automatic:
            do {
                return try IOUringBackend(path: path, direct: direct, queueDepth: queueDepth)
            } catch {
                guard case .ioUringUnavailable = error else { throw error }
                return try PReadBackend(path: path, direct: direct, queueDepth: queueDepth)
            }
        }
    }

    /// The preference after applying `MOE_STORAGE_BACKEND` to `.automatic`.
    public static func resolve(_ preference: StorageBackendPreference) throws(StorageError) -> StorageBackendPreference {
        guard preference == .automatic else { return preference }
        guard let value = environmentValue(), !value.isEmpty else { return .automatic }
        guard let parsed = StorageBackendPreference(parsing: value) else {
            throw StorageError.invalidRequest("\(environmentVariable)=\(value): expected pread, io_uring or auto")
        }
        return parsed
    }

    static func environmentValue() -> String? {
        if let v = environmentOverride { return v }
        guard let raw = getenv(environmentVariable) else { return nil }
        return String(cString: raw)
    }
}
