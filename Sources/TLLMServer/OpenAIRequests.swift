import Foundation
import TLLMChatTemplate
import TLLMCompute

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
    var logprobs: Bool?

    struct StreamOptions: Decodable {
        var includeUsage: Bool?
        enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }
    }

    enum CodingKeys: String, CodingKey {
        case model, temperature, seed, stop, n, stream, logprobs
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

    /// Range checks of OpenAI's API (and vLLM's for its extensions); a clear 400 for each.
    /// Every number here came from the network: nothing is converted before it is checked.
    package func validate(vocabularySize: Int) throws(APIError) {
        if let n, n != 1 {
            throw .invalid("Only n = 1 is supported (got n = \(n)).", param: "n", code: "unsupported_value")
        }
        if logprobs == true {
            throw .invalid("logprobs are not supported by this server.", param: "logprobs", code: "unsupported_value")
        }
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

extension ChatCompletionRequest {
    /// The messages as the chat template sees them (`developer` is `system`), and the bytes of
    /// their content; a 400 for an empty list, an unknown role or a missing content.
    package func templateMessages() throws(APIError) -> (messages: [TemplateValue], contentBytes: Int) {
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
            guard let content = message.content else {
                throw .invalid(
                    "Missing required parameter: 'messages[\(index)].content'.", param: "messages[\(index)].content",
                    code: "missing_required_parameter")
            }
            let role = message.role == "developer" ? "system" : message.role
            contentBytes += content.utf8.count
            var value: TemplateDictionary = ["role": .string(role), "content": .string(content)]
            // Reasoning of an earlier turn, as this server returned it: thinking templates (Qwen3)
            // read it, and decide themselves which turns keep their thinking.
            if let reasoning = message.reasoningContent {
                value["reasoning_content"] = reasoning.map { .string($0) } ?? TemplateValue.none
                contentBytes += reasoning?.utf8.count ?? 0
            }
            values.append(.dictionary(value))
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

    enum CodingKeys: String, CodingKey {
        case role, content
        case reasoningContent = "reasoning_content"
    }

    private struct Part: Decodable {
        var type: String
        var text: String?
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        role = try container.decode(String.self, forKey: .role)
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
