/// One sequence's keys and values: a table of blocks of its pool (see `KVBlockPool`).
///
/// The forward pass calls `reserve(appending:)` before a batch (which allocates blocks and
/// copies a shared block the batch would write into), writes every layer's rows at the
/// reserved positions, then `commit()`: the positions count, and blocks that became full
/// enter the prefix cache.
public final class KVSequence: @unchecked Sendable {
    public let pool: KVBlockPool
    public let layout: KVLayout
    /// Positions this sequence may hold (its context length).
    public let capacity: Int
    /// Positions filled so far (the next token goes at `count`).
    public private(set) var count = 0
    /// The tokens at positions 0..<count (then those reserved but not committed).
    public private(set) var tokens: [Int] = []
    /// Positions reserved by `reserve(appending:)` and not yet committed.
    public private(set) var pending = 0
    private let table: UnsafeMutableBufferPointer<Int32>
    private var tableCount = 0
    /// Chain keys of the full blocks, in order.
    private var keys: [UInt64] = []

    init(pool: KVBlockPool, capacity: Int) {
        precondition(capacity > 0)
        self.pool = pool
        layout = pool.layout
        self.capacity = capacity
        table = .allocate(capacity: pool.layout.blocks(forPositions: capacity))
    }

    deinit {
        // Last block first: a chain's tail becomes evictable before its head.
        while tableCount > 0 {
            tableCount -= 1
            pool.release(table[tableCount])
        }
        table.deallocate()
    }

    public var layers: Int { layout.layers }
    public var keyWidth: Int { layout.keyWidth }
    public var valueWidth: Int { layout.valueWidth }
    /// The block numbers of this sequence, in order.
    public var blocks: [Int] { table.prefix(tableCount).map(Int.init) }
    /// Bytes of the blocks this sequence holds (shared ones included).
    public var bytes: Int { tableCount * layout.blockBytes }

    /// Forgets positions from `position` on (the next token goes there) and releases the
    /// blocks past it. A cached block stays in the prefix cache.
    public func truncate(to position: Int) {
        precondition(position >= 0 && position <= count)
        count = position
        pending = 0
        tokens.removeLast(tokens.count - position)
        keys.removeLast(keys.count - position / layout.blockSize)
        let keep = layout.blocks(forPositions: position)
        while tableCount > keep {
            tableCount -= 1
            pool.release(table[tableCount])
        }
    }

    /// Maps the longest cached prefix of `tokens` (whole blocks, at most `limit` positions)
    /// into this empty sequence and returns its length; the caller evaluates the rest.
    @discardableResult
    public func reuseCachedPrefix(of tokens: [Int], limit: Int? = nil) -> Int {
        precondition(count == 0, "prefix reuse starts an empty sequence")
        truncate(to: 0)  // blocks a failed batch reserved
        let n = layout.blockSize
        let end = min(tokens.count, limit ?? tokens.count, capacity)
        var parent = KVBlockPool.rootKey
        var blocks = 0
        while (blocks + 1) * n <= end {
            let slice = tokens[(blocks * n)..<((blocks + 1) * n)]
            let key = KVBlockPool.chainKey(parent: parent, tokens: slice)
            guard let b = pool.lookup(key: key, parent: parent, tokens: slice) else { break }
            pool.retain(b)
            table[tableCount] = b
            tableCount += 1
            keys.append(key)
            parent = key
            blocks += 1
        }
        count = blocks * n
        self.tokens = Array(tokens.prefix(count))
        return count
    }

    /// A second sequence sharing every block of this one (copy-on-write on either side).
    public func fork() -> KVSequence {
        let other = KVSequence(pool: pool, capacity: capacity)
        let used = layout.blocks(forPositions: count)
        for i in 0..<used {
            pool.retain(table[i])
            other.table[i] = table[i]
        }
        other.tableCount = used
        other.count = count
        other.tokens = Array(tokens.prefix(count))
        other.keys = keys
        return other
    }

    /// Makes positions `count..<count + tokens.count` writable: allocates the blocks they
    /// need and copies a block they share (with another sequence or the prefix cache)
    /// before it is written. Nothing changes when it throws.
    public func reserve(appending newTokens: [Int]) throws(KVError) {
        if pending > 0 {
            // A batch that failed after reserving: its positions never counted.
            tokens.removeLast(pending)
            pending = 0
        }
        let n = newTokens.count
        guard n > 0 else { return }
        precondition(count + n <= capacity, "reserve past the sequence's capacity")
        let first = count >> layout.shift
        let last = (count + n - 1) >> layout.shift
        var needed = 0
        for i in first...last {
            if i >= tableCount {
                needed += 1
            } else if mustCopy(table[i]) {
                needed += 1
            }
        }
        try pool.ensureAvailable(needed)
        for i in first...last {
            if i >= tableCount {
                table[i] = try pool.allocate()
                tableCount += 1
            } else if mustCopy(table[i]) {
                let old = table[i]
                let fresh = try pool.allocate()
                pool.copy(old, to: fresh)
                table[i] = fresh
                pool.release(old)
            }
        }
        tokens += newTokens
        pending = n
    }

    /// Drops an uncommitted reservation: the positions and the blocks it added (a block it
    /// copied for writing stays this sequence's copy, with the same contents). What a batch
    /// of several sequences does when one of them cannot reserve.
    public func cancelReservation() {
        truncate(to: count)
    }

    /// Shared blocks and cached ones are never written in place.
    private func mustCopy(_ b: Int32) -> Bool {
        pool.referenceCount(Int(b)) > 1 || pool.isCached(Int(b))
    }

    /// Counts the reserved positions as filled and enters newly full blocks in the prefix cache.
    public func commit() {
        count += pending
        pending = 0
        let n = layout.blockSize
        while keys.count < count / n {
            let i = keys.count
            let parent = keys.last ?? KVBlockPool.rootKey
            let slice = tokens[(i * n)..<((i + 1) * n)]
            let key = KVBlockPool.chainKey(parent: parent, tokens: slice)
            pool.register(table[i], key: key, parent: parent, tokens: slice)
            keys.append(key)
        }
    }

    // MARK: Restoring saved keys and values

    /// Starts restoring `positions` positions into this empty sequence: allocates their
    /// blocks without counting them. The caller then fills blocks from outside
    /// (`storageOfBlock(at:)`, from a session file) and/or computes a head of them through the
    /// model (whose batches reserve and commit as usual, in blocks already allocated), then
    /// calls `finishRestore(tokens:)`. Nothing changes when it throws.
    public func beginRestore(positions: Int) throws(KVError) {
        precondition(count == 0 && pending == 0 && tableCount == 0, "a restore starts an empty sequence")
        precondition(positions <= capacity, "restore past the sequence's capacity")
        let needed = layout.blocks(forPositions: positions)
        try pool.ensureAvailable(needed)
        for _ in 0..<needed {
            table[tableCount] = try pool.allocate()
            tableCount += 1
        }
    }

    /// The bytes of the `index`-th block of this sequence (`layout.blockBytes` of them), for
    /// filling during a restore or for saving. Precondition: the block is not shared.
    public func storageOfBlock(at index: Int) -> UnsafeMutableRawPointer {
        precondition(index < tableCount)
        return pool.base(of: Int(table[index]))
    }

    /// Ends a restore: positions `0..<tokens.count` now hold `tokens`' keys and values
    /// (those computed through the model are already counted: they must be a prefix), and
    /// their full blocks enter the prefix cache.
    public func finishRestore(tokens restored: [Int]) {
        precondition(pending == 0 && count <= restored.count && restored.count <= capacity)
        precondition(layout.blocks(forPositions: restored.count) <= tableCount)
        precondition(tokens.elementsEqual(restored.prefix(count)), "the computed head differs from the restored tokens")
        pending = restored.count - count
        tokens = restored
        commit()
        // Blocks allocated past the restored positions (none when the caller restored what it
        // reserved) go back.
        let keep = layout.blocks(forPositions: count)
        while tableCount > keep {
            tableCount -= 1
            pool.release(table[tableCount])
        }
    }

    // MARK: Rows

    /// The key row of `layer` at `position` (reserved or filled), for writing.
    @inline(__always)
    public func keyRow(layer: Int, position: Int) -> UnsafeMutableRawPointer {
        pool.base(of: Int(table[position >> layout.shift])) + layout.keyOffset(layer: layer, slot: position & layout.mask)
    }

    /// The value row of `layer` at `position` (reserved or filled), for writing.
    @inline(__always)
    public func valueRow(layer: Int, position: Int) -> UnsafeMutableRawPointer {
        pool.base(of: Int(table[position >> layout.shift])) + layout.valueOffset(layer: layer, slot: position & layout.mask)
    }

    /// What attention reads of one layer: raw pointers only, so the threads that read it
    /// touch no Swift object.
    public func view(layer: Int) -> KVLayerView {
        KVLayerView(storage: UnsafeRawPointer(pool.storage), table: UnsafePointer(table.baseAddress!),
                    blockBytes: layout.blockBytes, keyBase: layout.keyOffset(layer: layer, slot: 0),
                    valueBase: layout.valueOffset(layer: layer, slot: 0), keyRowBytes: layout.keyRowBytes,
                    valueRowBytes: layout.valueRowBytes, blockSize: layout.blockSize, shift: layout.shift)
    }
}

/// One layer's keys and values of a sequence, block by block: block `i` holds positions
/// `i * blockSize ..< (i + 1) * blockSize`, its rows `keyRowBytes` / `valueRowBytes` apart.
public struct KVLayerView: @unchecked Sendable {
    public let storage: UnsafeRawPointer
    public let table: UnsafePointer<Int32>
    public let blockBytes: Int
    public let keyBase: Int
    public let valueBase: Int
    public let keyRowBytes: Int
    public let valueRowBytes: Int
    public let blockSize: Int
    public let shift: Int

    /// The first key row of block `i`.
    @inline(__always)
    public func keys(block i: Int) -> UnsafeRawPointer { storage + (Int(table[i]) &* blockBytes &+ keyBase) }

    /// The first value row of block `i`.
    @inline(__always)
    public func values(block i: Int) -> UnsafeRawPointer { storage + (Int(table[i]) &* blockBytes &+ valueBase) }

    /// The key row at `position`.
    @inline(__always)
    public func key(position p: Int) -> UnsafeRawPointer {
        keys(block: p >> shift) + (p & (blockSize - 1)) &* keyRowBytes
    }

    /// The value row at `position`.
    @inline(__always)
    public func value(position p: Int) -> UnsafeRawPointer {
        values(block: p >> shift) + (p & (blockSize - 1)) &* valueRowBytes
    }
}
