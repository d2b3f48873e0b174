import Foundation
import TLLMChatTemplate
import TLLMCompute
import TLLMModel
import Testing

@testable import TLLMEngine

/// The paged KV cache under the scheduler, on the default model: prefix reuse gives the same
/// greedy text as computing everything, and a cache far smaller than the load queues and
/// preempts requests without failing or changing any of them.
@Suite(.serialized) struct KVCacheSchedulingTests {
    static let system =
        "You are a careful assistant for a public library. Answer in one or two short sentences, "
        + "mention the branch opening hours only when asked, and never invent book titles. "
        + "The main branch opens at nine and closes at six; the river branch opens at ten."

    static func chat(_ turns: [(String, String)]) throws -> [Int32] {
        let bundle = try #require(SchedulerTests.bundle)
        let messages = turns.map { role, content in
            TemplateValue.dictionary(["role": .string(role), "content": .string(content)])
        }
        return bundle.chatPromptTokens(try bundle.renderChat(messages: messages))
    }

    static func answer(_ engine: SchedulerTests.Engine, _ id: String, _ prompt: [Int32], maxTokens: Int = 16)
        async throws -> String
    {
        try await SchedulerTests.collect(
            engine.scheduler.submit(SchedulerTests.request(id, prompt, maxTokens: maxTokens))
        ).0
    }

    @Test func prefixReuseGivesTheSameGreedyText() async throws {
        let reusing = try SchedulerTests.engine(prefixReuse: true)
        let plain = try SchedulerTests.engine(prefixReuse: false)
        let first = try Self.chat([("system", Self.system), ("user", "When does the river branch open?")])
        let firstAnswer = try await Self.answer(reusing, "first", first)
        // A second question under the same system prompt, then a second turn of the first chat.
        let second = try Self.chat([("system", Self.system), ("user", "Can you recommend a novel?")])
        let followUp = try Self.chat([
            ("system", Self.system), ("user", "When does the river branch open?"), ("assistant", firstAnswer),
            ("user", "And the main branch?"),
        ])
        for (id, prompt) in [("second", second), ("follow-up", followUp)] {
            let before = await reusing.shard.cache.statistics.prefixHitTokens
            let reused = try await Self.answer(reusing, id, prompt)
            let hit = await reusing.shard.cache.statistics.prefixHitTokens - before
            #expect(hit >= 40, "\(id): only \(hit) prompt tokens came from the prefix cache")
            #expect(reused == (try await Self.answer(plain, id, prompt)), "\(id) differs with prefix reuse")
        }
        #expect(await plain.shard.cache.statistics.prefixHitTokens == 0)
        #expect(await reusing.shard.cache.statistics.pagesInUse == 0)
    }

    @Test func aTinyCacheQueuesAndPreemptsButEveryRequestFinishesUnchanged() async throws {
        let prompts = try SchedulerTests.prompts.map(SchedulerTests.chat)
        var alone: [String] = []
        let roomy = try SchedulerTests.engine()
        for (index, prompt) in prompts.enumerated() {
            alone.append(try await Self.answer(roomy, "alone-\(index)", prompt, maxTokens: 24))
        }
        // 12 pages = 192 positions, for five requests of ~40-60 positions each.
        let tiny = try SchedulerTests.engine(pages: 12)
        let together = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (index, prompt) in prompts.enumerated() {
                let stream = try await tiny.scheduler.submit(
                    SchedulerTests.request("tiny-\(index)", prompt, maxTokens: 24))
                group.addTask { (index, try await SchedulerTests.collect(stream).0) }
            }
            var results = [String](repeating: "", count: prompts.count)
            for try await (index, text) in group { results[index] = text }
            return results
        }
        #expect(together == alone)
        #expect(await tiny.scheduler.preemptions > 0, "the cache was never short: the test proves nothing")
        let statistics = await tiny.shard.cache.statistics
        #expect(statistics.pagesInUse == 0 && statistics.sequences == 0)
        #expect(statistics.pagesFree == 12)
    }

    @Test func aRequestLargerThanTheWholeCacheIsRefusedClearly() async throws {
        let tiny = try SchedulerTests.engine(pages: 2)
        #expect(tiny.scheduler.maxModelLength == 32)
        let prompt = try SchedulerTests.chat(SchedulerTests.prompts[3])
        await #expect(throws: SchedulerError.self) {
            try await tiny.scheduler.submit(SchedulerTests.request("huge", prompt, maxTokens: 8))
        }
    }
}
