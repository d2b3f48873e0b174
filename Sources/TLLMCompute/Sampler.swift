import Foundation

/// How the next token is chosen (OpenAI / vLLM parameter names and semantics).
public struct SamplingParameters: Sendable, Hashable {
    /// 0 means greedy (argmax).
    public var temperature: Float = 0
    /// Keep the k most likely tokens; ≤ 0 disables.
    public var topK: Int = -1
    /// Keep the smallest set of tokens whose probability reaches p; 1 disables.
    public var topP: Float = 1
    /// Drop tokens less likely than `minP ×` the most likely one; 0 disables.
    public var minP: Float = 0
    /// Hugging Face's repetition penalty over prompt and output tokens; 1 disables.
    public var repetitionPenalty: Float = 1
    /// OpenAI presence penalty over output tokens.
    public var presencePenalty: Float = 0
    /// OpenAI frequency penalty over output tokens.
    public var frequencyPenalty: Float = 0
    /// Seed for reproducible sampling; nil draws one.
    public var seed: UInt64?

    public init(
        temperature: Float = 0, topK: Int = -1, topP: Float = 1, minP: Float = 0, repetitionPenalty: Float = 1,
        presencePenalty: Float = 0, frequencyPenalty: Float = 0, seed: UInt64? = nil
    ) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.seed = seed
    }

    /// Whether the choice is the argmax (no randomness involved).
    public var isGreedy: Bool { temperature <= 0 || topK == 1 }
}

/// Chooses tokens for one sequence. All buffers are allocated once at creation, so
/// choosing a token allocates nothing.
public struct Sampler {
    public let parameters: SamplingParameters
    private var random: SplitMix64
    /// Occurrences of each token in the output so far (presence / frequency penalties).
    private var outputCounts: [Int32]
    /// Tokens seen in prompt or output (repetition penalty).
    private var seen: [Bool]
    private var seenList: [Int32] = []
    private var outputList: [Int32] = []
    private var candidates: [Int32]
    private var probabilities: [Float]

    /// A sampler for a vocabulary of `vocabularySize` tokens, aware of the prompt (repetition penalty).
    public init(parameters: SamplingParameters, vocabularySize: Int, prompt: [Int32] = []) {
        self.parameters = parameters
        random = SplitMix64(seed: parameters.seed ?? UInt64.random(in: 0...UInt64.max))
        outputCounts = Array(repeating: 0, count: vocabularySize)
        seen = Array(repeating: false, count: vocabularySize)
        candidates = Array(repeating: 0, count: vocabularySize)
        probabilities = Array(repeating: 0, count: vocabularySize)
        seenList.reserveCapacity(prompt.count + 4096)
        outputList.reserveCapacity(4096)
        for token in prompt where token >= 0 && Int(token) < vocabularySize && !seen[Int(token)] {
            seen[Int(token)] = true
            seenList.append(token)
        }
    }

    /// Records a token that was emitted (chosen here or forced by the caller).
    public mutating func accept(_ token: Int32) {
        let index = Int(token)
        guard index >= 0, index < seen.count else { return }
        if outputCounts[index] == 0 { outputList.append(token) }
        outputCounts[index] += 1
        if !seen[index] {
            seen[index] = true
            seenList.append(token)
        }
    }

    /// Chooses the next token from `logits` (modified in place by penalties and temperature).
    public mutating func sample(_ logits: UnsafeMutableBufferPointer<Float>) -> Int32 {
        let p = parameters
        if p.repetitionPenalty != 1 {
            for token in seenList {
                let value = logits[Int(token)]
                logits[Int(token)] = value > 0 ? value / p.repetitionPenalty : value * p.repetitionPenalty
            }
        }
        if p.presencePenalty != 0 || p.frequencyPenalty != 0 {
            for token in outputList {
                let count = Float(outputCounts[Int(token)])
                logits[Int(token)] -= p.presencePenalty + p.frequencyPenalty * count
            }
        }
        var best = 0
        for index in 1..<logits.count where logits[index] > logits[best] { best = index }
        if p.isGreedy { return Int32(best) }

        // Candidates: tokens within 20 nats of the best (anything below has probability < 2e-9 of it).
        let inverseTemperature = 1 / p.temperature
        let floor = logits[best] - 20 * p.temperature
        var count = 0
        for index in 0..<logits.count where logits[index] >= floor {
            candidates[count] = Int32(index)
            count += 1
        }
        // Sort candidates by logit, descending (in place, no allocation).
        candidates.withUnsafeMutableBufferPointer { buffer in
            var slice = UnsafeMutableBufferPointer(rebasing: buffer[0..<count])
            slice.sort { logits[Int($0)] > logits[Int($1)] }
        }
        if p.topK > 0 { count = min(count, p.topK) }
        var total: Float = 0
        let top = logits[best]
        for i in 0..<count {
            let value = expf((logits[Int(candidates[i])] - top) * inverseTemperature)
            probabilities[i] = value
            total += value
        }
        var kept = count
        if p.minP > 0 {
            // probabilities[0] is the most likely token's.
            let threshold = p.minP * probabilities[0]
            while kept > 1 && probabilities[kept - 1] < threshold { kept -= 1 }
        }
        if p.topP < 1 {
            var cumulative: Float = 0
            for i in 0..<kept {
                cumulative += probabilities[i] / total
                if cumulative >= p.topP {
                    kept = i + 1
                    break
                }
            }
        }
        var mass: Float = 0
        for i in 0..<kept { mass += probabilities[i] }
        var draw = Float(random.nextUnitDouble()) * mass
        for i in 0..<kept {
            draw -= probabilities[i]
            if draw <= 0 { return candidates[i] }
        }
        return candidates[kept - 1]
    }
}

/// A small, fast, seedable generator (SplitMix64): reproducible sampling for a given seed.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextUnitDouble() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}
