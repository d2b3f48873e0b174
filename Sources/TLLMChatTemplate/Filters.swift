import Foundation

/// Jinja2's built-in filters that chat templates use, with `tojson` as `transformers` redefines it
/// (`json.dumps(ensure_ascii=False, …)`, no HTML escaping).
enum Filters {
    static let implemented: Set<String> = [
        "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first",
        "float", "forceescape", "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map",
        "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort",
        "string", "sum", "title", "tojson", "trim", "unique", "upper", "wordcount",
    ]

    /// Jinja2 filters deliberately left out (nondeterministic or HTML-only); named in errors.
    static let notImplemented: Set<String> = [
        "filesizeformat", "groupby", "pprint", "random", "slice", "striptags", "truncate", "urlencode", "urlize",
        "wordwrap", "xmlattr",
    ]

    static func isKnown(_ name: String) -> Bool { implemented.contains(name) }
}

extension Interpreter {
    func applyFilter(_ name: String, to value: TemplateValue, _ args: CallArguments, at position: SourcePosition?)
        throws -> TemplateValue
    {
        func check(_ names: [String]) throws { try args.check(names, for: name, position: position) }
        func text(_ v: TemplateValue) -> String { str(v) }
        switch name {
        case "safe":
            return value
        case "string":
            return .string(str(value))
        case "upper":
            return .string(str(value).uppercased())
        case "lower":
            return .string(str(value).lowercased())
        case "capitalize":
            return .string(PythonString.capitalize(str(value)))
        case "title":
            return .string(PythonString.jinjaTitle(str(value)))
        case "trim":
            try check(["chars"])
            let chars = args.value(0, "chars").flatMap { $0.stringValue }
            return .string(PythonString.strip(str(value), chars, leading: true, trailing: true))
        case "e", "escape", "forceescape":
            return .string(PythonString.htmlEscape(str(value)))
        case "length", "count":
            return .int(try length(of: value, at: position))
        case "wordcount":
            let words = str(value).unicodeScalars.split {
                !($0.properties.isAlphabetic || $0.properties.numericType != nil || $0 == "_")
            }
            return .int(words.count)
        case "center":
            try check(["width"])
            let width = try integer(args.value(0, "width") ?? .int(80), at: position)
            return .string(PythonString.center(str(value), width: width, fill: " "))
        case "replace":
            try check(["old", "new", "count"])
            guard let old = args.value(0, "old"), let new = args.value(1, "new") else {
                throw ChatTemplateError(.type, "replace filter needs 'old' and 'new'", at: position)
            }
            var count = -1
            if let given = args.value(2, "count"), given != .none { count = try integer(given, at: position) }
            return .string(PythonString.replace(str(value), str(old), str(new), count: count))
        case "indent":
            try check(["width", "first", "blank"])
            return .string(try indent(str(value), args, at: position))
        case "default", "d":
            try check(["default_value", "boolean"])
            let fallback = args.value(0, "default_value") ?? .string("")
            let boolean = try args.value(1, "boolean").map { try truthy($0) } ?? false
            if value.isUndefined { return fallback }
            if boolean, try !truthy(value) { return fallback }
            return value
        case "tojson":
            return .string(try toJSON(value, args, at: position))
        case "first", "last":
            let items = try iterate(value, at: position)
            guard let item = name == "first" ? items.first : items.last else {
                return .undefined(TemplateUndefined(hint: "No \(name) item, sequence was empty."))
            }
            return item
        case "list":
            return .array(try iterate(value, at: position))
        case "reverse":
            if case .string(let s) = value {
                return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed())))
            }
            return .array(try iterate(value, at: position).reversed())
        case "items":
            switch value {
            case .dictionary(let dict): return .array(dict.entries.map { .array([.string($0.key), $0.value]) })
            case .undefined: return .array([])
            default: throw ChatTemplateError(.type, "Can only get item pairs from a mapping.", at: position)
            }
        case "join":
            try check(["d", "attribute"])
            let separator = args.value(0, "d").map(text) ?? ""
            var items = try iterate(value, at: position)
            if let attribute = args.value(1, "attribute") {
                items = try items.map { try itemPath($0, attribute, at: position) }
            }
            return .string(items.map(text).joined(separator: separator))
        case "int":
            try check(["default", "base"])
            return try toInt(
                value, default: args.value(0, "default") ?? .int(0), base: args.value(1, "base"), at: position)
        case "float":
            try check(["default"])
            return toFloat(value) ?? args.value(0, "default") ?? .double(0)
        case "abs":
            switch value {
            case .int(let i):
                guard i != Int.min else { throw ChatTemplateError(.value, "integer overflow", at: position) }
                return .int(abs(i))
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return .double(abs(d))
            default: throw ChatTemplateError(.type, "bad operand type for abs(): '\(typeName(value))'", at: position)
            }
        case "round":
            try check(["precision", "method"])
            return try round(value, args, at: position)
        case "attr":
            guard let attributeName = args.value(0, "name") else {
                throw ChatTemplateError(.type, "attr filter needs a name", at: position)
            }
            // `attr` looks up Python attributes only, never dictionary items.
            if case .dictionary = value, !ValueMethods.dictionary.contains(str(attributeName)) {
                return .undefined(TemplateUndefined(hint: "'dict object' has no attribute '\(str(attributeName))'"))
            }
            return try attribute(of: value, str(attributeName), at: position)
        case "map":
            return .array(try map(value, args, at: position))
        case "select", "reject":
            return .array(try select(value, args, keep: name == "select", attribute: false, at: position))
        case "selectattr", "rejectattr":
            return .array(try select(value, args, keep: name == "selectattr", attribute: true, at: position))
        case "unique":
            try check(["case_sensitive", "attribute"])
            let caseSensitive = try args.value(0, "case_sensitive").map { try truthy($0) } ?? false
            var seen: [TemplateValue] = []
            var result: [TemplateValue] = []
            for item in try iterate(value, at: position) {
                var key = try args.value(1, "attribute").map { try itemPath(item, $0, at: position) } ?? item
                if !caseSensitive, case .string(let s) = key { key = .string(s.lowercased()) }
                if !seen.contains(where: { pyEquals($0, key) }) {
                    seen.append(key)
                    result.append(item)
                }
            }
            return .array(result)
        case "sort":
            try check(["reverse", "case_sensitive", "attribute"])
            let reverse = try args.value(0, "reverse").map { try truthy($0) } ?? false
            let caseSensitive = try args.value(1, "case_sensitive").map { try truthy($0) } ?? false
            let attribute = args.value(2, "attribute")
            return .array(
                try sorted(
                    try iterate(value, at: position), reverse: reverse, caseSensitive: caseSensitive, at: position
                ) { item in try attribute.map { try self.itemPath(item, $0, at: position) } ?? item })
        case "dictsort":
            try check(["case_sensitive", "by", "reverse"])
            guard case .dictionary(let dict) = value else {
                throw ChatTemplateError(.type, "dictsort expects a mapping", at: position)
            }
            let caseSensitive = try args.value(0, "case_sensitive").map { try truthy($0) } ?? false
            let byValue = args.value(1, "by").map(text) == "value"
            let reverse = try args.value(2, "reverse").map { try truthy($0) } ?? false
            let pairs = dict.entries.map { TemplateValue.array([.string($0.key), $0.value]) }
            return .array(
                try sorted(pairs, reverse: reverse, caseSensitive: caseSensitive, at: position) { pair in
                    guard case .array(let kv) = pair else { return pair }
                    return byValue ? kv[1] : kv[0]
                })
        case "min", "max":
            try check(["case_sensitive", "attribute"])
            let caseSensitive = try args.value(0, "case_sensitive").map { try truthy($0) } ?? false
            let attribute = args.value(1, "attribute")
            let items = try sorted(
                try iterate(value, at: position), reverse: false, caseSensitive: caseSensitive, at: position
            ) { item in try attribute.map { try self.itemPath(item, $0, at: position) } ?? item }
            guard let pick = name == "min" ? items.first : items.last else {
                return .undefined(TemplateUndefined(hint: "No aggregated item, sequence was empty."))
            }
            return pick
        case "sum":
            try check(["attribute", "start"])
            var total = args.value(1, "start") ?? .int(0)
            for item in try iterate(value, at: position) {
                let term = try args.value(0, "attribute").map { try itemPath(item, $0, at: position) } ?? item
                total = try binary(.add, total, term, at: position ?? SourcePosition(line: 0, column: 0))
            }
            return total
        case "batch":
            try check(["linecount", "fill_with"])
            let size = try integer(args.value(0, "linecount") ?? .int(1), at: position)
            guard size > 0 else { throw ChatTemplateError(.value, "batch size must be positive", at: position) }
            let items = try iterate(value, at: position)
            var batches: [TemplateValue] = []
            var index = 0
            while index < items.count {
                var chunk = Array(items[index..<min(index + size, items.count)])
                if chunk.count < size, let fill = args.value(1, "fill_with") {
                    chunk += Array(repeating: fill, count: size - chunk.count)
                }
                batches.append(.array(chunk))
                index += size
            }
            return .array(batches)
        case "format":
            let formatArguments: TemplateValue =
                args.keyword.isEmpty
                ? .array(args.positional) : .dictionary(TemplateDictionary(args.keyword.map { ($0.name, $0.value) }))
            return try binary(
                .modulo, .string(str(value)), formatArguments, at: position ?? SourcePosition(line: 0, column: 0))
        default:
            throw ChatTemplateError(.unsupported, "no filter named '\(name)'", at: position)
        }
    }

    func length(of value: TemplateValue, at position: SourcePosition?) throws -> Int {
        switch value {
        case .string(let s): return PythonString.count(s)
        case .array(let items): return items.count
        case .dictionary(let dict): return dict.count
        case .undefined: return 0
        case .namespace(let ns): return namespaces[ns.id].count
        default: throw ChatTemplateError(.type, "object of type '\(typeName(value))' has no len()", at: position)
        }
    }

    func integer(_ value: TemplateValue, at position: SourcePosition?) throws -> Int {
        switch value {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default:
            throw ChatTemplateError(
                .type, "'\(typeName(value))' object cannot be interpreted as an integer", at: position)
        }
    }

    /// Follows `attribute` like Jinja2's `make_attrgetter`: item lookup, dotted paths, integer parts.
    func itemPath(_ item: TemplateValue, _ attribute: TemplateValue, at position: SourcePosition?) throws
        -> TemplateValue
    {
        guard case .string(let path) = attribute else { return try self.item(of: item, attribute, at: position) }
        var current = item
        for part in path.split(separator: ".", omittingEmptySubsequences: false) {
            let key: TemplateValue = Int(part).map { .int($0) } ?? .string(String(part))
            current = try self.item(of: current, key, at: position)
        }
        return current
    }

    private func indent(_ s: String, _ args: CallArguments, at position: SourcePosition?) throws -> String {
        let indentation: String
        switch args.value(0, "width") ?? .int(4) {
        case .string(let literal): indentation = literal
        case let other: indentation = String(repeating: " ", count: max(0, try integer(other, at: position)))
        }
        let first = try args.value(1, "first").map { try truthy($0) } ?? false
        let blank = try args.value(2, "blank").map { try truthy($0) } ?? false
        // Jinja2 appends a newline before splitting so a trailing newline survives splitlines().
        let lines = PythonString.splitLines(s + "\n", keepEnds: false)
        var result: String
        if blank {
            result = lines.joined(separator: "\n" + indentation)
        } else {
            result = lines.first ?? ""
            let rest = lines.dropFirst()
            if !rest.isEmpty {
                result += "\n" + rest.map { $0.isEmpty ? $0 : indentation + $0 }.joined(separator: "\n")
            }
        }
        if first { result = indentation + result }
        return result
    }

    private func toJSON(_ value: TemplateValue, _ args: CallArguments, at position: SourcePosition?) throws -> String {
        try args.check(["ensure_ascii", "indent", "separators", "sort_keys"], for: "tojson", position: position)
        var indent: String?
        switch args.value(1, "indent") {
        case nil, .none?: indent = nil
        case .string(let s)?: indent = s
        case let other?: indent = String(repeating: " ", count: max(0, try integer(other, at: position)))
        }
        var separators: (String, String)?
        if let given = args.value(2, "separators"), given != .none {
            guard case .array(let pair) = given, pair.count == 2, case .string(let item) = pair[0],
                case .string(let key) = pair[1]
            else {
                throw ChatTemplateError(.type, "tojson separators must be a pair of strings", at: position)
            }
            separators = (item, key)
        }
        let sortKeys = try args.value(3, "sort_keys").map { try truthy($0) } ?? false
        let options = PythonText.JSONOptions(indent: indent, separators: separators, sortKeys: sortKeys)
        var json: String
        do {
            json = try PythonText.jsonDumps(value, options: options, namespaces: namespaceLookup)
        } catch var error as ChatTemplateError {
            if error.line == nil, let position {
                error.line = position.line
                error.column = position.column
            }
            throw error
        }
        if try args.value(0, "ensure_ascii").map({ try truthy($0) }) ?? false {
            var escaped = ""
            for scalar in json.unicodeScalars {
                if scalar.value < 0x80 {
                    escaped.unicodeScalars.append(scalar)
                } else {
                    for unit in String(scalar).utf16 {
                        let hex = String(unit, radix: 16)
                        escaped += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                    }
                }
            }
            json = escaped
        }
        return json
    }

    private func toInt(
        _ value: TemplateValue, default fallback: TemplateValue, base: TemplateValue?, at position: SourcePosition?
    )
        throws -> TemplateValue
    {
        switch value {
        case .int: return value
        case .bool(let b): return .int(b ? 1 : 0)
        case .double(let d):
            guard d.isFinite, abs(d) < 9.2e18 else { return fallback }
            return .int(Int(d.rounded(.towardZero)))
        case .string(let s):
            let radix = try base.map { try integer($0, at: position) } ?? 10
            var text = PythonString.strip(s, nil, leading: true, trailing: true).replacingOccurrences(of: "_", with: "")
            var negative = false
            if text.hasPrefix("-") || text.hasPrefix("+") {
                negative = text.hasPrefix("-")
                text.removeFirst()
            }
            let lowered = text.lowercased()
            if radix == 16 && lowered.hasPrefix("0x") || radix == 8 && lowered.hasPrefix("0o")
                || radix == 2 && lowered.hasPrefix("0b")
            {
                text.removeFirst(2)
            }
            if (2...36).contains(radix), !text.isEmpty, let parsed = Int(text, radix: radix) {
                return .int(negative ? -parsed : parsed)
            }
            if case .double(let d)? = toFloat(value), d.isFinite, abs(d) < 9.2e18 {
                return .int(Int(d.rounded(.towardZero)))
            }
            return fallback
        default:
            return fallback
        }
    }

    func toFloat(_ value: TemplateValue) -> TemplateValue? {
        switch value {
        case .double: return value
        case .int(let i): return .double(Double(i))
        case .bool(let b): return .double(b ? 1 : 0)
        case .string(let s):
            let text = PythonString.strip(s, nil, leading: true, trailing: true).replacingOccurrences(of: "_", with: "")
            switch text.lowercased() {
            case "inf", "+inf", "infinity", "+infinity": return .double(.infinity)
            case "-inf", "-infinity": return .double(-.infinity)
            case "nan", "+nan", "-nan": return .double(.nan)
            default: break
            }
            guard !text.isEmpty, text.allSatisfy({ "0123456789+-.eE".contains($0) }), let d = Double(text) else {
                return nil
            }
            return .double(d)
        default:
            return nil
        }
    }

    private func round(_ value: TemplateValue, _ args: CallArguments, at position: SourcePosition?) throws
        -> TemplateValue
    {
        let precision = try args.value(0, "precision").map { try integer($0, at: position) } ?? 0
        let method = args.value(1, "method").map { str($0) } ?? "common"
        guard ["common", "floor", "ceil"].contains(method) else {
            throw ChatTemplateError(.value, "method must be common, ceil or floor", at: position)
        }
        let x: Double
        switch value {
        case .int(let i):
            // Python's round(int, n) stays an int; floor/ceil go through float division.
            if method == "common" && precision >= 0 { return .int(i) }
            x = Double(i)
        case .bool(let b): return method == "common" ? .int(b ? 1 : 0) : .double(b ? 1 : 0)
        case .double(let d): x = d
        default: throw ChatTemplateError(.type, "type \(typeName(value)) doesn't define __round__ method", at: position)
        }
        let scale = pow(10.0, Double(precision))
        switch method {
        case "floor": return .double((x * scale).rounded(.down) / scale)
        case "ceil": return .double((x * scale).rounded(.up) / scale)
        default:
            guard x.isFinite else { return .double(x) }
            if precision == 0 { return .double(x.rounded(.toNearestOrEven)) }
            if precision > 0 {
                // printf rounds the exact binary value half-to-even, as CPython's round() does.
                return .double(Double(String(format: "%.\(min(precision, 320))f", x)) ?? x)
            }
            return .double((x / pow(10, Double(-precision))).rounded(.toNearestOrEven) * pow(10, Double(-precision)))
        }
    }

    private func map(_ value: TemplateValue, _ args: CallArguments, at position: SourcePosition?) throws
        -> [TemplateValue]
    {
        let items = try iterate(value, at: position)
        if let attribute = args.keyword.first(where: { $0.name == "attribute" })?.value {
            let fallback = args.keyword.first { $0.name == "default" }?.value
            return try items.map { item in
                let found = try itemPath(item, attribute, at: position)
                if found.isUndefined, let fallback { return fallback }
                return found
            }
        }
        guard let filterName = args.positional.first.flatMap({ $0.stringValue }) else {
            throw ChatTemplateError(.type, "map requires a filter name or attribute=", at: position)
        }
        guard Filters.isKnown(filterName) else {
            throw ChatTemplateError(.unsupported, "no filter named '\(filterName)'", at: position)
        }
        let rest = CallArguments(positional: Array(args.positional.dropFirst()), keyword: args.keyword)
        return try items.map { try applyFilter(filterName, to: $0, rest, at: position) }
    }

    private func select(
        _ value: TemplateValue, _ args: CallArguments, keep: Bool, attribute: Bool, at position: SourcePosition?
    ) throws -> [TemplateValue] {
        var positional = args.positional[...]
        var attributeName: TemplateValue?
        if attribute {
            guard let first = positional.popFirst() else {
                throw ChatTemplateError(.type, "selectattr/rejectattr need an attribute name", at: position)
            }
            attributeName = first
        }
        let testName = positional.popFirst().map { str($0) }
        let testArguments = CallArguments(positional: Array(positional), keyword: args.keyword)
        var result: [TemplateValue] = []
        for item in try iterate(value, at: position) {
            let subject = try attributeName.map { try itemPath(item, $0, at: position) } ?? item
            let passed: Bool
            if let testName {
                passed = try applyTest(testName, to: subject, testArguments, at: position)
            } else {
                passed = try truthy(subject)
            }
            if passed == keep { result.append(item) }
        }
        return result
    }

    private func sorted(
        _ items: [TemplateValue], reverse: Bool, caseSensitive: Bool, at position: SourcePosition?,
        key: (TemplateValue) throws -> TemplateValue
    ) throws -> [TemplateValue] {
        let keyed = try items.map { item -> (TemplateValue, TemplateValue) in
            var k = try key(item)
            if !caseSensitive { k = lowercasedKey(k) }
            return (k, item)
        }
        var failure: (any Error)?
        // Python's sort is stable, and so is this merge of indices.
        let order = Array(keyed.indices).mergeSorted { a, b in
            if failure != nil { return false }
            do {
                return reverse
                    ? try pyLess(keyed[b].0, keyed[a].0, at: position)
                    : try pyLess(keyed[a].0, keyed[b].0, at: position)
            } catch {
                failure = error
                return false
            }
        }
        if let failure { throw failure }
        return order.map { keyed[$0].1 }
    }

    private func lowercasedKey(_ value: TemplateValue) -> TemplateValue {
        switch value {
        case .string(let s): return .string(s.lowercased())
        case .array(let items): return .array(items.map(lowercasedKey))
        default: return value
        }
    }
}

extension Array {
    /// A stable merge sort (Swift's `sort` is not documented as stable).
    func mergeSorted(by less: (Element, Element) -> Bool) -> [Element] {
        guard count > 1 else { return self }
        let middle = count / 2
        let left = Array(self[..<middle]).mergeSorted(by: less)
        let right = Array(self[middle...]).mergeSorted(by: less)
        var result: [Element] = []
        result.reserveCapacity(count)
        var i = 0
        var j = 0
        while i < left.count && j < right.count {
            if less(right[j], left[i]) {
                result.append(right[j])
                j += 1
            } else {
                result.append(left[i])
                i += 1
            }
        }
        result += left[i...]
        result += right[j...]
        return result
    }
}
