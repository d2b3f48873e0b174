import Foundation
import Logging
import TLLMCompute
import TLLMHub
import TLLMModel
import TLLMModelFiles

/// A worker's life (tllm-protocol.md §3): register with the master until it answers, load the
/// layers it assigns from the path it names, report `/init_model`, then check the master's health
/// every 30 s (5 s retries, up to 100) and register again with the same range when it returns.
public actor WorkerNode {
    /// What the master assigned.
    public struct Assignment: Sendable, Equatable {
        public var rank: Int
        public var layers: Range<Int>
        public var modelPath: String
    }

    let clientID: String
    let master: MasterConnection
    let hosts: [String]
    let port: Int
    /// Bytes offered for layers, sent with every registration (the master may weight its plan by it).
    let memory: Int
    let service: WorkerService
    let threads: Int
    let compute: ComputeOptions
    let logger: Logger
    private(set) var assignment: Assignment?
    private var shard: ShardActor?
    /// The `/health` instance of the master this worker registered with.
    private var masterInstance: String?
    /// Re-registering because of silence again and again (a standby): log it once.
    private var quietlyReregistering = false
    /// Three of the master's 10 s health checks missed.
    static let silenceLimit = Duration.seconds(35)

    public init(
        clientID: String = UUID().uuidString.lowercased(), master: MasterConnection, hosts: [String], port: Int,
        memory: Int, service: WorkerService, threads: Int, compute: ComputeOptions = ComputeOptions(),
        logger: Logger = Logger(label: "tllm.client")
    ) {
        self.clientID = clientID
        self.master = master
        self.hosts = hosts
        self.port = port
        self.memory = memory
        self.service = service
        self.threads = threads
        self.compute = compute
        self.logger = logger
    }

    /// Registers, loads, reports, then watches the master until cancelled.
    public func run() async throws {
        try await registerAndLoad()
        let idleEviction = Task { [shard] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(10))
                let dropped = await shard?.releaseIdle(olderThan: .seconds(60)) ?? []
                if !dropped.isEmpty { logger.info("dropped the KV caches of \(dropped.count) idle request(s)") }
            }
        }
        defer { idleEviction.cancel() }
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(30))
            switch await master.health() {
            case .up(let instance) where instance == nil || instance == masterInstance:
                // Our master health-checks every stage of its route every 10 s. Silence means it
                // dropped this worker (a check lost to a network fault) or has no complete route
                // yet, or this worker is a standby: registering again is harmless in all three.
                let silence = ContinuousClock.now - (await service.lastContact)
                guard silence >= Self.silenceLimit else {
                    quietlyReregistering = false
                    continue
                }
                logger.log(
                    level: quietlyReregistering ? .debug : .info,
                    "no call from the master for \(silence.components.seconds) s: registering again")
                try await registerAndLoad(quietly: quietlyReregistering)
                quietlyReregistering = true
                continue
            case .up:
                // A master that restarted between two checks lost its registry: same as it coming back.
                logger.warning("the master at \(master.baseURL) restarted")
            case .down:
                logger.warning("the master at \(master.baseURL) does not answer; retrying every 5 s")
                var back = false
                for _ in 0..<100 where !Task.isCancelled {
                    try await Task.sleep(for: .seconds(5))
                    if case .up = await master.health() {
                        back = true
                        break
                    }
                }
                guard back else { throw PipelineError("the master at \(master.baseURL) did not come back; giving up") }
            }
            logger.info("the master is back: registering again with layers \(assignment.map { "\($0.layers)" } ?? "-")")
            try await registerAndLoad()
        }
    }

    /// One registration round: until the master accepts, then load (if not yet) and `/init_model`.
    func registerAndLoad(quietly: Bool = false) async throws {
        var announced = false
        while !Task.isCancelled {
            do {
                let answer = try await master.post("register_client", registrationBody)
                guard answer["msg"] as? String == "success", let rank = answer["pp_rank"] as? Int,
                    let start = answer["start_idx"] as? Int, let end = answer["end_idx"] as? Int, end > start
                else {
                    logger.warning("the master refused the registration: \(answer); retrying in 5 s")
                    try await Task.sleep(for: .seconds(5))
                    continue
                }
                let path = (answer["repo_path"] as? String) ?? assignment?.modelPath ?? ""
                let assigned = Assignment(rank: rank, layers: start..<end, modelPath: path)
                if shard == nil || assigned.layers != assignment?.layers { try await load(assigned) }
                assignment = assigned
                let report = try await master.post(
                    "init_model", ["client_id": clientID, "pp_rank": rank, "start_idx": start, "end_idx": end])
                guard report["status"] as? Int == 200 else {
                    logger.warning("init_model answered \(report); registering again in 5 s")
                    try await Task.sleep(for: .seconds(5))
                    continue
                }
                // Our master names its process in the answer; the original's does not (nil).
                masterInstance = answer["instance"] as? String
                logger.log(
                    level: quietly ? .debug : .info,
                    "serving layers [\(start), \(end)) as pp_rank \(rank) for \(master.baseURL)")
                return
            } catch let error as PipelineError {
                throw error
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                if !announced { logger.info("waiting for the master at \(master.baseURL): \(error)") }
                announced = true
                try await Task.sleep(for: .seconds(5))
            }
        }
    }

    private var registrationBody: [String: any Sendable] {
        [
            "client_id": clientID, "host": hosts, "port": port, "pp_rank": assignment?.rank ?? -1, "tp_rank": -1,
            "start_idx": assignment?.layers.lowerBound ?? -1, "end_idx": assignment?.layers.upperBound ?? -1,
            "memory": memory,
        ]
    }

    private func load(_ assigned: Assignment) async throws {
        let started = ContinuousClock.now
        let path = try await ModelLocator(logger: logger).resolve(assigned.modelPath).modelURL.path
        let bundle = try ModelBundle.open(path: path, selection: TensorSelection(layers: assigned.layers))
        let configuration = bundle.weights.configuration
        guard assigned.layers.upperBound <= configuration.layerCount else {
            throw PipelineError(
                "the master assigned layers \(assigned.layers) of a \(configuration.layerCount)-layer model")
        }
        let shard = try ShardActor(model: bundle.weights, layers: assigned.layers, threads: threads, options: compute)
        self.shard = shard
        await service.attach(
            shard, totalLayers: configuration.layerCount, hiddenSize: configuration.hiddenSize,
            maxRows: configuration.contextLength)
        logger.info(
            "loaded layers [\(assigned.layers.lowerBound), \(assigned.layers.upperBound)) of \(bundle.name) in \((ContinuousClock.now - started).formatted(.units(allowed: [.milliseconds])))"
        )
    }
}
