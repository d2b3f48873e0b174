/// Python's `str()`, `repr()` and `json.dumps()` of template values, byte for byte.
///
/// Templates print values with Python's conventions (`True`, `None`, `['a', 1]`, `1e+16`) and
/// `tojson` follows `json.dumps(ensure_ascii=False)`; prompts must match what `transformers` builds.
enum PythonText {
    /// Looks up a namespace's attributes during a render (namespaces live in the render, not the value).
    typealias NamespaceLookup = (Int) -> TemplateDictionary?

    /// `str(value)`.
    static func str(_ value: TemplateValue, namespaces: NamespaceLookup) -> String {
        switch value {
        case .string(let s): return s
        case .undefined: return ""
        default:
            var out = ""
            appendRepr(value, to: &out, namespaces: namespaces, depth: 0)
            return out
        }
    }

    /// `repr(value)`.
    static func repr(_ value: TemplateValue, namespaces: NamespaceLookup) -> String {
        var out = ""
        appendRepr(value, to: &out, namespaces: namespaces, depth: 0)
        return out
    }

    private static func appendRepr(
        _ value: TemplateValue, to out: inout String, namespaces: NamespaceLookup, depth: Int
    ) {
        // Python prints self-containing lists as [...]; values here are trees, so only depth can run away.
        guard depth < 256 else {
            out += "..."
            return
        }
        switch value {
        case .string(let s): out += stringRepr(s)
        case .int(let i): out += String(i)
        case .double(let d): out += floatRepr(d)
        case .bool(let b): out += b ? "True" : "False"
        case .none: out += "None"
        case .undefined: out += "Undefined"
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += ", " }
                appendRepr(item, to: &out, namespaces: namespaces, depth: depth + 1)
            }
            out += "]"
        case .dictionary(let dict):
            appendDict(dict, to: &out, namespaces: namespaces, depth: depth)
        case .namespace(let ns):
            out += "<Namespace "
            appendDict(namespaces(ns.id) ?? TemplateDictionary(), to: &out, namespaces: namespaces, depth: depth)
            out += ">"
        case .callable(let callable):
            switch callable.kind {
            case .macro(_, let name): out += "<Macro '\(name)'>"
            case .global(let name): out += "<function \(name)>"
            case .method(_, let name): out += "<built-in method \(name)>"
            case .loopCycle: out += "<bound method LoopContext.cycle>"
            }
        }
    }

    private static func appendDict(
        _ dict: TemplateDictionary, to out: inout String, namespaces: NamespaceLookup, depth: Int
    ) {
        out += "{"
        for (i, entry) in dict.entries.enumerated() {
            if i > 0 { out += ", " }
            out += stringRepr(entry.key)
            out += ": "
            appendRepr(entry.value, to: &out, namespaces: namespaces, depth: depth + 1)
        }
        out += "}"
    }

    /// `repr(str)`: single quotes unless the text has `'` and no `"`; escapes what Python escapes.
    static func stringRepr(_ s: String) -> String {
        let quote: Unicode.Scalar = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String.UnicodeScalarView()
        out.append(quote)
        for scalar in s.unicodeScalars {
            switch scalar {
            case quote, "\\":
                out.append("\\")
                out.append(scalar)
            case "\n": out.append(contentsOf: "\\n".unicodeScalars)
            case "\r": out.append(contentsOf: "\\r".unicodeScalars)
            case "\t": out.append(contentsOf: "\\t".unicodeScalars)
            default:
                if isPrintable(scalar) {
                    out.append(scalar)
                } else {
                    out.append(contentsOf: hexEscape(scalar).unicodeScalars)
                }
            }
        }
        out.append(quote)
        return String(out)
    }

    private static func hexEscape(_ scalar: Unicode.Scalar) -> String {
        let value = scalar.value
        let (prefix, width) = value < 0x100 ? ("\\x", 2) : value < 0x10000 ? ("\\u", 4) : ("\\U", 8)
        let hex = String(value, radix: 16)
        return prefix + String(repeating: "0", count: max(0, width - hex.count)) + hex
    }

    /// Python's `str.isprintable()` for one character: not a control, format, separator (except
    /// the ASCII space), surrogate, private-use or unassigned code point.
    private static func isPrintable(_ scalar: Unicode.Scalar) -> Bool {
        if scalar.value < 0x7F { return scalar.value >= 0x20 }
        switch scalar.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator,
            .spaceSeparator:
            return false
        default:
            return true
        }
    }

    /// `repr(float)`: the shortest round-tripping digits, positional for exponents in [-4, 16).
    static func floatRepr(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description has the same shortest digits as Python's repr, only a different layout.
        let (negative, digits, pointPosition) = decimalDigits(of: d)
        var out = negative ? "-" : ""
        if pointPosition > -4 && pointPosition <= 16 {
            if pointPosition <= 0 {
                out += "0." + String(repeating: "0", count: -pointPosition) + digits
            } else if pointPosition >= digits.count {
                out += digits + String(repeating: "0", count: pointPosition - digits.count) + ".0"
            } else {
                let split = digits.index(digits.startIndex, offsetBy: pointPosition)
                out += digits[..<split] + "." + digits[split...]
            }
        } else {
            let exponent = pointPosition - 1
            out += String(digits.prefix(1))
            if digits.count > 1 { out += "." + digits.dropFirst() }
            let magnitude = String(abs(exponent))
            out += (exponent < 0 ? "e-" : "e+") + (magnitude.count < 2 ? "0" : "") + magnitude
        }
        return out
    }

    /// Digits without leading/trailing zeros and the decimal point position: value = 0.DIGITS × 10^point.
    private static func decimalDigits(of d: Double) -> (negative: Bool, digits: String, point: Int) {
        var text = Substring(d.description)
        let negative = text.hasPrefix("-")
        if negative { text = text.dropFirst() }
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...]) ?? 0
            text = text[..<e]
        }
        var mantissa = ""
        var point = text.count
        if let dot = text.firstIndex(of: ".") {
            point = text.distance(from: text.startIndex, to: dot)
            mantissa = String(text[..<dot]) + String(text[text.index(after: dot)...])
        } else {
            mantissa = String(text)
        }
        let leadingZeros = mantissa.prefix { $0 == "0" }.count
        mantissa.removeFirst(leadingZeros)
        point -= leadingZeros
        while mantissa.hasSuffix("0") { mantissa.removeLast() }
        if mantissa.isEmpty { mantissa = "0" }
        return (negative, mantissa, point + exponent)
    }

    // MARK: - json.dumps

    /// Options of `json.dumps` that templates pass through `tojson`.
    struct JSONOptions {
        /// Spaces (or a literal string) per level; nil prints on one line.
        var indent: String?
        var itemSeparator: String
        var keySeparator: String
        var sortKeys = false

        init(indent: String? = nil, separators: (String, String)? = nil, sortKeys: Bool = false) {
            self.indent = indent
            // json.dumps drops the space after ',' when indenting, since the newline separates items.
            self.itemSeparator = separators?.0 ?? (indent == nil ? ", " : ",")
            self.keySeparator = separators?.1 ?? ": "
            self.sortKeys = sortKeys
        }
    }

    /// `json.dumps(value, ensure_ascii=False, …)`.
    static func jsonDumps(_ value: TemplateValue, options: JSONOptions, namespaces: NamespaceLookup) throws -> String {
        var out = ""
        try appendJSON(value, to: &out, options: options, level: 0)
        return out
    }

    private static func appendJSON(_ value: TemplateValue, to out: inout String, options: JSONOptions, level: Int)
        throws
    {
        guard level < 512 else { throw ChatTemplateError(.limit, "tojson: value nested too deeply") }
        switch value {
        case .string(let s): appendJSONString(s, to: &out)
        case .int(let i): out += String(i)
        case .double(let d):
            if d.isNaN {
                out += "NaN"
            } else if d.isInfinite {
                out += d < 0 ? "-Infinity" : "Infinity"
            } else {
                out += floatRepr(d)
            }
        case .bool(let b): out += b ? "true" : "false"
        case .none: out += "null"
        case .array(let items):
            if items.isEmpty {
                out += "[]"
                return
            }
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += options.itemSeparator }
                appendNewline(to: &out, options: options, level: level + 1)
                try appendJSON(item, to: &out, options: options, level: level + 1)
            }
            appendNewline(to: &out, options: options, level: level)
            out += "]"
        case .dictionary(let dict):
            if dict.isEmpty {
                out += "{}"
                return
            }
            out += "{"
            let keys =
                options.sortKeys
                ? dict.keys.sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) } : dict.keys
            for (i, key) in keys.enumerated() {
                if i > 0 { out += options.itemSeparator }
                appendNewline(to: &out, options: options, level: level + 1)
                appendJSONString(key, to: &out)
                out += options.keySeparator
                try appendJSON(dict[key] ?? .none, to: &out, options: options, level: level + 1)
            }
            appendNewline(to: &out, options: options, level: level)
            out += "}"
        case .undefined:
            throw ChatTemplateError(.type, "Object of type Undefined is not JSON serializable")
        case .namespace:
            throw ChatTemplateError(.type, "Object of type Namespace is not JSON serializable")
        case .callable:
            throw ChatTemplateError(.type, "Object of type function is not JSON serializable")
        }
    }

    private static func appendNewline(to out: inout String, options: JSONOptions, level: Int) {
        guard let indent = options.indent else { return }
        out += "\n"
        for _ in 0..<level { out += indent }
    }

    private static func appendJSONString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}
