import Foundation
import Testing

@testable import TLLMTokenizer

/// Encode throughput on about 1 MB of mixed text; runs only with `TLLM_TOKENIZER_BENCH=1` and never asserts on
/// time. Build with `-c release` for meaningful numbers. `TLLM_TOKENIZER_BENCH_FILE` picks the text (compare with
/// `tokenizers_fixtures.py --bench FILE`); otherwise the corpus is repeated with varying numbers.
@Suite struct TokenizerThroughputTests {
    static let enabled = ProcessInfo.processInfo.environment["TLLM_TOKENIZER_BENCH"] == "1"

    static func benchmarkText() throws -> String {
        if let path = ProcessInfo.processInfo.environment["TLLM_TOKENIZER_BENCH_FILE"] {
            return try String(contentsOfFile: path, encoding: .utf8)
        }
        let corpus = try Fixtures.expectations("smollm2").map(\.text)
        var text = ""
        var index = 0
        while text.utf8.count < 1_000_000 {
            text += corpus[index % corpus.count] + " \(index * 7919) "
            index += 1
        }
        return text
    }

    @Test(.enabled(if: enabled), arguments: ["smollm2-gguf", "llama3-json", "qwen2-json", "spm-json"])
    func encodeThroughput(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        let text = try Self.benchmarkText()
        _ = tokenizer.encode(String(text.prefix(1000)))
        let clock = ContinuousClock()
        var ids: [Int32] = []
        let elapsed = clock.measure { ids = tokenizer.encode(text, addSpecialTokens: false) }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        print(
            "\(name): \(text.utf8.count) bytes, \(ids.count) tokens, \(Int(seconds * 1000)) ms, "
                + "\(Int(Double(ids.count) / seconds)) tokens/s")
        #expect(!ids.isEmpty)
    }
}
