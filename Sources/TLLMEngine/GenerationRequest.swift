import TLLMCompute
import TLLMGrammar

/// One completion to generate: what the API layer hands the scheduler.
public struct GenerationRequest: Sendable {
    /// Unique id (also the KV cache key on every stage).
    public var id: String
    /// The prompt, already tokenized (chat template applied).
    public var promptTokens: [Int32]
    /// How tokens are chosen.
    public var sampling: SamplingParameters
    /// Tokens to generate at most.
    public var maxTokens: Int
    /// Tokens that end the completion (not part of its text).
    public var stopTokenIDs: Set<Int32>
    /// Strings that end the completion; the text stops before the first one.
    public var stopStrings: [String]
    /// Wall-clock limit from submission; nil: none.
    public var timeout: Duration?
    /// Special tokens whose text the completion keeps (special tokens are otherwise left out): a
    /// thinking model's `<think>` / `</think>` where its vocabulary marks them special.
    public var keptSpecialTokenIDs: Set<Int32>
    /// Log-probabilities to report for each generated token: nil none; n the chosen token's and
    /// the n most likely ones' (0...``GenerationRequest/maximumTopLogprobs``).
    public var logprobs: Int?
    /// What the output must match (structured outputs, forced tool calls); every sampled token
    /// keeps the output a prefix of it, and the completion ends when the grammar is complete.
    public var grammar: Grammar?

    /// The most alternatives `logprobs` may ask for (OpenAI's `top_logprobs` limit).
    public static let maximumTopLogprobs = 20

    public init(
        id: String, promptTokens: [Int32], sampling: SamplingParameters = SamplingParameters(), maxTokens: Int,
        stopTokenIDs: Set<Int32> = [], stopStrings: [String] = [], timeout: Duration? = nil,
        keptSpecialTokenIDs: Set<Int32> = [], logprobs: Int? = nil, grammar: Grammar? = nil
    ) {
        self.id = id
        self.promptTokens = promptTokens
        self.sampling = sampling
        self.maxTokens = maxTokens
        self.stopTokenIDs = stopTokenIDs
        self.stopStrings = stopStrings
        self.timeout = timeout
        self.keptSpecialTokenIDs = keptSpecialTokenIDs
        self.logprobs = logprobs
        self.grammar = grammar
    }
}

/// Why a completion ended.
public enum FinishReason: String, Sendable, CaseIterable {
    /// A stop token or stop string.
    case stop
    /// `maxTokens` reached.
    case length
    /// The request's time limit passed (the text so far is kept).
    case timeout
    /// The client went away or the server is stopping.
    case abort
}

/// The summary of a finished completion.
public struct FinishInfo: Sendable {
    public var reason: FinishReason
    public var promptTokens: Int
    /// Prompt tokens whose KV came from the prefix cache rather than being computed.
    public var cachedPromptTokens: Int
    public var completionTokens: Int
    /// From submission to the first generated token (nil when none was generated).
    public var timeToFirstToken: Duration?
    /// From the first to the last generated token.
    public var decodeTime: Duration
}

/// What a running completion reports, in order: text as it is generated, then one `finished`.
public enum GenerationEvent: Sendable {
    /// New text (never part of a stop string, never a broken UTF-8 sequence).
    case text(String)
    /// A generated token's log-probability and its most likely alternatives (requests with
    /// `logprobs` only); comes before the text the token adds, if any.
    case logprob(TokenLogprob)
    /// The end; no event follows.
    case finished(FinishInfo)
}

/// Why the scheduler refused or failed a request.
public enum SchedulerError: Error, Sendable, CustomStringConvertible {
    /// The waiting queue is full; retry later.
    case queueFull(capacity: Int)
    /// Prompt plus `maxTokens` exceed the context the server serves.
    case contextExceeded(promptTokens: Int, maxTokens: Int, limit: Int)
    /// An empty prompt, or `maxTokens` < 1.
    case invalidRequest(String)
    /// The server is shutting down.
    case shuttingDown
    /// The compute failed for this step (a stage error, a KV budget exceeded).
    case computeFailed(String)

    public var description: String {
        switch self {
        case .queueFull(let capacity): "the server is busy: \(capacity) requests are already waiting"
        case .contextExceeded(let prompt, let maxTokens, let limit):
            "this model's maximum context length is \(limit) tokens, but \(prompt) prompt tokens and "
                + "\(maxTokens) completion tokens were requested"
        case .invalidRequest(let message): message
        case .shuttingDown: "the server is shutting down"
        case .computeFailed(let message): "the model failed to compute this request: \(message)"
        }
    }
}
