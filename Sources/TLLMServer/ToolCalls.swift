import Foundation
import TLLMChatTemplate
import TLLMGrammar

/// The functions a chat request offers and how it wants them used: `tools`, `tool_choice`,
/// `parallel_tool_calls` (docs/server.md, "Tool calls").
struct ToolOptions: Sendable {
    /// One function, as the grammar and the parser need it.
    struct Function: Sendable {
        var name: String
        /// Its arguments' JSON Schema (any object when the tool has none).
        var parameters: TemplateValue
    }

    /// `tool_choice`.
    enum Choice: Sendable, Equatable {
        /// The model decides: calls it writes are parsed out of its answer.
        case auto
        /// At least one call, written under a grammar.
        case required
        /// One call of this function, written under a grammar.
        case named(String)
    }

    /// The tools as the client sent them, in its key order (what the chat template sees).
    var tools: [TemplateValue]
    var functions: [Function]
    var choice: Choice
    /// `parallel_tool_calls` (default true): several calls in one answer.
    var parallel: Bool

    /// OpenAI's limit on tools per request.
    static let maximumTools = 128
    /// Calls one forced answer may hold at most with `parallel_tool_calls`.
    static let maximumParallelCalls = 8

    /// Whether the function name is one OpenAI accepts: 1–64 of `a-z A-Z 0-9 _ -`.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == 0x5F || byte == 0x2D
            }
    }

    /// The tool fields of a chat request, read from the raw `body` (so that the template and the
    /// grammar see the client's key order); nil when it offers none or `tool_choice` is "none".
    /// A 400 naming the field for anything malformed.
    static func read(body: Data, shape: ToolFieldsShape) throws(APIError) -> ToolOptions? {
        let choice: Choice
        switch shape.toolChoice {
        case nil, .auto?: choice = .auto
        case .none?: return nil
        case .required?: choice = .required
        case .named(let name)?: choice = .named(name)
        }
        guard let count = shape.toolCount, count > 0 else {
            if shape.toolChoice != nil && shape.toolChoice != ToolChoiceShape.none {
                throw .invalid("'tool_choice' needs 'tools'.", param: "tool_choice", code: "invalid_value")
            }
            return nil
        }
        guard count <= maximumTools else {
            throw .invalid(
                "At most \(maximumTools) tools are allowed (got \(count)).", param: "tools", code: "invalid_value")
        }
        guard case .dictionary(let root)? = try? TemplateValue(jsonData: body), case .array(let tools)? = root["tools"]
        else { throw .invalid("'tools' must be an array of tools.", param: "tools", code: "invalid_type") }
        var functions: [Function] = []
        var names: Set<String> = []
        for (index, tool) in tools.enumerated() {
            let param = "tools[\(index)]"
            guard case .dictionary(let entry) = tool, entry["type"] == .string("function"),
                case .dictionary(let function)? = entry["function"], case .string(let name)? = function["name"]
            else {
                throw .invalid(
                    "Invalid '\(param)': expected {\"type\": \"function\", \"function\": {\"name\": …}}.",
                    param: param, code: "invalid_value")
            }
            guard isValidName(name) else {
                throw .invalid(
                    "Invalid '\(param).function.name': '\(name)'; use 1 to 64 letters, digits, '_' or '-'.",
                    param: "\(param).function.name", code: "invalid_value")
            }
            guard names.insert(name).inserted else {
                throw .invalid(
                    "Two tools are named '\(name)'.", param: "\(param).function.name", code: "invalid_value")
            }
            var parameters: TemplateValue = .dictionary(["type": "object"])
            if let given = function["parameters"], given != .none {
                guard case .dictionary = given else {
                    throw .invalid(
                        "'\(param).function.parameters' must be a JSON Schema object.",
                        param: "\(param).function.parameters", code: "invalid_type")
                }
                parameters = given
            }
            functions.append(Function(name: name, parameters: parameters))
        }
        if case .named(let name) = choice, !names.contains(name) {
            throw .invalid(
                "'tool_choice' names '\(name)', which is not among the tools.", param: "tool_choice.function.name",
                code: "invalid_value")
        }
        return ToolOptions(
            tools: tools, functions: functions, choice: choice, parallel: shape.parallelToolCalls ?? true)
    }

    /// The grammar a forced choice (`required`, a named function) generates under; nil for `auto`.
    /// A 400 naming the tool's schema keyword the grammar cannot enforce.
    func grammar(syntax: ToolCallSyntax) throws(APIError) -> Grammar? {
        let offered: [(index: Int, function: Function)]
        switch choice {
        case .auto: return nil
        case .required: offered = Array(functions.enumerated().map { ($0.offset, $0.element) })
        case .named(let name):
            offered = functions.enumerated().filter { $0.element.name == name }.map { ($0.offset, $0.element) }
        }
        do {
            // Compiled one by one first, so that an error names its tool.
            for (index, function) in offered {
                do {
                    _ = try Grammar(.jsonSchema(function.parameters))
                } catch {
                    let param = ["tools[\(index)].function.parameters", error.path].filter { !$0.isEmpty }
                        .joined(separator: ".")
                    throw APIError.invalid(
                        "Unsupported JSON schema at '\(param)'\(error.keyword.map { " ('\($0)')" } ?? ""): "
                            + error.message, param: param, code: "unsupported_schema")
                }
            }
            let one = GrammarExpression.choice(
                offered.map { syntax.call(name: $0.function.name, arguments: .jsonSchema($0.function.parameters)) })
            let maximum = parallel && choice == .required ? Self.maximumParallelCalls : 1
            return try Grammar(.repeat(one, min: 1, max: maximum, separator: syntax.callSeparator))
        } catch let error as APIError {
            throw error
        } catch {
            throw .invalid(
                "The tools' schemas cannot be combined: \(error)", param: "tools", code: "unsupported_schema")
        }
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls` as the decoder checks them (their values are
/// read again from the raw body by ``ToolOptions/read(body:shape:)``).
struct ToolFieldsShape: Decodable {
    var toolCount: Int?
    var toolChoice: ToolChoiceShape?
    var parallelToolCalls: Bool?

    enum CodingKeys: String, CodingKey {
        case tools
        case toolChoice = "tool_choice"
        case parallelToolCalls = "parallel_tool_calls"
    }

    private struct ToolShape: Decodable {
        var type: String
        var function: FunctionShape
    }

    private struct FunctionShape: Decodable {
        var name: String
        var description: String?
        var parameters: TemplateKwargsShape?
        var strict: Bool?
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        toolCount = try container.decodeIfPresent([ToolShape].self, forKey: .tools)?.count
        toolChoice = try container.decodeIfPresent(ToolChoiceShape.self, forKey: .toolChoice)
        parallelToolCalls = try container.decodeIfPresent(Bool.self, forKey: .parallelToolCalls)
    }
}

/// `tool_choice`: "none", "auto", "required", or `{"type": "function", "function": {"name": …}}`.
enum ToolChoiceShape: Decodable, Equatable {
    case none, auto, required
    case named(String)

    private struct Named: Decodable {
        struct Function: Decodable { var name: String }
        var type: String
        var function: Function
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            switch text {
            case "none": self = .none
            case "auto": self = .auto
            case "required": self = .required
            default:
                throw DecodingError.dataCorrupted(
                    .init(
                        codingPath: decoder.codingPath,
                        debugDescription: "'\(text)' is not one of \"none\", \"auto\", \"required\" or a function"))
            }
            return
        }
        let named = try container.decode(Named.self)
        guard named.type == "function" else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "expected {\"type\": \"function\", …}"))
        }
        self = .named(named.function.name)
    }
}

/// One tool call the model wrote.
package struct ParsedToolCall: Sendable, Equatable {
    package var name: String
    /// The arguments as JSON text (an object).
    package var arguments: String
}

/// How a model writes tool calls, chosen from its chat template. To teach the server another
/// syntax: add a case, its rule in ``detect(templateSource:)``, its call shape in
/// ``call(name:arguments:)`` and ``callSeparator``, and how ``ToolCallStream`` finds its calls.
package enum ToolCallSyntax: Sendable, Equatable {
    /// `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, one block per call (Hermes:
    /// Qwen 2.5 and 3, SmolLM3, and our prompt for templates that know no tools).
    case hermes
    /// Llama 3.1 and later: the answer is `{"name": …, "parameters": {…}}` (after
    /// `<|python_tag|>` at times), several calls separated by `;`.
    case llamaJSON

    package static func detect(templateSource: String) -> ToolCallSyntax {
        if templateSource.contains("<tool_call>") { return .hermes }
        if templateSource.contains("<|python_tag|>") || templateSource.contains("\"parameters\": dictionary") {
            return .llamaJSON
        }
        return .hermes
    }

    /// One call of `name` with `arguments`, as the model writes it.
    func call(name: String, arguments: GrammarExpression) -> GrammarExpression {
        switch self {
        case .hermes:
            .sequence([
                .literal("<tool_call>\n{\"name\": \"\(name)\", \"arguments\": "), arguments,
                .literal("}\n</tool_call>"),
            ])
        case .llamaJSON:
            .sequence([.literal("{\"name\": \"\(name)\", \"parameters\": "), arguments, .literal("}")])
        }
    }

    /// Between two calls of one answer.
    var callSeparator: String {
        switch self {
        case .hermes: "\n"
        case .llamaJSON: "; "
        }
    }

    /// A call as text, for history given to a template that knows no tools.
    func render(_ call: ParsedToolCall) -> String {
        switch self {
        case .hermes: "<tool_call>\n{\"name\": \"\(call.name)\", \"arguments\": \(call.arguments)}\n</tool_call>"
        case .llamaJSON: "{\"name\": \"\(call.name)\", \"parameters\": \(call.arguments)}"
        }
    }

    /// The call in a block of the model's JSON: `{"name", "arguments" | "parameters"}` naming one
    /// of `functions`; nil for anything else (which then stays text).
    func call(fromJSON text: Substring, functions: Set<String>) -> ParsedToolCall? {
        guard case .dictionary(let object)? = try? TemplateValue(jsonString: String(text)),
            case .string(let name)? = object["name"], functions.contains(name)
        else { return nil }
        var arguments = object["arguments"] ?? object["parameters"] ?? .dictionary([:])
        // Some models write the arguments as a JSON string.
        if case .string(let encoded) = arguments, let decoded = try? TemplateValue(jsonString: encoded) {
            arguments = decoded
        }
        guard case .dictionary = arguments else { return nil }
        return ParsedToolCall(name: name, arguments: arguments.jsonText)
    }
}

/// Splits a streamed answer into text and tool calls: text goes out as it comes, except what
/// may be the start of a call, which waits until the call is whole (or proves to be text).
package struct ToolCallStream: Sendable {
    let syntax: ToolCallSyntax
    let functions: Set<String>
    private var held = ""
    private var inCall = false
    /// Whether a call has gone out (whitespace after it is not content).
    private var hasCalled = false
    /// Llama JSON: whether the answer is known to be text (it did not open with a call).
    private var plainText = false

    private static let open = "<tool_call>"
    private static let close = "</tool_call>"
    private static let pythonTag = "<|python_tag|>"

    package init(syntax: ToolCallSyntax, functions: [String]) {
        self.syntax = syntax
        self.functions = Set(functions)
    }

    /// The text and the calls that can be told apart now.
    package mutating func append(_ text: String) -> (content: String, calls: [ParsedToolCall]) {
        held += text
        switch syntax {
        case .hermes: return hermes(final: false)
        case .llamaJSON:
            if plainText { return (take(held.endIndex), []) }
            let start = held.drop(while: \.isWhitespace)
            if start.isEmpty || Self.pythonTag.hasPrefix(start) || start.hasPrefix(Self.pythonTag)
                || start.hasPrefix("{")
            {
                return ("", [])  // may be a call: the whole answer waits
            }
            plainText = true
            return (take(held.endIndex), [])
        }
    }

    /// What was held back, at the end: the last calls, or text.
    package mutating func finish() -> (content: String, calls: [ParsedToolCall]) {
        switch syntax {
        case .hermes: return hermes(final: true)
        case .llamaJSON:
            if plainText { return (take(held.endIndex), []) }
            var body = held.drop(while: \.isWhitespace)
            if body.hasPrefix(Self.pythonTag) { body = body.dropFirst(Self.pythonTag.count) }
            var calls: [ParsedToolCall] = []
            for piece in Self.topLevelObjects(body, separator: ";") {
                guard let call = syntax.call(fromJSON: piece, functions: functions) else {
                    return (take(held.endIndex), [])  // not all calls: the answer is text
                }
                calls.append(call)
            }
            if calls.isEmpty { return (take(held.endIndex), []) }
            held = ""
            return ("", calls)
        }
    }

    private mutating func take(_ end: String.Index) -> String {
        let text = String(held[..<end])
        held.removeSubrange(..<end)
        return text
    }

    private mutating func hermes(final: Bool) -> (content: String, calls: [ParsedToolCall]) {
        var content = ""
        var calls: [ParsedToolCall] = []
        // Whitespace between and after calls is not content.
        func add<Text: StringProtocol>(_ segment: Text) {
            if hasCalled || !calls.isEmpty, segment.allSatisfy(\.isWhitespace) { return }
            content += segment
        }
        while true {
            if inCall {
                if let end = held.range(of: Self.close) {
                    let block = held[..<end.lowerBound]
                    if let call = syntax.call(fromJSON: block.trimmed, functions: functions) {
                        calls.append(call)
                    } else {
                        add(Self.open + held[..<end.upperBound])
                    }
                    held.removeSubrange(..<end.upperBound)
                    inCall = false
                    continue
                }
                if final {
                    // Cut short (max_tokens): a whole JSON call still counts.
                    if let call = syntax.call(fromJSON: held.trimmed, functions: functions) {
                        calls.append(call)
                    } else {
                        add(Self.open + held)
                    }
                    held = ""
                    inCall = false
                }
                break
            }
            if let start = held.range(of: Self.open) {
                add(held[..<start.lowerBound])
                held.removeSubrange(..<start.upperBound)
                inCall = true
                continue
            }
            // Keep back an end of the text that may begin the open tag.
            var keep = final ? 0 : min(held.count, Self.open.count - 1)
            while keep > 0 && !Self.open.hasPrefix(held.suffix(keep)) { keep -= 1 }
            add(take(held.index(held.endIndex, offsetBy: -keep)))
            break
        }
        if !calls.isEmpty { hasCalled = true }
        return (content, calls)
    }

    /// The JSON objects of `text` at the top level, separated by `separator` (and whitespace);
    /// empty when something else is there.
    static func topLevelObjects(_ text: Substring, separator: Character) -> [Substring] {
        var objects: [Substring] = []
        var index = text.startIndex
        while true {
            while index < text.endIndex && (text[index].isWhitespace || text[index] == separator) {
                index = text.index(after: index)
            }
            guard index < text.endIndex else { return objects }
            guard text[index] == "{", let end = objectEnd(text, from: index) else { return [] }
            objects.append(text[index..<end])
            index = end
        }
    }

    /// The index just past the JSON object that starts at `start` (braces counted outside strings).
    private static func objectEnd(_ text: Substring, from start: Substring.Index) -> Substring.Index? {
        var depth = 0
        var inString = false
        var escaped = false
        var index = start
        while index < text.endIndex {
            let character = text[index]
            if inString {
                if escaped {
                    escaped = false
                } else if character == "\\" {
                    escaped = true
                } else if character == "\"" {
                    inString = false
                }
            } else if character == "\"" {
                inString = true
            } else if character == "{" || character == "[" {
                depth += 1
            } else if character == "}" || character == "]" {
                depth -= 1
                if depth == 0 { return text.index(after: index) }
            }
            index = text.index(after: index)
        }
        return nil
    }
}

extension StringProtocol {
    fileprivate var trimmed: Substring { Substring(trimmingCharacters(in: .whitespacesAndNewlines)) }
}

/// The system prompt that offers tools to a model whose chat template does not (SmolLM2's): the
/// Hermes format, which ``ToolCallStream`` then reads.
enum ToolPrompt {
    static func describe(_ tools: [TemplateValue]) -> String {
        var text = """
            You may call one or more functions to assist with the user query. The functions are \
            described by JSON schemas within <tools></tools>:
            <tools>

            """
        for tool in tools { text += tool.jsonText + "\n" }
        text += """
            </tools>
            To call a function, answer with a JSON object naming it and giving its arguments, within \
            <tool_call></tool_call> tags, one block per call:
            <tool_call>
            {"name": <function-name>, "arguments": <args-json-object>}
            </tool_call>
            """
        return text
    }
}
