import TLLMCompute

/// One forward step through the decoder layers: the packed batch of the wire protocol.
public struct PipelineStep: Sendable {
    /// The rows of every sequence, stacked in order (`tokens.count × hidden size`).
    public var hidden: [Float]
    /// Which sequence owns how many rows, in order; each continues its own KV cache.
    public var sequences: [SequenceSlice]
    /// The token ids of the rows, stacked like `hidden` (workers may key caches on them).
    public var tokens: [Int32]
    /// The step's KV pages, when the scheduler leased them from the pipeline's `kvCache`.
    public var lease: KVLease?

    public init(hidden: [Float], sequences: [SequenceSlice], tokens: [Int32], lease: KVLease? = nil) {
        precondition(sequences.reduce(0) { $0 + $1.rows } == tokens.count, "one token per row")
        self.hidden = hidden
        self.sequences = sequences
        self.tokens = tokens
        self.lease = lease
    }

    /// Each sequence's token ids (the protocol's `input_ids_list`).
    public var tokensPerSequence: [[Int32]] {
        var start = 0
        return sequences.map { slice in
            defer { start += slice.rows }
            return Array(tokens[start..<(start + slice.rows)])
        }
    }
}

/// The decoder layers of a model, wherever they run: in this process (`LocalPipeline`) or on a
/// chain of workers (`RemotePipeline` in TLLMCluster). The scheduler sees only this.
public protocol Pipeline: Sendable {
    /// Runs every layer over `step` and returns the final hidden state of the **last row of each
    /// sequence**, in order (`sequences.count × hidden size`): what the last worker sends back.
    func forward(_ step: PipelineStep) async throws -> [Float]

    /// Drops the KV caches of finished or aborted sequences where the pipeline can (remote
    /// workers drop them after 60 s idle: the protocol has no release call).
    func release(_ ids: [String]) async

    /// The KV cache manager of the pipeline's layers when it is in this process: the scheduler
    /// admits by its free pages, reuses cached prefixes and leases each step's pages from it.
    var kvCache: KVCacheManager? { get }

    /// How many steps over disjoint requests can usefully run at once: one per stage of a chain
    /// of workers (each computes a different step), one in this process.
    var concurrentSteps: Int { get async }
}

extension Pipeline {
    public var kvCache: KVCacheManager? { nil }
    public var concurrentSteps: Int { 1 }
}

/// Layers computed in this process by shard actors, in order: no serialisation, no sockets
/// (`tllm.server --is_local`). The shards share one KV cache manager, so one lease per step
/// serves them all.
public struct LocalPipeline: Pipeline {
    /// The shards, whose layer ranges tile the model from layer 0.
    public let stages: [ShardActor]

    /// A pipeline over `stages`; their layer ranges must follow each other and they must share
    /// one `KVCacheManager`.
    public init(stages: [ShardActor]) {
        precondition(!stages.isEmpty, "a pipeline needs at least one stage")
        precondition(
            zip(stages, stages.dropFirst()).allSatisfy { $0.layers.upperBound == $1.layers.lowerBound },
            "stages must cover consecutive layer ranges")
        precondition(stages.allSatisfy { $0.cache === stages[0].cache }, "stages must share one KV cache manager")
        self.stages = stages
    }

    public var kvCache: KVCacheManager? { stages[0].cache }

    public func forward(_ step: PipelineStep) async throws -> [Float] {
        let lease: KVLease
        if let given = step.lease {
            lease = given
        } else {
            lease = try await stages[0].cache.lease(step.sequences, tokens: step.tokens)
        }
        var hidden = step.hidden
        for stage in stages { hidden = try await stage.forward(hidden, lease: lease) }
        let rows = step.tokens.count
        return rows == 0
            ? [] : SequenceSlice.lastRows(of: hidden, sequences: step.sequences, width: hidden.count / rows)
    }

    public func release(_ ids: [String]) async { await stages[0].cache.release(ids) }
}
