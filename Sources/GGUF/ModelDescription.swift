/// A structured summary of a GGUF file: what `moe inspect` shows (the command renders it).
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

    /// The expert bundles of a pack written by `moe pack` (`PackFormat`).
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
    /// Set for packs (files with `PackFormat.versionKey`).
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

    /// Groups the bundle tensors `blk.L.exps.P.E` of a pack by precision and layer. Only
    /// describes: a malformed pack is shown as it is (the Experts module validates it).
    static func packLayout(_ file: GGUFFile) -> PackLayout? {
        guard let versionValue = file.metadata[PackFormat.versionKey] else { return nil }
        struct Group { var experts = Set<Int>(); var bytes: UInt64 = 0; var largest: UInt64 = 0 }
        var groups: [Int: [Int: Group]] = [:]
        var bundleBytes: UInt64 = 0
        for t in file.tensors {
            guard let bundle = PackFormat.bundleCoordinates(t.name) else { continue }
            let (layer, precision, expert) = bundle
            var g = groups[precision, default: [:]][layer, default: Group()]
            g.experts.insert(expert)
            g.bytes += t.byteCount
            g.largest = max(g.largest, t.byteCount)
            groups[precision, default: [:]][layer] = g
            bundleBytes += t.byteCount
        }
        let names = file.metadata[PackFormat.precisionsKey]?.array?.strings?.map(\.string) ?? []
        let layers = Set(groups.values.flatMap(\.keys)).sorted()
        let precisionIndices = Set(groups.keys).union(names.indices).sorted()
        // Types are listed per layer of the layers key, gate, up, down for each.
        let declaredLayers = file.metadata[PackFormat.layersKey]?.array?.integers ?? []
        let precisions = precisionIndices.map { p -> PackLayout.Precision in
            let codes = file.metadata[PackFormat.typesKey(precision: p)]?.array?.integers ?? []
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
