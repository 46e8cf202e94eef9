import Testing
@testable import KV

/// 2 layers, keys and values 4 wide, 4 positions per block, F16.
let smallLayout = KVLayout(layers: 2, keyWidth: 4, valueWidth: 4, blockSize: 4)

/// Writes `marker` into every key and value element of `position`, in every layer.
func mark(_ s: KVSequence, position: Int, _ marker: UInt16) {
    for l in 0..<s.layers {
        let k = s.keyRow(layer: l, position: position), v = s.valueRow(layer: l, position: position)
        for i in 0..<s.keyWidth { k.storeBytes(of: marker, toByteOffset: 2 * i, as: UInt16.self) }
        for i in 0..<s.valueWidth { v.storeBytes(of: marker &+ 1, toByteOffset: 2 * i, as: UInt16.self) }
    }
}

/// The marker at `position`, checked to be the same in every element of every layer.
func marker(_ s: KVSequence, position: Int) -> UInt16? {
    var found: UInt16?
    for l in 0..<s.layers {
        for layer in [s.view(layer: l)] {
            for i in 0..<s.keyWidth {
                let k = layer.key(position: position).load(fromByteOffset: 2 * i, as: UInt16.self)
                let v = layer.value(position: position).load(fromByteOffset: 2 * i, as: UInt16.self)
                guard v == k &+ 1, found == nil || found == k else { return nil }
                found = k
            }
        }
    }
    return found
}

/// Reserves, marks each new position with its token and commits.
func append(_ s: KVSequence, _ tokens: [Int]) throws {
    let start = s.count
    try s.reserve(appending: tokens)
    for (i, t) in tokens.enumerated() { mark(s, position: start + i, UInt16(t)) }
    s.commit()
}

@Suite("KV block pool")
struct BlockPoolTests {
    @Test func layoutFigures() {
        #expect(smallLayout.keyRowBytes == 8 && smallLayout.valueRowBytes == 8)
        #expect(smallLayout.layerBytes == 64)
        #expect(smallLayout.blockBytes == 128)
        #expect(smallLayout.bytesPerPosition == 32)
        #expect(smallLayout.keyOffset(layer: 1, slot: 2) == 64 + 16)
        #expect(smallLayout.valueOffset(layer: 1, slot: 2) == 64 + 32 + 16)
        #expect(smallLayout.blocks(forPositions: 9) == 3)
    }

    @Test func poolSizedByBytes() throws {
        let pool = try KVBlockPool(layout: smallLayout, memoryBytes: 3 * 128 + 100)
        #expect(pool.capacity == 3)
        #expect(pool.bytes == 3 * 128)
        #expect(throws: KVError.memoryTooSmall(bytes: 100, blockBytes: 128)) {
            try KVBlockPool(layout: smallLayout, memoryBytes: 100)
        }
    }

    @Test func blocksAllocatedFreedAndCounted() throws {
        let pool = KVBlockPool(layout: smallLayout, blocks: 8)
        do {
            let s = pool.makeSequence(capacity: 32)
            try append(s, Array(1...10))
            #expect(s.count == 10)
            #expect(s.blocks.count == 3)
            #expect(Set(s.blocks).count == 3)
            #expect(pool.referencedBlocks == 3 && pool.freeBlocks == 5)
            #expect(s.bytes == 3 * 128)
            // The two full blocks entered the prefix cache; the partial one did not.
            #expect(pool.cachedBlocks == 2)
            #expect(s.blocks.map(pool.isCached) == [true, true, false])
            for p in 0..<10 { #expect(marker(s, position: p) == UInt16(p + 1)) }

            s.truncate(to: 5)
            #expect(s.count == 5 && s.tokens == [1, 2, 3, 4, 5])
            #expect(s.blocks.count == 2)
            #expect(pool.referencedBlocks == 2 && pool.freeBlocks == 6)

            s.truncate(to: 0)
            #expect(s.blocks.isEmpty)
            // Cached blocks are kept for reuse, not freed.
            #expect(pool.referencedBlocks == 0 && pool.evictableBlocks == 2 && pool.freeBlocks == 6)
            try append(s, [7, 7, 7])
            #expect(pool.referencedBlocks == 1)
        }
        // The sequence is gone: every block is free or evictable.
        #expect(pool.referencedBlocks == 0)
        #expect(pool.freeBlocks + pool.evictableBlocks == 8)
    }

    @Test func referenceCountsAndCopyOnWrite() throws {
        let pool = KVBlockPool(layout: smallLayout, blocks: 8)
        let a = pool.makeSequence(capacity: 32)
        try append(a, [1, 2, 3, 4, 5, 6])
        let b = a.fork()
        #expect(b.count == 6 && b.tokens == a.tokens)
        #expect(b.blocks == a.blocks)
        for block in a.blocks { #expect(pool.referenceCount(block) == 2) }
        #expect(pool.referencedBlocks == 2)

        // b writes into the shared partial block: it gets its own copy first.
        try append(b, [100])
        #expect(b.blocks[0] == a.blocks[0])
        #expect(b.blocks[1] != a.blocks[1])
        #expect(pool.referenceCount(a.blocks[0]) == 2)
        #expect(pool.referenceCount(a.blocks[1]) == 1 && pool.referenceCount(b.blocks[1]) == 1)
        // a's block is its own now: written in place.
        let aBlock = a.blocks[1]
        try append(a, [200, 201])
        #expect(a.blocks[1] == aBlock)
        #expect(pool.referencedBlocks == 3)

        for p in 0..<6 {
            #expect(marker(a, position: p) == UInt16(p + 1))
            #expect(marker(b, position: p) == UInt16(p + 1))
        }
        #expect(marker(a, position: 6) == 200 && marker(a, position: 7) == 201)
        #expect(marker(b, position: 6) == 100)

        // Divergence inside the shared full block: b rewinds into it and writes.
        b.truncate(to: 2)
        try append(b, [50, 51])
        #expect(b.blocks[0] != a.blocks[0])
        #expect(pool.referenceCount(a.blocks[0]) == 1)
        #expect((0..<4).map { marker(a, position: $0) } == [1, 2, 3, 4])
        #expect((0..<4).map { marker(b, position: $0) } == [1, 2, 50, 51])
    }

    @Test func cachedBlockIsCopiedNotOverwritten() throws {
        let pool = KVBlockPool(layout: smallLayout, blocks: 8)
        let a = pool.makeSequence(capacity: 32)
        try append(a, [1, 2, 3, 4, 5, 6, 7, 8])
        let cachedBlock = a.blocks[1]
        #expect(pool.isCached(cachedBlock) && pool.referenceCount(cachedBlock) == 1)
        a.truncate(to: 6)
        try append(a, [60, 61])
        #expect(a.blocks[1] != cachedBlock)
        #expect(pool.isCached(cachedBlock) && pool.referenceCount(cachedBlock) == 0)
        // The cached prefix still holds the original tokens' rows.
        let b = pool.makeSequence(capacity: 32)
        #expect(b.reuseCachedPrefix(of: [1, 2, 3, 4, 5, 6, 7, 8, 9]) == 8)
        #expect(b.blocks == [a.blocks[0], cachedBlock])
        #expect((0..<8).map { marker(b, position: $0) } == (1...8).map { UInt16($0) })
        #expect((4..<8).map { marker(a, position: $0) } == [5, 6, 60, 61])
    }

    @Test func prefixReuseMapsTheSameBlocks() throws {
        let pool = KVBlockPool(layout: smallLayout, blocks: 16)
        let tokens = Array(1...14)
        let a = pool.makeSequence(capacity: 32)
        try append(a, tokens)

        let b = pool.makeSequence(capacity: 32)
        #expect(b.reuseCachedPrefix(of: tokens + [99]) == 12)
        #expect(b.count == 12 && b.tokens == Array(tokens.prefix(12)))
        #expect(b.blocks == Array(a.blocks.prefix(3)))
        for block in b.blocks { #expect(pool.referenceCount(block) == 2) }
        #expect(pool.prefixHits == 3)
        try append(b, [13, 14])
        #expect(b.blocks[3] != a.blocks[3])
        for p in 0..<14 { #expect(marker(b, position: p) == UInt16(p + 1)) }

        // Only whole blocks, only as far as the tokens agree, never past the limit.
        var changed = tokens
        changed[6] = 0
        #expect(pool.makeSequence(capacity: 32).reuseCachedPrefix(of: changed) == 4)
        #expect(pool.makeSequence(capacity: 32).reuseCachedPrefix(of: tokens, limit: 11) == 8)
        #expect(pool.makeSequence(capacity: 32).reuseCachedPrefix(of: Array(tokens.prefix(3))) == 0)
        // The key chains in the parent: the same second block after another first does not match.
        let other = [9, 9, 9, 9] + Array(tokens[4..<8])
        #expect(pool.makeSequence(capacity: 32).reuseCachedPrefix(of: other) == 0)
        #expect(KVBlockPool.chainKey(parent: 1, tokens: [5, 6, 7, 8]) != KVBlockPool.chainKey(parent: 2, tokens: [5, 6, 7, 8]))

        // Cached blocks outlive the sequence that computed them.
        let blocksOfA = a.blocks
        a.truncate(to: 0)
        let c = pool.makeSequence(capacity: 32)
        #expect(c.reuseCachedPrefix(of: tokens) == 12)
        #expect(c.blocks == Array(blocksOfA.prefix(3)))
    }

    @Test func evictionIsLRUAndSparesReferencedBlocks() throws {
        let pool = KVBlockPool(layout: smallLayout, blocks: 6)
        let x = [1, 2, 3, 4, 5, 6, 7, 8], y = [11, 12, 13, 14, 15, 16, 17, 18], z = [21, 22, 23, 24, 25, 26, 27, 28]
        var xBlocks: [Int] = [], yBlocks: [Int] = [], zBlocks: [Int] = []
        do {
            let s = pool.makeSequence(capacity: 32)
            try append(s, x)
            xBlocks = s.blocks
        }
        do {
            let s = pool.makeSequence(capacity: 32)
            try append(s, y)
            yBlocks = s.blocks
        }
        do {
            let s = pool.makeSequence(capacity: 32)
            try append(s, z)
            zBlocks = s.blocks
        }
        // Released sequence by sequence, each from its last block to its first.
        #expect(pool.evictionOrder == [xBlocks[1], xBlocks[0], yBlocks[1], yBlocks[0], zBlocks[1], zBlocks[0]])
        #expect(pool.freeBlocks == 0 && pool.evictableBlocks == 6)

        // Using x's prefix again makes it referenced (never evicted) and, once released,
        // the most recently used.
        let keep = pool.makeSequence(capacity: 32)
        #expect(keep.reuseCachedPrefix(of: x) == 8)
        #expect(pool.evictionOrder == [yBlocks[1], yBlocks[0], zBlocks[1], zBlocks[0]])

        let grow = pool.makeSequence(capacity: 32)
        try append(grow, [31, 32, 33, 34, 35])
        #expect(pool.evictions == 2)
        #expect(Set(grow.blocks) == Set(yBlocks))
        #expect(pool.evictionOrder == [zBlocks[1], zBlocks[0]])
        #expect(pool.makeSequence(capacity: 32).reuseCachedPrefix(of: y) == 0)
        // z's prefix is still cached, x's still referenced and intact.
        #expect(pool.makeSequence(capacity: 32).reuseCachedPrefix(of: z) == 8)
        #expect((0..<8).map { marker(keep, position: $0) } == x.map { UInt16($0) })

        keep.truncate(to: 0)
        #expect(pool.evictionOrder == [zBlocks[1], zBlocks[0], xBlocks[1], xBlocks[0]])
    }

    @Test func exhaustedMemoryIsATypedErrorAndChangesNothing() throws {
        let pool = KVBlockPool(layout: smallLayout, blocks: 3)
        let a = pool.makeSequence(capacity: 32)
        try append(a, [1, 2, 3, 4, 5, 6])
        let b = pool.makeSequence(capacity: 32)
        try append(b, [9])
        let expected = KVError.memoryExhausted(neededBlocks: 2, availableBlocks: 0, totalBlocks: 3, blockBytes: 128,
                                               blockPositions: 4)
        #expect(throws: expected) { try b.reserve(appending: [1, 2, 3, 4, 5, 6, 7, 8]) }
        #expect(b.count == 1 && b.blocks.count == 1 && b.tokens == [9])
        #expect(pool.referencedBlocks == 3)
        #expect(expected.description.contains("3 blocks (384 bytes)"))
        // A fork's write into a shared block needs a copy, so it fails too.
        let c = a.fork()
        #expect(throws: KVError.self) { try c.reserve(appending: [7]) }
        #expect(c.count == 6 && c.blocks == a.blocks)
        // Unreferenced cached blocks make room.
        a.truncate(to: 0)
        c.truncate(to: 0)
        #expect(pool.evictableBlocks == 1)
        try append(b, [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(b.count == 9 && pool.evictions == 1)
    }
}
