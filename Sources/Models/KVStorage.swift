import GGUF
import KV
import Kernels
#if arch(x86_64) && !MOE_PORTABLE_SIMD
import _Builtin_intrinsics.intel
#endif

// How the model writes rows into the paged KV manager (Sources/KV) and reads them back:
// KV keeps blocks of bytes; the row encodings and the kernels that read them live here,
// beside the other kernels.

extension KVSequence {
    /// Stores one position's key and value for `layer` (a position `reserve` made writable):
    /// rounded to F16 as llama.cpp's F16 cache does, or quantized with ggml's reference
    /// Q8_0/Q4_0 quantizers (the bytes llama.cpp's quantized cache holds for the same row).
    @inline(__always)
    func store(layer: Int, position: Int, key k: UnsafePointer<Float>, value v: UnsafePointer<Float>) {
        switch layout.type {
        case .f16:
            FP16.fromFloat(k, keyRow(layer: layer, position: position), count: keyWidth)
            FP16.fromFloat(v, valueRow(layer: layer, position: position), count: valueWidth)
        case .q8_0, .q4_0:
            let type = layout.type.ggmlType
            Quantize.row(type, from: k, to: keyRow(layer: layer, position: position), count: keyWidth)
            Quantize.row(type, from: v, to: valueRow(layer: layer, position: position), count: valueWidth)
        }
    }
}

extension KVType {
    /// The ggml block type of a row.
    public var ggmlType: GGMLType {
        switch self {
        case .f16: return .f16
        case .q8_0: return .q8_0
        case .q4_0: return .q4_0
        }
    }
}

extension DecoderModel {
    /// Whether this model's heads can be stored in `type` (quantized rows are whole 32-value
    /// blocks per head); throws `KVError.typeDoesNotFit` otherwise.
    public func checkKVType(_ type: KVType) throws(KVError) {
        let hp = hyperParameters
        guard type.fits(keyHeadSize: hp.keyLength, valueHeadSize: hp.valueLength) else {
            throw .typeDoesNotFit(type: type, keyHeadSize: hp.keyLength, valueHeadSize: hp.valueLength)
        }
    }

    /// The block shape of this model's KV (precondition: the type fits, `checkKVType`).
    public func kvLayout(blockSize: Int = 16, type: KVType = .f16) -> KVLayout {
        KVLayout(layers: layers.count, keyWidth: hyperParameters.keyWidth, valueWidth: hyperParameters.valueWidth,
                 blockSize: blockSize, type: type)
    }

    /// A pool of KV blocks within `memoryBytes`, for sequences of this model (only: its
    /// prefix cache holds this model's keys and values).
    public func makeKVPool(memoryBytes: Int, blockSize: Int = 16, type: KVType = .f16) throws(KVError) -> KVBlockPool {
        try checkKVType(type)
        return try KVBlockPool(layout: kvLayout(blockSize: blockSize, type: type), memoryBytes: memoryBytes,
                               owner: ObjectIdentifier(self))
    }

    /// A pool sized for one sequence of `positions` positions (`kvBlocks`: what a session
    /// has by default).
    public func makeKVPool(positions: Int, blockSize: Int = 16, type: KVType = .f16) throws(KVError) -> KVBlockPool {
        try checkKVType(type)
        let layout = kvLayout(blockSize: blockSize, type: type)
        return KVBlockPool(layout: layout, blocks: kvBlocks(layout, positions: positions), owner: ObjectIdentifier(self))
    }

    /// A sequence of `capacity` positions with a pool of its own, large enough for them
    /// (`kvBlocks`).
    public func makeCache(capacity: Int, type: KVType = .f16) -> KVSequence {
        let layout = kvLayout(type: type)
        let pool = KVBlockPool(layout: layout, blocks: kvBlocks(layout, positions: capacity), owner: ObjectIdentifier(self))
        return pool.makeSequence(capacity: capacity)
    }

    /// The context a sequence gets when `asked` positions (nil: none asked for): what was
    /// asked, else the model's own up to `defaultContextLimit`, never more than the model's.
    public func contextLength(asked: Int?) -> Int {
        let trained = hyperParameters.contextLength
        return min(asked ?? min(trained, Self.defaultContextLimit), trained)
    }

    /// The default context's ceiling: a model trained on 128k positions would otherwise
    /// reserve KV for all of them.
    public static let defaultContextLimit = 4096

    /// The KV sizing rule: blocks for `sequences` sequences of `positions` positions, each
    /// with one block more, so a copy-on-write at a full context still finds room.
    public func kvBlocks(_ layout: KVLayout, positions: Int, sequences: Int = 1) -> Int {
        (layout.blocks(forPositions: positions) + 1) * sequences
    }
}

/// Kernels over F16 rows. Each does exactly the arithmetic of its F32 twin in `VectorMath`
/// (F16 to F32 is exact), so attention over the F16 blocks gives the same bits as over
/// F16-rounded F32 values.
enum HalfMath {
    @inline(__always)
    static func load8(_ p: UnsafeRawPointer) -> SIMD8<Float> {
        #if arch(x86_64) && !MOE_PORTABLE_SIMD
        return _mm256_cvtph_ps(_mm_loadu_si128(p.assumingMemoryBound(to: __m128i.self)))
        #else
        let h = p.loadUnaligned(as: SIMD8<UInt16>.self)
        var v = SIMD8<Float>()
        for k in 0..<8 { v[k] = FP16.toFloat(h[k]) }
        return v
        #endif
    }

    @inline(__always)
    static func load1(_ p: UnsafeRawPointer, _ i: Int) -> Float {
        FP16.toFloat(p.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self))
    }
}
