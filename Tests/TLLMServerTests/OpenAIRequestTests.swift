import Foundation
import HTTPTypes
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
