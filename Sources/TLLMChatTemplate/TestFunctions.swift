/// Jinja2's tests (`x is defined`, `x is divisibleby 3`, `x is not none`).
enum TestFunctions {
    static let names: Set<String> = [
        "defined", "undefined", "none", "boolean", "true", "false", "integer", "float", "number", "string", "mapping",
        "iterable", "sequence", "callable", "odd", "even", "divisibleby", "lower", "upper", "sameas", "escaped", "in",
        "filter", "test", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan",
        ">", "ge", ">=",
    ]
}

extension Interpreter {
    func applyTest(_ name: String, to value: TemplateValue, _ args: CallArguments, at position: SourcePosition?) throws
        -> Bool
    {
        func argument() throws -> TemplateValue {
            guard let other = args.positional.first ?? args.keyword.first?.value else {
                throw ChatTemplateError(.type, "test '\(name)' needs an argument", at: position)
            }
            return other
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none":
            if case .none = value { return true }
            return false
        case "boolean":
            if case .bool = value { return true }
            return false
        case "true":
            if case .bool(true) = value { return true }
            return false
        case "false":
            if case .bool(false) = value { return true }
            return false
        case "integer":
            if case .int = value { return true }
            return false
        case "float":
            if case .double = value { return true }
            return false
        case "number":
            switch value {
            case .int, .double, .bool: return true
            default: return false
            }
        case "string":
            if case .string = value { return true }
            return false
        case "mapping":
            if case .dictionary = value { return true }
            return false
        case "iterable", "sequence":
            // Jinja2's Undefined is iterable (empty) and has __len__/__getitem__, so it passes both.
            switch value {
            case .string, .array, .dictionary, .undefined: return true
            default: return false
            }
        case "callable":
            switch value {
            case .callable, .undefined: return true
            default: return false
            }
        case "odd", "even":
            let remainder = try binary(.modulo, value, .int(2), at: position ?? SourcePosition(line: 0, column: 0))
            return pyEquals(remainder, .int(name == "odd" ? 1 : 0))
        case "divisibleby":
            let remainder = try binary(
                .modulo, value, try argument(), at: position ?? SourcePosition(line: 0, column: 0))
            return pyEquals(remainder, .int(0))
        case "lower":
            return PythonString.isLower(str(value))
        case "upper":
            return PythonString.isUpper(str(value))
        case "escaped":
            return false
        case "sameas":
            // Python identity; only singletons (None, True, False) are reliably identical.
            let other = try argument()
            switch (value, other) {
            case (.none, .none): return true
            case (.bool(let a), .bool(let b)): return a == b
            case (.int(let a), .int(let b)): return a == b && (-5...256).contains(a)
            case (.namespace(let a), .namespace(let b)): return a == b
            default: return false
            }
        case "in":
            return try contains(try argument(), value, at: position)
        case "filter":
            return Filters.isKnown(str(value))
        case "test":
            return TestFunctions.names.contains(str(value))
        case "eq", "equalto", "==":
            return pyEquals(value, try argument())
        case "ne", "!=":
            return !pyEquals(value, try argument())
        case "lt", "lessthan", "<":
            return try pyLess(value, try argument(), op: "<", at: position)
        case "le", "<=":
            return try !pyLess(try argument(), value, op: "<=", at: position)
        case "gt", "greaterthan", ">":
            return try pyLess(try argument(), value, op: ">", at: position)
        case "ge", ">=":
            return try !pyLess(value, try argument(), op: ">=", at: position)
        default:
            throw ChatTemplateError(.unsupported, "no test named '\(name)'", at: position)
        }
    }
}
