/// An error from parsing or rendering a chat template.
///
/// `raise_exception(msg)` in a template surfaces as kind ``Kind/raised`` with `message == msg`,
/// exactly what `transformers` puts in its `TemplateError`, so servers can return it to clients.
public struct ChatTemplateError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The family of an error, an extensible set of static members.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// A short stable name.
        public let name: String

        /// Malformed template text (unterminated tag, unexpected token, missing `endfor`).
        public static let syntax = Kind(name: "syntax error")
        /// Jinja2 syntax this interpreter does not implement (`{% include %}`, unknown filter).
        public static let unsupported = Kind(name: "unsupported")
        /// The template called `raise_exception(message)`.
        public static let raised = Kind(name: "template exception")
        /// An undefined value was used where Jinja2 raises `UndefinedError`.
        public static let undefined = Kind(name: "undefined")
        /// An operation on values of the wrong type (Python `TypeError`).
        public static let type = Kind(name: "type error")
        /// A bad value (Python `ValueError`, `ZeroDivisionError`, overflow).
        public static let value = Kind(name: "value error")
        /// A safety limit was hit (recursion depth, `range` size, output size).
        public static let limit = Kind(name: "limit exceeded")
        /// JSON input that could not be converted to template values.
        public static let invalidJSON = Kind(name: "invalid JSON")

        /// The name.
        public var description: String { name }
    }

    /// What went wrong, broadly.
    public var kind: Kind
    /// The detail; for ``Kind/raised`` the template's own message, verbatim.
    public var message: String
    /// 1-based line in the template source, when known.
    public var line: Int?
    /// 1-based column (in Unicode scalars) in the template source, when known.
    public var column: Int?

    /// Creates an error.
    public init(_ kind: Kind, _ message: String, line: Int? = nil, column: Int? = nil) {
        self.kind = kind
        self.message = message
        self.line = line
        self.column = column
    }

    init(_ kind: Kind, _ message: String, at position: SourcePosition?) {
        self.init(kind, message, line: position?.line, column: position?.column)
    }

    /// `kind: message (line L, column C)`.
    public var description: String {
        if let line, let column { return "\(kind): \(message) (line \(line), column \(column))" }
        return "\(kind): \(message)"
    }
}

/// A place in the template source, 1-based.
struct SourcePosition: Sendable, Equatable {
    var line: Int
    var column: Int
}
