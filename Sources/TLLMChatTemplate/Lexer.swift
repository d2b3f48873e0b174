/// A token of template source: literal text, tag delimiters, or a piece of an expression.
struct Token: Sendable {
    enum Kind: Sendable, Equatable {
        case data(String)
        case variableBegin
        case variableEnd
        case blockBegin
        case blockEnd
        case name(String)
        case string(String)
        case integer(Int)
        case float(Double)
        case op(String)
        case eof
    }

    var kind: Kind
    var position: SourcePosition
}

/// Splits template source into tokens the way Jinja2's lexer does under `transformers`' settings:
/// `trim_blocks`, `lstrip_blocks`, no trailing newline kept, `-`/`+` whitespace control.
///
/// Whitespace handling decides every byte of the prompt, so this follows `jinja2/lexer.py`
/// rule by rule rather than approximating it.
struct Lexer {
    private let source: [Unicode.Scalar]
    private let lineStarts: [Int]
    private var index = 0
    private var tokens: [Token] = []
    /// Jinja2's `line_starting`: the previous tag's closing match ended with a newline.
    private var lineStarting = true

    init(_ text: String) {
        source = Self.normalizeNewlines(text)
        var starts = [0]
        for (i, scalar) in source.enumerated() where scalar == "\n" { starts.append(i + 1) }
        lineStarts = starts
    }

    /// `\r\n` and `\r` become `\n`; one trailing newline is dropped (`keep_trailing_newline=False`).
    private static func normalizeNewlines(_ text: String) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.unicodeScalars.count)
        var previousWasCR = false
        for scalar in text.unicodeScalars {
            if scalar == "\r" {
                out.append("\n")
                previousWasCR = true
                continue
            }
            if scalar == "\n" && previousWasCR {
                previousWasCR = false
                continue
            }
            previousWasCR = false
            out.append(scalar)
        }
        if out.last == "\n" { out.removeLast() }
        return out
    }

    func position(of offset: Int) -> SourcePosition {
        var low = 0
        var high = lineStarts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if lineStarts[mid] <= offset { low = mid } else { high = mid - 1 }
        }
        return SourcePosition(line: low + 1, column: offset - lineStarts[low] + 1)
    }

    private func error(_ message: String, at offset: Int) -> ChatTemplateError {
        ChatTemplateError(.syntax, message, at: position(of: offset))
    }

    private func scalar(at offset: Int) -> Unicode.Scalar? {
        offset < source.count ? source[offset] : nil
    }

    private func matches(_ literal: String, at offset: Int) -> Bool {
        var i = offset
        for scalar in literal.unicodeScalars {
            guard i < source.count, source[i] == scalar else { return false }
            i += 1
        }
        return true
    }

    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case " ", "\t", "\n", "\r", "\u{0B}", "\u{0C}", "\u{1C}", "\u{1D}", "\u{1E}", "\u{1F}", "\u{85}": return true
        default: return scalar.value > 0x7F && scalar.properties.isWhitespace
        }
    }

    private mutating func emit(_ kind: Token.Kind, at offset: Int) {
        tokens.append(Token(kind: kind, position: position(of: offset)))
    }

    /// Emits the text before a tag after applying `-` (strip all whitespace) or `lstrip_blocks`.
    private mutating func emitText(from start: Int, to end: Int, sign: Unicode.Scalar?, lstrip: Bool) {
        var end = end
        if sign == "-" {
            while end > start, Self.isWhitespace(source[end - 1]) { end -= 1 }
        } else if sign != "+" && lstrip {
            var lineStart = end
            while lineStart > start, source[lineStart - 1] != "\n" { lineStart -= 1 }
            let afterNewline = lineStart > start
            if (afterNewline || lineStarting) && lineStart < end
                && source[lineStart..<end].allSatisfy(Self.isWhitespace)
            {
                end = lineStart
            }
        }
        if end > start { emit(.data(String(String.UnicodeScalarView(source[start..<end]))), at: start) }
    }

    mutating func tokenize() throws -> [Token] {
        while index < source.count {
            guard let open = nextTagOpen(from: index) else {
                emitText(from: index, to: source.count, sign: nil, lstrip: false)
                break
            }
            let kind = source[open + 1]
            var afterOpen = open + 2
            var sign: Unicode.Scalar?
            if let s = scalar(at: afterOpen), s == "-" || s == "+" {
                sign = s
                afterOpen += 1
            }
            if kind == "%", let rawBodyStart = rawBlockStart(after: afterOpen) {
                emitText(from: index, to: open, sign: sign, lstrip: true)
                try lexRawBody(from: rawBodyStart)
                continue
            }
            emitText(from: index, to: open, sign: sign, lstrip: kind != "{")
            switch kind {
            case "#": try skipComment(from: afterOpen, openedAt: open)
            case "{":
                emit(.variableBegin, at: open)
                try lexTag(from: afterOpen, openedAt: open, isBlock: false)
            default:
                emit(.blockBegin, at: open)
                try lexTag(from: afterOpen, openedAt: open, isBlock: true)
            }
        }
        emit(.eof, at: source.count)
        return tokens
    }

    private func nextTagOpen(from start: Int) -> Int? {
        var i = start
        while i + 1 < source.count {
            if source[i] == "{" {
                let next = source[i + 1]
                if next == "{" || next == "%" || next == "#" { return i }
            }
            i += 1
        }
        return nil
    }

    /// If `{%` at this point opens `{% raw %}`, the offset where the raw text begins.
    private func rawBlockStart(after offset: Int) -> Int? {
        var i = offset
        while let s = scalar(at: i), Self.isWhitespace(s) { i += 1 }
        guard matches("raw", at: i) else { return nil }
        i += 3
        while let s = scalar(at: i), Self.isWhitespace(s) { i += 1 }
        if matches("-%}", at: i) {
            i += 3
            while let s = scalar(at: i), Self.isWhitespace(s) { i += 1 }
            return i
        }
        // Jinja2 applies no trim_blocks newline removal after `{% raw %}`.
        return matches("%}", at: i) ? i + 2 : nil
    }

    private mutating func lexRawBody(from start: Int) throws {
        var i = start
        while i + 1 < source.count {
            if source[i] == "{" && source[i + 1] == "%" {
                var j = i + 2
                var sign: Unicode.Scalar?
                if let s = scalar(at: j), s == "-" || s == "+" {
                    sign = s
                    j += 1
                }
                while let s = scalar(at: j), Self.isWhitespace(s) { j += 1 }
                if matches("endraw", at: j) {
                    j += 6
                    while let s = scalar(at: j), Self.isWhitespace(s) { j += 1 }
                    if let end = closeBlock(at: j) {
                        emitText(from: start, to: i, sign: sign, lstrip: true)
                        index = end
                        return
                    }
                }
            }
            i += 1
        }
        throw error("Missing end of raw directive", at: start)
    }

    /// Matches a block close (`+%}`, `-%}` + whitespace, `%}` + one newline) and returns the offset after it.
    private mutating func closeBlock(at offset: Int) -> Int? {
        if matches("+%}", at: offset) {
            lineStarting = false
            return offset + 3
        }
        if matches("-%}", at: offset) {
            var end = offset + 3
            while let s = scalar(at: end), Self.isWhitespace(s) { end += 1 }
            lineStarting = end > offset + 3 && source[end - 1] == "\n"
            return end
        }
        if matches("%}", at: offset) {
            var end = offset + 2
            if scalar(at: end) == "\n" { end += 1 }
            lineStarting = end > offset + 2
            return end
        }
        return nil
    }

    private mutating func skipComment(from start: Int, openedAt open: Int) throws {
        var i = start
        while i + 1 < source.count {
            if source[i] == "#" && source[i + 1] == "}" {
                // Jinja2's lazy match finds `-#}` / `+#}` one character earlier than the bare `#}`.
                if i > start, source[i - 1] == "-" {
                    var end = i + 2
                    while let s = scalar(at: end), Self.isWhitespace(s) { end += 1 }
                    lineStarting = end > i + 2 && source[end - 1] == "\n"
                    index = end
                } else if i > start, source[i - 1] == "+" {
                    lineStarting = false
                    index = i + 2
                } else {
                    var end = i + 2
                    if scalar(at: end) == "\n" { end += 1 }
                    lineStarting = end > i + 2
                    index = end
                }
                return
            }
            i += 1
        }
        throw error("Missing end of comment tag", at: open)
    }

    private mutating func lexTag(from start: Int, openedAt open: Int, isBlock: Bool) throws {
        var i = start
        var brackets: [Unicode.Scalar] = []
        while true {
            guard i < source.count else {
                throw error(
                    isBlock ? "unexpected end of template, expected '%}'" : "unexpected end of template, expected '}}'",
                    at: open)
            }
            if brackets.isEmpty {
                if isBlock, let end = closeBlock(at: i) {
                    emit(.blockEnd, at: i)
                    index = end
                    return
                }
                if !isBlock {
                    if matches("-}}", at: i) {
                        emit(.variableEnd, at: i)
                        var end = i + 3
                        while let s = scalar(at: end), Self.isWhitespace(s) { end += 1 }
                        lineStarting = end > i + 3 && source[end - 1] == "\n"
                        index = end
                        return
                    }
                    if matches("}}", at: i) {
                        emit(.variableEnd, at: i)
                        lineStarting = false
                        index = i + 2
                        return
                    }
                }
            }
            let c = source[i]
            if Self.isWhitespace(c) {
                i += 1
                continue
            }
            if let (token, end) = try lexNumber(at: i) {
                emit(token, at: i)
                i = end
                continue
            }
            if isNameStart(c) {
                var end = i + 1
                while let s = scalar(at: end), isNameContinue(s) { end += 1 }
                emit(.name(String(String.UnicodeScalarView(source[i..<end]))), at: i)
                i = end
                continue
            }
            if c == "'" || c == "\"" {
                let (value, end) = try lexString(at: i)
                emit(.string(value), at: i)
                i = end
                continue
            }
            if let op = lexOperator(at: i) {
                switch op {
                case "(": brackets.append(")")
                case "[": brackets.append("]")
                case "{": brackets.append("}")
                case ")", "]", "}":
                    guard let expected = brackets.popLast() else { throw error("unexpected '\(op)'", at: i) }
                    guard String(expected) == op else {
                        throw error("unexpected '\(op)', expected '\(expected)'", at: i)
                    }
                default: break
                }
                emit(.op(op), at: i)
                i += op.unicodeScalars.count
                continue
            }
            throw error("unexpected char \(PythonText.stringRepr(String(c)))", at: i)
        }
    }

    private func isNameStart(_ s: Unicode.Scalar) -> Bool {
        s == "_" || (s.value < 0x80 ? s.properties.isAlphabetic : s.properties.isXIDStart)
    }

    private func isNameContinue(_ s: Unicode.Scalar) -> Bool {
        s == "_"
            || (s.value < 0x80 ? (s.properties.isAlphabetic || ("0"..."9").contains(s)) : s.properties.isXIDContinue)
    }

    private static let operators = [
        "//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", ">", "<",
        "=", ".", ":", "|", ",", ";",
    ]

    private func lexOperator(at offset: Int) -> String? {
        Self.operators.first { matches($0, at: offset) }
    }

    private func isDigit(_ s: Unicode.Scalar?) -> Bool {
        guard let s else { return false }
        return ("0"..."9").contains(s)
    }

    /// `(\d+_)*\d+`: digits with single underscores between them; returns the end offset.
    private func digitRun(at offset: Int) -> Int? {
        guard isDigit(scalar(at: offset)) else { return nil }
        var i = offset
        while true {
            while isDigit(scalar(at: i)) { i += 1 }
            if scalar(at: i) == "_", isDigit(scalar(at: i + 1)) {
                i += 1
                continue
            }
            return i
        }
    }

    private func lexNumber(at offset: Int) throws -> (Token.Kind, Int)? {
        guard isDigit(scalar(at: offset)) else { return nil }
        // Jinja2 tries its float pattern first, then integers (with 0b/0o/0x prefixes).
        if offset == 0 || source[offset - 1] != ".", let intEnd = digitRun(at: offset) {
            var end = intEnd
            var isFloat = false
            if scalar(at: end) == ".", let fractionEnd = digitRun(at: end + 1) {
                end = fractionEnd
                isFloat = true
            }
            if let e = scalar(at: end), e == "e" || e == "E" {
                var j = end + 1
                if let s = scalar(at: j), s == "+" || s == "-" { j += 1 }
                if let exponentEnd = digitRun(at: j) {
                    end = exponentEnd
                    isFloat = true
                }
            }
            if isFloat {
                let text = String(String.UnicodeScalarView(source[offset..<end].filter { $0 != "_" }))
                guard let value = Double(text) else { throw error("invalid float literal", at: offset) }
                return (.float(value), end)
            }
        }
        if source[offset] == "0", let p = scalar(at: offset + 1) {
            let radix: Int? =
                switch p {
                case "b", "B": 2
                case "o", "O": 8
                case "x", "X": 16
                default: nil
                }
            if let radix {
                var end = offset + 2
                var digits = ""
                while let s = scalar(at: end) {
                    if s == "_", let n = scalar(at: end + 1), Int(String(n), radix: radix) != nil {
                        end += 1
                        continue
                    }
                    guard Int(String(s), radix: radix) != nil else { break }
                    digits.unicodeScalars.append(s)
                    end += 1
                }
                if !digits.isEmpty {
                    guard let value = Int(digits, radix: radix) else {
                        throw error("integer literal too large", at: offset)
                    }
                    return (.integer(value), end)
                }
            }
        }
        let end = digitRun(at: offset) ?? offset + 1
        let text = String(String.UnicodeScalarView(source[offset..<end].filter { $0 != "_" }))
        if text.count > 1 && text.hasPrefix("0") && text.contains(where: { $0 != "0" }) {
            // Python rejects `012`; Jinja2 lexes `0` then fails on `12`. Either way it is an error.
            throw error("invalid integer literal", at: offset)
        }
        guard let value = Int(text) else { throw error("integer literal too large", at: offset) }
        return (.integer(value), end)
    }

    /// A quoted string with Python `unicode-escape` processing (unknown escapes stay verbatim).
    private func lexString(at offset: Int) throws -> (String, Int) {
        let quote = source[offset]
        var i = offset + 1
        var out = String.UnicodeScalarView()
        while true {
            guard let c = scalar(at: i) else { throw error("unexpected end of string", at: offset) }
            if c == quote { return (String(out), i + 1) }
            if c != "\\" {
                out.append(c)
                i += 1
                continue
            }
            guard let e = scalar(at: i + 1) else { throw error("unexpected end of string", at: offset) }
            i += 2
            switch e {
            case "\n": break
            case "\\": out.append("\\")
            case "'": out.append("'")
            case "\"": out.append("\"")
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "v": out.append("\u{0B}")
            case "0"..."7":
                var value = e.value - 0x30
                var count = 1
                while count < 3, let d = scalar(at: i), ("0"..."7").contains(d) {
                    value = value * 8 + (d.value - 0x30)
                    i += 1
                    count += 1
                }
                out.append(Unicode.Scalar(value) ?? "\u{FFFD}")
            case "x", "u", "U":
                let width = e == "x" ? 2 : e == "u" ? 4 : 8
                guard i + width <= source.count,
                    let value = UInt32(String(String.UnicodeScalarView(source[i..<i + width])), radix: 16),
                    let scalar = Unicode.Scalar(value)
                else {
                    throw error("truncated \\\(e) escape", at: i - 2)
                }
                out.append(scalar)
                i += width
            case "N":
                throw ChatTemplateError(.unsupported, "\\N{...} escapes in string literals", at: position(of: i - 2))
            default:
                out.append("\\")
                out.append(e)
            }
        }
    }
}
