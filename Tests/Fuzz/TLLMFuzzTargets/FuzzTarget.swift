import Dispatch
import Foundation
import NIOCore
import TLLMChatTemplate
import TLLMCluster
import TLLMCompute
import TLLMGrammar
import TLLMModel
import TLLMModelFiles
import TLLMServer
import TLLMTokenizer
import TLLMWire

/// The formats that reach a node from the network or from a model file, one fuzz target each.
///
/// `run` returns normally for accepted and refused input alike: only a trap, a sanitizer report,
/// a hang or runaway memory is a finding. Each target goes through the same functions the
/// server, the worker or the loader call, not a copy of their checks. Input layouts are in
/// `docs/fuzzing.md`; the seed corpora under `Tests/Fuzz/Corpus/<target>` show them.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A JSON body of `/v1/chat/completions`, `/v1/completions`, `/register_client` (all three
    /// decodings are tried on every input) and its validation.
    case openAIRequest = "openai-request"
    /// Byte 0 picks a message type (`% 10`: requests of Status, Forward, Health, SetConfig,
    /// ImageForward, then their responses); the rest is gRPC length-prefixed data as a DATA
    /// frame carries it: framing, protobuf-c decoding, the worker's step checks, the tensor codec.
    case grpcMessage = "grpc-message"
    /// A GGUF file: header, metadata, tensor table, tokenizer and chat template from metadata,
    /// configuration, the weights loaded into a decoder shard and the head, one token computed.
    case gguf
    /// `[u32 LE n][n bytes config.json][a .safetensors file]`: a Hugging Face directory's
    /// configuration and weights, loaded and computed as for `gguf`.
    case safetensors
    /// `[u32 LE n][n bytes tokenizer.json][UTF-8 text]`: the tokenizer loaded, the text encoded,
    /// the ids decoded at once and incrementally.
    case tokenizer
    /// `[u32 LE n][n bytes template source][JSON render context]`: parse and render.
    case chatTemplate = "chat-template"

    /// Runs one input through the target.
    public func run(_ data: [UInt8]) {
        switch self {
        case .openAIRequest: Self.openAIRequest(data)
        case .grpcMessage: Self.grpcMessage(data)
        case .gguf: Self.gguf(data)
        case .safetensors: Self.safetensors(data)
        case .tokenizer: Self.tokenizer(data)
        case .chatTemplate: Self.chatTemplate(data)
        }
    }

    // MARK: HTTP API

    /// SmolLM2's sizes: what the server checks numbers against.
    static let vocabularySize = 49152
    static let layerCount = 30

    /// A ChatML template as SmolLM2 and Qwen ship it.
    static let chatML: ChatTemplate? = try? ChatTemplate(
        source: """
            {% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + \
            '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}
            """)

    /// A small vocabulary for grammars: every byte, and some multi-byte pieces of JSON.
    static let grammarVocabulary = TokenVocabulary(
        tokenBytes: (0..<256).map { [UInt8($0)] }
            + ["{\"", "\": ", "\", \"", "true", "null", "\"}", "<tool_call>", "\n</tool_call>", "é", "\\u00", "123"]
            .map { Array($0.utf8) })
    static let endToken = Int32(256 + 12)

    static func openAIRequest(_ data: [UInt8]) {
        let body = Data(data)
        if let chat = try? decodeRequestBody(body, as: ChatCompletionRequest.self) {
            for (syntax, rendersTools) in [(ToolCallSyntax.hermes, false), (.llamaJSON, true)] {
                guard
                    let prepared = try? chat.prepare(
                        body: body, vocabularySize: vocabularySize, syntax: syntax, templateRendersTools: rendersTools)
                else { continue }
                _ = try? chatML?.render([
                    "messages": .array(prepared.messages), "tools": prepared.templateTools.map { .array($0) } ?? .none,
                    "add_generation_prompt": .bool(true),
                ])
                if let grammar = prepared.grammar { walk(grammar) }
                // The answer's text as the model's output: what the tool-call reader gets.
                var reader = ToolCallStream(syntax: syntax, functions: ["f", "get_weather"])
                for case .dictionary(let message) in prepared.messages {
                    if case .string(let content)? = message["content"] { _ = reader.append(content) }
                }
                _ = reader.finish()
            }
        }
        if let completion = try? decodeRequestBody(body, as: CompletionRequest.self),
            (try? completion.fields.validate(vocabularySize: vocabularySize)) != nil
        {
            _ = try? completion.promptTokens(vocabularySize: vocabularySize)
            _ = try? completion.fields.logprobCount(chat: false)
            if let grammar = try? completion.fields.grammar(body: body) { walk(grammar) }
        }
        if let registration = try? decodeRequestBody(body, as: WorkerRegistry.Registration.self) {
            _ = try? registration.validate(totalLayers: layerCount)
        }
    }

    /// Generates under `grammar` for a few steps: the mask, then the first allowed token.
    static func walk(_ grammar: Grammar) {
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: grammarVocabulary, endTokens: [endToken])
        var logits = [Float](repeating: 0, count: 256 + 13)
        for step in 0..<48 {
            for index in logits.indices { logits[index] = Float((index * 7 + step) % 13) }
            logits.withUnsafeMutableBufferPointer { matcher.mask($0) }
            guard let best = logits.indices.max(by: { logits[$0] < logits[$1] }), logits[best].isFinite else { return }
            if Int32(best) == endToken || !matcher.accept(Int32(best)) || matcher.mustEnd { return }
        }
    }

    // MARK: gRPC

    static func grpcMessage(_ data: [UInt8]) {
        guard let selector = data.first else { return }
        let methods = RPCServiceMethod.allCases
        let method = methods[Int(selector) % methods.count]
        let isResponse = Int(selector) % (2 * methods.count) >= methods.count
        let limit =
            method == .forward || method == .imageForward
            ? GRPCLimits.forwardMessageBytes(rows: 256, requests: 64, hiddenSize: 576) : GRPCLimits.controlMessageBytes
        var assembler = GRPCMessageAssembler(maximumBytes: limit)
        data.dropFirst().withUnsafeBytes { assembler.append($0) }
        guard case .success(let buffer) = assembler.finish() else { return }
        let bytes = Array(buffer.readableBytesView)
        bytes.withUnsafeBytes { raw in
            switch (method, isResponse) {
            case (.status, false): _ = try? StatusRequest(serializedBytes: raw)
            case (.forward, false):
                guard let request = try? ForwardRequest(serializedBytes: raw) else { return }
                checkStep(request)
            case (.health, false): _ = try? Empty(serializedBytes: raw)
            case (.setConfig, false):
                guard let request = try? SetConfigRequest(serializedBytes: raw) else { return }
                _ = try? GRPCTarget(parsing: request.forwardURL)
                _ = try? GRPCTarget(parsing: request.masterURL)
            case (.imageForward, false): _ = try? ImageForwardRequest(serializedBytes: raw)
            case (.status, true): _ = try? StatusResponse(serializedBytes: raw)
            case (.forward, true), (.imageForward, true): _ = try? ForwardResponse(serializedBytes: raw)
            case (.health, true): _ = try? HealthResponse(serializedBytes: raw)
            case (.setConfig, true): _ = try? SetConfigResponse(serializedBytes: raw)
            }
        }
    }

    /// What a worker does with a `Forward` before it computes: the step's sequences, then the
    /// tensor decoded against the shape they imply (SmolLM2's 576 columns), then re-encoded.
    static func checkStep(_ request: ForwardRequest) {
        guard let sequences = try? WorkerService.sequences(of: request), let tensor = request.hiddenStates else {
            return
        }
        let rows = sequences.reduce(0) { $0 + $1.rows }
        guard let decoded = try? TensorCodec.decode(tensor, expectedRows: rows, expectedColumns: 576) else { return }
        _ = try? TensorCodec.encode(decoded.values, rows: decoded.rows, columns: decoded.columns)
    }

    // MARK: Model files

    static func gguf(_ data: [UInt8]) {
        let path = scratchDirectory + "/model.gguf"
        guard FileManager.default.createFile(atPath: path, contents: Data(data)) else { return }
        if let bundle = try? ModelBundle.open(path: path) {
            let ids = bundle.tokenizer.encode("Hi <|im_start|> ünï 😀", addSpecialTokens: true)
            _ = bundle.tokenizer.decode(ids)
            _ = try? bundle.renderChat(messages: [.dictionary(["role": "user", "content": "hi"])])
        }
        if let model = try? GGUFModel(path: path) { compute(model) }
    }

    static func safetensors(_ data: [UInt8]) {
        guard let (config, weights) = split(data) else { return }
        let directory = scratchDirectory + "/hf"
        try? FileManager.default.removeItem(atPath: directory)
        guard (try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)) != nil,
            FileManager.default.createFile(atPath: directory + "/config.json", contents: Data(config)),
            FileManager.default.createFile(atPath: directory + "/model.safetensors", contents: Data(weights))
        else { return }
        _ = try? SafetensorsFile(path: directory + "/model.safetensors")
        if let model = try? HuggingFaceModel(directory: directory) { compute(model) }
    }

    /// Loads every layer and the head as a node would, then runs two tokens through them.
    static func compute(_ model: any ModelWeights) {
        let configuration = model.configuration
        // A config may claim a larger model than its tensors hold; loading checks each tensor's
        // shape against it. Only the KV reservation below is sized from the claim alone.
        let pool = ComputePool(threads: 1)
        let pageTokens = 16
        let layout = DecoderShard.pageLayout(
            configuration, layers: configuration.layerCount, pageTokens: pageTokens, element: .float32)
        guard layout.pageBytes <= 64 << 20,
            let shard = try? DecoderShard(
                model: model, layers: 0..<configuration.layerCount, pool: pool, pages: 2, pageTokens: pageTokens),
            let head = try? ModelHead(model: model, pool: pool)
        else { return }
        let tokens: [Int32] = [0, Int32(clamping: configuration.vocabularySize - 1)]
        let sequences = [SequenceSlice(id: "fuzz", rows: 2, promptRows: 2)]
        let cache = KVCacheManager(pageCount: 2, pageTokens: pageTokens, contextLength: 32, prefixReuse: false)
        guard var hidden = try? head.embed(tokens), let lease = blocking({ try? await cache.lease(sequences) }),
            (try? shard.forward(hidden: &hidden, lease: lease)) != nil
        else { return }
        let last = SequenceSlice.lastRows(of: hidden, sequences: sequences, width: configuration.hiddenSize)
        _ = head.logits(last, rows: 1)
    }

    // MARK: Tokenizer and chat template

    static func tokenizer(_ data: [UInt8]) {
        guard let (json, text) = split(data),
            let configuration = try? TokenizerConfiguration(tokenizerJSON: Data(json)),
            let tokenizer = try? Tokenizer(configuration)
        else { return }
        let string = String(decoding: text, as: UTF8.self)
        for special in [true, false] {
            let ids = tokenizer.encode(string, addSpecialTokens: special)
            _ = tokenizer.decode(ids, skipSpecialTokens: special)
            var decoder = tokenizer.makeIncrementalDecoder(skipSpecialTokens: special)
            for id in ids { _ = decoder.append(id) }
            _ = decoder.flush()
        }
        // Ids from the network are checked against the vocabulary before they reach these.
        for id in [0, Int32(clamping: tokenizer.vocabularySize - 1)] where tokenizer.vocabularySize > 0 {
            _ = tokenizer.tokenText(id)
            _ = tokenizer.tokenBytes(id)
        }
    }

    static func chatTemplate(_ data: [UInt8]) {
        guard let (source, json) = split(data),
            let template = try? ChatTemplate(source: String(decoding: source, as: UTF8.self))
        else { return }
        var context: [String: TemplateValue] = [:]
        if case .dictionary(let values)? = try? TemplateValue(jsonData: Data(json)) {
            for key in values.keys { context[key] = values[key] }
        }
        _ = try? template.render(context, now: Date(timeIntervalSince1970: 1_700_000_000), timeZone: .gmt)
    }

    // MARK: Support

    /// Not a target: reads one byte past a heap buffer when the input starts with `tllm`, so that
    /// a test can show the fuzzing check fails when AddressSanitizer sees an error.
    public static func selfTest(_ data: [UInt8]) {
        guard data.starts(with: Array("tllm".utf8)) else { return }
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 4)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 0, count: 4)
        let past = buffer.advanced(by: 4)
        if past.pointee == 0x7f { print("unreachable in a correct program") }
    }

    /// `[u32 LE n][n bytes][rest]`, or nil when the length runs past the end.
    static func split(_ data: [UInt8]) -> ([UInt8], [UInt8])? {
        guard data.count >= 4 else { return nil }
        let length = Int(data[0]) | Int(data[1]) << 8 | Int(data[2]) << 16 | Int(data[3]) << 24
        guard length <= data.count - 4 else { return nil }
        return (Array(data[4..<(4 + length)]), Array(data[(4 + length)...]))
    }

    /// A directory of this process's own for the files a model target writes.
    static let scratchDirectory: String = {
        let path = NSTemporaryDirectory() + "tllm-fuzz-\(ProcessInfo.processInfo.processIdentifier)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()
}

/// Runs async work to completion from the fuzzer's synchronous callback.
private func blocking<Value: Sendable>(_ body: @escaping @Sendable () async -> Value) -> Value {
    let box = ResultBox<Value>()
    let done = DispatchSemaphore(value: 0)
    Task {
        box.value = await body()
        done.signal()
    }
    done.wait()
    return box.value!
}

private final class ResultBox<Value>: @unchecked Sendable {
    var value: Value?
}
