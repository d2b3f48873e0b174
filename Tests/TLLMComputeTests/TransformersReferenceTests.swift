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
        let (agree, _, worst) = try await LlamaForwardTests.compare(
            ids: reference.ids, topIDs: reference.top_ids, topLogprobs: reference.top_logprobs,
            options: path.options, chunk: path.chunk)
        let agreement = Double(agree) / Double(reference.ids.count)
        print(
            "transformers teacher-forced, \(path): top-1 \(agree)/\(reference.ids.count), largest log-prob difference \(worst)"
        )
        #expect(agreement >= 0.995, "top-1 agreement \(agree)/\(reference.ids.count)")
        #expect(worst <= 0.02, "largest log-prob difference of the reference's top token: \(worst)")
    }

    /// Greedy continuations of chat prompts, decoded token by token through the KV cache, agree
    /// for at least 32 tokens; a divergence earlier is accepted only at a near tie of the
    /// reference's two best logits (< 0.02), where float32 rounding decides.
    @Test(
        .enabled(if: LlamaForwardTests.enabled, "default model not fetched (scripts/fetch-default-model.sh)"),
        arguments: FaithfulPath.all)
    func greedyContinuationsAgree(path: FaithfulPath) async throws {
        let prompts = try Self.fixture("transformers_reference", as: Transformers.self).greedy
        #expect(prompts.count >= 4)
        let (shard, head) = try Self.model(path.options)
        for (index, prompt) in prompts.enumerated() {
            let id = "g\(index)"
            var logits = try await Self.logits(prompt.prompt_ids, id: id, shard: shard, head: head, chunk: path.chunk)
            let vocabulary = head.vocabularySize
            var row = Array(logits.suffix(vocabulary))
            var ours: [Int32] = []
            for _ in prompt.generated_ids.indices {
                let token = Int32(row.indices.max { row[$0] < row[$1] }!)
                ours.append(token)
                logits = try await Self.logits([token], id: id, shard: shard, head: head)
                row = logits
            }
            await shard.release([id])
            let divergence = ours.indices.first { ours[$0] != prompt.generated_ids[$0] } ?? ours.count
            print(
                "transformers greedy prompt \(index), \(path): agrees for \(divergence)/\(ours.count) tokens"
            )
            let nearTie = divergence < prompt.margins.count && prompt.margins[divergence] < 0.02
            #expect(
                divergence >= 32 || nearTie,
                "prompt \(index) (\(prompt.prompt_text.prefix(40))…) diverges at token \(divergence)")
        }
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
