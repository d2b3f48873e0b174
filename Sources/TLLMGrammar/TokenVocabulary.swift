/// The vocabulary as bytes, in a trie: built once per tokenizer, shared.
///
/// Layout: the token ids sorted by their bytes (``sortedTokens``); each trie node covers the run of
/// that order whose tokens start with the node's bytes, its own tokens (exactly its bytes) first.
/// A node's children are contiguous in ``nodes``, so a walk is array indexing only.
public final class TokenVocabulary: Sendable {
    struct Node: Sendable {
        /// The byte on the edge into this node.
        var byte: UInt8
        var firstChild: Int32
        var childCount: Int32
        /// Tokens whose bytes end exactly here: `sortedTokens[tokenStart..<tokenStart + tokenCount]`.
        var tokenStart: Int32
        var tokenCount: Int32
    }

    let nodes: [Node]
    let sortedTokens: [Int32]
    let tokenBytes: [[UInt8]?]
    /// The most bytes a token has: how far one mask can look ahead.
    let maximumTokenLength: Int

    /// `tokenBytes[id]`: the bytes token `id` adds to the output; nil for a token the grammar never allows.
    /// Empty byte strings are never allowed either.
    public init(tokenBytes: [[UInt8]?]) {
        self.tokenBytes = tokenBytes
        maximumTokenLength = tokenBytes.reduce(0) { Swift.max($0, $1?.count ?? 0) }
        var sorted = tokenBytes.indices.filter { tokenBytes[$0].map { !$0.isEmpty } ?? false }.map { Int32($0) }
        let bytes = tokenBytes.map { $0 ?? [] }
        sorted.sort { left, right in
            let a = bytes[Int(left)]
            let b = bytes[Int(right)]
            if a == b { return left < right }
            return a.lexicographicallyPrecedes(b)
        }
        sortedTokens = sorted

        // Breadth-first: each node's children are created together, so they are contiguous.
        var nodes = [Node(byte: 0, firstChild: 0, childCount: 0, tokenStart: 0, tokenCount: 0)]
        var ranges: [(lower: Int, upper: Int, depth: Int)] = [(0, sorted.count, 0)]
        var index = 0
        while index < nodes.count {
            let (lower, upper, depth) = ranges[index]
            var position = lower
            while position < upper && bytes[Int(sorted[position])].count == depth { position += 1 }
            nodes[index].tokenStart = Int32(lower)
            nodes[index].tokenCount = Int32(position - lower)
            nodes[index].firstChild = Int32(nodes.count)
            while position < upper {
                let byte = bytes[Int(sorted[position])][depth]
                var end = position + 1
                while end < upper && bytes[Int(sorted[end])][depth] == byte { end += 1 }
                nodes.append(Node(byte: byte, firstChild: 0, childCount: 0, tokenStart: 0, tokenCount: 0))
                ranges.append((position, end, depth + 1))
                position = end
            }
            nodes[index].childCount = Int32(nodes.count) - nodes[index].firstChild
            index += 1
        }
        self.nodes = nodes
    }

    /// The number of token ids (the logits row's length).
    public var count: Int { tokenBytes.count }

    /// The bytes of `token`, nil for a token no grammar allows (unknown, special or empty).
    func bytes(of token: Int32) -> [UInt8]? {
        guard token >= 0, Int(token) < tokenBytes.count, let bytes = tokenBytes[Int(token)], !bytes.isEmpty else {
            return nil
        }
        return bytes
    }

    /// The child of `node` along `byte`, if any (children are sorted by byte).
    func child(of node: Int32, byte: UInt8) -> Int32? {
        var lower = Int(nodes[Int(node)].firstChild)
        var upper = lower + Int(nodes[Int(node)].childCount)
        while lower < upper {
            let middle = (lower + upper) / 2
            let found = nodes[middle].byte
            if found == byte { return Int32(middle) }
            if found < byte { lower = middle + 1 } else { upper = middle }
        }
        return nil
    }
}
