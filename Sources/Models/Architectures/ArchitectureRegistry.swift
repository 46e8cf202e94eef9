import GGUF
import Storage

/// What an architecture file provides: its `general.architecture` name and how to build
/// a model from hyper-parameters and weights. Adding an architecture = one file + one
/// line in `ArchitectureRegistry.all`.
protocol Architecture {
    static var name: String { get }
    static func build(_ hp: HyperParameters, _ w: WeightStore) throws(ModelError) -> DecoderModel
}

public enum ArchitectureRegistry {
    static var all: [any Architecture.Type] { [Llama.self, Qwen2.self, Qwen2MoE.self, Qwen3.self, Qwen3MoE.self, OLMoE.self] }

    public static var names: [String] { all.map { $0.name } }

    /// Builds the model a loaded file describes.
    public static func build(_ w: WeightStore) throws(ModelError) -> DecoderModel {
        let hp = try HyperParameters(metadata: w.file.metadata)
        guard let arch = all.first(where: { $0.name == hp.architecture }) else {
            throw .unknownArchitecture(hp.architecture)
        }
        return try arch.build(hp, w)
    }
}

extension DecoderModel {
    /// Opens a GGUF file, reads its weights and builds the model with every expert in memory.
    public static func load(path: String, backend preference: StorageBackendPreference = .automatic,
                            progress: ((UInt64, UInt64) -> Void)? = nil) throws(ModelError) -> DecoderModel {
        try load(path: path, backend: preference, skip: { _ in false }, prepare: { _, _ in }, progress: progress) { model, _ throws(ModelError) in
            try ResidentExpertProvider(model.weights, model.hyperParameters)
        }
    }

    /// Opens a GGUF file and reads the tensors `skip` leaves, builds the model, and gives MoE
    /// models the expert provider `makeExperts` returns (called with the model and the open
    /// file, which the provider may keep for later reads). `prepare` sees the parsed file
    /// before any weight is read. Checks the architecture and hyper-parameters first, so a
    /// bad file fails fast.
    public static func load(path: String, backend preference: StorageBackendPreference = .automatic,
                            skip: (GGUFTensorInfo) -> Bool,
                            prepare: (GGUFFile, HyperParameters) throws(ModelError) -> Void,
                            progress: ((UInt64, UInt64) -> Void)? = nil,
                            makeExperts: (DecoderModel, any StorageBackend) throws(ModelError) -> ExpertProvider)
        throws(ModelError) -> DecoderModel {
        let file: GGUFFile
        let backend: any StorageBackend
        do {
            backend = try StorageFile.open(path: path, backend: preference)
            file = try GGUFFile.read(from: backend)
        } catch let e as GGUFError {
            throw .format(path: path, e)
        } catch let e as StorageError {
            throw .storage(e)
        } catch {
            throw .file("\(path): \(error)")
        }
        guard let arch = file.architecture else { throw .missingArchitecture }
        guard ArchitectureRegistry.all.contains(where: { $0.name == arch }) else { throw .unknownArchitecture(arch) }
        let hp = try HyperParameters(metadata: file.metadata)
        try prepare(file, hp)
        let weights = try WeightStore(file: file, backend: backend, skip: skip, progress: progress)
        let model = try ArchitectureRegistry.build(weights)
        if hp.isMoE { model.experts = try makeExperts(model, backend) }
        return model
    }
}
