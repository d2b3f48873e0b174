import TLLMChatTemplate

/// Turns a ``GrammarExpression`` into rules of a ``GrammarBuilder``.
struct ExpressionCompiler {
    var builder: GrammarBuilder
    /// The "any JSON value" rules per nesting level, built on first use.
    private var anyValueRules: [Int32] = []
    private var anyObjectRules: [Int32] = []

    /// Combinators nested deeper than this are refused (they come from code, not clients, but still).
    static let maximumExpressionDepth = 64
    /// The largest `min`/`max` of a repeat, and of `minItems`/`maxItems`.
    static let maximumRepeatCount = 10_000

    init(builder: GrammarBuilder) {
        self.builder = builder
    }

    /// The root rule for `expression`.
    mutating func compileRoot(_ expression: GrammarExpression) throws(GrammarError) -> Int32 {
        let elements = try compile(expression, depth: 0)
        return try builder.rule([elements])
    }

    private mutating func compile(_ expression: GrammarExpression, depth: Int) throws(GrammarError)
        -> [GrammarElement]
    {
        guard depth < Self.maximumExpressionDepth else {
            throw GrammarError(
                path: "", keyword: nil,
                message: "grammar expressions nested deeper than \(Self.maximumExpressionDepth) levels")
        }
        switch expression {
        case .literal(let text):
            return try builder.literal(text)
        case .jsonSchema(let schema):
            var compiler = JSONSchemaCompiler(root: schema, expressions: self)
            let rule = try compiler.compileDocument()
            self = compiler.expressions
            return [.call(rule)]
        case .anyJSONObject:
            return [.call(try anyObject(level: 0))]
        case .sequence(let parts):
            var elements: [GrammarElement] = []
            for part in parts { elements += try compile(part, depth: depth + 1) }
            return elements
        case .choice(let options):
            guard !options.isEmpty else {
                throw GrammarError(path: "", keyword: nil, message: "a choice needs at least one option")
            }
            var alternatives: [[GrammarElement]] = []
            for option in options { alternatives.append(try compile(option, depth: depth + 1)) }
            return try builder.choice(alternatives)
        case .repeat(let item, let minimum, let maximum, let separator):
            guard minimum >= 0, minimum <= Self.maximumRepeatCount,
                maximum.map({ $0 >= minimum && $0 <= Self.maximumRepeatCount }) ?? true
            else {
                throw GrammarError(
                    path: "", keyword: nil,
                    message:
                        "a repeat needs 0 <= min <= max <= \(Self.maximumRepeatCount), not \(minimum)...\(maximum.map(String.init) ?? "")"
                )
            }
            let itemRule = try builder.rule([try compile(item, depth: depth + 1)])
            let separatorElements = try builder.literal(separator)
            let separatorRule = separatorElements.isEmpty ? -1 : try builder.rule([separatorElements])
            return repeatElement(item: itemRule, separator: separatorRule, min: minimum, max: maximum)
        }
    }

    /// A repeat element, or nothing for `max == 0`.
    func repeatElement(item: Int32, separator: Int32, min: Int, max: Int?) -> [GrammarElement] {
        if max == 0 { return [] }
        return [.repeat(item: item, separator: separator, min: Int32(min), max: max.map { Int32($0) } ?? -1)]
    }

    // MARK: - Any JSON value

    /// Any JSON value whose containers nest at most ``Grammar/anyValueDepth`` - `level` levels.
    mutating func anyValue(level: Int) throws(GrammarError) -> Int32 {
        try buildAnyValueRules()
        return anyValueRules[Swift.min(level, anyValueRules.count - 1)]
    }

    /// Any JSON object, nesting as ``anyValue(level:)``.
    mutating func anyObject(level: Int) throws(GrammarError) -> Int32 {
        try buildAnyValueRules()
        return anyObjectRules[Swift.min(level, anyObjectRules.count - 1)]
    }

    private mutating func buildAnyValueRules() throws(GrammarError) {
        guard anyValueRules.isEmpty else { return }
        let levels = Grammar.anyValueDepth + 1
        for _ in 0..<levels {
            anyValueRules.append(try builder.declareRule())
            anyObjectRules.append(try builder.declareRule())
        }
        let ws = builder.whitespace
        let scalars: [[GrammarElement]] = [
            [.dfa(builder.jsonString)], [.dfa(builder.jsonNumber)], try builder.literal("true"),
            try builder.literal("false"), try builder.literal("null"),
        ]
        let open = try builder.literal("{")
        let close = try builder.literal("}")
        let openArray = try builder.literal("[")
        let closeArray = try builder.literal("]")
        let colon = try builder.literal(":")
        let comma = try builder.rule([try builder.literal(",")])
        for level in 0..<levels {
            // The deepest level's containers are empty: they cannot hold another level.
            let inner = level + 1 < levels ? anyValueRules[level + 1] : nil
            var objectAlternatives = [open + [ws] + close]
            var arrayAlternatives = [openArray + [ws] + closeArray]
            if let inner {
                let member = try builder.rule([[ws, .dfa(builder.jsonString), ws] + colon + [ws, .call(inner), ws]])
                objectAlternatives.append(
                    open + repeatElement(item: member, separator: comma, min: 1, max: nil) + close)
                let item = try builder.rule([[ws, .call(inner), ws]])
                arrayAlternatives.append(
                    openArray + repeatElement(item: item, separator: comma, min: 1, max: nil) + closeArray)
            }
            try builder.define(anyObjectRules[level], objectAlternatives)
            let array = try builder.rule(arrayAlternatives)
            try builder.define(anyValueRules[level], scalars + [[.call(anyObjectRules[level])], [.call(array)]])
        }
    }
}
