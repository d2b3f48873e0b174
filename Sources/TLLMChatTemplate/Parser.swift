/// Builds the syntax tree from tokens with Jinja2's grammar (`jinja2/parser.py`): the same operator
/// precedence (filters and tests bind tighter than arithmetic, `**` is left-associative) and the
/// same statement set, minus the ones that need a loader (`include`, `extends`, `import`, `block`).
struct Parser {
    /// Deepest expression/statement nesting accepted; keeps hostile input from exhausting the stack.
    static let maximumNesting = 200

    private let tokens: [Token]
    private var index = 0
    private var depth = 0
    private var loopDepth = 0
    private var nameReferences: [String: Int] = [:]

    init(tokens: [Token]) {
        self.tokens = tokens
    }

    // MARK: - Token helpers

    private var current: Token { tokens[index] }

    private var next: Token { tokens[min(index + 1, tokens.count - 1)] }

    private mutating func advance() {
        if index < tokens.count - 1 { index += 1 }
    }

    private func isName(_ name: String, _ token: Token? = nil) -> Bool {
        if case .name(let value) = (token ?? current).kind { return value == name }
        return false
    }

    private func isOperator(_ op: String, _ token: Token? = nil) -> Bool {
        if case .op(let value) = (token ?? current).kind { return value == op }
        return false
    }

    private func describe(_ token: Token) -> String {
        switch token.kind {
        case .data: return "template data"
        case .variableBegin: return "'{{'"
        case .variableEnd: return "end of print statement"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "end of statement block"
        case .name(let n): return "'\(n)'"
        case .string: return "string"
        case .integer: return "integer"
        case .float: return "float"
        case .op(let o): return "'\(o)'"
        case .eof: return "end of template"
        }
    }

    private func syntaxError(_ message: String, at token: Token? = nil) -> ChatTemplateError {
        ChatTemplateError(.syntax, message, at: (token ?? current).position)
    }

    private mutating func expectOperator(_ op: String) throws {
        guard isOperator(op) else { throw syntaxError("expected '\(op)', got \(describe(current))") }
        advance()
    }

    private mutating func expectName() throws -> String {
        guard case .name(let name) = current.kind else {
            throw syntaxError("expected a name, got \(describe(current))")
        }
        advance()
        return name
    }

    private mutating func expectKeyword(_ keyword: String) throws {
        guard isName(keyword) else { throw syntaxError("expected '\(keyword)', got \(describe(current))") }
        advance()
    }

    private mutating func expectBlockEnd() throws {
        guard current.kind == .blockEnd else {
            throw syntaxError("expected end of statement block, got \(describe(current))")
        }
        advance()
    }

    private mutating func nest() throws {
        depth += 1
        if depth > Self.maximumNesting {
            throw ChatTemplateError(
                .limit, "template nested deeper than \(Self.maximumNesting) levels", at: current.position)
        }
    }

    // MARK: - Statements

    mutating func parseTemplate() throws -> [Node] {
        let (body, _) = try parseBody(until: [])
        return body
    }

    /// Parses nodes until a block tag named in `endTags`; returns the body and that tag's name
    /// (the tag's `{%` and name are consumed, the rest of the tag is left for the caller).
    private mutating func parseBody(until endTags: Set<String>, opener: String? = nil) throws -> ([Node], String?) {
        try nest()
        defer { depth -= 1 }
        var nodes: [Node] = []
        while true {
            let token = current
            switch token.kind {
            case .data(let text):
                nodes.append(.text(text))
                advance()
            case .variableBegin:
                advance()
                let expr = try parseTuple()
                guard current.kind == .variableEnd else {
                    throw syntaxError("expected end of print statement, got \(describe(current))")
                }
                advance()
                nodes.append(.output(expr, token.position))
            case .blockBegin:
                advance()
                guard case .name(let tag) = current.kind else {
                    throw syntaxError("tag name expected")
                }
                if endTags.contains(tag) {
                    advance()
                    return (nodes, tag)
                }
                nodes.append(try parseStatement(tag, endTags: endTags, opener: opener))
            case .eof:
                if let opener {
                    let expected = endTags.sorted().map { "'\($0)'" }.joined(separator: " or ")
                    throw ChatTemplateError(
                        .syntax,
                        "unexpected end of template; Jinja was looking for \(expected) to close '\(opener)'",
                        at: token.position)
                }
                return (nodes, nil)
            default:
                throw syntaxError("unexpected \(describe(token))")
            }
        }
    }

    private static let unsupportedTags: Set<String> = [
        "include", "extends", "import", "from", "block", "autoescape", "trans", "do", "pluralize",
    ]

    private mutating func parseStatement(_ tag: String, endTags: Set<String>, opener: String?) throws -> Node {
        let position = current.position
        switch tag {
        case "for": return try parseFor(at: position)
        case "if": return try parseIf()
        case "set": return try parseSet(at: position)
        case "macro": return try parseMacro(at: position)
        case "call": return try parseCallBlock(at: position)
        case "filter": return try parseFilterBlock()
        case "with": return try parseWith()
        case "generation":
            // transformers' {% generation %} marks assistant text for masks; it renders its body unchanged.
            advance()
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endgeneration"], opener: "generation")
            try expectBlockEnd()
            return .with(assignments: [], body: body)
        case "break", "continue":
            guard loopDepth > 0 else { throw syntaxError("'\(tag)' outside loop") }
            advance()
            try expectBlockEnd()
            return tag == "break" ? .break : .continue
        default:
            if Self.unsupportedTags.contains(tag) {
                throw ChatTemplateError(
                    .unsupported, "the '\(tag)' tag is not supported in chat templates", at: position)
            }
            var message = "encountered unknown tag '\(tag)'"
            if let opener, !endTags.isEmpty {
                let expected = endTags.sorted().map { "'\($0)'" }.joined(separator: " or ")
                message += "; Jinja was looking for \(expected) to close '\(opener)'"
            }
            throw ChatTemplateError(.syntax, message, at: position)
        }
    }

    private mutating func parseFor(at position: SourcePosition) throws -> Node {
        advance()
        let target = try parseAssignTarget(endNames: ["in"], allowNamespace: false)
        try expectKeyword("in")
        let iterable = try parseTuple(withConditional: false, endNames: ["recursive"])
        var condition: Expression?
        if isName("if") {
            advance()
            condition = try parseExpression()
        }
        if isName("recursive") {
            throw ChatTemplateError(.unsupported, "recursive for loops are not supported", at: current.position)
        }
        try expectBlockEnd()
        let loopReferencesBefore = nameReferences["loop", default: 0]
        loopDepth += 1
        let (body, end) = try parseBody(until: ["endfor", "else"], opener: "for")
        loopDepth -= 1
        var otherwise: [Node] = []
        try expectBlockEnd()
        if end == "else" {
            (otherwise, _) = try parseBody(until: ["endfor"], opener: "for")
            try expectBlockEnd()
        }
        let usesLoop = nameReferences["loop", default: 0] > loopReferencesBefore
        return .for(
            ForLoop(
                target: target, iterable: iterable, condition: condition, body: body, otherwise: otherwise,
                usesLoopVariable: usesLoop, position: position))
    }

    private mutating func parseIf() throws -> Node {
        advance()
        var branches: [(condition: Expression, body: [Node])] = []
        var otherwise: [Node] = []
        var condition = try parseTuple()
        while true {
            try expectBlockEnd()
            let (body, end) = try parseBody(until: ["elif", "else", "endif"], opener: "if")
            branches.append((condition, body))
            if end == "elif" {
                condition = try parseTuple()
                continue
            }
            try expectBlockEnd()
            if end == "else" {
                (otherwise, _) = try parseBody(until: ["endif"], opener: "if")
                try expectBlockEnd()
            }
            return .if(branches: branches, otherwise: otherwise)
        }
    }

    private mutating func parseSet(at position: SourcePosition) throws -> Node {
        advance()
        let target = try parseAssignTarget(endNames: [], allowNamespace: true)
        if isOperator("=") {
            advance()
            let value = try parseTuple()
            try expectBlockEnd()
            return .set(target, value, position)
        }
        let filters = try parseFilterChain(inline: false)
        try expectBlockEnd()
        let (body, _) = try parseBody(until: ["endset"], opener: "set")
        try expectBlockEnd()
        return .setBlock(target, filters: filters, body: body, position)
    }

    private mutating func parseSignature() throws -> MacroSignature {
        var parameters: [(name: String, defaultValue: Expression?)] = []
        try expectOperator("(")
        while !isOperator(")") {
            if !parameters.isEmpty { try expectOperator(",") }
            if isOperator(")") { break }
            let name = try expectName()
            var defaultValue: Expression?
            if isOperator("=") {
                advance()
                defaultValue = try parseExpression()
            } else if parameters.contains(where: { $0.defaultValue != nil }) {
                throw syntaxError("non-default argument follows default argument")
            }
            parameters.append((name, defaultValue))
        }
        advance()
        return MacroSignature(parameters: parameters)
    }

    private mutating func parseMacro(at position: SourcePosition) throws -> Node {
        advance()
        let name = try expectName()
        let signature = try parseSignature()
        try expectBlockEnd()
        let before = (
            nameReferences["caller", default: 0], nameReferences["varargs", default: 0],
            nameReferences["kwargs", default: 0]
        )
        // break/continue cannot cross a macro boundary.
        let savedLoopDepth = loopDepth
        loopDepth = 0
        let (body, _) = try parseBody(until: ["endmacro"], opener: "macro")
        loopDepth = savedLoopDepth
        try expectBlockEnd()
        return .macro(
            MacroDefinition(
                name: name, signature: signature, body: body,
                usesCaller: nameReferences["caller", default: 0] > before.0,
                usesVarargs: nameReferences["varargs", default: 0] > before.1,
                usesKwargs: nameReferences["kwargs", default: 0] > before.2,
                position: position))
    }

    private mutating func parseCallBlock(at position: SourcePosition) throws -> Node {
        advance()
        let signature = isOperator("(") ? try parseSignature() : MacroSignature(parameters: [])
        let call = try parseExpression()
        guard case .call = call else { throw syntaxError("expected call", at: tokens[index - 1]) }
        try expectBlockEnd()
        let savedLoopDepth = loopDepth
        loopDepth = 0
        let (body, _) = try parseBody(until: ["endcall"], opener: "call")
        loopDepth = savedLoopDepth
        try expectBlockEnd()
        return .callBlock(call: call, signature: signature, body: body, position)
    }

    private mutating func parseFilterBlock() throws -> Node {
        advance()
        let filters = try parseFilterChain(inline: true)
        try expectBlockEnd()
        let (body, _) = try parseBody(until: ["endfilter"], opener: "filter")
        try expectBlockEnd()
        return .filterBlock(filters: filters, body: body)
    }

    private mutating func parseWith() throws -> Node {
        advance()
        var assignments: [(AssignTarget, Expression)] = []
        while current.kind != .blockEnd {
            if !assignments.isEmpty { try expectOperator(",") }
            let target = try parseAssignTarget(endNames: [], allowNamespace: false)
            try expectOperator("=")
            assignments.append((target, try parseExpression()))
        }
        try expectBlockEnd()
        let (body, _) = try parseBody(until: ["endwith"], opener: "with")
        try expectBlockEnd()
        return .with(assignments: assignments, body: body)
    }

    private mutating func parseFilterChain(inline: Bool) throws -> [(
        name: String, arguments: Arguments, position: SourcePosition
    )] {
        var filters: [(name: String, arguments: Arguments, position: SourcePosition)] = []
        var first = inline
        while isOperator("|") || first {
            if !first { advance() }
            first = false
            let position = current.position
            let name = try parseDottedName()
            guard Filters.isKnown(name) else {
                throw ChatTemplateError(.unsupported, "no filter named '\(name)'", at: position)
            }
            let arguments = isOperator("(") ? try parseCallArguments() : .none
            filters.append((name, arguments, position))
        }
        return filters
    }

    private mutating func parseAssignTarget(endNames: Set<String>, allowNamespace: Bool) throws -> AssignTarget {
        if allowNamespace, case .name(let object) = current.kind, isOperator(".", next) {
            advance()
            advance()
            let attribute = try expectName()
            return .namespaceAttribute(object, attribute)
        }
        var targets: [AssignTarget] = []
        var isTuple = false
        while true {
            if !targets.isEmpty {
                guard isOperator(",") else { break }
                advance()
                isTuple = true
            }
            if current.kind == .blockEnd || isOperator("=") || endNames.contains(where: { isName($0) }) {
                break
            }
            if isOperator("(") {
                advance()
                targets.append(try parseAssignTarget(endNames: [], allowNamespace: false))
                try expectOperator(")")
            } else {
                let position = current.position
                let name = try expectName()
                if ["true", "false", "none", "True", "False", "None"].contains(name) {
                    throw ChatTemplateError(.syntax, "can't assign to '\(name)'", at: position)
                }
                targets.append(.name(name))
            }
            if !isOperator(",") { break }
        }
        guard !targets.isEmpty else { throw syntaxError("expected an assignment target, got \(describe(current))") }
        return isTuple || targets.count > 1 ? .tuple(targets) : targets[0]
    }

    // MARK: - Expressions

    private func isTupleEnd(_ endNames: Set<String>) -> Bool {
        switch current.kind {
        case .variableEnd, .blockEnd, .eof: return true
        case .op(")"): return true
        case .name(let name): return endNames.contains(name)
        default: return false
        }
    }

    /// `a, b` without brackets is a tuple (in `{{ }}`, `set`, `for` iterables and parentheses).
    private mutating func parseTuple(
        withConditional: Bool = true, endNames: Set<String> = [], explicitParentheses: Bool = false
    ) throws -> Expression {
        let start = current
        var items: [Expression] = []
        var isTuple = false
        while true {
            if !items.isEmpty { try expectOperator(",") }
            if isTupleEnd(endNames) { break }
            items.append(withConditional ? try parseExpression() : try parseOr())
            if isOperator(",") { isTuple = true } else { break }
        }
        if !isTuple {
            if let only = items.first { return only }
            if !explicitParentheses { throw syntaxError("expected an expression, got \(describe(start))", at: start) }
        }
        return .tuple(items)
    }

    mutating func parseExpression() throws -> Expression {
        try nest()
        defer { depth -= 1 }
        var expr = try parseOr()
        while isName("if") {
            advance()
            let condition = try parseOr()
            var otherwise: Expression?
            if isName("else") {
                advance()
                otherwise = try parseExpression()
            }
            expr = .conditional(condition: condition, then: expr, otherwise: otherwise)
        }
        return expr
    }

    private mutating func parseOr() throws -> Expression {
        var left = try parseAnd()
        while isName("or") {
            advance()
            left = .or(left, try parseAnd())
        }
        return left
    }

    private mutating func parseAnd() throws -> Expression {
        var left = try parseNot()
        while isName("and") {
            advance()
            left = .and(left, try parseNot())
        }
        return left
    }

    private mutating func parseNot() throws -> Expression {
        if isName("not") {
            advance()
            try nest()
            defer { depth -= 1 }
            return .not(try parseNot())
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> Expression {
        let position = current.position
        let first = try parseMath1()
        var operations: [(op: CompareOperator, operand: Expression)] = []
        while true {
            if case .op(let op) = current.kind, let compare = CompareOperator(rawValue: op),
                compare != .in, compare != .notIn
            {
                advance()
                operations.append((compare, try parseMath1()))
            } else if isName("in") {
                advance()
                operations.append((.in, try parseMath1()))
            } else if isName("not") && isName("in", next) {
                advance()
                advance()
                operations.append((.notIn, try parseMath1()))
            } else {
                break
            }
        }
        return operations.isEmpty ? first : .compare(first, operations, position)
    }

    private mutating func parseMath1() throws -> Expression {
        var left = try parseConcat()
        while isOperator("+") || isOperator("-") {
            let position = current.position
            let op: BinaryOperator = isOperator("+") ? .add : .subtract
            advance()
            left = .binary(op, left, try parseConcat(), position)
        }
        return left
    }

    private mutating func parseConcat() throws -> Expression {
        var items = [try parseMath2()]
        while isOperator("~") {
            advance()
            items.append(try parseMath2())
        }
        return items.count == 1 ? items[0] : .concat(items)
    }

    private mutating func parseMath2() throws -> Expression {
        var left = try parsePower()
        while true {
            let position = current.position
            let op: BinaryOperator
            if isOperator("*") {
                op = .multiply
            } else if isOperator("/") {
                op = .divide
            } else if isOperator("//") {
                op = .floorDivide
            } else if isOperator("%") {
                op = .modulo
            } else {
                return left
            }
            advance()
            left = .binary(op, left, try parsePower(), position)
        }
    }

    private mutating func parsePower() throws -> Expression {
        var left = try parseUnary()
        while isOperator("**") {
            let position = current.position
            advance()
            left = .binary(.power, left, try parseUnary(), position)
        }
        return left
    }

    private mutating func parseUnary(withFilter: Bool = true) throws -> Expression {
        try nest()
        defer { depth -= 1 }
        let position = current.position
        var node: Expression
        if isOperator("-") {
            advance()
            node = .negate(try parseUnary(withFilter: false), position)
        } else if isOperator("+") {
            advance()
            node = .plus(try parseUnary(withFilter: false), position)
        } else {
            node = try parsePrimary()
        }
        node = try parsePostfix(node)
        if withFilter { node = try parseFilterExpression(node) }
        return node
    }

    private mutating func parsePrimary() throws -> Expression {
        let token = current
        switch token.kind {
        case .name(let name):
            advance()
            switch name {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default:
                nameReferences[name, default: 0] += 1
                return .name(name, token.position)
            }
        case .string(let first):
            advance()
            var text = first
            while case .string(let more) = current.kind {
                text += more
                advance()
            }
            return .literal(.string(text))
        case .integer(let value):
            advance()
            return .literal(.int(value))
        case .float(let value):
            advance()
            return .literal(.double(value))
        case .op("("):
            advance()
            let expr = try parseTuple(explicitParentheses: true)
            try expectOperator(")")
            return expr
        case .op("["):
            advance()
            var items: [Expression] = []
            while !isOperator("]") {
                if !items.isEmpty { try expectOperator(",") }
                if isOperator("]") { break }
                items.append(try parseExpression())
            }
            advance()
            return .list(items)
        case .op("{"):
            advance()
            var items: [(key: Expression, value: Expression)] = []
            while !isOperator("}") {
                if !items.isEmpty { try expectOperator(",") }
                if isOperator("}") { break }
                let key = try parseExpression()
                try expectOperator(":")
                items.append((key, try parseExpression()))
            }
            advance()
            return .dictionary(items)
        default:
            throw syntaxError("unexpected \(describe(token))")
        }
    }

    private mutating func parsePostfix(_ node: Expression) throws -> Expression {
        var node = node
        while true {
            if isOperator(".") || isOperator("[") {
                node = try parseSubscript(node)
            } else if isOperator("(") {
                let position = current.position
                node = .call(node, try parseCallArguments(), position)
            } else {
                return node
            }
        }
    }

    private mutating func parseFilterExpression(_ node: Expression) throws -> Expression {
        var node = node
        while true {
            if isOperator("|") {
                advance()
                let position = current.position
                let name = try parseDottedName()
                guard Filters.isKnown(name) else {
                    throw ChatTemplateError(.unsupported, "no filter named '\(name)'", at: position)
                }
                let arguments = isOperator("(") ? try parseCallArguments() : .none
                node = .filter(node, name: name, arguments, position)
            } else if isName("is") {
                node = try parseTest(node)
            } else if isOperator("(") {
                let position = current.position
                node = .call(node, try parseCallArguments(), position)
            } else {
                return node
            }
        }
    }

    private mutating func parseDottedName() throws -> String {
        var name = try expectName()
        while isOperator(".") {
            advance()
            name += "." + (try expectName())
        }
        return name
    }

    private mutating func parseTest(_ node: Expression) throws -> Expression {
        advance()
        var negated = false
        if isName("not") {
            advance()
            negated = true
        }
        let position = current.position
        let name = try parseDottedName()
        var arguments = Arguments.none
        if isOperator("(") {
            arguments = try parseCallArguments()
        } else {
            var startsArgument = false
            switch current.kind {
            case .name(let n): startsArgument = !["else", "or", "and"].contains(n)
            case .string, .integer, .float, .op("("), .op("["), .op("{"): startsArgument = true
            default: break
            }
            if startsArgument {
                if isName("is") { throw syntaxError("You cannot chain multiple tests with is") }
                arguments.positional = [try parsePostfix(try parsePrimary())]
            }
        }
        let test = Expression.test(node, name: name, arguments, position)
        return negated ? .not(test) : test
    }

    private mutating func parseSubscript(_ node: Expression) throws -> Expression {
        let position = current.position
        if isOperator(".") {
            advance()
            switch current.kind {
            case .name(let name):
                advance()
                return .attribute(node, name, position)
            case .integer(let value):
                advance()
                return .item(node, .literal(.int(value)), position)
            default:
                throw syntaxError("expected name or number")
            }
        }
        advance()
        var items: [Expression] = []
        while !isOperator("]") {
            if !items.isEmpty { try expectOperator(",") }
            items.append(try parseSubscribed())
        }
        advance()
        guard !items.isEmpty else { throw syntaxError("expected subscript expression") }
        return .item(node, items.count == 1 ? items[0] : .tuple(items), position)
    }

    private mutating func parseSubscribed() throws -> Expression {
        let position = current.position
        var start: Expression?
        if isOperator(":") {
            advance()
        } else {
            let expr = try parseExpression()
            guard isOperator(":") else { return expr }
            advance()
            start = expr
        }
        var stop: Expression?
        var step: Expression?
        if !isOperator(":") && !isOperator("]") && !isOperator(",") {
            stop = try parseExpression()
        }
        if isOperator(":") {
            advance()
            if !isOperator("]") && !isOperator(",") { step = try parseExpression() }
        }
        return .slice(start: start, stop: stop, step: step, position)
    }

    private mutating func parseCallArguments() throws -> Arguments {
        try expectOperator("(")
        var arguments = Arguments()
        var needsComma = false
        while !isOperator(")") {
            if needsComma {
                try expectOperator(",")
                if isOperator(")") { break }
            }
            if isOperator("*") || isOperator("**") {
                throw ChatTemplateError(
                    .unsupported, "*args and **kwargs in calls are not supported", at: current.position)
            }
            if case .name(let key) = current.kind, isOperator("=", next) {
                advance()
                advance()
                arguments.keyword.append((key, try parseExpression()))
            } else {
                if !arguments.keyword.isEmpty { throw syntaxError("positional argument follows keyword argument") }
                arguments.positional.append(try parseExpression())
            }
            needsComma = true
        }
        advance()
        return arguments
    }
}
