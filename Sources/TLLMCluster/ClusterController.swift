import Logging
import NIOCore
import TLLMEngine
import TLLMWire

/// The master's side of the cluster: when initialised workers cover every layer, tells each
/// stage where to send its results (`SetConfig`), routes the scheduler's steps through them
/// (`RemotePipeline`), and health-checks one worker per stage every 10 s.
public actor ClusterController {
    public nonisolated let registry: WorkerRegistry
    /// What the master's scheduler runs steps through.
    public nonisolated let pipeline = PipelineSwitch()
    private let inbox: StepInbox
    private let hiddenSize: Int
    private let masterPort: Int
    private let advertisedHost: String?
    /// What the master's calls to workers present (the cluster key).
    public nonisolated let security: GRPCSecurity
    private let logger: Logger
    private var configured: [String] = []
    /// The master's address for workers, as the last route was configured with.
    private var masterHost: String?
    private var clients: [RPCServiceClient] = []
    private var healthChecks: Task<Void, Never>?

    /// - Parameters:
    ///   - masterPort: the master's gRPC port (results and statuses come back there).
    ///   - advertisedHost: the master's address for workers (`--hostname`); nil: the address a
    ///     worker reached the master's HTTP port on.
    public init(
        registry: WorkerRegistry, inbox: StepInbox, hiddenSize: Int, masterPort: Int, advertisedHost: String?,
        security: GRPCSecurity = .none, logger: Logger = Logger(label: "tllm.cluster")
    ) {
        self.security = security
        self.registry = registry
        self.inbox = inbox
        self.hiddenSize = hiddenSize
        self.masterPort = masterPort
        self.advertisedHost = advertisedHost
        self.logger = logger
    }

    /// `/register_client` from a worker that reached the master at `localHost`. A worker that
    /// states its range (it survived a master restart) counts as loaded, so the route is rebuilt.
    public func register(_ registration: WorkerRegistry.Registration, localHost: String?) async
        -> WorkerRegistry.Assignment
    {
        let answer = await registry.register(registration)
        if answer.message == "success" { await configureRoute(masterHost: advertisedHost ?? localHost ?? "127.0.0.1") }
        return answer
    }

    /// `/init_model` from a worker that reached the master at `localHost`; false for an unknown client.
    public func workerInitialized(clientID: String, ppRank: Int, layers: Range<Int>, localHost: String?) async -> Bool {
        guard await registry.initialized(clientID: clientID, ppRank: ppRank, layers: layers) else { return false }
        await configureRoute(masterHost: advertisedHost ?? localHost ?? "127.0.0.1")
        return true
    }

    /// Builds the pipeline over the registry's complete route, if there is one and it changed.
    private func configureRoute(masterHost: String) async {
        self.masterHost = masterHost
        guard let route = await registry.route else { return }
        let ids = route.map(\.clientID)
        guard ids != configured else { return }
        let master = Self.target(host: masterHost, port: masterPort)
        var newClients: [RPCServiceClient] = []
        do {
            for (rank, worker) in route.enumerated() {
                let client = RPCServiceClient(
                    channel: try GRPCChannel(target: worker.address, security: security), defaultTimeout: .seconds(10))
                newClients.append(client)
                let next = rank + 1 < route.count ? route[rank + 1].address : master
                let answer = try await client.setConfig(
                    SetConfigRequest(forwardURL: next, masterURL: master, ppRank: Int32(rank)))
                guard answer.status == 200 else {
                    throw PipelineError("SetConfig answered \(answer.status) \(answer.msg)")
                }
            }
        } catch {
            logger.error("route \(ids) not configured: \(error)")
            for client in newClients { await client.channel.close() }
            return
        }
        for client in clients { await client.channel.close() }
        clients = newClients
        configured = ids
        await pipeline.use(
            RemotePipeline(first: newClients[0], stages: route.count, hiddenSize: hiddenSize, inbox: inbox))
        logger.info(
            "pipeline ready: \(route.map { "\($0.address) [\($0.layers.lowerBound), \($0.layers.upperBound))" }.joined(separator: " → ")) → \(master)"
        )
        startHealthChecks()
    }

    private func startHealthChecks() {
        guard healthChecks == nil else { return }
        healthChecks = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(10))
                await self?.checkHealth()
            }
        }
    }

    /// `Health` to each stage of the configured route; a stage that fails three tries a second
    /// apart (one reset connection is not a dead worker) is unregistered and the route rebuilt
    /// from the workers left (generation answers 503 until the range is covered again). A worker
    /// dropped while alive notices that the checks stopped and registers again (`WorkerNode`).
    func checkHealth() async {
        let route = configured
        for (clientID, client) in zip(configured, clients) {
            var failure: (any Error)?
            for attempt in 1...Self.healthAttempts {
                // The route may change while a check waits; its old channels are closed then.
                guard configured == route else { return }
                do {
                    _ = try await client.health(timeout: .seconds(3))
                    failure = nil
                    break
                } catch {
                    failure = error
                    logger.warning(
                        "worker \(clientID) at \(client.channel.target): health check \(attempt) of \(Self.healthAttempts) failed: \(error)"
                    )
                    if attempt < Self.healthAttempts { try? await Task.sleep(for: .seconds(1)) }
                }
            }
            guard configured == route else { return }
            if let error = failure {
                logger.error("worker \(clientID) at \(client.channel.target) failed its health check: \(error)")
                await registry.unregister(clientID: clientID)
                configured = []
                await pipeline.use(nil)
                // A standby registered for the same layers (a second set of workers) takes over
                // at once; otherwise the route waits for a replacement to register.
                if let masterHost { await configureRoute(masterHost: masterHost) }
                return
            }
        }
    }

    static let healthAttempts = 3

    /// Stops health checks and closes the channels.
    public func shutdown() async {
        healthChecks?.cancel()
        for client in clients { await client.channel.close() }
        clients = []
    }

    /// `host:port` with IPv6 in brackets.
    static func target(host: String, port: Int) -> String {
        host.contains(":") && !host.hasPrefix("[") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
