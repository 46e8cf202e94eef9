// The pack format lives in GGUF, below both its writer (Experts' `ExpertPacker`) and its
// readers (Experts' `ExpertLayout`, `ModelDescription` here), so its keys are spelled once.

/// The keys and names of the packed layout that `moe pack` writes.
///
/// A pack is a GGUF v3 file with `general.alignment` = 4096 in which the stacked
/// `blk.N.ffn_{gate,up,down}_exps.weight` tensors are replaced by one *bundle* per expert:
/// an `i8` tensor of the expert's gate, up and down bytes back to back (gate at 0, up after
/// gate, down after up), so one aligned read brings a whole expert. Bundles come after every
/// other tensor, ordered by precision, then layer, then expert; precision 0 holds the source
/// file's own types, later precisions are lower-precision copies of every expert. The file
/// ends on a 4096-byte boundary, so the last bundle reads like the others.
public enum PackFormat {
    public static let version: UInt32 = 1
    public static let alignment = 4096
    /// u32: the pack format version.
    public static let versionKey = "moe.pack.version"
    /// [string]: one name per precision: "native" for precision 0, then ggml type names.
    public static let precisionsKey = "moe.pack.precisions"
    /// [u32]: the indices of the layers that have routed experts.
    public static let layersKey = "moe.pack.layers"
    /// [u32] per precision: ggml types of gate, up and down for each layer of `layersKey`, in order.
    public static func typesKey(precision: Int) -> String { "moe.pack.precision.\(precision).types" }
    /// The bundle tensor of one expert at one precision.
    public static func bundleName(layer: Int, expert: Int, precision: Int) -> String {
        "blk.\(layer).exps.\(precision).\(expert)"
    }
    /// The layer, precision and expert of a bundle tensor's name (the inverse of
    /// `bundleName`); nil for any other tensor.
    public static func bundleCoordinates(_ name: String) -> (layer: Int, precision: Int, expert: Int)? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "blk", parts[2] == "exps",
              let layer = Int(parts[1]), let precision = Int(parts[3]), let expert = Int(parts[4]),
              layer >= 0, precision >= 0, expert >= 0 else { return nil }
        return (layer, precision, expert)
    }
}
