import Foundation
import Testing

@testable import TLLMCompute

@Suite struct SamplerTests {
    static func sample(_ parameters: SamplingParameters, _ logits: [Float], prompt: [Int32] = [], output: [Int32] = [])
        -> Int32
    {
        var sampler = Sampler(parameters: parameters, vocabularySize: logits.count, prompt: prompt)
        output.forEach { sampler.accept($0) }
        var values = logits
        return values.withUnsafeMutableBufferPointer { sampler.sample($0) }
    }

    @Test func greedyIsTheArgmax() {
        #expect(Self.sample(SamplingParameters(), [0.1, 3, -2, 2.9]) == 1)
        #expect(Self.sample(SamplingParameters(temperature: 0.8, topK: 1), [0.1, 3, -2, 2.9]) == 1)
    }

    @Test func seedMakesSamplingReproducible() {
        let logits = (0..<100).map { Float($0 % 7) * 0.3 }
        let parameters = SamplingParameters(temperature: 1, seed: 42)
        var a = Sampler(parameters: parameters, vocabularySize: 100)
        var b = Sampler(parameters: parameters, vocabularySize: 100)
        var first: [Int32] = []
        var second: [Int32] = []
        for _ in 0..<50 {
            var x = logits
            var y = logits
            first.append(x.withUnsafeMutableBufferPointer { a.sample($0) })
            second.append(y.withUnsafeMutableBufferPointer { b.sample($0) })
        }
        #expect(first == second)
        #expect(Set(first).count > 3, "sampling at temperature 1 should vary")
    }

    @Test func filtersRestrictTheChoice() {
        let logits: [Float] = [5, 4.9, 4.8, 0, -1, -2]
        for seed in 0..<200 as Range<UInt64> {
            #expect(Self.sample(SamplingParameters(temperature: 1, topK: 2, seed: seed), logits) < 2)
            #expect(Self.sample(SamplingParameters(temperature: 1, minP: 0.5, seed: seed), logits) < 3)
            // The top three hold ~99% of the mass; top_p 0.5 keeps the first two.
            #expect(Self.sample(SamplingParameters(temperature: 1, topP: 0.5, seed: seed), logits) < 2)
        }
    }

    @Test func distributionFollowsTheSoftmax() {
        let logits: [Float] = [0, Float(log(3.0))]  // probabilities 1/4, 3/4
        var sampler = Sampler(parameters: SamplingParameters(temperature: 1, seed: 7), vocabularySize: 2)
        var ones = 0
        for _ in 0..<4000 {
            var x = logits
            if x.withUnsafeMutableBufferPointer({ sampler.sample($0) }) == 1 { ones += 1 }
        }
        #expect(abs(Double(ones) / 4000 - 0.75) < 0.03, "\(ones)")
    }

    @Test func penaltiesChangeTheWinner() {
        let logits: [Float] = [2, 1.9, 1.8]
        #expect(Self.sample(SamplingParameters(repetitionPenalty: 1.2), logits, prompt: [0]) == 1)
        #expect(Self.sample(SamplingParameters(presencePenalty: 0.5), logits, output: [0, 1]) == 2)
        #expect(Self.sample(SamplingParameters(frequencyPenalty: 0.1), logits, output: [0, 0, 0]) == 1)
    }
}
