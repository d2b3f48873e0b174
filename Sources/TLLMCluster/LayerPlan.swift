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
        precondition(totalLayers >= 1 && workers >= 1)
        let count = min(workers, totalLayers)
        let base = totalLayers / count
        let extra = totalLayers % count
        var ranges: [Range<Int>] = []
        var start = 0
        for index in 0..<count {
            let size = base + (index < extra ? 1 : 0)
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
