import Foundation

/// A Hugging Face chat template (the Jinja2 subset real templates use), parsed once and rendered
/// per request with the same output as `transformers`' `apply_chat_template`.
///
/// ```swift
/// let template = try ChatTemplate(source: tokenizerConfig.chatTemplate)
/// let prompt = try template.render(
///     messages: [["role": "user", "content": "Hello"]], addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
/// ```
///
/// Rendering follows Jinja2 as `transformers` configures it: `trim_blocks`, `lstrip_blocks`, no
/// kept trailing newline, `break`/`continue`, the globals `raise_exception` and `strftime_now`, and a
/// `tojson` that does not escape HTML or non-ASCII. Unsupported syntax fails at init with its
/// line and column; errors while rendering are thrown, never trapped.
public struct ChatTemplate: Sendable {
    /// The template text as given.
    public let source: String
    private let nodes: [Node]

    /// Parses a template; throws ``ChatTemplateError`` for malformed or unsupported syntax.
    public init(source: String) throws {
        self.source = source
        var lexer = Lexer(source)
        var parser = Parser(tokens: try lexer.tokenize())
        nodes = try parser.parseTemplate()
    }

    /// Renders with the given variables.
    ///
    /// - Parameters:
    ///   - context: the template's variables (`messages`, `add_generation_prompt`, `bos_token`…).
    ///   - now: the clock `strftime_now` reads; inject a fixed date for reproducible prompts.
    ///   - timeZone: the zone `strftime_now` formats in (Python uses local time).
    public func render(_ context: [String: TemplateValue], now: Date = Date(), timeZone: TimeZone = .current) throws
        -> String
    {
        let interpreter = Interpreter(now: now, timeZone: timeZone)
        var out = ""
        _ = try interpreter.execute(nodes, frame: Frame(context, parent: nil), into: &out)
        return out
    }

    /// Renders a conversation the way `transformers.apply_chat_template` calls the template:
    /// `messages`, `tools` and `documents` are always defined (None when absent), special tokens
    /// only when given, and `extra` adds or overrides variables (`date_string`, `enable_thinking`…).
    public func render(
        messages: [TemplateValue], addGenerationPrompt: Bool, bosToken: String? = nil, eosToken: String? = nil,
        tools: [TemplateValue]? = nil, documents: [TemplateValue]? = nil, extra: [String: TemplateValue] = [:],
        now: Date = Date(), timeZone: TimeZone = .current
    ) throws -> String {
        var context: [String: TemplateValue] = [
            "messages": .array(messages),
            "tools": tools.map { .array($0) } ?? .none,
            "documents": documents.map { .array($0) } ?? .none,
            "add_generation_prompt": .bool(addGenerationPrompt),
        ]
        if let bosToken { context["bos_token"] = .string(bosToken) }
        if let eosToken { context["eos_token"] = .string(eosToken) }
        context.merge(extra) { _, new in new }
        return try render(context, now: now, timeZone: timeZone)
    }
}
