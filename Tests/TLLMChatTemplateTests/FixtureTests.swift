import Foundation
import Testing

@testable import TLLMChatTemplate

/// Real Hugging Face chat templates rendered by Python jinja2 the way `transformers` configures it
/// (Tests/fixture-scripts/chat_templates.py); every case must come out byte for byte the same.
struct ChatTemplateFixture {
    struct Case {
        var template: String
        var conversation: String
        var addGenerationPrompt: Bool
        var extra: [String: TemplateValue]
        var expected: String?
        var errorKind: String?
        var errorMessage: String?

        var label: String {
            "\(template) × \(conversation) × add_generation_prompt=\(addGenerationPrompt)"
                + (extra.isEmpty ? "" : " × \(extra.keys.sorted())")
        }
    }

    var sources: [String: String] = [:]
    var specialTokens: [String: TemplateDictionary] = [:]
    var conversations: [String: TemplateDictionary] = [:]
    var cases: [Case] = []
    var snippetContext: [String: TemplateValue] = [:]
    /// Small one-feature templates: source, then the expected text or the expected error (kind, message).
    var snippets: [(source: String, expected: String?, error: (kind: String, message: String)?)] = []
    /// The instant the generator pinned `strftime_now` to (naive time, read here as UTC).
    var now = Date()

    static func load() throws -> ChatTemplateFixture {
        let url = try #require(
            Bundle.module.url(forResource: "chat_templates", withExtension: "json", subdirectory: "Fixtures"))
        guard case .dictionary(let root) = try TemplateValue(jsonData: Data(contentsOf: url)) else {
            throw FixtureError.malformed("root")
        }
        var fixture = ChatTemplateFixture()
        guard case .dictionary(let templates)? = root["templates"],
            case .dictionary(let conversations)? = root["conversations"],
            case .array(let cases)? = root["cases"], case .string(let fixedNow)? = root["fixed_now_utc"]
        else { throw FixtureError.malformed("top-level keys") }
        let formatter = ISO8601DateFormatter()
        fixture.now = try #require(formatter.date(from: fixedNow))
        for (name, value) in templates.entries {
            guard case .dictionary(let entry) = value, case .string(let source)? = entry["source"],
                case .dictionary(let tokens)? = entry["special_tokens"]
            else { throw FixtureError.malformed("template \(name)") }
            fixture.sources[name] = source
            fixture.specialTokens[name] = tokens
        }
        for (name, value) in conversations.entries {
            guard case .dictionary(let conversation) = value else {
                throw FixtureError.malformed("conversation \(name)")
            }
            fixture.conversations[name] = conversation
        }
        for value in cases {
            guard case .dictionary(let c) = value, case .string(let template)? = c["template"],
                case .string(let conversation)? = c["conversation"],
                case .bool(let generation)? = c["add_generation_prompt"]
            else { throw FixtureError.malformed("case") }
            var item = Case(
                template: template, conversation: conversation, addGenerationPrompt: generation, extra: [:])
            if case .dictionary(let extra)? = c["extra"] {
                for entry in extra.entries { item.extra[entry.key] = entry.value }
            }
            if case .string(let expected)? = c["expected"] { item.expected = expected }
            if case .dictionary(let error)? = c["error"] {
                item.errorKind = error["kind"]?.stringValue
                item.errorMessage = error["message"]?.stringValue
            }
            fixture.cases.append(item)
        }
        if case .dictionary(let context)? = root["snippet_context"] {
            fixture.snippetContext = [
                "tools": .none, "documents": .none, "add_generation_prompt": .bool(false),
            ]
            for entry in context.entries { fixture.snippetContext[entry.key] = entry.value }
        }
        if case .array(let snippets)? = root["snippets"] {
            for value in snippets {
                guard case .dictionary(let snippet) = value, case .string(let source)? = snippet["source"] else {
                    throw FixtureError.malformed("snippet")
                }
                var error: (kind: String, message: String)?
                if case .dictionary(let e)? = snippet["error"] {
                    error = (e["kind"]?.stringValue ?? "", e["message"]?.stringValue ?? "")
                }
                fixture.snippets.append((source, snippet["expected"]?.stringValue, error))
            }
        }
        return fixture
    }

    /// The variables `apply_chat_template` passes, in the generator's order.
    func context(for item: Case) -> [String: TemplateValue] {
        let conversation = conversations[item.conversation] ?? TemplateDictionary()
        var context: [String: TemplateValue] = [
            "messages": conversation["messages"] ?? .array([]),
            "tools": conversation["tools"] ?? .none,
            "documents": .none,
            "add_generation_prompt": .bool(item.addGenerationPrompt),
        ]
        for entry in (specialTokens[item.template] ?? TemplateDictionary()).entries { context[entry.key] = entry.value }
        context.merge(item.extra) { _, new in new }
        return context
    }
}

enum FixtureError: Error {
    case malformed(String)
}

@Suite struct FixtureTests {
    static let utc = TimeZone(identifier: "UTC") ?? TimeZone(secondsFromGMT: 0)!

    @Test func fixtureCoversEveryTemplateAndConversation() throws {
        let fixture = try ChatTemplateFixture.load()
        #expect(fixture.sources.count == 10)
        #expect(fixture.cases.count >= 200)
        #expect(Set(fixture.cases.map(\.template)) == Set(fixture.sources.keys))
        #expect(fixture.cases.contains { $0.errorKind == "raised" && $0.template.hasPrefix("mistral") })
        // Qwen3's thinking template: enable_thinking off closes an empty block in the prompt, the latest
        // turn's reasoning_content is rendered as a <think> block, older turns' are dropped.
        #expect(
            fixture.cases.contains {
                $0.template == "qwen-3" && $0.extra["enable_thinking"] == .bool(false) && $0.addGenerationPrompt
                    && $0.expected?.hasSuffix("<|im_start|>assistant\n<think>\n\n</think>\n\n") == true
            })
        #expect(
            fixture.cases.contains {
                $0.template == "qwen-3" && $0.conversation == "thinking_ending_assistant"
                    && $0.expected?.contains("<think>\nThe user greets me; greet back.\n</think>\n\n") == true
            })
        #expect(
            fixture.cases.contains {
                $0.template == "qwen-3" && $0.conversation == "thinking_history"
                    && $0.expected?.contains("2+2.") == false && $0.expected?.contains("What is 2+2?") == true
            })
    }

    @Test func everyFixtureRendersByteIdentically() throws {
        let fixture = try ChatTemplateFixture.load()
        var templates: [String: ChatTemplate] = [:]
        for (name, source) in fixture.sources { templates[name] = try ChatTemplate(source: source) }
        var mismatches = 0
        for item in fixture.cases {
            let template = try #require(templates[item.template])
            let context = fixture.context(for: item)
            if let expected = item.expected {
                let rendered = try template.render(context, now: fixture.now, timeZone: Self.utc)
                if rendered != expected { mismatches += 1 }
                #expect(rendered == expected, "\(item.label)")
            } else {
                let error = #expect(throws: ChatTemplateError.self, "\(item.label)") {
                    try template.render(context, now: fixture.now, timeZone: Self.utc)
                }
                if item.errorKind == "raised" {
                    #expect(error?.kind == .raised, "\(item.label)")
                    #expect(error?.message == item.errorMessage, "\(item.label)")
                }
            }
        }
        #expect(mismatches == 0)
    }

    /// One-feature snippets (operators, filters, tests, loops, macros, whitespace control) match jinja2.
    @Test func snippetsMatchJinja2() throws {
        let fixture = try ChatTemplateFixture.load()
        #expect(fixture.snippets.count > 120)
        for snippet in fixture.snippets {
            if let expected = snippet.expected {
                let rendered = try ChatTemplate(source: snippet.source).render(
                    fixture.snippetContext, now: fixture.now, timeZone: Self.utc)
                #expect(rendered == expected, "\(snippet.source)")
            } else {
                let error = #expect(throws: ChatTemplateError.self, "\(snippet.source)") {
                    try ChatTemplate(source: snippet.source).render(
                        fixture.snippetContext, now: fixture.now, timeZone: Self.utc)
                }
                if snippet.error?.kind == "raised" {
                    #expect(error?.kind == .raised)
                    #expect(error?.message == snippet.error?.message)
                }
            }
        }
    }

    /// The convenience API builds the same variables `apply_chat_template` does.
    @Test func convenienceRenderMatchesFixtures() throws {
        let fixture = try ChatTemplateFixture.load()
        for item in fixture.cases where item.expected != nil {
            let template = try ChatTemplate(source: try #require(fixture.sources[item.template]))
            let conversation = try #require(fixture.conversations[item.conversation])
            guard case .array(let messages)? = conversation["messages"] else { continue }
            var tools: [TemplateValue]?
            if case .array(let list)? = conversation["tools"] { tools = list }
            let tokens = fixture.specialTokens[item.template] ?? TemplateDictionary()
            let rendered = try template.render(
                messages: messages, addGenerationPrompt: item.addGenerationPrompt,
                bosToken: tokens["bos_token"]?.stringValue, eosToken: tokens["eos_token"]?.stringValue, tools: tools,
                extra: item.extra, now: fixture.now, timeZone: Self.utc)
            #expect(rendered == item.expected, "\(item.label)")
        }
    }

    /// What parsing and rendering a fuzzed template gave.
    enum FuzzOutcome {
        case rendered
        case parseError(ChatTemplateError)
        case renderError(ChatTemplateError)
    }

    /// Parses `source` and renders it with `context`: a render or a ``ChatTemplateError``. Any other error is
    /// recorded as an issue (and nil returned): templates fail with the template error type, nothing else.
    static func parseAndRender(
        _ source: String, _ context: [String: TemplateValue], now: Date,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> FuzzOutcome? {
        let template: ChatTemplate
        do {
            template = try ChatTemplate(source: source)
        } catch let error as ChatTemplateError {
            return .parseError(error)
        } catch {
            Issue.record("parsing threw \(error), not a ChatTemplateError", sourceLocation: sourceLocation)
            return nil
        }
        do {
            _ = try template.render(context, now: now, timeZone: Self.utc)
            return .rendered
        } catch let error as ChatTemplateError {
            return .renderError(error)
        } catch {
            Issue.record("rendering threw \(error), not a ChatTemplateError", sourceLocation: sourceLocation)
            return nil
        }
    }

    /// Cutting a real template anywhere must give a clean error or a render, never a crash or a hang.
    @Test func truncatedTemplatesThrowInsteadOfCrashing() throws {
        let fixture = try ChatTemplateFixture.load()
        let context = fixture.context(
            for: .init(
                template: "llama-3.1", conversation: "tools_call_and_result", addGenerationPrompt: true, extra: [:]))
        var generator = SplitMix64(seed: 0x5EED)
        var parseFailures = 0
        var rendered = 0
        for (_, source) in fixture.sources.sorted(by: { $0.key < $1.key }) {
            let scalars = Array(source.unicodeScalars)
            var cuts = (0..<40).map { _ in Int(generator.next() % UInt64(scalars.count + 1)) }
            cuts += [0, 1, 2, scalars.count - 1]
            for cut in cuts where cut >= 0 && cut <= scalars.count {
                let truncated = String(String.UnicodeScalarView(scalars[..<cut]))
                switch Self.parseAndRender(truncated, context, now: fixture.now) {
                case .parseError(let error)?:
                    parseFailures += 1
                    #expect(error.line != nil, "\(error)")
                case .rendered?: rendered += 1
                case .renderError?, nil: break
                }
            }
        }
        #expect(parseFailures > 100)
        // The empty template (a cut at 0) renders, at least.
        #expect(rendered >= fixture.sources.count)
    }

    /// One random edit (a dropped, duplicated or swapped character) of a real template at a time, 60 per template:
    /// each edited template renders or fails with a ``ChatTemplateError`` (never another error, a crash or a hang).
    /// Both happen, many times: the edits reach the renderer rather than all stopping at the parser, and the parser
    /// does not accept everything.
    @Test func mutatedTemplatesThrowInsteadOfCrashing() throws {
        let fixture = try ChatTemplateFixture.load()
        let context = fixture.context(
            for: .init(
                template: "qwen-2.5", conversation: "tools_call_and_result", addGenerationPrompt: true, extra: [:]))
        var generator = SplitMix64(seed: 42)
        var rendered = 0
        var parseFailures = 0
        var renderFailures = 0
        for (_, source) in fixture.sources.sorted(by: { $0.key < $1.key }) {
            let original = Array(source.unicodeScalars)
            try #require(!original.isEmpty)
            for _ in 0..<60 {
                var scalars = original
                let i = Int(generator.next() % UInt64(scalars.count))
                let j = Int(generator.next() % UInt64(scalars.count))
                switch generator.next() % 3 {
                case 0: scalars.remove(at: i)
                case 1: scalars.insert(scalars[j], at: i)
                default: scalars.swapAt(i, j)
                }
                switch Self.parseAndRender(String(String.UnicodeScalarView(scalars)), context, now: fixture.now) {
                case .rendered?: rendered += 1
                case .parseError?: parseFailures += 1
                case .renderError?: renderFailures += 1
                case nil: break
                }
            }
        }
        let total = 60 * fixture.sources.count
        print("mutated templates: \(rendered) rendered, \(parseFailures) parse errors, \(renderFailures) render errors")
        #expect(rendered + parseFailures + renderFailures == total, "every edit rendered or threw a ChatTemplateError")
        #expect(rendered >= total / 10, "\(rendered) of \(total) edited templates rendered")
        #expect(parseFailures + renderFailures >= total / 10, "\(parseFailures + renderFailures) of \(total) failed")
    }
}

/// A small deterministic generator, so fuzz cases are the same on every run.
struct SplitMix64 {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
