import ArgumentParser
import Foundation
import TLLMCluster
import TLLMCompute

/// `tllm.server`'s flags: the original's (underscores as written) plus what a serving user
/// expects. A library type so that tests parse the same command lines the executable does.
public struct ServerOptions: ParsableArguments, Sendable {
    @Option(
        name: .customLong("model_path"),
        help: ArgumentHelp(
            "The model: a .gguf file, a Hugging Face directory or ORG/NAME[@REV][:FILE] (downloaded into the Hugging Face cache).",
            discussion:
                "Default: the embedded SmolLM2-135M-Instruct (scripts/fetch-default-model.sh, or $TLLM_DEFAULT_MODEL)."
        ))
    public var modelPath: String?

    @Option(
        name: .customLong("chat_template"),
        help: ArgumentHelp(
            "A Jinja chat template file to render chat prompts with instead of the model's own.",
            discussion:
                "For a model whose file has no template or a wrong one. A template that mentions both <think> and </think> is a thinking template: chat completions return the thinking block as reasoning_content."
        ))
    public var chatTemplate: String?

    @Option(help: "Address to listen on and to give workers (default: all interfaces).")
    public var hostname: String?

    @Option(name: .customLong("grpc_port"), help: "gRPC port of the master (default: a free port).")
    public var grpcPort: Int?

    @Option(name: .customLong("http_port"), help: "HTTP port of the OpenAI API (default: 8022).")
    public var httpPort: Int?

    @Option(
        help: ArgumentHelp(
            "A cluster config file (examples/config.json).",
            discussion:
                "Takes hostname, http_port and grpc_port from \"server\" and client_size from the length of \"client\"; flags given on the command line win."
        ))
    public var config: String?

    @Option(name: .customLong("client_size"), help: "Number of workers the layers are split over.")
    public var clientSize: Int?

    @Option(
        name: .customLong("registration_window"),
        help: ArgumentHelp(
            "Seconds a worker that reports its memory waits for the other workers before the layer plan is fixed (0: always split evenly).",
            discussion:
                "When all --client_size workers register with memory within the window, each gets a share of the layers proportional to its memory; otherwise the layers are split evenly."
        ))
    public var registrationWindow: Double = 15

    @Flag(name: .customLong("is_local"), help: "Run the whole model in this process: a single-machine deployment.")
    public var isLocal = false

    @Flag(name: .customLong("is_debug"), help: "Log every scheduler step with its timing.")
    public var isDebug = false

    @Option(help: "Compute threads (default: one per core).")
    public var threads: Int?

    @Option(
        name: .customLong("max_batch_tokens"),
        help: "Tokens per forward step at most; longer prompts are prefilled in chunks of this size.")
    public var maxBatchTokens = 512

    @Option(name: .customLong("max_batch_size"), help: "Requests decoded together at most.")
    public var maxBatchSize = 32

    @Option(
        name: .customLong("max_steps_in_flight"),
        help: ArgumentHelp(
            "Pipeline steps over disjoint requests computed at once at most (0: one per worker stage; 1: one step at a time).",
            discussion:
                "With several workers, each stage computes a different group of requests at the same time instead of waiting for the others."
        ))
    public var maxStepsInFlight = 0

    @Option(
        name: .customLong("max_queue"),
        help: "Requests waiting for a batch slot at most; beyond that the API answers 429 with Retry-After.")
    public var maxQueue = 256

    @Option(
        name: .customLong("max_model_len"),
        help: "Prompt + completion tokens at most (default: the model's context length).")
    public var maxModelLength: Int?

    @Option(name: .customLong("max_body_bytes"), help: "Largest request body accepted (413 beyond).")
    public var maxBodyBytes = 8 << 20

    @Option(
        name: .customLong("request_timeout"),
        help: "Seconds a request may run before it ends with the text so far (0: no limit).")
    public var requestTimeout: Double = 600

    @Option(
        name: .customLong("idle_timeout"),
        help: "Seconds an HTTP connection may stay without a request (or with a partial one) before it is closed.")
    public var idleTimeout: Double = 120

    @Option(
        name: .customLong("max_connections"),
        help: "HTTP connections open at once; one more is answered 503 with Retry-After and closed.")
    public var maxConnections: Int = 512

    @Option(
        name: .customLong("api_key"),
        help: ArgumentHelp(
            "Require 'Authorization: Bearer <key>' on every route but /, /health and /version (default: "
                + "$TLLM_API_KEY, else no key).",
            discussion: "WS /ws/monitor takes it as the header or as ?api_key=KEY (browsers cannot set headers)."))
    public var apiKey: String?

    @OptionGroup public var key: ClusterKeyOptions

    @OptionGroup public var tls: TLSOptions

    /// The cluster key after `--cluster_key`, the environment and `--config` (set by `validate`).
    public var clusterKey: String?

    @Flag(name: .customLong("public_metrics"), help: "Serve /metrics without the API key (for a Prometheus scraper).")
    public var publicMetrics = false

    @Option(name: .customLong("kv_cache_dtype"), help: "KV cache precision: float32 or float16 (half the memory).")
    public var kvCacheDType = "float32"

    @Option(
        name: .customLong("kv_cache_memory"),
        help: "Memory for the KV cache pages, e.g. 2GiB or 512MB (default: a quarter of RAM, committed as used).")
    public var kvCacheMemory: String?

    @Flag(
        name: .customLong("disable_prefix_cache"),
        help: "Do not keep finished requests' KV pages for later requests that share their prefix.")
    public var disablePrefixCache = false

    @Option(name: .customLong("activations"), help: ArgumentHelp(ComputeOptions.Activations.help))
    public var activations = ComputeOptions.Activations.commandDefault.rawValue

    @Flag(name: .customLong("int8_activations"), help: "Short for --activations int8.")
    public var int8Activations = false

    @Flag(
        name: .customLong("compat_defaults"),
        help: "The original's API defaults: max_tokens 16 unless the client sends 'Authorization: Bearer anythingllm'.")
    public var compatDefaults = false

    public init() {}

    public mutating func validate() throws {
        let file = try config.map(ClusterConfigFile.init(path:))
        clusterKey = key.resolved(config: file)
        if let file {
            hostname = hostname ?? file.server.hostname
            httpPort = httpPort ?? file.server.httpPort
            grpcPort = grpcPort ?? file.server.grpcPort
            clientSize = clientSize ?? file.client.count
        }
        for (name, port) in [("--http_port", httpPort), ("--grpc_port", grpcPort)] {
            if let port, !(0...65535).contains(port) {
                throw ValidationError("\(name) must be a port number (0–65535)")
            }
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        guard maxStepsInFlight >= 0 else { throw ValidationError("--max_steps_in_flight must not be negative") }
        guard maxBatchTokens >= 1, maxBatchSize >= 1 else {
            throw ValidationError("--max_batch_tokens and --max_batch_size must be at least 1")
        }
        guard maxQueue >= 0 else { throw ValidationError("--max_queue must not be negative") }
        guard idleTimeout > 0, idleTimeout <= 86400 else {
            throw ValidationError("--idle_timeout must be in (0, 86400]")
        }
        guard maxConnections >= 1, maxConnections <= 1_000_000 else {
            throw ValidationError("--max_connections must be in [1, 1000000]")
        }
        if let maxModelLength, maxModelLength < 2 { throw ValidationError("--max_model_len must be at least 2") }
        if let clientSize, clientSize < 1 { throw ValidationError("--client_size must be at least 1") }
        guard registrationWindow >= 0, registrationWindow <= 50 else {
            // A held worker waits for its HTTP answer: stay well inside its 60 s timeout.
            throw ValidationError("--registration_window must be between 0 and 50 seconds")
        }
        guard maxBodyBytes >= 1024 else { throw ValidationError("--max_body_bytes must be at least 1024") }
        guard requestTimeout >= 0, requestTimeout <= 31_536_000 else {
            throw ValidationError("--request_timeout must be between 0 and 31536000 seconds (a year)")
        }
        guard ["float32", "float16"].contains(kvCacheDType) else {
            throw ValidationError("--kv_cache_dtype must be float32 or float16")
        }
        guard resolvedActivations != nil else { throw ValidationError(ComputeOptions.Activations.flagError) }
        if let kvCacheMemory, (ByteCount.parse(kvCacheMemory) ?? 0) < 1 {
            throw ValidationError("--kv_cache_memory must be a size such as 2GiB, 512MB or 1048576")
        }
        if apiKey == nil {
            apiKey = ProcessInfo.processInfo.environment["TLLM_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        }
    }

    /// `--activations` after `--int8_activations`; nil when invalid.
    public var resolvedActivations: ComputeOptions.Activations? {
        ComputeOptions.Activations(flag: activations, int8Shorthand: int8Activations)
    }

    /// The KV cache budget in bytes, when given.
    public var kvCacheBytes: Int? { kvCacheMemory.flatMap(ByteCount.parse) }

    /// Compute threads after the default.
    public var resolvedThreads: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }

    /// The HTTP port after config and defaults.
    public var resolvedHTTPPort: Int { httpPort ?? 8022 }
}
