import CTLLMKernels
import Foundation
import TLLMModel
import TLLMTokenizer
import Testing

@testable import TLLMCompute
@testable import TLLMModelFiles

/// The decoder on the embedded default model (SmolLM2-135M-Instruct Q4_1) against a
/// float32 numpy implementation of the Hugging Face semantics (Tests/fixture-scripts/reference_logits.py).
@Suite(.serialized) struct LlamaForwardTests {
    static let modelPath =
        ProcessInfo.processInfo.environment["TLLM_DEFAULT_MODEL"]
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
        .appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
    static var enabled: Bool {
        FileManager.default.fileExists(atPath: modelPath) || ProcessInfo.processInfo.environment["CI"] != nil
    }

    struct Reference: Decodable {
        var ids: [Int32]
        var top_ids: [[Int]]
        var top_logprobs: [[Double]]
    }

    static func reference() throws -> Reference {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/reference_logits", withExtension: "json"))
        return try JSONDecoder().decode(Reference.self, from: Data(contentsOf: url))
    }

    static func logSoftmax(_ row: ArraySlice<Float>) -> [Double] {
        let maximum = Double(row.max() ?? 0)
        let sum = row.reduce(0.0) { $0 + exp(Double($1) - maximum) }
        return row.map { Double($0) - maximum - log(sum) }
    }

    /// Teacher-forces the reference text through the whole model (one prefill step) and
    /// compares with the reference: top-1 agreements, the largest log-prob difference of the
    /// reference's top token and the largest over all of the reference's top-5 tokens.
    static func compareWithReference(
        options: ComputeOptions = ComputeOptions(), chunk: Int = .max
    ) async throws -> (agree: Int, of: Int, worst: Double, worstOfTop: Double) {
        let reference = try Self.reference()
        return try await compare(
            ids: reference.ids, topIDs: reference.top_ids, topLogprobs: reference.top_logprobs, options: options,
            chunk: chunk)
    }

    /// Teacher-forces `ids` (in steps of at most `chunk` rows through the KV cache) and
    /// compares each position's log-probabilities with a reference's top tokens: how many top-1
    /// agree, the largest log-prob difference of the reference's top token, and the largest
    /// log-prob difference of any of the reference's top tokens (all of each row, top-5 in the fixtures).
    static func compare(
        ids: [Int32], topIDs: [[Int]], topLogprobs: [[Double]], options: ComputeOptions = ComputeOptions(),
        chunk: Int = .max
    ) async throws -> (agree: Int, of: Int, worst: Double, worstOfTop: Double) {
        try #require(topIDs.count == ids.count && topLogprobs.count == ids.count, "one reference row per position")
        #expect(
            zip(topIDs, topLogprobs).allSatisfy { $0.count >= 5 && $0.count == $1.count },
            "the reference gives its top-5 tokens and their log-probs at every position")
        let model = try GGUFModel(path: Self.modelPath)
        let shard = try ShardActor(
            model: model, layers: 0..<model.configuration.layerCount, threads: 2, options: options)
        let head = try HeadActor(model: model, threads: 2, options: options)
        let logits = try await TransformersReferenceTests.logits(
            ids, id: "a", shard: shard, head: head, chunk: chunk)
        let vocabulary = head.vocabularySize
        var agree = 0
        var worst = 0.0
        var worstOfTop = 0.0
        for position in ids.indices {
            let logprobs = Self.logSoftmax(logits[(position * vocabulary)..<((position + 1) * vocabulary)])
            let ours = logprobs.indices.max { logprobs[$0] < logprobs[$1] }!
            if ours == topIDs[position][0] { agree += 1 }
            worst = max(worst, abs(logprobs[topIDs[position][0]] - topLogprobs[position][0]))
            for (token, reference) in zip(topIDs[position], topLogprobs[position]) {
                worstOfTop = max(worstOfTop, abs(logprobs[token] - reference))
            }
        }
        return (agree, ids.count, worst, worstOfTop)
    }

    @Test(
        .enabled(if: enabled, "default model not fetched (scripts/fetch-default-model.sh)"),
        arguments: FaithfulPath.all)
    func teacherForcedLogitsMatchTheFloat32Reference(path: FaithfulPath) async throws {
        let (agree, count, worst, worstOfTop) = try await Self.compareWithReference(
            options: path.options, chunk: path.chunk)
        print("numpy reference, \(path): top-1 \(agree)/\(count), log-prob difference \(worst), top-5 \(worstOfTop)")
        #expect(agree == count, "\(path): top-1 agreement \(agree)/\(count)")
        #expect(worst < 0.01, "\(path): largest log-prob difference of the reference's top token \(worst)")
        // Every one of the reference's top-5 tokens, not only its first: the shape of the distribution near the top
        // (what sampling draws from), within the same tolerance.
        #expect(worstOfTop < 0.01, "\(path): largest log-prob difference over the reference's top-5 \(worstOfTop)")
    }

    @Test(.enabled(if: enabled, "default model not fetched (scripts/fetch-default-model.sh)"))
    func batchedSequencesEqualEachAlone() async throws {
        let model = try GGUFModel(path: Self.modelPath)
        let head = try HeadActor(model: model, threads: 2)
        let prompts: [[Int32]] = [
            [1, 2, 3], [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000], [42], [7, 7, 7, 7, 7], Array(2000..<2020),
        ]
        // Alone, each in a fresh shard, prefill then one decode token.
        var alone: [[Float]] = []
        for prompt in prompts {
            let shard = try ShardActor(model: model, layers: 0..<model.configuration.layerCount, threads: 2)
            var hidden = try await head.embed(prompt)
            hidden = try await shard.forward(hidden, sequences: [SequenceSlice(id: "s", rows: prompt.count)])
            var next = try await head.embed([5])
            next = try await shard.forward(next, sequences: [SequenceSlice(id: "s", rows: 1)])
            alone.append(await head.logits(next, rows: 1))
        }
        // Together: one prefill step with all five packed, then one decode step with all five.
        let shard = try ShardActor(model: model, layers: 0..<model.configuration.layerCount, threads: 2)
        var hidden = try await head.embed(prompts.flatMap { $0 })
        hidden = try await shard.forward(
            hidden, sequences: prompts.enumerated().map { SequenceSlice(id: "s\($0)", rows: $1.count) })
        var next = try await head.embed(Array(repeating: 5, count: prompts.count))
        next = try await shard.forward(next, sequences: prompts.indices.map { SequenceSlice(id: "s\($0)", rows: 1) })
        let together = await head.logits(next, rows: prompts.count)
        let vocabulary = head.vocabularySize
        for index in prompts.indices {
            let batched = Array(together[(index * vocabulary)..<((index + 1) * vocabulary)])
            let difference = zip(batched, alone[index]).map { abs($0 - $1) }.max() ?? 0
            #expect(difference < 1e-3, "sequence \(index): max logit difference \(difference)")
        }
    }

    @Test(.enabled(if: enabled, "default model not fetched (scripts/fetch-default-model.sh)"))
    func twoShardsEqualOne() async throws {
        let model = try GGUFModel(path: Self.modelPath)
        let head = try HeadActor(model: model, threads: 2)
        let tokens: [Int32] = [1, 504, 2284, 314, 7042, 30, 216, 198]
        let whole = try ShardActor(model: model, layers: 0..<30, threads: 2)
        let first = try ShardActor(model: model, layers: 0..<15, threads: 2)
        let second = try ShardActor(model: model, layers: 15..<30, threads: 2)
        var a = try await head.embed(tokens)
        a = try await whole.forward(a, sequences: [SequenceSlice(id: "x", rows: tokens.count)])
        var b = try await head.embed(tokens)
        b = try await first.forward(b, sequences: [SequenceSlice(id: "x", rows: tokens.count)])
        b = try await second.forward(b, sequences: [SequenceSlice(id: "x", rows: tokens.count)])
        #expect(a == b)
    }

    @Test(.enabled(if: enabled, "default model not fetched (scripts/fetch-default-model.sh)"))
    func badInputsAreClearErrors() async throws {
        let model = try GGUFModel(path: Self.modelPath)
        let head = try HeadActor(model: model, threads: 2)
        await #expect(throws: ComputeError.self) { try await head.embed([49152]) }
        #expect(throws: ComputeError.self) { try ShardActor(model: model, layers: 25..<31, threads: 2) }
        let shard = try ShardActor(model: model, layers: 29..<30, threads: 2)
        let wrong = [Float](repeating: 0, count: 10)
        await #expect(throws: ComputeError.self) {
            try await shard.forward(wrong, sequences: [SequenceSlice(id: "a", rows: 1)])
        }
        let tooLong = [Float](repeating: 0.01, count: 8193 * 576)
        await #expect(throws: KVCacheError.contextExceeded(id: "b", length: 8193, limit: 8192)) {
            try await shard.forward(tooLong, sequences: [SequenceSlice(id: "b", rows: 8193)])
        }
        // The shard keeps working after refusing, and the refused sequences took no pages.
        #expect(await shard.cachedLength(of: "a") == 0)
        #expect(await shard.cachedLength(of: "b") == 0)
        let fine = try await shard.forward(
            [Float](repeating: 0.01, count: 576), sequences: [SequenceSlice(id: "c", rows: 1)])
        #expect(fine.count == 576)
    }
}

/// The optional 8-bit-activation path against the float path, decoding token by token.
@Suite(.serialized) struct Int8ActivationTests {
    /// A few hundred tokens of ordinary English (perplexity is too noisy on a few dozen).
    static let text = """
        The history of computing is a story of machines becoming smaller, cheaper and more \
        connected. Early computers filled whole rooms and were operated by specialists who fed \
        them punched cards. Over the following decades, transistors replaced vacuum tubes, \
        integrated circuits replaced individual transistors, and the personal computer brought \
        computation into homes and offices. Networks then linked these machines together, first \
        within universities and companies and later across the whole world. Today a single \
        program can run on thousands of computers at once, splitting its work into pieces that \
        are computed in parallel and combined at the end. Large language models follow the same \
        pattern: their layers can be divided among several ordinary machines, each holding a part \
        of the model and passing its results to the next. The challenge is to keep every machine \
        busy while the data travels between them, so that the whole system is faster than any \
        single part of it. Engineers measure this with throughput, the number of tokens produced \
        per second, and with latency, the time a user waits for the first word of an answer.
        """

    /// Perplexity of the text, fed one token per step (the decode path).
    static func perplexity(_ tokens: [Int32], options: ComputeOptions) async throws -> Double {
        let model = try GGUFModel(path: LlamaForwardTests.modelPath)
        let shard = try ShardActor(
            model: model, layers: 0..<model.configuration.layerCount, threads: 2, options: options)
        let head = try HeadActor(model: model, threads: 2, options: options)
        var negativeLogLikelihood = 0.0
        for position in 0..<(tokens.count - 1) {
            var hidden = try await head.embed([tokens[position]])
            hidden = try await shard.forward(hidden, sequences: [SequenceSlice(id: "p", rows: 1)])
            let logits = await head.logits(hidden, rows: 1)
            let logprobs = LlamaForwardTests.logSoftmax(logits[...])
            negativeLogLikelihood -= logprobs[Int(tokens[position + 1])]
        }
        return exp(negativeLogLikelihood / Double(tokens.count - 1))
    }

    @Test(.enabled(if: LlamaForwardTests.enabled, "default model not fetched (scripts/fetch-default-model.sh)"))
    func perplexityStaysWithinOnePercentOfTheFloatPath() async throws {
        let bundle = try ModelBundle.open(path: LlamaForwardTests.modelPath)
        let tokens = bundle.tokenizer.encode(Self.text, addSpecialTokens: false)
        #expect(tokens.count > 200)
        let float = try await Self.perplexity(tokens, options: ComputeOptions())
        let int16 = try await Self.perplexity(tokens, options: ComputeOptions(activations: .int16))
        let int8 = try await Self.perplexity(tokens, options: ComputeOptions(activations: .int8))
        print("decode perplexity over \(tokens.count) tokens: float32 \(float), int16 \(int16), int8 \(int8)")
        #expect(abs(int8 / float - 1) < 0.01, "perplexity float \(float), int8 \(int8) over \(tokens.count) tokens")
        #expect(abs(int16 / float - 1) < 0.001, "perplexity float \(float), int16 \(int16) over \(tokens.count) tokens")
    }
}

/// KV cache precision and memory budget.
@Suite(.serialized) struct KVCacheOptionTests {
    @Test(.enabled(if: LlamaForwardTests.enabled, "default model not fetched (scripts/fetch-default-model.sh)"))
    func float16CacheKeepsTheReferenceTopTokens() async throws {
        let (agree, count, worst, _) = try await LlamaForwardTests.compareWithReference(
            options: ComputeOptions(kvCache: .float16))
        #expect(agree == count, "top-1 agreement \(agree)/\(count)")
        #expect(worst < 0.02, "largest log-prob difference \(worst)")
    }

    @Test(.enabled(if: LlamaForwardTests.enabled, "default model not fetched (scripts/fetch-default-model.sh)"))
    func budgetRefusesAStepThatDoesNotFitAndChangesNothing() async throws {
        let model = try GGUFModel(path: LlamaForwardTests.modelPath)
        let c = model.configuration
        // Room for one page (16 positions, float16, 2 layers), not for two.
        let page = DecoderShard.pageLayout(c, layers: 2, pageTokens: 16, element: .float16).pageBytes
        let options = ComputeOptions(kvCache: .float16, kvCacheBudget: page + page / 2)
        let shard = try ShardActor(model: model, layers: 0..<2, threads: 1, options: options)
        #expect(shard.cache.pageCount == 1)
        let row = [Float](repeating: 0.01, count: c.hiddenSize)
        _ = try await shard.forward(row, sequences: [SequenceSlice(id: "first", rows: 1)])
        await #expect(throws: KVCacheError.exhausted(neededPages: 1, availablePages: 0)) {
            try await shard.forward(
                row + row, sequences: [SequenceSlice(id: "first", rows: 1), SequenceSlice(id: "second", rows: 1)])
        }
        // The refused step touched nothing: the first sequence continues at position 1.
        #expect(await shard.cachedLength(of: "first") == 1)
        #expect(await shard.cachedLength(of: "second") == 0)
        await shard.release(["first"])
        _ = try await shard.forward(row, sequences: [SequenceSlice(id: "second", rows: 1)])
        #expect(await shard.cachedLength(of: "second") == 1)
    }
}

/// An arithmetic held to the float32 reference, with the rows per step that select its kernels.
struct FaithfulPath: Sendable, CustomTestStringConvertible, CustomStringConvertible {
    let activations: ComputeOptions.Activations
    /// Rows per step when a text is fed in (prompts, teacher forcing).
    let chunk: Int
    let testDescription: String

    var options: ComputeOptions { ComputeOptions(activations: activations) }
    var description: String { testDescription }

    static let all = [
        FaithfulPath(activations: .float32, chunk: .max, testDescription: "float32"),
        // Below `splitMinimumRows` (and `sgemmMinimumRows`): two 8-bit planes on packed weights.
        FaithfulPath(
            activations: .int16, chunk: Linear.splitMinimumRows - 8,
            testDescription: "int16, 24-row steps (packed integer kernel)"),
        // Whole prompts: split-bfloat16 AMX tiles where the CPU has them, else dequantise + sgemm.
        FaithfulPath(
            activations: .int16, chunk: .max,
            testDescription:
                "int16, whole prompts (\(tllm_cpu_features() & UInt32(TLLM_CPU_AMX_BF16) != 0 ? "AMX tiles" : "sgemm"))"
        ),
    ]
}
