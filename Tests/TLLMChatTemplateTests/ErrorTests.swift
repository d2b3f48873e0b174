import Foundation
import Testing

@testable import TLLMChatTemplate

@Suite struct ErrorTests {
    private func parseError(_ source: String) -> ChatTemplateError? {
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(source: source) }
    }

    private func renderError(_ source: String, _ context: [String: TemplateValue] = [:]) -> ChatTemplateError? {
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(source: source).render(context) }
    }

    @Test(arguments: ["include", "extends", "import", "from", "block", "autoescape"])
    func loaderTagsAreUnsupportedWithPosition(tag: String) throws {
        let error = try #require(parseError("line one\n  {% \(tag) 'other.jinja' %}"))
        #expect(error.kind == .unsupported)
        #expect(error.message.contains("'\(tag)'"))
        #expect(error.line == 2)
        #expect(error.column == 6)
    }

    @Test func unknownFilterIsNamedWithPosition() throws {
        let error = try #require(parseError("{{ 'a' }}\n{{ messages | nosuchfilter }}"))
        #expect(error.kind == .unsupported)
        #expect(error.message == "no filter named 'nosuchfilter'")
        #expect(error.line == 2)
        #expect(error.column == 15)
    }

    @Test func unknownTestFailsWhenEvaluated() throws {
        let error = try #require(renderError("{% if x is frobnicated %}{% endif %}", ["x": 1]))
        #expect(error.kind == .unsupported)
        #expect(error.message.contains("frobnicated"))
        #expect(error.line == 1)
    }

    @Test func unknownTagIsASyntaxError() throws {
        let error = try #require(parseError("{% for m in messages %}{% frob %}{% endfor %}"))
        #expect(error.kind == .syntax)
        #expect(error.message.contains("'frob'"))
        #expect(error.column == 27)
    }

    @Test(arguments: [
        "{{ messages", "{% if true %}never closed", "{# comment", "{{ 'unterminated }}", "{% for x in y %}",
        "{% if %}{% endif %}", "{{ (1 }}", "{{ [1, 2 }}", "{{ 1 + }}", "{% endif %}", "{% set %}", "{{ a.1b }}",
        "{% macro m( %}{% endmacro %}", "{{ }}", "{% raw %}no end", "{% for %}{% endfor %}", "{{ 'a' ]] }}",
    ])
    func malformedTemplatesAreSyntaxErrors(source: String) throws {
        let error = try #require(parseError(source))
        #expect(error.kind == .syntax)
        #expect(error.line != nil && error.column != nil)
    }

    @Test func unclosedBlockNamesWhatItExpected() throws {
        let error = try #require(parseError("{% for m in messages %}\n{{ m }}\n"))
        #expect(error.message.contains("'endfor'"))
        #expect(error.message.contains("'for'"))
    }

    @Test func raiseExceptionCarriesTheTemplateMessage() throws {
        let source = "{% if messages|length == 0 %}\n  {{ raise_exception('No messages: ' ~ reason) }}\n{% endif %}"
        let error = try #require(renderError(source, ["messages": [], "reason": "empty"]))
        #expect(error.kind == .raised)
        #expect(error.message == "No messages: empty")
        #expect(error.line == 2)
        #expect(error.description.contains("No messages: empty"))
    }

    @Test func mistralRoleAlternationMessagePropagates() throws {
        let template = try ChatTemplate(
            source: """
                {{ bos_token }}{% for message in messages %}\
                {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\
                {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}\
                {{ '[INST] ' + message['content'] + ' [/INST]' if message['role'] == 'user' else message['content'] }}\
                {% endfor %}
                """)
        let error = #expect(throws: ChatTemplateError.self) {
            try template.render(
                messages: [["role": "user", "content": "a"], ["role": "user", "content": "b"]],
                addGenerationPrompt: true)
        }
        #expect(error?.kind == .raised)
        #expect(error?.message == "Conversation roles must alternate user/assistant/user/assistant/...")
    }

    @Test func undefinedValuesFailWhereJinja2Fails() throws {
        #expect(renderError("{{ missing.attribute }}")?.kind == .undefined)
        #expect(renderError("{{ missing.attribute }}")?.message == "'missing' is undefined")
        #expect(renderError("{{ missing + 1 }}")?.kind == .undefined)
        #expect(renderError("{{ missing() }}")?.kind == .undefined)
        #expect(try ChatTemplate(source: "[{{ missing }}]{{ missing is defined }}").render([:]) == "[]False")
    }

    @Test func typeErrorsAreReportedNotTrapped() throws {
        #expect(renderError("{{ 'a' + 1 }}")?.kind == .type)
        #expect(renderError("{{ 1 < 'a' }}")?.kind == .type)
        #expect(renderError("{{ 1 / 0 }}")?.kind == .value)
        #expect(renderError("{{ 9223372036854775807 + 1 }}")?.kind == .value)
        #expect(renderError("{{ -9223372036854775807 - 2 }}")?.kind == .value)
        #expect(renderError("{{ 2 ** 64 }}")?.kind == .value)
        #expect(renderError("{% for x in 3 %}{% endfor %}")?.kind == .type)
        #expect(renderError("{% set ns = 1 %}{% set ns.a = 2 %}")?.kind == .type)
        #expect(renderError("{{ [1, 2][1:2:0] }}")?.kind == .value)
        #expect(renderError("{{ 'abc'|tojson(indent='x', separators=1) }}")?.kind == .type)
    }

    @Test func breakOutsideALoopIsRejected() throws {
        #expect(parseError("{% break %}")?.message == "'break' outside loop")
        #expect(parseError("{% for x in y %}{% macro m() %}{% continue %}{% endmacro %}{% endfor %}") != nil)
    }

    @Test func runawayRecursionHitsALimit() throws {
        let error = try #require(renderError("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"))
        #expect(error.kind == .limit)
    }

    @Test func hugeRangesAndRepetitionsHitALimit() throws {
        #expect(renderError("{{ range(1000000)|length }}")?.kind == .limit)
        #expect(renderError("{{ 'x' * 100000000000 }}")?.kind == .limit)
        #expect(renderError("{{ [1] * 100000000 }}")?.kind == .limit)
    }

    @Test func deeplyNestedInputDoesNotOverflowTheStack() throws {
        let parentheses = String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000)
        #expect(parseError("{{ \(parentheses) }}")?.kind == .limit)
        let ifs = String(repeating: "{% if true %}", count: 5000) + String(repeating: "{% endif %}", count: 5000)
        #expect(parseError(ifs)?.kind == .limit)
        let nots = String(repeating: "not ", count: 5000) + "x"
        #expect(parseError("{{ \(nots) }}")?.kind == .limit)
        let minus = String(repeating: "-", count: 5000) + "1"
        #expect(parseError("{{ \(minus) }}")?.kind == .limit)
    }

    @Test func jsonInputErrorsAreReported() throws {
        #expect(throws: ChatTemplateError.self) { try TemplateValue(jsonString: "{\"a\": }") }
        #expect(throws: ChatTemplateError.self) { try TemplateValue(jsonString: "[1, 2") }
        #expect(throws: ChatTemplateError.self) { try TemplateValue(jsonString: "\"\\q\"") }
        #expect(throws: ChatTemplateError.self) { try TemplateValue(jsonString: "1 2") }
        #expect(throws: ChatTemplateError.self) { try TemplateValue(jsonString: String(repeating: "[", count: 10_000)) }
    }
}
