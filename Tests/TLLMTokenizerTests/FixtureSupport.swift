import Foundation
import Testing

@testable import TLLMTokenizer

/// Loads the fixtures written by `Tests/fixture-scripts/tokenizers_fixtures.py`.
enum Fixtures {
    /// Reference results of Hugging Face `tokenizers` for one corpus string.
    struct Expectation: Sendable {
        var text: String
        var ids: [Int32]
        var idsWithSpecial: [Int32]
        var decoded: String
        var decodedSkippingSpecial: String
    }

    /// Tokenizer fixtures and the reference whose expectations they must meet.
    static let tokenizerNames = ["smollm2-gguf", "smollm2-json", "llama3-json", "qwen2-json", "spm-json", "spm-gguf"]

    static func data(_ name: String) throws -> Data {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures"))
        return try Data(contentsOf: url)
    }

    static func object(_ name: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: data(name)) as? [String: Any])
    }

    /// The reference name in expected.json for a fixture name ("spm-gguf" → "spm").
    static func referenceName(_ name: String) -> String {
        String(name.split(separator: "-")[0])
    }

    nonisolated(unsafe) private static var expectationCache: [String: [Expectation]] = [:]
    private static let lock = NSLock()

    static func expectations(_ name: String) throws -> [Expectation] {
        let reference = referenceName(name)
        lock.lock()
        defer { lock.unlock() }
        if let cached = expectationCache[reference] { return cached }
        let root = try object("expected.json")
        let all = try #require(root["tokenizers"] as? [String: Any])
        let list = try #require(all[reference] as? [[String: Any]])
        let result = try list.map { entry in
            Expectation(
                text: try #require(entry["text"] as? String),
                ids: try #require(entry["ids"] as? [Int]).map(Int32.init),
                idsWithSpecial: try #require(entry["idsWithSpecial"] as? [Int]).map(Int32.init),
                decoded: try #require(entry["decoded"] as? String),
                decodedSkippingSpecial: try #require(entry["decodedSkippingSpecial"] as? String))
        }
        expectationCache[reference] = result
        return result
    }

    nonisolated(unsafe) private static var tokenizerCache: [String: Tokenizer] = [:]

    static func tokenizer(_ name: String) throws -> Tokenizer {
        lock.lock()
        if let cached = tokenizerCache[name] {
            lock.unlock()
            return cached
        }
        lock.unlock()
        let tokenizer = try Tokenizer(configuration(name))
        lock.lock()
        tokenizerCache[name] = tokenizer
        lock.unlock()
        return tokenizer
    }

    static func configuration(_ name: String) throws -> TokenizerConfiguration {
        let reference = referenceName(name)
        if name.hasSuffix("-json") {
            let configURL = Bundle.module.url(
                forResource: "\(reference)-tokenizer_config.json", withExtension: nil, subdirectory: "Fixtures")
            let config = try configURL.map { try Data(contentsOf: $0) }
            return try TokenizerConfiguration(
                tokenizerJSON: data("\(reference)-tokenizer.json"), tokenizerConfigJSON: config)
        }
        return try ggufConfiguration(object("\(reference)-gguf.json"))
    }

    /// Maps the exported `tokenizer.ggml.*` fields the way the GGUF reader will.
    static func ggufConfiguration(_ fields: [String: Any]) throws -> TokenizerConfiguration {
        func id(_ key: String) -> Int32? { (fields[key] as? Int).map(Int32.init) }
        return try TokenizerConfiguration(
            ggufModel: try #require(fields["model"] as? String), pre: fields["pre"] as? String,
            tokens: try #require(fields["tokens"] as? [String]),
            tokenTypes: (fields["token_type"] as? [Int])?.map(Int32.init), merges: fields["merges"] as? [String],
            scores: (fields["scores"] as? [Double])?.map(Float.init), bosTokenID: id("bos_token_id"),
            eosTokenID: id("eos_token_id"), unknownTokenID: id("unknown_token_id"),
            paddingTokenID: id("padding_token_id"), addBOS: fields["add_bos_token"] as? Bool,
            addEOS: fields["add_eos_token"] as? Bool, addSpacePrefix: fields["add_space_prefix"] as? Bool)
    }
}
