import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import TLLMChatTemplate
import TLLMCluster
import TLLMCompute
import TLLMEngine
import TLLMGrammar
import TLLMModel
import TLLMModelFiles
import TLLMTokenizer

/// The master's HTTP API (tllm-protocol.md §4): OpenAI chat and text completions with SSE
/// streaming, the model list, version and health. Generation goes to the scheduler.
public struct OpenAIService: Sendable {
    /// This process's identity on `/health` (a new one after every start).
    static let instance = UUID().uuidString.lowercased()

    /// What the service needs besides the model.
    public struct Options: Sendable {
        /// Prompt + completion tokens at most.
        public var maxModelLength: Int
        /// Request bodies beyond this get 413.
        public var maxBodyBytes: Int
        /// When set, every route but `/`, `/health`, `/version` (and the registration routes, which
        /// the cluster key guards) requires `Authorization: Bearer <key>`.
        public var apiKey: String?
        /// When set, the registration routes require `Authorization: Bearer <key>`.
        public var clusterKey: String?
        /// `/metrics` without the API key (for a Prometheus scraper).
        public var publicMetrics: Bool
        /// The original's defaults: `max_tokens` 16, raised to the model length for `Bearer anythingllm`.
        public var compatDefaults: Bool
        /// Wall-clock limit of a request, nil: none.
        public var requestTimeout: Duration?

        public init(
            maxModelLength: Int, maxBodyBytes: Int = 8 << 20, apiKey: String? = nil, clusterKey: String? = nil,
            publicMetrics: Bool = false, compatDefaults: Bool = false, requestTimeout: Duration? = nil
        ) {
            self.clusterKey = clusterKey
            self.publicMetrics = publicMetrics
            self.maxModelLength = maxModelLength
            self.maxBodyBytes = maxBodyBytes
            self.apiKey = apiKey
            self.compatDefaults = compatDefaults
            self.requestTimeout = requestTimeout
        }
    }

    let bundle: ModelBundle
    let scheduler: Scheduler
    let cluster: ClusterController
    /// The remote pipeline in cluster mode (generation answers 503 until it has a route); nil in local mode.
    let remote: PipelineSwitch?
    let options: Options
    /// `/metrics`, when a metrics backend was bootstrapped.
    let metrics: MetricsEndpoint?
    let logger: Logger
    let created = Int(Date().timeIntervalSince1970)
    /// Whether the chat template is a thinking template (``ReasoningSplitter/isThinkingTemplate(_:)``):
    /// chat completions then return the `<think>` block as `reasoning_content`.
    let thinks: Bool
    /// `<think>` / `</think>` where the vocabulary has them as special tokens, which the
    /// completion's text must keep for the split (empty for other models).
    let reasoningTagTokens: Set<Int32>
    /// How the model writes tool calls (from its chat template).
    let toolSyntax: ToolCallSyntax
    /// Whether the chat template renders `tools` itself; else tools are offered in a system prompt.
    let templateRendersTools: Bool

    /// A service for `bundle` whose generations run on `scheduler`; `remote` is the cluster
    /// pipeline the scheduler uses, if any (without a route, generation answers 503).
    public init(
        bundle: ModelBundle, scheduler: Scheduler, cluster: ClusterController, remote: PipelineSwitch?,
        options: Options, metrics: MetricsEndpoint? = nil, logger: Logger
    ) {
        self.bundle = bundle
        self.scheduler = scheduler
        self.cluster = cluster
        self.remote = remote
        self.options = options
        self.metrics = metrics
        self.logger = logger
        thinks = bundle.chatTemplate.map { ReasoningSplitter.isThinkingTemplate($0.source) } ?? false
        toolSyntax = ToolCallSyntax.detect(templateSource: bundle.chatTemplate?.source ?? "")
        templateRendersTools = bundle.chatTemplate?.source.contains("tools") ?? false
        let tokenizer = bundle.tokenizer
        reasoningTagTokens =
            thinks
            ? Set(
                [ReasoningSplitter.openTag, ReasoningSplitter.closeTag].compactMap { tag in
                    let ids = tokenizer.encode(tag, addSpecialTokens: false)
                    return ids.count == 1 && tokenizer.isSpecial(ids[0]) ? ids[0] : nil
                }) : []
    }

    /// The router with every route of §4 and the error / API-key middleware in front.
    public func makeRouter() -> Router<ServerRequestContext> {
        let router = Router(context: ServerRequestContext.self)
        router.add(
            middleware: OpenAIErrorMiddleware(
                apiKey: options.apiKey, clusterKey: options.clusterKey, publicMetrics: options.publicMetrics,
                logger: logger))
        // The instance header tells workers a restarted master from the one they registered with
        // (a restart quicker than their 30 s check would otherwise go unnoticed).
        let instance: HTTPFields = [HTTPField.Name(MasterConnection.instanceHeader)!: Self.instance]
        router.get("/health") { _, _ in Response(status: .ok, headers: instance) }
        router.get("/") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: PackageResources.index_html)))
        }
        if let metrics {
            router.get("/metrics") { _, _ in
                Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                    body: ResponseBody(byteBuffer: ByteBuffer(string: await metrics.render())))
            }
        }
        router.get("/version") { _, _ in Self.json(.object([("version", .double(0.1))])) }
        router.get("/v1/models") { _, _ in Self.json(.object([("object", "list"), ("data", .array([modelCard]))])) }
        router.get("/v1/models/{id}") { _, context in
            guard context.parameters.get("id") == bundle.name else {
                throw APIError(
                    .notFound, "The model '\(context.parameters.get("id") ?? "")' does not exist.", param: "model",
                    code: "model_not_found")
            }
            return Self.json(modelCard)
        }
        // The monitor is a WebSocket (upgraded before routing); this route answers requests that
        // were not upgraded: 401 without the key (middleware), else a clear 400.
        router.get("/ws/monitor") { _, _ -> Response in
            throw APIError.invalid("WS /ws/monitor is a WebSocket: send an Upgrade request.")
        }
        router.post("/v1/chat/completions") { request, context in try await chatCompletion(request, context) }
        router.post("/v1/completions") { request, context in try await textCompletion(request, context) }
        router.post("/register_client") { request, context in
            let registration: WorkerRegistry.Registration = try await decode(request)
            do throws(WorkerRegistry.InvalidRegistrationField) {
                try registration.validate(totalLayers: cluster.registry.totalLayers)
            } catch {
                throw APIError.invalid(error.description, param: error.field, code: "invalid_value")
            }
            let answer = await cluster.register(registration, localHost: context.channel.localAddress?.ipAddress)
            return Self.json(
                .object([
                    ("pp_rank", .int(answer.ppRank)), ("start_idx", .int(answer.startIndex)),
                    ("end_idx", .int(answer.endIndex)), ("msg", .optional(answer.message)),
                    ("repo_path", .optional(answer.repoPath)),
                    // Extension: the same instance as /health's header, so a worker knows which
                    // master process accepted it without a second call that could fail.
                    ("instance", .string(Self.instance)),
                ]))
        }
        router.post("/init_model") { request, context in
            let report: InitModelReport = try await decode(request)
            do throws(WorkerRegistry.InvalidRegistrationField) {
                try WorkerRegistry.InvalidRegistrationField.checkLayers(
                    ppRank: report.ppRank, startIndex: report.startIndex, endIndex: report.endIndex,
                    totalLayers: cluster.registry.totalLayers, allowUnset: false)
            } catch {
                throw APIError.invalid(error.description, param: error.field, code: "invalid_value")
            }
            let known = await cluster.workerInitialized(
                clientID: report.clientID, ppRank: report.ppRank, layers: report.startIndex..<report.endIndex,
                localHost: context.channel.localAddress?.ipAddress)
            // The original answers in the body (status 499 for an unknown client) with HTTP 200.
            return Self.json(
                known
                    ? .object([("msg", "success"), ("status", 200)])
                    : .object([("msg", "client not found"), ("status", 499)]))
        }
        return router
    }

    private var modelCard: JSONValue {
        .object([
            ("id", .string(bundle.name)), ("object", "model"), ("created", .int(created)), ("owned_by", "tllm"),
            ("root", .string(bundle.name)), ("parent", .null), ("max_model_len", .int(options.maxModelLength)),
            (
                "permission",
                .array([
                    .object([
                        ("id", .string("modelperm-\(bundle.name)")), ("object", "model_permission"),
                        ("created", .int(created)), ("allow_create_engine", false), ("allow_sampling", true),
                        ("allow_logprobs", true), ("allow_search_indices", false), ("allow_view", true),
                        ("allow_fine_tuning", false), ("organization", "*"), ("group", .null), ("is_blocking", false),
                    ])
                ])
            ),
        ])
    }

    // MARK: Completions

    /// What differs between the two completion endpoints.
    private struct Endpoint {
        var idPrefix: String
        var object: String
        var chunkObject: String
        /// A choice of a full response.
        var choice: @Sendable (_ text: ChoiceText, _ finish: FinishReason, _ state: inout ChoiceState) -> JSONValue
        /// A choice of a stream chunk; `first` is the opening chunk, `finish` the closing one's reason.
        var chunkChoice:
            @Sendable (_ text: ChoiceText, _ first: Bool, _ finish: FinishReason?, _ state: inout ChoiceState) ->
                JSONValue
    }

    private static let chat = Endpoint(
        idPrefix: "chatcmpl-", object: "chat.completion", chunkObject: "chat.completion.chunk",
        choice: { text, finish, state in
            // With tool calls and no other text, `content` is null, as OpenAI writes it.
            let content: JSONValue =
                !text.toolCalls.isEmpty && text.content.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
                ? .null : .string(text.content)
            var message: [(String, JSONValue)] = [("role", "assistant"), ("content", content)]
            if let reasoning = text.reasoning {
                message.append(("reasoning_content", reasoning.isEmpty ? .null : .string(reasoning)))
            }
            if !text.toolCalls.isEmpty {
                message.append(("tool_calls", state.toolCalls(text.toolCalls, streamed: false)))
            }
            return .object([
                ("index", 0), ("message", .object(message)), ("logprobs", state.logprobs.chat(text.logprobs)),
                ("finish_reason", .string(state.finishName(finish))), ("stop_reason", finish.stopReason),
            ])
        },
        chunkChoice: { text, first, finish, state in
            var delta: [(String, JSONValue)] = []
            if first {
                delta = [("role", "assistant"), ("content", .string(text.content))]
            } else if finish == nil {
                // A thinking model's delta carries the parts it has; another model's always `content`.
                if let reasoning = text.reasoning, !reasoning.isEmpty {
                    delta.append(("reasoning_content", .string(reasoning)))
                }
                if (text.reasoning == nil && text.toolCalls.isEmpty) || !text.content.isEmpty {
                    delta.append(("content", .string(text.content)))
                }
                if !text.toolCalls.isEmpty {
                    delta.append(("tool_calls", state.toolCalls(text.toolCalls, streamed: true)))
                }
            }
            var members: [(String, JSONValue)] = [
                ("index", 0), ("delta", .object(delta)), ("logprobs", state.logprobs.chat(text.logprobs)),
                ("finish_reason", .optional(finish.map(state.finishName))),
            ]
            if let finish { members.append(("stop_reason", finish.stopReason)) }
            return .object(members)
        })

    private static let text = Endpoint(
        idPrefix: "cmpl-", object: "text_completion", chunkObject: "text_completion",
        choice: { text, finish, state in
            .object([
                ("index", 0), ("text", .string(text.content)), ("logprobs", state.logprobs.completion(text.logprobs)),
                ("finish_reason", .string(finish.openAIName)),
                ("stop_reason", finish.stopReason),
            ])
        },
        chunkChoice: { text, _, finish, state in
            var members: [(String, JSONValue)] = [
                ("index", 0), ("text", .string(text.content)), ("logprobs", state.logprobs.completion(text.logprobs)),
                ("finish_reason", .optional(finish?.openAIName)),
            ]
            if let finish { members.append(("stop_reason", finish.stopReason)) }
            return .object(members)
        })

    private func chatCompletion(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let data = try await collectBody(request)
        let body: ChatCompletionRequest = try decodeRequestBody(data)
        let chat = try body.prepare(
            body: data, vocabularySize: vocabularySize, syntax: toolSyntax, templateRendersTools: templateRendersTools)
        let (messages, templateTools) = (chat.messages, chat.templateTools)
        let kwargs = try body.templateKwargs(body: data)
        try refuseIfProvablyTooLong(textBytes: chat.contentBytes, param: "messages")
        let rendered: String
        do {
            rendered = try bundle.renderChat(messages: messages, tools: templateTools, extra: kwargs)
        } catch {
            // Blame the variables only when the messages render without them.
            if !kwargs.isEmpty, (try? bundle.renderChat(messages: messages, tools: templateTools)) != nil {
                throw APIError.invalid(
                    "The chat template could not render with these chat_template_kwargs: \(error)",
                    param: "chat_template_kwargs")
            }
            throw APIError.invalid("The chat template could not render these messages: \(error)", param: "messages")
        }
        let splitter = thinks && body.reasoningFormat?.splits != false ? ReasoningSplitter(prompt: rendered) : nil
        return try await complete(
            request, context, prompt: bundle.chatPromptTokens(rendered), fields: body.fields, endpoint: Self.chat,
            echo: nil, logprobs: chat.logprobs, grammar: chat.grammar, reasoning: splitter,
            tools: chat.tools.map { ToolCallStream(syntax: toolSyntax, functions: $0.functions.map(\.name)) })
    }

    private func textCompletion(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let data = try await collectBody(request)
        let body: CompletionRequest = try decodeRequestBody(data)
        try body.fields.validate(vocabularySize: vocabularySize)
        let logprobs = try body.fields.logprobCount(chat: false)
        let grammar = try body.fields.grammar(body: data)
        let prompt: [Int32]
        let echo: String?
        switch body.prompt {
        case .text(let text):
            try refuseIfProvablyTooLong(textBytes: text.utf8.count, param: "prompt")
            prompt = bundle.tokenizer.encode(text, addSpecialTokens: true)
            echo = body.echo == true ? text : nil
        case .tokens:
            prompt = try body.promptTokens(vocabularySize: vocabularySize) ?? []
            echo = body.echo == true ? bundle.tokenizer.decode(prompt) : nil
        }
        guard !prompt.isEmpty else { throw APIError.invalid("The prompt is empty.", param: "prompt") }
        return try await complete(
            request, context, prompt: prompt, fields: body.fields, endpoint: Self.text, echo: echo, logprobs: logprobs,
            grammar: grammar)
    }

    private var vocabularySize: Int { bundle.weights.configuration.vocabularySize }

    /// Refuses text whose bytes alone prove it longer than the context, before the tokenizer
    /// spends time on it. A token stands for at most `longestTokenBytes` bytes after
    /// normalisation, which can shrink text by at most 4:1 (UTF-8), hence the factor.
    private func refuseIfProvablyTooLong(textBytes: Int, param: String) throws(APIError) {
        let atLeast = textBytes / (bundle.tokenizer.longestTokenBytes * 4)
        guard atLeast < options.maxModelLength else {
            throw .invalid(
                "This model's maximum context length is \(options.maxModelLength) tokens, but the prompt's "
                    + "\(textBytes) bytes make at least \(atLeast) tokens.", param: param,
                code: "context_length_exceeded")
        }
    }

    /// Submits a prompt and answers with one JSON response or an SSE stream.
    private func complete(
        _ request: Request, _ context: ServerRequestContext, prompt: [Int32], fields: GenerationFields,
        endpoint: Endpoint, echo: String?, logprobs: Int?, grammar: Grammar?, reasoning: ReasoningSplitter? = nil,
        tools: ToolCallStream? = nil
    ) async throws -> Response {
        if let remote, await !remote.isAvailable {
            var error = APIError(
                .serviceUnavailable, "No available Full Node to process the request", code: "no_pipeline")
            error.headers[.retryAfter] = "5"  // workers register within a health-check period
            throw error
        }
        let limit = options.maxModelLength
        guard prompt.count < limit else {
            throw APIError.invalid(
                "This model's maximum context length is \(limit) tokens, but the prompt has \(prompt.count) tokens.",
                param: "messages", code: "context_length_exceeded")
        }
        let maxTokens = fields.requestedMaxTokens ?? defaultMaxTokens(request, promptTokens: prompt.count)
        var stops = fields.stopTokens
        if fields.ignoreEOS != true { stops.formUnion(bundle.stopTokenIDs) }
        let id = endpoint.idPrefix + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let generation = GenerationRequest(
            id: id, promptTokens: prompt, sampling: fields.sampling, maxTokens: maxTokens, stopTokenIDs: stops,
            stopStrings: fields.stop?.values ?? [], timeout: options.requestTimeout,
            keptSpecialTokenIDs: reasoningTagTokens, logprobs: logprobs, grammar: grammar)
        let events: AsyncThrowingStream<GenerationEvent, any Error>
        do {
            events = try await scheduler.submit(generation)
        } catch let error as SchedulerError {
            throw APIError(schedulerError: error)
        }
        // A client that leaves aborts its request at the next step, whether or not text is flowing.
        let signal = await context.disconnectSignal()
        let watch = signal?.onDisconnect { Task { await scheduler.abort(id) } }
        let stopWatching: @Sendable () -> Void = { if let watch { signal?.cancel(watch) } }
        let header = ResponseHeader(id: id, created: Int(Date().timeIntervalSince1970), model: bundle.name)
        var splitter = ChoiceTextSplitter(reasoning, tools: tools)
        var state = ChoiceState(logprobs: LogprobFormatter(tokenizer: bundle.tokenizer, offset: echo?.count ?? 0))
        if fields.stream == true {
            return streamResponse(
                events: events, header: header, endpoint: endpoint, echo: echo, splitter: splitter,
                state: state, reportsLogprobs: logprobs != nil,
                includeUsage: fields.streamOptions?.includeUsage == true, finally: stopWatching)
        }
        defer { stopWatching() }
        var text = ChoiceText(
            content: echo ?? "", reasoning: reasoning.map { _ in "" }, logprobs: logprobs.map { _ in [] })
        do {
            for try await event in events {
                switch event {
                case .text(let delta): text.append(splitter.append(delta))
                case .logprob(let entry): text.logprobs?.append(entry)
                case .finished(let info):
                    text.append(splitter.finish())
                    return Self.json(
                        header.object(
                            endpoint.object, choices: [endpoint.choice(text, info.reason, &state)],
                            usage: info.usage))
                }
            }
        } catch let error as SchedulerError {
            throw APIError(schedulerError: error)
        }
        throw APIError(.internalServerError, "the generation ended without a result")
    }

    /// An SSE response; the stream is dropped (and the request aborted) if a write fails.
    private func streamResponse(
        events: AsyncThrowingStream<GenerationEvent, any Error>, header: ResponseHeader, endpoint: Endpoint,
        echo: String?, splitter: ChoiceTextSplitter, state: ChoiceState, reportsLogprobs: Bool,
        includeUsage: Bool, finally: @escaping @Sendable () -> Void
    ) -> Response {
        let logger = logger
        let body = ResponseBody { writer in
            defer { finally() }
            var splitter = splitter
            var state = state
            func send(_ value: JSONValue) async throws {
                try await writer.write(ByteBuffer(string: "data: \(value.serialized)\n\n"))
            }
            func chunk(_ choices: [JSONValue], usage: JSONValue = .null) -> JSONValue {
                header.object(endpoint.chunkObject, choices: choices, usage: includeUsage ? usage : nil)
            }
            try await send(chunk([endpoint.chunkChoice(ChoiceText(content: echo ?? ""), true, nil, &state)]))
            // Log-probabilities of tokens whose text has not gone out yet (held back by a stop
            // string's prefix, or a token that ends no character): they ride with the next text.
            var pending: [TokenLogprob]? = reportsLogprobs ? [] : nil
            do {
                for try await event in events {
                    switch event {
                    case .text(let delta):
                        var text = splitter.append(delta)
                        if !text.isEmpty {
                            text.logprobs = pending
                            pending = pending.map { _ in [] }
                            try await send(chunk([endpoint.chunkChoice(text, false, nil, &state)]))
                        }
                    case .logprob(let entry): pending?.append(entry)
                    case .finished(let info):
                        var rest = splitter.finish()
                        if !rest.isEmpty || pending?.isEmpty == false {
                            rest.logprobs = pending
                            try await send(chunk([endpoint.chunkChoice(rest, false, nil, &state)]))
                        }
                        try await send(chunk([endpoint.chunkChoice(ChoiceText(), false, info.reason, &state)]))
                        if includeUsage { try await send(chunk([], usage: info.usage)) }
                    }
                }
            } catch let error as SchedulerError {
                // Headers are gone: the error travels as an event, as OpenAI's streams do.
                logger.error("request \(header.id) failed mid-stream: \(error)")
                try await send(APIError(schedulerError: error).json)
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
        }
        return Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }

    /// `max_tokens` when the request has none: the rest of the context (what OpenAI clients
    /// expect), or the original's 16 with `--compat_defaults`.
    private func defaultMaxTokens(_ request: Request, promptTokens: Int) -> Int {
        let rest = options.maxModelLength - promptTokens
        guard options.compatDefaults else { return rest }
        return request.headers[.authorization] == "Bearer anythingllm" ? rest : min(16, rest)
    }

    private func decode<Body: Decodable>(_ request: Request) async throws -> Body {
        try decodeRequestBody(try await collectBody(request))
    }

    /// The request body, at most `--max_body_bytes` of it (413 beyond).
    private func collectBody(_ request: Request) async throws -> Data {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: options.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError(
                .contentTooLarge, "The request body is larger than the limit of \(options.maxBodyBytes) bytes.",
                code: "request_too_large")
        }
        return Data(buffer.readableBytesView)
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: value.serialized)))
    }
}

/// The text of a choice, or of a delta of one: the answer, for a thinking model its reasoning,
/// and the tool calls read out of the answer.
private struct ChoiceText: Sendable {
    var content = ""
    /// nil: the model does not think aloud, and responses have no `reasoning_content` at all.
    var reasoning: String?
    /// The tokens' log-probabilities; nil when the request did not ask for them (`logprobs: null`).
    var logprobs: [TokenLogprob]?
    var toolCalls: [ParsedToolCall] = []

    /// Nothing to send.
    var isEmpty: Bool { content.isEmpty && (reasoning ?? "").isEmpty && toolCalls.isEmpty }

    /// Adds a later piece.
    mutating func append(_ piece: ChoiceText) {
        content += piece.content
        if let more = piece.reasoning { reasoning = (reasoning ?? "") + more }
        toolCalls += piece.toolCalls
    }
}

/// Routes a completion's text to `content`, through a ``ReasoningSplitter`` when the chat
/// template thinks aloud, then through a ``ToolCallStream`` when the request offers tools.
private struct ChoiceTextSplitter: Sendable {
    private var splitter: ReasoningSplitter?
    private var tools: ToolCallStream?

    init(_ splitter: ReasoningSplitter?, tools: ToolCallStream? = nil) {
        self.splitter = splitter
        self.tools = tools
    }

    /// The parts of a text delta that can be told apart now.
    mutating func append(_ text: String) -> ChoiceText {
        var piece = ChoiceText(content: text)
        if var splitter {
            let delta = splitter.append(text)
            piece = ChoiceText(content: delta.content, reasoning: delta.reasoning)
            self.splitter = splitter
        }
        return readingCalls(piece, final: false)
    }

    /// What the splitters held back, at the end.
    mutating func finish() -> ChoiceText {
        var piece = ChoiceText()
        if var splitter {
            let delta = splitter.finish()
            piece = ChoiceText(content: delta.content, reasoning: delta.reasoning)
            self.splitter = splitter
        }
        return readingCalls(piece, final: true)
    }

    private mutating func readingCalls(_ piece: ChoiceText, final: Bool) -> ChoiceText {
        guard var tools else { return piece }
        defer { self.tools = tools }
        var piece = piece
        var (content, calls) = tools.append(piece.content)
        if final {
            let (rest, last) = tools.finish()
            content += rest
            calls += last
        }
        piece.content = content
        piece.toolCalls = calls
        return piece
    }
}

/// What one choice's rendering carries from chunk to chunk: log-probability offsets and the
/// tool calls sent so far (their `index` in a stream).
private struct ChoiceState: Sendable {
    var logprobs: LogprobFormatter
    var toolCallsSent = 0

    /// `finish_reason`: "tool_calls" when the answer ended by calling tools.
    func finishName(_ finish: FinishReason) -> String {
        finish == .stop && toolCallsSent > 0 ? "tool_calls" : finish.openAIName
    }

    /// `tool_calls` of a message (whole: `streamed` false) or of a delta, numbering the calls.
    mutating func toolCalls(_ calls: [ParsedToolCall], streamed: Bool) -> JSONValue {
        .array(
            calls.map { call in
                defer { toolCallsSent += 1 }
                let id = "call_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(24)
                let function: JSONValue = .object([
                    ("name", .string(call.name)), ("arguments", .string(call.arguments)),
                ])
                var members: [(String, JSONValue)] = []
                if streamed { members.append(("index", .int(toolCallsSent))) }
                members += [("id", .string(String(id))), ("type", "function"), ("function", function)]
                return .object(members)
            })
    }
}

/// `POST /init_model` body: a worker has loaded its layers.
private struct InitModelReport: Decodable {
    var clientID: String
    var ppRank: Int
    var startIndex: Int
    var endIndex: Int

    enum CodingKeys: String, CodingKey {
        case clientID = "client_id", ppRank = "pp_rank", startIndex = "start_idx", endIndex = "end_idx"
    }
}

/// The fields every response and chunk of one completion repeats.
private struct ResponseHeader: Sendable {
    var id: String
    var created: Int
    var model: String

    /// A response or chunk object; `usage` nil leaves the field out.
    func object(_ object: String, choices: [JSONValue], usage: JSONValue?) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("id", .string(id)), ("object", .string(object)), ("created", .int(created)), ("model", .string(model)),
            ("choices", .array(choices)),
        ]
        if let usage { members.append(("usage", usage)) }
        return .object(members)
    }
}

extension FinishInfo {
    fileprivate var usage: JSONValue {
        .object([
            ("prompt_tokens", .int(promptTokens)), ("completion_tokens", .int(completionTokens)),
            ("total_tokens", .int(promptTokens + completionTokens)),
            ("prompt_tokens_details", .object([("cached_tokens", .int(cachedPromptTokens))])),
        ])
    }
}

extension FinishReason {
    /// `finish_reason` as OpenAI clients know it (a time limit ends a completion like a length limit).
    var openAIName: String {
        switch self {
        case .stop: "stop"
        case .length, .timeout: "length"
        case .abort: "abort"
        }
    }

    /// `stop_reason` (vLLM's field beside `finish_reason`): says that `--request_timeout` ended a
    /// completion that `finish_reason` calls "length"; null otherwise.
    var stopReason: JSONValue {
        self == .timeout ? .string("request_timeout") : .null
    }
}

extension APIError {
    /// The HTTP answer to a request the scheduler refused or failed.
    init(schedulerError error: SchedulerError) {
        switch error {
        case .queueFull:
            self.init(.tooManyRequests, "\(error); retry shortly.", code: "rate_limit_exceeded")
            headers[.retryAfter] = "1"
        case .contextExceeded:
            self = .invalid("\(error).", param: "max_tokens", code: "context_length_exceeded")
        case .invalidRequest(let message):
            self = .invalid(message)
        case .shuttingDown:
            self.init(.serviceUnavailable, "\(error)", code: "shutting_down")
            headers[.retryAfter] = "5"
        case .computeFailed:
            self.init(.internalServerError, "\(error)", code: "compute_failed")
        }
    }
}

/// Answers every error in OpenAI's shape and checks the API key.
///
/// The key is judged on the route the router matched (`endpointPath`), never on the raw path:
/// `//v1/completions` and `/v1/./completions` reach the same handler, so they need the same key.
/// Router middleware runs only for matched routes; unmatched ones answer 404 without reaching it.
struct OpenAIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let apiKey: String?
    /// `--cluster_key`: what the registration routes require.
    let clusterKey: String?
    /// `--public_metrics`: `/metrics` answers without the key (for a scraper).
    let publicMetrics: Bool
    let logger: Logger

    /// Routes anyone may call: the page (its API calls carry the key), liveness and version.
    static var openRoutes: Set<String> { ["/", "/health", "/version"] }
    /// Routes workers call; the cluster key, not the API key, protects them (Python workers
    /// cannot send an API key).
    static var clusterRoutes: Set<String> { ["/register_client", "/init_model"] }

    /// Whether a request for `route` needs the API key.
    func needsKey(route: String) -> Bool {
        if Self.openRoutes.contains(route) || Self.clusterRoutes.contains(route) { return false }
        if publicMetrics && route == "/metrics" { return false }
        return true
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        do {
            let route = context.endpointPath ?? request.uri.path
            if let clusterKey, Self.clusterRoutes.contains(route),
                !APIKey.matches(request.headers[.authorization], key: clusterKey)
            {
                throw APIError(
                    .unauthorized, "This master requires the cluster key: send 'Authorization: Bearer <cluster key>'.",
                    type: "invalid_request_error", code: "invalid_cluster_key")
            }
            if let apiKey, needsKey(route: route),
                !APIKey.matches(request.headers[.authorization], key: apiKey)
            {
                throw APIError(
                    .unauthorized, "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'.",
                    type: "invalid_request_error", code: "invalid_api_key")
            }
            return try await next(request, context)
        } catch let error as APIError {
            logger.warning("\(request.method) \(request.uri.path): \(error)")
            throw error
        } catch let error as HTTPParserError {
            // A body that stopped parsing (a chunk size of 10^16): the request, not the server.
            throw APIError(.badRequest, "The request is not valid HTTP/1.1: \(error).", code: "invalid_http")
        } catch let error as HTTPError {
            let message =
                error.status == .notFound
                ? "Unknown route: \(request.method) \(request.uri.path)" : error.body ?? error.status.reasonPhrase
            logger.warning("\(request.method) \(request.uri.path): \(error.status.code) \(message)")
            throw APIError(error.status, message)
        } catch {
            logger.error("\(request.method) \(request.uri.path): \(error)")
            throw APIError(.internalServerError, "Internal error: \(error)")
        }
    }
}
