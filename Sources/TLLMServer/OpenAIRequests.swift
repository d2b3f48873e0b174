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

    enum CodingKeys: String, CodingKey { case messages }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        messages = try container.decode([ChatMessage].self, forKey: .messages)
        fields = try GenerationFields(from: decoder)
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
            values.append(.dictionary(["role": .string(role), "content": .string(content)]))
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

    enum CodingKeys: String, CodingKey { case role, content }

    private struct Part: Decodable {
        var type: String
        var text: String?
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        role = try container.decode(String.self, forKey: .role)
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
