/// Cuts text at added tokens (special and user-defined) before the model sees it.
///
/// Matching is leftmost-longest, like the Aho-Corasick automaton of `tokenizers`, and honours `lstrip`, `rstrip`
/// and `single_word`. Candidates are indexed by their first byte, which keeps the scan at one table look-up per
/// byte for the few dozen added tokens real vocabularies have.
struct AddedTokenSplitter: Sendable {
    /// A stretch of the input: plain text (a byte range) or a matched token.
    enum Segment: Equatable {
        case text(Range<Int>)
        case token(Int32)
    }

    private struct Candidate: Sendable {
        var bytes: [UInt8]
        var token: TokenizerConfiguration.AddedToken
    }

    /// Candidates by first byte, longest first.
    private let candidates: [[Candidate]]
    let isEmpty: Bool

    init(_ tokens: [TokenizerConfiguration.AddedToken]) {
        var table = [[Candidate]](repeating: [], count: 256)
        for token in tokens where !token.content.isEmpty {
            let bytes = Array(token.content.utf8)
            table[Int(bytes[0])].append(Candidate(bytes: bytes, token: token))
        }
        for index in table.indices { table[index].sort { $0.bytes.count > $1.bytes.count } }
        candidates = table
        isEmpty = tokens.isEmpty
    }

    func split(_ text: UnsafeBufferPointer<UInt8>) -> [Segment] {
        guard !isEmpty else { return text.isEmpty ? [] : [.text(0..<text.count)] }
        var segments: [Segment] = []
        var textStart = 0
        var position = 0
        while position < text.count {
            guard let candidate = match(text, at: position) else {
                position += 1
                continue
            }
            var start = position
            var end = position + candidate.bytes.count
            if candidate.token.lstrip {
                while start > textStart, Self.isWhitespace(text, endingAt: start) {
                    start -= Self.lengthOfScalar(endingAt: start, text)
                }
            }
            if candidate.token.rstrip {
                while end < text.count, PreTokenizerScanner.scalar(text, end).0.isWhitespace {
                    end += PreTokenizerScanner.scalar(text, end).1
                }
            }
            if start > textStart { segments.append(.text(textStart..<start)) }
            segments.append(.token(candidate.token.id))
            textStart = end
            position = end
        }
        if textStart < text.count { segments.append(.text(textStart..<text.count)) }
        return segments
    }

    @inline(__always)
    private func match(_ text: UnsafeBufferPointer<UInt8>, at position: Int) -> Candidate? {
        let list = candidates[Int(text[position])]
        if list.isEmpty { return nil }
        outer: for candidate in list where position + candidate.bytes.count <= text.count {
            for (offset, byte) in candidate.bytes.enumerated() where text[position + offset] != byte {
                continue outer
            }
            if candidate.token.singleWord {
                let end = position + candidate.bytes.count
                if position > 0, Self.isWordCharacter(text, endingAt: position) { continue }
                if end < text.count, PreTokenizerScanner.scalar(text, end).0.isWordCharacter { continue }
            }
            return candidate
        }
        return nil
    }

    private static func lengthOfScalar(endingAt end: Int, _ text: UnsafeBufferPointer<UInt8>) -> Int {
        var start = end - 1
        while start > 0, text[start] & 0xC0 == 0x80 { start -= 1 }
        return end - start
    }

    private static func isWhitespace(_ text: UnsafeBufferPointer<UInt8>, endingAt end: Int) -> Bool {
        PreTokenizerScanner.scalar(text, end - lengthOfScalar(endingAt: end, text)).0.isWhitespace
    }

    private static func isWordCharacter(_ text: UnsafeBufferPointer<UInt8>, endingAt end: Int) -> Bool {
        PreTokenizerScanner.scalar(text, end - lengthOfScalar(endingAt: end, text)).0.isWordCharacter
    }
}

extension PreTokenizerScanner.CharacterClass {
    var isWhitespace: Bool { self == .space || self == .newline }
    // `_` counts as a word character for `single_word`, but it is `.other` here; close enough for a rarely used flag.
    var isWordCharacter: Bool { self == .letter || self == .number }
}
