import Foundation
import TLLMTokenizer
import Testing

@testable import TLLMChatTemplate
@testable import TLLMModel
@testable import TLLMModelFiles

@Suite struct ModelBundleTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let modelPath =
        ProcessInfo.processInfo.environment["TLLM_DEFAULT_MODEL"]
        ?? root.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
    static var enabled: Bool {
        FileManager.default.fileExists(atPath: modelPath) || ProcessInfo.processInfo.environment["CI"] != nil
    }

    @Test(.enabled(if: enabled, "default model not fetched (scripts/fetch-default-model.sh)"))
    func defaultModelBundlesTokenizerTemplateAndStops() throws {
        let bundle = try ModelBundle.open(path: Self.modelPath)
        #expect(bundle.name == "SmolLM2-135M-Instruct.Q4_1.gguf")
        #expect(bundle.weights.configuration.layerCount == 30)
        // SmolLM2: <|im_start|> = 1, <|im_end|> = 2 (EOS), <|endoftext|> = 0.
        #expect(bundle.stopTokenIDs.isSuperset(of: [2]))
        #expect(bundle.tokenizer.encode("<|im_start|>user", addSpecialTokens: false).first == 1)
        let prompt = try bundle.renderChat(messages: [
            .dictionary(["role": "system", "content": "Be brief."]), .dictionary(["role": "user", "content": "Hi"]),
        ])
        #expect(
            prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        )
        let ids = bundle.tokenizer.encode(prompt, addSpecialTokens: true)
        #expect(bundle.tokenizer.decode(ids) == prompt)
    }

    @Test func directoryWithoutTokenizerIsAClearError() throws {
        let directory = Self.root.appendingPathComponent("Tests/TLLMModelFilesTests/Fixtures/hf-tiny").path
        do {
            _ = try ModelBundle.open(path: directory)
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("tokenizer.json"))
        }
        #expect(throws: ModelFileError.self) { try ModelBundle.open(path: "/no/such/model.gguf") }
    }
}
