import Foundation
import TLLMModelFiles

/// Owns a decoder shard (its weights and KV caches) and runs its compute on a dedicated
/// thread with a fixed pool of compute threads: the actor of architecture.md's
/// "Concurrency" section. Calls are serialised; the caller awaits without blocking.
public actor ShardActor {
    private let executor: ComputeThreadExecutor
    private let shard: DecoderShard
    private var lastUsed: [String: ContinuousClock.Instant] = [:]

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// The layers this actor computes.
    public nonisolated let layers: Range<Int>

    /// Loads `layers` of `model` with a pool of `threads` compute threads.
    public init(model: any ModelWeights, layers: Range<Int>, threads: Int, options: ComputeOptions = ComputeOptions())
        throws
    {
        // Load first: a failed load must not leave an executor thread behind.
        shard = try DecoderShard(model: model, layers: layers, pool: ComputePool(threads: threads), options: options)
        executor = ComputeThreadExecutor(name: "tllm-shard-\(layers.lowerBound)-\(layers.upperBound)")
        self.layers = layers
    }

    deinit { executor.shutdown() }

    /// Runs the layers over a packed batch (see `DecoderShard.forward`); returns the new hidden states.
    public func forward(_ hidden: [Float], sequences: [SequenceSlice]) throws -> [Float] {
        var hidden = hidden
        try shard.forward(hidden: &hidden, sequences: sequences)
        let now = ContinuousClock.now
        for slice in sequences { lastUsed[slice.id] = now }
        return hidden
    }

    /// Drops sequences' KV caches (finished or aborted requests).
    public func release(_ ids: [String]) {
        for id in ids {
            shard.release(id)
            lastUsed[id] = nil
        }
    }

    /// Drops the caches of sequences idle for longer than `idle` (the protocol's 60 s); returns their ids.
    @discardableResult
    public func releaseIdle(olderThan idle: Duration) -> [String] {
        let now = ContinuousClock.now
        let stale = lastUsed.filter { now - $0.value > idle }.map(\.key)
        release(stale)
        return stale
    }

    /// Cached length of a sequence (0 when unknown).
    public func cachedLength(of id: String) -> Int { shard.cachedLength(of: id) }
}

/// Owns the model head (embedding, final norm, LM head) on its own compute thread.
public actor HeadActor {
    private let executor: ComputeThreadExecutor
    private let head: ModelHead

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// Vocabulary size of the LM head.
    public nonisolated let vocabularySize: Int
    /// Width of a hidden-state row.
    public nonisolated let hiddenSize: Int

    /// Loads the head of `model` with a pool of `threads` compute threads.
    public init(model: any ModelWeights, threads: Int, options: ComputeOptions = ComputeOptions()) throws {
        head = try ModelHead(model: model, pool: ComputePool(threads: threads), options: options)
        executor = ComputeThreadExecutor(name: "tllm-head")
        vocabularySize = head.vocabularySize
        hiddenSize = head.configuration.hiddenSize
    }

    deinit { executor.shutdown() }

    /// Embedding rows of `tokens`, stacked.
    public func embed(_ tokens: [Int32]) throws -> [Float] { try head.embed(tokens) }

    /// Logits (`rows × vocabularySize`) of the given final hidden rows.
    public func logits(_ hidden: [Float], rows: Int) -> [Float] { head.logits(hidden, rows: rows) }
}
