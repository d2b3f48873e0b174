import TLLMCompute
import TLLMTokenizer

/// Writes generated tokens' log-probabilities in OpenAI's two shapes: chat's list of entries
/// (`{"content": [{token, logprob, bytes, top_logprobs}]}`) and text completions' columns
/// (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).
struct LogprobFormatter: Sendable {
    let tokenizer: Tokenizer
    /// Characters of the completion's text before the next token (`text_offset`): the echoed
    /// prompt, then each token's text as it decodes alone.
    var offset: Int

    /// OpenAI's stand-in for an impossible token's log-probability (JSON has no -infinity).
    static let impossible = -9999.0

    /// A token's text as it decodes alone (a piece of a character shows as U+FFFD) and its bytes.
    private func describe(_ token: Int32) -> (text: String, bytes: [UInt8]) {
        let bytes = tokenizer.tokenBytes(token)
        return (String(decoding: bytes, as: UTF8.self), bytes)
    }

    private static func number(_ logprob: Float) -> JSONValue {
        logprob.isFinite ? .double(Double(logprob)) : .double(impossible)
    }

    /// Chat's `logprobs`: null when the request did not ask for them.
    func chat(_ entries: [TokenLogprob]?) -> JSONValue {
        guard let entries else { return .null }
        func entry(_ token: Int32, _ logprob: Float) -> [(String, JSONValue)] {
            let (text, bytes) = describe(token)
            return [
                ("token", .string(text)), ("logprob", Self.number(logprob)),
                ("bytes", .array(bytes.map { .int(Int($0)) })),
            ]
        }
        let content = entries.map { item in
            JSONValue.object(
                entry(item.token, item.logprob) + [
                    ("top_logprobs", .array(item.top.map { JSONValue.object(entry($0.token, $0.logprob)) }))
                ])
        }
        return .object([("content", .array(content)), ("refusal", .null)])
    }

    /// Text completions' `logprobs`: null when the request did not ask for them. Two alternatives
    /// that decode to the same text keep the likelier one (the shape is keyed by text).
    mutating func completion(_ entries: [TokenLogprob]?) -> JSONValue {
        guard let entries else { return .null }
        var tokens: [JSONValue] = []
        var logprobs: [JSONValue] = []
        var tops: [JSONValue] = []
        var offsets: [JSONValue] = []
        for item in entries {
            let text = describe(item.token).text
            tokens.append(.string(text))
            logprobs.append(Self.number(item.logprob))
            var seen: Set<String> = []
            var top: [(String, JSONValue)] = []
            for alternative in item.top {
                let alternativeText = describe(alternative.token).text
                if seen.insert(alternativeText).inserted {
                    top.append((alternativeText, Self.number(alternative.logprob)))
                }
            }
            tops.append(.object(top))
            offsets.append(.int(offset))
            offset += text.count
        }
        return .object([
            ("tokens", .array(tokens)), ("token_logprobs", .array(logprobs)), ("top_logprobs", .array(tops)),
            ("text_offset", .array(offsets)),
        ])
    }
}
