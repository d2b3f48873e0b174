/// Turns a stream of token ids into text without ever emitting a broken character.
///
/// A character can be spread over several tokens (byte-level BPE splits emoji and CJK into bytes, SentencePiece
/// falls back to `<0xXX>` tokens), so bytes that end in an incomplete UTF-8 sequence are held back until the
/// tokens that complete them arrive. Concatenating everything ``append(_:)`` and ``flush()`` return gives the same
/// text as ``Tokenizer/decode(_:skipSpecialTokens:)`` for the same ids (with no kept special tokens).
public struct IncrementalDecoder: Sendable {
    /// The tokenizer whose vocabulary is decoded.
    public let tokenizer: Tokenizer
    /// Whether special added tokens are left out.
    public let skipSpecialTokens: Bool
    /// Special tokens whose text is kept even when `skipSpecialTokens` is set (a thinking model's
    /// `<think>` / `</think>`, which some vocabularies mark special, must reach the reasoning parser).
    public let keptSpecialTokens: Set<Int32>
    private var pending: [UInt8] = []
    private var atStart = true

    /// Creates a decoder; see also ``Tokenizer/makeIncrementalDecoder(skipSpecialTokens:keeping:)``.
    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false, keeping keptSpecialTokens: Set<Int32> = []) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        self.keptSpecialTokens = keptSpecialTokens
    }

    /// Adds one token and returns the text it completes (possibly empty).
    public mutating func append(_ id: Int32) -> String {
        if skipSpecialTokens && tokenizer.isSpecial(id) && !keptSpecialTokens.contains(id) { return "" }
        pending.append(contentsOf: tokenizer.tokenBytes(id))
        let complete = Self.completePrefixLength(pending)
        return emit(complete)
    }

    /// Returns whatever is still held back; incomplete sequences become U+FFFD. The decoder can be reused after.
    public mutating func flush() -> String {
        let text = emit(pending.count)
        atStart = true
        return text
    }

    private mutating func emit(_ count: Int) -> String {
        guard count > 0 else { return "" }
        var bytes = pending[..<count]
        if atStart, tokenizer.stripsLeadingSpace, bytes.first == UInt8(ascii: " ") {
            bytes = bytes.dropFirst()
        }
        atStart = false
        let text = String(decoding: bytes, as: UTF8.self)
        pending.removeFirst(count)
        return text
    }

    /// The length of `bytes` without a trailing, still incomplete UTF-8 sequence.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        var start = bytes.count - 1
        // Walk back over at most three continuation bytes to the sequence's lead byte.
        while start >= 0, start >= bytes.count - 4, bytes[start] & 0xC0 == 0x80 { start -= 1 }
        guard start >= 0, start >= bytes.count - 4 else { return bytes.count }
        let lead = bytes[start]
        let needed: Int
        switch lead {
        case 0xC2...0xDF: needed = 2
        case 0xE0...0xEF: needed = 3
        case 0xF0...0xF4: needed = 4
        default: return bytes.count  // ASCII, or an invalid lead that no later byte can repair
        }
        return bytes.count - start < needed ? start : bytes.count
    }
}
