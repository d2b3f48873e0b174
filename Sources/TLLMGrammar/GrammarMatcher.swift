/// One output's position in a grammar.
///
/// The state is the set of expanded automaton stacks the output so far can be in (see
/// ``GrammarProgram``); a stack that finished the grammar is empty. Masks come from the grammar's
/// shared ``MaskCache`` for this vocabulary, so matchers of the same grammar reuse each other's work.
///
/// Dead ends: if no token of the vocabulary can continue the output (the vocabulary lacks a byte the
/// grammar needs), ``mask(_:)`` allows the end tokens instead of leaving a row of -infinity, and
/// sets ``isAtDeadEnd``; with no end tokens at all it leaves the row untouched.
public struct GrammarMatcher: Sendable {
    private let vocabulary: TokenVocabulary
    private let cache: MaskCache
    private let endTokens: Set<Int32>
    private var stacks: Set<[Frame]>
    private var ended = false

    /// Whether the last ``mask(_:)`` found no token that continues the output.
    public private(set) var isAtDeadEnd = false

    /// A matcher at the start of `grammar`; `endTokens` (EOS, end of turn) may come only where the grammar can end.
    public init(grammar: Grammar, vocabulary: TokenVocabulary, endTokens: Set<Int32>) {
        self.vocabulary = vocabulary
        self.cache = grammar.maskCaches.cache(for: grammar.program, vocabulary: vocabulary)
        self.endTokens = endTokens
        self.stacks = Set(grammar.program.initialStacks)
    }

    /// The output so far is complete: an end token may come.
    public var canEnd: Bool { ended || stacks.contains([]) }

    /// The output is complete and nothing but an end token can follow.
    public var mustEnd: Bool { ended || (stacks.count == 1 && stacks.contains([])) }

    /// The tokens allowed next, end tokens included (the rule ``mask(_:)`` applies), and whether
    /// no token but an end token was left although the output is not complete.
    func allowedTokens() -> (tokens: TokenBitset, deadEnd: Bool) {
        var bits: TokenBitset
        if mustEnd {
            bits = TokenBitset(count: vocabulary.count)
        } else {
            bits = cache.mask(for: stacks)
            for token in endTokens where token >= 0 && Int(token) < vocabulary.count { bits.remove(token) }
        }
        let deadEnd = !canEnd && bits.isEmpty
        if canEnd || deadEnd {
            for token in endTokens where token >= 0 && Int(token) < vocabulary.count { bits.insert(token) }
        }
        return (bits, deadEnd)
    }

    /// Sets to -infinity the logit of every token that cannot come next.
    ///
    /// `logits` covers token ids from 0; entries past the vocabulary are masked too.
    public mutating func mask(_ logits: UnsafeMutableBufferPointer<Float>) {
        let (bits, deadEnd) = allowedTokens()
        isAtDeadEnd = deadEnd
        // A dead end with no end tokens to offer: leave the row alone rather than all -infinity.
        if bits.isEmpty { return }
        let negativeInfinity = -Float.infinity
        bits.words.withUnsafeBufferPointer { words in
            for (wordIndex, word) in words.enumerated() where word != ~0 {
                let base = wordIndex << 6
                let limit = min(64, logits.count - base)
                if limit <= 0 { break }
                for bit in 0..<limit where word & (UInt64(1) << UInt64(bit)) == 0 {
                    logits[base + bit] = negativeInfinity
                }
            }
        }
        let covered = bits.words.count * 64
        if logits.count > covered {
            for index in covered..<logits.count { logits[index] = negativeInfinity }
        }
    }

    /// Advances over `token`; false (state unchanged) if the grammar does not allow it here.
    public mutating func accept(_ token: Int32) -> Bool {
        if ended { return false }
        if endTokens.contains(token) {
            guard canEnd else { return false }
            ended = true
            return true
        }
        guard let bytes = vocabulary.bytes(of: token), let next = advance(over: bytes) else { return false }
        stacks = next
        return true
    }

    /// Whether `bytes` can come next (state unchanged): for forced continuations and tests.
    public func accepts(bytes: [UInt8]) -> Bool {
        !ended && (bytes.isEmpty || advance(over: bytes) != nil)
    }

    /// Advances over raw bytes, as if a token with these bytes were accepted; false (state unchanged)
    /// if the grammar does not allow them.
    public mutating func accept(bytes: [UInt8]) -> Bool {
        if ended { return false }
        guard let next = advance(over: bytes) else { return false }
        stacks = next
        return true
    }

    private func advance(over bytes: [UInt8]) -> Set<[Frame]>? {
        var current = stacks
        for byte in bytes {
            current = cache.program.advance(current, byte: byte)
            if current.isEmpty { return nil }
        }
        return current
    }
}
