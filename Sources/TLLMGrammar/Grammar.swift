import TLLMChatTemplate

/// A schema or grammar the output cannot fit, named by its JSON path.
public struct GrammarError: Error, Sendable, CustomStringConvertible {
    /// Where in the schema, as a JSON path below the schema's root ("properties.age.pattern"); "" for the root.
    public var path: String
    /// The keyword at fault ("pattern"), when one is.
    public var keyword: String?
    /// What is wrong, for people.
    public var message: String
    /// The message.
    public var description: String { message }

    /// An error at `path`, blaming `keyword` when one is at fault.
    public init(path: String, keyword: String?, message: String) {
        self.path = path
        self.keyword = keyword
        self.message = message
    }
}

/// What the output must be.
public indirect enum GrammarExpression: Sendable {
    /// These bytes exactly.
    case literal(String)
    /// One JSON value that validates against this JSON Schema (the subset in docs/structured-outputs.md).
    case jsonSchema(TemplateValue)
    /// Any JSON object (nested at most ``Grammar/anyValueDepth`` levels deep).
    case anyJSONObject
    /// Each in turn.
    case sequence([GrammarExpression])
    /// Exactly one of these.
    case choice([GrammarExpression])
    /// The expression `min` to `max` times (nil: unbounded), `separator` between occurrences.
    case `repeat`(GrammarExpression, min: Int, max: Int?, separator: String)
}

/// A compiled grammar: immutable, shared by every request that uses it.
///
/// Compilation turns the expression into a byte-level pushdown automaton (``GrammarProgram``): rules
/// of alternatives whose terminals are literals or small byte DFAs (JSON strings, numbers, whitespace).
/// It refuses what it cannot enforce exactly, and bounds what a hostile schema could blow up.
public final class Grammar: Sendable {
    /// How deep a value generated for "any JSON" (`.anyJSONObject`, `{}`, `true`) may nest.
    public static let anyValueDepth = 32
    /// The largest compiled grammar, in elements.
    public static let maximumElements = 100_000

    let program: GrammarProgram
    /// Token classifications and masks per vocabulary this grammar has been matched against.
    let maskCaches: MaskCacheRegistry

    /// Compiles `expression`; throws for schemas it cannot enforce or that admit no output at all.
    public init(_ expression: GrammarExpression) throws(GrammarError) {
        var builder = GrammarBuilder()
        var compiler = ExpressionCompiler(builder: builder)
        let root = try compiler.compileRoot(expression)
        builder = compiler.builder
        program = try builder.finish(root: root)
        maskCaches = MaskCacheRegistry()
    }
}
