import Foundation
import Testing

@testable import TLLMModelFiles

@Suite struct HuggingFaceModelTests {
    static func fixtureDirectory(_ name: String) throws -> String {
        try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil)).path
    }

    static func expected(_ model: String, _ tensor: String) throws -> [Float] {
        let json = try JSONSerialization.jsonObject(with: TestFiles.fixture("safetensors_expected.json"))
        let all = try #require(json as? [String: [String: String]])
        let text = try #require(all[model]?[tensor])
        let data = try #require(Data(base64Encoded: text))
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    @Test func shardedFloatCheckpointReadsF32F16AndBF16() throws {
        let model = try HuggingFaceModel(directory: Self.fixtureDirectory("hf-tiny"))
        #expect(model.configuration.architecture == .llama && model.configuration.layerCount == 2)
        #expect(model.configuration.kvHeadCount == 2 && model.configuration.tieWordEmbeddings)
        let cases: [(TensorRole, String)] = [
            (.embedding, "model.embed_tokens.weight"), (.layer(0, .query), "model.layers.0.self_attn.q_proj.weight"),
            (.layer(1, .up), "model.layers.1.mlp.up_proj.weight"), (.outputNorm, "model.norm.weight"),
        ]
        for (role, name) in cases {
            let tensor = try model.tensor(role)
            let values = tensor.dequantize()
            #expect(values == (try Self.expected("hf-tiny", name)), "\(name)")
        }
        #expect(try model.tensor(.layer(1, .up)).shape == [128, 64])
        #expect(!model.hasTensor(.output))
        #expect(throws: ModelFileError.self) { try model.tensor(.layer(0, .key)) }
    }

    @Test func partialSelectionMapsOnlyTheShardsItNeeds() throws {
        let directory = try Self.fixtureDirectory("hf-tiny")
        let worker = try HuggingFaceModel(directory: directory, selection: TensorSelection(layers: 0..<1))
        #expect(worker.hasTensor(.layer(0, .query)))
        #expect(!worker.hasTensor(.layer(1, .up)))  // lives in the second shard, not opened
        do {
            _ = try worker.tensor(.layer(1, .up))
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("not in the loaded selection"))
        }
    }

    @Test(arguments: [4, 8])
    func mlxQuantizedWeightsDequantiseAsMLXDocuments(bits: Int) throws {
        let name = "mlx-tiny-\(bits)bit"
        let model = try HuggingFaceModel(directory: Self.fixtureDirectory(name))
        #expect(model.configuration.quantization == .init(groupSize: 32, bits: bits))
        let tensor = try model.tensor(.layer(0, .up))
        #expect(tensor.shape == [128, 64])
        let values = tensor.dequantize()
        let expected = try Self.expected(name, "model.layers.0.mlp.up_proj.weight")
        #expect(values == expected)
        // And close to the original weights: within half a quantisation step of each group.
        let original = try Self.expected(name, "original")
        let worst = zip(values, original).map { abs($0 - $1) }.max() ?? 0
        #expect(worst < (bits == 4 ? 0.05 : 0.004), "max error \(worst)")
    }

    @Test func brokenDirectoriesAreClearErrors() throws {
        let root = TestFiles.temporaryPath("hf")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        func write(_ name: String, _ text: String) throws {
            try Data(text.utf8).write(to: URL(fileURLWithPath: root).appendingPathComponent(name))
        }
        func expectError(_ containing: String) {
            do {
                _ = try HuggingFaceModel(directory: root)
                Issue.record("expected an error containing \(containing)")
            } catch {
                #expect(error.description.contains(containing), "\(error)")
            }
        }
        expectError("config.json")
        try write("config.json", #"{"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}"#)
        expectError("gpt_neox")
        let config = try Data(
            contentsOf: URL(fileURLWithPath: try Self.fixtureDirectory("hf-tiny")).appendingPathComponent("config.json")
        )
        try config.write(to: URL(fileURLWithPath: root).appendingPathComponent("config.json"))
        expectError("no model.safetensors")
        try write(
            "model.safetensors.index.json",
            #"{"weight_map": {"model.norm.weight": "model-00009-of-00009.safetensors"}}"#)
        expectError("model-00009-of-00009.safetensors")
        try FileManager.default.removeItem(atPath: root + "/model.safetensors.index.json")
        try write("model.safetensors", "garbage")
        expectError("safetensors header")
    }
}
