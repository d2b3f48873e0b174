import Foundation
import TLLMModelFiles

/// Owns a decoder shard (its weights and KV caches) and runs its compute on a dedicated
/// thread with a fixed pool of compute threads: the actor of architecture.md's
/// "Concurrency" section. Calls are serialised; the caller awaits without blocking.
public actor ShardActor {
    private let executor: ComputeThreadExecutor
    private let shard: DecoderShard

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// The layers this actor computes.
    public nonisolated let layers: Range<Int>
    /// Who decides which KV pages each sequence uses: shared by the shards of a local pipeline,
    /// or this shard's own (a worker's).
    public nonisolated let cache: KVCacheManager

    /// Loads `layers` of `model` with a pool of `threads` compute threads. Its KV pages follow
    /// `cache`, or, without one, a manager of its own within `options.kvCacheBudget`.
    public init(
        model: any ModelWeights, layers: Range<Int>, threads: Int, options: ComputeOptions = ComputeOptions(),
        cache: KVCacheManager? = nil
    ) throws {
        let cache =
            cache
            ?? KVCacheManager.sized(
                forLayers: layers.count, of: model.configuration, options: options,
                contextLength: model.configuration.contextLength, prefixReuse: false)
        // Load first: a failed load must not leave an executor thread behind.
        shard = try DecoderShard(
            model: model, layers: layers, pool: ComputePool(threads: threads), options: options,
            pages: cache.pageCount, pageTokens: cache.pageTokens)
        executor = ComputeThreadExecutor(name: "tllm-shard-\(layers.lowerBound)-\(layers.upperBound)")
        self.layers = layers
        self.cache = cache
    }

    deinit { executor.shutdown() }

    /// Runs the layers over a packed batch in the pages `lease` names (see
    /// `DecoderShard.forward`); returns the new hidden states.
    public func forward(_ hidden: [Float], lease: KVLease) throws -> [Float] {
        var hidden = hidden
        try shard.forward(hidden: &hidden, lease: lease)
        return hidden
    }

    /// Leases the step's pages from `cache` (unknown sequences start empty), then runs the layers.
    public func forward(_ hidden: [Float], sequences: [SequenceSlice]) async throws -> [Float] {
        try shard.validate(hiddenCount: hidden.count, sequences: sequences)  // before any page is taken
        return try forward(hidden, lease: try await cache.lease(sequences))
    }

    /// Drops sequences' KV pages (finished or aborted requests).
    public func release(_ ids: [String]) async { await cache.release(ids) }

    /// Drops the pages of sequences idle for longer than `idle` (the protocol's 60 s); returns their ids.
    @discardableResult
    public func releaseIdle(olderThan idle: Duration) async -> [String] { await cache.releaseIdle(olderThan: idle) }

    /// Cached length of a sequence (0 when unknown).
    public func cachedLength(of id: String) async -> Int { await cache.length(of: id) }
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
