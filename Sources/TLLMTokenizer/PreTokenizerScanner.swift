/// Hand-written equivalents of the pre-tokenizer regexes.
///
/// Each scanner returns the end of the regex match that starts at a given byte offset of valid UTF-8 text,
/// reproducing the leftmost alternative that `tokenizers` (Oniguruma) would pick, including the backtracking of
/// `\s+(?!\S)` and `\s*[\r\n]+`. Swift `Regex` gives the same answers but is two orders of magnitude slower.
struct PreTokenizerScanner {
    /// The character classes the patterns distinguish.
    enum CharacterClass: UInt8 {
        /// `\p{L}`: general categories Lu, Ll, Lt, Lm, Lo.
        case letter
        /// `\p{N}`: Nd, Nl, No.
        case number
        /// `\s` except CR and LF (White_Space property).
        case space
        /// CR or LF.
        case newline
        /// Everything else (`[^\s\p{L}\p{N}]`).
        case other
    }

    let kind: TokenizerConfiguration.PreTokenizer

    private static let asciiClasses: [CharacterClass] = (0..<128).map { byte in
        switch UInt8(byte) {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"): .letter
        case UInt8(ascii: "0")...UInt8(ascii: "9"): .number
        case 0x0A, 0x0D: .newline
        case 0x09, 0x0B, 0x0C, 0x20: .space
        default: .other
        }
    }

    /// The class of a scalar, as `\p{L}`, `\p{N}` and `\s` see it.
    static func characterClass(_ value: UInt32) -> CharacterClass {
        if value < 128 { return asciiClasses[Int(value)] }
        guard let scalar = Unicode.Scalar(value) else { return .other }
        let properties = scalar.properties
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return .number
        default:
            return properties.isWhitespace ? .space : .other
        }
    }

    /// Decodes the scalar at `index` of valid UTF-8 text: its class and its length in bytes.
    @inline(__always)
    static func scalar(_ text: UnsafeBufferPointer<UInt8>, _ index: Int) -> (CharacterClass, Int) {
        let lead = text[index]
        if lead < 0x80 { return (asciiClasses[Int(lead)], 1) }
        let value: UInt32
        let length: Int
        if lead < 0xE0 {
            value = UInt32(lead & 0x1F) << 6 | UInt32(text[index + 1] & 0x3F)
            length = 2
        } else if lead < 0xF0 {
            value = UInt32(lead & 0x0F) << 12 | UInt32(text[index + 1] & 0x3F) << 6 | UInt32(text[index + 2] & 0x3F)
            length = 3
        } else {
            value =
                UInt32(lead & 0x07) << 18 | UInt32(text[index + 1] & 0x3F) << 12 | UInt32(text[index + 2] & 0x3F) << 6
                | UInt32(text[index + 3] & 0x3F)
            length = 4
        }
        return (characterClass(value), length)
    }

    /// Calls `body` with the byte range of every piece of `text`.
    func split(_ text: UnsafeBufferPointer<UInt8>, _ body: (Range<Int>) -> Void) {
        var start = 0
        while start < text.count {
            let end: Int
            switch kind {
            case .gpt2: end = gpt2End(text, start, splitDigits: false)
            case .smollm: end = gpt2End(text, start, splitDigits: true)
            case .llama3: end = llama3End(text, start, maxDigits: 3)
            case .qwen2: end = llama3End(text, start, maxDigits: 1)
            }
            body(start..<end)
            start = end
        }
    }

    /// The length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at `index`, or 0.
    @inline(__always)
    private func contractionLength(_ text: UnsafeBufferPointer<UInt8>, _ index: Int, caseInsensitive: Bool) -> Int {
        guard text[index] == UInt8(ascii: "'"), index + 1 < text.count else { return 0 }
        // ASCII lower-casing by setting bit 5 is only valid for letters, which is all we compare against.
        let fold: UInt8 = caseInsensitive ? 0x20 : 0
        let first = text[index + 1] | fold
        switch first {
        case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"):
            return 2
        case UInt8(ascii: "r"), UInt8(ascii: "v"), UInt8(ascii: "l"):
            guard index + 2 < text.count else { return 0 }
            let second = text[index + 2] | fold
            if first == UInt8(ascii: "l") ? second == UInt8(ascii: "l") : second == UInt8(ascii: "e") { return 3 }
            return 0
        default:
            // Under Unicode case folding, `'ſ` (U+017F LATIN SMALL LETTER LONG S) matches `'s`.
            if caseInsensitive, text[index + 1] == 0xC5, index + 2 < text.count, text[index + 2] == 0xBF {
                return 3
            }
            return 0
        }
    }

    /// Advances over scalars of one class from `index`; returns the end and how many scalars it passed.
    @inline(__always)
    private func run(
        _ text: UnsafeBufferPointer<UInt8>, from index: Int, while matches: (CharacterClass) -> Bool,
        limit: Int = .max
    ) -> Int {
        var position = index
        var count = 0
        while position < text.count, count < limit {
            let (cls, length) = Self.scalar(text, position)
            guard matches(cls) else { break }
            position += length
            count += 1
        }
        return position
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`; with `splitDigits`, every
    /// digit is first cut out on its own (the `Digits(individual_digits)` pre-tokenizer before it).
    private func gpt2End(_ text: UnsafeBufferPointer<UInt8>, _ start: Int, splitDigits: Bool) -> Int {
        let contraction = contractionLength(text, start, caseInsensitive: false)
        if contraction > 0 { return start + contraction }
        var (cls, length) = Self.scalar(text, start)
        var position = start
        if text[start] == UInt8(ascii: " "), start + 1 < text.count {
            let (next, nextLength) = Self.scalar(text, start + 1)
            if next == .letter || next == .other || (next == .number && !splitDigits) {
                position = start + 1
                cls = next
                length = nextLength
            }
        }
        switch cls {
        case .letter:
            return run(text, from: position, while: { $0 == .letter })
        case .number:
            return splitDigits ? position + length : run(text, from: position, while: { $0 == .number })
        case .other:
            return run(text, from: position, while: { $0 == .other })
        case .space, .newline:
            return whitespaceEnd(text, start, digitsEndPieces: splitDigits)
        }
    }

    /// `\s+(?!\S)|\s+` at a whitespace scalar: the whole run at the end of the text (or piece), otherwise the run
    /// without its last scalar, which then prefixes the next word; a single whitespace scalar stands alone.
    @inline(__always)
    private func whitespaceEnd(_ text: UnsafeBufferPointer<UInt8>, _ start: Int, digitsEndPieces: Bool) -> Int {
        var position = start
        var lastStart = start
        var count = 0
        while position < text.count {
            let (cls, length) = Self.scalar(text, position)
            if cls != .space && cls != .newline {
                if digitsEndPieces && cls == .number { return position }
                break
            }
            lastStart = position
            position += length
            count += 1
        }
        if position == text.count || count == 1 { return position }
        return lastStart
    }

    /// The Llama 3 pattern (`maxDigits` 3) and Qwen2's (`maxDigits` 1):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*` then
    /// `|\s*[\r\n]+|\s+(?!\S)|\s+`
    private func llama3End(_ text: UnsafeBufferPointer<UInt8>, _ start: Int, maxDigits: Int) -> Int {
        let contraction = contractionLength(text, start, caseInsensitive: true)
        if contraction > 0 { return start + contraction }
        let (cls, length) = Self.scalar(text, start)
        switch cls {
        case .letter:
            return run(text, from: start, while: { $0 == .letter })
        case .number:
            return run(text, from: start, while: { $0 == .number }, limit: maxDigits)
        case .other, .space:
            // `[^\r\n\p{L}\p{N}]?\p{L}+`: one leading non-letter glued to a word.
            if start + length < text.count, Self.scalar(text, start + length).0 == .letter {
                return run(text, from: start + length, while: { $0 == .letter })
            }
        case .newline:
            break
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        var position = start
        if text[start] == UInt8(ascii: " "), start + 1 < text.count, Self.scalar(text, start + 1).0 == .other {
            position = start + 1
        }
        if position > start || cls == .other {
            let end = run(text, from: position, while: { $0 == .other })
            return run(text, from: end, while: { $0 == .newline })
        }
        // `\s*[\r\n]+`: the whitespace run up to and including its last CR/LF.
        var lastNewlineEnd = -1
        position = start
        var lastStart = start
        var count = 0
        while position < text.count {
            let (next, nextLength) = Self.scalar(text, position)
            if next == .newline {
                lastNewlineEnd = position + nextLength
            } else if next != .space {
                break
            }
            lastStart = position
            position += nextLength
            count += 1
        }
        if lastNewlineEnd >= 0 { return lastNewlineEnd }
        if position == text.count || count == 1 { return position }
        return lastStart
    }
}
