/// A weight of a Llama-family decoder, independent of the file format's naming.
public enum TensorRole: Hashable, Sendable, CustomStringConvertible {
    case embedding
    case outputNorm
    case output
    /// Per-pair RoPE frequency divisors (llama.cpp's `rope_freqs` for Llama 3 scaling).
    case ropeFrequencies
    case layer(Int, LayerTensor)
    /// One expert's matrix in a mixture-of-experts layer: a slice of GGUF's merged
    /// `ffn_*_exps` tensor, a tensor of its own in Hugging Face checkpoints.
    case expert(layer: Int, expert: Int, ExpertTensor)

    /// The matrices of one SwiGLU expert.
    public enum ExpertTensor: String, Hashable, Sendable, CaseIterable {
        case gate, up, down
    }

    /// The per-layer weights.
    public enum LayerTensor: String, Hashable, Sendable, CaseIterable {
        case attentionNorm, query, key, value, attentionOutput
        case queryBias, keyBias, valueBias
        /// Per-head RMSNorm weights of q and k (Qwen3), `headDimension` values each.
        case queryNorm, keyNorm
        case feedForwardNorm, gate, up, down
        /// The router of a mixture-of-experts layer: `[experts, hidden]`.
        case router
    }

    /// The tensor's name in a GGUF file (llama.cpp's convention).
    public var ggufName: String {
        switch self {
        case .embedding: return "token_embd.weight"
        case .outputNorm: return "output_norm.weight"
        case .output: return "output.weight"
        case .ropeFrequencies: return "rope_freqs.weight"
        case .layer(let index, let tensor):
            let suffix: String
            switch tensor {
            case .attentionNorm: suffix = "attn_norm.weight"
            case .query: suffix = "attn_q.weight"
            case .key: suffix = "attn_k.weight"
            case .value: suffix = "attn_v.weight"
            case .attentionOutput: suffix = "attn_output.weight"
            case .queryBias: suffix = "attn_q.bias"
            case .keyBias: suffix = "attn_k.bias"
            case .valueBias: suffix = "attn_v.bias"
            case .queryNorm: suffix = "attn_q_norm.weight"
            case .keyNorm: suffix = "attn_k_norm.weight"
            case .feedForwardNorm: suffix = "ffn_norm.weight"
            case .gate: suffix = "ffn_gate.weight"
            case .up: suffix = "ffn_up.weight"
            case .down: suffix = "ffn_down.weight"
            case .router: suffix = "ffn_gate_inp.weight"
            }
            return "blk.\(index).\(suffix)"
        case .expert(let layer, _, let tensor):
            return "blk.\(layer).ffn_\(tensor.rawValue)_exps.weight"
        }
    }

    /// The tensor's name in a Hugging Face checkpoint: the first of `huggingFaceNames`.
    public var huggingFaceName: String { huggingFaceNames[0] }

    /// The names the tensor has in Hugging Face checkpoints, by family where they differ
    /// (Qwen3-MoE's `mlp.gate` / `mlp.experts.E.gate_proj`, Mixtral's `block_sparse_moe.gate` /
    /// `block_sparse_moe.experts.E.w1`).
    public var huggingFaceNames: [String] {
        switch self {
        case .layer(let index, .router):
            return ["mlp.gate.weight", "block_sparse_moe.gate.weight"].map { "model.layers.\(index).\($0)" }
        case .expert(let layer, let expert, let tensor):
            let mixtral = ["gate": "w1", "up": "w3", "down": "w2"][tensor.rawValue]!
            return [
                "model.layers.\(layer).mlp.experts.\(expert).\(tensor.rawValue)_proj.weight",
                "model.layers.\(layer).block_sparse_moe.experts.\(expert).\(mixtral).weight",
            ]
        default:
            return [singleHuggingFaceName]
        }
    }

    private var singleHuggingFaceName: String {
        switch self {
        case .embedding: return "model.embed_tokens.weight"
        case .outputNorm: return "model.norm.weight"
        case .output: return "lm_head.weight"
        case .ropeFrequencies: return "rope_freqs.weight"  // not in Hugging Face checkpoints: computed from config
        case .layer(let index, let tensor):
            let suffix: String
            switch tensor {
            case .attentionNorm: suffix = "input_layernorm.weight"
            case .query: suffix = "self_attn.q_proj.weight"
            case .key: suffix = "self_attn.k_proj.weight"
            case .value: suffix = "self_attn.v_proj.weight"
            case .attentionOutput: suffix = "self_attn.o_proj.weight"
            case .queryBias: suffix = "self_attn.q_proj.bias"
            case .keyBias: suffix = "self_attn.k_proj.bias"
            case .valueBias: suffix = "self_attn.v_proj.bias"
            case .queryNorm: suffix = "self_attn.q_norm.weight"
            case .keyNorm: suffix = "self_attn.k_norm.weight"
            case .feedForwardNorm: suffix = "post_attention_layernorm.weight"
            case .gate: suffix = "mlp.gate_proj.weight"
            case .up: suffix = "mlp.up_proj.weight"
            case .down: suffix = "mlp.down_proj.weight"
            case .router: suffix = "mlp.gate.weight"
            }
            return "model.layers.\(index).\(suffix)"
        case .expert: return huggingFaceNames[0]
        }
    }

    public var description: String { huggingFaceName }
}

/// A model's weights and hyperparameters, from a GGUF file or a Hugging Face directory.
public protocol ModelWeights: Sendable {
    /// Where the weights come from (file or directory).
    var path: String { get }
    /// Hyperparameters.
    var configuration: ModelConfiguration { get }
    /// Whether Q and K rows are in llama.cpp's permuted rotary layout (GGUF Llama models).
    var queryKeyRowsPermuted: Bool { get }
    /// A weight, or an error naming the file and the missing tensor.
    func tensor(_ role: TensorRole) throws(ModelFileError) -> WeightTensor
    /// Whether the weight exists (biases, untied heads are optional).
    func hasTensor(_ role: TensorRole) -> Bool
}

/// A GGUF model file as `ModelWeights`.
public struct GGUFModel: ModelWeights {
    public let file: GGUFFile
    public let configuration: ModelConfiguration
    public var path: String { file.path }
    public var queryKeyRowsPermuted: Bool { configuration.architecture == .llama }

    /// Opens a GGUF model.
    public init(path: String) throws(ModelFileError) {
        file = try GGUFFile(path: path)
        configuration = try ModelConfiguration(gguf: file)
    }

    public func tensor(_ role: TensorRole) throws(ModelFileError) -> WeightTensor {
        if let legacy = Self.legacyExpertName(role), !file.hasTensor(named: role.ggufName),
            file.hasTensor(named: legacy)
        {
            return file.weight(try file.tensor(named: legacy))
        }
        let weight = file.weight(try file.tensor(named: role.ggufName))
        guard case .expert(_, let expert, _) = role else { return weight }
        guard weight.shape.count == 3, (0..<weight.shape[0]).contains(expert) else {
            throw ModelFileError(
                file.path,
                "tensor \(weight.name) has shape \(weight.shape), not [experts, rows, columns] with expert \(expert)")
        }
        return weight.slice(expert)
    }

    public func hasTensor(_ role: TensorRole) -> Bool {
        file.hasTensor(named: role.ggufName) || Self.legacyExpertName(role).map(file.hasTensor(named:)) == true
    }

    /// Early Mixtral GGUF files (before llama.cpp merged the experts) store one tensor per expert:
    /// `blk.L.ffn_gate.E.weight`.
    static func legacyExpertName(_ role: TensorRole) -> String? {
        guard case .expert(let layer, let expert, let tensor) = role else { return nil }
        return "blk.\(layer).ffn_\(tensor.rawValue).\(expert).weight"
    }
}
