import Foundation

/// One generated token's log-probability under the model, and the most likely tokens at its
/// position: from the model's logits before penalties, temperature, filters or grammar.
public struct TokenLogprob: Sendable, Equatable {
    public var token: Int32
    public var logprob: Float
    /// The most likely tokens, most likely first (as many as the request asked for).
    public var top: [(token: Int32, logprob: Float)]

    public init(token: Int32, logprob: Float, top: [(token: Int32, logprob: Float)]) {
        self.token = token
        self.logprob = logprob
        self.top = top
    }

    public static func == (lhs: TokenLogprob, rhs: TokenLogprob) -> Bool {
        lhs.token == rhs.token && lhs.logprob == rhs.logprob && lhs.top.elementsEqual(rhs.top, by: { $0 == $1 })
    }

    /// The log-probability of `token` in `logits` and the `top` most likely tokens (ties: lower
    /// id first). Non-finite logits count as impossible; a row with none finite gives -inf.
    public init(token: Int32, logits: UnsafeBufferPointer<Float>, top count: Int) {
        var maximum = -Float.infinity
        for value in logits where value.isFinite && value > maximum { maximum = value }
        var sum: Double = 0
        if maximum.isFinite {
            for value in logits where value.isFinite { sum += Double(expf(value - maximum)) }
        }
        let normaliser = maximum.isFinite ? maximum + Float(log(sum)) : Float.infinity
        func logprob(_ id: Int) -> Float {
            let value = logits[id]
            return value.isFinite ? value - normaliser : -Float.infinity
        }
        var best: [(token: Int32, logprob: Float)] = []
        if count > 0 {
            best.reserveCapacity(count + 1)
            for index in logits.indices where logits[index].isFinite {
                let value = logits[index]
                if best.count == count, let last = best.last, value - normaliser <= last.logprob { continue }
                var at = best.count
                while at > 0 && best[at - 1].logprob < value - normaliser { at -= 1 }
                best.insert((Int32(index), value - normaliser), at: at)
                if best.count > count { best.removeLast() }
            }
        }
        let index = Int(token)
        self.init(token: token, logprob: logits.indices.contains(index) ? logprob(index) : -.infinity, top: best)
    }
}
