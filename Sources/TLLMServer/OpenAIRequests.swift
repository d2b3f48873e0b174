import Foundation
import TLLMChatTemplate
import TLLMCompute
import TLLMEngine
import TLLMGrammar

/// `stop` of OpenAI: one string or a list of strings.
struct StopSequences: Decodable {
    var values: [String]

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let one = try? container.decode(String.self) {
            values = [one]
        } else if let many = try? container.decode([String].self) {
            values = many
        } else {
            throw DecodingError.typeMismatch(
                [String].self,
                .init(codingPath: decoder.codingPath, debugDescription: "expected a string or an array of strings"))
        }
    }
}

/// The fields chat and text completions share: limits, sampling, stops, streaming.
package struct GenerationFields: Decodable {
    var model: String?
    var maxTokens: Int?
    var maxCompletionTokens: Int?
    var temperature: Double?
    var topP: Double?
    var topK: Int?
    var minP: Double?
    var presencePenalty: Double?
    var frequencyPenalty: Double?
    var repetitionPenalty: Double?
    var seed: Int64?
    var stop: StopSequences?
    var stopTokenIDs: [Int]?
    var n: Int?
    var stream: Bool?
    var streamOptions: StreamOptions?
    var ignoreEOS: Bool?
    /// `logprobs`: a flag in chat completions, a count in text completions.
    var logprobs: LogprobsField?
    var topLogprobs: Int?
    var responseFormat: ResponseFormat?
    /// Fields of OpenAI's (or vLLM's) API this server does not honour: present, they are a 400.
    var unsupported: UnsupportedFields

    /// `logprobs` as either endpoint spells it.
    enum LogprobsField: Decodable {
        case flag(Bool)
        case count(Int)

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let flag = try? container.decode(Bool.self) {
                self = .flag(flag)
            } else {
                self = .count(try container.decode(Int.self))
            }
        }
    }

    struct StreamOptions: Decodable {
        var includeUsage: Bool?
        enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }
    }

    enum CodingKeys: String, CodingKey {
        case model, temperature, seed, stop, n, stream, logprobs
        case topLogprobs = "top_logprobs"
        case responseFormat = "response_format"
        case maxTokens = "max_tokens"
        case maxCompletionTokens = "max_completion_tokens"
        case topP = "top_p"
        case topK = "top_k"
        case minP = "min_p"
        case presencePenalty = "presence_penalty"
        case frequencyPenalty = "frequency_penalty"
        case repetitionPenalty = "repetition_penalty"
        case stopTokenIDs = "stop_token_ids"
        case streamOptions = "stream_options"
        case ignoreEOS = "ignore_eos"
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        model = try container.decodeIfPresent(String.self, forKey: .model)
        maxTokens = try container.decodeIfPresent(Int.self, forKey: .maxTokens)
        maxCompletionTokens = try container.decodeIfPresent(Int.self, forKey: .maxCompletionTokens)
        temperature = try container.decodeIfPresent(Double.self, forKey: .temperature)
        topP = try container.decodeIfPresent(Double.self, forKey: .topP)
        topK = try container.decodeIfPresent(Int.self, forKey: .topK)
        minP = try container.decodeIfPresent(Double.self, forKey: .minP)
        presencePenalty = try container.decodeIfPresent(Double.self, forKey: .presencePenalty)
        frequencyPenalty = try container.decodeIfPresent(Double.self, forKey: .frequencyPenalty)
        repetitionPenalty = try container.decodeIfPresent(Double.self, forKey: .repetitionPenalty)
        seed = try container.decodeIfPresent(Int64.self, forKey: .seed)
        stop = try container.decodeIfPresent(StopSequences.self, forKey: .stop)
        stopTokenIDs = try container.decodeIfPresent([Int].self, forKey: .stopTokenIDs)
        n = try container.decodeIfPresent(Int.self, forKey: .n)
        stream = try container.decodeIfPresent(Bool.self, forKey: .stream)
        streamOptions = try container.decodeIfPresent(StreamOptions.self, forKey: .streamOptions)
        ignoreEOS = try container.decodeIfPresent(Bool.self, forKey: .ignoreEOS)
        logprobs = try container.decodeIfPresent(LogprobsField.self, forKey: .logprobs)
        topLogprobs = try container.decodeIfPresent(Int.self, forKey: .topLogprobs)
        responseFormat = try container.decodeIfPresent(ResponseFormat.self, forKey: .responseFormat)
        unsupported = try UnsupportedFields(from: decoder)
    }

    /// Range checks of OpenAI's API (and vLLM's for its extensions); a clear 400 for each.
    /// Every number here came from the network: nothing is converted before it is checked.
    package func validate(vocabularySize: Int, handling handled: Set<String> = []) throws(APIError) {
        if let n, n != 1 {
            throw .invalid("Only n = 1 is supported (got n = \(n)).", param: "n", code: "unsupported_value")
        }
        try unsupported.validate(allowing: handled)
        for (name, value) in [("max_tokens", maxTokens), ("max_completion_tokens", maxCompletionTokens)] {
            if let value, value < 1 {
                throw .invalid(
                    "Invalid '\(name)': \(value) is less than the minimum of 1.", param: name, code: "invalid_value")
            }
        }
        try check("temperature", temperature, 0...2)
        try check("top_p", topP, 0.000_001...1)
        try check("min_p", minP, 0...1)
        try check("presence_penalty", presencePenalty, -2...2)
        try check("frequency_penalty", frequencyPenalty, -2...2)
        try check("repetition_penalty", repetitionPenalty, 0.000_001...10)
        if let topK, topK == 0 || topK < -1 {
            throw .invalid("Invalid 'top_k': \(topK); use -1 (disabled) or a positive number.", param: "top_k")
        }
        if let stop = stop?.values {
            if stop.count > 16 { throw .invalid("At most 16 stop sequences are allowed.", param: "stop") }
            if stop.contains(where: \.isEmpty) { throw .invalid("Stop sequences must not be empty.", param: "stop") }
            if stop.contains(where: { $0.utf8.count > Self.maximumStopBytes }) {
                throw .invalid(
                    "Stop sequences must be at most \(Self.maximumStopBytes) bytes long.", param: "stop",
                    code: "invalid_value")
            }
        }
        if let ids = stopTokenIDs {
            if ids.count > Self.maximumStopTokenIDs {
                throw .invalid(
                    "At most \(Self.maximumStopTokenIDs) stop token ids are allowed.", param: "stop_token_ids",
                    code: "invalid_value")
            }
            if let bad = ids.first(where: { $0 < 0 || $0 >= vocabularySize }) {
                throw .invalid(
                    "Invalid 'stop_token_ids': \(bad) is outside the vocabulary (0..<\(vocabularySize)).",
                    param: "stop_token_ids", code: "invalid_value")
            }
        }
    }

    /// How many alternatives to report per token (nil: no log-probabilities), checked the way
    /// each endpoint spells it: chat takes `logprobs: true` and `top_logprobs`, text completions
    /// take `logprobs: <count>`.
    package func logprobCount(chat: Bool) throws(APIError) -> Int? {
        let limit = GenerationRequest.maximumTopLogprobs
        let name = chat ? "top_logprobs" : "logprobs"
        let count: Int?
        switch (logprobs, chat) {
        case (nil, _), (.flag(false)?, _): count = nil
        case (.flag(true)?, true): count = topLogprobs ?? 0
        case (.count?, true):
            throw .invalid("Invalid type for 'logprobs': expected a boolean.", param: "logprobs", code: "invalid_type")
        case (.count(let value)?, false): count = value
        case (.flag?, false):
            throw .invalid(
                "Invalid type for 'logprobs': expected an integer (the alternatives to report per token, 0 to \(limit)).",
                param: "logprobs", code: "invalid_type")
        }
        if chat, topLogprobs != nil, count == nil {
            throw .invalid(
                "'top_logprobs' needs 'logprobs' set to true.", param: "top_logprobs", code: "invalid_value")
        }
        if !chat, topLogprobs != nil {
            throw .invalid(
                "'top_logprobs' is a chat completion field; text completions take 'logprobs': <count>.",
                param: "top_logprobs", code: "unsupported_parameter")
        }
        if let count, !(0...limit).contains(count) {
            throw .invalid(
                "Invalid '\(name)': \(count) is outside [0, \(limit)].", param: name, code: "invalid_value")
        }
        return count
    }

    /// The longest stop string accepted: the stream holds back up to this many bytes.
    static let maximumStopBytes = 1024
    /// The most stop token ids one request may name.
    static let maximumStopTokenIDs = 1024

    /// `stop_token_ids` as token ids; only after `validate` (which range-checks them).
    var stopTokens: Set<Int32> { Set((stopTokenIDs ?? []).map { Int32(truncatingIfNeeded: $0) }) }

    private func check(_ name: String, _ value: Double?, _ range: ClosedRange<Double>) throws(APIError) {
        guard let value else { return }
        guard value.isFinite, range.contains(value) else {
            throw .invalid(
                "Invalid '\(name)': \(value) is outside [\(range.lowerBound), \(range.upperBound)].", param: name,
                code: "invalid_value")
        }
    }

    /// The sampler's parameters (OpenAI defaults where the request is silent; temperature 0, the
    /// original's greedy default).
    var sampling: SamplingParameters {
        SamplingParameters(
            temperature: Float(temperature ?? 0), topK: topK ?? -1, topP: Float(topP ?? 1), minP: Float(minP ?? 0),
            repetitionPenalty: Float(repetitionPenalty ?? 1), presencePenalty: Float(presencePenalty ?? 0),
            frequencyPenalty: Float(frequencyPenalty ?? 0), seed: seed.map { UInt64(bitPattern: $0) })
    }

    /// The limit the client asked for (`max_completion_tokens` is the newer name).
    var requestedMaxTokens: Int? { maxCompletionTokens ?? maxTokens }
}

/// `POST /v1/chat/completions`.
package struct ChatCompletionRequest: Decodable {
    var messages: [ChatMessage]
    package var fields: GenerationFields
    /// `chat_template_kwargs` as `JSONDecoder` saw it: checked to be an object; its values are read
    /// again, in the client's key order, by ``templateKwargs(body:)``.
    var chatTemplateKwargs: TemplateKwargsShape?
    /// `reasoning_format` (llama.cpp's field): whether a thinking model's reasoning is split out.
    var reasoningFormat: ReasoningFormat?
    /// `tools`, `tool_choice`, `parallel_tool_calls` as decoded (read in full by ``ToolOptions``).
    var toolFields: ToolFieldsShape

    /// The unsupported-looking fields chat completions handle themselves.
    static let handledFields: Set<String> = ["tools", "tool_choice"]

    enum CodingKeys: String, CodingKey {
        case messages
        case chatTemplateKwargs = "chat_template_kwargs"
        case reasoningFormat = "reasoning_format"
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        messages = try container.decode([ChatMessage].self, forKey: .messages)
        chatTemplateKwargs = try container.decodeIfPresent(TemplateKwargsShape.self, forKey: .chatTemplateKwargs)
        reasoningFormat = try container.decodeIfPresent(ReasoningFormat.self, forKey: .reasoningFormat)
        toolFields = try ToolFieldsShape(from: decoder)
        fields = try GenerationFields(from: decoder)
    }
}

/// `reasoning_format`: what becomes of a thinking model's `<think>` block (docs/server.md, "Reasoning").
enum ReasoningFormat: String, Decodable {
    /// The default: split when the chat template is a thinking template.
    case auto
    /// llama.cpp's name for the same split (`reasoning_content` beside `content`).
    case deepseek
    /// `"none"`: no split; the tags and the reasoning stay in `content`, as the model wrote them.
    case asWritten = "none"

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let value = ReasoningFormat(rawValue: text) else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath,
                    debugDescription: "'\(text)' is not one of \"auto\", \"deepseek\", \"none\""))
        }
        self = value
    }

    /// Whether reasoning is split out of `content`.
    var splits: Bool { self != .asWritten }
}

/// `chat_template_kwargs` as the decoder checks it: a JSON object (any other value is a 400 naming
/// the field). Its values are read by ``ChatCompletionRequest/templateKwargs(body:)``.
struct TemplateKwargsShape: Decodable {
    init(from decoder: any Decoder) throws {
        _ = try decoder.container(keyedBy: AnyCodingKey.self)
    }
}

/// Any key of a JSON object.
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension ChatCompletionRequest {
    /// Variables the server itself gives the template (`apply_chat_template`'s, and Jinja2's
    /// globals), which `chat_template_kwargs` must not replace.
    static let reservedTemplateVariables: Set<String> = [
        "messages", "tools", "documents", "add_generation_prompt", "bos_token", "eos_token", "raise_exception",
        "strftime_now", "range", "dict", "namespace", "cycler", "joiner", "lipsum",
    ]
    /// Levels of nesting a `chat_template_kwargs` value may have (a template variable holds a flag,
    /// a string, or at most something shaped like a tool list).
    static let maximumTemplateKwargsDepth = 32
    /// Variables one request may set through `chat_template_kwargs`.
    static let maximumTemplateKwargs = 64

    /// `chat_template_kwargs` as template variables, read from the raw `body` so that their key
    /// order is the client's (`tojson` output depends on it); a 400 naming the field for a
    /// reserved name, too many names or too deep a value. Empty when the request has none.
    func templateKwargs(body: Data) throws(APIError) -> [String: TemplateValue] {
        guard chatTemplateKwargs != nil else { return [:] }
        let name = CodingKeys.chatTemplateKwargs.rawValue
        let kwargs: TemplateDictionary
        do {
            guard case .dictionary(let root) = try TemplateValue(jsonData: body),
                case .dictionary(let value)? = root[name]
            else { throw APIError.invalid("'\(name)' must be a JSON object.", param: name, code: "invalid_type") }
            kwargs = value
        } catch let error as APIError {
            throw error
        } catch {
            throw .invalid("Invalid value for '\(name)': \(error)", param: name, code: "invalid_value")
        }
        guard kwargs.count <= Self.maximumTemplateKwargs else {
            throw .invalid(
                "'\(name)' may set at most \(Self.maximumTemplateKwargs) variables (got \(kwargs.count)).", param: name,
                code: "invalid_value")
        }
        var variables: [String: TemplateValue] = [:]
        for (key, value) in kwargs.entries {
            guard !Self.reservedTemplateVariables.contains(key) else {
                throw .invalid(
                    "Invalid '\(name)': '\(key)' is set by the server and cannot be passed to the chat template.",
                    param: "\(name).\(key)", code: "invalid_value")
            }
            guard value.nestingDepth <= Self.maximumTemplateKwargsDepth else {
                throw .invalid(
                    "Invalid '\(name)': '\(key)' is nested deeper than \(Self.maximumTemplateKwargsDepth) levels.",
                    param: "\(name).\(key)", code: "invalid_value")
            }
            variables[key] = value
        }
        return variables
    }
}

extension TemplateValue {
    /// Levels of arrays and objects in the value (0 for a scalar).
    fileprivate var nestingDepth: Int {
        switch self {
        case .array(let items): 1 + (items.map(\.nestingDepth).max() ?? 0)
        case .dictionary(let dictionary): 1 + (dictionary.values.map(\.nestingDepth).max() ?? 0)
        default: 0
        }
    }
}

/// A chat request checked and read: everything the route needs before it renders the prompt.
package struct PreparedChat {
    /// The messages as the chat template sees them.
    package var messages: [TemplateValue]
    /// Bytes of the messages' text (to refuse a provably too long prompt before tokenising).
    package var contentBytes: Int
    /// Alternatives to report per token (nil: no log-probabilities).
    package var logprobs: Int?
    /// What the answer must follow: `response_format`, or a forced tool call.
    package var grammar: Grammar?
    /// The tools offered (nil: none, or `tool_choice` "none").
    var tools: ToolOptions?
    /// The tools the template itself renders (nil when it knows none: they are in a system prompt).
    package var templateTools: [TemplateValue]?
}

extension ChatCompletionRequest {
    /// Checks every field and reads the messages, the tools and the grammar from the raw `body`
    /// (key order kept); a 400 naming the field at fault. `syntax` and `templateRendersTools`
    /// describe the model's chat template.
    package func prepare(
        body: Data, vocabularySize: Int, syntax: ToolCallSyntax, templateRendersTools: Bool
    ) throws(APIError) -> PreparedChat {
        try fields.validate(vocabularySize: vocabularySize, handling: Self.handledFields)
        let logprobs = try fields.logprobCount(chat: true)
        var grammar = try fields.grammar(body: body)
        let tools = try ToolOptions.read(body: body, shape: toolFields)
        if let tools, let forced = try tools.grammar(syntax: syntax) {
            guard grammar == nil else {
                throw .invalid(
                    "A forced 'tool_choice' cannot be combined with 'response_format'.", param: "tool_choice",
                    code: "invalid_value")
            }
            grammar = forced
        }
        // History with calls reaches a template that knows no tools as text, offered tools or not.
        let rendering: ToolRendering = templateRendersTools ? .template : .prompt(syntax, offer: tools?.tools ?? [])
        let (messages, contentBytes) = try templateMessages(tools: rendering)
        return PreparedChat(
            messages: messages, contentBytes: contentBytes, logprobs: logprobs, grammar: grammar, tools: tools,
            templateTools: templateRendersTools ? tools?.tools : nil)
    }
}

/// How a request's tool history and offer reach the chat template.
enum ToolRendering {
    /// The template renders `tools`, `tool_calls` and tool results itself (Qwen's, Llama 3's).
    case template
    /// The template knows no tools (SmolLM2's): the offer (if any) becomes a system prompt, and
    /// calls and results become text in `syntax`.
    case prompt(ToolCallSyntax, offer: [TemplateValue])
}

extension ChatCompletionRequest {
    /// The messages as the chat template sees them (`developer` is `system`), and the bytes of
    /// their content; a 400 for an empty list, an unknown role or a missing content.
    package func templateMessages() throws(APIError) -> (messages: [TemplateValue], contentBytes: Int) {
        try templateMessages(tools: nil)
    }

    /// The messages, with tool calls and results rendered as `tools` says (nil: no tools offered;
    /// earlier calls still reach a template that knows tools).
    func templateMessages(tools: ToolRendering?) throws(APIError) -> (messages: [TemplateValue], contentBytes: Int) {
        guard !messages.isEmpty else {
            throw .invalid("'messages' must contain at least one message.", param: "messages")
        }
        var values: [TemplateValue] = []
        var contentBytes = 0
        for (index, message) in messages.enumerated() {
            guard ChatMessage.roles.contains(message.role) else {
                throw .invalid(
                    "Invalid value for 'messages[\(index)].role': '\(message.role)'; expected one of system, user, "
                        + "assistant, developer, tool.", param: "messages[\(index)].role", code: "invalid_value")
            }
            let calls = message.toolCalls ?? []
            if !calls.isEmpty && message.role != "assistant" {
                throw .invalid(
                    "Only assistant messages carry 'tool_calls'.", param: "messages[\(index)].tool_calls",
                    code: "invalid_value")
            }
            guard message.content != nil || !calls.isEmpty else {
                throw .invalid(
                    "Missing required parameter: 'messages[\(index)].content'.", param: "messages[\(index)].content",
                    code: "missing_required_parameter")
            }
            let role = message.role == "developer" ? "system" : message.role
            var content = message.content
            contentBytes += content?.utf8.count ?? 0
            var value: TemplateDictionary = ["role": .string(role)]
            // Reasoning of an earlier turn, as this server returned it: thinking templates (Qwen3)
            // read it, and decide themselves which turns keep their thinking.
            if let reasoning = message.reasoningContent {
                value["reasoning_content"] = reasoning.map { .string($0) } ?? TemplateValue.none
                contentBytes += reasoning?.utf8.count ?? 0
            }
            switch tools {
            case .prompt(let syntax, _)?:
                if !calls.isEmpty {
                    let written = calls.map {
                        syntax.render(ParsedToolCall(name: $0.function.name, arguments: $0.function.arguments))
                    }
                    content = ([content ?? ""].filter { !$0.isEmpty } + written).joined(separator: "\n")
                }
                if role == "tool" { content = "<tool_response>\n\(content ?? "")\n</tool_response>" }
            case .template?, nil:
                if !calls.isEmpty {
                    value["tool_calls"] = .array(calls.map(\.templateValue))
                    contentBytes += calls.reduce(0) { $0 + $1.function.arguments.utf8.count }
                }
                if let id = message.toolCallID { value["tool_call_id"] = .string(id) }
                if let name = message.name { value["name"] = .string(name) }
            }
            value["content"] = content.map { .string($0) } ?? TemplateValue.none
            values.append(.dictionary(value))
        }
        if case .prompt(_, let offer)? = tools, !offer.isEmpty {
            let prompt = ToolPrompt.describe(offer)
            if case .dictionary(var first) = values[0], first["role"] == .string("system"),
                case .string(let system)? = first["content"]
            {
                first["content"] = .string(system + "\n\n" + prompt)
                values[0] = .dictionary(first)
            } else {
                values.insert(.dictionary(["role": "system", "content": .string(prompt)]), at: 0)
            }
        }
        return (values, contentBytes)
    }
}

extension CompletionRequest {
    /// A prompt given as token ids, each checked against the vocabulary (nil for a text prompt).
    package func promptTokens(vocabularySize: Int) throws(APIError) -> [Int32]? {
        guard case .tokens(let tokens) = prompt else { return nil }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= vocabularySize }) {
            throw .invalid("Token id \(bad) is outside the vocabulary (0..<\(vocabularySize)).", param: "prompt")
        }
        return tokens
    }
}

/// Decodes a JSON request body; a body that does not decode is a 400 naming the field.
package func decodeRequestBody<Body: Decodable>(_ data: Data, as type: Body.Type = Body.self) throws(APIError) -> Body {
    do {
        return try JSONDecoder().decode(Body.self, from: data)
    } catch let error as DecodingError {
        throw APIError(decoding: error)
    } catch {
        throw .invalid("The body is not valid JSON: \(error)")
    }
}

/// One chat message: a role and text content (a string or a list of text parts).
struct ChatMessage: Decodable {
    static let roles: Set<String> = ["system", "developer", "user", "assistant", "tool"]

    var role: String
    var content: String?
    /// `reasoning_content`: nil when absent, `.some(nil)` when null.
    var reasoningContent: String??
    /// An assistant turn's calls.
    var toolCalls: [ToolCall]?
    /// A tool result's call, and the function's name.
    var toolCallID: String?
    var name: String?

    /// A call in the history, as OpenAI's clients send it back.
    struct ToolCall: Decodable {
        struct Function: Decodable {
            var name: String
            /// The arguments as JSON text.
            var arguments: String
        }
        var id: String?
        var type: String?
        var function: Function

        /// The call as `transformers` hands it to a template: the arguments as an object when
        /// they parse (templates write them with `tojson`), else the text.
        var templateValue: TemplateValue {
            let arguments = (try? TemplateValue(jsonString: function.arguments)) ?? .string(function.arguments)
            var call: TemplateDictionary = [:]
            if let id { call["id"] = .string(id) }
            call["type"] = "function"
            call["function"] = .dictionary(["name": .string(function.name), "arguments": arguments])
            return .dictionary(call)
        }
    }

    enum CodingKeys: String, CodingKey {
        case role, content, name
        case reasoningContent = "reasoning_content"
        case toolCalls = "tool_calls"
        case toolCallID = "tool_call_id"
    }

    private struct Part: Decodable {
        var type: String
        var text: String?
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        role = try container.decode(String.self, forKey: .role)
        toolCalls = try container.decodeIfPresent([ToolCall].self, forKey: .toolCalls)
        toolCallID = try container.decodeIfPresent(String.self, forKey: .toolCallID)
        name = try container.decodeIfPresent(String.self, forKey: .name)
        if container.contains(.reasoningContent) {
            reasoningContent = .some(try container.decodeIfPresent(String.self, forKey: .reasoningContent))
        }
        guard container.contains(.content), try !container.decodeNil(forKey: .content) else {
            content = nil
            return
        }
        if let text = try? container.decode(String.self, forKey: .content) {
            content = text
            return
        }
        guard let parts = try? container.decode([Part].self, forKey: .content) else {
            throw DecodingError.typeMismatch(
                String.self,
                .init(
                    codingPath: container.codingPath + [CodingKeys.content],
                    debugDescription: "expected a string or an array of {\"type\": \"text\", \"text\": …} parts"))
        }
        var text = ""
        for (index, part) in parts.enumerated() {
            guard part.type == "text", let partText = part.text else {
                throw DecodingError.dataCorrupted(
                    .init(
                        codingPath: container.codingPath + [CodingKeys.content, IndexKey(index)],
                        debugDescription: "only text parts ({\"type\": \"text\", \"text\": …}) are supported"))
            }
            text += partText
        }
        content = text
    }
}

/// An array position in a coding path.
struct IndexKey: CodingKey {
    var intValue: Int?
    var stringValue: String { "\(intValue ?? 0)" }
    init(_ index: Int) { intValue = index }
    init?(intValue: Int) { self.intValue = intValue }
    init?(stringValue: String) { nil }
}

/// `POST /v1/completions`: a raw prompt, no chat template.
package struct CompletionRequest: Decodable {
    /// The prompt as text or as token ids.
    enum Prompt {
        case text(String)
        case tokens([Int32])
    }

    var prompt: Prompt
    var echo: Bool?
    package var fields: GenerationFields

    enum CodingKeys: String, CodingKey { case prompt, echo }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        echo = try container.decodeIfPresent(Bool.self, forKey: .echo)
        fields = try GenerationFields(from: decoder)
        if let text = try? container.decode(String.self, forKey: .prompt) {
            prompt = .text(text)
        } else if let texts = try? container.decode([String].self, forKey: .prompt), texts.count == 1 {
            prompt = .text(texts[0])
        } else if let tokens = try? container.decode([Int32].self, forKey: .prompt) {
            prompt = .tokens(tokens)
        } else if let batches = try? container.decode([[Int32]].self, forKey: .prompt), batches.count == 1 {
            prompt = .tokens(batches[0])
        } else if !container.contains(.prompt) {
            throw DecodingError.keyNotFound(
                CodingKeys.prompt, .init(codingPath: container.codingPath, debugDescription: "prompt is required"))
        } else {
            throw DecodingError.typeMismatch(
                String.self,
                .init(
                    codingPath: container.codingPath + [CodingKeys.prompt],
                    debugDescription: "expected a string or a list of token ids (one prompt per request)"))
        }
    }
}

/// Fields of OpenAI's and vLLM's request bodies this server does not honour. A request that uses
/// one gets a 400 naming it, never an answer that silently ignored it; values that ask for
/// nothing (`"logit_bias": {}`, `"best_of": 1`, `"tools": []`) are accepted.
struct UnsupportedFields: Decodable {
    /// The fields the request used, in the order of ``fields``.
    private(set) var present: [(name: String, reason: String)] = []

    /// Each field, why it is refused, and whether a given value asks for nothing.
    private static let fields:
        [(name: String, reason: String, isNoOp: @Sendable (KeyedDecodingContainer<AnyCodingKey>) -> Bool)] = [
            ("tools", "tools are a chat completion field", { isEmptyArray($0, "tools") }),
            ("tool_choice", "tools are a chat completion field", { ($0.string("tool_choice")) == "none" }),
            (
                "functions", "the deprecated 'functions' API is not supported; send 'tools'",
                { isEmptyArray($0, "functions") }
            ),
            (
                "function_call", "the deprecated 'function_call' is not supported; send 'tool_choice'",
                {
                    $0.string("function_call") == "none"
                }
            ),
            ("logit_bias", "logit_bias is not supported by this server", { isEmptyObject($0, "logit_bias") }),
            (
                "best_of", "best_of other than 1 is not supported",
                { (try? $0.decode(Int.self, forKey: .init("best_of"))) == 1 }
            ),
            ("suffix", "suffix (insertion) is not supported", { $0.string("suffix")?.isEmpty == true }),
            (
                "modalities", "only text output is supported",
                {
                    (try? $0.decode([String].self, forKey: .init("modalities"))) == ["text"]
                }
            ),
            ("audio", "audio output is not supported", { _ in false }),
            ("prediction", "predicted outputs are not supported", { _ in false }),
            ("guided_json", "use response_format with a json_schema instead", { _ in false }),
            ("guided_regex", "regular-expression constraints are not supported", { _ in false }),
            ("guided_choice", "choice constraints are not supported", { _ in false }),
            ("guided_grammar", "grammar constraints are not supported", { _ in false }),
            ("grammar", "grammar constraints are not supported", { _ in false }),
            ("web_search_options", "web search is not supported", { _ in false }),
        ]

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        for field in Self.fields {
            let key = AnyCodingKey(field.name)
            guard container.contains(key), (try? container.decodeNil(forKey: key)) != true else { continue }
            if field.isNoOp(container) { continue }
            present.append((field.name, field.reason))
        }
    }

    /// A 400 naming the first unsupported field the request used, other than those the endpoint
    /// handles itself (`allowing`).
    func validate(allowing handled: Set<String>) throws(APIError) {
        guard let first = present.first(where: { !handled.contains($0.name) }) else { return }
        throw .invalid("'\(first.name)': \(first.reason).", param: first.name, code: "unsupported_parameter")
    }

    private static func isEmptyArray(_ container: KeyedDecodingContainer<AnyCodingKey>, _ name: String) -> Bool {
        (try? container.nestedUnkeyedContainer(forKey: .init(name)))?.count == 0
    }

    private static func isEmptyObject(_ container: KeyedDecodingContainer<AnyCodingKey>, _ name: String) -> Bool {
        (try? container.nestedContainer(keyedBy: AnyCodingKey.self, forKey: .init(name)))?.allKeys.isEmpty == true
    }
}

extension KeyedDecodingContainer<AnyCodingKey> {
    fileprivate func string(_ name: String) -> String? { try? decode(String.self, forKey: .init(name)) }
}

extension AnyCodingKey {
    init(_ name: String) { self.init(stringValue: name) }
}

/// `response_format`: free text, any JSON object, or JSON that fits a schema (the schema itself is
/// read again from the raw body, in the client's key order, by ``GenerationFields/grammar(body:)``).
struct ResponseFormat: Decodable {
    enum Kind: String, Decodable {
        case text
        case jsonObject = "json_object"
        case jsonSchema = "json_schema"
    }

    var kind: Kind
    /// `json_schema.schema` is present (checked to be an object).
    var hasSchema = false

    private struct SchemaFormat: Decodable {
        var name: String?
        var strict: Bool?
        var schema: TemplateKwargsShape?
    }

    enum CodingKeys: String, CodingKey {
        case type
        case jsonSchema = "json_schema"
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let type = try container.decode(String.self, forKey: .type)
        guard let kind = Kind(rawValue: type) else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: container.codingPath + [CodingKeys.type],
                    debugDescription: "'\(type)' is not one of \"text\", \"json_object\", \"json_schema\""))
        }
        self.kind = kind
        if kind == .jsonSchema {
            let format = try container.decode(SchemaFormat.self, forKey: .jsonSchema)
            hasSchema = format.schema != nil
        }
    }
}

extension GenerationFields {
    /// `response_format` as the grammar the output must follow (nil for free text); a 400 naming
    /// the schema keyword this server cannot enforce. `body` is the raw request, whose schema is
    /// read in the client's key order (properties are generated in that order).
    package func grammar(body: Data) throws(APIError) -> Grammar? {
        guard let responseFormat else { return nil }
        let expression: GrammarExpression
        switch responseFormat.kind {
        case .text: return nil
        case .jsonObject: expression = .anyJSONObject
        case .jsonSchema:
            guard responseFormat.hasSchema else {
                expression = .anyJSONObject
                break
            }
            guard case .dictionary(let root)? = try? TemplateValue(jsonData: body),
                case .dictionary(let format)? = root["response_format"],
                case .dictionary(let schemaFormat)? = format["json_schema"], let schema = schemaFormat["schema"]
            else { throw .invalid("'response_format.json_schema.schema' must be an object.", param: "response_format") }
            expression = .jsonSchema(schema)
        }
        do {
            return try Grammar(expression)
        } catch {
            let param = ["response_format.json_schema.schema", error.path].filter { !$0.isEmpty }.joined(separator: ".")
            let keyword = error.keyword.map { " ('\($0)')" } ?? ""
            throw .invalid(
                "Unsupported JSON schema at '\(param)'\(keyword): \(error.message)", param: param,
                code: "unsupported_schema")
        }
    }
}
