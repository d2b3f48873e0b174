/// The BPE merge loop over token ids, shared by both model kinds.
///
/// Pairs of adjacent ids merge in order of rank, leftmost first among equal ranks, exactly as `tokenizers` and
/// llama.cpp do. Rules live in an open-addressing table keyed by the id pair: a lookup is a multiply and a probe,
/// which matters because encoding spends most of its time here.
struct BytePairMerger: Sendable {
    private static let emptyKey = UInt64.max

    private var keys: [UInt64]
    /// `rank << 32 | mergedID` for the key in the same slot.
    private var values: [UInt64]
    private var mask: Int
    private(set) var count = 0

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: Self.emptyKey, count: size)
        values = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    @inline(__always)
    private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// Adds a rule unless the pair already has one (the first, highest-priority rule wins, as in `tokenizers`).
    mutating func insert(left: Int32, right: Int32, rank: UInt32, merged: Int32) {
        let key = Self.key(left, right)
        var index = slot(key)
        while keys[index] != Self.emptyKey {
            if keys[index] == key { return }
            index = (index + 1) & mask
        }
        keys[index] = key
        values[index] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
        count += 1
    }

    /// The rule for a pair as `rank << 32 | mergedID`, or `UInt64.max` if the pair does not merge.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> UInt64 {
        let key = Self.key(left, right)
        var index = slot(key)
        while true {
            let found = keys[index]
            if found == key { return values[index] }
            if found == Self.emptyKey { return .max }
            index = (index + 1) & mask
        }
    }

    /// Merges `symbols` in place until no adjacent pair has a rule.
    func merge(_ symbols: inout [Int32]) {
        if symbols.count < 2 { return }
        if symbols.count <= 32 {
            mergeByScanning(&symbols)
        } else {
            mergeWithHeap(&symbols)
        }
    }

    /// Quadratic but allocation-free: best for the short words that byte-level pre-tokenizers produce.
    private func mergeByScanning(_ symbols: inout [Int32]) {
        while symbols.count > 1 {
            var best = UInt64.max
            var bestIndex = -1
            for index in 0..<(symbols.count - 1) {
                let rule = lookup(symbols[index], symbols[index + 1])
                // Comparing whole rules compares ranks first; strict `<` keeps the leftmost of equal ranks.
                if rule < best {
                    best = rule
                    bestIndex = index
                }
            }
            if bestIndex < 0 { return }
            symbols[bestIndex] = Int32(bitPattern: UInt32(truncatingIfNeeded: best))
            symbols.remove(at: bestIndex + 1)
        }
    }

    /// A linked list of symbols and a min-heap of candidate merges (rank, position): O(n log n) for long words,
    /// such as SentencePiece input, which is not pre-tokenized.
    private func mergeWithHeap(_ symbols: inout [Int32]) {
        let count = symbols.count
        var ids = symbols
        var next = [Int32](unsafeUninitializedCapacity: count) { buffer, initialized in
            for index in 0..<count { buffer[index] = Int32(index + 1) }
            buffer[count - 1] = -1
            initialized = count
        }
        var previous = [Int32](unsafeUninitializedCapacity: count) { buffer, initialized in
            for index in 0..<count { buffer[index] = Int32(index - 1) }
            initialized = count
        }
        var heap = MinHeap()
        for index in 0..<(count - 1) {
            let rule = lookup(ids[index], ids[index + 1])
            if rule != .max { heap.push(rule & 0xFFFF_FFFF_0000_0000 | UInt64(index)) }
        }
        while let top = heap.pop() {
            let position = Int(top & 0xFFFF_FFFF)
            let rank = top >> 32
            // Entries go stale when a neighbour merges; ranks identify rules, so re-checking the pair suffices.
            guard ids[position] >= 0, next[position] >= 0 else { continue }
            let right = Int(next[position])
            let rule = lookup(ids[position], ids[right])
            guard rule >> 32 == rank else { continue }
            ids[position] = Int32(bitPattern: UInt32(truncatingIfNeeded: rule))
            ids[right] = -1
            next[position] = next[right]
            if next[right] >= 0 { previous[Int(next[right])] = Int32(position) }
            if previous[position] >= 0 {
                let left = Int(previous[position])
                let candidate = lookup(ids[left], ids[position])
                if candidate != .max { heap.push(candidate & 0xFFFF_FFFF_0000_0000 | UInt64(left)) }
            }
            if next[position] >= 0 {
                let candidate = lookup(ids[position], ids[Int(next[position])])
                if candidate != .max { heap.push(candidate & 0xFFFF_FFFF_0000_0000 | UInt64(position)) }
            }
        }
        symbols.removeAll(keepingCapacity: true)
        var index = 0
        while index >= 0 {
            symbols.append(ids[index])
            index = Int(next[index])
        }
    }
}

/// A binary min-heap of packed `(rank << 32 | position)` merge candidates.
private struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ item: UInt64) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if items[parent] <= items[child] { break }
            items.swapAt(parent, child)
            child = parent
        }
    }

    mutating func pop() -> UInt64? {
        guard let last = items.popLast() else { return nil }
        guard !items.isEmpty else { return last }
        let top = items[0]
        items[0] = last
        var parent = 0
        while true {
            let left = parent * 2 + 1
            if left >= items.count { break }
            var smallest = left
            if left + 1 < items.count, items[left + 1] < items[left] { smallest = left + 1 }
            if items[parent] <= items[smallest] { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}
