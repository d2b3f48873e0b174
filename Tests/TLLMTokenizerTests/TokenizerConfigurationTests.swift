import Foundation
import Testing

@testable import TLLMTokenizer

/// Reading configurations, and the errors a broken one gives.
@Suite struct TokenizerConfigurationTests {
    @Test func readsSmolLM2FromGGUFFields() throws {
        let configuration = try Fixtures.configuration("smollm2-gguf")
        #expect(configuration.model == .byteLevelBPE(.smollm))
        #expect(configuration.bosTokenID == 1 && configuration.eosTokenID == 2)
        #expect(!configuration.addBOS)
        #expect(configuration.addedTokens.count == 17)
        #expect(configuration.addedTokens.allSatisfy { $0.special })
    }

    @Test func readsPreTokenizerKindsFromTokenizerJSON() throws {
        #expect(try Fixtures.configuration("smollm2-json").model == .byteLevelBPE(.smollm))
        #expect(try Fixtures.configuration("llama3-json").model == .byteLevelBPE(.llama3))
        #expect(try Fixtures.configuration("llama3-json").ignoreMerges)
        #expect(try Fixtures.configuration("llama3-json").addBOS)
        let qwen2 = try Fixtures.configuration("qwen2-json")
        #expect(qwen2.model == .byteLevelBPE(.qwen2))
        #expect(qwen2.normalizeNFC)
        #expect(qwen2.eosTokenID == 2)
        let spm = try Fixtures.configuration("spm-json")
        #expect(spm.model == .sentencePieceBPE)
        #expect(spm.byteFallback && spm.spacePrefix == .everySegment && spm.stripLeadingSpaceOnDecode)
        #expect(spm.addBOS && spm.bosTokenID == 1 && spm.unknownTokenID == 0)
    }

    @Test func readsMergesInBothFormats() throws {
        let json = """
            {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "c": 3, "abc": 4},
                       "merges": ["a b", ["ab", "c"]]},
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}}
            """
        let configuration = try TokenizerConfiguration(tokenizerJSON: Data(json.utf8))
        #expect(configuration.merges == [.init("a", "b"), .init("ab", "c")])
        #expect(try Tokenizer(configuration).encode("abc cab") == [4, 3, 2])
    }

    @Test func unknownRegexIsAnErrorNamingIt() throws {
        let original = String(decoding: try Fixtures.data("llama3-tokenizer.json"), as: UTF8.self)
        let changed = original.replacingOccurrences(of: #"\\p{N}{1,3}"#, with: #"\\p{N}{1,4}"#)
        #expect(changed != original)
        do {
            _ = try TokenizerConfiguration(tokenizerJSON: Data(changed.utf8))
            Issue.record("an unknown regex must not be accepted")
        } catch {
            #expect(error.message.contains("unsupported pre-tokenizer regex"))
            #expect(error.message.contains(#"\p{N}{1,4}"#))
        }
    }

    @Test func mergeNamingAMissingTokenIsAnError() throws {
        let configuration = TokenizerConfiguration(
            model: .byteLevelBPE(.gpt2), tokens: ["a", "b", "ab"], merges: [.init("a", "b"), .init("a", "x")])
        #expect(throws: TokenizerError("merge 'a x' names 'x', which is not a token")) {
            try Tokenizer(configuration)
        }
        let missingResult = TokenizerConfiguration(
            model: .byteLevelBPE(.gpt2), tokens: ["a", "b"], merges: [.init("a", "b")])
        #expect(throws: TokenizerError("merge 'a b' makes 'ab', which is not a token")) {
            try Tokenizer(missingResult)
        }
    }

    @Test func unsupportedGGUFPreTokenizerIsAnError() {
        #expect(throws: TokenizerError("unsupported tokenizer.ggml.pre 'deepseek-coder'")) {
            try TokenizerConfiguration(
                ggufModel: "gpt2", pre: "deepseek-coder", tokens: ["a"], tokenTypes: nil, merges: [], scores: nil,
                bosTokenID: nil, eosTokenID: nil, unknownTokenID: nil, paddingTokenID: nil, addBOS: nil, addEOS: nil,
                addSpacePrefix: nil)
        }
        #expect(throws: TokenizerError("unsupported tokenizer.ggml.model 'bert'")) {
            try TokenizerConfiguration(
                ggufModel: "bert", pre: nil, tokens: ["a"], tokenTypes: nil, merges: [], scores: nil,
                bosTokenID: nil, eosTokenID: nil, unknownTokenID: nil, paddingTokenID: nil, addBOS: nil, addEOS: nil,
                addSpacePrefix: nil)
        }
    }

    @Test func specialIDOutsideTheVocabularyIsAnError() {
        let configuration = TokenizerConfiguration(model: .byteLevelBPE(.gpt2), tokens: ["a"], eosTokenID: 7)
        #expect(throws: TokenizerError("eos token id 7 is outside the vocabulary of 1 tokens")) {
            try Tokenizer(configuration)
        }
    }
}
