/// The Python methods templates call on values (`content.strip()`, `message.get('x')`), limited
/// to the ones Jinja2's immutable sandbox allows: nothing that mutates a list or dict.
enum ValueMethods {
    static let string: Set<String> = [
        "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "upper", "lower",
        "replace", "title", "capitalize", "format", "join", "find", "rfind", "index", "rindex", "count", "isdigit",
        "isalpha", "isalnum", "isspace", "islower", "isupper", "isnumeric", "isdecimal", "swapcase", "zfill",
        "center", "ljust", "rjust", "removeprefix", "removesuffix", "partition", "rpartition", "casefold",
    ]
    static let dictionary: Set<String> = ["items", "keys", "values", "get", "copy"]
    static let list: Set<String> = ["index", "count", "copy"]
    /// Mutating methods: the sandbox turns them into undefined values.
    static let unsafe: Set<String> = [
        "pop", "popitem", "setdefault", "update", "clear", "append", "extend", "insert", "remove", "reverse", "sort",
    ]
}

extension Interpreter {
    func callMethod(
        _ name: String, on receiver: TemplateValue, _ arguments: CallArguments, at position: SourcePosition?
    )
        throws -> TemplateValue
    {
        switch receiver {
        case .string(let s): return try stringMethod(name, s, arguments, at: position)
        case .dictionary(let d): return try dictionaryMethod(name, d, arguments, at: position)
        case .array(let items): return try listMethod(name, items, arguments, at: position)
        default:
            throw ChatTemplateError(.type, "'\(typeName(receiver))' object has no method '\(name)'", at: position)
        }
    }

    private func requireString(_ value: TemplateValue?, _ what: String, at position: SourcePosition?) throws -> String?
    {
        guard let value else { return nil }
        switch value {
        case .none: return nil
        case .string(let s): return s
        default:
            throw ChatTemplateError(.type, "\(what) must be str or None, not \(typeName(value))", at: position)
        }
    }

    private func requireInt(_ value: TemplateValue?, default fallback: Int, at position: SourcePosition?) throws -> Int
    {
        guard let value else { return fallback }
        return try integer(value, at: position)
    }

    private func stringMethod(_ name: String, _ s: String, _ args: CallArguments, at position: SourcePosition?) throws
        -> TemplateValue
    {
        let method = "str.\(name)"
        switch name {
        case "strip", "lstrip", "rstrip":
            try args.check(["chars"], for: method, position: position)
            let chars = try requireString(args.value(0, "chars"), "strip arg", at: position)
            return .string(PythonString.strip(s, chars, leading: name != "rstrip", trailing: name != "lstrip"))
        case "split", "rsplit":
            try args.check(["sep", "maxsplit"], for: method, position: position)
            let sep = try requireString(args.value(0, "sep"), "separator", at: position)
            if sep == "" { throw ChatTemplateError(.value, "empty separator", at: position) }
            let maxSplit = try requireInt(args.value(1, "maxsplit"), default: -1, at: position)
            let parts =
                name == "split"
                ? PythonString.split(s, sep, maxSplit: maxSplit) : PythonString.rsplit(s, sep, maxSplit: maxSplit)
            return .array(parts.map { .string($0) })
        case "splitlines":
            try args.check(["keepends"], for: method, position: position)
            let keep = try args.value(0, "keepends").map { try truthy($0) } ?? false
            return .array(PythonString.splitLines(s, keepEnds: keep).map { .string($0) })
        case "startswith", "endswith":
            try args.check(["prefix"], for: method, position: position)
            guard let pattern = args.value(0, "prefix") else {
                throw ChatTemplateError(.type, "\(method)() takes at least 1 argument (0 given)", at: position)
            }
            let candidates: [TemplateValue]
            if case .array(let items) = pattern { candidates = items } else { candidates = [pattern] }
            for candidate in candidates {
                guard case .string(let text) = candidate else {
                    throw ChatTemplateError(
                        .type, "\(name) first arg must be str or a tuple of str, not \(typeName(candidate))",
                        at: position)
                }
                let hit =
                    name == "startswith"
                    ? s.unicodeScalars.starts(with: text.unicodeScalars)
                    : s.unicodeScalars.reversed().starts(with: text.unicodeScalars.reversed())
                if hit { return .bool(true) }
            }
            return .bool(false)
        case "upper": return .string(s.uppercased())
        case "lower", "casefold": return .string(s.lowercased())
        case "title": return .string(PythonString.title(s))
        case "capitalize": return .string(PythonString.capitalize(s))
        case "swapcase": return .string(PythonString.swapCase(s))
        case "replace":
            try args.check(["old", "new", "count"], for: method, position: position)
            guard let old = try requireString(args.value(0, "old"), "replace() argument 1", at: position),
                let new = try requireString(args.value(1, "new"), "replace() argument 2", at: position)
            else {
                throw ChatTemplateError(.type, "replace expected at least 2 arguments", at: position)
            }
            let count = try requireInt(args.value(2, "count"), default: -1, at: position)
            return .string(PythonString.replace(s, old, new, count: count))
        case "format":
            return .string(try pythonFormat(s, args, at: position))
        case "join":
            guard let iterable = args.value(0, "iterable") else {
                throw ChatTemplateError(.type, "str.join() takes exactly one argument (0 given)", at: position)
            }
            var parts: [String] = []
            for item in try iterate(iterable, at: position) {
                guard case .string(let part) = item else {
                    throw ChatTemplateError(
                        .type, "sequence item \(parts.count): expected str instance, \(typeName(item)) found",
                        at: position)
                }
                parts.append(part)
            }
            return .string(parts.joined(separator: s))
        case "find", "rfind", "index", "rindex", "count":
            guard let needle = try requireString(args.value(0, "sub"), "must be str", at: position) else {
                throw ChatTemplateError(.type, "\(method)() takes at least 1 argument", at: position)
            }
            if name == "count" { return .int(PythonString.occurrences(s, needle)) }
            let found = PythonString.find(s, needle, fromEnd: name.hasPrefix("r"))
            if found < 0 && name.hasSuffix("index") {
                throw ChatTemplateError(.value, "substring not found", at: position)
            }
            return .int(found)
        case "isdigit", "isnumeric", "isdecimal":
            return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.numericType != nil })
        case "isalpha":
            return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.isAlphabetic })
        case "isalnum":
            return .bool(
                !s.isEmpty
                    && s.unicodeScalars.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil })
        case "isspace": return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy(PythonString.isSpace))
        case "islower": return .bool(PythonString.isLower(s))
        case "isupper": return .bool(PythonString.isUpper(s))
        case "zfill":
            let width = try requireInt(args.value(0, "width"), default: 0, at: position)
            let length = PythonString.count(s)
            guard width > length else { return .string(s) }
            let padding = String(repeating: "0", count: width - length)
            if let first = s.unicodeScalars.first, first == "+" || first == "-" {
                return .string(String(first) + padding + String(s.unicodeScalars.dropFirst()))
            }
            return .string(padding + s)
        case "center", "ljust", "rjust":
            let width = try requireInt(args.value(0, "width"), default: 0, at: position)
            let fill = try requireString(args.value(1, "fillchar"), "fill character", at: position) ?? " "
            let length = PythonString.count(s)
            guard width > length else { return .string(s) }
            switch name {
            case "center": return .string(PythonString.center(s, width: width, fill: fill))
            case "ljust": return .string(s + String(repeating: fill, count: width - length))
            default: return .string(String(repeating: fill, count: width - length) + s)
            }
        case "removeprefix", "removesuffix":
            let affix = try requireString(args.value(0, "prefix"), "argument", at: position) ?? ""
            let scalars = Array(s.unicodeScalars)
            let a = Array(affix.unicodeScalars)
            if name == "removeprefix", scalars.starts(with: a) {
                return .string(String(String.UnicodeScalarView(scalars.dropFirst(a.count))))
            }
            if name == "removesuffix", !a.isEmpty, scalars.reversed().starts(with: a.reversed()) {
                return .string(String(String.UnicodeScalarView(scalars.dropLast(a.count))))
            }
            return .string(s)
        case "partition", "rpartition":
            guard let sep = try requireString(args.value(0, "sep"), "separator", at: position), !sep.isEmpty else {
                throw ChatTemplateError(.value, "empty separator", at: position)
            }
            let found = PythonString.find(s, sep, fromEnd: name == "rpartition")
            if found < 0 {
                return name == "partition" ? [.string(s), "", ""] : ["", "", .string(s)]
            }
            let scalars = Array(s.unicodeScalars)
            let head = String(String.UnicodeScalarView(scalars[..<found]))
            let tail = String(String.UnicodeScalarView(scalars[(found + PythonString.count(sep))...]))
            return [.string(head), .string(sep), .string(tail)]
        default:
            throw ChatTemplateError(.unsupported, "the string method '\(name)' is not supported", at: position)
        }
    }

    /// `str.format`: `{}`, `{0}`, `{name}`, `{0!r}`, `{{`/`}}`; format specs other than empty are refused.
    private func pythonFormat(_ format: String, _ args: CallArguments, at position: SourcePosition?) throws -> String {
        var out = ""
        var scalars = Array(format.unicodeScalars)[...]
        var automatic = 0
        while let c = scalars.popFirst() {
            if c == "}" {
                guard scalars.first == "}" else {
                    throw ChatTemplateError(.value, "Single '}' encountered in format string", at: position)
                }
                scalars.removeFirst()
                out += "}"
                continue
            }
            guard c == "{" else {
                out.unicodeScalars.append(c)
                continue
            }
            if scalars.first == "{" {
                scalars.removeFirst()
                out += "{"
                continue
            }
            var field = ""
            while let s = scalars.popFirst(), s != "}" { field.unicodeScalars.append(s) }
            var conversion: String?
            if let bang = field.firstIndex(of: "!") {
                conversion = String(field[field.index(after: bang)...])
                field = String(field[..<bang])
            }
            if field.contains(":") {
                throw ChatTemplateError(.unsupported, "format specifications in str.format", at: position)
            }
            let value: TemplateValue?
            if field.isEmpty {
                value = automatic < args.positional.count ? args.positional[automatic] : nil
                automatic += 1
            } else if let index = Int(field) {
                value = index < args.positional.count ? args.positional[index] : nil
            } else {
                value = args.keyword.first { $0.name == field }?.value
            }
            guard let value else {
                throw ChatTemplateError(.value, "missing value for format field '{\(field)}'", at: position)
            }
            out += conversion == "r" ? repr(value) : str(value)
        }
        return out
    }

    private func dictionaryMethod(
        _ name: String, _ dict: TemplateDictionary, _ args: CallArguments, at position: SourcePosition?
    ) throws -> TemplateValue {
        switch name {
        case "items": return .array(dict.entries.map { .array([.string($0.key), $0.value]) })
        case "keys": return .array(dict.keys.map { .string($0) })
        case "values": return .array(dict.values)
        case "copy": return .dictionary(dict)
        case "get":
            try args.check(["key", "default"], for: "dict.get", position: position)
            guard let key = args.value(0, "key") else {
                throw ChatTemplateError(.type, "get expected at least 1 argument, got 0", at: position)
            }
            let fallback = args.value(1, "default") ?? .none
            guard case .string(let k) = key else { return fallback }
            return dict[k] ?? fallback
        default:
            throw ChatTemplateError(.unsupported, "the dict method '\(name)' is not supported", at: position)
        }
    }

    private func listMethod(
        _ name: String, _ items: [TemplateValue], _ args: CallArguments, at position: SourcePosition?
    )
        throws -> TemplateValue
    {
        switch name {
        case "copy": return .array(items)
        case "count":
            guard let needle = args.value(0, "value") else {
                throw ChatTemplateError(.type, "list.count() takes exactly one argument (0 given)", at: position)
            }
            return .int(items.filter { pyEquals($0, needle) }.count)
        case "index":
            guard let needle = args.value(0, "value") else {
                throw ChatTemplateError(.type, "index expected at least 1 argument, got 0", at: position)
            }
            guard let found = items.firstIndex(where: { pyEquals($0, needle) }) else {
                throw ChatTemplateError(.value, "\(repr(needle)) is not in list", at: position)
            }
            return .int(found)
        default:
            throw ChatTemplateError(.unsupported, "the list method '\(name)' is not supported", at: position)
        }
    }
}
