import Foundation

/// A variable scope. Jinja2 gives each loop iteration, macro call and `with` block a fresh scope,
/// so `{% set %}` inside a loop does not leak out (templates use `namespace()` for that).
final class Frame {
    var variables: [String: TemplateValue]
    let parent: Frame?

    init(_ variables: [String: TemplateValue] = [:], parent: Frame?) {
        self.variables = variables
        self.parent = parent
    }

    func lookup(_ name: String) -> TemplateValue? {
        var frame: Frame? = self
        while let current = frame {
            if let value = current.variables[name] { return value }
            frame = current.parent
        }
        return nil
    }
}

/// Evaluated call arguments, bound by position or keyword like a Python signature.
struct CallArguments {
    var positional: [TemplateValue] = []
    var keyword: [(name: String, value: TemplateValue)] = []

    func value(_ position: Int, _ name: String) -> TemplateValue? {
        if position < positional.count { return positional[position] }
        return keyword.first { $0.name == name }?.value
    }

    /// Rejects arguments a Python signature `(names…)` would reject.
    func check(_ names: [String], for function: String, position: SourcePosition?) throws {
        if positional.count > names.count {
            throw ChatTemplateError(
                .type, "\(function)() takes at most \(names.count) argument(s) (\(positional.count) given)",
                at: position)
        }
        for (name, _) in keyword {
            guard let index = names.firstIndex(of: name) else {
                throw ChatTemplateError(
                    .type, "\(function)() got an unexpected keyword argument '\(name)'", at: position)
            }
            if index < positional.count {
                throw ChatTemplateError(.type, "\(function)() got multiple values for argument '\(name)'", at: position)
            }
        }
    }
}

/// Walks the syntax tree for one render. Not shared: each `render` makes its own.
final class Interpreter {
    /// Safety limits: Jinja2 is not Turing-complete without recursion, but macros can recurse and
    /// nested loops can multiply; a server must not hang on a hostile template.
    static let maximumCallDepth = 64
    static let maximumIterations = 5_000_000
    static let maximumOutputLength = 64 << 20

    struct MacroEntry {
        let definition: MacroDefinition
        let frame: Frame
    }

    enum Flow {
        case normal
        case breakLoop
        case continueLoop
    }

    var namespaces: [TemplateDictionary] = []
    var macros: [MacroEntry] = []
    let now: Date
    let timeZone: TimeZone
    private var callDepth = 0
    private var iterations = 0

    init(now: Date, timeZone: TimeZone) {
        self.now = now
        self.timeZone = timeZone
    }

    lazy var namespaceLookup: PythonText.NamespaceLookup = { [unowned self] id in
        id < self.namespaces.count ? self.namespaces[id] : nil
    }

    func str(_ value: TemplateValue) -> String {
        switch value {
        case .string(let s): return s
        case .undefined: return ""
        case .int(let i): return String(i)
        default: return PythonText.str(value, namespaces: namespaceLookup)
        }
    }

    func repr(_ value: TemplateValue) -> String {
        PythonText.repr(value, namespaces: namespaceLookup)
    }

    // MARK: - Statements

    func execute(_ nodes: [Node], frame: Frame, into out: inout String) throws -> Flow {
        for node in nodes {
            switch node {
            case .text(let text):
                out += text
            case .output(let expr, _):
                out += str(try evaluate(expr, frame))
            case .if(let branches, let otherwise):
                var taken = false
                for branch in branches where try truthy(evaluate(branch.condition, frame)) {
                    taken = true
                    let flow = try execute(branch.body, frame: frame, into: &out)
                    if flow != .normal { return flow }
                    break
                }
                if !taken {
                    let flow = try execute(otherwise, frame: frame, into: &out)
                    if flow != .normal { return flow }
                }
            case .for(let loop):
                try executeFor(loop, frame: frame, into: &out)
            case .set(let target, let expr, let position):
                try assign(try evaluate(expr, frame), to: target, in: frame, at: position)
            case .setBlock(let target, let filters, let body, let position):
                var captured = ""
                _ = try execute(body, frame: Frame(parent: frame), into: &captured)
                var value = TemplateValue.string(captured)
                for filter in filters {
                    value = try applyFilter(
                        filter.name, to: value, try evaluateArguments(filter.arguments, frame), at: filter.position)
                }
                try assign(value, to: target, in: frame, at: position)
            case .macro(let definition):
                macros.append(MacroEntry(definition: definition, frame: frame))
                frame.variables[definition.name] = .callable(
                    TemplateCallable(kind: .macro(id: macros.count - 1, name: definition.name)))
            case .callBlock(let call, let signature, let body, let position):
                let callerDefinition = MacroDefinition(
                    name: "caller", signature: signature, body: body, usesCaller: false, usesVarargs: false,
                    usesKwargs: false, position: position)
                macros.append(MacroEntry(definition: callerDefinition, frame: frame))
                let caller = TemplateValue.callable(
                    TemplateCallable(kind: .macro(id: macros.count - 1, name: "caller")))
                guard case .call(let callee, let arguments, let callPosition) = call else { continue }
                var evaluated = try evaluateArguments(arguments, frame)
                evaluated.keyword.append(("caller", caller))
                out += str(try callValue(try evaluate(callee, frame), evaluated, at: callPosition))
            case .filterBlock(let filters, let body):
                var captured = ""
                let flow = try execute(body, frame: frame, into: &captured)
                var value = TemplateValue.string(captured)
                for filter in filters {
                    value = try applyFilter(
                        filter.name, to: value, try evaluateArguments(filter.arguments, frame), at: filter.position)
                }
                out += str(value)
                if flow != .normal { return flow }
            case .with(let assignments, let body):
                let inner = Frame(parent: frame)
                for (target, expr) in assignments {
                    try assign(try evaluate(expr, frame), to: target, in: inner, at: nil)
                }
                let flow = try execute(body, frame: inner, into: &out)
                if flow != .normal { return flow }
            case .break:
                return .breakLoop
            case .continue:
                return .continueLoop
            }
            if out.utf8.count > Self.maximumOutputLength {
                throw ChatTemplateError(.limit, "rendered text exceeds \(Self.maximumOutputLength) bytes")
            }
        }
        return .normal
    }

    private func executeFor(_ loop: ForLoop, frame: Frame, into out: inout String) throws {
        var items = try iterate(try evaluate(loop.iterable, frame), at: loop.position)
        if let condition = loop.condition {
            // Jinja2 filters before building the loop object, so loop.length counts kept items only.
            var kept: [TemplateValue] = []
            for item in items {
                let scope = Frame(parent: frame)
                try assign(item, to: loop.target, in: scope, at: loop.position)
                if try truthy(evaluate(condition, scope)) { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            _ = try execute(loop.otherwise, frame: frame, into: &out)
            return
        }
        let length = items.count
        for (index, item) in items.enumerated() {
            iterations += 1
            if iterations > Self.maximumIterations {
                throw ChatTemplateError(
                    .limit, "more than \(Self.maximumIterations) loop iterations", at: loop.position)
            }
            let scope = Frame(parent: frame)
            try assign(item, to: loop.target, in: scope, at: loop.position)
            if loop.usesLoopVariable {
                var info: TemplateDictionary = [
                    "index": .int(index + 1), "index0": .int(index), "revindex": .int(length - index),
                    "revindex0": .int(length - index - 1), "first": .bool(index == 0),
                    "last": .bool(index == length - 1), "length": .int(length), "depth": .int(1), "depth0": .int(0),
                    "cycle": .callable(TemplateCallable(kind: .loopCycle(index0: index))),
                ]
                info["previtem"] =
                    index > 0 ? items[index - 1] : .undefined(TemplateUndefined(hint: "there is no previous item"))
                info["nextitem"] =
                    index + 1 < length ? items[index + 1] : .undefined(TemplateUndefined(hint: "there is no next item"))
                scope.variables["loop"] = .dictionary(info)
            }
            let flow = try execute(loop.body, frame: scope, into: &out)
            if flow == .breakLoop { break }
        }
    }

    func assign(_ value: TemplateValue, to target: AssignTarget, in frame: Frame, at position: SourcePosition?) throws {
        switch target {
        case .name(let name):
            frame.variables[name] = value
        case .tuple(let targets):
            let items = try iterate(value, at: position)
            guard items.count == targets.count else {
                let message =
                    items.count > targets.count
                    ? "too many values to unpack (expected \(targets.count))"
                    : "not enough values to unpack (expected \(targets.count), got \(items.count))"
                throw ChatTemplateError(.value, message, at: position)
            }
            for (item, sub) in zip(items, targets) { try assign(item, to: sub, in: frame, at: position) }
        case .namespaceAttribute(let object, let attribute):
            guard case .namespace(let ns)? = frame.lookup(object) else {
                throw ChatTemplateError(
                    .type, "can only assign attributes of a namespace object ('\(object)')", at: position)
            }
            namespaces[ns.id][attribute] = value
        }
    }

    // MARK: - Expressions

    func evaluate(_ expr: Expression, _ frame: Frame) throws -> TemplateValue {
        switch expr {
        case .literal(let value):
            return value
        case .name(let name, _):
            if let value = frame.lookup(name) { return value }
            if Globals.names.contains(name) { return .callable(TemplateCallable(kind: .global(name))) }
            return .undefined(TemplateUndefined(hint: "'\(name)' is undefined"))
        case .list(let items), .tuple(let items):
            return .array(try items.map { try evaluate($0, frame) })
        case .dictionary(let pairs):
            var dict = TemplateDictionary()
            for pair in pairs {
                let key = try evaluate(pair.key, frame)
                // Keys are strings here (JSON objects); other literal keys keep their printed form.
                dict[key.stringValue ?? str(key)] = try evaluate(pair.value, frame)
            }
            return .dictionary(dict)
        case .attribute(let object, let name, let position):
            return try attribute(of: try evaluate(object, frame), name, at: position)
        case .item(let object, let key, let position):
            let value = try evaluate(object, frame)
            if case .slice(let start, let stop, let step, let slicePosition) = key {
                return try slice(
                    value, start: try start.map { try evaluate($0, frame) },
                    stop: try stop.map { try evaluate($0, frame) },
                    step: try step.map { try evaluate($0, frame) }, at: slicePosition)
            }
            return try item(of: value, try evaluate(key, frame), at: position)
        case .slice(_, _, _, let position):
            throw ChatTemplateError(.syntax, "slice outside a subscript", at: position)
        case .call(let callee, let arguments, let position):
            return try callValue(try evaluate(callee, frame), try evaluateArguments(arguments, frame), at: position)
        case .filter(let input, let name, let arguments, let position):
            return try applyFilter(
                name, to: try evaluate(input, frame), try evaluateArguments(arguments, frame), at: position)
        case .test(let input, let name, let arguments, let position):
            return .bool(
                try applyTest(
                    name, to: try evaluate(input, frame), try evaluateArguments(arguments, frame), at: position))
        case .not(let operand):
            return .bool(!(try truthy(evaluate(operand, frame))))
        case .negate(let operand, let position):
            return try negate(try evaluate(operand, frame), at: position)
        case .plus(let operand, let position):
            let value = try evaluate(operand, frame)
            switch value {
            case .int, .double: return value
            case .bool(let b): return .int(b ? 1 : 0)
            case .undefined(let u): throw undefinedError(u, at: position)
            default: throw ChatTemplateError(.type, "bad operand type for unary +: '\(typeName(value))'", at: position)
            }
        case .binary(let op, let left, let right, let position):
            return try binary(op, try evaluate(left, frame), try evaluate(right, frame), at: position)
        case .and(let left, let right):
            let value = try evaluate(left, frame)
            return try truthy(value) ? try evaluate(right, frame) : value
        case .or(let left, let right):
            let value = try evaluate(left, frame)
            return try truthy(value) ? value : try evaluate(right, frame)
        case .concat(let items):
            var text = ""
            for item in items { text += str(try evaluate(item, frame)) }
            return .string(text)
        case .compare(let first, let operations, let position):
            var left = try evaluate(first, frame)
            for operation in operations {
                let right = try evaluate(operation.operand, frame)
                guard try compare(operation.op, left, right, at: position) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .conditional(let condition, let then, let otherwise):
            if try truthy(evaluate(condition, frame)) { return try evaluate(then, frame) }
            if let otherwise { return try evaluate(otherwise, frame) }
            return .undefined(
                TemplateUndefined(hint: "the inline if-expression evaluated to false and no else section was defined"))
        }
    }

    func evaluateArguments(_ arguments: Arguments, _ frame: Frame) throws -> CallArguments {
        if arguments.positional.isEmpty && arguments.keyword.isEmpty { return CallArguments() }
        return CallArguments(
            positional: try arguments.positional.map { try evaluate($0, frame) },
            keyword: try arguments.keyword.map { ($0.name, try evaluate($0.value, frame)) })
    }

    // MARK: - Calls

    func callValue(_ callee: TemplateValue, _ arguments: CallArguments, at position: SourcePosition?) throws
        -> TemplateValue
    {
        switch callee {
        case .callable(let callable):
            switch callable.kind {
            case .global(let name): return try callGlobal(name, arguments, at: position)
            case .method(let receiver, let name): return try callMethod(name, on: receiver, arguments, at: position)
            case .macro(let id, _): return try callMacro(id, arguments, at: position)
            case .loopCycle(let index0):
                guard !arguments.positional.isEmpty else {
                    throw ChatTemplateError(.type, "no items for cycling given", at: position)
                }
                return arguments.positional[index0 % arguments.positional.count]
            }
        case .undefined(let u):
            throw undefinedError(u, at: position)
        default:
            throw ChatTemplateError(.type, "'\(typeName(callee))' object is not callable", at: position)
        }
    }

    private func callMacro(_ id: Int, _ arguments: CallArguments, at position: SourcePosition?) throws -> TemplateValue
    {
        let entry = macros[id]
        let definition = entry.definition
        callDepth += 1
        defer { callDepth -= 1 }
        guard callDepth <= Self.maximumCallDepth else {
            throw ChatTemplateError(.limit, "macro calls nested deeper than \(Self.maximumCallDepth)", at: position)
        }
        let scope = Frame(parent: entry.frame)
        let parameters = definition.signature.parameters
        if arguments.positional.count > parameters.count && !definition.usesVarargs {
            throw ChatTemplateError(
                .type, "macro '\(definition.name)' takes not more than \(parameters.count) argument(s)", at: position)
        }
        var extraKeywords = TemplateDictionary()
        var bound: [String: TemplateValue] = [:]
        for (index, value) in arguments.positional.prefix(parameters.count).enumerated() {
            bound[parameters[index].name] = value
        }
        for (name, value) in arguments.keyword {
            if parameters.contains(where: { $0.name == name }) {
                bound[name] = value
            } else if name == "caller" && (definition.usesCaller || definition.name == "caller") {
                scope.variables["caller"] = value
            } else if definition.usesKwargs {
                extraKeywords[name] = value
            } else {
                throw ChatTemplateError(
                    .type, "macro '\(definition.name)' takes no keyword argument '\(name)'", at: position)
            }
        }
        for parameter in parameters {
            if let value = bound[parameter.name] {
                scope.variables[parameter.name] = value
            } else if let defaultValue = parameter.defaultValue {
                scope.variables[parameter.name] = try evaluate(defaultValue, scope)
            } else {
                scope.variables[parameter.name] = .undefined(
                    TemplateUndefined(hint: "parameter '\(parameter.name)' was not provided"))
            }
        }
        if definition.usesVarargs {
            scope.variables["varargs"] = .array(Array(arguments.positional.dropFirst(parameters.count)))
        }
        if definition.usesKwargs { scope.variables["kwargs"] = .dictionary(extraKeywords) }
        var out = ""
        _ = try execute(definition.body, frame: scope, into: &out)
        return .string(out)
    }

    // MARK: - Python semantics

    func typeName(_ value: TemplateValue) -> String {
        switch value {
        case .string: return "str"
        case .int: return "int"
        case .double: return "float"
        case .bool: return "bool"
        case .none: return "NoneType"
        case .array: return "list"
        case .dictionary: return "dict"
        case .undefined: return "Undefined"
        case .namespace: return "Namespace"
        case .callable: return "function"
        }
    }

    func undefinedError(_ undefined: TemplateUndefined, at position: SourcePosition?) -> ChatTemplateError {
        ChatTemplateError(.undefined, undefined.hint ?? "value is undefined", at: position)
    }

    func truthy(_ value: TemplateValue) throws -> Bool {
        switch value {
        case .string(let s): return !s.isEmpty
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .bool(let b): return b
        case .none, .undefined: return false
        case .array(let a): return !a.isEmpty
        case .dictionary(let d): return !d.isEmpty
        case .namespace, .callable: return true
        }
    }

    /// Values usable as numbers (`bool` is an `int` in Python).
    private enum Number {
        case int(Int)
        case double(Double)

        var asDouble: Double {
            switch self {
            case .int(let i): return Double(i)
            case .double(let d): return d
            }
        }
    }

    private func number(_ value: TemplateValue) -> Number? {
        switch value {
        case .int(let i): return .int(i)
        case .bool(let b): return .int(b ? 1 : 0)
        case .double(let d): return .double(d)
        default: return nil
        }
    }

    func pyEquals(_ a: TemplateValue, _ b: TemplateValue) -> Bool {
        if let x = number(a), let y = number(b) {
            if case .int(let i) = x, case .int(let j) = y { return i == j }
            return x.asDouble == y.asDouble
        }
        switch (a, b) {
        case (.string(let x), .string(let y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case (.none, .none), (.undefined, .undefined): return true
        case (.array(let x), .array(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { pyEquals($0, $1) }
        case (.dictionary(let x), .dictionary(let y)):
            return x.count == y.count
                && x.entries.allSatisfy { entry in y[entry.key].map { pyEquals(entry.value, $0) } ?? false }
        case (.namespace(let x), .namespace(let y)): return x == y
        case (.callable(let x), .callable(let y)): return x == y
        default: return false
        }
    }

    /// Python's `<`; throws for unorderable types as Python does.
    func pyLess(_ a: TemplateValue, _ b: TemplateValue, op: String = "<", at position: SourcePosition?) throws -> Bool {
        if let x = number(a), let y = number(b) {
            if case .int(let i) = x, case .int(let j) = y { return i < j }
            return x.asDouble < y.asDouble
        }
        switch (a, b) {
        case (.string(let x), .string(let y)):
            return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars)
        case (.array(let x), .array(let y)):
            for (p, q) in zip(x, y) where !pyEquals(p, q) { return try pyLess(p, q, op: op, at: position) }
            return x.count < y.count
        case (.undefined(let u), _), (_, .undefined(let u)):
            throw undefinedError(u, at: position)
        default:
            throw ChatTemplateError(
                .type, "'\(op)' not supported between instances of '\(typeName(a))' and '\(typeName(b))'", at: position)
        }
    }

    func contains(_ container: TemplateValue, _ element: TemplateValue, at position: SourcePosition?) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let needle) = element else {
                throw ChatTemplateError(
                    .type, "'in <string>' requires string as left operand, not \(typeName(element))", at: position)
            }
            return needle.isEmpty || s.contains(needle)
        case .array(let items): return items.contains { pyEquals($0, element) }
        case .dictionary(let dict):
            guard case .string(let key) = element else { return false }
            return dict[key] != nil
        case .undefined: return false
        default:
            throw ChatTemplateError(.type, "argument of type '\(typeName(container))' is not iterable", at: position)
        }
    }

    private func compare(_ op: CompareOperator, _ a: TemplateValue, _ b: TemplateValue, at position: SourcePosition)
        throws -> Bool
    {
        switch op {
        case .equal: return pyEquals(a, b)
        case .notEqual: return !pyEquals(a, b)
        case .less: return try pyLess(a, b, op: "<", at: position)
        case .greater: return try pyLess(b, a, op: ">", at: position)
        case .lessOrEqual: return try !pyLess(b, a, op: "<=", at: position)
        case .greaterOrEqual: return try !pyLess(a, b, op: ">=", at: position)
        case .in: return try contains(b, a, at: position)
        case .notIn: return try !contains(b, a, at: position)
        }
    }

    private func negate(_ value: TemplateValue, at position: SourcePosition) throws -> TemplateValue {
        switch value {
        case .int(let i):
            guard i != Int.min else { throw ChatTemplateError(.value, "integer overflow", at: position) }
            return .int(-i)
        case .bool(let b): return .int(b ? -1 : 0)
        case .double(let d): return .double(-d)
        case .undefined(let u): throw undefinedError(u, at: position)
        default: throw ChatTemplateError(.type, "bad operand type for unary -: '\(typeName(value))'", at: position)
        }
    }

    private func overflow(_ position: SourcePosition) -> ChatTemplateError {
        ChatTemplateError(.value, "integer overflow (values beyond 64 bits are not supported)", at: position)
    }

    private func repeated(_ value: TemplateValue, _ count: Int, at position: SourcePosition) throws -> TemplateValue {
        let n = max(0, count)
        switch value {
        case .string(let s):
            guard s.utf8.count.multipliedReportingOverflow(by: n).partialValue <= Self.maximumOutputLength,
                !s.utf8.count.multipliedReportingOverflow(by: n).overflow
            else {
                throw ChatTemplateError(.limit, "string repetition too large", at: position)
            }
            return .string(String(repeating: s, count: n))
        case .array(let items):
            guard items.count.multipliedReportingOverflow(by: n).partialValue <= 1_000_000,
                !items.count.multipliedReportingOverflow(by: n).overflow
            else {
                throw ChatTemplateError(.limit, "list repetition too large", at: position)
            }
            return .array(Array([[TemplateValue]](repeating: items, count: n).joined()))
        default:
            throw ChatTemplateError(.type, "can't multiply sequence by non-int", at: position)
        }
    }

    func binary(_ op: BinaryOperator, _ a: TemplateValue, _ b: TemplateValue, at position: SourcePosition) throws
        -> TemplateValue
    {
        if case .undefined(let u) = a { throw undefinedError(u, at: position) }
        if case .undefined(let u) = b { throw undefinedError(u, at: position) }
        if let x = number(a), let y = number(b) {
            return try arithmetic(op, x, y, at: position)
        }
        switch (op, a, b) {
        case (.add, .string(let x), .string(let y)): return .string(x + y)
        case (.add, .array(let x), .array(let y)): return .array(x + y)
        case (.add, .string, _):
            throw ChatTemplateError(.type, "can only concatenate str (not \"\(typeName(b))\") to str", at: position)
        case (.add, .array, _):
            throw ChatTemplateError(.type, "can only concatenate list (not \"\(typeName(b))\") to list", at: position)
        case (.multiply, .string, _), (.multiply, .array, _):
            guard case .int(let n)? = number(b) else { break }
            return try repeated(a, n, at: position)
        case (.multiply, _, .string), (.multiply, _, .array):
            guard case .int(let n)? = number(a) else { break }
            return try repeated(b, n, at: position)
        case (.modulo, .string(let format), _):
            return .string(try percentFormat(format, b, at: position))
        default:
            break
        }
        throw ChatTemplateError(
            .type, "unsupported operand type(s) for \(op.rawValue): '\(typeName(a))' and '\(typeName(b))'", at: position
        )
    }

    private func arithmetic(_ op: BinaryOperator, _ x: Number, _ y: Number, at position: SourcePosition) throws
        -> TemplateValue
    {
        if case .int(let i) = x, case .int(let j) = y {
            switch op {
            case .add:
                let (r, o) = i.addingReportingOverflow(j)
                if o { throw overflow(position) }
                return .int(r)
            case .subtract:
                let (r, o) = i.subtractingReportingOverflow(j)
                if o { throw overflow(position) }
                return .int(r)
            case .multiply:
                let (r, o) = i.multipliedReportingOverflow(by: j)
                if o { throw overflow(position) }
                return .int(r)
            case .divide:
                guard j != 0 else { throw ChatTemplateError(.value, "division by zero", at: position) }
                return .double(Double(i) / Double(j))
            case .floorDivide, .modulo:
                guard j != 0 else {
                    throw ChatTemplateError(.value, "integer division or modulo by zero", at: position)
                }
                guard !(i == Int.min && j == -1) else { throw overflow(position) }
                var q = i / j
                var r = i % j
                // Python rounds the quotient toward negative infinity; the remainder takes the divisor's sign.
                if r != 0 && ((r < 0) != (j < 0)) {
                    q -= 1
                    r += j
                }
                return .int(op == .floorDivide ? q : r)
            case .power:
                if j < 0 { return .double(pow(Double(i), Double(j))) }
                var result = 1
                var base = i
                var exponent = j
                while exponent > 0 {
                    if exponent & 1 == 1 {
                        let (r, o) = result.multipliedReportingOverflow(by: base)
                        if o { throw overflow(position) }
                        result = r
                    }
                    exponent >>= 1
                    if exponent > 0 {
                        let (b, o) = base.multipliedReportingOverflow(by: base)
                        if o { throw overflow(position) }
                        base = b
                    }
                }
                return .int(result)
            }
        }
        let p = x.asDouble
        let q = y.asDouble
        switch op {
        case .add: return .double(p + q)
        case .subtract: return .double(p - q)
        case .multiply: return .double(p * q)
        case .divide:
            guard q != 0 else { throw ChatTemplateError(.value, "float division by zero", at: position) }
            return .double(p / q)
        case .floorDivide:
            guard q != 0 else { throw ChatTemplateError(.value, "float floor division by zero", at: position) }
            return .double((p / q).rounded(.down))
        case .modulo:
            guard q != 0 else { throw ChatTemplateError(.value, "float modulo", at: position) }
            var r = fmod(p, q)
            if r != 0 && ((r < 0) != (q < 0)) { r += q }
            return .double(r)
        case .power:
            if p == 0 && q < 0 {
                throw ChatTemplateError(.value, "0.0 cannot be raised to a negative power", at: position)
            }
            return .double(pow(p, q))
        }
    }

    /// Python's `str % args` for the conversions templates use: `%s %r %d %i %f %%`.
    private func percentFormat(_ format: String, _ arguments: TemplateValue, at position: SourcePosition) throws
        -> String
    {
        var values: [TemplateValue]
        if case .array(let items) = arguments { values = items } else { values = [arguments] }
        var out = ""
        var scalars = Array(format.unicodeScalars)[...]
        while let c = scalars.popFirst() {
            guard c == "%" else {
                out.unicodeScalars.append(c)
                continue
            }
            var spec = ""
            while let s = scalars.first, "0123456789.-+ #".unicodeScalars.contains(s) {
                spec.unicodeScalars.append(s)
                scalars.removeFirst()
            }
            guard let conversion = scalars.popFirst() else {
                throw ChatTemplateError(.value, "incomplete format", at: position)
            }
            if conversion == "%" {
                out += "%"
                continue
            }
            guard !values.isEmpty else {
                throw ChatTemplateError(.type, "not enough arguments for format string", at: position)
            }
            let value = values.removeFirst()
            switch conversion {
            case "s": out += str(value)
            case "r": out += repr(value)
            case "d", "i":
                guard let n = number(value) else {
                    throw ChatTemplateError(.type, "%d format: a real number is required", at: position)
                }
                switch n {
                case .int(let i): out += String(i)
                case .double(let d): out += String(Int(d.rounded(.towardZero)))
                }
            case "f", "F":
                guard let n = number(value) else {
                    throw ChatTemplateError(.type, "must be real number, not \(typeName(value))", at: position)
                }
                let precision = spec.split(separator: ".").last.flatMap { spec.contains(".") ? Int($0) : nil } ?? 6
                out += String(format: "%.\(precision)f", n.asDouble)
            default:
                throw ChatTemplateError(.unsupported, "format conversion '%\(conversion)'", at: position)
            }
        }
        if !values.isEmpty, case .array = arguments {
            throw ChatTemplateError(.type, "not all arguments converted during string formatting", at: position)
        }
        return out
    }

    /// What `for` iterates: list items, dict keys, string characters (code points).
    func iterate(_ value: TemplateValue, at position: SourcePosition?) throws -> [TemplateValue] {
        switch value {
        case .array(let items): return items
        case .dictionary(let dict): return dict.keys.map { .string($0) }
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        default: throw ChatTemplateError(.type, "'\(typeName(value))' object is not iterable", at: position)
        }
    }

    // MARK: - Attribute and item access

    /// `obj.name`: Jinja2 tries the Python attribute (a method) first, then the item.
    func attribute(of value: TemplateValue, _ name: String, at position: SourcePosition?) throws -> TemplateValue {
        switch value {
        case .undefined(let u):
            throw undefinedError(u, at: position)
        case .dictionary(let dict):
            if ValueMethods.dictionary.contains(name) {
                return .callable(TemplateCallable(kind: .method(receiver: value, name: name)))
            }
            if ValueMethods.unsafe.contains(name) {
                return .undefined(TemplateUndefined(hint: "access to '\(name)' is unsafe"))
            }
            return dict[name] ?? .undefined(TemplateUndefined(hint: "'dict object' has no attribute '\(name)'"))
        case .string:
            if ValueMethods.string.contains(name) {
                return .callable(TemplateCallable(kind: .method(receiver: value, name: name)))
            }
        case .array:
            if ValueMethods.list.contains(name) {
                return .callable(TemplateCallable(kind: .method(receiver: value, name: name)))
            }
        case .namespace(let ns):
            if let found = namespaces[ns.id][name] { return found }
        case .int, .bool:
            if name == "real" || name == "numerator" { return value }
            if name == "imag" { return .int(0) }
            if name == "denominator" { return .int(1) }
        case .double:
            if name == "real" { return value }
            if name == "imag" { return .double(0) }
        default:
            break
        }
        return .undefined(TemplateUndefined(hint: "'\(typeName(value)) object' has no attribute '\(name)'"))
    }

    /// `obj[key]`: item first, then (for string keys) the attribute; misses are undefined, not errors.
    func item(of value: TemplateValue, _ key: TemplateValue, at position: SourcePosition?) throws -> TemplateValue {
        switch (value, key) {
        case (.undefined(let u), _):
            throw undefinedError(u, at: position)
        case (.dictionary(let dict), .string(let name)):
            if let found = dict[name] { return found }
            return try attribute(of: value, name, at: position)
        case (.array(let items), _):
            if let index = integerIndex(key) {
                let resolved = index < 0 ? index + items.count : index
                if resolved >= 0 && resolved < items.count { return items[resolved] }
                return .undefined(TemplateUndefined(hint: "list object has no element \(index)"))
            }
        case (.string(let s), _):
            if let index = integerIndex(key) {
                let scalars = s.unicodeScalars
                let count = scalars.count
                let resolved = index < 0 ? index + count : index
                if resolved >= 0 && resolved < count {
                    return .string(String(scalars[scalars.index(scalars.startIndex, offsetBy: resolved)]))
                }
                return .undefined(TemplateUndefined(hint: "str object has no element \(index)"))
            }
        default:
            break
        }
        if case .string(let name) = key { return try attribute(of: value, name, at: position) }
        return .undefined(TemplateUndefined(hint: "'\(typeName(value)) object' has no element \(repr(key))"))
    }

    private func integerIndex(_ key: TemplateValue) -> Int? {
        switch key {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// Python's slice semantics (`slice.indices`) over list items or string code points.
    func slice(
        _ value: TemplateValue, start: TemplateValue?, stop: TemplateValue?, step: TemplateValue?,
        at position: SourcePosition
    ) throws -> TemplateValue {
        func bound(_ v: TemplateValue?) throws -> Int? {
            guard let v else { return nil }
            if case .none = v { return nil }
            guard let i = integerIndex(v) else {
                throw ChatTemplateError(.type, "slice indices must be integers or None", at: position)
            }
            return i
        }
        let stepValue = try bound(step) ?? 1
        guard stepValue != 0 else { throw ChatTemplateError(.value, "slice step cannot be zero", at: position) }
        func indices(_ count: Int) throws -> [Int] {
            let (lower, upper) = stepValue > 0 ? (0, count) : (-1, count - 1)
            func clamp(_ v: Int?, _ fallback: Int) -> Int {
                guard var v else { return fallback }
                if v < 0 {
                    v += count
                    return max(v, lower)
                }
                return min(v, upper)
            }
            let first = clamp(try bound(start), stepValue > 0 ? lower : upper)
            let last = clamp(try bound(stop), stepValue > 0 ? upper : lower)
            return Array(stride(from: first, to: last, by: stepValue))
        }
        switch value {
        case .array(let items):
            return .array(try indices(items.count).map { items[$0] })
        case .string(let s):
            let scalars = Array(s.unicodeScalars)
            var out = String.UnicodeScalarView()
            for i in try indices(scalars.count) { out.append(scalars[i]) }
            return .string(String(out))
        case .undefined(let u):
            throw undefinedError(u, at: position)
        default:
            return .undefined(TemplateUndefined(hint: "'\(typeName(value))' object is not subscriptable"))
        }
    }
}
