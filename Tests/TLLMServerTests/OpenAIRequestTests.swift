import Foundation
import HTTPTypes
import TLLMChatTemplate
import TLLMCompute
import Testing

@testable import TLLMServer

/// Request decoding and validation give OpenAI-shaped errors that name the field.
@Suite struct OpenAIRequestTests {
    static func error(_ json: String) -> APIError? {
        do {
            let request = try JSONDecoder().decode(ChatCompletionRequest.self, from: Data(json.utf8))
            try request.fields.validate(vocabularySize: 49152)
            return nil
        } catch let error as DecodingError {
            return APIError(decoding: error)
        } catch let error as APIError {
            return error
        } catch {
            return APIError(.internalServerError, "\(error)")
        }
    }

    @Test(arguments: [
        (#"{"messages": "hi"}"#, "messages", "expected an array"),
        (#"{}"#, "messages", "Missing required parameter"),
        (#"{"messages": [{"content": "hi"}]}"#, "messages[0].role", "Missing required parameter"),
        (#"{"messages": [{"role": "user", "content": 5}]}"#, "messages[0].content", "expected a string or an array"),
        (
            #"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#, "messages[0].content[0]",
            "only text"
        ),
        (#"{"messages": [], "max_tokens": "ten"}"#, "max_tokens", "expected an integer"),
        (#"{"messages": [], "temperature": "hot"}"#, "temperature", "expected a number"),
        (#"{"messages": [], "stop": 3}"#, "stop", "expected a string or an array of strings"),
        (#"{"messages": [], "max_tokens": 0}"#, "max_tokens", "minimum of 1"),
        (#"{"messages": [], "n": 2}"#, "n", "n = 1"),
        (#"{"messages": [], "temperature": 3}"#, "temperature", "outside"),
        (#"{"messages": [], "top_k": 0}"#, "top_k", "top_k"),
        (#"{"messages": [], "stop_token_ids": [4294967296]}"#, "stop_token_ids", "outside the vocabulary"),
        (#"{"messages": [], "stop_token_ids": [49152]}"#, "stop_token_ids", "outside the vocabulary"),
        (#"{"messages": [], "stop_token_ids": [-1]}"#, "stop_token_ids", "outside the vocabulary"),
        (#"{"messages": [], "chat_template_kwargs": "enable_thinking"}"#, "chat_template_kwargs", "expected an object"),
        (#"{"messages": [], "chat_template_kwargs": [{"a": 1}]}"#, "chat_template_kwargs", "expected an object"),
        (#"{"messages": [], "reasoning_format": "hidden"}"#, "reasoning_format", #""none""#),
        (#"{"messages": [], "reasoning_format": false}"#, "reasoning_format", "expected a string"),
        (
            #"{"messages": [{"role": "assistant", "content": "4", "reasoning_content": 4}]}"#,
            "messages[0].reasoning_content", "expected a string"
        ),
    ])
    func badFieldsNameTheirParameter(_ json: String, _ param: String, _ message: String) throws {
        let error = try #require(Self.error(json))
        #expect(error.status == .badRequest)
        #expect(error.param == param)
        #expect(error.message.contains(message), "\(error.message)")
    }

    /// Numbers that fit no Swift integer: refused as JSON, never converted.
    @Test(arguments: [
        #"{"messages": [], "stop_token_ids": [1e300]}"#, #"{"messages": [], "max_tokens": 1e300}"#,
        #"{"messages": [], "seed": 18446744073709551616}"#, #"{"messages": [], "top_k": -9223372036854775809}"#,
        #"{"messages": [], "max_tokens": 9223372036854775807, "stop_token_ids": [9223372036854775807]}"#,
    ])
    func hugeNumbersAreRefused(_ json: String) throws {
        let error = try #require(Self.error(json))
        #expect(error.status == .badRequest, "\(error)")
    }

    @Test func malformedJSON() throws {
        let error = try #require(Self.error("{\"messages\": [}"))
        #expect(error.status == .badRequest && error.param == nil && error.code == "invalid_json")
    }

    @Test func partsAndStopsDecode() throws {
        let json = #"""
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
             "stop": "x", "seed": -1, "stream_options": {"include_usage": true}}
            """#
        let request = try JSONDecoder().decode(ChatCompletionRequest.self, from: Data(json.utf8))
        #expect(request.messages[0].content == "ab")
        #expect(request.fields.stop?.values == ["x"])
        #expect(request.fields.sampling.seed == UInt64.max)
        #expect(request.fields.streamOptions?.includeUsage == true)
        #expect(request.fields.sampling.isGreedy)
    }

    @Test func completionPrompts() throws {
        func prompt(_ json: String) throws -> CompletionRequest.Prompt {
            try JSONDecoder().decode(CompletionRequest.self, from: Data(json.utf8)).prompt
        }
        guard case .text("hi") = try prompt(#"{"prompt": "hi"}"#) else { Issue.record("string prompt"); return }
        guard case .text("hi") = try prompt(#"{"prompt": ["hi"]}"#) else { Issue.record("list prompt"); return }
        guard case .tokens([1, 2]) = try prompt(#"{"prompt": [1, 2]}"#) else { Issue.record("tokens"); return }
        #expect(throws: DecodingError.self) { try prompt(#"{"prompt": ["a", "b"]}"#) }
        #expect(throws: DecodingError.self) { try prompt(#"{"max_tokens": 3}"#) }
    }

    /// `chat_template_kwargs` of a body, as the template will see them (or the 400).
    static func kwargs(_ json: String) throws -> Result<[String: TemplateValue], APIError> {
        let request = try JSONDecoder().decode(ChatCompletionRequest.self, from: Data(json.utf8))
        do {
            return .success(try request.templateKwargs(body: Data(json.utf8)))
        } catch {
            return .failure(error)
        }
    }

    @Test func templateKwargsKeepTheClientsValuesAndOrder() throws {
        let json = #"""
            {"messages": [{"role": "user", "content": "hi"}],
             "chat_template_kwargs": {"enable_thinking": false, "tools_in_user_message": null, "n": 1.0,
                                      "custom": {"zeta": [1, {"b": "x", "a": true}], "alpha": 2}}}
            """#
        let kwargs = try Self.kwargs(json).get()
        #expect(kwargs["enable_thinking"] == .bool(false))
        #expect(kwargs["tools_in_user_message"] == TemplateValue.none)
        #expect(kwargs["n"] == .double(1))
        guard case .dictionary(let custom)? = kwargs["custom"] else {
            Issue.record("custom is not an object: \(String(describing: kwargs["custom"]))")
            return
        }
        #expect(custom.keys == ["zeta", "alpha"])
        guard case .array(let zeta)? = custom["zeta"], case .dictionary(let inner) = zeta[1] else {
            Issue.record("zeta")
            return
        }
        #expect(inner.keys == ["b", "a"])
        #expect(try Self.kwargs(#"{"messages": []}"#).get().isEmpty)
        #expect(try Self.kwargs(#"{"messages": [], "chat_template_kwargs": {}}"#).get().isEmpty)
        #expect(try Self.kwargs(#"{"messages": [], "chat_template_kwargs": null}"#).get().isEmpty)
    }

    /// Names the server passes itself, too many names and too deep values: a 400 naming the field.
    @Test func templateKwargsAreBounded() throws {
        for name in ChatCompletionRequest.reservedTemplateVariables.sorted() {
            let result = try Self.kwargs(#"{"messages": [], "chat_template_kwargs": {"ok": 1, "\#(name)": 1}}"#)
            guard case .failure(let error) = result else {
                Issue.record("\(name) was accepted")
                continue
            }
            #expect(error.status == .badRequest)
            #expect(error.param == "chat_template_kwargs.\(name)")
            #expect(error.message.contains("'\(name)' is set by the server"), "\(error.message)")
        }
        let limit = ChatCompletionRequest.maximumTemplateKwargsDepth
        func nested(_ depth: Int) -> String {
            String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        }
        #expect(throws: Never.self) {
            try Self.kwargs(#"{"messages": [], "chat_template_kwargs": {"a": \#(nested(limit))}}"#).get()
        }
        let deep = try Self.kwargs(#"{"messages": [], "chat_template_kwargs": {"a": \#(nested(limit + 1))}}"#)
        guard case .failure(let error) = deep else {
            Issue.record("a value nested \(limit + 1) deep was accepted")
            return
        }
        #expect(error.param == "chat_template_kwargs.a" && error.message.contains("deeper than \(limit)"))
        let many = (0...ChatCompletionRequest.maximumTemplateKwargs).map { #""k\#($0)": 0"# }.joined(separator: ",")
        let tooMany = try Self.kwargs(#"{"messages": [], "chat_template_kwargs": {\#(many)}}"#)
        guard case .failure(let error) = tooMany else {
            Issue.record("\(ChatCompletionRequest.maximumTemplateKwargs + 1) variables were accepted")
            return
        }
        #expect(error.param == "chat_template_kwargs" && error.status == .badRequest)
    }

    /// An assistant turn's `reasoning_content` reaches the template as a message field, null kept as None.
    @Test func reasoningContentReachesTheTemplate() throws {
        let json = #"""
            {"messages": [{"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "4", "reasoning_content": "Simple."},
                          {"role": "assistant", "content": "5", "reasoning_content": null},
                          {"role": "user", "content": "ok"}]}
            """#
        let request = try JSONDecoder().decode(ChatCompletionRequest.self, from: Data(json.utf8))
        let (messages, bytes) = try request.templateMessages()
        #expect(bytes == "2+2?4Simple.5ok".utf8.count)
        let fields = messages.map { message -> TemplateValue? in
            guard case .dictionary(let value) = message else { return nil }
            return value["reasoning_content"]
        }
        #expect(fields == [nil, .string("Simple."), TemplateValue.none, nil])
    }

    @Test func reasoningFormats() throws {
        func format(_ json: String) throws -> ReasoningFormat? {
            try JSONDecoder().decode(ChatCompletionRequest.self, from: Data(json.utf8)).reasoningFormat
        }
        #expect(try format(#"{"messages": []}"#) == nil)
        #expect(try format(#"{"messages": [], "reasoning_format": "none"}"#)?.splits == false)
        #expect(try format(#"{"messages": [], "reasoning_format": "auto"}"#)?.splits == true)
        #expect(try format(#"{"messages": [], "reasoning_format": "deepseek"}"#)?.splits == true)
    }

    @Test func jsonTextEscapesAndKeepsOrder() {
        let value: JSONValue = .object([
            ("b", .string("quote \" backslash \\ newline \n tab \t bell \u{07} é 🥐")), ("a", .null),
            ("n", .array([1, .double(0.5), true])),
        ])
        #expect(
            value.serialized
                == #"{"b":"quote \" backslash \\ newline \n tab \t bell \u0007 é 🥐","a":null,"n":[1,0.5,true]}"#)
        let parsed = try? JSONSerialization.jsonObject(with: Data(value.serialized.utf8)) as? [String: Any]
        #expect(parsed?["b"] as? String == "quote \" backslash \\ newline \n tab \t bell \u{07} é 🥐")
    }
}
