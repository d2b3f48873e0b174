import Foundation
import Testing

@testable import TLLMTokenizer

/// Every fixture tokenizer against Hugging Face `tokenizers` on the whole corpus.
@Suite struct TokenizerReferenceTests {
    @Test(arguments: Fixtures.tokenizerNames)
    func encodeMatchesReference(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        for case let expected in try Fixtures.expectations(name) {
            #expect(
                tokenizer.encode(expected.text, addSpecialTokens: false) == expected.ids,
                "\(name): \(expected.text.debugDescription)")
            #expect(
                tokenizer.encode(expected.text, addSpecialTokens: true) == expected.idsWithSpecial,
                "\(name): \(expected.text.debugDescription)")
        }
    }

    @Test(arguments: Fixtures.tokenizerNames)
    func decodeMatchesReference(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        for expected in try Fixtures.expectations(name) {
            #expect(
                tokenizer.decode(expected.idsWithSpecial) == expected.decoded,
                "\(name): \(expected.text.debugDescription)")
            #expect(
                tokenizer.decode(expected.idsWithSpecial, skipSpecialTokens: true) == expected.decodedSkippingSpecial,
                "\(name): \(expected.text.debugDescription)")
            #expect(tokenizer.decode(tokenizer.encode(expected.text)) == expected.decoded)
        }
    }

    @Test(arguments: Fixtures.tokenizerNames)
    func incrementalDecodingEqualsDecode(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        for expected in try Fixtures.expectations(name) {
            for skip in [false, true] {
                var decoder = tokenizer.makeIncrementalDecoder(skipSpecialTokens: skip)
                var pieces: [String] = []
                for id in expected.idsWithSpecial { pieces.append(decoder.append(id)) }
                pieces.append(decoder.flush())
                // The corpus is valid text, so a replacement character would mean a character was cut in two.
                #expect(!pieces.contains { $0.contains("\u{FFFD}") }, "\(name): \(expected.text.debugDescription)")
                #expect(
                    pieces.joined() == (skip ? expected.decodedSkippingSpecial : expected.decoded),
                    "\(name): \(expected.text.debugDescription)")
            }
        }
    }

    @Test func smolLM2FromGGUFAndTokenizerJSONAgree() throws {
        let gguf = try Fixtures.tokenizer("smollm2-gguf")
        let json = try Fixtures.tokenizer("smollm2-json")
        #expect(gguf.vocabularySize == json.vocabularySize)
        #expect(gguf.specialTokenIDs == json.specialTokenIDs)
        #expect(gguf.specialTokenIDs.contains(1))
        #expect(
            gguf.encode("<|im_start|>user\nHello 2024!<|im_end|>") == [1, 4093, 198, 19556, 216, 34, 32, 34, 36, 17, 2])
    }
}
