import Foundation
import Testing

@testable import TLLMCompute
@testable import TLLMModelFiles

/// The default model against Hugging Face `transformers` in float32 on the same dequantised
/// weights, and against llama.cpp's perplexity on the same text
/// (fixtures from Tests/fixture-scripts/transformers_reference.py and llamacpp_perplexity.py).
@Suite(.serialized) struct TransformersReferenceTests {
    struct Transformers: Decodable {
        struct TeacherForced: Decodable {
            var ids: [Int32]
            var top_ids: [[Int]]
            var top_logprobs: [[Double]]
        }
        struct Greedy: Decodable {
            var prompt_text: String
            var prompt_ids: [Int32]
            var generated_ids: [Int32]
            /// Top-1 minus top-2 logit per step: near ties may go either way in float32.
            var margins: [Double]
        }
        struct Perplexity: Decodable {
            var ppl: Double
        }
        var teacher_forced: TeacherForced
        var greedy: [Greedy]
        var perplexity: Perplexity
    }

    struct LlamaCpp: Decodable {
        var ids: [Int32]
        var n_ctx: Int
        var n_chunk: Int
        var first_scored_logit_position: Int
        var ppl: Double
        var llama_cpp_version: String
    }

    static func fixture<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: "json"))
        return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
    }

    static func model(_ options: ComputeOptions) throws -> (ShardActor, HeadActor) {
        let model = try GGUFModel(path: LlamaForwardTests.modelPath)
        return (
            try ShardActor(model: model, layers: 0..<model.configuration.layerCount, threads: 2, options: options),
            try HeadActor(model: model, threads: 2, options: options)
        )
    }

    /// Logits of `tokens` fed to sequence `id` in steps of at most `chunk` rows.
    static func logits(
        _ tokens: [Int32], id: String, shard: ShardActor, head: HeadActor, chunk: Int = .max
    ) async throws -> [Float] {
        var logits: [Float] = []
        for start in stride(from: 0, to: tokens.count, by: chunk) {
            let part = Array(tokens[start..<min(start + chunk, tokens.count)])
            var hidden = try await head.embed(part)
            hidden = try await shard.forward(hidden, sequences: [SequenceSlice(id: id, rows: part.count)])
            logits += await head.logits(hidden, rows: part.count)
        }
        return logits
    }

    @Test(
        .enabled(if: LlamaForwardTests.enabled, "default model not fetched (scripts/fetch-default-model.sh)"),
        arguments: FaithfulPath.all)
    func teacherForcedOverHundredsOfTokens(path: FaithfulPath) async throws {
        let reference = try Self.fixture("transformers_reference", as: Transformers.self).teacher_forced
        #expect(reference.ids.count >= 300)
        let (agree, _, worst, worstOfTop) = try await LlamaForwardTests.compare(
            ids: reference.ids, topIDs: reference.top_ids, topLogprobs: reference.top_logprobs,
            options: path.options, chunk: path.chunk)
        let agreement = Double(agree) / Double(reference.ids.count)
        print(
            "transformers teacher-forced, \(path): top-1 \(agree)/\(reference.ids.count), largest log-prob difference \(worst)",
            "(over the reference's top-5: \(worstOfTop))"
        )
        #expect(agreement >= 0.995, "top-1 agreement \(agree)/\(reference.ids.count)")
        #expect(worst <= 0.02, "largest log-prob difference of the reference's top token: \(worst)")
    }

    /// Top-1 minus top-2 logit (= log-prob) of the reference below which its greedy choice is a near tie, where
    /// float32 rounding in another summation order may legitimately pick the runner-up.
    static let tieMargin = 0.02
    /// How far below our best token the reference's token may be at an accepted tie: the tie margin plus twice the
    /// teacher-forced tolerance on one token's log-prob (0.02), for the two tokens of the gap.
    static let ourTieMargin = tieMargin + 2 * 0.02

    /// Greedy continuations of chat prompts, decoded token by token through the KV cache, agree with the reference
    /// token for token. Only one divergence can be accepted, the first, and only at a near tie on both sides: the
    /// reference's margin at that step (from the fixture) below `tieMargin`, and our logit of the reference's token
    /// within `ourTieMargin` of our best. After an accepted tie the two continuations legitimately differ (each
    /// follows its own token), so that prompt's comparison ends there; the tie is printed.
    @Test(
        .enabled(if: LlamaForwardTests.enabled, "default model not fetched (scripts/fetch-default-model.sh)"),
        arguments: FaithfulPath.all)
    func greedyContinuationsAgree(path: FaithfulPath) async throws {
        let prompts = try Self.fixture("transformers_reference", as: Transformers.self).greedy
        #expect(prompts.count >= 4)
        let (shard, head) = try Self.model(path.options)
        let vocabulary = head.vocabularySize
        var agreed = 0
        var generated = 0
        for (index, prompt) in prompts.enumerated() {
            try #require(prompt.generated_ids.count >= 32, "prompt \(index): too few reference tokens")
            try #require(prompt.margins.count == prompt.generated_ids.count, "prompt \(index): one margin per token")
            let id = "g\(index)"
            let logits = try await Self.logits(prompt.prompt_ids, id: id, shard: shard, head: head, chunk: path.chunk)
            var row = Array(logits.suffix(vocabulary))
            var agreeing = 0
            for (step, expected) in prompt.generated_ids.enumerated() {
                let ours = row.indices.max { row[$0] < row[$1] }!
                if ours != Int(expected) {
                    let referenceMargin = prompt.margins[step]
                    let ourMargin = Double(row[ours] - row[Int(expected)])
                    let tie = referenceMargin < Self.tieMargin && ourMargin < Self.ourTieMargin
                    print(
                        "transformers greedy prompt \(index), \(path): diverges at token \(step) (ours \(ours),",
                        "reference \(expected)); margins: reference \(referenceMargin), ours \(ourMargin);",
                        tie ? "a near tie, the rest is not compared" : "not a near tie"
                    )
                    #expect(
                        tie,
                        """
                        prompt \(index) (\(prompt.prompt_text.suffix(40))…) diverges at token \(step), ours \(ours) \
                        vs reference \(expected), reference margin \(referenceMargin) (near tie < \(Self.tieMargin)), \
                        ours \(ourMargin) (< \(Self.ourTieMargin))
                        """)
                    break
                }
                agreeing += 1
                if step + 1 < prompt.generated_ids.count {
                    row = try await Self.logits([expected], id: id, shard: shard, head: head)
                }
            }
            await shard.release([id])
            agreed += agreeing
            generated += prompt.generated_ids.count
            print("transformers greedy prompt \(index), \(path): \(agreeing)/\(prompt.generated_ids.count) agree")
        }
        print("transformers greedy, \(path): \(agreed)/\(generated) tokens agree before any accepted tie")
    }

    /// llama.cpp's perplexity tool scoring (chunks of n_ctx from an empty cache, the second half
    /// of each chunk scored) on the same ids: within 2% of llama.cpp, and close to transformers'
    /// float32 run of the same scoring.
    @Test(
        .enabled(if: LlamaForwardTests.enabled, "default model not fetched (scripts/fetch-default-model.sh)"),
        arguments: FaithfulPath.all)
    func perplexityMatchesLlamaCppScoring(path: FaithfulPath) async throws {
        let reference = try Self.fixture("llamacpp_perplexity", as: LlamaCpp.self)
        let transformers = try Self.fixture("transformers_reference", as: Transformers.self).perplexity.ppl
        let (shard, head) = try Self.model(path.options)
        let vocabulary = head.vocabularySize
        var negativeLogLikelihood = 0.0
        var scored = 0
        for chunk in 0..<reference.n_chunk {
            let tokens = Array(reference.ids[(chunk * reference.n_ctx)..<((chunk + 1) * reference.n_ctx)])
            let logits = try await Self.logits(
                tokens, id: "c\(chunk)", shard: shard, head: head, chunk: path.chunk)
            await shard.release(["c\(chunk)"])
            for position in reference.first_scored_logit_position..<(reference.n_ctx - 1) {
                let logprobs = LlamaForwardTests.logSoftmax(
                    logits[(position * vocabulary)..<((position + 1) * vocabulary)])
                negativeLogLikelihood -= logprobs[Int(tokens[position + 1])]
                scored += 1
            }
        }
        let ours = exp(negativeLogLikelihood / Double(scored))
        print(
            "perplexity (llama.cpp scoring, \(scored) tokens, \(path)): ours \(ours), llama.cpp \(reference.ppl), transformers \(transformers)"
        )
        #expect(
            abs(ours / reference.ppl - 1) < 0.02,
            "perplexity \(ours) vs llama.cpp \(reference.ppl) (\(reference.llama_cpp_version)) over \(scored) tokens")
        #expect(abs(ours / transformers - 1) < 0.005, "perplexity \(ours) vs transformers float32 \(transformers)")
    }
}
