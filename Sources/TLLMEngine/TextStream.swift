import TLLMTokenizer

/// Turns a completion's tokens into text deltas, holding back any text that could still be the
/// beginning of a stop string, so that a stop string split across tokens is never emitted in part.
///
/// Works on UTF-8 bytes: the incremental decoder only releases complete characters, and a match of
/// a (valid UTF-8) stop string can only start at a character boundary, so every delta is valid text.
struct TextStream {
    private var decoder: IncrementalDecoder
    private let stops: [[UInt8]]
    private let longestStop: Int
    private var pending: [UInt8] = []

    /// Special tokens are left out of the text, except those in `keeping` (a thinking model's
    /// reasoning tags, which the API layer splits on; see ``ReasoningSplitter``).
    init(tokenizer: Tokenizer, stopStrings: [String], keeping: Set<Int32> = []) {
        decoder = tokenizer.makeIncrementalDecoder(skipSpecialTokens: true, keeping: keeping)
        stops = stopStrings.filter { !$0.isEmpty }.map { Array($0.utf8) }
        longestStop = stops.map(\.count).max() ?? 0
    }

    /// Adds a token; returns the text that can be released and whether a stop string was found
    /// (then the text ends right before it and the stream is done).
    mutating func append(_ token: Int32) -> (text: String, stopped: Bool) {
        pending.append(contentsOf: decoder.append(token).utf8)
        return release(final: false)
    }

    /// The held-back rest at the end of the completion (a stop string may still end it).
    mutating func finish() -> (text: String, stopped: Bool) {
        pending.append(contentsOf: decoder.flush().utf8)
        return release(final: true)
    }

    private mutating func release(final: Bool) -> (text: String, stopped: Bool) {
        if let match = earliestStop() {
            let text = String(decoding: pending[..<match], as: UTF8.self)
            pending.removeAll()
            return (text, true)
        }
        let keep = final ? 0 : heldBackLength()
        let text = String(decoding: pending[..<(pending.count - keep)], as: UTF8.self)
        pending.removeFirst(pending.count - keep)
        return (text, false)
    }

    /// Offset of the first occurrence of any stop string in `pending`.
    private func earliestStop() -> Int? {
        guard !stops.isEmpty, !pending.isEmpty else { return nil }
        var best: Int?
        for stop in stops where stop.count <= pending.count {
            var start = 0
            while start + stop.count <= pending.count, start < (best ?? Int.max) {
                if pending[start] == stop[0], pending[start..<(start + stop.count)].elementsEqual(stop) {
                    best = start
                    break
                }
                start += 1
            }
        }
        return best
    }

    /// The longest suffix of `pending` that is a proper prefix of some stop string.
    private func heldBackLength() -> Int {
        var length = min(pending.count, longestStop - 1)
        while length > 0 {
            let suffix = pending[(pending.count - length)...]
            if stops.contains(where: { $0.count > length && $0[..<length].elementsEqual(suffix) }) { return length }
            length -= 1
        }
        return 0
    }
}
