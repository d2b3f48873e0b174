import Foundation
import Testing

@testable import TLLMCompute
@testable import TLLMModelFiles

/// A Hugging Face-format copy of the default model's weights (written here: dequantised to
/// float32 safetensors, Q/K rows un-permuted back from llama.cpp's rotary layout, config.json
/// from the GGUF metadata) gives the GGUF path's logits within float rounding.
@Suite(.serialized) struct HuggingFaceCopyTests {
    /// Inverse of llama.cpp's `permute()`: rows grouped per head as (pairs, 2) back to (2, pairs).
    static func unpermute(_ values: [Float], rows: Int, columns: Int, heads: Int) -> [Float] {
        let half = rows / heads / 2
        var out = [Float](repeating: 0, count: values.count)
        for head in 0..<heads {
            for pair in 0..<half {
                for parity in 0..<2 {
                    let from = head * 2 * half + pair * 2 + parity
                    let to = head * 2 * half + parity * half + pair
                    for c in 0..<columns { out[to * columns + c] = values[from * columns + c] }
                }
            }
        }
        return out
    }

    static func writeCopy(of model: GGUFModel, to directory: URL) throws {
        let c = model.configuration
        let config: [String: Any] = [
            "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": c.hiddenSize,
            "intermediate_size": c.intermediateSize, "num_hidden_layers": c.layerCount,
            "num_attention_heads": c.headCount, "num_key_value_heads": c.kvHeadCount, "vocab_size": c.vocabularySize,
            "max_position_embeddings": c.contextLength, "rms_norm_eps": Double(c.rmsNormEpsilon),
            "rope_theta": Double(c.ropeTheta), "tie_word_embeddings": c.tieWordEmbeddings,
        ]
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("config.json"))
        var roles: [TensorRole] = [.embedding, .outputNorm]
        for layer in 0..<c.layerCount {
            roles += TensorRole.LayerTensor.allCases.map { .layer(layer, $0) }
        }
        var header: [String: Any] = [:]
        var blobs: [[Float]] = []
        var offset = 0
        for role in roles where model.hasTensor(role) {
            let tensor = try model.tensor(role)
            var values = tensor.dequantize()
            if case .layer(_, let kind) = role, kind == .query || kind == .key {
                let heads = kind == .query ? c.headCount : c.kvHeadCount
                values = unpermute(values, rows: tensor.shape[0], columns: tensor.shape[1], heads: heads)
            }
            header[role.huggingFaceName] = [
                "dtype": "F32", "shape": tensor.shape, "data_offsets": [offset, offset + values.count * 4],
            ]
            offset += values.count * 4
            blobs.append(values)
        }
        var headerData = try JSONSerialization.data(withJSONObject: header)
        while headerData.count % 8 != 0 { headerData.append(0x20) }
        let url = directory.appendingPathComponent("model.safetensors")
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        var length = UInt64(headerData.count).littleEndian
        handle.write(Data(bytes: &length, count: 8))
        handle.write(headerData)
        for blob in blobs { blob.withUnsafeBytes { handle.write(Data($0)) } }
    }

    @Test(.enabled(if: LlamaForwardTests.enabled, "default model not fetched (scripts/fetch-default-model.sh)"))
    func huggingFaceCopyGivesTheSameLogits() async throws {
        let gguf = try GGUFModel(path: LlamaForwardTests.modelPath)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "tllm-hf-copy-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        try Self.writeCopy(of: gguf, to: directory)
        let hf = try HuggingFaceModel(directory: directory.path)
        #expect(hf.configuration.layerCount == gguf.configuration.layerCount)

        let tokens = try LlamaForwardTests.reference().ids
        var logits: [[Float]] = []
        for model in [gguf, hf] as [any ModelWeights] {
            let shard = try ShardActor(model: model, layers: 0..<model.configuration.layerCount, threads: 2)
            let head = try HeadActor(model: model, threads: 2)
            // Prefill (sgemm path) then two decode steps (dot-product path).
            var hidden = try await head.embed(tokens)
            hidden = try await shard.forward(hidden, sequences: [SequenceSlice(id: "x", rows: tokens.count)])
            var all = await head.logits(hidden, rows: tokens.count)
            for next: Int32 in [504, 2284] {
                var row = try await head.embed([next])
                row = try await shard.forward(row, sequences: [SequenceSlice(id: "x", rows: 1)])
                all += await head.logits(row, rows: 1)
            }
            logits.append(all)
        }
        let difference = zip(logits[0], logits[1]).map { abs($0 - $1) }.max() ?? .infinity
        #expect(difference < 2e-3, "largest logit difference \(difference)")
    }
}
