/// A structured summary of a GGUF file: what `moe inspect` prints.
public struct ModelDescription: Sendable {
    public struct TensorRow: Sendable {
        public var name: String
        public var type: GGMLType
        public var shape: [UInt64]
        public var bytes: UInt64
        public var offset: UInt64
    }

    public struct TokenizerSummary: Sendable {
        public var model: String?
        public var pre: String?
        public var tokenCount: Int
        public var mergeCount: Int
        /// Special-token role ("bos", "eos", ...) → (id, text).
        public var specialTokens: [(role: String, id: Int64, text: String?)]
        public var addBOS: Bool?
        public var addEOS: Bool?
        public var chatTemplateBytes: Int?
    }

    /// Expert tensors of one layer (`blk.N.ffn_*_exps.*`).
    public struct ExpertLayer: Sendable {
        public var layer: Int
        public var expertCount: Int
        public var bytesPerExpert: UInt64
        /// The per-expert tensors of this layer ("ffn_gate_exps.weight" → type).
        public var parts: [(name: String, type: GGMLType, bytesPerExpert: UInt64)]
        public var totalBytes: UInt64 { bytesPerExpert * UInt64(expertCount) }
    }

    public struct ExpertLayout: Sendable {
        public var expertCount: Int
        public var expertsUsedPerToken: Int?
        public var layers: [ExpertLayer]
        public var sharedExpertBytes: UInt64
        public var totalExpertBytes: UInt64
        public var nonExpertBytes: UInt64
    }

    /// The expert bundles of a pack written by `moe pack` (the format is defined by the
    /// Experts module's `PackFormat`, which this module cannot import: the keys are spelled
    /// out here).
    public struct PackLayout: Sendable {
        public struct Layer: Sendable {
            public var layer: Int
            public var expertCount: Int
            /// Largest bundle of the layer (all are equal in a well-formed pack).
            public var bytesPerExpert: UInt64
            /// Gate, up and down types from the precision's types key (empty when it is missing).
            public var types: [GGMLType]
        }

        public struct Precision: Sendable {
            public var index: Int
            public var name: String
            public var layers: [Layer]
            public var totalBytes: UInt64
        }

        public var version: Int64?
        public var expertCount: Int
        public var expertsUsedPerToken: Int?
        public var layers: [Int]
        public var precisions: [Precision]
        public var bundleBytes: UInt64
        public var nonBundleBytes: UInt64
    }

    public var path: String
    public var fileSize: UInt64
    public var version: UInt32
    public var alignment: Int
    public var dataOffset: UInt64
    public var architecture: String?
    public var name: String?
    /// llama.cpp's file type (`general.file_type`), e.g. "Q4_K_M".
    public var fileType: String?
    public var parameterCount: UInt64
    public var hyperParameters: [(key: String, value: GGUFValue)]
    public var otherMetadata: [(key: String, value: GGUFValue)]
    public var tokenizer: TokenizerSummary?
    public var tensors: [TensorRow]
    public var typeTotals: [(type: GGMLType, count: Int, bytes: UInt64)]
    public var experts: ExpertLayout?
    /// Set for packs (files with `moe.pack.version`).
    public var pack: PackLayout?

    public init(_ file: GGUFFile) {
        path = file.path
        fileSize = file.fileSize
        version = file.version
        alignment = file.alignment
        dataOffset = file.dataOffset
        architecture = file.architecture
        name = file.metadata["general.name"]?.string
        fileType = file.metadata["general.file_type"]?.integer.map(llamaFileTypeName)
        parameterCount = file.tensors.reduce(0) { $0 + $1.elementCount }

        let archPrefix = (architecture ?? "\u{0}") + "."
        hyperParameters = file.metadata.entries.filter { $0.key.hasPrefix(archPrefix) }
        otherMetadata = file.metadata.entries.filter {
            !$0.key.hasPrefix(archPrefix) && !$0.key.hasPrefix("tokenizer.")
        }
        tokenizer = Self.tokenizerSummary(file.metadata)

        tensors = file.tensors.map {
            TensorRow(name: $0.name, type: $0.type, shape: $0.dimensions, bytes: $0.byteCount, offset: $0.absoluteOffset)
        }
        var totals: [GGMLType: (Int, UInt64)] = [:]
        for t in file.tensors {
            let c = totals[t.type] ?? (0, 0)
            totals[t.type] = (c.0 + 1, c.1 + t.byteCount)
        }
        typeTotals = totals.map { ($0.key, $0.value.0, $0.value.1) }.sorted { $0.bytes > $1.bytes }
        experts = Self.expertLayout(file)
        pack = Self.packLayout(file)
    }

    static let packVersionKey = "moe.pack.version"

    /// Groups the bundle tensors `blk.L.exps.P.E` of a pack by precision and layer. Only
    /// describes: a malformed pack is shown as it is (the Experts module validates it).
    static func packLayout(_ file: GGUFFile) -> PackLayout? {
        guard let versionValue = file.metadata[packVersionKey] else { return nil }
        struct Group { var experts = Set<Int>(); var bytes: UInt64 = 0; var largest: UInt64 = 0 }
        var groups: [Int: [Int: Group]] = [:]
        var bundleBytes: UInt64 = 0
        for t in file.tensors {
            let parts = t.name.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 5, parts[0] == "blk", parts[2] == "exps",
                  let layer = Int(parts[1]), let precision = Int(parts[3]), let expert = Int(parts[4]),
                  layer >= 0, precision >= 0, expert >= 0 else { continue }
            var g = groups[precision, default: [:]][layer, default: Group()]
            g.experts.insert(expert)
            g.bytes += t.byteCount
            g.largest = max(g.largest, t.byteCount)
            groups[precision, default: [:]][layer] = g
            bundleBytes += t.byteCount
        }
        let names = file.metadata["moe.pack.precisions"]?.array?.strings?.map(\.string) ?? []
        let layers = Set(groups.values.flatMap(\.keys)).sorted()
        let precisionIndices = Set(groups.keys).union(names.indices).sorted()
        // Types are listed per layer of moe.pack.layers, gate, up, down for each.
        let declaredLayers = file.metadata["moe.pack.layers"]?.array?.integers ?? []
        let precisions = precisionIndices.map { p -> PackLayout.Precision in
            let codes = file.metadata["moe.pack.precision.\(p).types"]?.array?.integers ?? []
            let typed = codes.count == 3 * declaredLayers.count ? codes.map { UInt32(exactly: $0).flatMap(GGMLType.init(rawValue:)) } : []
            let entries = layers.compactMap { layer -> PackLayout.Layer? in
                guard let g = groups[p]?[layer] else { return nil }
                var types: [GGMLType] = []
                if !typed.isEmpty, let i = declaredLayers.firstIndex(of: Int64(layer)) {
                    types = typed[(3 * i)..<(3 * i + 3)].compactMap { $0 }
                }
                return PackLayout.Layer(layer: layer, expertCount: g.experts.count, bytesPerExpert: g.largest,
                                        types: types.count == 3 ? types : [])
            }
            return PackLayout.Precision(index: p, name: p < names.count ? names[p] : "precision \(p)", layers: entries,
                                        totalBytes: entries.reduce(0) { $0 + (groups[p]?[$1.layer]?.bytes ?? 0) })
        }
        let arch = file.architecture ?? ""
        let counted = groups[0]?.values.map(\.experts.count).max() ?? 0
        // Counts are rendered unsigned: a negative value in a damaged file counts as absent.
        func count(_ key: String) -> Int? {
            file.metadata["\(arch).\(key)"]?.integer.flatMap { $0 >= 0 ? Int(exactly: $0) : nil }
        }
        return PackLayout(
            version: versionValue.integer,
            expertCount: count("expert_count") ?? counted,
            expertsUsedPerToken: count("expert_used_count"),
            layers: layers,
            precisions: precisions,
            bundleBytes: bundleBytes,
            nonBundleBytes: file.tensorBytes - bundleBytes)
    }

    static func tokenizerSummary(_ m: GGUFMetadata) -> TokenizerSummary? {
        guard m.keys.contains(where: { $0.hasPrefix("tokenizer.") }) else { return nil }
        let tokens = m["tokenizer.ggml.tokens"]?.array?.strings ?? []
        var specials: [(String, Int64, String?)] = []
        for role in ["bos", "eos", "eot", "eom", "unknown", "seperator", "padding", "mask", "cls"] {
            guard let id = m["tokenizer.ggml.\(role)_token_id"]?.integer else { continue }
            let text = (id >= 0 && id < tokens.count) ? tokens[Int(id)].string : nil
            specials.append((role, id, text))
        }
        return TokenizerSummary(
            model: m["tokenizer.ggml.model"]?.string,
            pre: m["tokenizer.ggml.pre"]?.string,
            tokenCount: tokens.count,
            mergeCount: m["tokenizer.ggml.merges"]?.array?.count ?? 0,
            specialTokens: specials,
            addBOS: m["tokenizer.ggml.add_bos_token"]?.bool,
            addEOS: m["tokenizer.ggml.add_eos_token"]?.bool,
            chatTemplateBytes: m["tokenizer.chat_template"].flatMap { v -> Int? in
                if case let .string(s) = v { return s.bytes.count }
                return nil
            })
    }

    /// Parses `blk.N.<part>` names; experts are tensors whose part contains "_exps"
    /// (stacked along the last dimension), shared experts those containing "_shexp".
    static func expertLayout(_ file: GGUFFile) -> ExpertLayout? {
        var layers: [Int: ExpertLayer] = [:]
        var shared: UInt64 = 0
        var expertBytes: UInt64 = 0
        var declared = Int(file.metadata["\(file.architecture ?? "").expert_count"]?.integer ?? 0)
        for t in file.tensors {
            let parts = t.name.split(separator: ".", maxSplits: 2)
            guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]) else { continue }
            let part = String(parts[2])
            if part.contains("_shexp") {
                shared += t.byteCount
                continue
            }
            guard part.contains("_exps"), t.dimensions.count >= 2 else { continue }
            let n = Int(t.dimensions.last!)
            guard n > 0 else { continue }
            let per = t.byteCount / UInt64(n)
            var entry = layers[layer] ?? ExpertLayer(layer: layer, expertCount: n, bytesPerExpert: 0, parts: [])
            entry.bytesPerExpert += per
            entry.expertCount = max(entry.expertCount, n)
            entry.parts.append((part, t.type, per))
            layers[layer] = entry
            expertBytes += t.byteCount
        }
        guard !layers.isEmpty else { return nil }
        // A damaged file may declare a negative count: describe what the tensors show instead.
        if declared <= 0 { declared = layers.values.map(\.expertCount).max() ?? 0 }
        let total = file.tensorBytes
        return ExpertLayout(
            expertCount: declared,
            expertsUsedPerToken: (file.metadata["\(file.architecture ?? "").expert_used_count"]?.integer).map { Int($0) },
            layers: layers.values.sorted { $0.layer < $1.layer },
            sharedExpertBytes: shared,
            totalExpertBytes: expertBytes,
            nonExpertBytes: total - expertBytes)
    }
}

// MARK: - Rendering

extension ModelDescription {
    /// Human-readable report.
    public func text(showAllTensors: Bool = true) -> String {
        var out: [String] = []
        out.append("file:          \(path)")
        out.append("size:          \(formatBytes(fileSize)) (GGUF v\(version), alignment \(alignment), data at \(dataOffset))")
        out.append("architecture:  \(architecture ?? "(none)")")
        if let name { out.append("name:          \(name)") }
        if let fileType { out.append("file type:     \(fileType)") }
        out.append("parameters:    \(formatCount(parameterCount)) in \(tensors.count) tensors")
        if !typeTotals.isEmpty {
            out.append("types:         " + typeTotals.map { "\($0.type.name) ×\($0.count) (\(formatBytes($0.bytes)))" }.joined(separator: ", "))
        }
        if !hyperParameters.isEmpty {
            out.append("")
            out.append("hyper-parameters:")
            let width = hyperParameters.map(\.key.count).max() ?? 0
            for (k, v) in hyperParameters {
                out.append("  \(k.padded(width))  \(v.render(limit: 8))")
            }
        }
        if !otherMetadata.isEmpty {
            out.append("")
            out.append("metadata:")
            let width = otherMetadata.map(\.key.count).max() ?? 0
            for (k, v) in otherMetadata {
                out.append("  \(k.padded(width))  \(v.render(limit: 8))")
            }
        }
        if let t = tokenizer {
            out.append("")
            out.append("tokenizer:     \(t.model ?? "?")\(t.pre.map { " (pre-tokenizer \($0))" } ?? ""), \(t.tokenCount) tokens, \(t.mergeCount) merges")
            if !t.specialTokens.isEmpty {
                out.append("  special:     " + t.specialTokens.map { s in
                    "\(s.role)=\(s.id)" + (s.text.map { " \(quote($0))" } ?? "")
                }.joined(separator: ", "))
            }
            if t.addBOS != nil || t.addEOS != nil {
                out.append("  adds:        bos=\(t.addBOS.map(String.init) ?? "-") eos=\(t.addEOS.map(String.init) ?? "-")")
            }
            if let c = t.chatTemplateBytes { out.append("  chat template: \(c) bytes") }
        }
        if let e = experts {
            out.append("")
            out.append("experts:       \(e.expertCount) per layer\(e.expertsUsedPerToken.map { ", \($0) used per token" } ?? "") in \(e.layers.count) layers")
            let per = Set(e.layers.map(\.bytesPerExpert))
            if per.count == 1, let l = e.layers.first {
                out.append("  per expert:  \(formatBytes(l.bytesPerExpert)) (" + l.parts.map { "\($0.name) \($0.type.name) \(formatBytes($0.bytesPerExpert))" }.joined(separator: ", ") + ")")
            } else {
                for l in e.layers {
                    out.append("  layer \(l.layer): \(l.expertCount) × \(formatBytes(l.bytesPerExpert))")
                }
            }
            let total = e.totalExpertBytes + e.nonExpertBytes
            let pct = total > 0 ? Double(e.totalExpertBytes) / Double(total) * 100 : 0
            out.append("  expert bytes: \(formatBytes(e.totalExpertBytes)) (\(String(format1(pct)))% of tensor data)")
            out.append("  other bytes:  \(formatBytes(e.nonExpertBytes))\(e.sharedExpertBytes > 0 ? " (shared experts \(formatBytes(e.sharedExpertBytes)))" : "")")
        }
        if let p = pack { out.append(contentsOf: packText(p)) }
        out.append("")
        out.append("tensors:")
        let rows = showAllTensors ? tensors : Array(tensors.prefix(20))
        let nameWidth = rows.map(\.name.count).max() ?? 4
        out.append("  " + "name".padded(nameWidth) + "  type     shape                     bytes         offset")
        for r in rows {
            let shape = "[" + r.shape.map(String.init).joined(separator: ", ") + "]"
            out.append("  " + r.name.padded(nameWidth)
                + "  " + r.type.name.padded(7)
                + "  " + shape.padded(24)
                + "  " + String(r.bytes).leftPad(12)
                + "  " + String(r.offset).leftPad(12))
        }
        if rows.count < tensors.count { out.append("  … \(tensors.count - rows.count) more") }
        return out.joined(separator: "\n")
    }

    private func packText(_ p: PackLayout) -> [String] {
        var out = [""]
        let names = p.precisions.map(\.name).joined(separator: ", ")
        out.append("pack:          version \(p.version.map(String.init) ?? "?"), \(p.precisions.count) precision"
                   + "\(p.precisions.count == 1 ? "" : "s") (\(names))")
        out.append("  experts:     \(p.expertCount) per layer\(p.expertsUsedPerToken.map { ", \($0) used per token" } ?? "")"
                   + " in \(p.layers.count) layers")
        let width = max(12, (p.precisions.map(\.name.count).max() ?? 0) + 2)
        func types(_ t: [GGMLType]) -> String {
            t.isEmpty ? "types unknown" : zip(t, ["gate", "up", "down"]).map { "\($0.name) \($1)" }.joined(separator: ", ")
        }
        for precision in p.precisions {
            let label = (precision.name + ":").padded(width)
            let sizes = Set(precision.layers.map(\.bytesPerExpert))
            let typeSets = Set(precision.layers.map(\.types))
            if sizes.count == 1, typeSets.count == 1, let l = precision.layers.first,
               precision.layers.allSatisfy({ $0.expertCount == l.expertCount }) {
                out.append("  \(label) \(formatBytes(l.bytesPerExpert)) per expert (\(types(l.types))), "
                           + "\(formatBytes(precision.totalBytes)) in all")
            } else {
                out.append("  \(label) \(formatBytes(precision.totalBytes)) in all")
                for l in precision.layers {
                    out.append("    layer \(l.layer): \(l.expertCount) × \(formatBytes(l.bytesPerExpert)) (\(types(l.types)))")
                }
            }
        }
        let total = p.bundleBytes + p.nonBundleBytes
        let pct = total > 0 ? Double(p.bundleBytes) / Double(total) * 100 : 0
        out.append("  bundle bytes: \(formatBytes(p.bundleBytes)) (\(format1(pct))% of tensor data)")
        out.append("  other bytes:  \(formatBytes(p.nonBundleBytes))")
        return out
    }

    /// JSON report (stable keys, one object).
    public func json() -> String {
        let o = JSONWriter()
        o.object {
            o.field("file") { o.string(path) }
            o.field("size") { o.number(fileSize) }
            o.field("version") { o.number(UInt64(version)) }
            o.field("alignment") { o.number(UInt64(alignment)) }
            o.field("data_offset") { o.number(dataOffset) }
            o.field("architecture") { if let architecture { o.string(architecture) } else { o.null() } }
            o.field("name") { if let name { o.string(name) } else { o.null() } }
            o.field("file_type") { if let fileType { o.string(fileType) } else { o.null() } }
            o.field("parameters") { o.number(parameterCount) }
            o.field("hyperparameters") { o.object { for (k, v) in hyperParameters { o.field(k) { o.value(v) } } } }
            o.field("metadata") { o.object { for (k, v) in otherMetadata { o.field(k) { o.value(v) } } } }
            o.field("tokenizer") {
                guard let t = tokenizer else { return o.null() }
                o.object {
                    o.field("model") { if let m = t.model { o.string(m) } else { o.null() } }
                    o.field("pre") { if let p = t.pre { o.string(p) } else { o.null() } }
                    o.field("tokens") { o.number(UInt64(t.tokenCount)) }
                    o.field("merges") { o.number(UInt64(t.mergeCount)) }
                    o.field("special") {
                        o.object { for s in t.specialTokens { o.field(s.role) { o.number(s.id) } } }
                    }
                    o.field("add_bos") { if let b = t.addBOS { o.bool(b) } else { o.null() } }
                    o.field("add_eos") { if let b = t.addEOS { o.bool(b) } else { o.null() } }
                    o.field("chat_template_bytes") { if let c = t.chatTemplateBytes { o.number(UInt64(c)) } else { o.null() } }
                }
            }
            o.field("experts") {
                guard let e = experts else { return o.null() }
                o.object {
                    o.field("expert_count") { o.number(UInt64(e.expertCount)) }
                    o.field("experts_used") { if let u = e.expertsUsedPerToken { o.number(UInt64(u)) } else { o.null() } }
                    o.field("total_expert_bytes") { o.number(e.totalExpertBytes) }
                    o.field("shared_expert_bytes") { o.number(e.sharedExpertBytes) }
                    o.field("non_expert_bytes") { o.number(e.nonExpertBytes) }
                    o.field("layers") {
                        o.array(e.layers) { l in
                            o.object {
                                o.field("layer") { o.number(UInt64(l.layer)) }
                                o.field("experts") { o.number(UInt64(l.expertCount)) }
                                o.field("bytes_per_expert") { o.number(l.bytesPerExpert) }
                            }
                        }
                    }
                }
            }
            if let p = pack {
                o.field("pack") {
                    o.object {
                        o.field("version") { if let v = p.version { o.number(v) } else { o.null() } }
                        o.field("expert_count") { o.number(UInt64(p.expertCount)) }
                        o.field("experts_used") { if let u = p.expertsUsedPerToken { o.number(UInt64(u)) } else { o.null() } }
                        o.field("layers") { o.array(p.layers) { o.number(UInt64($0)) } }
                        o.field("bundle_bytes") { o.number(p.bundleBytes) }
                        o.field("non_bundle_bytes") { o.number(p.nonBundleBytes) }
                        o.field("precisions") {
                            o.array(p.precisions) { precision in
                                o.object {
                                    o.field("name") { o.string(precision.name) }
                                    o.field("total_bytes") { o.number(precision.totalBytes) }
                                    o.field("layers") {
                                        o.array(precision.layers) { l in
                                            o.object {
                                                o.field("layer") { o.number(UInt64(l.layer)) }
                                                o.field("experts") { o.number(UInt64(l.expertCount)) }
                                                o.field("bytes_per_expert") { o.number(l.bytesPerExpert) }
                                                o.field("types") { o.array(l.types) { o.string($0.name) } }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            o.field("tensors") {
                o.array(tensors) { r in
                    o.object {
                        o.field("name") { o.string(r.name) }
                        o.field("type") { o.string(r.type.name) }
                        o.field("shape") { o.array(r.shape) { o.number($0) } }
                        o.field("bytes") { o.number(r.bytes) }
                        o.field("offset") { o.number(r.offset) }
                    }
                }
            }
        }
        return o.output
    }
}

/// Minimal streaming JSON emitter (keeps key order, escapes strings per RFC 8259).
final class JSONWriter {
    var output = ""
    private var needsComma: [Bool] = []

    private func separate() {
        if let last = needsComma.last {
            if last { output += "," }
            needsComma[needsComma.count - 1] = true
        }
    }

    func object(_ body: () -> Void) {
        separate(); output += "{"; needsComma.append(false); body(); needsComma.removeLast(); output += "}"
    }

    func array<S: Sequence>(_ items: S, _ each: (S.Element) -> Void) {
        separate(); output += "["; needsComma.append(false)
        for x in items { each(x) }
        needsComma.removeLast(); output += "]"
    }

    func field(_ key: String, _ body: () -> Void) {
        separate()
        output += jsonEscape(key) + ":"
        needsComma.append(false) // the value follows the colon without a comma
        body()
        needsComma.removeLast()
    }

    func string(_ s: String) { separate(); output += jsonEscape(s) }
    func number(_ n: UInt64) { separate(); output += String(n) }
    func number(_ n: Int64) { separate(); output += String(n) }
    func double(_ d: Double) { separate(); output += d.isFinite ? "\(d)" : "null" }
    func bool(_ b: Bool) { separate(); output += b ? "true" : "false" }
    func null() { separate(); output += "null" }

    func value(_ v: GGUFValue) {
        switch v {
        case let .string(s): string(s.string)
        case let .bool(b): bool(b)
        case let .float32(f): double(Double(f))
        case let .float64(d): double(d)
        case let .array(a): arrayValue(a)
        case let .uint64(u): number(u)
        default: number(v.integer ?? 0)
        }
    }

    /// Long arrays (vocabularies) are summarized rather than dumped.
    func arrayValue(_ a: GGUFArray) {
        if a.count > 64 {
            object {
                field("type") { string(a.elementType.name) }
                field("count") { number(UInt64(a.count)) }
            }
            return
        }
        switch a {
        case let .string(x): array(x) { string($0.string) }
        case let .bool(x): array(x) { bool($0) }
        case let .float32(x): array(x) { double(Double($0)) }
        case let .float64(x): array(x) { double($0) }
        case let .uint64(x): array(x) { number($0) }
        case let .array(x): array(x) { arrayValue($0) }
        default: array(a.integers ?? []) { number($0) }
        }
    }
}

func jsonEscape(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}

public func formatBytes(_ b: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(b)
    var i = 0
    while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
    return i == 0 ? "\(b) B" : "\(format2(v)) \(units[i])"
}

func formatCount(_ n: UInt64) -> String {
    if n >= 1_000_000_000 { return "\(format2(Double(n) / 1e9)) B" }
    if n >= 1_000_000 { return "\(format2(Double(n) / 1e6)) M" }
    if n >= 1_000 { return "\(format2(Double(n) / 1e3)) K" }
    return "\(n)"
}

func format2(_ v: Double) -> String {
    let r = (v * 100).rounded() / 100
    var s = "\(r)"
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < 2 { s += String(repeating: "0", count: 2 - decimals) }
    }
    return s
}

func format1(_ v: Double) -> String { "\((v * 10).rounded() / 10)" }

private func quote(_ s: String) -> String {
    "\"" + s.replacingOccurrences(of: "\n", with: "\\n") + "\""
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
    func padded(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
    func replacingOccurrences(of a: String, with b: String) -> String {
        split(separator: a, omittingEmptySubsequences: false).joined(separator: b)
    }
}

/// Names of llama.cpp's `llama_ftype` values (the `general.file_type` key).
public func llamaFileTypeName(_ value: Int64) -> String {
    switch value {
        case 0: return "F32"
        case 1: return "F16"
        case 2: return "Q4_0"
        case 3: return "Q4_1"
        case 7: return "Q8_0"
        case 8: return "Q5_0"
        case 9: return "Q5_1"
        case 10: return "Q2_K"
        case 11: return "Q3_K_S"
        case 12: return "Q3_K_M"
        case 13: return "Q3_K_L"
        case 14: return "Q4_K_S"
        case 15: return "Q4_K_M"
        case 16: return "Q5_K_S"
        case 17: return "Q5_K_M"
        case 18: return "Q6_K"
        case 19: return "IQ2_XXS"
        case 20: return "IQ2_XS"
        case 21: return "Q2_K_S"
        case 22: return "IQ3_XS"
        case 23: return "IQ3_XXS"
        case 24: return "IQ1_S"
        case 25: return "IQ4_NL"
        case 26: return "IQ3_S"
        case 27: return "IQ3_M"
        case 28: return "IQ2_S"
        case 29: return "IQ2_M"
        case 30: return "IQ4_XS"
        case 31: return "IQ1_M"
        case 32: return "BF16"
        case 36: return "TQ1_0"
        case 37: return "TQ2_0"
        case 38: return "MXFP4_MOE"
        case 39: return "NVFP4"
        case 40: return "Q1_0"
        case 41: return "Q2_0"
        default: return "unknown (\(value))"
    }
}

extension ModelDescription {
    /// Weight bytes one decoded token reads once every weight is in memory: all tensors but
    /// the token embedding (one row of it, unless the output projection shares it), and of
    /// the routed experts only the ones a token uses (all of them when the count is not
    /// declared). Decode speed can at best be memory bandwidth divided by this.
    public var weightBytesPerDecodedToken: UInt64 {
        var bytes = tensors.reduce(UInt64(0)) { $0 + $1.bytes }
        if let pack {
            let used = UInt64(pack.expertsUsedPerToken ?? pack.expertCount)
            let full = pack.precisions.first { $0.index == 0 }?.layers.reduce(UInt64(0)) { $0 + $1.bytesPerExpert } ?? 0
            bytes = bytes - pack.bundleBytes + used * full
        } else if let experts {
            let used = UInt64(experts.expertsUsedPerToken ?? experts.expertCount)
            bytes = bytes - experts.totalExpertBytes + experts.layers.reduce(UInt64(0)) { $0 + used * $1.bytesPerExpert }
        }
        let hasOutput = tensors.contains { $0.name == "output.weight" }
        if hasOutput, let embedding = tensors.first(where: { $0.name == "token_embd.weight" }),
           embedding.shape.count == 2, embedding.shape[1] > 0 {
            bytes = bytes - embedding.bytes + embedding.bytes / embedding.shape[1]
        }
        return bytes
    }
}
