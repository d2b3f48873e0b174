/// The parsed form of a template: statements (`Node`) holding expressions (`Expression`).

/// An expression inside `{{ }}` or a tag.
indirect enum Expression: Sendable {
    case literal(TemplateValue)
    case name(String, SourcePosition)
    case list([Expression])
    case tuple([Expression])
    case dictionary([(key: Expression, value: Expression)])
    /// `a.b`: Jinja2's `getattr` (attribute first, then item).
    case attribute(Expression, String, SourcePosition)
    /// `a[b]`: Jinja2's `getitem` (item first, then attribute).
    case item(Expression, Expression, SourcePosition)
    case slice(start: Expression?, stop: Expression?, step: Expression?, SourcePosition)
    case call(Expression, Arguments, SourcePosition)
    case filter(Expression, name: String, Arguments, SourcePosition)
    case test(Expression, name: String, Arguments, SourcePosition)
    case not(Expression)
    case negate(Expression, SourcePosition)
    case plus(Expression, SourcePosition)
    case binary(BinaryOperator, Expression, Expression, SourcePosition)
    case and(Expression, Expression)
    case or(Expression, Expression)
    case concat([Expression])
    case compare(Expression, [(op: CompareOperator, operand: Expression)], SourcePosition)
    case conditional(condition: Expression, then: Expression, otherwise: Expression?)
}

/// Positional and keyword arguments of a call, filter or test.
struct Arguments: Sendable {
    var positional: [Expression] = []
    var keyword: [(name: String, value: Expression)] = []

    static let none = Arguments()
}

enum BinaryOperator: String, Sendable {
    case add = "+"
    case subtract = "-"
    case multiply = "*"
    case divide = "/"
    case floorDivide = "//"
    case modulo = "%"
    case power = "**"
}

enum CompareOperator: String, Sendable {
    case equal = "=="
    case notEqual = "!="
    case less = "<"
    case lessOrEqual = "<="
    case greater = ">"
    case greaterOrEqual = ">="
    case `in` = "in"
    case notIn = "not in"
}

/// Where `{% for %}` and `{% set %}` store values.
indirect enum AssignTarget: Sendable {
    case name(String)
    case tuple([AssignTarget])
    /// `ns.attr`, only valid on a namespace.
    case namespaceAttribute(String, String)
}

/// A macro's parameter list.
struct MacroSignature: Sendable {
    var parameters: [(name: String, defaultValue: Expression?)]
}

/// A statement of the template body.
indirect enum Node: Sendable {
    case text(String)
    case output(Expression, SourcePosition)
    case `if`(branches: [(condition: Expression, body: [Node])], otherwise: [Node])
    case `for`(ForLoop)
    case set(AssignTarget, Expression, SourcePosition)
    case setBlock(
        AssignTarget, filters: [(name: String, arguments: Arguments, position: SourcePosition)], body: [Node],
        SourcePosition)
    case macro(MacroDefinition)
    case callBlock(call: Expression, signature: MacroSignature, body: [Node], SourcePosition)
    case filterBlock(filters: [(name: String, arguments: Arguments, position: SourcePosition)], body: [Node])
    case with(assignments: [(AssignTarget, Expression)], body: [Node])
    case `break`
    case `continue`
}

struct ForLoop: Sendable {
    var target: AssignTarget
    var iterable: Expression
    var condition: Expression?
    var body: [Node]
    var otherwise: [Node]
    /// Whether the body mentions `loop`; building the loop object is skipped when it does not.
    var usesLoopVariable: Bool
    var position: SourcePosition
}

struct MacroDefinition: Sendable {
    var name: String
    var signature: MacroSignature
    var body: [Node]
    /// Whether the body reads `caller`, `varargs` or `kwargs`, which change how calls bind arguments.
    var usesCaller: Bool
    var usesVarargs: Bool
    var usesKwargs: Bool
    var position: SourcePosition
}
