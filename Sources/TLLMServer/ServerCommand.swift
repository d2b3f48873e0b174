import ArgumentParser
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import Prometheus
import TLLMChatTemplate
import TLLMCluster
import TLLMCompute
import TLLMEngine
import TLLMHub
import TLLMModel
import TLLMModelFiles
import TLLMWire

/// `tllm.server`: the master. Serves the OpenAI API; with `--is_local` it also runs the whole
/// model in-process. (The executable target only calls `main()`; the command lives here so that
/// tests see the same help and parsing.)
public struct ServerCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tllm.server",
        abstract:
            "The tllm master: an OpenAI-compatible API over a model whose layers run here (--is_local) or on workers.")

    @OptionGroup public var options: ServerOptions

    public init() {}

    public func run() async throws {
        OpenBLASKernel.selectForThisCPU()
        // Before anything creates a metric: swift-metrics binds each one to the backend of its time.
        let metricsRegistry = MetricsEndpoint.bootstrap()
        var logger = Logger(label: "tllm.server")
        logger.logLevel = options.isDebug ? .debug : .info
        let path = try await ModelLocator(logger: logger).resolvePath(options.modelPath)
        let loadStart = ContinuousClock.now
        var opened = try ModelBundle.open(path: path)
        if let file = options.chatTemplate {
            opened = opened.replacingChatTemplate(try Self.chatTemplate(file: file))
            logger.info("chat template from \(file)")
        }
        let bundle = opened
        let configuration = bundle.weights.configuration
        let maxModelLength = min(options.maxModelLength ?? configuration.contextLength, configuration.contextLength)

        let compute = ComputeOptions(
            activations: options.resolvedActivations ?? .commandDefault,
            kvCache: ComputeOptions.CacheElement(rawValue: options.kvCacheDType) ?? .float32,
            kvCacheBudget: options.kvCacheBytes)
        logger.info(
            "loading \(bundle.name): \(configuration.layerCount) layers, \(options.resolvedThreads) threads, OpenBLAS core \(OpenBLASKernel.coreName)"
        )
        let head = try HeadActor(model: bundle.weights, threads: options.resolvedThreads, options: compute)

        // The master's gRPC service: final hidden states and stage statuses come back here.
        let inbox = StepInbox(logger: logger)
        let masterService = MasterService(
            inbox: inbox, hiddenSize: configuration.hiddenSize, maxRequests: options.maxBatchSize,
            maxRows: options.maxBatchTokens)
        let tls = try options.tls.contexts()
        if let tls, tls.server == nil {
            throw ValidationError("--tls_ca needs --tls_cert and --tls_key: a master serves TLS itself")
        }
        let security = GRPCSecurity(clusterKey: options.clusterKey, tls: tls)
        let grpcServer = GRPCServer(
            methods: masterService.grpcMethods, limits: masterService.grpcLimits, security: security, logger: logger)
        let grpcAddresses = try await grpcServer.start([
            try GRPCListenAddress(parsing: "[::]:\(options.grpcPort ?? 0)")
        ])
        let workers = options.clientSize ?? LayerPlan.defaultWorkers(modelName: bundle.name)
        let cluster = ClusterController(
            registry: WorkerRegistry(
                totalLayers: configuration.layerCount, workers: workers,
                modelPath: Self.pathForWorkers(options.modelPath ?? path),
                registrationWindow: .milliseconds(Int(options.registrationWindow * 1000)), logger: logger),
            inbox: inbox, hiddenSize: configuration.hiddenSize, masterPort: grpcAddresses.first?.port ?? 0,
            advertisedHost: options.hostname, security: security, logger: logger)
        if !options.isLocal && options.clusterKey == nil && !Self.isLoopback(options.hostname ?? Self.anyAddress) {
            logger.warning(
                "the cluster is open: anyone who reaches the HTTP port can register a worker and receive hidden states; set --cluster_key (or $TLLM_CLUSTER_KEY) on every node"
            )
        }

        let pipeline: any Pipeline
        if options.isLocal {
            let cache = KVCacheManager.sized(
                forLayers: configuration.layerCount, of: configuration, options: compute,
                contextLength: maxModelLength, prefixReuse: !options.disablePrefixCache)
            let budget = compute.kvCacheBudget ?? ComputeOptions.defaultKVCacheBudget
            logger.info(
                "KV cache: \(cache.pageCount) pages of \(cache.pageTokens) positions (\(cache.pageCount * cache.pageTokens) tokens in a \(budget >> 20) MiB budget), prefix reuse \(cache.prefixReuse ? "on" : "off")"
            )
            pipeline = LocalPipeline(stages: [
                try ShardActor(
                    model: bundle.weights, layers: 0..<configuration.layerCount, threads: options.resolvedThreads,
                    options: compute, cache: cache)
            ])
        } else {
            pipeline = cluster.pipeline
            logger.info("waiting for \(workers) worker(s) to cover \(configuration.layerCount) layers")
        }
        let scheduler = Scheduler(
            head: head, pipeline: pipeline, tokenizer: bundle.tokenizer,
            configuration: Scheduler.Configuration(
                maxBatchTokens: options.maxBatchTokens, maxBatchSize: options.maxBatchSize,
                maxQueue: options.maxQueue, maxModelLength: maxModelLength, logSteps: options.isDebug,
                maxStepsInFlight: options.maxStepsInFlight),
            logger: logger)
        logger.info("model loaded in \((ContinuousClock.now - loadStart).formatted(.units(allowed: [.milliseconds])))")

        let monitor = ClusterMonitor(
            modelName: bundle.name, totalLayers: configuration.layerCount, isLocal: options.isLocal,
            registry: cluster.registry, clusterKeyed: options.clusterKey != nil)
        let service = OpenAIService(
            bundle: bundle, scheduler: scheduler, cluster: cluster,
            remote: options.isLocal ? nil : cluster.pipeline,
            options: OpenAIService.Options(
                maxModelLength: scheduler.maxModelLength, maxBodyBytes: options.maxBodyBytes, apiKey: options.apiKey,
                clusterKey: options.clusterKey, publicMetrics: options.publicMetrics,
                compatDefaults: options.compatDefaults,
                requestTimeout: options.requestTimeout > 0 ? .milliseconds(Int(options.requestTimeout * 1000)) : nil),
            metrics: MetricsEndpoint(registry: metricsRegistry, cache: pipeline.kvCache), logger: logger)
        let host = options.hostname ?? Self.anyAddress
        let serverLogger = logger
        let scheme = tls == nil ? "http" : "https"
        let apiKey = options.apiKey
        let app = Application(
            router: service.makeRouter(),
            server: .guardedHTTP1WebSocketUpgrade(
                apiKey: apiKey, connections: ConnectionLimit(limit: options.maxConnections),
                tls: tls?.httpServerConfiguration,
                configuration: .init(
                    http1: .init(
                        additionalChannelHandlers: [ClientDisconnectHandler()],
                        // A connection that sends no request (or only part of one) for this long is
                        // closed; an SSE stream being written is not idle.
                        idleTimeout: .milliseconds(Int64(options.idleTimeout * 1000))))
            ) {
                request, _, _ in
                // Refused upgrades fall through to the router, whose /ws/monitor route answers 401
                // without the key (the same middleware as every route) or 400 with it.
                guard let path = request.path, APIKey.monitorPath(path) == "/ws/monitor",
                    APIKey.allowsMonitor(request, key: apiKey)
                else { return .dontUpgrade }
                return .upgrade([:]) { inbound, outbound, _ in
                    try await monitor.serve(inbound: inbound, outbound: outbound)
                }
            },
            configuration: ApplicationConfiguration(
                address: .hostname(host, port: options.resolvedHTTPPort), serverName: "tllm"),
            onServerRunning: { channel in
                serverLogger.info("serving \(bundle.name) on \(scheme)://\(channel.localAddress?.description ?? host)")
            },
            logger: logger)
        // SIGTERM / SIGINT: Hummingbird stops accepting and waits for in-flight requests; ending
        // the generations at once (finish_reason "abort") lets those requests, and so the
        // process, finish promptly instead of after thousands of tokens.
        let running: Scheduler? = scheduler
        let registry = cluster.registry
        let signalLogger = logger
        let stopSignals = [SIGTERM, SIGINT].map { (number: Int32) -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                signalLogger.info("signal \(number): ending in-flight generations")
                Task {
                    await running?.shutdown()
                    await registry.closeWatchers()  // monitor sockets close, so the server can stop
                    // A connection that never sends a request (browsers open spares) keeps the
                    // WebSocket-upgrading HTTP server from stopping: give the rest a few seconds.
                    try? await Task.sleep(for: .seconds(Self.shutdownGrace))
                    signalLogger.warning(
                        "connections still open \(Self.shutdownGrace) s after the signal: exiting anyway")
                    Foundation.exit(0)
                }
            }
            source.resume()
            return source
        }
        defer { stopSignals.forEach { $0.cancel() } }
        try await app.runService()
        await scheduler.shutdown()
        await cluster.shutdown()
        await grpcServer.shutdown(gracePeriod: .seconds(2))
    }

    /// Seconds between SIGTERM and exiting, whatever connections are still open.
    static let shutdownGrace = 5

    /// What workers are told to load (`repo_path`): a local path made absolute (workers may run
    /// elsewhere in the file tree), a repo id as given.
    private static func pathForWorkers(_ path: String) -> String {
        FileManager.default.fileExists(atPath: path) ? URL(fileURLWithPath: path).standardizedFileURL.path : path
    }

    /// The template of `--chat_template`; errors name the file.
    private static func chatTemplate(file: String) throws -> ChatTemplate {
        let source: String
        do { source = try String(contentsOfFile: file, encoding: .utf8) } catch {
            throw ModelFileError(file, "cannot read the chat template: \(error.localizedDescription)")
        }
        do { return try ChatTemplate(source: source) } catch {
            throw ModelFileError(file, "chat template: \(error)")
        }
    }

    /// Whether `host` names only this machine.
    static func isLoopback(_ host: String) -> Bool {
        let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return bare == "localhost" || bare == "::1" || bare.hasPrefix("127.")
    }

    /// `::` (both IPv6 and IPv4) where the kernel has IPv6, else `0.0.0.0`.
    private static var anyAddress: String {
        FileManager.default.fileExists(atPath: "/proc/net/if_inet6") ? "::" : "0.0.0.0"
    }
}
