/// Python `str` operations on code points (not grapheme clusters), as templates observe them:
/// `len`, indexing, `strip`, `split`, `title`… must agree with Python for the prompt to match.
enum PythonString {
    static func isSpace(_ scalar: Unicode.Scalar) -> Bool { Lexer.isWhitespace(scalar) }

    static func count(_ s: String) -> Int { s.unicodeScalars.count }

    static func strip(_ s: String, _ chars: String?, leading: Bool, trailing: Bool) -> String {
        let scalars = Array(s.unicodeScalars)
        let set = chars.map { Set($0.unicodeScalars) }
        let remove: (Unicode.Scalar) -> Bool = { set?.contains($0) ?? isSpace($0) }
        var start = 0
        var end = scalars.count
        if leading { while start < end, remove(scalars[start]) { start += 1 } }
        if trailing { while end > start, remove(scalars[end - 1]) { end -= 1 } }
        return String(String.UnicodeScalarView(scalars[start..<end]))
    }

    /// `str.split(sep, maxsplit)`; with no separator, runs of whitespace split and edges are dropped.
    static func split(_ s: String, _ separator: String?, maxSplit: Int) -> [String] {
        let scalars = Array(s.unicodeScalars)
        var parts: [String] = []
        guard let separator else {
            var i = 0
            var splits = 0
            while true {
                while i < scalars.count, isSpace(scalars[i]) { i += 1 }
                if i == scalars.count { break }
                if maxSplit >= 0 && splits == maxSplit {
                    // Once maxsplit is reached, CPython keeps the rest verbatim, trailing whitespace included.
                    parts.append(String(String.UnicodeScalarView(scalars[i...])))
                    break
                }
                let start = i
                while i < scalars.count, !isSpace(scalars[i]) { i += 1 }
                parts.append(String(String.UnicodeScalarView(scalars[start..<i])))
                splits += 1
            }
            return parts
        }
        let sep = Array(separator.unicodeScalars)
        var start = 0
        var i = 0
        while i + sep.count <= scalars.count, maxSplit < 0 || parts.count < maxSplit {
            if scalars[i..<i + sep.count].elementsEqual(sep) {
                parts.append(String(String.UnicodeScalarView(scalars[start..<i])))
                i += sep.count
                start = i
            } else {
                i += 1
            }
        }
        parts.append(String(String.UnicodeScalarView(scalars[start...])))
        return parts
    }

    /// `str.rsplit(sep, maxsplit)`.
    static func rsplit(_ s: String, _ separator: String?, maxSplit: Int) -> [String] {
        if maxSplit < 0 { return split(s, separator, maxSplit: -1) }
        let reversedText = String(String.UnicodeScalarView(s.unicodeScalars.reversed()))
        let reversedSeparator = separator.map { String(String.UnicodeScalarView($0.unicodeScalars.reversed())) }
        return split(reversedText, reversedSeparator, maxSplit: maxSplit).reversed().map {
            String(String.UnicodeScalarView($0.unicodeScalars.reversed()))
        }
    }

    static func splitLines(_ s: String, keepEnds: Bool) -> [String] {
        let breaks: Set<Unicode.Scalar> = [
            "\n", "\r", "\u{0B}", "\u{0C}", "\u{1C}", "\u{1D}", "\u{1E}", "\u{85}", "\u{2028}", "\u{2029}",
        ]
        let scalars = Array(s.unicodeScalars)
        var lines: [String] = []
        var start = 0
        var i = 0
        while i < scalars.count {
            guard breaks.contains(scalars[i]) else {
                i += 1
                continue
            }
            var end = i + 1
            if scalars[i] == "\r", end < scalars.count, scalars[end] == "\n" { end += 1 }
            lines.append(String(String.UnicodeScalarView(scalars[start..<(keepEnds ? end : i)])))
            start = end
            i = end
        }
        if start < scalars.count { lines.append(String(String.UnicodeScalarView(scalars[start...]))) }
        return lines
    }

    /// `str.replace(old, new, count)`; an empty `old` inserts `new` around every code point.
    static func replace(_ s: String, _ old: String, _ new: String, count: Int) -> String {
        let limit = count < 0 ? Int.max : count
        if old.isEmpty {
            var out = ""
            var done = 0
            for scalar in s.unicodeScalars {
                if done < limit {
                    out += new
                    done += 1
                }
                out.unicodeScalars.append(scalar)
            }
            if done < limit { out += new }
            return out
        }
        let parts = split(s, old, maxSplit: limit == Int.max ? -1 : limit)
        return parts.joined(separator: new)
    }

    static func find(_ s: String, _ needle: String, fromEnd: Bool) -> Int {
        let hay = Array(s.unicodeScalars)
        let sub = Array(needle.unicodeScalars)
        guard sub.count <= hay.count else { return -1 }
        let candidates = Array(0...(hay.count - sub.count))
        for i in fromEnd ? candidates.reversed() : candidates where hay[i..<i + sub.count].elementsEqual(sub) {
            return i
        }
        return -1
    }

    static func occurrences(_ s: String, _ needle: String) -> Int {
        if needle.isEmpty { return count(s) + 1 }
        return split(s, needle, maxSplit: -1).count - 1
    }

    private static func isCased(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isUppercase || scalar.properties.isLowercase
            || scalar.properties.generalCategory == .titlecaseLetter
    }

    /// `str.title()`: a cased character after an uncased one starts a word.
    static func title(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for scalar in s.unicodeScalars {
            out += previousCased ? scalar.properties.lowercaseMapping : scalar.properties.titlecaseMapping
            previousCased = isCased(scalar)
        }
        return out
    }

    /// `str.capitalize()`: first code point in title case, the rest lower case.
    static func capitalize(_ s: String) -> String {
        var out = ""
        for (i, scalar) in s.unicodeScalars.enumerated() {
            out += i == 0 ? scalar.properties.titlecaseMapping : scalar.properties.lowercaseMapping
        }
        return out
    }

    /// Jinja2's `title` filter: words start after `-`, whitespace, `(`, `{`, `[` or `<`.
    static func jinjaTitle(_ s: String) -> String {
        var out = ""
        var atWordStart = true
        for scalar in s.unicodeScalars {
            let isBoundary = scalar == "-" || isSpace(scalar) || "({[<".unicodeScalars.contains(scalar)
            if isBoundary {
                out.unicodeScalars.append(scalar)
                atWordStart = true
            } else {
                out += atWordStart ? scalar.properties.uppercaseMapping : scalar.properties.lowercaseMapping
                atWordStart = false
            }
        }
        return out
    }

    static func swapCase(_ s: String) -> String {
        var out = ""
        for scalar in s.unicodeScalars {
            if scalar.properties.isUppercase {
                out += scalar.properties.lowercaseMapping
            } else if scalar.properties.isLowercase {
                out += scalar.properties.uppercaseMapping
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// `str.center(width, fill)` with CPython's placement of the odd padding character.
    static func center(_ s: String, width: Int, fill: String) -> String {
        let length = count(s)
        guard width > length else { return s }
        let margin = width - length
        let left = margin / 2 + (margin & width & 1)
        return String(repeating: fill, count: left) + s + String(repeating: fill, count: margin - left)
    }

    static func isLower(_ s: String) -> Bool {
        var cased = false
        for scalar in s.unicodeScalars {
            if scalar.properties.isUppercase || scalar.properties.generalCategory == .titlecaseLetter { return false }
            if scalar.properties.isLowercase { cased = true }
        }
        return cased
    }

    static func isUpper(_ s: String) -> Bool {
        var cased = false
        for scalar in s.unicodeScalars {
            if scalar.properties.isLowercase || scalar.properties.generalCategory == .titlecaseLetter { return false }
            if scalar.properties.isUppercase { cased = true }
        }
        return cased
    }

    static func htmlEscape(_ s: String) -> String {
        var out = ""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&#34;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
