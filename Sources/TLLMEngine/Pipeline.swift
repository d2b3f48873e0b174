import TLLMCompute

/// The decoder layers of a model, wherever they run: in this process (`LocalPipeline`) or on a
/// chain of workers (the cluster's remote pipeline). The scheduler sees only this.
public protocol Pipeline: Sendable {
    /// Runs every layer over a packed batch: `hidden` holds the rows of all `sequences` stacked in
    /// order, each sequence continuing its own KV cache. Returns the final hidden states, same shape.
    func forward(_ hidden: [Float], sequences: [SequenceSlice]) async throws -> [Float]

    /// Drops the KV caches of finished or aborted sequences on every stage.
    func release(_ ids: [String]) async
}

/// Layers computed in this process by shard actors, in order: no serialisation, no sockets
/// (`tllm.server --is_local`).
public struct LocalPipeline: Pipeline {
    /// The shards, whose layer ranges tile the model from layer 0.
    public let stages: [ShardActor]

    /// A pipeline over `stages`; their layer ranges must follow each other.
    public init(stages: [ShardActor]) {
        precondition(!stages.isEmpty, "a pipeline needs at least one stage")
        precondition(
            zip(stages, stages.dropFirst()).allSatisfy { $0.layers.upperBound == $1.layers.lowerBound },
            "stages must cover consecutive layer ranges")
        self.stages = stages
    }

    public func forward(_ hidden: [Float], sequences: [SequenceSlice]) async throws -> [Float] {
        var hidden = hidden
        for stage in stages { hidden = try await stage.forward(hidden, sequences: sequences) }
        return hidden
    }

    public func release(_ ids: [String]) async {
        for stage in stages { await stage.release(ids) }
    }
}
