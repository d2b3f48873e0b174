import Logging
import NIOCore
import Synchronization
import TLLMCompute
import TLLMWire

/// A worker's RPCService (tllm-protocol.md §2): acknowledges each `Forward` at once, computes
/// its layers afterwards in arrival order, then reports `Status` to the master and sends the
/// result to the next hop (only each request's last row from the last stage).
public actor WorkerService: RPCServiceProtocol {
    private struct Route {
        var next: RPCServiceClient
        var master: RPCServiceClient
        var rank: Int
    }

    private struct Job: Sendable {
        var request: ForwardRequest
        var hidden: [Float]
        var sequences: [SequenceSlice]
    }

    private var totalLayers = 0
    private var hiddenSize = 0
    /// The largest `Forward` message read (see `maximumRequestBytes`): small until layers are
    /// attached, then what a step of the model's context length needs.
    private let forwardLimit = Atomic<Int>(GRPCLimits.controlMessageBytes)
    /// Steps accepted and not yet computed, and their float values: bounded, so a peer that
    /// sends faster than we compute gets RESOURCE_EXHAUSTED instead of our memory.
    private var pendingSteps = 0
    private var pendingValues = 0
    /// `maxPendingSteps` / `maxPendingValues` of `init`.
    private let security: GRPCSecurity
    private let maxPendingSteps: Int
    private let maxPendingValues: Int
    private let logger: Logger
    private var shard: ShardActor?
    private var route: Route?
    private let jobs: AsyncStream<Job>.Continuation
    private var worker: Task<Void, Never>?
    /// When the master last called (`Health`, `SetConfig` or `Forward`): a worker the master
    /// dropped hears nothing more and registers again (`WorkerNode`).
    public private(set) var lastContact = ContinuousClock.now

    /// A service without layers yet: they come with `attach` once the master has named the model
    /// and the range, and until then `Forward` answers "Model not initialized" as the original does.
    ///
    /// - Parameters:
    ///   - maxPendingSteps: Steps acknowledged and waiting for compute at most; more are refused
    ///     with RESOURCE_EXHAUSTED (the master retries or fails the step).
    ///   - maxPendingValues: The same bound in hidden-state values (4 bytes each once decoded).
    ///   - security: What this worker's calls to the next hop and the master present (the cluster key).
    public init(
        maxPendingSteps: Int = 64, maxPendingValues: Int = 256 << 20, security: GRPCSecurity = .none,
        logger: Logger = Logger(label: "tllm.worker")
    ) {
        self.security = security
        self.maxPendingSteps = maxPendingSteps
        self.maxPendingValues = maxPendingValues
        self.logger = logger
        let (stream, continuation) = AsyncStream<Job>.makeStream()
        jobs = continuation
        worker = nil
        Task { await self.start(stream) }
    }

    private func start(_ stream: AsyncStream<Job>) {
        worker = Task { [weak self] in
            for await job in stream { await self?.run(job) }
        }
    }

    /// The loaded layers of a model with `totalLayers` layers of width `hiddenSize`; a step
    /// carries at most `maxRows` rows (the model's context length).
    public func attach(_ shard: ShardActor, totalLayers: Int, hiddenSize: Int, maxRows: Int) {
        self.shard = shard
        self.totalLayers = totalLayers
        self.hiddenSize = hiddenSize
        forwardLimit.store(
            GRPCLimits.forwardMessageBytes(rows: maxRows, requests: maxRows, hiddenSize: hiddenSize),
            ordering: .relaxed)
    }

    public nonisolated func maximumRequestBytes(_ method: RPCServiceMethod) -> Int {
        switch method {
        case .forward: forwardLimit.load(ordering: .relaxed)
        case .imageForward, .status, .health, .setConfig: GRPCLimits.controlMessageBytes
        }
    }

    /// The loaded layers, if any.
    public var layers: Range<Int>? { shard?.layers }

    /// Stops computing (pending jobs are dropped).
    public func stop() {
        jobs.finish()
        worker?.cancel()
    }

    public func health(_ request: Empty, context: GRPCCallContext) async throws -> HealthResponse {
        lastContact = .now
        return HealthResponse(msg: "Healthy", status: 200)
    }

    public func status(_ request: StatusRequest, context: GRPCCallContext) async throws -> StatusResponse {
        StatusResponse(msg: "Successful", status: 200)
    }

    public func setConfig(_ request: SetConfigRequest, context: GRPCCallContext) async throws -> SetConfigResponse {
        lastContact = .now
        do {
            let next = RPCServiceClient(
                channel: try GRPCChannel(target: request.forwardURL, security: security), defaultTimeout: .seconds(10))
            let master = RPCServiceClient(
                channel: try GRPCChannel(target: request.masterURL, security: security), defaultTimeout: .seconds(10))
            if let old = route {
                await old.next.channel.close()
                await old.master.channel.close()
            }
            route = Route(next: next, master: master, rank: Int(request.ppRank))
        } catch {
            throw RPCError(.invalidArgument, "SetConfig: \(error.message)")
        }
        logger.info("pp_rank \(request.ppRank): results go to \(request.forwardURL), status to \(request.masterURL)")
        return SetConfigResponse(msg: "SetConfig Completed", status: 200)
    }

    public func forward(_ request: ForwardRequest, context: GRPCCallContext) async throws -> ForwardResponse {
        lastContact = .now
        guard shard != nil else { return ForwardResponse(msg: "Model not initialized", status: 500) }
        guard route != nil else { return ForwardResponse(msg: "No route: SetConfig first", status: 500) }
        let sequences = try Self.sequences(of: request)
        guard let tensor = request.hiddenStates else { throw RPCError(.invalidArgument, "hidden_states is missing") }
        let rows = sequences.reduce(0) { $0 + $1.rows }
        let (values, overflow) = rows.multipliedReportingOverflow(by: hiddenSize)
        guard !overflow, pendingSteps < maxPendingSteps, pendingValues <= maxPendingValues - values else {
            throw RPCError(
                .resourceExhausted,
                "\(pendingSteps) steps (\(pendingValues) values) are waiting for compute on this worker; retry later")
        }
        // The shape is compared with what this stage expects before anything is decompressed:
        // an LZ4 frame of a few MB may claim gigabytes.
        let decoded: TensorCodec.Decoded
        do { decoded = try TensorCodec.decode(tensor, expectedRows: rows, expectedColumns: hiddenSize) } catch {
            throw RPCError(.invalidArgument, "hidden_states: \(error) (rows = the input ids of all requests)")
        }
        pendingSteps += 1
        pendingValues += decoded.values.count
        jobs.yield(Job(request: request, hidden: decoded.values, sequences: sequences))
        return ForwardResponse(msg: "Forward Completed", status: 200)
    }

    /// A step's sequences, one per uuid with as many rows as its input ids; INVALID_ARGUMENT for
    /// lists of different lengths, a repeated uuid or a request without ids.
    package static func sequences(of request: ForwardRequest) throws(RPCError) -> [SequenceSlice] {
        guard request.uuidList.count == request.inputIdsList.count, !request.uuidList.isEmpty else {
            throw RPCError(
                .invalidArgument,
                "uuid_list has \(request.uuidList.count) entries, input_ids_list \(request.inputIdsList.count)")
        }
        guard Set(request.uuidList).count == request.uuidList.count else {
            throw RPCError(.invalidArgument, "uuid_list names a request twice")
        }
        let sequences = zip(request.uuidList, request.inputIdsList).map {
            SequenceSlice(id: $0, rows: $1.inputIds.count)
        }
        guard sequences.allSatisfy({ $0.rows > 0 }) else {
            throw RPCError(.invalidArgument, "every request needs at least one input id")
        }
        return sequences
    }

    private func run(_ job: Job) async {
        pendingSteps -= 1
        pendingValues -= job.hidden.count
        guard let shard, let route else { return }
        let started = ContinuousClock.now
        let step = job.request.uuidList.joined(separator: "-")
        var hidden: [Float]
        do {
            hidden = try await shard.forward(job.hidden, sequences: job.sequences)
        } catch {
            logger.error("step \(step): compute failed: \(error)")
            await reportFailure(of: job.request.uuidList, step: step, route: route)
            return
        }
        let cost = ContinuousClock.now - started
        var rows = hidden.count / hiddenSize
        if shard.layers.upperBound == totalLayers {
            hidden = SequenceSlice.lastRows(of: hidden, sequences: job.sequences, width: hiddenSize)
            rows = job.sequences.count
        }
        var result = job.request
        do {
            result.hiddenStates = try TensorCodec.encode(hidden, rows: rows, columns: hiddenSize)
        } catch {
            // Beyond float16's range (or NaN): the wire cannot carry it, so the step fails now
            // (a failure Status) rather than at the master's deadline.
            logger.error("step \(step): cannot send the result of layers \(shard.layers): \(error)")
            await reportFailure(of: job.request.uuidList, step: step, route: route)
            return
        }
        let (seconds, attoseconds) = cost.components
        let status = StatusRequest(
            uuid: job.request.uuidList, ppIdx: Int32(route.rank),
            costTime: Float(Double(seconds) + Double(attoseconds) / 1e18))
        let logger = logger
        // Status and Forward go out together. An unstructured task rather than `async let`: with
        // Swift 6.3.1 on Linux a worker crashed in the runtime's completeTask (a jump to a data
        // address) once under fault injection, and `async let` was this worker's only child task.
        let reported = Task {
            do { _ = try await route.master.status(status) } catch {
                logger.warning("step \(step): Status to \(route.master.channel.target) failed: \(error)")
            }
        }
        do {
            let answer = try await route.next.forward(result)
            if answer.status != 200 { logger.warning("step \(step): next hop answered \(answer.status) \(answer.msg)") }
        } catch {
            logger.error("step \(step): Forward to \(route.next.channel.target) failed: \(error)")
            await reported.value
            await reportFailure(of: job.request.uuidList, step: step, route: route)
            return
        }
        await reported.value
    }

    /// Tells the master that this stage could not complete a step (a `Status` with a negative
    /// `cost_time`, docs/cluster.md), so the step fails at once rather than at its deadline.
    private func reportFailure(of uuids: [String], step: String, route: Route) async {
        do {
            _ = try await route.master.status(StatusRequest(uuid: uuids, ppIdx: Int32(route.rank), costTime: -1))
        } catch {
            logger.warning("step \(step): could not tell the master that it failed: \(error)")
        }
    }
}
