/// Bytes of a file header being written, integers little-endian (session files, KL bases).
struct ByteWriter {
    var data: [UInt8] = []
    mutating func bytes(_ b: [UInt8]) { data += b }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { data += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { data += $0 } }
    mutating func patch32(at offset: Int, _ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { for (i, b) in $0.enumerated() { data[offset + i] = b } }
    }
}

/// Reads a header's fields in order, integers little-endian. The caller has checked the
/// bytes are there.
struct ByteReader {
    let data: [UInt8]
    var offset = 0
    init(_ data: [UInt8]) { self.data = data }
    mutating func bytes(_ n: Int) -> [UInt8] {
        defer { offset += n }
        return Array(data[offset..<(offset + n)])
    }
    mutating func u32() -> UInt32 {
        defer { offset += 4 }
        return data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }.littleEndian
    }
    mutating func u64() -> UInt64 {
        defer { offset += 8 }
        return data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) }.littleEndian
    }
}
