/// Open-addressing map from byte strings to Int32, with the keys packed in one buffer.
/// Lookups take a buffer pointer, so slices of the text being tokenized are looked up
/// without building a key.
struct ByteStringMap: Sendable {
    private var pool: [UInt8] = []
    private var keyStart: [Int32] = []
    private var keyLength: [Int32] = []
    private var values: [Int32] = []
    private var slots: [Int32]      // entry index, or -1
    private var mask: Int

    init(expectedCount: Int) {
        var size = 16
        while size < expectedCount * 2 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
        keyStart.reserveCapacity(expectedCount)
        keyLength.reserveCapacity(expectedCount)
        values.reserveCapacity(expectedCount)
    }

    var count: Int { values.count }

    @inline(__always)
    static func hash(_ key: UnsafeBufferPointer<UInt8>) -> Int {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: key.count)
        var i = 0
        let n = key.count
        if let base = key.baseAddress {
            let raw = UnsafeRawPointer(base)
            while i + 8 <= n {
                let w = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                h = (h ^ w) &* 0xFF51_AFD7_ED55_8CCD
                h ^= h >> 29
                i += 8
            }
            var tail: UInt64 = 0
            var shift: UInt64 = 0
            while i < n { tail |= UInt64(base[i]) << shift; shift += 8; i += 1 }
            h = (h ^ tail) &* 0xC4CE_B9FE_1A85_EC53
        }
        h ^= h >> 32
        return Int(truncatingIfNeeded: h)
    }

    @inline(__always)
    private func keyEquals(_ entry: Int, _ key: UnsafeBufferPointer<UInt8>) -> Bool {
        let len = Int(keyLength[entry])
        guard len == key.count else { return false }
        if len == 0 { return true }
        let start = Int(keyStart[entry])
        return pool.withUnsafeBufferPointer { p in
            memcmpBytes(p.baseAddress! + start, key.baseAddress!, len)
        }
    }

    /// Value stored for `key`, or -1.
    func find(_ key: UnsafeBufferPointer<UInt8>) -> Int32 {
        var slot = ByteStringMap.hash(key) & mask
        while true {
            let e = slots[slot]
            if e < 0 { return -1 }
            if keyEquals(Int(e), key) { return values[Int(e)] }
            slot = (slot + 1) & mask
        }
    }

    func find(_ key: [UInt8]) -> Int32 {
        key.withUnsafeBufferPointer { find($0) }
    }

    /// Inserts `key`; if present, replaces the value when `replace` is true. Returns the
    /// value now stored.
    @discardableResult
    mutating func insert(_ key: UnsafeBufferPointer<UInt8>, value: Int32, replace: Bool) -> Int32 {
        if (values.count + 1) * 2 > slots.count { grow() }
        var slot = ByteStringMap.hash(key) & mask
        while true {
            let e = slots[slot]
            if e < 0 { break }
            if keyEquals(Int(e), key) {
                if replace { values[Int(e)] = value }
                return values[Int(e)]
            }
            slot = (slot + 1) & mask
        }
        slots[slot] = Int32(values.count)
        keyStart.append(Int32(pool.count))
        keyLength.append(Int32(key.count))
        pool.append(contentsOf: key)
        values.append(value)
        return value
    }

    @discardableResult
    mutating func insert(_ key: [UInt8], value: Int32, replace: Bool) -> Int32 {
        key.withUnsafeBufferPointer { insert($0, value: value, replace: replace) }
    }

    private mutating func grow() {
        let size = slots.count * 2
        var newSlots = [Int32](repeating: -1, count: size)
        let newMask = size - 1
        pool.withUnsafeBufferPointer { p in
            for e in 0..<values.count {
                let key = UnsafeBufferPointer(rebasing: p[Int(keyStart[e])..<Int(keyStart[e] + keyLength[e])])
                var slot = ByteStringMap.hash(key) & newMask
                while newSlots[slot] >= 0 { slot = (slot + 1) & newMask }
                newSlots[slot] = Int32(e)
            }
        }
        slots = newSlots
        mask = newMask
    }
}

@inline(__always)
func memcmpBytes(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    var i = 0
    while i + 8 <= n {
        if UnsafeRawPointer(a + i).loadUnaligned(as: UInt64.self) != UnsafeRawPointer(b + i).loadUnaligned(as: UInt64.self) {
            return false
        }
        i += 8
    }
    while i < n {
        if a[i] != b[i] { return false }
        i += 1
    }
    return true
}

/// Open-addressing map from UInt64 keys to UInt64 values (BPE merge table).
struct PairMap: Sendable {
    private var keys: [UInt64]
    private var vals: [UInt64]
    private var used: [Bool]
    private var mask: Int
    private(set) var count = 0

    init(expectedCount: Int) {
        var size = 16
        while size < expectedCount * 2 { size <<= 1 }
        keys = [UInt64](repeating: 0, count: size)
        vals = [UInt64](repeating: 0, count: size)
        used = [Bool](repeating: false, count: size)
        mask = size - 1
    }

    @inline(__always)
    private static func hash(_ k: UInt64) -> Int {
        var h = k &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 31
        return Int(truncatingIfNeeded: h)
    }

    @inline(__always)
    func find(_ key: UInt64) -> UInt64? {
        var slot = PairMap.hash(key) & mask
        while used[slot] {
            if keys[slot] == key { return vals[slot] }
            slot = (slot + 1) & mask
        }
        return nil
    }

    /// Inserts unless the key is present (first insertion wins, as `emplace` does).
    mutating func insertIfAbsent(_ key: UInt64, _ value: UInt64) {
        if (count + 1) * 2 > keys.count { grow() }
        var slot = PairMap.hash(key) & mask
        while used[slot] {
            if keys[slot] == key { return }
            slot = (slot + 1) & mask
        }
        used[slot] = true
        keys[slot] = key
        vals[slot] = value
        count += 1
    }

    private mutating func grow() {
        let oldKeys = keys, oldVals = vals, oldUsed = used
        let size = keys.count * 2
        keys = [UInt64](repeating: 0, count: size)
        vals = [UInt64](repeating: 0, count: size)
        used = [Bool](repeating: false, count: size)
        mask = size - 1
        count = 0
        for i in 0..<oldKeys.count where oldUsed[i] { insertIfAbsent(oldKeys[i], oldVals[i]) }
    }
}
