import Logging
import NIOCore
import TLLMCompute
import TLLMEngine
import TLLMWire

/// Why a remote step failed.
public struct PipelineError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Steps in flight on the master, keyed by the joined uuid list (tllm-protocol.md §2): a step is
/// done when the last stage's `Forward` and one `Status` per stage have arrived.
public actor StepInbox {
    private struct Pending {
        var continuation: CheckedContinuation<TensorCodec.Decoded, any Error>
        var stages: Int
        var result: TensorCodec.Decoded?
        var reported: Set<Int> = []
    }
    private var pending: [String: Pending] = [:]
    private let logger: Logger

    public init(logger: Logger = Logger(label: "tllm.master.steps")) { self.logger = logger }

    /// Waits for step `key` of a `stages`-stage pipeline, at most `timeout` (the protocol's 10 s).
    /// `send` runs once the step is registered, so no answer can arrive before it.
    func wait(
        for key: String, stages: Int, timeout: Duration, send: @escaping @Sendable () async throws -> Void
    ) async throws -> TensorCodec.Decoded {
        let expiry = Task {
            try await Task.sleep(for: timeout)
            self.reject(key, PipelineError("the step timed out after \(timeout) waiting for the last stage"))
        }
        defer { expiry.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            guard pending[key] == nil else {
                continuation.resume(throwing: PipelineError("a step for the same requests is already in flight"))
                return
            }
            pending[key] = Pending(continuation: continuation, stages: stages)
            Task {
                do { try await send() } catch { self.fail(key, error) }
            }
        }
    }

    /// The last stage's `Forward`.
    func deliver(_ key: String, result: TensorCodec.Decoded) {
        guard var step = pending[key] else {
            logger.warning("Forward for unknown step \(key) ignored")
            return
        }
        step.result = result
        pending[key] = step
        completeIfDone(key)
    }

    /// A stage's `Status`.
    func report(_ key: String, stage: Int) {
        guard var step = pending[key] else {
            logger.debug("Status of stage \(stage) for unknown step \(key) ignored")
            return
        }
        guard (0..<step.stages).contains(stage) else {
            logger.warning("Status from stage \(stage), which this \(step.stages)-stage route does not have, ignored")
            return
        }
        step.reported.insert(stage)
        pending[key] = step
        completeIfDone(key)
    }

    private func completeIfDone(_ key: String) {
        guard let step = pending[key], let result = step.result, step.reported.count == step.stages else { return }
        pending[key] = nil
        step.continuation.resume(returning: result)
    }

    /// The step fails now (its error reaches the clients of all its requests, so it names no
    /// request; the log line does).
    func reject(_ key: String, _ error: any Error) {
        guard pending[key] != nil else { return }
        logger.warning("step \(key): \(error)")
        fail(key, error)
    }

    private func fail(_ key: String, _ error: any Error) {
        guard let step = pending.removeValue(forKey: key) else { return }
        step.continuation.resume(throwing: error)
    }
}

/// The master's RPCService: receives the last stage's hidden states and every stage's status.
public struct MasterService: RPCServiceProtocol {
    let inbox: StepInbox
    let hiddenSize: Int
    let forwardLimit: Int

    /// The service of a master whose steps carry at most `maxRequests` requests and `maxRows`
    /// input ids (the scheduler's batch limits) of width `hiddenSize`.
    public init(inbox: StepInbox, hiddenSize: Int, maxRequests: Int, maxRows: Int) {
        self.inbox = inbox
        self.hiddenSize = hiddenSize
        // The last stage sends one row per request, and echoes every input id of the step.
        forwardLimit =
            GRPCLimits.forwardMessageBytes(rows: maxRequests, requests: maxRequests, hiddenSize: hiddenSize)
            + GRPCLimits.forwardMessageBytes(rows: maxRows, requests: 0, hiddenSize: 0)
    }

    public func maximumRequestBytes(_ method: RPCServiceMethod) -> Int {
        switch method {
        case .forward: forwardLimit
        case .imageForward, .status, .health, .setConfig: GRPCLimits.controlMessageBytes
        }
    }

    /// Always acknowledged (as the protocol says); a result that cannot be decoded fails its step
    /// at once instead of leaving it to time out.
    public func forward(_ request: ForwardRequest, context: GRPCCallContext) async throws -> ForwardResponse {
        let key = request.uuidList.joined(separator: "-")
        do {
            guard let tensor = request.hiddenStates else { throw PipelineError("hidden_states is missing") }
            let result = try TensorCodec.decode(
                tensor, expectedRows: request.uuidList.count, expectedColumns: hiddenSize)
            await inbox.deliver(key, result: result)
        } catch {
            await inbox.reject(key, PipelineError("the last stage sent a bad result: \(error)"))
        }
        return ForwardResponse(msg: "Forward Completed", status: 200)
    }

    public func status(_ request: StatusRequest, context: GRPCCallContext) async throws -> StatusResponse {
        let key = request.uuid.joined(separator: "-")
        // Our workers report a step they could not complete with a negative cost_time (docs/cluster.md):
        // the step fails now instead of at its deadline.
        if request.costTime < 0 {
            await inbox.reject(
                key,
                PipelineError(
                    "stage \(request.ppIdx) could not complete the step: its compute failed or its next hop is unreachable (see that worker's log)"
                ))
            return StatusResponse(msg: "Successful", status: 200)
        }
        await inbox.report(key, stage: Int(request.ppIdx))
        return StatusResponse(msg: "Successful", status: 200)
    }

    public func health(_ request: Empty, context: GRPCCallContext) async throws -> HealthResponse {
        HealthResponse(msg: "Healthy", status: 200)
    }

    public func setConfig(_ request: SetConfigRequest, context: GRPCCallContext) async throws -> SetConfigResponse {
        SetConfigResponse(msg: "SetConfig Completed", status: 200)
    }
}

/// Layers on a chain of workers: the step goes to worker 0 as float16 (+ LZ4) rows; the master
/// waits for the last worker's `Forward` (each request's last row) and every stage's `Status`.
public struct RemotePipeline: Pipeline {
    let first: RPCServiceClient
    let stages: Int
    let hiddenSize: Int
    let inbox: StepInbox
    let timeout: Duration

    public init(
        first: RPCServiceClient, stages: Int, hiddenSize: Int, inbox: StepInbox, timeout: Duration = .seconds(10)
    ) {
        self.first = first
        self.stages = stages
        self.hiddenSize = hiddenSize
        self.inbox = inbox
        self.timeout = timeout
    }

    public func forward(_ step: PipelineStep) async throws -> [Float] {
        let ids = step.sequences.map(\.id)
        let request = ForwardRequest(
            uuidList: ids, inputIdsList: step.tokensPerSequence.map { InputIds(inputIds: $0) },
            hiddenStates: try TensorCodec.encode(step.hidden, rows: step.tokens.count, columns: hiddenSize))
        let first = first
        let result = try await inbox.wait(for: ids.joined(separator: "-"), stages: stages, timeout: timeout) {
            let answer = try await first.forward(request)
            guard answer.status == 200 else {
                throw PipelineError("worker 0 refused the step: \(answer.status) \(answer.msg)")
            }
        }
        guard result.rows == ids.count, result.columns == hiddenSize else {
            throw PipelineError(
                "the last stage sent [\(result.rows), \(result.columns)], expected [\(ids.count), \(hiddenSize)]")
        }
        return result.values
    }

    /// Workers drop a sequence's cache after 60 s idle; the protocol has no release call.
    public func release(_ ids: [String]) async {}

    /// One step per stage: while the last worker computes one step, the first computes another.
    public var concurrentSteps: Int { stages }
}

/// The pipeline the master's scheduler uses in cluster mode: the current route, or an error
/// until workers cover every layer.
public actor PipelineSwitch: Pipeline {
    private var current: (any Pipeline)?

    public init() {}

    /// Whether a complete route is in place.
    public var isAvailable: Bool { current != nil }

    /// Routes steps to `pipeline` (nil: none).
    public func use(_ pipeline: (any Pipeline)?) { current = pipeline }

    public func forward(_ step: PipelineStep) async throws -> [Float] {
        guard let current else { throw PipelineError("No available Full Node to process the request") }
        return try await current.forward(step)
    }

    public func release(_ ids: [String]) async { await current?.release(ids) }

    public var concurrentSteps: Int {
        get async { await current?.concurrentSteps ?? 1 }
    }
}
