import Foundation

/// A value a chat template reads or computes: the Python objects Jinja2 sees, as a Swift enum.
///
/// Build contexts from Swift literals (`["role": "user", "content": "Hi"]`), from JSON text with
/// ``init(jsonString:)`` (keeps key order, which `tojson` output depends on) or from a
/// `JSONSerialization` object with ``init(jsonObject:)``.
///
/// Swift's `==` here is structural (`.int(1) != .double(1)`); templates compare with Python's rules.
public enum TemplateValue: Sendable, Equatable {
    /// A Python `str`.
    case string(String)
    /// A Python `int` (64-bit here; arithmetic that overflows is an error, not a wrap).
    case int(Int)
    /// A Python `float`.
    case double(Double)
    /// A Python `bool`.
    case bool(Bool)
    /// Python `None` (JSON `null`).
    case none
    /// A Python `list` (tuples are lists too).
    case array([TemplateValue])
    /// A Python `dict` with string keys, in insertion order.
    case dictionary(TemplateDictionary)
    /// Jinja2's `Undefined`: a missing variable, key or attribute.
    case undefined(TemplateUndefined)
    /// A `namespace()` object, mutable through `{% set ns.attr = … %}` during one render.
    case namespace(TemplateNamespace)
    /// A macro, a global function or a bound method (`'a'.upper`); only a render creates these.
    case callable(TemplateCallable)

    /// A fresh undefined value.
    public static var undefined: TemplateValue { .undefined(TemplateUndefined(hint: nil)) }

    /// Whether this is ``undefined(_:)``.
    public var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    /// The string payload, if this is a string.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }
}

/// Why a value is undefined; used only for error messages (`'foo' is undefined`).
public struct TemplateUndefined: Sendable, Equatable {
    /// The message Jinja2 would give when the value is used, or nil for a generic one.
    public var hint: String?

    /// Creates an undefined marker with an optional hint.
    public init(hint: String?) { self.hint = hint }

    /// All undefined values are equal, as in Jinja2.
    public static func == (lhs: TemplateUndefined, rhs: TemplateUndefined) -> Bool { true }
}

/// A handle on a `namespace()` created during a render; its attributes live in that render.
public struct TemplateNamespace: Sendable, Equatable {
    let id: Int
}

/// A function value: a macro, a global function or a bound method of a value.
public struct TemplateCallable: Sendable, Equatable {
    indirect enum Kind: Sendable, Equatable {
        case global(String)
        case method(receiver: TemplateValue, name: String)
        case macro(id: Int, name: String)
        case loopCycle(index0: Int)
    }
    let kind: Kind
}

/// An insertion-ordered dictionary with string keys: Python's `dict` as JSON objects use it.
public struct TemplateDictionary: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    /// The keys, in insertion order.
    public private(set) var keys: [String] = []
    private var storage: [String: TemplateValue] = [:]

    /// An empty dictionary.
    public init() {}

    /// A dictionary from ordered pairs; a repeated key keeps its first position and its last value.
    public init(_ pairs: [(String, TemplateValue)]) {
        keys.reserveCapacity(pairs.count)
        for (key, value) in pairs { self[key] = value }
    }

    /// A dictionary from a literal, keeping the literal's order.
    public init(dictionaryLiteral elements: (String, TemplateValue)...) {
        self.init(elements)
    }

    /// The value for a key; setting nil removes the key.
    public subscript(key: String) -> TemplateValue? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    /// The number of entries.
    public var count: Int { keys.count }

    /// Whether there are no entries.
    public var isEmpty: Bool { keys.isEmpty }

    /// The entries in insertion order.
    public var entries: [(key: String, value: TemplateValue)] {
        keys.map { ($0, storage[$0] ?? .none) }
    }

    /// The values in insertion order.
    public var values: [TemplateValue] { keys.map { storage[$0] ?? .none } }

    /// Python's dict equality ignores order.
    public static func == (lhs: TemplateDictionary, rhs: TemplateDictionary) -> Bool {
        lhs.storage == rhs.storage
    }
}

extension TemplateValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral,
    ExpressibleByNilLiteral
{
    /// A string literal.
    public init(stringLiteral value: String) { self = .string(value) }
    /// An integer literal.
    public init(integerLiteral value: Int) { self = .int(value) }
    /// A float literal.
    public init(floatLiteral value: Double) { self = .double(value) }
    /// A boolean literal.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    /// An array literal.
    public init(arrayLiteral elements: TemplateValue...) { self = .array(elements) }
    /// A dictionary literal, in the literal's order.
    public init(dictionaryLiteral elements: (String, TemplateValue)...) {
        self = .dictionary(TemplateDictionary(elements))
    }
    /// `nil` is Python's `None`.
    public init(nilLiteral: ()) { self = .none }
}

extension TemplateValue {
    /// Converts a `JSONSerialization` object (or plain Swift values shaped like one).
    ///
    /// `NSDictionary` has no order, so object keys come out sorted; prefer ``init(jsonString:)``
    /// when the template prints JSON (tool schemas), so the output follows the client's key order.
    public init(jsonObject: Any) throws {
        self = try Self.convert(jsonObject, depth: 0)
    }

    private static let booleanNumberType = type(of: NSNumber(value: true))

    private static func convert(_ object: Any, depth: Int) throws -> TemplateValue {
        guard depth < JSONValueParser.maximumDepth else {
            throw ChatTemplateError(.invalidJSON, "value nested deeper than \(JSONValueParser.maximumDepth) levels")
        }
        switch object {
        case let value as TemplateValue: return value
        case let value as String: return .string(value)
        case is NSNull: return .none
        case let number as NSNumber:
            // Foundation boxes JSON booleans and numbers alike; the concrete class tells them apart.
            if type(of: number) == booleanNumberType { return .bool(number.boolValue) }
            switch String(cString: number.objCType) {
            case "d", "f": return .double(number.doubleValue)
            default: return .int(number.intValue)
            }
        case let value as Bool: return .bool(value)
        case let value as Int: return .int(value)
        case let value as Double: return .double(value)
        case let array as [Any]: return .array(try array.map { try convert($0, depth: depth + 1) })
        case let dictionary as [String: Any]:
            var result = TemplateDictionary()
            for key in dictionary.keys.sorted() {
                result[key] = try convert(dictionary[key] ?? NSNull(), depth: depth + 1)
            }
            return .dictionary(result)
        case Optional<Any>.none: return .none
        default:
            throw ChatTemplateError(.invalidJSON, "cannot convert a value of type \(type(of: object))")
        }
    }

    /// Parses JSON text, keeping object key order and telling `1` (int) from `1.0` (float) as Python does.
    public init(jsonString: String) throws {
        var parser = JSONValueParser(Array(jsonString.utf8))
        self = try parser.parseDocument()
    }

    /// Parses JSON bytes (UTF-8), like ``init(jsonString:)``.
    public init(jsonData: Data) throws {
        var parser = JSONValueParser(Array(jsonData))
        self = try parser.parseDocument()
    }
}

extension TemplateValue {
    /// The value as JSON text, on one line, the way `json.dumps(value, ensure_ascii=False)` writes
    /// it (tool-call arguments returned to clients, tool schemas described in a prompt).
    public var jsonText: String {
        (try? PythonText.jsonDumps(self, options: .init(), namespaces: { _ in nil })) ?? "null"
    }
}
