import ArgumentParser
import Foundation
import Logging
import NIOCore
import TLLMCompute
import TLLMWire

#if canImport(Glibc)
    import Glibc
#endif

/// `tllm.client`: a worker. Serves the RPCService, registers with the master, computes the layers
/// the master assigns. (The executable target only calls `main()`.)
public struct ClientCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tllm.client",
        abstract: "A tllm worker: holds a range of decoder layers and passes hidden states along the pipeline.")

    @Option(name: .customLong("master_addr"), help: "The master's HTTP address, e.g. http://192.168.1.10:8022.")
    public var masterAddress: String?

    @Option(name: .customLong("grpc_port"), help: "gRPC port of this worker (default: a free port).")
    public var grpcPort: Int?

    @Option(
        help: ArgumentHelp(
            "The address the master should use for this worker (default: up to 3 non-loopback IPv4 addresses of interfaces that are up, fastest link first).",
            discussion: "An http:// URL here is taken as --master_addr (the upstream README's form)."))
    public var hostname: String?

    @Flag(name: .customLong("is_debug"), help: "Verbose logs.")
    public var isDebug = false

    @Option(
        help:
            "A cluster config file (examples/config.json); with --client_idx it names this worker's port and hostname and the master."
    )
    public var config: String?

    @Option(name: .customLong("client_idx"), help: "This worker's entry in the config's \"client\" list.")
    public var clientIndex: Int = 0

    @OptionGroup public var key: ClusterKeyOptions

    @OptionGroup public var tls: TLSOptions

    /// The cluster key after `--cluster_key`, the environment and `--config`.
    var clusterKey: String?

    @Option(help: "Compute threads (default: one per core).")
    public var threads: Int?

    @Option(name: .customLong("kv_cache_dtype"), help: "KV cache precision: float32 or float16.")
    public var kvCacheDType = "float32"

    @Option(name: .customLong("activations"), help: ArgumentHelp(ComputeOptions.Activations.help))
    public var activations = ComputeOptions.Activations.commandDefault.rawValue

    @Flag(name: .customLong("int8_activations"), help: "Short for --activations int8.")
    public var int8Activations = false

    @Option(
        name: .customLong("kv_cache_memory"),
        help: "Memory for the KV cache pages, e.g. 2GiB or 512MB (default: a quarter of RAM, committed as used).")
    public var kvCacheMemory: String?

    @Option(
        help: ArgumentHelp(
            "Memory this worker offers for layers, e.g. 16GiB (default: the machine's RAM).",
            discussion:
                "Sent with the registration: a master that hears from all its workers within its registration window splits the layers in proportion."
        ))
    public var memory: String?

    public init() {}

    public mutating func validate() throws {
        if let hostname, hostname.hasPrefix("http://") || hostname.hasPrefix("https://") {
            masterAddress = masterAddress ?? hostname
            self.hostname = nil
        }
        let file = try config.map(ClusterConfigFile.init(path:))
        clusterKey = key.resolved(config: file)
        if let file {
            guard file.client.indices.contains(clientIndex) else {
                throw ValidationError("--client_idx \(clientIndex): the config lists \(file.client.count) client(s)")
            }
            let node = file.client[clientIndex]
            grpcPort = grpcPort ?? node.grpcPort
            hostname = hostname ?? node.hostname
            memory = memory ?? node.memory
            if masterAddress == nil, let host = file.server.hostname {
                masterAddress = "http://\(host):\(file.server.httpPort ?? 8022)"
            }
        }
        guard masterAddress != nil else { throw ValidationError("--master_addr is required (or --config)") }
        if let grpcPort, !(0...65535).contains(grpcPort) { throw ValidationError("--grpc_port must be a port number") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let kvCacheMemory, (ByteCount.parse(kvCacheMemory) ?? 0) < 1 {
            throw ValidationError("--kv_cache_memory must be a size such as 2GiB, 512MB or 1048576")
        }
        if let memory, (ByteCount.parse(memory) ?? 0) < 1 {
            throw ValidationError("--memory must be a size such as 16GiB, 512MB or 1048576")
        }
        guard ["float32", "float16"].contains(kvCacheDType) else {
            throw ValidationError("--kv_cache_dtype must be float32 or float16")
        }
        guard resolvedActivations != nil else { throw ValidationError(ComputeOptions.Activations.flagError) }
    }

    /// `--activations` after `--int8_activations`; nil when invalid.
    var resolvedActivations: ComputeOptions.Activations? {
        ComputeOptions.Activations(flag: activations, int8Shorthand: int8Activations)
    }

    public func run() async throws {
        OpenBLASKernel.selectForThisCPU()
        var logger = Logger(label: "tllm.client")
        logger.logLevel = isDebug ? .debug : .info
        let tlsContexts = try tls.contexts()
        if let tlsContexts, tlsContexts.server == nil {
            throw ValidationError("--tls_ca needs --tls_cert and --tls_key: a worker serves TLS itself")
        }
        let master = try MasterConnection(
            address: masterAddress ?? "", clusterKey: clusterKey, tls: tlsContexts?.httpClientConfiguration)
        let security = GRPCSecurity(clusterKey: clusterKey, tls: tlsContexts)
        let service = WorkerService(security: security, logger: logger)
        let server = GRPCServer(
            methods: service.grpcMethods, limits: service.grpcLimits, security: security, logger: logger)
        let bound = try await server.start([try GRPCListenAddress(parsing: "[::]:\(grpcPort ?? 0)")])
        let port = bound.first?.port ?? grpcPort ?? 0
        let hosts = hostname.map { [$0] } ?? NetworkInterfaces.advertisedIPv4(limit: 3)
        logger.info("worker gRPC on port \(port); telling the master \(master.baseURL) to use \(hosts)")
        let node = WorkerNode(
            master: master, hosts: hosts, port: port,
            memory: memory.flatMap(ByteCount.parse) ?? Int(clamping: ProcessInfo.processInfo.physicalMemory),
            service: service,
            threads: threads ?? ProcessInfo.processInfo.activeProcessorCount,
            compute: ComputeOptions(
                activations: resolvedActivations ?? .commandDefault,
                kvCache: ComputeOptions.CacheElement(rawValue: kvCacheDType) ?? .float32,
                kvCacheBudget: kvCacheMemory.flatMap(ByteCount.parse)),
            logger: logger)
        let stop = AsyncStream<Int32>.makeStream()
        let signals = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { stop.continuation.yield(number) }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        let life = Task { try await node.run() }
        let watcher = Task {
            for await number in stop.stream {
                logger.info("signal \(number): stopping")
                life.cancel()
                return
            }
        }
        let outcome = await life.result
        watcher.cancel()
        await service.stop()
        await server.shutdown(gracePeriod: .seconds(2))
        if case .failure(let error) = outcome, !(error is CancellationError) { throw error }
    }
}

/// The addresses a worker offers the master when `--hostname` is absent.
enum NetworkInterfaces {
    /// Up to `limit` IPv4 addresses of interfaces that are up and not loopback, fastest link first
    /// (`/sys/class/net/IF/speed`); `127.0.0.1` when there is none.
    static func advertisedIPv4(limit: Int) -> [String] {
        var found: [(address: String, speed: Int)] = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return ["127.0.0.1"] }
        defer { freeifaddrs(list) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            let flags = Int32(entry.pointee.ifa_flags)
            guard flags & Int32(IFF_UP) != 0, flags & Int32(IFF_LOOPBACK) == 0,
                let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET)
            else { continue }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { inet in
                var raw = inet.pointee.sin_addr
                _ = inet_ntop(AF_INET, &raw, &text, socklen_t(INET_ADDRSTRLEN))
            }
            let name = String(cString: entry.pointee.ifa_name)
            let speed =
                (try? String(contentsOfFile: "/sys/class/net/\(name)/speed", encoding: .utf8))
                .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
            found.append(
                (String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), speed))
        }
        let addresses = found.sorted { $0.speed > $1.speed }.prefix(limit).map(\.address)
        return addresses.isEmpty ? ["127.0.0.1"] : Array(addresses)
    }
}
