import Foundation
import HTTPTypes
import TLLMChatTemplate
import Testing

@testable import TLLMServer

/// Tool calls read out of answers, whole and streamed in pieces of every size, and the tool
/// fields of a request checked.
@Suite struct ToolCallTests {
    static let functions = ["get_weather", "add"]

    /// The answer fed in pieces of `size` characters, then finished.
    static func stream(_ text: String, _ syntax: ToolCallSyntax, size: Int) -> (String, [ParsedToolCall]) {
        var reader = ToolCallStream(syntax: syntax, functions: functions)
        var content = ""
        var calls: [ParsedToolCall] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            let (piece, found) = reader.append(String(rest.prefix(size)))
            content += piece
            calls += found
            rest = rest.dropFirst(size)
        }
        let (piece, found) = reader.finish()
        return (content + piece, calls + found)
    }

    static let weather = ParsedToolCall(name: "get_weather", arguments: #"{"city": "Paris", "unit": "celsius"}"#)
    static let add = ParsedToolCall(name: "add", arguments: #"{"a": 2, "b": 3}"#)

    static let cases: [(String, ToolCallSyntax, String, [ParsedToolCall])] = [
        ("plain text", .hermes, "It is sunny in Paris.", []),
        (
            "one hermes call", .hermes,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>",
            [weather]
        ),
        (
            "text then two calls", .hermes,
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\",\"unit\":\"celsius\"}}\n</tool_call>\n<tool_call>{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 2, \\\"b\\\": 3}\"}</tool_call>\n",
            [weather, add]
        ),
        (
            "unknown function stays text", .hermes, "<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>",
            []
        ),
        ("broken JSON stays text", .hermes, "<tool_call>{\"name\": \"add\", \"arguments\": {</tool_call>", []),
        ("a lone less-than sign", .hermes, "1 < 2 and <tool is not a tag", []),
        (
            "unclosed call at the end", .hermes,
            "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 3}}",
            [add]
        ),
        (
            "llama call", .llamaJSON,
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}",
            [weather]
        ),
        (
            "llama calls separated by semicolons", .llamaJSON,
            " {\"name\": \"add\", \"parameters\": {\"a\": 2, \"b\": 3}}; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}",
            [add, weather]
        ),
        ("llama text", .llamaJSON, "Paris is sunny; {\"name\": \"add\"}", []),
        ("llama JSON that is no call", .llamaJSON, "{\"answer\": 42}", []),
    ]

    @Test(arguments: cases.indices)
    func callsAreReadWholeAndInPieces(_ index: Int) {
        let (label, syntax, text, calls) = Self.cases[index]
        for size in [1, 2, 3, 5, 7, 11, text.count + 1] {
            let (content, found) = Self.stream(text, syntax, size: size)
            #expect(found == calls, "\(label), pieces of \(size)")
            if calls.isEmpty {
                #expect(content == text, "\(label): text without calls passes unchanged, pieces of \(size)")
            } else if label == "text then two calls" {
                #expect(content == "Let me check.\n", "\(label), pieces of \(size)")
            } else {
                #expect(content.isEmpty, "\(label), pieces of \(size)")
            }
        }
    }

    @Test func textStreamsBeforeACallIsWhole() {
        var reader = ToolCallStream(syntax: .hermes, functions: Self.functions)
        #expect(reader.append("Hello ").content == "Hello ")
        #expect(reader.append("there <tool").content == "there ", "a possible tag start waits")
        let opened = reader.append("_call>{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 3}}")
        #expect(opened.content.isEmpty && opened.calls.isEmpty, "an open call waits for its end")
        #expect(reader.append("</tool_call>").calls == [Self.add])
    }

    @Test func syntaxComesFromTheTemplate() {
        #expect(ToolCallSyntax.detect(templateSource: "{{ '<tool_call>' }}") == .hermes)
        #expect(ToolCallSyntax.detect(templateSource: "{{- '<|python_tag|>' }}") == .llamaJSON)
        #expect(ToolCallSyntax.detect(templateSource: "{{ messages }}") == .hermes, "our prompt's syntax")
    }

    static func options(_ json: String) throws(APIError) -> ToolOptions? {
        let data = Data(json.utf8)
        let request: ChatCompletionRequest = try decodeRequestBody(data)
        return try ToolOptions.read(body: data, shape: request.toolFields)
    }

    static let tool = #"{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}"#

    @Test(arguments: [
        (#"{"messages": [], "tools": [{"type": "function", "function": {"name": "a b"}}]}"#, "tools[0].function.name"),
        (#"{"messages": [], "tools": [\#(tool), \#(tool)]}"#, "tools[1].function.name"),
        (#"{"messages": [], "tools": [{"type": "retrieval", "function": {"name": "a"}}]}"#, "tools[0]"),
        (
            #"{"messages": [], "tools": [{"type": "function", "function": {"name": "a", "parameters": 5}}]}"#,
            "tools[0].function.parameters"
        ),
        (
            #"{"messages": [], "tools": [\#(tool)], "tool_choice": {"type": "function", "function": {"name": "x"}}}"#,
            "tool_choice.function.name"
        ),
        (#"{"messages": [], "tool_choice": "required"}"#, "tool_choice"),
        (#"{"messages": [], "tools": [\#(tool)], "tool_choice": "sometimes"}"#, "tool_choice"),
        (
            #"{"messages": [], "tools": [\#(Array(repeating: "{\"type\": \"function\", \"function\": {\"name\": \"f\"}}", count: 129).joined(separator: ","))]}"#,
            "tools"
        ),
    ])
    func badToolFieldsNameTheirParameter(_ json: String, _ param: String) {
        do {
            _ = try Self.options(json)
            Issue.record("accepted: \(json.prefix(200))")
        } catch {
            #expect(error.param == param, "\(error)")
            #expect(error.status == .badRequest)
        }
    }

    @Test func toolChoiceNoneAndNoToolsOfferNothing() throws {
        #expect(try Self.options(#"{"messages": [], "tools": [\#(Self.tool)], "tool_choice": "none"}"#) == nil)
        #expect(try Self.options(#"{"messages": [], "tools": []}"#) == nil)
        let named = try #require(
            try Self.options(
                #"{"messages": [], "tools": [\#(Self.tool)], "tool_choice": {"type": "function", "function": {"name": "add"}}, "parallel_tool_calls": false}"#
            ))
        #expect(named.choice == .named("add") && !named.parallel)
    }

    /// History with calls and results: a template that knows tools gets them as objects; one
    /// that does not gets them as text, and the offer as a system prompt.
    @Test func historyReachesTheTemplate() throws {
        let json = #"""
            {"messages": [{"role": "user", "content": "Weather?"},
              {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
              {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]}
            """#
        let request: ChatCompletionRequest = try decodeRequestBody(Data(json.utf8))
        let native = try request.templateMessages(tools: .template).messages
        guard case .dictionary(let assistant) = native[1], case .array(let calls)? = assistant["tool_calls"],
            case .dictionary(let call) = calls[0], case .dictionary(let function)? = call["function"]
        else {
            Issue.record("no tool_calls in \(native[1])")
            return
        }
        #expect(function["arguments"] == .dictionary(["city": "Paris"]), "arguments parsed for tojson")
        #expect(assistant["content"] == TemplateValue.none)
        guard case .dictionary(let result) = native[2] else { return }
        #expect(result["tool_call_id"] == .string("call_1"))

        let offer: [TemplateValue] = [.dictionary(["type": "function"])]
        let prompted = try request.templateMessages(tools: .prompt(.hermes, offer: offer)).messages
        #expect(prompted.count == 4, "a system prompt offers the tools")
        guard case .dictionary(let system) = prompted[0], case .string(let text)? = system["content"],
            case .dictionary(let said) = prompted[2], case .string(let written)? = said["content"],
            case .dictionary(let answered) = prompted[3], case .string(let response)? = answered["content"]
        else {
            Issue.record("unexpected shapes: \(prompted)")
            return
        }
        #expect(text.contains("<tools>") && text.contains(#"{"type": "function"}"#))
        #expect(
            written == "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>")
        #expect(response == "<tool_response>\n18 C\n</tool_response>")
    }

    @Test func assistantWithoutContentOrCallsIsRefused() throws {
        let request: ChatCompletionRequest = try decodeRequestBody(
            Data(#"{"messages": [{"role": "assistant", "content": null}]}"#.utf8))
        #expect(throws: APIError.self) { try request.templateMessages(tools: nil) }
    }
}
