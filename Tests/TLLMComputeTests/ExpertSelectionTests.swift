import Foundation
import Testing

@testable import TLLMCompute

/// The router's choice in a mixture-of-experts layer (`MixtureScratch.select`): transformers takes
/// the softmax over all experts, keeps the top k and, for Mixtral and Qwen3-MoE with
/// `norm_topk_prob`, rescales them to sum to 1.
@Suite struct ExpertSelectionTests {
    func select(_ logits: [Float], _ count: Int, normalize: Bool) -> [(Int, Float)] {
        logits.withUnsafeBufferPointer {
            MixtureScratch.select($0.baseAddress!, experts: logits.count, count: count, normalize: normalize)
        }
    }

    @Test func topKBySoftmaxProbabilityHighestFirst() {
        let logits: [Float] = [0.5, 3, -1, 2, 2.5]
        let chosen = select(logits, 2, normalize: false)
        #expect(chosen.map(\.0) == [1, 4])
        let denominator = logits.map { exp(Double($0)) }.reduce(0, +)
        for (expert, probability) in chosen {
            #expect(abs(Double(probability) - exp(Double(logits[expert])) / denominator) < 1e-6)
        }
        let normalised = select(logits, 2, normalize: true)
        #expect(normalised.map(\.0) == [1, 4])
        #expect(abs(normalised.map(\.1).reduce(0, +) - 1) < 1e-6)
        #expect(abs(Double(normalised[0].1) - 1 / (1 + exp(-0.5))) < 1e-6)
    }

    @Test func tiesGoToTheLowerIndexAndEveryExpertCanBeChosen() {
        #expect(select([1, 2, 2, 2], 2, normalize: true).map(\.0) == [1, 2])
        #expect(select([5, 5, 5], 3, normalize: false).map(\.0) == [0, 1, 2])
        #expect(select([-1, 7], 1, normalize: true).map(\.0) == [1])
        #expect(select([-1, 7], 1, normalize: true)[0].1 == 1)
    }

    @Test func hostileLogitsNeitherTrapNorPickOutOfRange() {
        for logits: [Float] in [[.nan, 1, 2, 3], [.infinity, .infinity, 0, 0], [-.infinity, -.infinity, -.infinity]] {
            let chosen = select(logits, 2, normalize: true)
            #expect(chosen.count == 2 && chosen.allSatisfy { (0..<logits.count).contains($0.0) })
        }
    }
}
