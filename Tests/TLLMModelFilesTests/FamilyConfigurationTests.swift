import Foundation
import Testing

@testable import TLLMModelFiles

/// config.json of the families beyond Llama: what is read, and what is refused rather than
/// computed wrongly. (The numbers themselves are checked against transformers end to end in
/// Tests/server/test_model_families.py.)
@Suite struct FamilyConfigurationTests {
    static var qwen3: [String: Any] {
        [
            "model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151_936,
            "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000,
            "tie_word_embeddings": true,
            "attention_bias": false, "use_sliding_window": false, "sliding_window": NSNull(), "rope_scaling": NSNull(),
        ]
    }

    static func configuration(_ json: [String: Any], changing changes: [String: Any] = [:]) throws
        -> ModelConfiguration
    {
        let data = try JSONSerialization.data(withJSONObject: json.merging(changes) { $1 })
        return try ModelConfiguration(configJSON: data, path: "config.json")
    }

    @Test func qwen3ReadsItsOwnHeadDimensionAndNormalisesQueryKey() throws {
        let c = try Self.configuration(Self.qwen3)
        #expect(c.architecture == .qwen3 && c.architecture.normalisesQueryKey)
        #expect(c.headDimension == 128 && c.headCount * c.headDimension == 2048 && c.hiddenSize == 1024)
        #expect(!c.attentionBias && c.tieWordEmbeddings && c.ropeTheta == 1_000_000 && c.experts == nil)
        #expect(!ModelConfiguration.Architecture.qwen2.normalisesQueryKey)
    }

    @Test func transformers5RopeParametersGiveTheBase() throws {
        var json = Self.qwen3
        json["rope_theta"] = nil
        json["rope_scaling"] = nil
        json["rope_parameters"] = ["rope_theta": 500_000, "rope_type": "default"]
        #expect(try Self.configuration(json).ropeTheta == 500_000)
        json["rope_parameters"] = [
            "rope_theta": 500_000, "rope_type": "llama3", "factor": 32, "low_freq_factor": 1, "high_freq_factor": 4,
            "original_max_position_embeddings": 8192,
        ]
        #expect(try Self.configuration(json).ropeScaling?.factor == 32)
    }

    @Test func whatWeDoNotComputeIsRefusedNamingTheKey() throws {
        let refused: [(changes: [String: Any], naming: String)] = [
            (["use_sliding_window": true], "use_sliding_window"),
            (["layer_types": ["full_attention", "sliding_attention"]], "sliding_attention"),
            (["rope_scaling": ["rope_type": "yarn", "factor": 4]], "yarn"),
            (["model_type": "gemma3"], "gemma3"),
            (["num_experts": 8, "num_experts_per_tok": 9], "experts"),
            (["num_experts": 100_000, "num_experts_per_tok": 2], "experts"),
            (["num_experts": 8], "num_experts_per_tok"),
        ]
        for (changes, naming) in refused {
            #expect {
                _ = try Self.configuration(Self.qwen3, changing: changes)
            } throws: { error in
                "\(error)".contains(naming) && "\(error)".contains("config.json")
            }
        }
    }

    @Test func mixtureOfExpertsFamilies() throws {
        let moe = try Self.configuration(
            Self.qwen3,
            changing: [
                "model_type": "qwen3_moe", "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
                "norm_topk_prob": true,
            ])
        #expect(moe.architecture == .qwen3moe && moe.architecture.normalisesQueryKey)
        #expect(
            moe.experts
                == .init(expertCount: 128, expertsPerToken: 8, feedForwardSize: 768, normalizesSelected: true))
        let unnormalised = try Self.configuration(
            Self.qwen3, changing: ["model_type": "qwen3_moe", "num_experts": 64, "num_experts_per_tok": 8])
        #expect(unnormalised.experts?.normalizesSelected == false)
        // Mixtral: transformers' `num_local_experts`, the expert width is `intermediate_size`, always renormalised.
        let mixtral = try Self.configuration(
            Self.qwen3,
            changing: [
                "model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 14336,
            ])
        #expect(mixtral.architecture == .llama)
        #expect(
            mixtral.experts
                == .init(expertCount: 8, expertsPerToken: 2, feedForwardSize: 14336, normalizesSelected: true))
    }

    @Test func expertRolesHaveBothCheckpointSpellingsAndGGUFsMergedName() {
        let role = TensorRole.expert(layer: 3, expert: 17, .down)
        #expect(role.ggufName == "blk.3.ffn_down_exps.weight")
        #expect(
            role.huggingFaceNames == [
                "model.layers.3.mlp.experts.17.down_proj.weight",
                "model.layers.3.block_sparse_moe.experts.17.w2.weight",
            ])
        #expect(TensorRole.layer(0, .router).huggingFaceNames.last == "model.layers.0.block_sparse_moe.gate.weight")
        #expect(TensorRole.layer(2, .queryNorm).ggufName == "blk.2.attn_q_norm.weight")
        #expect(TensorRole.layer(2, .keyNorm).huggingFaceName == "model.layers.2.self_attn.k_norm.weight")
    }

    @Test func aSliceIsOneExpertsBytes() {
        let floats: [Float] = (0..<24).map(Float.init)  // 2 experts × 3 rows × 4 columns
        let data = floats.withUnsafeBytes { Data($0) } as NSData
        let tensor = WeightTensor(
            name: "exps", shape: [2, 3, 4], storage: .float(.f32, UnsafeRawBufferPointer(start: data.bytes, count: 96)),
            owner: data)
        let second = tensor.slice(1)
        #expect(second.shape == [3, 4] && second.name == "exps[1]")
        #expect(second.dequantize() == Array(floats[12...]))
    }
}
