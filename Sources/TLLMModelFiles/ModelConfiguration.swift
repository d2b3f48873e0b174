import Foundation

/// The hyperparameters a decoder needs, read from GGUF metadata or a Hugging Face `config.json`.
public struct ModelConfiguration: Sendable, Hashable {
    /// Decoder families we compute; chosen from `general.architecture` / `model_type`.
    public enum Architecture: String, Sendable, Hashable, CaseIterable {
        /// Llama 2/3.x, SmolLM2, TinyLlama, Mistral: RMSNorm, RoPE, GQA, SwiGLU.
        case llama
        /// Llama with q/k/v biases.
        case qwen2
        /// Llama with a per-head RMSNorm on q and k before RoPE, no biases by default, and a head
        /// dimension of its own (not hidden / heads).
        case qwen3
        /// Qwen3 with mixture-of-experts feed-forward layers.
        case qwen3moe

        /// Whether q and k are RMS-normalised per head before RoPE (`attn_q_norm` / `q_norm`).
        public var normalisesQueryKey: Bool { self == .qwen3 || self == .qwen3moe }
    }

    /// Mixture-of-experts feed-forward layers (Qwen3-MoE, Mixtral): a router picks
    /// `expertsPerToken` of `expertCount` SwiGLU experts per token and mixes their outputs by the
    /// router's softmax probabilities. Which layers are sparse is read from the tensors present.
    public struct MixtureOfExperts: Sendable, Hashable {
        public var expertCount: Int
        public var expertsPerToken: Int
        /// Each expert's intermediate size.
        public var feedForwardSize: Int
        /// Whether the selected experts' probabilities are rescaled to sum to 1 (Mixtral, Qwen3-MoE's
        /// `norm_topk_prob`).
        public var normalizesSelected: Bool
    }

    /// Llama 3's frequency-dependent RoPE scaling (`rope_scaling.rope_type == "llama3"`).
    public struct Llama3RopeScaling: Sendable, Hashable {
        public var factor: Float
        public var lowFrequencyFactor: Float
        public var highFrequencyFactor: Float
        public var originalContextLength: Int
    }

    public var architecture: Architecture
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDimension: Int
    public var vocabularySize: Int
    public var contextLength: Int
    public var rmsNormEpsilon: Float
    public var ropeTheta: Float
    public var ropeScaling: Llama3RopeScaling?
    /// The LM head reuses the embedding matrix.
    public var tieWordEmbeddings: Bool
    /// q/k/v projections have biases (Qwen2).
    public var attentionBias: Bool
    /// MLX affine quantisation of the checkpoint, if any.
    public var quantization: MLXQuantization?
    /// The experts of the sparse layers, if the model has any.
    public var experts: MixtureOfExperts?

    /// MLX's `quantization: {group_size, bits}`.
    public struct MLXQuantization: Sendable, Hashable {
        public var groupSize: Int
        public var bits: Int
    }

    /// Reads the `{arch}.*` keys of a GGUF file.
    public init(gguf file: GGUFFile) throws(ModelFileError) {
        let metadata = file.metadata
        guard let name = metadata["general.architecture"]?.string else {
            throw ModelFileError(file.path, "metadata general.architecture is missing")
        }
        guard let architecture = Architecture(rawValue: name) else {
            throw ModelFileError(
                file.path, "architecture \(name) is not supported (supported: \(Architecture.allCases.map(\.rawValue)))"
            )
        }
        func int(_ key: String) throws(ModelFileError) -> Int {
            guard let value = metadata["\(name).\(key)"]?.int else {
                throw ModelFileError(file.path, "metadata \(name).\(key) is missing or not an integer")
            }
            return value
        }
        self.architecture = architecture
        hiddenSize = try int("embedding_length")
        intermediateSize = try int("feed_forward_length")
        layerCount = try int("block_count")
        headCount = try int("attention.head_count")
        kvHeadCount = metadata["\(name).attention.head_count_kv"]?.int ?? headCount
        headDimension = metadata["\(name).attention.key_length"]?.int ?? hiddenSize / max(headCount, 1)
        vocabularySize = metadata["\(name).vocab_size"]?.int ?? metadata["tokenizer.ggml.tokens"]?.array?.count ?? 0
        contextLength = try int("context_length")
        rmsNormEpsilon = Float(metadata["\(name).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5)
        ropeTheta = Float(metadata["\(name).rope.freq_base"]?.double ?? 10_000)
        // llama.cpp stores Llama 3 scaling as a precomputed `rope_freqs` tensor; the compute
        // module reads that tensor when present.
        ropeScaling = nil
        quantization = nil
        tieWordEmbeddings = !file.hasTensor(named: "output.weight")
        attentionBias = file.hasTensor(named: "blk.0.attn_q.bias")
        experts = nil
        if let count = metadata["\(name).expert_count"]?.int, count > 0 {
            // llama.cpp renormalises the selected experts' weights for both families it files
            // under these architectures (Mixtral as llama, Qwen3-MoE).
            experts = MixtureOfExperts(
                expertCount: count, expertsPerToken: try int("expert_used_count"),
                feedForwardSize: metadata["\(name).expert_feed_forward_length"]?.int ?? intermediateSize,
                normalizesSelected: true)
        }
        try validate(path: file.path)
    }

    /// Reads a Hugging Face `config.json`.
    public init(configJSON data: Data, path: String) throws(ModelFileError) {
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelFileError(path, "not a JSON object")
        }
        let modelType = json["model_type"] as? String ?? ""
        let families: [String: Architecture] = [
            "llama": .llama, "mistral": .llama, "mixtral": .llama, "qwen2": .qwen2, "qwen3": .qwen3,
            "qwen3_moe": .qwen3moe,
        ]
        guard let architecture = families[modelType] else {
            let named = (json["architectures"] as? [String])?.joined(separator: ", ") ?? "none"
            throw ModelFileError(
                path,
                "model_type \"\(modelType)\" (architectures: \(named)) is not supported (supported: \(families.keys.sorted().joined(separator: ", ")))"
            )
        }
        func int(_ key: String) throws(ModelFileError) -> Int {
            guard let value = (json[key] as? NSNumber)?.intValue else {
                throw ModelFileError(path, "\(key) is missing or not a number")
            }
            return value
        }
        func float(_ key: String, default value: Float) -> Float {
            (json[key] as? NSNumber)?.floatValue ?? value
        }
        self.architecture = architecture
        hiddenSize = try int("hidden_size")
        intermediateSize = try int("intermediate_size")
        layerCount = try int("num_hidden_layers")
        headCount = try int("num_attention_heads")
        kvHeadCount = (json["num_key_value_heads"] as? NSNumber)?.intValue ?? headCount
        headDimension = (json["head_dim"] as? NSNumber)?.intValue ?? hiddenSize / max(headCount, 1)
        vocabularySize = try int("vocab_size")
        contextLength = (json["max_position_embeddings"] as? NSNumber)?.intValue ?? 2048
        rmsNormEpsilon = float("rms_norm_eps", default: 1e-6)
        // transformers 5 writes `rope_parameters` (the base and the scaling in one object); earlier
        // versions a top-level `rope_theta` and `rope_scaling`.
        let ropeParameters = json["rope_parameters"] as? [String: Any]
        ropeTheta =
            (json["rope_theta"] as? NSNumber)?.floatValue ?? (ropeParameters?["rope_theta"] as? NSNumber)?.floatValue
            ?? 10_000
        ropeScaling = nil
        if let scaling = json["rope_scaling"] as? [String: Any] ?? ropeParameters {
            let type = scaling["rope_type"] as? String ?? scaling["type"] as? String ?? "default"
            switch type {
            case "default": break
            case "llama3":
                ropeScaling = Llama3RopeScaling(
                    factor: (scaling["factor"] as? NSNumber)?.floatValue ?? 8,
                    lowFrequencyFactor: (scaling["low_freq_factor"] as? NSNumber)?.floatValue ?? 1,
                    highFrequencyFactor: (scaling["high_freq_factor"] as? NSNumber)?.floatValue ?? 4,
                    originalContextLength: (scaling["original_max_position_embeddings"] as? NSNumber)?.intValue
                        ?? 8192)
            default:
                throw ModelFileError(path, "rope type \"\(type)\" is not supported (default and llama3 are)")
            }
        }
        // Sliding-window attention (Qwen2/3's `use_sliding_window`, `layer_types`) is not computed:
        // refusing is better than attending to positions the model never saw together.
        if json["use_sliding_window"] as? Bool == true {
            throw ModelFileError(path, "use_sliding_window is true; sliding-window attention is not supported")
        }
        if let types = json["layer_types"] as? [Any],
            let other = types.first(where: { $0 as? String != "full_attention" })
        {
            throw ModelFileError(path, "layer_types has \"\(other)\"; only full_attention layers are supported")
        }
        quantization = nil
        experts = nil
        if let count = (json["num_experts"] as? NSNumber ?? json["num_local_experts"] as? NSNumber)?.intValue,
            count > 0
        {
            experts = MixtureOfExperts(
                expertCount: count, expertsPerToken: try int("num_experts_per_tok"),
                feedForwardSize: (json["moe_intermediate_size"] as? NSNumber)?.intValue ?? intermediateSize,
                normalizesSelected: modelType == "mixtral" || json["norm_topk_prob"] as? Bool == true)
        }
        tieWordEmbeddings = json["tie_word_embeddings"] as? Bool ?? false
        attentionBias = architecture == .qwen2 || (json["attention_bias"] as? Bool ?? false)
        if let quantization = json["quantization"] as? [String: Any] ?? json["quantization_config"] as? [String: Any] {
            guard let groupSize = (quantization["group_size"] as? NSNumber)?.intValue,
                let bits = (quantization["bits"] as? NSNumber)?.intValue
            else { throw ModelFileError(path, "quantization needs group_size and bits") }
            guard [2, 3, 4, 6, 8].contains(bits), groupSize > 0 else {
                throw ModelFileError(
                    path, "MLX quantization with \(bits) bits, group size \(groupSize) is not supported")
            }
            self.quantization = MLXQuantization(groupSize: groupSize, bits: bits)
        }
        try validate(path: path)
    }

    /// Every size hyperparameter with its bounds: products of these (KV page sizes, buffer sizes)
    /// must not overflow, and no real model comes near them.
    private var boundedSizes: [(name: String, value: Int, range: ClosedRange<Int>)] {
        [
            ("hidden size", hiddenSize, 1...(1 << 16)), ("layer count", layerCount, 1...1024),
            ("attention heads", headCount, 1...1024), ("KV heads", kvHeadCount, 1...1024),
            ("head dimension", headDimension, 1...1024), ("intermediate size", intermediateSize, 1...(1 << 18)),
            ("vocabulary size", vocabularySize, 1...(1 << 24)), ("context length", contextLength, 1...(1 << 24)),
        ]
    }

    private func validate(path: String) throws(ModelFileError) {
        for (name, value, range) in boundedSizes where !range.contains(value) {
            throw ModelFileError(path, "\(name) \(value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        guard headCount % kvHeadCount == 0 else {
            throw ModelFileError(path, "\(headCount) attention heads cannot share \(kvHeadCount) KV heads evenly")
        }
        guard ropeTheta.isFinite, ropeTheta > 0 else {
            throw ModelFileError(path, "RoPE base \(ropeTheta) is not positive")
        }
        guard rmsNormEpsilon.isFinite, rmsNormEpsilon > 0, rmsNormEpsilon < 1 else {
            throw ModelFileError(path, "RMSNorm epsilon \(rmsNormEpsilon) is outside (0, 1)")
        }
        if let experts {
            guard (1...4096).contains(experts.expertCount), (1...experts.expertCount).contains(experts.expertsPerToken),
                (1...(1 << 18)).contains(experts.feedForwardSize)
            else {
                throw ModelFileError(
                    path,
                    "experts: \(experts.expertsPerToken) of \(experts.expertCount) per token, \(experts.feedForwardSize) "
                        + "wide, is out of range (1...4096 experts, at least one used, 1...\(1 << 18) wide)")
            }
        }
        if let scaling = ropeScaling {
            let factors = [scaling.factor, scaling.lowFrequencyFactor, scaling.highFrequencyFactor]
            guard factors.allSatisfy({ $0.isFinite && $0 > 0 }), (1...(1 << 24)).contains(scaling.originalContextLength)
            else { throw ModelFileError(path, "rope_scaling has a factor or length out of range: \(scaling)") }
        }
    }
}
