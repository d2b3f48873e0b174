import CTLLMKernels
import Foundation
import TLLMModelFiles

/// The requests of one step, in the order their rows are stacked: `rows` new tokens of
/// sequence `id` (the whole prompt at prefill, one token at decode).
public struct SequenceSlice: Sendable, Hashable {
    public var id: String
    public var rows: Int
    /// How many of the rows, from the first, are prompt tokens; the rest are generated tokens
    /// fed back. nil when the sender did not say (a step from the original protocol): then one
    /// row is taken as a generated token and several as prompt tokens.
    public var promptRows: Int?

    public init(id: String, rows: Int, promptRows: Int? = nil) {
        self.id = id
        self.rows = rows
        self.promptRows = promptRows.map { min(max($0, 0), rows) }
    }

    /// `promptRows`, or the guess for a sender that did not say.
    public var resolvedPromptRows: Int { promptRows ?? (rows == 1 ? 0 : rows) }
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
    /// The KV pages of this shard's layers; which pages a sequence uses comes with each step.
    public let cache: KVPagePool
    /// Keeps the model file mapped.
    private let model: any ModelWeights

    struct LayerWeights {
        var attentionNorm: FloatStorage
        var feedForwardNorm: FloatStorage
        var query, key, value, output: Linear
        var feedForward: FeedForward
        var queryBias, keyBias, valueBias: FloatStorage?
        /// Per-head RMSNorm weights of q and k (Qwen3).
        var queryNorm, keyNorm: FloatStorage?
    }

    /// A layer's SwiGLU feed-forward block: one for every token, or experts a router picks per token.
    enum FeedForward {
        case dense(Expert)
        case experts(router: Linear, experts: [Expert], perToken: Int, normalize: Bool)
    }

    /// One SwiGLU block: `down(silu(gate(x)) * up(x))`.
    struct Expert {
        var gate, up, down: Linear
        var width: Int { gate.outputs }
    }

    /// Loads the weights of `layers` (views into the mapped file; nothing is copied for GGUF) and
    /// reserves `pages` KV pages of `pageTokens` positions.
    public init(
        model: any ModelWeights, layers: Range<Int>, pool: ComputePool, options: ComputeOptions = ComputeOptions(),
        pages: Int, pageTokens: Int
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
        // Every weight's shape is checked against the hyperparameters before use: the kernels
        // size their reads from the tensor, the step's buffers from the configuration.
        let c = configuration
        let (hidden, qWidth, kvWidth) = (c.hiddenSize, c.headCount * c.headDimension, c.kvHeadCount * c.headDimension)
        func vector(_ role: TensorRole, _ count: Int) throws -> FloatStorage {
            FloatStorage(try model.tensor(role, shape: [count]).dequantize())
        }
        func optionalVector(_ role: TensorRole, _ count: Int) throws -> FloatStorage? {
            model.hasTensor(role) ? try vector(role, count) : nil
        }
        /// The per-head q/k norm: required by the families that have one, refused where it would be ignored.
        func headNorm(_ role: TensorRole.LayerTensor, _ index: Int) throws -> FloatStorage? {
            if c.architecture.normalisesQueryKey { return try vector(.layer(index, role), c.headDimension) }
            guard !model.hasTensor(.layer(index, role)) else {
                throw ModelFileError(
                    model.path,
                    "tensor \(TensorRole.layer(index, role)) is present, but the \(c.architecture) architecture has "
                        + "no q/k norm")
            }
            return nil
        }
        func linear(_ role: TensorRole.LayerTensor, _ index: Int, _ outputs: Int, _ inputs: Int) throws -> Linear {
            try Linear(model.tensor(.layer(index, role), shape: [outputs, inputs]), options: options)
        }
        /// Experts where the layer has a router (some MoE models keep dense layers), else dense.
        func feedForward(_ index: Int) throws -> FeedForward {
            guard let moe = c.experts, model.hasTensor(.layer(index, .router)) else {
                return .dense(
                    Expert(
                        gate: try linear(.gate, index, c.intermediateSize, hidden),
                        up: try linear(.up, index, c.intermediateSize, hidden),
                        down: try linear(.down, index, hidden, c.intermediateSize)))
            }
            func matrix(_ expert: Int, _ role: TensorRole.ExpertTensor, _ outputs: Int, _ inputs: Int) throws -> Linear
            {
                try Linear(
                    model.tensor(.expert(layer: index, expert: expert, role), shape: [outputs, inputs]),
                    options: options)
            }
            let width = moe.feedForwardSize
            return .experts(
                router: try linear(.router, index, moe.expertCount, hidden),
                experts: try (0..<moe.expertCount).map { e in
                    Expert(
                        gate: try matrix(e, .gate, width, hidden), up: try matrix(e, .up, width, hidden),
                        down: try matrix(e, .down, hidden, width))
                }, perToken: moe.expertsPerToken, normalize: moe.normalizesSelected)
        }
        weights = try layers.map { index in
            LayerWeights(
                attentionNorm: try vector(.layer(index, .attentionNorm), hidden),
                feedForwardNorm: try vector(.layer(index, .feedForwardNorm), hidden),
                query: try linear(.query, index, qWidth, hidden),
                key: try linear(.key, index, kvWidth, hidden),
                value: try linear(.value, index, kvWidth, hidden),
                output: try linear(.attentionOutput, index, hidden, qWidth),
                feedForward: try feedForward(index),
                queryBias: try optionalVector(.layer(index, .queryBias), qWidth),
                keyBias: try optionalVector(.layer(index, .keyBias), kvWidth),
                valueBias: try optionalVector(.layer(index, .valueBias), kvWidth),
                queryNorm: try headNorm(.queryNorm, index),
                keyNorm: try headNorm(.keyNorm, index))
        }
        ropeFactors = try model.ropeFrequencyFactors().map(FloatStorage.init)
        cache = KVPagePool(
            layout: Self.pageLayout(
                configuration, layers: layers.count, pageTokens: pageTokens, element: options.kvCache), pageCount: pages
        )
    }

    /// The page shape of `layers` layers of a model.
    public static func pageLayout(
        _ configuration: ModelConfiguration, layers: Int, pageTokens: Int, element: ComputeOptions.CacheElement
    ) -> KVPageLayout {
        KVPageLayout(
            pageTokens: pageTokens, layers: layers, kvWidth: configuration.kvHeadCount * configuration.headDimension,
            element: element)
    }

    /// Checks a step's shape: distinct sequences of at least one row, `hiddenSize` floats per row.
    public func validate(hiddenCount: Int, sequences: [SequenceSlice]) throws {
        let rows = sequences.reduce(0) { $0 + $1.rows }
        guard rows > 0, sequences.allSatisfy({ $0.rows > 0 }), Set(sequences.map(\.id)).count == sequences.count else {
            throw ComputeError.badInput("a step needs distinct sequences with at least one row each")
        }
        guard hiddenCount == rows * configuration.hiddenSize else {
            throw ComputeError.badInput(
                "hidden states hold \(hiddenCount) floats, \(rows) rows × \(configuration.hiddenSize) expected")
        }
    }

    /// Runs the shard's layers over `hidden` (rows of all sequences stacked, `hiddenSize`
    /// floats each) in place, each sequence continuing in the pages `lease` gives it.
    public func forward(hidden: inout [Float], lease: KVLease) throws {
        let c = configuration
        let sequences = lease.entries
        try validate(hiddenCount: hidden.count, sequences: sequences.map { SequenceSlice(id: $0.id, rows: $0.rows) })
        let rows = sequences.reduce(0) { $0 + $1.rows }
        for entry in sequences {
            guard entry.pages.count * cache.layout.pageTokens >= entry.start + entry.rows,
                entry.pages.allSatisfy({ $0 >= 0 && Int($0) < cache.pageCount })
            else { throw ComputeError.badInput("the lease of sequence \(entry.id) does not cover its rows") }
            if let copy = entry.copy { cache.copy(rows: copy.rows, from: copy.from, to: copy.to) }
        }

        let qWidth = c.headCount * c.headDimension
        let kvWidth = c.kvHeadCount * c.headDimension
        let normed = FloatStorage(count: rows * c.hiddenSize)
        let q = FloatStorage(count: rows * qWidth)
        let k = FloatStorage(count: rows * kvWidth)
        let v = FloatStorage(count: rows * kvWidth)
        let attention = FloatStorage(count: rows * qWidth)
        let projected = FloatStorage(count: rows * c.hiddenSize)
        let feedForwardWidth = max(c.intermediateSize, c.experts?.feedForwardSize ?? 0)
        let gate = FloatStorage(count: rows * feedForwardWidth)
        let up = FloatStorage(count: rows * feedForwardWidth)
        let kinds = Self.rowKinds(groups: Self.rowGroups(sequences), rows: rows)
        let mixture = c.experts.map { MixtureScratch(rows: rows, hidden: c.hiddenSize, experts: $0.expertCount) }
        let scale = 1 / Float(c.headDimension).squareRoot()

        let groups = Self.rowGroups(sequences)
        /// A projection of every row, each group of rows on the kernel of its kind.
        func project(_ linear: Linear, _ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>) {
            for group in groups {
                linear.apply(
                    input + group.rows.lowerBound * linear.inputs, rows: group.rows.count,
                    into: output + group.rows.lowerBound * linear.outputs, pool: pool, kind: group.kind)
            }
        }

        hidden.withUnsafeMutableBufferPointer { buffer in
            let x = buffer.baseAddress!
            for (layerIndex, layer) in weights.enumerated() {
                tllm_rms_norm(x, layer.attentionNorm.pointer, normed.pointer, rows, c.hiddenSize, c.rmsNormEpsilon)
                project(layer.query, normed.pointer, q.pointer)
                project(layer.key, normed.pointer, k.pointer)
                project(layer.value, normed.pointer, v.pointer)
                addBias(layer.queryBias, to: q.pointer, rows: rows, width: qWidth)
                addBias(layer.keyBias, to: k.pointer, rows: rows, width: kvWidth)
                addBias(layer.valueBias, to: v.pointer, rows: rows, width: kvWidth)
                // Qwen3: each head's q and k RMS-normalised on their own, before RoPE.
                if let norm = layer.queryNorm {
                    tllm_rms_norm(
                        q.pointer, norm.pointer, q.pointer, rows * c.headCount, c.headDimension, c.rmsNormEpsilon)
                }
                if let norm = layer.keyNorm {
                    tllm_rms_norm(
                        k.pointer, norm.pointer, k.pointer, rows * c.kvHeadCount, c.headDimension, c.rmsNormEpsilon)
                }

                var row = 0
                for slice in sequences {
                    let start = slice.start
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
                        layer: layerIndex, table: slice.pages, start: start, keys: k.pointer + row * kvWidth,
                        values: v.pointer + row * kvWidth, rows: slice.rows)
                    cache.withView(layer: layerIndex, table: slice.pages) { view in
                        tllm_attention(
                            pool.pointer, q.pointer + row * qWidth, view, attention.pointer + row * qWidth,
                            slice.rows, start, c.headCount, c.kvHeadCount, c.headDimension, scale)
                    }
                    row += slice.rows
                }
                project(layer.output, attention.pointer, projected.pointer)
                for i in 0..<(rows * c.hiddenSize) { x[i] += projected.pointer[i] }

                tllm_rms_norm(x, layer.feedForwardNorm.pointer, normed.pointer, rows, c.hiddenSize, c.rmsNormEpsilon)
                switch layer.feedForward {
                case .dense(let block):
                    project(block.gate, normed.pointer, gate.pointer)
                    project(block.up, normed.pointer, up.pointer)
                    tllm_silu_mul(gate.pointer, up.pointer, gate.pointer, rows * block.width)
                    project(block.down, gate.pointer, projected.pointer)
                case .experts(let router, let experts, let perToken, let normalize):
                    project(router, normed.pointer, mixture!.logits.pointer)
                    mixture!.mix(
                        normed.pointer, into: projected.pointer, experts: experts, perToken: perToken,
                        normalize: normalize, kinds: kinds, gate: gate.pointer, up: up.pointer, pool: pool)
                }
                for i in 0..<(rows * c.hiddenSize) { x[i] += projected.pointer[i] }
            }
        }
    }

    /// Consecutive rows of one kind (prompt or generated), in step order. A row's kernel follows
    /// its kind, never how many rows the step carries, so a request computes the same numbers
    /// whatever it shares a step with (docs/compute.md, "Batch invariance").
    static func rowGroups(_ entries: [KVLease.Entry]) -> [(rows: Range<Int>, kind: Linear.RowKind)] {
        var groups: [(rows: Range<Int>, kind: Linear.RowKind)] = []
        func add(_ rows: Range<Int>, _ kind: Linear.RowKind) {
            guard !rows.isEmpty else { return }
            if let last = groups.last, last.kind == kind, last.rows.upperBound == rows.lowerBound {
                groups[groups.count - 1].rows = last.rows.lowerBound..<rows.upperBound
            } else {
                groups.append((rows, kind))
            }
        }
        var row = 0
        for entry in entries {
            add(row..<(row + entry.promptRows), .prompt)
            add((row + entry.promptRows)..<(row + entry.rows), .generated)
            row += entry.rows
        }
        return groups
    }

    /// The kind of every row of a step.
    static func rowKinds(groups: [(rows: Range<Int>, kind: Linear.RowKind)], rows: Int) -> [Linear.RowKind] {
        var kinds = [Linear.RowKind](repeating: .generated, count: rows)
        for group in groups { for row in group.rows { kinds[row] = group.kind } }
        return kinds
    }

    private func addBias(_ bias: FloatStorage?, to values: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        guard let bias else { return }
        for r in 0..<rows {
            for i in 0..<width { values[r * width + i] += bias.pointer[i] }
        }
    }
}

/// The scratch of a mixture-of-experts block for one step: router logits, and each expert's rows
/// gathered together so that its weights are read once per step whatever number of tokens chose it.
final class MixtureScratch {
    let logits: FloatStorage
    private let gathered: FloatStorage
    private let output: FloatStorage
    private let rows: Int, hidden: Int, expertCount: Int

    init(rows: Int, hidden: Int, experts: Int) {
        (self.rows, self.hidden, self.expertCount) = (rows, hidden, experts)
        logits = FloatStorage(count: rows * experts)
        gathered = FloatStorage(count: rows * hidden)
        output = FloatStorage(count: rows * hidden)
    }

    /// The top `count` experts of a row of router logits with their softmax probabilities (over all
    /// experts), highest first; equal probabilities go to the lower index.
    static func select(_ logits: UnsafePointer<Float>, experts: Int, count: Int, normalize: Bool) -> [(Int, Float)] {
        var maximum = -Float.infinity
        for e in 0..<experts { maximum = max(maximum, logits[e]) }
        var sum = 0.0
        for e in 0..<experts { sum += Double(expf(logits[e] - maximum)) }
        var top: [Int] = []
        top.reserveCapacity(count + 1)
        for e in 0..<experts {
            var position = top.count
            while position > 0 && logits[top[position - 1]] < logits[e] { position -= 1 }
            guard position < count else { continue }
            top.insert(e, at: position)
            if top.count > count { top.removeLast() }
        }
        var chosen = top.map { ($0, Float(Double(expf(logits[$0] - maximum)) / sum)) }
        if normalize {
            let total = chosen.reduce(Float(0)) { $0 + $1.1 }
            chosen = chosen.map { ($0.0, $0.1 / total) }
        }
        return chosen
    }

    /// `out = Σ_selected p_e · expert_e(x)` for every row of `x` (`rows × hidden`), from the
    /// router logits in `logits`. Rows are grouped by expert, and within an expert by kind, so a
    /// row runs on the kernel of its kind (batch invariance) and sums its experts in index order.
    func mix(
        _ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, experts: [DecoderShard.Expert], perToken: Int,
        normalize: Bool, kinds: [Linear.RowKind], gate: UnsafeMutablePointer<Float>, up: UnsafeMutablePointer<Float>,
        pool: ComputePool
    ) {
        var assigned = [[(row: Int, weight: Float)]](repeating: [], count: expertCount)
        for row in 0..<rows {
            let chosen = Self.select(
                logits.pointer + row * expertCount, experts: expertCount, count: perToken, normalize: normalize)
            for (expert, weight) in chosen { assigned[expert].append((row, weight)) }
        }
        out.update(repeating: 0, count: rows * hidden)
        for (index, expert) in experts.enumerated() {
            for kind in [Linear.RowKind.prompt, .generated] {
                let members = assigned[index].filter { kinds[$0.row] == kind }
                guard !members.isEmpty else { continue }
                for (i, member) in members.enumerated() {
                    (gathered.pointer + i * hidden).update(from: x + member.row * hidden, count: hidden)
                }
                let n = members.count
                expert.gate.apply(gathered.pointer, rows: n, into: gate, pool: pool, kind: kind)
                expert.up.apply(gathered.pointer, rows: n, into: up, pool: pool, kind: kind)
                tllm_silu_mul(gate, up, gate, n * expert.width)
                expert.down.apply(gate, rows: n, into: output.pointer, pool: pool, kind: kind)
                for (i, member) in members.enumerated() {
                    let source = output.pointer + i * hidden
                    let target = out + member.row * hidden
                    for j in 0..<hidden { target[j] += member.weight * source[j] }
                }
            }
        }
    }
}
