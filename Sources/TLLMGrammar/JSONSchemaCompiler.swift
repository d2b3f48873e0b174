import TLLMChatTemplate

/// Compiles the JSON Schema subset of docs/structured-outputs.md to grammar rules.
///
/// Everything the compiler cannot enforce exactly is refused by name rather than ignored: a client
/// that asks for `pattern` must not get output that silently breaks it.
struct JSONSchemaCompiler {
    var expressions: ExpressionCompiler
    private let root: TemplateValue
    private var rootRule: Int32 = -1
    /// `$ref` target -> its rule, and the definitions still to compile.
    private var references: [String: Int32] = [:]
    private var pending: [(schema: TemplateValue, path: String, rule: Int32)] = []

    /// Subschemas nested deeper than this are refused.
    static let maximumDepth = 64
    /// The most values an `enum` may list.
    static let maximumEnumValues = 4096
    /// The largest `minLength` / `maxLength` (a string's length is a counter in its DFA's state, so
    /// the grammar does not grow with it).
    static let maximumStringLength = 100_000
    /// An integer with no upper (lower) bound has at most 18 digits, as without bounds
    /// (``JSONTerminals/maximumIntegerDigits``), unless its other bound is already beyond that.
    static let largestUnboundedInteger: Int64 = 999_999_999_999_999_999

    /// Keywords that only describe: accepted and ignored.
    static let annotations: Set<String> = [
        "title", "description", "$schema", "$id", "default", "examples", "strict", "$comment",
    ]
    /// Keywords the compiler enforces (`$defs` / `definitions` hold the targets of `$ref`).
    static let supported: Set<String> = [
        "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
        "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "minLength", "maxLength",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    ]
    private static let combinators = ["$ref", "anyOf", "oneOf", "allOf", "enum", "const"]
    private static let typeKeywords = [
        "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
        "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    ]
    private static let boundKeywords = ["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"]
    private static let knownTypes: Set<String> = ["string", "number", "integer", "boolean", "null", "object", "array"]

    init(root: TemplateValue, expressions: ExpressionCompiler) {
        self.root = root
        self.expressions = expressions
    }

    private var builder: GrammarBuilder {
        get { expressions.builder }
        _modify { yield &expressions.builder }
    }

    /// The rule for the whole schema, with every definition it reaches.
    mutating func compileDocument() throws(GrammarError) -> Int32 {
        rootRule = try builder.declareRule()
        try builder.define(rootRule, [try compile(root, path: "", depth: 0)])
        while let definition = pending.popLast() {
            try builder.define(definition.rule, [try compile(definition.schema, path: definition.path, depth: 0)])
        }
        return rootRule
    }

    private static func child(_ path: String, _ key: String) -> String {
        path.isEmpty ? key : path + "." + key
    }

    private mutating func compile(_ schema: TemplateValue, path: String, depth: Int) throws(GrammarError)
        -> [GrammarElement]
    {
        guard depth <= Self.maximumDepth else {
            throw GrammarError(
                path: path, keyword: nil, message: "schema nested deeper than \(Self.maximumDepth) levels at '\(path)'")
        }
        switch schema {
        case .bool(true):
            return [.call(try expressions.anyValue(level: 0))]
        case .bool(false):
            return [.call(try builder.rule([]))]
        case .dictionary(let dictionary):
            return try compile(dictionary, path: path, depth: depth)
        default:
            throw GrammarError(
                path: path, keyword: nil, message: "a schema must be an object or a boolean at '\(path)'")
        }
    }

    private mutating func compile(_ schema: TemplateDictionary, path: String, depth: Int) throws(GrammarError)
        -> [GrammarElement]
    {
        for key in schema.keys where !Self.annotations.contains(key) && !Self.supported.contains(key) {
            throw GrammarError(
                path: path, keyword: key,
                message: "the JSON Schema keyword '\(key)' is not supported (at '\(path.isEmpty ? "#" : path)')")
        }
        let combinators = Self.combinators.filter { schema[$0] != nil }
        let typeKeywords = Self.typeKeywords.filter { schema[$0] != nil }
        if combinators.count > 1 {
            throw GrammarError(
                path: path, keyword: combinators[1],
                message: "'\(combinators[1])' together with '\(combinators[0])' is not supported (at '\(path)')")
        }
        if let combinator = combinators.first {
            let allowedSiblings: Set<String> = combinator == "enum" || combinator == "const" ? ["type"] : []
            if let sibling = typeKeywords.first(where: { !allowedSiblings.contains($0) }) {
                throw GrammarError(
                    path: path, keyword: sibling,
                    message: "'\(sibling)' alongside '\(combinator)' is not supported (at '\(path)')")
            }
            switch combinator {
            case "$ref": return [.call(try reference(schema["$ref"] ?? .none, path: path))]
            case "enum", "const": return try enumeration(schema, keyword: combinator, path: path)
            case "allOf":
                guard case .array(let schemas) = schema["allOf"], schemas.count == 1 else {
                    throw GrammarError(
                        path: path, keyword: "allOf",
                        message: "allOf is supported with exactly one schema (at '\(path)')")
                }
                return try compile(schemas[0], path: Self.child(path, "allOf.0"), depth: depth + 1)
            default:  // anyOf, oneOf (as anyOf: the alternatives are generated, not checked for overlap)
                guard case .array(let schemas) = schema[combinator], !schemas.isEmpty else {
                    throw GrammarError(
                        path: path, keyword: combinator,
                        message: "\(combinator) must be a non-empty array of schemas (at '\(path)')")
                }
                var alternatives: [[GrammarElement]] = []
                for (index, option) in schemas.enumerated() {
                    alternatives.append(
                        try compile(option, path: Self.child(path, "\(combinator).\(index)"), depth: depth + 1))
                }
                return try builder.choice(alternatives)
            }
        }

        let lengths = try Self.lengthBounds(schema, path: path)
        let bounds = try Self.integerBounds(schema, path: path)
        var types: [String]
        if let declared = schema["type"] {
            types = try Self.types(declared, path: path)
        } else if schema["properties"] != nil || schema["required"] != nil || schema["additionalProperties"] != nil {
            types = ["object"]
        } else if schema["items"] != nil || schema["prefixItems"] != nil || schema["minItems"] != nil
            || schema["maxItems"] != nil
        {
            types = ["array"]
        } else if lengths != nil {
            types = ["string"]
        } else if let bounds {
            throw GrammarError(
                path: path, keyword: bounds.keyword,
                message: "'\(bounds.keyword)' without a type is not supported: add \"type\": \"integer\" (at '\(path)')"
            )
        } else {
            return [.call(try expressions.anyValue(level: 0))]
        }
        // "integer" is inside "number": keeping both would only make the automaton ambiguous.
        if types.contains("number") { types.removeAll { $0 == "integer" } }
        var alternatives: [[GrammarElement]] = []
        for type in types {
            switch type {
            case "string":
                let string = builder.string(minimumLength: lengths?.minimum ?? 0, maximumLength: lengths?.maximum)
                alternatives.append([.dfa(string)])
            case "number":
                if let bounds {
                    throw GrammarError(
                        path: path, keyword: bounds.keyword,
                        message: "'\(bounds.keyword)' is supported on integers only, not on numbers (at '\(path)')")
                }
                alternatives.append([.dfa(builder.jsonNumber)])
            case "integer":
                guard let bounds else {
                    alternatives.append([.dfa(builder.jsonInteger)])
                    continue
                }
                guard let range = bounds.range else {
                    // No integer in range: other types may still be generated.
                    if types.count > 1 { continue }
                    throw GrammarError(
                        path: path, keyword: bounds.keyword,
                        message: "'\(bounds.keyword)' leaves no integer in range (at '\(path)')")
                }
                guard let integer = builder.integer(in: range) else {
                    throw GrammarError(
                        path: path, keyword: bounds.keyword,
                        message: "too many different integer ranges in one schema (at '\(path)')")
                }
                alternatives.append([.dfa(integer)])
            case "boolean":
                alternatives.append(try builder.literal("true"))
                alternatives.append(try builder.literal("false"))
            case "null": alternatives.append(try builder.literal("null"))
            case "object": alternatives.append(try object(schema, path: path, depth: depth))
            default: alternatives.append(try array(schema, path: path, depth: depth))
            }
        }
        return try builder.choice(alternatives)
    }

    // MARK: - String lengths and integer bounds

    /// `minLength` / `maxLength` (code points), nil when neither is given.
    private static func lengthBounds(_ schema: TemplateDictionary, path: String) throws(GrammarError) -> (
        minimum: Int, maximum: Int?
    )? {
        let limit = maximumStringLength
        let minimum = try count(schema["minLength"], keyword: "minLength", path: path, limit: limit)
        let maximum = try count(schema["maxLength"], keyword: "maxLength", path: path, limit: limit)
        if minimum == nil && maximum == nil { return nil }
        if let minimum, let maximum, minimum > maximum {
            throw GrammarError(
                path: path, keyword: "minLength",
                message: "minLength \(minimum) is greater than maxLength \(maximum) (at '\(path)')")
        }
        return (minimum ?? 0, maximum)
    }

    /// The integers `minimum` / `maximum` / `exclusiveMinimum` / `exclusiveMaximum` allow (a range
    /// within Int64; nil range: none), and the keyword to blame; nil when none of them constrains.
    /// Exclusive bounds may be numbers (2019-09 on) or booleans qualifying `minimum`/`maximum` (draft 4).
    private static func integerBounds(_ schema: TemplateDictionary, path: String) throws(GrammarError) -> (
        range: ClosedRange<Int64>?, keyword: String
    )? {
        var lower: Int64?
        var upper: Int64?
        var keyword: String?
        for name in boundKeywords {
            guard let value = schema[name] else { continue }
            let isLower = name.hasSuffix("inimum")
            var exclusive = name.hasPrefix("exclusive")
            if exclusive, case .bool = value { continue }  // qualifies minimum / maximum: read there
            if !exclusive, case .bool(true)? = schema[isLower ? "exclusiveMinimum" : "exclusiveMaximum"] {
                exclusive = true
            }
            let bound = try integerBound(value, keyword: name, lower: isLower, exclusive: exclusive, path: path)
            if isLower { lower = Swift.max(lower ?? bound, bound) } else { upper = Swift.min(upper ?? bound, bound) }
            if keyword == nil { keyword = name }
        }
        guard let keyword else { return nil }
        let low = lower ?? ((upper ?? 0) < -largestUnboundedInteger ? Int64.min : -largestUnboundedInteger)
        let high = upper ?? ((lower ?? 0) > largestUnboundedInteger ? Int64.max : largestUnboundedInteger)
        return (low <= high ? low...high : nil, keyword)
    }

    /// The least (`lower`) or greatest integer a bound allows: `1.5` as a minimum is 2, as an
    /// exclusive maximum 1; refused unless that integer fits an Int64.
    private static func integerBound(
        _ value: TemplateValue, keyword: String, lower: Bool, exclusive: Bool, path: String
    ) throws(GrammarError) -> Int64 {
        let outOfRange = GrammarError(
            path: path, keyword: keyword,
            message: "\(keyword) must be a number whose integer bound fits a 64-bit integer (at '\(path)')")
        var bound: Int64
        var integral: Bool
        switch value {
        case .int(let number):
            bound = Int64(number)
            integral = true
        case .double(let number):
            // -2^63 as a double may stand for a literal beyond Int64 that the parser rounded.
            guard number.magnitude < 0x1p63, let rounded = Int64(exactly: number.rounded(lower ? .up : .down))
            else { throw outOfRange }
            bound = rounded
            integral = number.rounded() == number
        default:
            throw GrammarError(path: path, keyword: keyword, message: "\(keyword) must be a number (at '\(path)')")
        }
        if exclusive && integral {
            let (moved, overflow) = lower ? bound.addingReportingOverflow(1) : bound.subtractingReportingOverflow(1)
            guard !overflow else { throw outOfRange }
            bound = moved
        }
        return bound
    }

    private static func types(_ value: TemplateValue, path: String) throws(GrammarError) -> [String] {
        let names: [TemplateValue]
        switch value {
        case .string: names = [value]
        case .array(let list) where !list.isEmpty: names = list
        default:
            throw GrammarError(
                path: path, keyword: "type", message: "type must be a type name or a non-empty array of them")
        }
        var types: [String] = []
        for name in names {
            guard case .string(let type) = name, knownTypes.contains(type) else {
                throw GrammarError(
                    path: path, keyword: "type", message: "unknown type \(name) (at '\(path)')")
            }
            if !types.contains(type) { types.append(type) }
        }
        return types
    }

    // MARK: - $ref

    private mutating func reference(_ value: TemplateValue, path: String) throws(GrammarError) -> Int32 {
        guard case .string(let target) = value else {
            throw GrammarError(path: path, keyword: "$ref", message: "$ref must be a string (at '\(path)')")
        }
        if target == "#" { return rootRule }
        if let rule = references[target] { return rule }
        let unsupported = GrammarError(
            path: path, keyword: "$ref",
            message: "$ref '\(target)' is not supported: use #, #/$defs/Name or #/definitions/Name (at '\(path)')")
        var container = ""
        var encodedName = Substring("")
        for candidate in ["$defs", "definitions"] where target.hasPrefix("#/\(candidate)/") {
            container = candidate
            encodedName = target.dropFirst(candidate.count + 3)
        }
        guard !container.isEmpty, !encodedName.isEmpty, !encodedName.contains("/") else { throw unsupported }
        let name = Self.unescapePointerToken(encodedName)
        guard case .dictionary(let rootSchema) = root, case .dictionary(let definitions) = rootSchema[container],
            let definition = definitions[name]
        else {
            throw GrammarError(
                path: path, keyword: "$ref", message: "$ref '\(target)' does not resolve (at '\(path)')")
        }
        let rule = try builder.declareRule()
        references[target] = rule
        pending.append((definition, "\(container).\(name)", rule))
        return rule
    }

    /// A JSON Pointer reference token: `~1` is `/`, `~0` is `~`.
    private static func unescapePointerToken(_ token: Substring) -> String {
        var result = ""
        var escaping = false
        for character in token {
            if escaping {
                result.append(character == "1" ? "/" : character == "0" ? "~" : character)
                escaping = false
            } else if character == "~" {
                escaping = true
            } else {
                result.append(character)
            }
        }
        return result
    }

    // MARK: - enum, const

    private mutating func enumeration(_ schema: TemplateDictionary, keyword: String, path: String)
        throws(GrammarError) -> [GrammarElement]
    {
        var values: [TemplateValue]
        if keyword == "const" {
            values = [schema["const"] ?? .none]
        } else {
            guard case .array(let list) = schema["enum"] else {
                throw GrammarError(path: path, keyword: "enum", message: "enum must be an array (at '\(path)')")
            }
            guard list.count <= Self.maximumEnumValues else {
                throw GrammarError(
                    path: path, keyword: "enum",
                    message: "enum lists \(list.count) values, more than \(Self.maximumEnumValues) (at '\(path)')")
            }
            values = list
        }
        if let declared = schema["type"] {
            let types = try Self.types(declared, path: path)
            values = values.filter { Self.value($0, hasOneOf: types) }
        }
        var alternatives: [[GrammarElement]] = []
        var seen = Set<[UInt8]>()
        for value in values {
            var text: [UInt8] = []
            try CanonicalJSON.write(value, to: &text, path: path, keyword: keyword)
            if seen.insert(text).inserted { alternatives.append(try builder.literal(text)) }
        }
        if alternatives.isEmpty { return [.call(try builder.rule([]))] }
        return try builder.choice(alternatives)
    }

    private static func value(_ value: TemplateValue, hasOneOf types: [String]) -> Bool {
        switch value {
        case .string: return types.contains("string")
        case .int: return types.contains("integer") || types.contains("number")
        case .double(let number):
            return types.contains("number") || (types.contains("integer") && number.rounded() == number)
        case .bool: return types.contains("boolean")
        case .none: return types.contains("null")
        case .array: return types.contains("array")
        case .dictionary: return types.contains("object")
        default: return false
        }
    }

    // MARK: - Objects

    /// `{` properties in schema order `}`: required ones always, optional ones maybe, commas right.
    private mutating func object(_ schema: TemplateDictionary, path: String, depth: Int) throws(GrammarError)
        -> [GrammarElement]
    {
        var properties: [(key: String, value: TemplateValue)] = []
        switch schema["properties"] {
        case nil: break
        case .dictionary(let dictionary)?: properties = dictionary.entries
        default:
            throw GrammarError(
                path: path, keyword: "properties", message: "properties must be an object (at '\(path)')")
        }
        var required = Set<String>()
        switch schema["required"] {
        case nil: break
        case .array(let names)?:
            for name in names {
                guard case .string(let name) = name else {
                    throw GrammarError(
                        path: path, keyword: "required", message: "required must list strings (at '\(path)')")
                }
                required.insert(name)
                if !properties.contains(where: { $0.key == name }) { properties.append((name, .bool(true))) }
            }
        default:
            throw GrammarError(path: path, keyword: "required", message: "required must be an array (at '\(path)')")
        }
        let closed: Bool
        switch schema["additionalProperties"] {
        case nil, .bool(true)?: closed = false
        case .bool(false)?: closed = true
        case .dictionary(let extra)? where extra.keys.allSatisfy({ Self.annotations.contains($0) }):
            closed = false
        default:
            throw GrammarError(
                path: path, keyword: "additionalProperties",
                message: "additionalProperties is supported as true or false only (at '\(path)')")
        }
        if closed,
            let name = required.first(where: { name in
                if case .dictionary(let declared)? = schema["properties"] { return declared[name] == nil }
                return true
            })
        {
            throw GrammarError(
                path: path, keyword: "required",
                message: "required property '\(name)' is not declared and additionalProperties is false (at '\(path)')")
        }
        let open = try builder.literal("{")
        let close = try builder.literal("}")
        let ws = builder.whitespace
        if properties.isEmpty {
            if closed { return open + [ws] + close }
            return [.call(try expressions.anyObject(level: 0))]
        }
        let colon = try builder.literal(":")
        let comma = try builder.literal(",")
        var members: [Int32] = []
        for (name, value) in properties {
            let valuePath = Self.child(Self.child(path, "properties"), name)
            let valueElements = try compile(value, path: valuePath, depth: depth + 1)
            let key = try builder.literal(CanonicalJSON.quoted(name))
            members.append(try builder.rule([[ws] + key + [ws] + colon + [ws] + valueElements + [ws]]))
        }
        // first[i]: properties i... with none written yet; next[i]: the same after one was written.
        let count = properties.count
        var first: [Int32] = []
        var next: [Int32] = []
        for _ in 0...count {
            first.append(try builder.declareRule())
            next.append(try builder.declareRule())
        }
        try builder.define(first[count], [[ws]])
        try builder.define(next[count], [[]])
        for index in stride(from: count - 1, through: 0, by: -1) {
            let optional = !required.contains(properties[index].key)
            var firstAlternatives: [[GrammarElement]] = [[.call(members[index]), .call(next[index + 1])]]
            var nextAlternatives: [[GrammarElement]] = [comma + [.call(members[index]), .call(next[index + 1])]]
            if optional {
                firstAlternatives.append([.call(first[index + 1])])
                nextAlternatives.append([.call(next[index + 1])])
            }
            try builder.define(first[index], firstAlternatives)
            try builder.define(next[index], nextAlternatives)
        }
        return open + [.call(first[0])] + close
    }

    // MARK: - Arrays

    private mutating func array(_ schema: TemplateDictionary, path: String, depth: Int) throws(GrammarError)
        -> [GrammarElement]
    {
        var prefix: [TemplateValue] = []
        switch schema["prefixItems"] {
        case nil: break
        case .array(let schemas)?: prefix = schemas
        default:
            throw GrammarError(
                path: path, keyword: "prefixItems", message: "prefixItems must be an array of schemas (at '\(path)')")
        }
        let limit = ExpressionCompiler.maximumRepeatCount
        let minimum = try Self.count(schema["minItems"], keyword: "minItems", path: path, limit: limit) ?? 0
        let maximumItems = try Self.count(schema["maxItems"], keyword: "maxItems", path: path, limit: limit)
        if let maximumItems, minimum > maximumItems {
            throw GrammarError(
                path: path, keyword: "minItems",
                message: "minItems \(minimum) is greater than maxItems \(maximumItems) (at '\(path)')")
        }
        let ws = builder.whitespace
        // The schema of items past the prefix; nil when none may (or need) be generated.
        var extra: TemplateValue?
        switch schema["items"] {
        case nil: extra = prefix.isEmpty || minimum > prefix.count ? .bool(true) : nil
        case .bool(false)?: extra = nil
        case .array?:
            throw GrammarError(
                path: path, keyword: "items",
                message: "items as an array is not supported: use prefixItems (at '\(path)')")
        case let items?: extra = items
        }
        var maximum = maximumItems
        if extra == nil { maximum = min(maximum ?? prefix.count, prefix.count) }
        if let maximum, minimum > maximum {
            throw GrammarError(
                path: path, keyword: "minItems",
                message: "minItems \(minimum) needs more items than prefixItems allows (at '\(path)')")
        }
        var extraRule: Int32 = -1
        if let extra {
            let elements = try compile(extra, path: Self.child(path, "items"), depth: depth + 1)
            extraRule = try builder.rule([[ws] + elements + [ws]])
        }
        let commaElements = try builder.literal(",")
        let comma = try builder.rule([commaElements])
        // The items from position `index` on, the comma before it already written.
        func itemsFrom(_ index: Int, prefixRules: [Int32]) -> [GrammarElement] {
            if index < prefixRules.count { return [.call(prefixRules[index])] }
            return expressions.repeatElement(
                item: extraRule, separator: comma, min: max(minimum - index, 1), max: maximum.map { $0 - index })
        }
        let prefixCount = min(prefix.count, maximum ?? prefix.count)
        var prefixRules: [Int32] = []
        for _ in 0..<prefixCount { prefixRules.append(try builder.declareRule()) }
        for index in 0..<prefixCount {
            let elements = try compile(
                prefix[index], path: Self.child(path, "prefixItems.\(index)"), depth: depth + 1)
            // After item `index`: the array may stop, or a comma and the next item follow.
            var after: [[GrammarElement]] = []
            let written = index + 1
            if written >= minimum { after.append([]) }
            if maximum.map({ written < $0 }) ?? true, written < prefixCount || extraRule >= 0 {
                after.append(commaElements + itemsFrom(written, prefixRules: prefixRules))
            }
            var alternatives: [[GrammarElement]] = []
            for tail in after { alternatives.append([ws] + elements + [ws] + tail) }
            try builder.define(prefixRules[index], alternatives)
        }
        let open = try builder.literal("[")
        let close = try builder.literal("]")
        var alternatives: [[GrammarElement]] = []
        if minimum == 0 { alternatives.append(open + [ws] + close) }
        if maximum.map({ $0 > 0 }) ?? true, prefixCount > 0 || extraRule >= 0 {
            alternatives.append(open + itemsFrom(0, prefixRules: prefixRules) + close)
        }
        if alternatives.isEmpty { return [.call(try builder.rule([]))] }
        return try builder.choice(alternatives)
    }

    private static func count(_ value: TemplateValue?, keyword: String, path: String, limit: Int)
        throws(GrammarError) -> Int?
    {
        switch value {
        case nil: return nil
        case .int(let count)? where (0...limit).contains(count): return count
        case .double(let count)? where count.rounded() == count && count >= 0 && count <= Double(limit):
            return Int(count)
        default:
            throw GrammarError(
                path: path, keyword: keyword,
                message: "\(keyword) must be an integer from 0 to \(limit) (at '\(path)')")
        }
    }
}

/// JSON text for `enum` and `const` values: compact, keys in the schema's order, non-ASCII as UTF-8.
enum CanonicalJSON {
    static let maximumDepth = 64

    static func quoted(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(ascii: "\"")]
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes += Array("\\\"".utf8)
            case UInt8(ascii: "\\"): bytes += Array("\\\\".utf8)
            case 0x0A: bytes += Array("\\n".utf8)
            case 0x0D: bytes += Array("\\r".utf8)
            case 0x09: bytes += Array("\\t".utf8)
            case 0x08: bytes += Array("\\b".utf8)
            case 0x0C: bytes += Array("\\f".utf8)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
        return bytes
    }

    static func write(_ value: TemplateValue, to bytes: inout [UInt8], path: String, keyword: String, depth: Int = 0)
        throws(GrammarError)
    {
        guard depth < maximumDepth else {
            throw GrammarError(
                path: path, keyword: keyword, message: "\(keyword) value nested too deeply (at '\(path)')")
        }
        switch value {
        case .string(let text): bytes += quoted(text)
        case .int(let number): bytes += Array(String(number).utf8)
        case .double(let number) where number.isFinite:
            // Swift prints the shortest text that reads back the same double; always valid JSON.
            bytes += Array(number.description.utf8)
        case .bool(let flag): bytes += Array((flag ? "true" : "false").utf8)
        case .none: bytes += Array("null".utf8)
        case .array(let items):
            bytes.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                try write(item, to: &bytes, path: path, keyword: keyword, depth: depth + 1)
            }
            bytes.append(UInt8(ascii: "]"))
        case .dictionary(let dictionary):
            bytes.append(UInt8(ascii: "{"))
            for (index, entry) in dictionary.entries.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                bytes += quoted(entry.key)
                bytes.append(UInt8(ascii: ":"))
                try write(entry.value, to: &bytes, path: path, keyword: keyword, depth: depth + 1)
            }
            bytes.append(UInt8(ascii: "}"))
        default:
            throw GrammarError(
                path: path, keyword: keyword, message: "\(keyword) holds a value that is not JSON (at '\(path)')")
        }
    }
}
