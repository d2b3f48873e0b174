import Foundation
import Testing

@testable import TLLMTokenizer

/// Streaming detokenisation of characters that span several tokens.
@Suite struct IncrementalDecoderTests {
    @Test(arguments: ["smollm2-gguf", "llama3-json", "spm-gguf"])
    func holdsBackSplitCharacters(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        let text = "日本語 👨‍👩‍👧‍👦 🤗 emoji😀 中文测试 é"
        let ids = tokenizer.encode(text, addSpecialTokens: false)
        var decoder = tokenizer.makeIncrementalDecoder()
        var output = ""
        var heldBack = 0
        for id in ids {
            let piece = decoder.append(id)
            #expect(!piece.contains("\u{FFFD}"))
            if piece.isEmpty { heldBack += 1 }
            output += piece
        }
        output += decoder.flush()
        #expect(output == text)
        #expect(output == tokenizer.decode(ids))
        // Byte-level tokenizers split at least the emoji into bytes that cannot stand alone.
        #expect(heldBack > 0)
    }

    @Test func completePrefixLength() {
        #expect(IncrementalDecoder.completePrefixLength([]) == 0)
        #expect(IncrementalDecoder.completePrefixLength(Array("ab".utf8)) == 2)
        #expect(IncrementalDecoder.completePrefixLength([0x61, 0xF0, 0x9F]) == 1)
        #expect(IncrementalDecoder.completePrefixLength([0x61, 0xF0, 0x9F, 0x98, 0x80]) == 5)
        #expect(IncrementalDecoder.completePrefixLength([0x61, 0xE4, 0xB8]) == 1)
        // A stray continuation byte can never complete: it goes out (as U+FFFD) rather than blocking the stream.
        #expect(IncrementalDecoder.completePrefixLength([0x61, 0x80]) == 2)
        #expect(IncrementalDecoder.completePrefixLength([0xFF]) == 1)
    }

    @Test func flushEmitsIncompleteTail() throws {
        let tokenizer = try Fixtures.tokenizer("smollm2-gguf")
        let ids = tokenizer.encode("🤗", addSpecialTokens: false)
        try #require(ids.count > 1)
        var decoder = tokenizer.makeIncrementalDecoder()
        #expect(decoder.append(ids[0]) == "")
        #expect(decoder.flush() == "\u{FFFD}")
    }
}
