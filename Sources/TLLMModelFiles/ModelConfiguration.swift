import Foundation

/// The hyperparameters a decoder needs, read from GGUF metadata or a Hugging Face `config.json`.
public struct ModelConfiguration: Sendable, Hashable {
    /// Decoder families we compute; chosen from `general.architecture` / `model_type`.
    public enum Architecture: String, Sendable, Hashable, CaseIterable {
        /// Llama 2/3.x, SmolLM2, TinyLlama, Mistral: RMSNorm, RoPE, GQA, SwiGLU.
        case llama
        /// Llama with q/k/v biases.
        case qwen2
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
        try validate(path: file.path)
    }

    /// Reads a Hugging Face `config.json`.
    public init(configJSON data: Data, path: String) throws(ModelFileError) {
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelFileError(path, "not a JSON object")
        }
        let modelType = json["model_type"] as? String ?? ""
        let families: [String: Architecture] = ["llama": .llama, "mistral": .llama, "qwen2": .qwen2]
        guard let architecture = families[modelType] else {
            let named = (json["architectures"] as? [String])?.joined(separator: ", ") ?? "none"
            throw ModelFileError(
                path,
                "model_type \"\(modelType)\" (architectures: \(named)) is not supported (supported: llama, mistral, qwen2)"
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
        ropeTheta = float("rope_theta", default: 10_000)
        ropeScaling = nil
        if let scaling = json["rope_scaling"] as? [String: Any] {
            let type = scaling["rope_type"] as? String ?? scaling["type"] as? String ?? ""
            guard type == "llama3" else {
                throw ModelFileError(path, "rope_scaling type \"\(type)\" is not supported (llama3 is)")
            }
            ropeScaling = Llama3RopeScaling(
                factor: (scaling["factor"] as? NSNumber)?.floatValue ?? 8,
                lowFrequencyFactor: (scaling["low_freq_factor"] as? NSNumber)?.floatValue ?? 1,
                highFrequencyFactor: (scaling["high_freq_factor"] as? NSNumber)?.floatValue ?? 4,
                originalContextLength: (scaling["original_max_position_embeddings"] as? NSNumber)?.intValue ?? 8192)
        }
        quantization = nil
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
        if let scaling = ropeScaling {
            let factors = [scaling.factor, scaling.lowFrequencyFactor, scaling.highFrequencyFactor]
            guard factors.allSatisfy({ $0.isFinite && $0 > 0 }), (1...(1 << 24)).contains(scaling.originalContextLength)
            else { throw ModelFileError(path, "rope_scaling has a factor or length out of range: \(scaling)") }
        }
    }
}
