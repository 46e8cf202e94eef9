import GGUF

/// `moe inspect`'s two renderings of a file's description: text for people, one JSON object
/// for programs.
extension ModelDescription {
    /// Human-readable report.
    func text(showAllTensors: Bool = true) -> String {
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
    func json() -> String {
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

private func formatCount(_ n: UInt64) -> String {
    if n >= 1_000_000_000 { return "\(formatTwoDecimals(Double(n) / 1e9)) B" }
    if n >= 1_000_000 { return "\(formatTwoDecimals(Double(n) / 1e6)) M" }
    if n >= 1_000 { return "\(formatTwoDecimals(Double(n) / 1e3)) K" }
    return "\(n)"
}


private func format1(_ v: Double) -> String { "\((v * 10).rounded() / 10)" }

/// Splits on characters, as Swift strings do: "\r\n" is one character and stays.
private func quote(_ s: String) -> String {
    "\"" + s.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\\n") + "\""
}
