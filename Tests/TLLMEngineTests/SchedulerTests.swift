import Foundation
import TLLMChatTemplate
import TLLMCompute
import TLLMModel
import TLLMModelFiles
import TLLMTokenizer
import Testing

@testable import TLLMEngine

/// The scheduler on the embedded default model, through the in-process pipeline.
@Suite(.serialized) struct SchedulerTests {
    static let bundle: ModelBundle? = {
        let path = ProcessInfo.processInfo.environment["TLLM_DEFAULT_MODEL"] ?? "models/SmolLM2-135M-Instruct.Q4_1.gguf"
        return try? ModelBundle.open(path: path)
    }()

    struct Engine {
        let scheduler: Scheduler
        let shard: ShardActor
    }

    /// A scheduler over the whole model; `pages` sizes its KV cache (default: a quarter of RAM).
    static func engine(
        pages: Int? = nil, prefixReuse: Bool = false, _ configure: (inout Scheduler.Configuration) -> Void = { _ in }
    ) throws -> Engine {
        let bundle = try #require(bundle, "the default model is missing: run scripts/fetch-default-model.sh")
        let layers = bundle.weights.configuration.layerCount
        let cache = KVCacheManager(
            pageCount: pages ?? 4096, contextLength: bundle.weights.configuration.contextLength,
            prefixReuse: prefixReuse)
        let shard = try ShardActor(model: bundle.weights, layers: 0..<layers, threads: 2, cache: cache)
        let head = try HeadActor(model: bundle.weights, threads: 2)
        var configuration = Scheduler.Configuration(maxModelLength: bundle.weights.configuration.contextLength)
        configure(&configuration)
        let scheduler = Scheduler(
            head: head, pipeline: LocalPipeline(stages: [shard]), tokenizer: bundle.tokenizer,
            configuration: configuration)
        return Engine(scheduler: scheduler, shard: shard)
    }

    static func chat(_ text: String) throws -> [Int32] {
        let bundle = try #require(bundle)
        return bundle.chatPromptTokens(
            try bundle.renderChat(messages: [.dictionary(["role": "user", "content": .string(text)])]))
    }

    static func request(
        _ id: String, _ prompt: [Int32], maxTokens: Int = 12, stop: [String] = [], timeout: Duration? = nil
    ) -> GenerationRequest {
        GenerationRequest(
            id: id, promptTokens: prompt, maxTokens: maxTokens, stopTokenIDs: bundle?.stopTokenIDs ?? [],
            stopStrings: stop, timeout: timeout)
    }

    static func collect(_ stream: AsyncThrowingStream<GenerationEvent, any Error>) async throws -> (String, FinishInfo)
    {
        let (text, _, info) = try await collectWithLogprobs(stream)
        return (text, info)
    }

    static func collectWithLogprobs(_ stream: AsyncThrowingStream<GenerationEvent, any Error>) async throws -> (
        String, [TokenLogprob], FinishInfo
    ) {
        var text = ""
        var logprobs: [TokenLogprob] = []
        for try await event in stream {
            switch event {
            case .text(let delta): text += delta
            case .logprob(let entry): logprobs.append(entry)
            case .finished(let info): return (text, logprobs, info)
            }
        }
        throw SchedulerError.computeFailed("stream ended without a finish event")
    }

    static let prompts = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "List three prime numbers.",
        "Explain in two sentences why the sky is blue, as if to a child who keeps asking why.",
        "Hi",
    ]

    @Test func concurrentRequestsEqualEachAloneWithChunkedPrefill() async throws {
        // A 16-token budget splits every prompt over several steps while others decode.
        let engine = try Self.engine { $0.maxBatchTokens = 16 }
        let prompts = try Self.prompts.map(Self.chat)
        var alone: [String] = []
        for (index, prompt) in prompts.enumerated() {
            alone.append(try await Self.collect(engine.scheduler.submit(Self.request("alone-\(index)", prompt))).0)
        }
        let together = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (index, prompt) in prompts.enumerated() {
                let stream = try await engine.scheduler.submit(Self.request("together-\(index)", prompt))
                group.addTask { (index, try await Self.collect(stream).0) }
            }
            var results = [String](repeating: "", count: prompts.count)
            for try await (index, text) in group { results[index] = text }
            return results
        }
        #expect(together == alone)
        #expect(alone.allSatisfy { !$0.isEmpty })
        for index in prompts.indices {
            #expect(await engine.shard.cachedLength(of: "together-\(index)") == 0, "caches are freed on finish")
        }
    }

    /// Greedy generation with `logprobs`: one entry per generated token that is part of the
    /// text, each the argmax of its position (so first among the alternatives), all normalised.
    @Test func logprobsDescribeEveryGeneratedToken() async throws {
        let engine = try Self.engine()
        let tokenizer = try #require(Self.bundle).tokenizer
        var request = Self.request("logprobs", try Self.chat(Self.prompts[0]), maxTokens: 12)
        request.logprobs = 4
        let (text, logprobs, info) = try await Self.collectWithLogprobs(engine.scheduler.submit(request))
        let textTokens = info.reason == .stop ? info.completionTokens - 1 : info.completionTokens
        #expect(logprobs.count == textTokens, "the stop token ends the text and has no entry")
        #expect(tokenizer.decode(logprobs.map(\.token), skipSpecialTokens: true) == text)
        for entry in logprobs {
            #expect(entry.top.count == 4)
            #expect(entry.top.first?.token == entry.token, "greedy picks the likeliest token")
            #expect(entry.top.first?.logprob == entry.logprob)
            #expect(entry.logprob <= 0 && entry.logprob > -30)
            #expect(zip(entry.top, entry.top.dropFirst()).allSatisfy { $0.logprob >= $1.logprob })
            #expect(entry.top.map { exp(Double($0.logprob)) }.reduce(0, +) <= 1.0001)
        }
        // Without `logprobs` no entry comes.
        let plain = try await Self.collectWithLogprobs(
            engine.scheduler.submit(Self.request("plain", try Self.chat(Self.prompts[0]), maxTokens: 12)))
        #expect(plain.1.isEmpty)
        #expect(plain.0 == text, "reporting log-probabilities does not change the choice")
    }

    /// The log-probability of a row: normalised over the finite logits, -inf for impossible ones,
    /// ties broken toward the lower id.
    @Test func tokenLogprobOfARow() {
        let row: [Float] = [1, 3, 3, -.infinity, .nan, 0]
        row.withUnsafeBufferPointer { logits in
            let entry = TokenLogprob(token: 2, logits: logits, top: 3)
            let normaliser = log(exp(1.0) + 2 * exp(3.0) + 1)
            #expect(abs(Double(entry.logprob) - (3 - normaliser)) < 1e-5)
            #expect(entry.top.map(\.token) == [1, 2, 0])
            #expect(TokenLogprob(token: 3, logits: logits, top: 0).logprob == -.infinity)
            #expect(TokenLogprob(token: 99, logits: logits, top: 0).logprob == -.infinity)
        }
        let dead: [Float] = [-.infinity, .nan]
        dead.withUnsafeBufferPointer { logits in
            let entry = TokenLogprob(token: 0, logits: logits, top: 2)
            #expect(entry.logprob == -.infinity && entry.top.isEmpty)
        }
    }

    @Test func stopStringEndsTheTextRightBeforeIt() async throws {
        let engine = try Self.engine()
        let prompt = try Self.chat(Self.prompts[3])
        let (full, fullInfo) = try await Self.collect(
            engine.scheduler.submit(Self.request("full", prompt, maxTokens: 40)))
        #expect(fullInfo.reason == .length)
        // A stop string from the middle of the text, likely spanning a token boundary.
        let words = full.split(separator: " ")
        try #require(words.count > 6, "greedy text too short: \(full)")
        let stop = words[4] + " " + words[5].prefix(2)
        let (cut, info) = try await Self.collect(
            engine.scheduler.submit(Self.request("cut", prompt, maxTokens: 40, stop: [String(stop)])))
        let expected = full.range(of: stop).map { String(full[..<$0.lowerBound]) }
        #expect(cut == expected)
        #expect(info.reason == .stop)
        #expect(info.completionTokens < fullInfo.completionTokens)
    }

    @Test func droppingTheStreamAbortsAndFreesTheCache() async throws {
        let engine = try Self.engine()
        let stream = try await engine.scheduler.submit(
            Self.request("gone", try Self.chat(Self.prompts[1]), maxTokens: 4000))
        let reader = Task {
            var count = 0
            for try await event in stream {
                if case .text = event { count += 1 }
                if count == 3 { break }
            }
        }
        try await reader.value
        let deadline = ContinuousClock.now + .seconds(60)
        while await engine.scheduler.load.running > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(await engine.scheduler.load == Scheduler.Load(waiting: 0, running: 0))
        #expect(await engine.shard.cachedLength(of: "gone") == 0)
        // The scheduler still serves.
        let (text, _) = try await Self.collect(engine.scheduler.submit(Self.request("after", try Self.chat("Hi"))))
        #expect(!text.isEmpty)
    }

    @Test func aFullQueueRefusesAndTheRestGoOn() async throws {
        let engine = try Self.engine {
            $0.maxBatchSize = 1
            $0.maxQueue = 1
        }
        let prompt = try Self.chat("Hi")
        let first = try await engine.scheduler.submit(Self.request("q1", prompt, maxTokens: 8))
        let second = try await engine.scheduler.submit(Self.request("q2", prompt, maxTokens: 8))
        await #expect(throws: SchedulerError.self) {
            _ = try await engine.scheduler.submit(Self.request("q3", prompt))
        }
        let (a, _) = try await Self.collect(first)
        let (b, _) = try await Self.collect(second)
        #expect(a == b)
    }

    @Test func limitsAreCheckedUpFront() async throws {
        let engine = try Self.engine { $0.maxModelLength = 64 }
        let prompt = try Self.chat("Hi")
        await #expect(throws: SchedulerError.self) {
            _ = try await engine.scheduler.submit(Self.request("long", prompt, maxTokens: 64))
        }
        await #expect(throws: SchedulerError.self) {
            _ = try await engine.scheduler.submit(Self.request("empty", [], maxTokens: 4))
        }
        await #expect(throws: SchedulerError.self) {
            _ = try await engine.scheduler.submit(Self.request("zero", prompt, maxTokens: 0))
        }
    }

    @Test func aRequestPastItsTimeLimitEndsWithItsText() async throws {
        let engine = try Self.engine()
        let (_, info) = try await Self.collect(
            engine.scheduler.submit(
                Self.request("slow", try Self.chat(Self.prompts[1]), maxTokens: 4000, timeout: .milliseconds(300))))
        #expect(info.reason == .timeout)
        #expect(info.completionTokens < 4000)
        #expect(await engine.shard.cachedLength(of: "slow") == 0)
    }
}

/// Stop strings over real token boundaries of the default tokenizer.
@Suite struct TextStreamTests {
    /// Feeds `text`'s tokens one at a time, as the scheduler does, and checks every release against the text decoded
    /// so far (UTF-8 bytes): until a stop string appears, what has been released is exactly that text minus its
    /// longest suffix that is a proper prefix of a stop string (held back while it may still become one, released as
    /// soon as it cannot); once one appears, the stream stops and has released exactly the text before the first
    /// occurrence. So no chunk ever carries any part of a stop string that is then completed, and the text streamed
    /// is the final text. `heldBackSteps` counts the steps that had something to hold back.
    static func run(_ text: String, stops: [String]) throws -> (deltas: [String], stopped: Bool, heldBackSteps: Int) {
        let bundle = try #require(SchedulerTests.bundle)
        let stopBytes = stops.map { Array($0.utf8) }.filter { !$0.isEmpty }
        var stream = TextStream(tokenizer: bundle.tokenizer, stopStrings: stops)
        var decoder = bundle.tokenizer.makeIncrementalDecoder(skipSpecialTokens: true)
        var decoded: [UInt8] = []
        var released: [UInt8] = []
        var deltas: [String] = []
        var heldBackSteps = 0
        for token in bundle.tokenizer.encode(text, addSpecialTokens: false) {
            decoded += decoder.append(token).utf8
            let (delta, stopped) = stream.append(token)
            deltas.append(delta)
            released += delta.utf8
            if let stop = Self.firstStop(in: decoded, stops: stopBytes) {
                #expect(stopped, "\(String(decoding: decoded, as: UTF8.self)) has a stop string")
                #expect(
                    released == Array(decoded[..<stop]),
                    "released \(String(decoding: released, as: UTF8.self)), not the text before the stop string")
                return (deltas, stopped, heldBackSteps)
            }
            #expect(!stopped, "stopped with no stop string in \(String(decoding: decoded, as: UTF8.self))")
            let held = Self.heldBackLength(decoded, stops: stopBytes)
            if held > 0 { heldBackSteps += 1 }
            #expect(
                released == Array(decoded.dropLast(held)),
                """
                after \(String(decoding: decoded, as: UTF8.self)): released \
                \(String(decoding: released, as: UTF8.self)), holding back \(held) bytes
                """)
            if stopped { return (deltas, stopped, heldBackSteps) }
        }
        decoded += decoder.flush().utf8
        let (rest, stopped) = stream.finish()
        deltas.append(rest)
        released += rest.utf8
        let stop = Self.firstStop(in: decoded, stops: stopBytes)
        #expect(stopped == (stop != nil))
        #expect(released == Array(decoded[..<(stop ?? decoded.count)]))
        return (deltas, stopped, heldBackSteps)
    }

    /// Offset of the first occurrence of any of `stops` in `text`.
    static func firstStop(in text: [UInt8], stops: [[UInt8]]) -> Int? {
        var first: Int?
        for stop in stops where stop.count <= text.count {
            for start in 0...(text.count - stop.count) where text[start..<(start + stop.count)].elementsEqual(stop) {
                first = min(first ?? start, start)
                break
            }
        }
        return first
    }

    /// Length of the longest suffix of `text` that is a proper, non-empty prefix of one of `stops`.
    static func heldBackLength(_ text: [UInt8], stops: [[UInt8]]) -> Int {
        var longest = 0
        for stop in stops where stop.count > 1 {
            for length in 1..<min(stop.count, text.count + 1) {
                if text.suffix(length).elementsEqual(stop.prefix(length)) { longest = max(longest, length) }
            }
        }
        return longest
    }

    @Test func textBeforeTheStopStringOnly() throws {
        let (deltas, stopped, heldBackSteps) = try Self.run(
            "The quick brown fox jumps over the lazy dog.", stops: ["n fox j"])
        #expect(stopped)
        #expect(deltas.joined() == "The quick brow")
        #expect(heldBackSteps > 0, "the stop string was never begun at a token boundary")
    }

    @Test func aFalseStartIsHeldBackThenReleased() throws {
        // "two thre" may still become "two thre!" until the next "e": `run` checks at every token that it is held
        // back until then, and released then.
        let (deltas, stopped, heldBackSteps) = try Self.run("one two three four", stops: ["two thre!", "zzz"])
        #expect(!stopped)
        #expect(deltas.joined() == "one two three four")
        #expect(heldBackSteps > 0, "nothing was ever held back: the false start was not exercised")
        // A false start and then the stop string itself: the first is released, no byte of the second is streamed.
        let (again, stoppedAgain, heldAgain) = try Self.run("one two three, two thre! four", stops: ["two thre!"])
        #expect(stoppedAgain)
        #expect(again.joined() == "one two three, ")
        #expect(heldAgain > 1, "held back at both beginnings of the stop string")
    }

    @Test func earliestOfSeveralStops() throws {
        let (deltas, stopped, _) = try Self.run("alpha beta gamma delta", stops: ["delta", "beta"])
        #expect(stopped)
        #expect(deltas.joined() == "alpha ")
    }

    @Test func multibyteTextAroundAStop() throws {
        let (deltas, stopped, _) = try Self.run("Café ☕ au lait 🥐 et fin", stops: ["🥐"])
        #expect(stopped)
        #expect(deltas.joined() == "Café ☕ au lait ")
    }
}
