/// Splits a thinking model's completion into its reasoning and its answer, as OpenAI-compatible
/// servers return them (`reasoning_content` beside `content`; docs/server.md, "Reasoning").
///
/// Thinking templates (Qwen3, QwQ, the DeepSeek-R1 distills) have the model write its reasoning
/// between `<think>` and `</think>`, then the answer. The block is opened either by the model, as
/// the first thing it writes (whitespace before the tag allowed), or by the template, whose
/// generation prompt ends in `<think>`: then the completion starts inside the block. Text inside
/// the block is reasoning; text after `</think>` is the answer. Newlines just inside the tags and
/// just after `</think>` are dropped (the template writes them back when it renders the turn
/// again). A completion whose first text is not `<think>` is all answer, tags and all; one that
/// never closes its block (cut by `max_tokens`) is all reasoning.
///
/// Works on what ``TextStream`` released (stop strings already applied, valid UTF-8). A tag split
/// across deltas is never released in part: like a stop string, the longest suffix that could
/// still begin one is held back until the next delta or the end decides it. Tags are ASCII and
/// every cut falls before a tag or a newline, so each released piece is valid text.
public struct ReasoningSplitter: Sendable {
    /// What one step released: reasoning, answer, or both (reasoning first).
    public struct Delta: Sendable, Equatable {
        /// Text of the thinking block.
        public var reasoning = ""
        /// Text of the answer.
        public var content = ""

        /// Nothing released.
        public var isEmpty: Bool { reasoning.isEmpty && content.isEmpty }

        /// A delta of the given parts.
        public init(reasoning: String = "", content: String = "") {
            self.reasoning = reasoning
            self.content = content
        }
    }

    /// The tag that opens a thinking block.
    public static let openTag = "<think>"
    /// The tag that closes it.
    public static let closeTag = "</think>"

    /// Whether a chat template is a thinking template: its source mentions both tags. Templates
    /// that make the model think write them (to open the block in the prompt, to strip old blocks
    /// from the history, to close an empty block when thinking is off); others have no reason to.
    public static func isThinkingTemplate(_ source: String) -> Bool {
        source.contains(openTag) && source.contains(closeTag)
    }

    /// Whether a rendered prompt leaves a thinking block open for the completion: it ends in
    /// `<think>`, whitespace after it aside (QwQ's and DeepSeek-R1's generation prompts; Qwen3's
    /// with thinking off ends in a closed empty block instead).
    public static func promptOpensReasoning(_ prompt: String) -> Bool {
        var bytes = Array(prompt.utf8)
        while let last = bytes.last, isWhitespace(last) { bytes.removeLast() }
        return bytes.count >= open.count && bytes.suffix(open.count).elementsEqual(open)
    }

    private enum State {
        /// At the start of a completion whose prompt left no block open: the model may open one.
        case start
        /// Inside the block; `atStart` until its first text is released (leading newlines dropped).
        case reasoning(atStart: Bool)
        /// Just after `</think>`: newlines are dropped.
        case afterReasoning
        /// The answer: everything passes.
        case content
    }

    private static let open = Array(openTag.utf8)
    private static let close = Array(closeTag.utf8)
    private var state: State
    private var pending: [UInt8] = []

    /// A splitter for a completion that starts inside a thinking block (`startsInside`, the prompt
    /// opened it) or before one.
    public init(startsInside: Bool) {
        state = startsInside ? .reasoning(atStart: true) : .start
    }

    /// A splitter for a completion of `prompt`, the rendered chat prompt (see ``promptOpensReasoning(_:)``).
    public init(prompt: String) {
        self.init(startsInside: Self.promptOpensReasoning(prompt))
    }

    /// Adds released text; returns what can be told apart now.
    public mutating func append(_ text: String) -> Delta {
        pending.append(contentsOf: text.utf8)
        return release(final: false)
    }

    /// The held-back rest at the end of the completion.
    public mutating func finish() -> Delta {
        release(final: true)
    }

    private mutating func release(final: Bool) -> Delta {
        var reasoning: [UInt8] = []
        var content: [UInt8] = []
        loop: while true {
            switch state {
            case .start:
                let body = pending.drop(while: Self.isWhitespace)
                if body.starts(with: Self.open) {
                    pending.removeSubrange(..<(body.startIndex + Self.open.count))
                    state = .reasoning(atStart: true)
                } else if !final && Self.open.starts(with: body) {
                    break loop  // whitespace, or the beginning of `<think>`: wait for more
                } else {
                    state = .content
                }
            case .reasoning(let atStart):
                if atStart { pending.removeFirst(pending.prefix(while: Self.isNewline).count) }
                if let end = Self.firstIndex(of: Self.close, in: pending) {
                    reasoning += Self.droppingTrailingNewlines(pending[..<end])
                    pending.removeSubrange(..<(end + Self.close.count))
                    state = .afterReasoning
                    continue
                }
                let keep = final ? Self.trailingNewlines(pending) : heldBackLength()
                let released = pending[..<(pending.count - keep)]
                reasoning += released
                if !released.isEmpty { state = .reasoning(atStart: false) }
                pending.removeFirst(released.count)
                if final { pending.removeAll() }
                break loop
            case .afterReasoning:
                pending.removeFirst(pending.prefix(while: Self.isNewline).count)
                guard !pending.isEmpty else { break loop }
                state = .content
            case .content:
                content += pending
                pending.removeAll()
                break loop
            }
        }
        return Delta(
            reasoning: String(decoding: reasoning, as: UTF8.self), content: String(decoding: content, as: UTF8.self))
    }

    /// Inside the block: the longest suffix that could still begin `</think>`, with the newlines
    /// before it (dropped if the tag follows, released as reasoning if not).
    private func heldBackLength() -> Int {
        var tag = min(pending.count, Self.close.count - 1)
        while tag > 0, !pending.suffix(tag).elementsEqual(Self.close.prefix(tag)) { tag -= 1 }
        return tag + Self.trailingNewlines(pending.dropLast(tag))
    }

    private static func firstIndex(of tag: [UInt8], in bytes: [UInt8]) -> Int? {
        guard bytes.count >= tag.count else { return nil }
        return (0...(bytes.count - tag.count)).first {
            bytes[$0] == tag[0] && bytes[$0..<($0 + tag.count)].elementsEqual(tag)
        }
    }

    private static func trailingNewlines(_ bytes: some BidirectionalCollection<UInt8>) -> Int {
        bytes.reversed().prefix(while: isNewline).count
    }

    private static func droppingTrailingNewlines(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        bytes.dropLast(trailingNewlines(bytes))
    }

    private static func isNewline(_ byte: UInt8) -> Bool { byte == 0x0A || byte == 0x0D }

    private static func isWhitespace(_ byte: UInt8) -> Bool { isNewline(byte) || byte == 0x20 || byte == 0x09 }
}
