import Foundation
import Testing

@testable import TLLMChatTemplate

/// Hand-written checks of the public API and of behaviour the jinja2 fixtures cannot express.
@Suite struct RenderingTests {
    private func render(_ source: String, _ context: [String: TemplateValue] = [:]) throws -> String {
        try ChatTemplate(source: source).render(context)
    }

    @Test func openAIMessagesPassStraightThroughFromJSON() throws {
        let body = """
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 🙂"}],
             "tools": [{"type": "function",
                        "function": {"name": "f", "parameters": {"z": 1, "a": 2.0, "m": [true, null]}}}]}
            """
        guard case .dictionary(let request) = try TemplateValue(jsonString: body),
            case .array(let messages)? = request["messages"], case .array(let tools)? = request["tools"]
        else {
            Issue.record("request did not parse as an object")
            return
        }
        let template = try ChatTemplate(
            source: """
                {%- for m in messages %}<{{ m.role }}>{{ m['content'] }}{% endfor %}
                {%- for t in tools %}|{{ t.function.parameters|tojson }}{% endfor %}
                {%- if add_generation_prompt %}<assistant>{% endif %}
                """)
        let prompt = try template.render(messages: messages, addGenerationPrompt: true, tools: tools)
        #expect(prompt == "<system>Be brief.<user>Hi 🙂|{\"z\": 1, \"a\": 2.0, \"m\": [true, null]}<assistant>")
    }

    @Test func jsonSerializationObjectsConvert() throws {
        let object = try JSONSerialization.jsonObject(
            with: Data(#"{"b": true, "a": 1, "c": 2.5, "d": null, "e": [0, false]}"#.utf8))
        let value = try TemplateValue(jsonObject: object)
        // NSDictionary has no order, so keys come out sorted.
        #expect(value == ["a": 1, "b": true, "c": 2.5, "d": nil, "e": [0, false]])
        guard case .dictionary(let dict) = value else { return }
        #expect(dict.keys == ["a", "b", "c", "d", "e"])
        #expect(dict["b"] == .bool(true))
        #expect(dict["a"] == .int(1))
    }

    @Test func jsonParserKeepsOrderAndNumberKinds() throws {
        let value = try TemplateValue(
            jsonString: #"{"z": 1, "y": 1.0, "x": 1e2, "w": "\u00e9\ud83d\ude42\n", "v": -0}"#)
        guard case .dictionary(let dict) = value else {
            Issue.record("not a dictionary")
            return
        }
        #expect(dict.keys == ["z", "y", "x", "w", "v"])
        #expect(dict["z"] == .int(1))
        #expect(dict["y"] == .double(1))
        #expect(dict["x"] == .double(100))
        #expect(dict["w"] == .string("é🙂\n"))
        #expect(
            try render("{{ d|tojson }} {{ d.y }} {{ d.x }}", ["d": value])
                == #"{"z": 1, "y": 1.0, "x": 100.0, "w": "é🙂\n", "v": 0} 1.0 100.0"#)
    }

    @Test func dictionariesKeepInsertionOrderAndCompareLikePython() throws {
        var dict: TemplateDictionary = ["b": 1, "a": 2]
        dict["c"] = 3
        dict["b"] = 4
        #expect(dict.keys == ["b", "a", "c"])
        dict["a"] = nil
        #expect(dict.keys == ["b", "c"])
        #expect(TemplateDictionary([("x", 1), ("y", 2)]) == TemplateDictionary([("y", 2), ("x", 1)]))
    }

    @Test func pythonFloatRepr() {
        let cases: [(Double, String)] = [
            (1e16, "1e+16"), (1e15, "1000000000000000.0"), (9.5e15, "9500000000000000.0"), (0.0001, "0.0001"),
            (0.00001, "1e-05"), (1.5e-5, "1.5e-05"), (123456789012345678.0, "1.2345678901234568e+17"), (-0.0, "-0.0"),
            (0.1 + 0.2, "0.30000000000000004"), (1e100, "1e+100"), (.leastNonzeroMagnitude, "5e-324"), (2.5, "2.5"),
            (100, "100.0"),
            (-1.5e300, "-1.5e+300"), (.infinity, "inf"), (.nan, "nan"),
        ]
        for (value, expected) in cases {
            #expect(PythonText.floatRepr(value) == expected, "\(value)")
        }
    }

    @Test func pythonStringRepr() {
        #expect(PythonText.stringRepr("plain") == "'plain'")
        #expect(PythonText.stringRepr("it's") == "\"it's\"")
        #expect(PythonText.stringRepr("it's \"q\"") == "'it\\'s \"q\"'")
        #expect(PythonText.stringRepr("a\nb\t\u{01}\u{7F}é\u{200B}") == "'a\\nb\\t\\x01\\x7fé\\u200b'")
        #expect(PythonText.stringRepr("back\\slash") == "'back\\\\slash'")
    }

    @Test func strftimeNowUsesTheInjectedClock() throws {
        let template = try ChatTemplate(source: "{{ strftime_now('%d %b %Y, %H:%M') }}")
        let date = Date(timeIntervalSince1970: 1_726_000_000)  // 2024-09-10 20:26:40 UTC
        let utc = try #require(TimeZone(identifier: "UTC"))
        let tokyo = try #require(TimeZone(identifier: "Asia/Tokyo"))
        #expect(try template.render([:], now: date, timeZone: utc) == "10 Sep 2024, 20:26")
        #expect(try template.render([:], now: date, timeZone: tokyo) == "11 Sep 2024, 05:26")
    }

    @Test func generationBlockRendersItsBody() throws {
        #expect(try render("a{% generation %}b{{ 1 }}{% endgeneration %}c") == "ab1c")
    }

    @Test func convenienceRenderLeavesMissingTokensUndefined() throws {
        let template = try ChatTemplate(
            source: "{{ bos_token is defined }} {{ tools is none }} {{ documents is none }} {{ date_string }}")
        #expect(
            try template.render(messages: [], addGenerationPrompt: false, extra: ["date_string": "26 Jul 2024"])
                == "False True True 26 Jul 2024")
    }

    @Test func templatesAreReusableAndSendable() async throws {
        let template = try ChatTemplate(
            source:
                "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}")
        let results = try await withThrowingTaskGroup(of: String.self) { group in
            for count in 1...8 {
                group.addTask {
                    try template.render(
                        messages: Array(repeating: ["role": "user", "content": "x"], count: count),
                        addGenerationPrompt: false)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(results) == Set((1...8).map(String.init)))
    }

    @Test func macrosNamespacesAndLoopsCompose() throws {
        let source = """
            {%- macro render_message(m, index) -%}
                [{{ index }}:{{ m.role|upper }}] {{ m.content|trim }}
            {%- endmacro -%}
            {%- set ns = namespace(system=none, count=0) -%}
            {%- for m in messages -%}
                {%- if m.role == 'system' -%}{%- set ns.system = m.content -%}{%- continue -%}{%- endif -%}
                {%- set ns.count = ns.count + 1 -%}
                {{ render_message(m, loop.index) }}{{ '\\n' if not loop.last }}
            {%- endfor -%}
            {{ '\\n(system: ' ~ ns.system ~ ', ' ~ ns.count ~ ' turns)' }}
            """
        let messages: [TemplateValue] = [
            ["role": "system", "content": "sys"], ["role": "user", "content": "  hi  "],
            ["role": "assistant", "content": "hello"],
        ]
        #expect(
            try ChatTemplate(source: source).render(messages: messages, addGenerationPrompt: false)
                == "[2:USER] hi\n[3:ASSISTANT] hello\n(system: sys, 2 turns)")
    }

    @Test func errorDescriptionIncludesPosition() {
        let error = ChatTemplateError(.syntax, "unexpected '}'", line: 3, column: 7)
        #expect(error.description == "syntax error: unexpected '}' (line 3, column 7)")
    }
}
