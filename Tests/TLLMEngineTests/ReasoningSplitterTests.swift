import TLLMChatTemplate
import TLLMModel
import TLLMTokenizer
import Testing

@testable import TLLMEngine

/// The `<think>` block split of thinking models, on its own and behind ``TextStream``.
@Suite struct ReasoningSplitterTests {
    /// The whole split of `pieces` fed one after the other, and every non-empty delta.
    static func split(_ pieces: [String], startsInside: Bool = false) -> (
        reasoning: String, content: String, deltas: [ReasoningSplitter.Delta]
    ) {
        var splitter = ReasoningSplitter(startsInside: startsInside)
        var deltas = pieces.map { splitter.append($0) }
        deltas.append(splitter.finish())
        deltas.removeAll(where: \.isEmpty)
        return (deltas.map(\.reasoning).joined(), deltas.map(\.content).joined(), deltas)
    }

    /// Every way of cutting `text` into two, three (a deterministic sample) and one-character pieces.
    static func chunkings(of text: String) -> [[String]] {
        let characters = Array(text)
        var out = [[text], characters.map { String($0) }]
        for cut in 0...characters.count {
            out.append([String(characters[..<cut]), String(characters[cut...])])
        }
        // A fixed linear congruential sequence: the same cuts on every run.
        var state: UInt64 = 7
        func next() -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(characters.count + 1))
        }
        for _ in 0..<200 {
            let a = next()
            let b = next()
            let (low, high) = (min(a, b), max(a, b))
            out.append([
                String(characters[..<low]), String(characters[low..<high]), String(characters[high...]),
            ])
        }
        return out
    }

    @Test(arguments: [
        ("<think>\nLet me add: 2+2=4.\n</think>\n\nIt is 4.", false, "Let me add: 2+2=4.", "It is 4."),
        ("<think>r</think>c", false, "r", "c"),
        ("\n <think>\n\nr\n\n</think>\n\n\nc\n", false, "r", "c\n"),
        ("<think>a <b> </thin c\n\nd</think>x </think> <think>", false, "a <b> </thin c\n\nd", "x </think> <think>"),
        ("<think>\n\n</think>\n\nAnswer", false, "", "Answer"),
        ("é🙂<think>not a block</think>", false, "", "é🙂<think>not a block</think>"),
        ("Answer with </think> and <think>", false, "", "Answer with </think> and <think>"),
        ("<thinking>no</thinking>", false, "", "<thinking>no</thinking>"),
        ("\nLet me see…\n</think>\n\nÇa fait 4.", true, "Let me see…", "Ça fait 4."),
        ("</think>\n\nNo reasoning", true, "", "No reasoning"),
    ])
    func tagsSplitAnywhereGiveTheSameSplit(_ text: String, _ inside: Bool, _ reasoning: String, _ content: String) {
        for pieces in Self.chunkings(of: text) {
            let result = Self.split(pieces, startsInside: inside)
            #expect(result.reasoning == reasoning, "\(pieces)")
            #expect(result.content == content, "\(pieces)")
            // Reasoning always comes before the answer: no reasoning after the first content.
            if let first = result.deltas.firstIndex(where: { !$0.content.isEmpty }) {
                #expect(result.deltas[(first + 1)...].allSatisfy { $0.reasoning.isEmpty }, "\(pieces)")
            }
        }
    }

    /// A partial tag is held back (never released as reasoning) until the text decides it.
    @Test func partialCloseTagIsHeldBack() {
        var splitter = ReasoningSplitter(startsInside: true)
        #expect(splitter.append("abc\n</th") == .init(reasoning: "abc"))
        #expect(splitter.append("ink") == .init())
        #expect(splitter.append(">\n") == .init())
        #expect(splitter.append("\nHi") == .init(content: "Hi"))
        #expect(splitter.finish() == .init())

        var notATag = ReasoningSplitter(startsInside: true)
        #expect(notATag.append("a </thi") == .init(reasoning: "a "))
        #expect(notATag.append("s is not it") == .init(reasoning: "</this is not it"))
    }

    /// The opening tag is waited for at the start only, and a start that cannot become it is content at once.
    @Test func openTagAtTheStartOnly() {
        var splitter = ReasoningSplitter(startsInside: false)
        #expect(splitter.append("\n<th") == .init())
        #expect(splitter.append("ink>\nWhy") == .init(reasoning: "Why"))
        var plain = ReasoningSplitter(startsInside: false)
        #expect(plain.append("<b") == .init(content: "<b"))
        #expect(plain.append("<think>") == .init(content: "<think>"))
        var spaces = ReasoningSplitter(startsInside: false)
        #expect(spaces.append("  ") == .init())
        #expect(spaces.finish() == .init(content: "  "))
    }

    /// A block never closed (the completion cut by `max_tokens`) is all reasoning, partial tag included;
    /// only the newlines at its ends are dropped.
    @Test func missingCloseTagIsAllReasoning() {
        #expect(Self.split(["<think>\nStill thinking", " about it\n\n"]).reasoning == "Still thinking about it")
        #expect(Self.split(["<think>\nStill thinking", " about it\n\n"]).content == "")
        #expect(Self.split(["Still </thi"], startsInside: true).reasoning == "Still </thi")
        #expect(Self.split(["Line one\n", "\nLine two\n"], startsInside: true).reasoning == "Line one\n\nLine two")
        #expect(Self.split(["<think>"]).deltas.isEmpty)
        #expect(Self.split(["<thi"]).content == "<thi")
    }

    @Test func templateAndPromptDetection() throws {
        #expect(ReasoningSplitter.isThinkingTemplate("{{ '<think>' }}{{ message.content.split('</think>')[-1] }}"))
        #expect(!ReasoningSplitter.isThinkingTemplate("{{ '<think>' }} only the opening tag"))
        let smolLM2 = try #require(SchedulerTests.bundle?.chatTemplate?.source)
        #expect(!ReasoningSplitter.isThinkingTemplate(smolLM2))

        #expect(ReasoningSplitter.promptOpensReasoning("<|im_start|>assistant\n<think>\n"))
        #expect(ReasoningSplitter.promptOpensReasoning("<｜Assistant｜><think>"))
        #expect(!ReasoningSplitter.promptOpensReasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n"))
        #expect(!ReasoningSplitter.promptOpensReasoning("<|im_start|>assistant\n"))
        #expect(!ReasoningSplitter.promptOpensReasoning(""))
        #expect(Self.splitAfter(prompt: "assistant\n<think>\n", "I think.\n</think>\n\nDone") == ("I think.", "Done"))
        #expect(Self.splitAfter(prompt: "assistant\n<think>\n\n</think>\n\n", "Done </think>") == ("", "Done </think>"))
        #expect(Self.splitAfter(prompt: "assistant\n", "<think>Hm</think>Done") == ("Hm", "Done"))
    }

    static func splitAfter(prompt: String, _ text: String) -> (String, String) {
        var splitter = ReasoningSplitter(prompt: prompt)
        let a = splitter.append(text)
        let b = splitter.finish()
        return (a.reasoning + b.reasoning, a.content + b.content)
    }

    /// Behind ``TextStream`` on real token boundaries (SmolLM2 spells `<think>` in several tokens): stop strings
    /// apply to the raw text, reasoning included, and cut it where they begin.
    @Test(arguments: [
        ([], "I reason about 2+2.", "The answer is 4. STOP here", false),
        (["STOP"], "I reason about 2+2.", "The answer is 4. ", true),
        (["about"], "I reason ", "", true),
        (["</think>"], "I reason about 2+2.", "", true),
        (["</thinking"], "I reason about 2+2.", "The answer is 4. STOP here", false),
        (["4. S", "2+2"], "I reason about ", "", true),
    ])
    func stopStringsCutTheRawText(_ stops: [String], _ reasoning: String, _ content: String, _ stopped: Bool) throws {
        let bundle = try #require(SchedulerTests.bundle)
        let text = "<think>\nI reason about 2+2.\n</think>\n\nThe answer is 4. STOP here"
        let tokens = bundle.tokenizer.encode(text, addSpecialTokens: false)
        #expect(tokens.count > 10)
        var stream = TextStream(tokenizer: bundle.tokenizer, stopStrings: stops)
        var splitter = ReasoningSplitter(startsInside: false)
        var deltas: [ReasoningSplitter.Delta] = []
        var didStop = false
        for token in tokens {
            let (released, stop) = stream.append(token)
            deltas.append(splitter.append(released))
            if stop {
                didStop = true
                break
            }
        }
        if !didStop {
            let (rest, stop) = stream.finish()
            didStop = stop
            deltas.append(splitter.append(rest))
        }
        deltas.append(splitter.finish())
        #expect(didStop == stopped)
        #expect(deltas.map(\.reasoning).joined() == reasoning)
        #expect(deltas.map(\.content).joined() == content)
        #expect(deltas.filter { !$0.reasoning.isEmpty }.count > 1, "the reasoning streamed in several pieces")
    }

    /// Special tokens are left out of a completion's text, except those it is told to keep (a vocabulary that marks
    /// `<think>` special must still show it to the splitter).
    @Test func keptSpecialTokensReachTheText() throws {
        let tokenizer = try #require(SchedulerTests.bundle?.tokenizer)
        let imEnd = try #require(tokenizer.encode("<|im_end|>", addSpecialTokens: false).first)
        #expect(tokenizer.isSpecial(imEnd))
        let tokens = tokenizer.encode("Hi<|im_end|>there", addSpecialTokens: false)
        var skipping = TextStream(tokenizer: tokenizer, stopStrings: [])
        var keeping = TextStream(tokenizer: tokenizer, stopStrings: [], keeping: [imEnd])
        var skipped = ""
        var kept = ""
        for token in tokens {
            skipped += skipping.append(token).text
            kept += keeping.append(token).text
        }
        skipped += skipping.finish().text
        kept += keeping.finish().text
        #expect(skipped == "Hithere")
        #expect(kept == "Hi<|im_end|>there")
    }
}
