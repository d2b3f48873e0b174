/// A weight of a Llama-family decoder, independent of the file format's naming.
public enum TensorRole: Hashable, Sendable, CustomStringConvertible {
    case embedding
    case outputNorm
    case output
    /// Per-pair RoPE frequency divisors (llama.cpp's `rope_freqs` for Llama 3 scaling).
    case ropeFrequencies
    case layer(Int, LayerTensor)

    /// The per-layer weights.
    public enum LayerTensor: String, Hashable, Sendable, CaseIterable {
        case attentionNorm, query, key, value, attentionOutput
        case queryBias, keyBias, valueBias
        case feedForwardNorm, gate, up, down
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
            case .feedForwardNorm: suffix = "ffn_norm.weight"
            case .gate: suffix = "ffn_gate.weight"
            case .up: suffix = "ffn_up.weight"
            case .down: suffix = "ffn_down.weight"
            }
            return "blk.\(index).\(suffix)"
        }
    }

    /// The tensor's name (without `.weight` for MLX's packed triplets) in a Hugging Face checkpoint.
    public var huggingFaceName: String {
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
            case .feedForwardNorm: suffix = "post_attention_layernorm.weight"
            case .gate: suffix = "mlp.gate_proj.weight"
            case .up: suffix = "mlp.up_proj.weight"
            case .down: suffix = "mlp.down_proj.weight"
            }
            return "model.layers.\(index).\(suffix)"
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
        file.weight(try file.tensor(named: role.ggufName))
    }

    public func hasTensor(_ role: TensorRole) -> Bool { file.hasTensor(named: role.ggufName) }
}
