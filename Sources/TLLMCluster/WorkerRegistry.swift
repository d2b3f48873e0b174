import Foundation
import Logging

/// The master's record of workers (tllm-protocol.md §3): registration, layer assignment,
/// `init_model`, and whether the registered workers cover every layer.
///
/// Layer planning: the plan starts as the even split over `--client_size` workers. Workers that
/// report their memory (`"memory"`, bytes: an extension field the original ignores) are held,
/// unanswered, for up to the registration window while the rest register; when all of them
/// have registered with memory, the plan is weighted by it. A worker that reports no memory
/// (the original's), or the window ending first, fixes the even plan. Held workers are then
/// answered in registration order; once fixed, the plan does not change.
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
        /// Registration order (kept while the worker stays registered): the route prefers the
        /// worker that joined first, so a newcomer for the same layers is a standby and never
        /// takes a serving worker's place (a route change moves every running request).
        public var joined: Int
    }

    /// `POST /register_client` body.
    public struct Registration: Sendable, Decodable {
        public var clientID: String
        public var hosts: [String]
        public var port: Int
        public var ppRank: Int
        public var startIndex: Int
        public var endIndex: Int
        /// Bytes this worker can give to layers (ours sends it; the original's workers do not).
        public var memory: Int?

        enum CodingKeys: String, CodingKey {
            case clientID = "client_id", hosts = "host", port, ppRank = "pp_rank", startIndex = "start_idx",
                endIndex = "end_idx", memory
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
            memory = try container.decodeIfPresent(Int.self, forKey: .memory).flatMap { $0 > 0 ? $0 : nil }
        }

        /// Most candidate hosts a worker may name: the master probes each (3 tries, 3 s).
        public static let maximumHosts = 16
        /// Longest `client_id` (bytes).
        public static let maximumClientIDBytes = 256

        /// Checks every field against what a model of `totalLayers` layers allows; the registration
        /// body came from the network.
        public func validate(totalLayers: Int) throws(InvalidRegistrationField) {
            guard !clientID.isEmpty, clientID.utf8.count <= Self.maximumClientIDBytes else {
                throw InvalidRegistrationField("client_id", "must be 1 to \(Self.maximumClientIDBytes) bytes long")
            }
            guard (1...Self.maximumHosts).contains(hosts.count) else {
                throw InvalidRegistrationField("host", "must list 1 to \(Self.maximumHosts) hosts")
            }
            // 253 bytes: the longest DNS name; an IPv6 address with a zone fits too.
            guard hosts.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 253 }) else {
                throw InvalidRegistrationField("host", "every host must be 1 to 253 bytes long")
            }
            guard (1...65535).contains(port) else {
                throw InvalidRegistrationField("port", "\(port) is not a TCP port")
            }
            try InvalidRegistrationField.checkLayers(
                ppRank: ppRank, startIndex: startIndex, endIndex: endIndex, totalLayers: totalLayers, allowUnset: true)
        }

        public init(
            clientID: String, hosts: [String], port: Int, ppRank: Int = -1, startIndex: Int = -1, endIndex: Int = -1,
            memory: Int? = nil
        ) {
            self.clientID = clientID
            self.hosts = hosts
            self.port = port
            self.ppRank = ppRank
            self.startIndex = startIndex
            self.endIndex = endIndex
            self.memory = memory
        }
    }

    /// A registration or `init_model` field outside what the model allows.
    public struct InvalidRegistrationField: Error, CustomStringConvertible {
        /// The JSON field.
        public var field: String
        public var message: String
        public var description: String { "Invalid '\(field)': \(message)." }

        init(_ field: String, _ message: String) {
            self.field = field
            self.message = message
        }

        /// `pp_rank`, `start_idx` and `end_idx`: a range inside `[0, totalLayers)`; with
        /// `allowUnset`, -1 (a first registration) too.
        public static func checkLayers(
            ppRank: Int, startIndex: Int, endIndex: Int, totalLayers: Int, allowUnset: Bool
        ) throws(InvalidRegistrationField) {
            let lowest = allowUnset ? -1 : 0
            guard ppRank >= lowest, ppRank < totalLayers else {
                throw InvalidRegistrationField("pp_rank", "\(ppRank) is outside \(lowest)..<\(totalLayers)")
            }
            if allowUnset && startIndex == -1 && endIndex == -1 { return }
            guard startIndex >= 0, startIndex < totalLayers else {
                throw InvalidRegistrationField("start_idx", "\(startIndex) is outside 0..<\(totalLayers)")
            }
            guard endIndex > startIndex, endIndex <= totalLayers else {
                throw InvalidRegistrationField(
                    "end_idx", "\(endIndex) must be above start_idx \(startIndex) and at most \(totalLayers)")
            }
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

    /// The layer split new workers are given (see the type's notes); provisional until `planFixed`.
    public private(set) var plan: LayerPlan
    public private(set) var planFixed: Bool
    public nonisolated let totalLayers: Int
    /// `--client_size`.
    public nonisolated let workerCount: Int
    /// How long the first worker that reports its memory waits for the others.
    public nonisolated let registrationWindow: Duration
    /// What workers load (`repo_path`): the master's `--model_path`.
    public let modelPath: String
    private let prober: any ReachabilityProbe
    private let logger: Logger
    private var workers: [String: Worker] = [:] {
        didSet { for watcher in watchers.values { watcher.yield(()) } }
    }
    private var watchers: [UUID: AsyncStream<Void>.Continuation] = [:]
    /// The next `Worker.joined`.
    private var nextJoin = 0
    private var watchersClosed = false
    /// Workers waiting for the plan (reached, not yet answered), in registration order.
    private var held: [Held] = []
    private var windowTimer: Task<Void, Never>?

    /// Workers waiting for the plan.
    var heldCount: Int { held.count }

    private struct Held {
        var clientID: String
        var address: String
        var memory: Int
        var answers: [CheckedContinuation<Assignment, Never>]
    }

    public init(
        totalLayers: Int, workers: Int, modelPath: String, registrationWindow: Duration = .zero,
        prober: any ReachabilityProbe = TCPReachabilityProbe(), logger: Logger = Logger(label: "tllm.registry")
    ) {
        self.totalLayers = totalLayers
        workerCount = workers
        self.registrationWindow = registrationWindow
        plan = LayerPlan(totalLayers: totalLayers, workers: workers)
        planFixed = workers == 1 || registrationWindow <= .zero
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
        // A worker that survived a master restart states its range and has its layers loaded:
        // the original sends no /init_model after such a registration.
        let restored =
            registration.ppRank >= 0 && registration.startIndex >= 0 && registration.endIndex > registration.startIndex
            && registration.endIndex <= totalLayers
        if restored {
            // Its range is settled: waiting for memory reports could only produce a plan that
            // does not fit it.
            fixPlan(because: "worker \(registration.clientID) holds layers from before a master restart")
            return record(
                registration.clientID, address: address, rank: registration.ppRank,
                layers: registration.startIndex..<registration.endIndex, initialized: true)
        }
        if let known = workers[registration.clientID] {
            // Registering again before loading (a restarted worker process): same range as before.
            return record(
                registration.clientID, address: address, rank: known.ppRank, layers: known.layers, initialized: false)
        }
        if !planFixed {
            guard let memory = registration.memory else {
                fixPlan(because: "worker \(registration.clientID) reports no memory")
                return assignFreeRange(registration.clientID, address: address)
            }
            return await withCheckedContinuation { answer in
                hold(registration.clientID, address: address, memory: memory, answer: answer)
            }
        }
        return assignFreeRange(registration.clientID, address: address)
    }

    /// Gives a new worker the first run of layers nobody holds: the planned range that starts it
    /// when the run follows the plan's boundaries, else the whole run (workers that kept their
    /// ranges across a master restart may not follow this master's plan). Every layer covered:
    /// any planned range (a standby).
    private func assignFreeRange(_ clientID: String, address: String) -> Assignment {
        var uncovered = IndexSet(integersIn: 0..<totalLayers)
        for worker in workers.values where worker.clientID != clientID { uncovered.remove(integersIn: worker.layers) }
        guard let gap = uncovered.rangeView.first else {
            let rank = Int.random(in: plan.ranges.indices)
            return record(clientID, address: address, rank: rank, layers: plan.ranges[rank], initialized: false)
        }
        let boundaries = Set(plan.ranges.map(\.lowerBound) + [totalLayers])
        let rank = plan.ranges.firstIndex { $0.contains(gap.lowerBound) } ?? 0
        let aligned = boundaries.contains(gap.lowerBound) && boundaries.contains(gap.upperBound)
        return record(
            clientID, address: address, rank: rank, layers: aligned ? plan.ranges[rank] : gap, initialized: false)
    }

    private func record(_ clientID: String, address: String, rank: Int, layers: Range<Int>, initialized: Bool)
        -> Assignment
    {
        let joined = workers[clientID]?.joined ?? nextJoin
        if workers[clientID] == nil { nextJoin += 1 }
        let worker = Worker(
            clientID: clientID, address: address, ppRank: rank, layers: layers, initialized: initialized,
            joined: joined)
        // A worker re-registering as it is (a standby does every 30 s) changes nothing.
        if workers[clientID] != worker {
            workers[clientID] = worker
            logger.info(
                "worker \(clientID) at \(address): rank \(rank), layers \(layers.lowerBound)..<\(layers.upperBound)")
        }
        return Assignment(
            ppRank: rank, startIndex: layers.lowerBound, endIndex: layers.upperBound, message: "success",
            repoPath: modelPath)
    }

    // MARK: Planning by memory

    private func hold(
        _ clientID: String, address: String, memory: Int, answer: CheckedContinuation<Assignment, Never>
    ) {
        if let index = held.firstIndex(where: { $0.clientID == clientID }) {
            // The same worker again (its earlier request may have timed out): one answer for both.
            held[index].address = address
            held[index].memory = memory
            held[index].answers.append(answer)
        } else {
            held.append(Held(clientID: clientID, address: address, memory: memory, answers: [answer]))
            logger.info(
                "worker \(clientID) at \(address) offers \(memory >> 20) MiB; planning when \(workerCount) worker(s) have registered (\(held.count) so far) or in \(registrationWindow)"
            )
        }
        if held.count >= workerCount {
            fixPlan(because: "all \(workerCount) workers registered")
        } else if windowTimer == nil {
            let window = registrationWindow
            windowTimer = Task { [weak self] in
                try? await Task.sleep(for: window)
                await self?.fixPlan(because: "the \(window) registration window ended")
            }
        }
    }

    /// Settles the plan (weighted when every planned worker reported memory) and answers the held workers.
    private func fixPlan(because reason: String) {
        guard !planFixed else { return }
        planFixed = true
        windowTimer?.cancel()
        windowTimer = nil
        if held.count >= workerCount {
            let memories = held.prefix(workerCount).map(\.memory)
            plan = LayerPlan(totalLayers: totalLayers, weights: memories.map(Double.init))
            logger.info(
                "layer plan weighted by memory (\(reason)): \(zip(memories, plan.ranges).map { "\($0 >> 20) MiB → [\($1.lowerBound), \($1.upperBound))" }.joined(separator: ", "))"
            )
        } else {
            logger.info(
                "layer plan split evenly (\(reason)): \(plan.ranges.map { "[\($0.lowerBound), \($0.upperBound))" }.joined(separator: ", "))"
            )
        }
        let waiting = held
        held = []
        for worker in waiting {
            let answer = assignFreeRange(worker.clientID, address: worker.address)
            for continuation in worker.answers { continuation.resume(returning: answer) }
        }
    }

    /// `/init_model`: the worker loaded its layers. False when the client is unknown.
    public func initialized(clientID: String, ppRank: Int, layers: Range<Int>) -> Bool {
        guard var worker = workers[clientID] else { return false }
        worker.ppRank = ppRank
        worker.layers = layers
        worker.initialized = true
        guard workers[clientID] != worker else { return true }
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

    /// Initialised workers whose ranges chain from layer 0 to the last layer, if there is such a
    /// chain; for each range, the worker that joined first (the others are standbys).
    public var route: [Worker]? {
        let ready = registered.filter(\.initialized).sorted { $0.joined < $1.joined }
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
