import Synchronization

/// One bit per token id.
struct TokenBitset: Sendable, Equatable {
    private(set) var words: [UInt64]

    init(count: Int) {
        words = [UInt64](repeating: 0, count: (count + 63) / 64)
    }

    @inline(__always) mutating func insert(_ token: Int32) {
        words[Int(token) >> 6] |= UInt64(1) << UInt64(token & 63)
    }

    @inline(__always) mutating func remove(_ token: Int32) {
        words[Int(token) >> 6] &= ~(UInt64(1) << UInt64(token & 63))
    }

    @inline(__always) func contains(_ token: Int32) -> Bool {
        words[Int(token) >> 6] & (UInt64(1) << UInt64(token & 63)) != 0
    }

    mutating func formUnion(_ other: TokenBitset) {
        words.withUnsafeMutableBufferPointer { mine in
            other.words.withUnsafeBufferPointer { theirs in
                for index in 0..<min(mine.count, theirs.count) { mine[index] |= theirs[index] }
            }
        }
    }

    var isEmpty: Bool { words.allSatisfy { $0 == 0 } }
}

/// Tokens as a list when few, as bits when many.
enum TokenSet: Sendable {
    case list([Int32])
    case bits(TokenBitset)

    init(_ tokens: [Int32], vocabularySize: Int) {
        if tokens.count * 32 > vocabularySize {
            var bits = TokenBitset(count: vocabularySize)
            for token in tokens { bits.insert(token) }
            self = .bits(bits)
        } else {
            self = .list(tokens)
        }
    }

    func add(to bits: inout TokenBitset) {
        switch self {
        case .list(let tokens): for token in tokens { bits.insert(token) }
        case .bits(let other): bits.formUnion(other)
        }
    }

    var byteSize: Int {
        switch self {
        case .list(let tokens): tokens.count * 4
        case .bits(let bits): bits.words.count * 8
        }
    }
}

/// What a terminal in a given state does to each token, whatever the stack below it (the
/// context-independent part of the mask, computed once per grammar, vocabulary and terminal state).
struct TerminalClassification: Sendable {
    /// Tokens the terminal takes whole and is still on top afterwards (or just finished).
    var accepted: TokenSet
    /// Trie nodes where the terminal reaches an accepting state, by that state: the tokens below them
    /// may leave the terminal, so only the full automaton can tell.
    var boundaries: [(state: Int32, nodes: [Int32])]

    var byteSize: Int { accepted.byteSize + boundaries.reduce(0) { $0 + 8 + $1.nodes.count * 4 } }
}

/// A cache with a bound on its total size, evicting the least recently used entries.
struct BoundedCache<Key: Hashable, Value> {
    private var entries: [Key: (value: Value, size: Int, lastUse: UInt64)] = [:]
    private var clock: UInt64 = 0
    private var totalSize = 0
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    mutating func value(for key: Key) -> Value? {
        guard let entry = entries[key] else { return nil }
        clock += 1
        entries[key]?.lastUse = clock
        return entry.value
    }

    mutating func insert(_ value: Value, for key: Key, size: Int) {
        clock += 1
        if let old = entries.updateValue((value, size, clock), forKey: key) { totalSize -= old.size }
        totalSize += size
        if totalSize > capacity {
            // Drop the older half: amortised O(1) per insertion, and never the entry just added.
            let byAge = entries.sorted { $0.value.lastUse < $1.value.lastUse }
            for (oldKey, entry) in byAge.prefix(max(1, byAge.count / 2)) where oldKey != key {
                entries[oldKey] = nil
                totalSize -= entry.size
            }
        }
    }

    var count: Int { entries.count }
}

/// The masks of one grammar over one vocabulary, shared by every matcher of that pair (across
/// threads, hence the mutexes; the work happens outside them).
final class MaskCache: Sendable {
    let program: GrammarProgram
    let vocabulary: TokenVocabulary
    private let classifications: Mutex<BoundedCache<Int64, TerminalClassification>>
    private let masks: Mutex<BoundedCache<Set<[Frame]>, TokenBitset>>
    /// Whether some DFA counts (a string with a length bound): its states are then made canonical
    /// before any cache lookup.
    private let hasCountingTerminals: Bool

    /// Bytes each cache may hold.
    static let classificationBudget = 32 << 20
    static let maskBudget = 32 << 20

    init(program: GrammarProgram, vocabulary: TokenVocabulary) {
        self.program = program
        self.vocabulary = vocabulary
        classifications = Mutex(BoundedCache(capacity: Self.classificationBudget))
        masks = Mutex(BoundedCache(capacity: Self.maskBudget))
        hasCountingTerminals = program.dfas.contains { $0.isCounting }
    }

    /// The allowed byte-level tokens for these expanded stacks (end tokens are the matcher's business).
    func mask(for stacks: Set<[Frame]>) -> TokenBitset {
        let stacks = canonical(stacks)
        if let cached = masks.withLock({ $0.value(for: stacks) }) { return cached }
        var bits = TokenBitset(count: vocabulary.count)
        for stack in stacks {
            guard let top = stack.last else { continue }
            let classification = self.classification(of: top)
            classification.accepted.add(to: &bits)
            for boundary in classification.boundaries {
                var boundaryStack = stack
                boundaryStack[boundaryStack.count - 1].state = boundary.state
                if case .literal = program.elements[Int(top.element)] { program.stepPast(&boundaryStack) }
                var expanded = Set<[Frame]>()
                program.expand([boundaryStack], into: &expanded)
                let live = expanded.filter { !$0.isEmpty }
                guard !live.isEmpty else { continue }
                for node in boundary.nodes { walk(from: node, stacks: Array(live), into: &bits) }
            }
        }
        let result = bits
        masks.withLock { $0.insert(result, for: stacks, size: result.words.count * 8 + stacks.count * 64) }
        return result
    }

    /// `stacks` with each top counting DFA in the smallest state no token can tell from its own
    /// (``ByteDFA/canonicalState(_:horizon:)``): the same mask, so one cache entry serves every count
    /// of a long bounded string that is more than a token away from its bounds.
    private func canonical(_ stacks: Set<[Frame]>) -> Set<[Frame]> {
        guard hasCountingTerminals else { return stacks }
        let horizon = Int32(clamping: vocabulary.maximumTokenLength)
        var result = Set<[Frame]>(minimumCapacity: stacks.count)
        var changed = false
        for var stack in stacks {
            if let top = stack.last, case .dfa(let index) = program.elements[Int(top.element)] {
                let state = program.dfas[Int(index)].canonicalState(top.state, horizon: horizon)
                if state != top.state {
                    stack[stack.count - 1].state = state
                    changed = true
                }
            }
            result.insert(stack)
        }
        return changed ? result : stacks
    }

    /// Marks every token below trie `node` that the automaton, in `stacks` at that node, accepts.
    private func walk(from node: Int32, stacks: [[Frame]], into bits: inout TokenBitset) {
        let next = program.nextBytes(of: stacks)
        forEachChild(of: node, in: next) { child, byte in
            let advanced = program.advance(stacks, byte: byte)
            if advanced.isEmpty { return }
            let childNode = vocabulary.nodes[Int(child)]
            for index in childNode.tokenStart..<(childNode.tokenStart + childNode.tokenCount) {
                bits.insert(vocabulary.sortedTokens[Int(index)])
            }
            guard childNode.childCount > 0 else { return }
            let live = advanced.filter { !$0.isEmpty }
            if !live.isEmpty { walk(from: child, stacks: Array(live), into: &bits) }
        }
    }

    /// Calls `body` for each child of `node` whose byte is in `bytes`, by whichever is smaller.
    @inline(__always) private func forEachChild(
        of node: Int32, in bytes: ByteSet, _ body: (_ child: Int32, _ byte: UInt8) -> Void
    ) {
        let parent = vocabulary.nodes[Int(node)]
        if bytes.count * 4 < Int(parent.childCount) {
            for byte in 0...255 where bytes.contains(UInt8(byte)) {
                if let child = vocabulary.child(of: node, byte: UInt8(byte)) { body(child, UInt8(byte)) }
            }
        } else {
            for child in parent.firstChild..<(parent.firstChild + parent.childCount) {
                let byte = vocabulary.nodes[Int(child)].byte
                if bytes.contains(byte) { body(child, byte) }
            }
        }
    }

    // MARK: - Terminal classification

    private func key(of frame: Frame) -> Int64 {
        if case .dfa(let index) = program.elements[Int(frame.element)] {
            return (1 << 62) | (Int64(index) << 32) | Int64(frame.state)
        }
        return (Int64(frame.element) << 32) | Int64(frame.state)
    }

    func classification(of frame: Frame) -> TerminalClassification {
        let key = key(of: frame)
        if let cached = classifications.withLock({ $0.value(for: key) }) { return cached }
        let result = classify(frame)
        classifications.withLock { $0.insert(result, for: key, size: result.byteSize + 64) }
        return result
    }

    /// Walks the trie with the terminal alone: tokens that stay inside it are accepted whatever the
    /// context; at an accepting state the walk stops and leaves the subtree to the full automaton.
    private func classify(_ frame: Frame) -> TerminalClassification {
        var accepted: [Int32] = []
        var boundaries: [Int32: [Int32]] = [:]
        var work: [(node: Int32, state: Int32)] = [(0, frame.state)]
        let element = program.elements[Int(frame.element)]
        while let (node, state) = work.popLast() {
            let bytes = program.nextBytes(of: Frame(element: frame.element, state: state))
            forEachChild(of: node, in: bytes) { child, byte in
                let target: Int32
                let accepting: Bool
                switch element {
                case .literal(_, let count):
                    target = state + 1
                    accepting = target == count
                case .dfa(let index):
                    let dfa = program.dfas[Int(index)]
                    target = dfa.next(state, byte)
                    accepting = target >= 0 && dfa.isAccepting(target)
                default:
                    return
                }
                guard target >= 0 else { return }
                let childNode = vocabulary.nodes[Int(child)]
                for index in childNode.tokenStart..<(childNode.tokenStart + childNode.tokenCount) {
                    accepted.append(vocabulary.sortedTokens[Int(index)])
                }
                if accepting {
                    if childNode.childCount > 0 { boundaries[target, default: []].append(child) }
                } else if childNode.childCount > 0 {
                    work.append((child, target))
                }
            }
        }
        return TerminalClassification(
            accepted: TokenSet(accepted, vocabularySize: vocabulary.count),
            boundaries: boundaries.map { (state: $0.key, nodes: $0.value) })
    }
}

/// The ``MaskCache`` of a grammar per vocabulary it is used with (a few at most).
final class MaskCacheRegistry: Sendable {
    private let caches = Mutex<[MaskCache]>([])
    static let maximumVocabularies = 4

    func cache(for program: GrammarProgram, vocabulary: TokenVocabulary) -> MaskCache {
        caches.withLock { caches in
            if let index = caches.firstIndex(where: { $0.vocabulary === vocabulary }) {
                let cache = caches.remove(at: index)
                caches.append(cache)
                return cache
            }
            let cache = MaskCache(program: program, vocabulary: vocabulary)
            caches.append(cache)
            if caches.count > Self.maximumVocabularies { caches.removeFirst() }
            return cache
        }
    }
}
