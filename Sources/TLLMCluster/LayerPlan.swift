/// How the decoder layers are split over workers (tllm-protocol.md §3).
public struct LayerPlan: Sendable, Equatable {
    /// The ranges, in pipeline order, tiling `0..<totalLayers`.
    public let ranges: [Range<Int>]

    /// `workers` ranges whose sizes differ by at most one layer, larger ones first.
    ///
    /// The original computes `each = total // n` and `range(0, total, each)`, which yields more
    /// than `n` ranges (the last one past the end) when `n` does not divide `total`; workers only
    /// ever use the range they are given, so a balanced split stays wire-compatible.
    public init(totalLayers: Int, workers: Int) {
        precondition(workers >= 1)
        self.init(totalLayers: totalLayers, weights: [Double](repeating: 1, count: workers))
    }

    /// One range per weight (at most `totalLayers`), in order, with layer counts proportional to
    /// the weights (a worker's memory): every range has at least one layer, and the rounding
    /// gives the leftover layers to the largest remainders, earlier ranges first on ties.
    public init(totalLayers: Int, weights: [Double]) {
        precondition(totalLayers >= 1 && !weights.isEmpty && weights.allSatisfy { $0 > 0 && $0.isFinite })
        let used = Array(weights.prefix(totalLayers))
        let sum = used.reduce(0, +)
        let quotas = used.map { Double(totalLayers) * $0 / sum }
        var sizes = quotas.map { max(1, Int($0.rounded(.down))) }
        let byRemainder = quotas.indices.sorted {
            let (a, b) = (quotas[$0] - quotas[$0].rounded(.down), quotas[$1] - quotas[$1].rounded(.down))
            return a != b ? a > b : $0 < $1
        }
        var cursor = 0
        while sizes.reduce(0, +) < totalLayers {
            sizes[byRemainder[cursor % byRemainder.count]] += 1
            cursor += 1
        }
        // The one-layer minimum can overshoot: take back from the ranges furthest above their quota.
        while sizes.reduce(0, +) > totalLayers {
            let index = sizes.indices.filter { sizes[$0] > 1 }.max {
                Double(sizes[$0]) - quotas[$0] < Double(sizes[$1]) - quotas[$1]
            }!
            sizes[index] -= 1
        }
        var ranges: [Range<Int>] = []
        var start = 0
        for size in sizes {
            ranges.append(start..<(start + size))
            start += size
        }
        self.ranges = ranges
    }

    /// The original's default worker count from the model name's size label (`…-1B-…`):
    /// < 4B → 1, ≤ 8B → 2, ≤ 32B → 4, larger → 8; no label → 1.
    public static func defaultWorkers(modelName: String) -> Int {
        guard let billions = sizeLabel(in: modelName) else { return 1 }
        switch billions {
        case ..<4: return 1
        case ...8: return 2
        case ...32: return 4
        default: return 8
        }
    }

    /// The parameter count in billions named in a model name (`Llama-3.2-1B-Instruct` → 1,
    /// `Qwen2-0.5B` → 0.5, `SmolLM2-135M` → 0.135).
    static func sizeLabel(in name: String) -> Double? {
        let characters = Array(name.uppercased())
        var index = 0
        while index < characters.count {
            guard characters[index].isNumber, index == 0 || !characters[index - 1].isLetter else {
                index += 1
                continue
            }
            var end = index
            while end < characters.count, characters[end].isNumber || characters[end] == "." { end += 1 }
            if end < characters.count, let value = Double(String(characters[index..<end])) {
                let followedBySeparator = end + 1 >= characters.count || !characters[end + 1].isLetter
                if characters[end] == "B", followedBySeparator { return value }
                if characters[end] == "M", followedBySeparator { return value / 1000 }
            }
            index = end
        }
        return nil
    }
}
