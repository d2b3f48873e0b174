import Foundation
import Testing

@testable import TLLMHub

@Suite struct FileSelectorTests {
    let checkpoint = [
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors",
        "README.md", "onnx/model.onnx", ".gitattributes",
    ]

    @Test func automaticPrefersTheSafetensorsCheckpoint() throws {
        let plan = try FileSelector.plan(.automatic, choice: nil, listing: checkpoint + ["x-Q8_0.gguf"], where: "r")
        #expect(plan.format == .safetensors)
        #expect(plan.required == ["config.json", "model.safetensors"])
        #expect(plan.optional == ["generation_config.json", "tokenizer.json", "tokenizer_config.json"])
    }

    @Test func shardedCheckpointUsesItsIndex() throws {
        let listing = [
            "config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors", "consolidated.safetensors",
        ]
        let plan = try FileSelector.plan(.safetensors, choice: nil, listing: listing, where: "r")
        #expect(plan.required == ["config.json", "model.safetensors.index.json"])
        #expect(plan.shardIndex == "model.safetensors.index.json")
        let index = Data(
            (#"{"metadata":{},"weight_map":{"a":"model-00002-of-00002.safetensors","#
                + #""b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#).utf8)
        #expect(
            try FileSelector.shardFiles(fromIndex: index) == [
                "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
            ])
    }

    @Test func singleGGUFIsChosenWithoutHelp() throws {
        let plan = try FileSelector.plan(
            .automatic, choice: nil, listing: ["README.md", "m-Q4_1.gguf", "mmproj-m-f16.gguf"], where: "r")
        #expect(plan.format == .gguf)
        #expect(plan.required == ["m-Q4_1.gguf"])
        #expect(plan.primaryFile == "m-Q4_1.gguf")
    }

    @Test func severalGGUFFilesNeedAChoice() throws {
        let listing = [
            "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m-Q8_0.gguf", "Q6_K/m-Q6_K-00001-of-00002.gguf",
            "Q6_K/m-Q6_K-00002-of-00002.gguf",
        ]
        let error = try #require(throws: HubError.self) {
            try FileSelector.plan(.automatic, choice: nil, listing: listing, where: "org/m")
        }
        #expect(error.code == .ambiguousModelFile)
        #expect(error.message.contains("m-Q4_K_M.gguf") && error.message.contains("m-Q8_0.gguf"))
        #expect(error.message.contains("org/m:"))

        #expect(
            try FileSelector.plan(.automatic, choice: "q4_k_m", listing: listing, where: "r").required == [
                "m-Q4_K_M.gguf"
            ])
        #expect(
            try FileSelector.plan(.gguf("m-Q8_0.gguf"), choice: nil, listing: listing, where: "r").required == [
                "m-Q8_0.gguf"
            ])
        #expect(
            try FileSelector.plan(.gguf("Q6_K"), choice: nil, listing: listing, where: "r").required == [
                "Q6_K/m-Q6_K-00001-of-00002.gguf", "Q6_K/m-Q6_K-00002-of-00002.gguf",
            ])
        // "Q4_K" is a prefix of two tags: ambiguous rather than a silent pick.
        #expect(throws: HubError.self) {
            try FileSelector.plan(.gguf("Q4_K"), choice: nil, listing: listing, where: "r")
        }
        let missing = try #require(throws: HubError.self) {
            try FileSelector.plan(.gguf("IQ2_XS"), choice: nil, listing: listing, where: "r")
        }
        #expect(missing.code == .notFound)
    }

    @Test func splitGGUFListsEveryPartEvenIfSomeAreAbsent() {
        let models = FileSelector.ggufModels(in: ["big-00002-of-00003.gguf"])
        #expect(
            models.map(\.files) == [["big-00001-of-00003.gguf", "big-00002-of-00003.gguf", "big-00003-of-00003.gguf"]])
    }

    @Test func emptyListingHasNoModel() {
        #expect(throws: HubError.self) {
            try FileSelector.plan(.automatic, choice: nil, listing: ["README.md"], where: "r")
        }
        #expect(throws: HubError.self) {
            try FileSelector.plan(.safetensors, choice: "Q4_0", listing: checkpoint, where: "r")
        }
    }
}
