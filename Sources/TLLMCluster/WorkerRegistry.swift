import Foundation
import Logging

/// The master's record of workers (tllm-protocol.md §3): registration, layer assignment,
/// `init_model`, and whether the registered workers cover every layer.
public actor WorkerRegistry {
    /// One worker as the master knows it.
    public struct Worker: Sendable, Equatable {
        public var clientID: String
        /// The address the master reached it on (`host:port`, IPv6 in brackets).
        public var address: String
        public var ppRank: Int
        public var layers: Range<Int>
        /// Whether it reported its layers loaded (`/init_model`).
        public var initialized: Bool
    }

    /// `POST /register_client` body.
    public struct Registration: Sendable, Decodable {
        public var clientID: String
        public var hosts: [String]
        public var port: Int
        public var ppRank: Int
        public var startIndex: Int
        public var endIndex: Int

        enum CodingKeys: String, CodingKey {
            case clientID = "client_id", hosts = "host", port, ppRank = "pp_rank", startIndex = "start_idx",
                endIndex = "end_idx"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            clientID = try container.decode(String.self, forKey: .clientID)
            // The original sends a list; a single string is accepted too.
            if let one = try? container.decode(String.self, forKey: .hosts) {
                hosts = [one]
            } else {
                hosts = try container.decode([String].self, forKey: .hosts)
            }
            port = try container.decode(Int.self, forKey: .port)
            ppRank = try container.decodeIfPresent(Int.self, forKey: .ppRank) ?? -1
            startIndex = try container.decodeIfPresent(Int.self, forKey: .startIndex) ?? -1
            endIndex = try container.decodeIfPresent(Int.self, forKey: .endIndex) ?? -1
        }

        public init(
            clientID: String, hosts: [String], port: Int, ppRank: Int = -1, startIndex: Int = -1, endIndex: Int = -1
        ) {
            self.clientID = clientID
            self.hosts = hosts
            self.port = port
            self.ppRank = ppRank
            self.startIndex = startIndex
            self.endIndex = endIndex
        }
    }

    /// `POST /register_client` answer.
    public struct Assignment: Sendable, Equatable {
        public var ppRank: Int
        public var startIndex: Int
        public var endIndex: Int
        public var message: String?
        public var repoPath: String?

        static let pingFailed = Assignment(
            ppRank: -1, startIndex: -1, endIndex: -1, message: "ping failed", repoPath: nil)
    }

    public nonisolated let plan: LayerPlan
    public nonisolated let totalLayers: Int
    /// What workers load (`repo_path`): the master's `--model_path`.
    public let modelPath: String
    private let prober: any ReachabilityProbe
    private let logger: Logger
    private var workers: [String: Worker] = [:] {
        didSet { for watcher in watchers.values { watcher.yield(()) } }
    }
    private var watchers: [UUID: AsyncStream<Void>.Continuation] = [:]
    private var watchersClosed = false

    public init(
        totalLayers: Int, workers: Int, modelPath: String, prober: any ReachabilityProbe = TCPReachabilityProbe(),
        logger: Logger = Logger(label: "tllm.registry")
    ) {
        self.totalLayers = totalLayers
        plan = LayerPlan(totalLayers: totalLayers, workers: workers)
        self.modelPath = modelPath
        self.prober = prober
        self.logger = logger
    }

    /// Handles a registration: reach the worker, then give it a range (first registration) or
    /// record the range it states (a worker that survived a master restart).
    public func register(_ registration: Registration) async -> Assignment {
        guard let address = await prober.fastest(hosts: registration.hosts, port: registration.port) else {
            logger.warning(
                "worker \(registration.clientID): none of \(registration.hosts) answers on port \(registration.port)")
            return .pingFailed
        }
        let rank: Int
        let layers: Range<Int>
        // A worker that survived a master restart states its range and has its layers loaded:
        // the original sends no /init_model after such a registration.
        let restored =
            registration.ppRank >= 0 && registration.startIndex >= 0 && registration.endIndex > registration.startIndex
            && registration.endIndex <= totalLayers
        if restored {
            rank = registration.ppRank
            layers = registration.startIndex..<registration.endIndex
        } else if let known = workers[registration.clientID] {
            // Registering again before loading (a restarted worker process): same range as before.
            rank = known.ppRank
            layers = known.layers
        } else {
            let covered = Set(workers.values.filter { $0.clientID != registration.clientID }.map(\.layers))
            let free = plan.ranges.indices.first { !covered.contains(plan.ranges[$0]) }
            rank = free ?? Int.random(in: plan.ranges.indices)
            layers = plan.ranges[rank]
        }
        workers[registration.clientID] = Worker(
            clientID: registration.clientID, address: address, ppRank: rank, layers: layers, initialized: restored)
        logger.info(
            "worker \(registration.clientID) at \(address): rank \(rank), layers \(layers.lowerBound)..<\(layers.upperBound)"
        )
        return Assignment(
            ppRank: rank, startIndex: layers.lowerBound, endIndex: layers.upperBound, message: "success",
            repoPath: modelPath)
    }

    /// `/init_model`: the worker loaded its layers. False when the client is unknown.
    public func initialized(clientID: String, ppRank: Int, layers: Range<Int>) -> Bool {
        guard var worker = workers[clientID] else { return false }
        worker.ppRank = ppRank
        worker.layers = layers
        worker.initialized = true
        workers[clientID] = worker
        if let route {
            logger.info(
                "complete route: \(route.map { "\($0.address) [\($0.layers.lowerBound), \($0.layers.upperBound))" }.joined(separator: " → "))"
            )
        }
        return true
    }

    /// Forgets a worker (failed health check).
    public func unregister(clientID: String) {
        workers[clientID] = nil
    }

    /// An element now and after every change of the registered workers (the web page's live
    /// view); ends when the caller stops iterating. Bursts coalesce into one element.
    public func changes() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        guard !watchersClosed else {
            continuation.finish()
            return stream
        }
        let id = UUID()
        watchers[id] = continuation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.stopWatching(id) }
        }
        continuation.yield(())
        return stream
    }

    private func stopWatching(_ id: UUID) { watchers[id] = nil }

    /// Ends every `changes()` stream, now and later (the server is stopping: open monitor
    /// sockets must not hold it up).
    public func closeWatchers() {
        watchersClosed = true
        for watcher in watchers.values { watcher.finish() }
        watchers = [:]
    }

    /// Every registered worker.
    public var registered: [Worker] {
        workers.values.sorted { ($0.layers.lowerBound, $0.clientID) < ($1.layers.lowerBound, $1.clientID) }
    }

    /// Initialised workers whose ranges chain from layer 0 to the last layer, if there is such a chain.
    public var route: [Worker]? {
        let ready = registered.filter(\.initialized)
        var chain: [Worker] = []
        var next = 0
        while next < totalLayers {
            guard let worker = ready.first(where: { $0.layers.lowerBound == next }) else { return nil }
            chain.append(worker)
            next = worker.layers.upperBound
        }
        return chain
    }
}
