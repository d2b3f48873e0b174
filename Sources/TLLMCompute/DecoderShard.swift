import CTLLMKernels
import TLLMModelFiles

/// The requests of one step, in the order their rows are stacked: `rows` new tokens of
/// sequence `id` (the whole prompt at prefill, one token at decode).
public struct SequenceSlice: Sendable, Hashable {
    public var id: String
    public var rows: Int
    public init(id: String, rows: Int) {
        self.id = id
        self.rows = rows
    }
}

extension SequenceSlice {
    /// The last row of each sequence of a packed batch (`sequences.count × width`): what the
    /// head needs, and what the last pipeline stage sends back.
    public static func lastRows(of hidden: [Float], sequences: [SequenceSlice], width: Int) -> [Float] {
        var result: [Float] = []
        result.reserveCapacity(sequences.count * width)
        var end = 0
        for slice in sequences {
            end += slice.rows
            result.append(contentsOf: hidden[((end - 1) * width)..<(end * width)])
        }
        return result
    }
}

/// Decoder layers `[a, b)` of a Llama-family model with the KV caches of the sequences it
/// has seen. Computes a packed batch: the rows of several sequences stacked, each at its
/// own position. Not thread-safe: the owning actor serialises calls.
public final class DecoderShard {
    /// Hyperparameters.
    public let configuration: ModelConfiguration
    /// The layers this shard computes.
    public let layers: Range<Int>
    private let weights: [LayerWeights]
    private let pool: ComputePool
    private let options: ComputeOptions
    private let ropeFactors: FloatStorage?
    private let neoxRope: Bool
    private var caches: [String: SequenceCache] = [:]
    /// Keeps the model file mapped.
    private let model: any ModelWeights

    struct LayerWeights {
        var attentionNorm: FloatStorage
        var feedForwardNorm: FloatStorage
        var query, key, value, output, gate, up, down: Linear
        var queryBias, keyBias, valueBias: FloatStorage?
    }

    /// Loads the weights of `layers` (views into the mapped file; nothing is copied for GGUF).
    public init(
        model: any ModelWeights, layers: Range<Int>, pool: ComputePool, options: ComputeOptions = ComputeOptions()
    )
        throws
    {
        let configuration = model.configuration
        guard layers.lowerBound >= 0, layers.upperBound <= configuration.layerCount, !layers.isEmpty else {
            throw ComputeError.badInput("layer range \(layers) is outside 0..<\(configuration.layerCount)")
        }
        self.model = model
        self.configuration = configuration
        self.layers = layers
        self.pool = pool
        self.options = options
        // llama.cpp permutes Llama Q/K rows for adjacent-pair rotation; Hugging Face uses half rotation.
        neoxRope = !model.queryKeyRowsPermuted
        func vector(_ role: TensorRole) throws -> FloatStorage { FloatStorage(try model.tensor(role).dequantize()) }
        func optionalVector(_ role: TensorRole) throws -> FloatStorage? {
            model.hasTensor(role) ? try vector(role) : nil
        }
        weights = try layers.map { index in
            LayerWeights(
                attentionNorm: try vector(.layer(index, .attentionNorm)),
                feedForwardNorm: try vector(.layer(index, .feedForwardNorm)),
                query: try Linear(model.tensor(.layer(index, .query))),
                key: try Linear(model.tensor(.layer(index, .key))),
                value: try Linear(model.tensor(.layer(index, .value))),
                output: try Linear(model.tensor(.layer(index, .attentionOutput))),
                gate: try Linear(model.tensor(.layer(index, .gate))),
                up: try Linear(model.tensor(.layer(index, .up))),
                down: try Linear(model.tensor(.layer(index, .down))),
                queryBias: try optionalVector(.layer(index, .queryBias)),
                keyBias: try optionalVector(.layer(index, .keyBias)),
                valueBias: try optionalVector(.layer(index, .valueBias)))
        }
        ropeFactors = try model.ropeFrequencyFactors().map(FloatStorage.init)
    }

    /// Sequences with a KV cache here.
    public var cachedSequences: [String] { Array(caches.keys) }

    /// Cached length of a sequence (0 when unknown).
    public func cachedLength(of id: String) -> Int { caches[id]?.length ?? 0 }

    /// Drops a sequence's KV cache.
    public func release(_ id: String) { caches[id] = nil }

    /// Bytes held by all KV caches of this shard.
    public var cacheBytes: Int { caches.values.reduce(0) { $0 + $1.byteCount } }

    /// Runs the shard's layers over `hidden` (rows of all sequences stacked, `hiddenSize`
    /// floats each) in place. Unknown sequences start at position 0; known ones continue
    /// where their cache ends.
    public func forward(hidden: inout [Float], sequences: [SequenceSlice]) throws {
        let c = configuration
        let rows = sequences.reduce(0) { $0 + $1.rows }
        guard rows > 0, sequences.allSatisfy({ $0.rows > 0 }), Set(sequences.map(\.id)).count == sequences.count else {
            throw ComputeError.badInput("a step needs distinct sequences with at least one row each")
        }
        guard hidden.count == rows * c.hiddenSize else {
            throw ComputeError.badInput(
                "hidden states hold \(hidden.count) floats, \(rows) rows × \(c.hiddenSize) expected")
        }
        for slice in sequences {
            let length = caches[slice.id]?.length ?? 0
            guard length + slice.rows <= c.contextLength else {
                throw ComputeError.contextExceeded(
                    "sequence \(slice.id) would reach \(length + slice.rows) tokens, beyond the context length \(c.contextLength)"
                )
            }
        }
        // Check the memory budget before touching any cache, so a refused step changes nothing.
        if let budget = options.kvCacheBudget {
            var total = cacheBytes
            for slice in sequences {
                let existing = self.caches[slice.id]
                let needed = (existing?.length ?? 0) + slice.rows
                total +=
                    SequenceCache.bytes(
                        capacity: existing?.capacityAfterReserving(needed) ?? SequenceCache.initialCapacity(needed),
                        layers: layers.count, kvWidth: c.kvHeadCount * c.headDimension, element: options.kvCache)
                    - (existing?.byteCount ?? 0)
            }
            guard total <= budget else {
                throw ComputeError.cacheBudgetExceeded(
                    "KV cache budget of \(budget) bytes exhausted: this step needs \(total) bytes in all")
            }
        }
        let caches = sequences.map { slice -> SequenceCache in
            if let cache = self.caches[slice.id] { return cache }
            let cache = SequenceCache(
                layers: layers.count, kvWidth: c.kvHeadCount * c.headDimension, element: options.kvCache)
            self.caches[slice.id] = cache
            return cache
        }
        for cache in zip(caches, sequences) { cache.0.reserve(cache.0.length + cache.1.rows) }

        let qWidth = c.headCount * c.headDimension
        let kvWidth = c.kvHeadCount * c.headDimension
        let normed = FloatStorage(count: rows * c.hiddenSize)
        let q = FloatStorage(count: rows * qWidth)
        let k = FloatStorage(count: rows * kvWidth)
        let v = FloatStorage(count: rows * kvWidth)
        let attention = FloatStorage(count: rows * qWidth)
        let projected = FloatStorage(count: rows * c.hiddenSize)
        let gate = FloatStorage(count: rows * c.intermediateSize)
        let up = FloatStorage(count: rows * c.intermediateSize)
        let scale = 1 / Float(c.headDimension).squareRoot()

        hidden.withUnsafeMutableBufferPointer { buffer in
            let x = buffer.baseAddress!
            for (layerIndex, layer) in weights.enumerated() {
                tllm_rms_norm(x, layer.attentionNorm.pointer, normed.pointer, rows, c.hiddenSize, c.rmsNormEpsilon)
                layer.query.apply(
                    normed.pointer, rows: rows, into: q.pointer, pool: pool, int8Activations: options.int8Activations)
                layer.key.apply(
                    normed.pointer, rows: rows, into: k.pointer, pool: pool, int8Activations: options.int8Activations)
                layer.value.apply(
                    normed.pointer, rows: rows, into: v.pointer, pool: pool, int8Activations: options.int8Activations)
                addBias(layer.queryBias, to: q.pointer, rows: rows, width: qWidth)
                addBias(layer.keyBias, to: k.pointer, rows: rows, width: kvWidth)
                addBias(layer.valueBias, to: v.pointer, rows: rows, width: kvWidth)

                var row = 0
                for (cache, slice) in zip(caches, sequences) {
                    let start = cache.length
                    for i in 0..<slice.rows {
                        let position = Int32(start + i)
                        tllm_rope(
                            q.pointer + (row + i) * qWidth, c.headCount, c.headDimension, position, c.ropeTheta,
                            ropeFactors?.pointer, neoxRope ? 1 : 0)
                        tllm_rope(
                            k.pointer + (row + i) * kvWidth, c.kvHeadCount, c.headDimension, position, c.ropeTheta,
                            ropeFactors?.pointer, neoxRope ? 1 : 0)
                    }
                    cache.write(
                        layer: layerIndex, at: start, keys: k.pointer + row * kvWidth,
                        values: v.pointer + row * kvWidth,
                        rows: slice.rows)
                    tllm_attention(
                        pool.pointer, q.pointer + row * qWidth, cache.keys(layer: layerIndex),
                        cache.values(layer: layerIndex), options.kvCache.kernelType,
                        attention.pointer + row * qWidth, slice.rows, start, c.headCount, c.kvHeadCount,
                        c.headDimension,
                        kvWidth, scale)
                    row += slice.rows
                }
                layer.output.apply(
                    attention.pointer, rows: rows, into: projected.pointer, pool: pool,
                    int8Activations: options.int8Activations)
                for i in 0..<(rows * c.hiddenSize) { x[i] += projected.pointer[i] }

                tllm_rms_norm(x, layer.feedForwardNorm.pointer, normed.pointer, rows, c.hiddenSize, c.rmsNormEpsilon)
                layer.gate.apply(
                    normed.pointer, rows: rows, into: gate.pointer, pool: pool, int8Activations: options.int8Activations
                )
                layer.up.apply(
                    normed.pointer, rows: rows, into: up.pointer, pool: pool, int8Activations: options.int8Activations)
                tllm_silu_mul(gate.pointer, up.pointer, gate.pointer, rows * c.intermediateSize)
                layer.down.apply(
                    gate.pointer, rows: rows, into: projected.pointer, pool: pool,
                    int8Activations: options.int8Activations)
                for i in 0..<(rows * c.hiddenSize) { x[i] += projected.pointer[i] }
            }
        }
        for (cache, slice) in zip(caches, sequences) { cache.length += slice.rows }
    }

    private func addBias(_ bias: FloatStorage?, to values: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        guard let bias else { return }
        for r in 0..<rows {
            for i in 0..<width { values[r * width + i] += bias.pointer[i] }
        }
    }
}

/// The keys and values one sequence has cached in each layer of a shard (float32 or float16
/// rows of `kvWidth`), growing by doubling up to what the sequence needs.
final class SequenceCache {
    var length = 0
    private(set) var capacity = 0
    private let kvWidth: Int
    private let element: ComputeOptions.CacheElement
    private var keyStorage: [UnsafeMutableRawPointer]
    private var valueStorage: [UnsafeMutableRawPointer]

    init(layers: Int, kvWidth: Int, element: ComputeOptions.CacheElement) {
        self.kvWidth = kvWidth
        self.element = element
        keyStorage = (0..<layers).map { _ in .allocate(byteCount: 1, alignment: 64) }
        valueStorage = (0..<layers).map { _ in .allocate(byteCount: 1, alignment: 64) }
    }

    deinit {
        keyStorage.forEach { $0.deallocate() }
        valueStorage.forEach { $0.deallocate() }
    }

    static func initialCapacity(_ needed: Int) -> Int { max(needed, 64) }

    func capacityAfterReserving(_ needed: Int) -> Int {
        needed > capacity ? max(needed, capacity * 2, 64) : capacity
    }

    static func bytes(capacity: Int, layers: Int, kvWidth: Int, element: ComputeOptions.CacheElement) -> Int {
        2 * layers * capacity * kvWidth * element.byteCount
    }

    /// Bytes held by this cache.
    var byteCount: Int {
        Self.bytes(capacity: capacity, layers: keyStorage.count, kvWidth: kvWidth, element: element)
    }

    func reserve(_ needed: Int) {
        guard needed > capacity else { return }
        let newCapacity = capacityAfterReserving(needed)
        let rowBytes = kvWidth * element.byteCount
        func grow(_ old: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer {
            let new = UnsafeMutableRawPointer.allocate(byteCount: newCapacity * rowBytes, alignment: 64)
            new.copyMemory(from: old, byteCount: length * rowBytes)
            old.deallocate()
            return new
        }
        keyStorage = keyStorage.map(grow)
        valueStorage = valueStorage.map(grow)
        capacity = newCapacity
    }

    func write(layer: Int, at position: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, rows: Int) {
        let count = rows * kvWidth
        let offset = position * kvWidth * element.byteCount
        switch element {
        case .float32:
            (keyStorage[layer] + offset).copyMemory(from: keys, byteCount: count * 4)
            (valueStorage[layer] + offset).copyMemory(from: values, byteCount: count * 4)
        case .float16:
            tllm_f32_to_f16(keys, (keyStorage[layer] + offset).assumingMemoryBound(to: UInt16.self), count)
            tllm_f32_to_f16(values, (valueStorage[layer] + offset).assumingMemoryBound(to: UInt16.self), count)
        }
    }

    func keys(layer: Int) -> UnsafeRawPointer { UnsafeRawPointer(keyStorage[layer]) }
    func values(layer: Int) -> UnsafeRawPointer { UnsafeRawPointer(valueStorage[layer]) }
}
