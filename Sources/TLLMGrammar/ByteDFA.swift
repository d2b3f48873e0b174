/// A set of bytes, 256 bits.
struct ByteSet: Hashable, Sendable {
    private var w0: UInt64 = 0
    private var w1: UInt64 = 0
    private var w2: UInt64 = 0
    private var w3: UInt64 = 0

    init() {}

    init(_ bytes: ClosedRange<UInt8>) {
        for byte in bytes { insert(byte) }
    }

    func contains(_ byte: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(byte & 63)
        switch byte >> 6 {
        case 0: return w0 & bit != 0
        case 1: return w1 & bit != 0
        case 2: return w2 & bit != 0
        default: return w3 & bit != 0
        }
    }

    mutating func insert(_ byte: UInt8) {
        let bit = UInt64(1) << UInt64(byte & 63)
        switch byte >> 6 {
        case 0: w0 |= bit
        case 1: w1 |= bit
        case 2: w2 |= bit
        default: w3 |= bit
        }
    }

    mutating func remove(_ byte: UInt8) {
        let bit = ~(UInt64(1) << UInt64(byte & 63))
        switch byte >> 6 {
        case 0: w0 &= bit
        case 1: w1 &= bit
        case 2: w2 &= bit
        default: w3 &= bit
        }
    }

    mutating func formUnion(_ other: ByteSet) {
        w0 |= other.w0
        w1 |= other.w1
        w2 |= other.w2
        w3 |= other.w3
    }

    var count: Int { w0.nonzeroBitCount + w1.nonzeroBitCount + w2.nonzeroBitCount + w3.nonzeroBitCount }
    var isEmpty: Bool { w0 | w1 | w2 | w3 == 0 }
}

/// A deterministic automaton over bytes: the grammar's terminals that are more than a literal
/// (a JSON string, a number, bounded whitespace). State 0 is the start; -1 is dead.
///
/// A DFA may also *count*: a JSON string with `minLength`/`maxLength` is the string's table plus a
/// code point counter. Its states are then `count * baseStateCount + baseState`; every transition
/// out of the counting state (the string body) starts one code point and adds 1 to the count, except
/// the closing byte (the quote), which is allowed only once the count is at least the minimum and
/// leaves the count at 0. No code point may start once the count is at the maximum. Without a maximum
/// the count stops at the minimum (past it, it no longer matters), so the states stay finite. The
/// table is the plain string's, shared (copy on write): a counting DFA costs no table of its own.
struct ByteDFA: Sendable {
    private(set) var transitions: [Int32] = []
    private var accepting: [Bool] = []
    /// The bytes with a transition out of each base state: prunes the trie walk before any work.
    private var baseLiveBytes: [ByteSet] = []
    /// The base state whose transitions start a code point; -1 when the DFA counts nothing.
    private(set) var countingState: Int32 = -1
    private var closingByte: UInt8 = 0
    private(set) var minimumCount: Int32 = 0
    /// -1: no maximum.
    private(set) var maximumCount: Int32 = -1

    /// The states of the table (a counting DFA has these for every count).
    var baseStateCount: Int { accepting.count }
    var isCounting: Bool { countingState >= 0 }

    mutating func addState(accepting isAccepting: Bool) -> Int32 {
        transitions.append(contentsOf: repeatElement(-1, count: 256))
        accepting.append(isAccepting)
        baseLiveBytes.append(ByteSet())
        return Int32(accepting.count - 1)
    }

    mutating func addTransition(from state: Int32, bytes: ClosedRange<UInt8>, to target: Int32) {
        for byte in bytes { addTransition(from: state, byte: byte, to: target) }
    }

    mutating func addTransition(from state: Int32, byte: UInt8, to target: Int32) {
        transitions[Int(state) * 256 + Int(byte)] = target
        baseLiveBytes[Int(state)].insert(byte)
    }

    mutating func addTransitions(from state: Int32, bytes: some Sequence<UInt8>, to target: Int32) {
        for byte in bytes { addTransition(from: state, byte: byte, to: target) }
    }

    /// This DFA with a counter (see the type's documentation): `minimum`...`maximum` (nil: no maximum)
    /// transitions out of `state` other than `closingByte` before `closingByte`.
    func counting(from state: Int32, closedBy closingByte: UInt8, minimum: Int32, maximum: Int32?) -> ByteDFA {
        var dfa = self
        dfa.countingState = state
        dfa.closingByte = closingByte
        dfa.minimumCount = minimum
        dfa.maximumCount = maximum ?? -1
        return dfa
    }

    @inline(__always) func next(_ state: Int32, _ byte: UInt8) -> Int32 {
        if countingState < 0 { return transitions[Int(state) &* 256 &+ Int(byte)] }
        return countedNext(state, byte)
    }

    private func countedNext(_ state: Int32, _ byte: UInt8) -> Int32 {
        let stride = Int32(accepting.count)
        let base = state % stride
        let count = state / stride
        let target = transitions[Int(base) &* 256 &+ Int(byte)]
        guard target >= 0 else { return -1 }
        guard base == countingState else { return count * stride + target }
        if byte == closingByte { return count >= minimumCount ? target : -1 }
        if maximumCount >= 0 { return count < maximumCount ? (count + 1) * stride + target : -1 }
        return Swift.min(count + 1, minimumCount) * stride + target
    }

    @inline(__always) func isAccepting(_ state: Int32) -> Bool {
        countingState < 0 ? accepting[Int(state)] : accepting[Int(state % Int32(accepting.count))]
    }

    /// The bytes with a transition out of `state`.
    @inline(__always) func liveBytes(of state: Int32) -> ByteSet {
        if countingState < 0 { return baseLiveBytes[Int(state)] }
        let stride = Int32(accepting.count)
        let base = state % stride
        var bytes = baseLiveBytes[Int(base)]
        guard base == countingState else { return bytes }
        let count = state / stride
        if count < minimumCount { bytes.remove(closingByte) }
        if maximumCount >= 0 && count >= maximumCount {
            bytes = ByteSet()
            if count >= minimumCount { bytes.insert(closingByte) }
        }
        return bytes
    }

    @inline(__always) func hasOutgoing(_ state: Int32) -> Bool { !liveBytes(of: state).isEmpty }

    /// The smallest state that no byte string of at most `horizon` bytes can tell from `state`: a
    /// key for caches (a token mask looks at most one token ahead). Counts far below the minimum are
    /// all alike, and so are counts between the minimum and `horizon` below the maximum.
    func canonicalState(_ state: Int32, horizon: Int32) -> Int32 {
        guard countingState >= 0 else { return state }
        let stride = Int32(accepting.count)
        let base = state % stride
        let count = state / stride
        // A token makes at most `horizon` counted transitions: farther than that from a bound, the
        // bound cannot be reached within it.
        let farFromMaximum = maximumCount < 0 || Int64(count) + Int64(horizon) < Int64(maximumCount)
        guard farFromMaximum else { return state }
        if Int64(count) + Int64(horizon) < Int64(minimumCount) { return base }
        if count >= minimumCount { return minimumCount * stride + base }
        return state
    }
}

/// The JSON terminals, as byte DFAs.
enum JSONTerminals {
    /// Longest integer part, fraction and exponent a generated number may have: a model cannot
    /// loop on digits, and every integer fits an Int64.
    static let maximumIntegerDigits = 18
    static let maximumFractionDigits = 18
    static let maximumExponentDigits = 3
    /// Whitespace between JSON tokens: nothing, one space, or a newline and at most this many spaces/tabs.
    static let maximumIndent = 20

    private static let hexDigits: [UInt8] = Array("0123456789abcdefABCDEF".utf8)

    /// The state of ``string()`` inside the quotes, between characters: every transition out of it
    /// but the closing quote starts one code point (a raw character, or an escape: a `\u` surrogate
    /// pair is one escape, its low half read from other states).
    static let stringBody: Int32 = 1

    /// A JSON string, quotes included, quotes included: valid UTF-8 only (no overlongs, no surrogates), no raw control
    /// bytes, the JSON escapes, and `\u` surrogates only as a high-low pair.
    static func string() -> ByteDFA {
        var dfa = ByteDFA()
        let start = dfa.addState(accepting: false)
        let body = dfa.addState(accepting: false)
        assert(body == stringBody)
        let done = dfa.addState(accepting: true)
        let escape = dfa.addState(accepting: false)
        let continuation1 = dfa.addState(accepting: false)
        let continuation2 = dfa.addState(accepting: false)
        let continuation3 = dfa.addState(accepting: false)
        let afterE0 = dfa.addState(accepting: false)
        let afterED = dfa.addState(accepting: false)
        let afterF0 = dfa.addState(accepting: false)
        let afterF4 = dfa.addState(accepting: false)
        let hex4 = dfa.addState(accepting: false)  // after `\u`
        let hex3 = dfa.addState(accepting: false)
        let hex2 = dfa.addState(accepting: false)
        let hex1 = dfa.addState(accepting: false)
        let surrogateD = dfa.addState(accepting: false)  // after `\uD`
        let high2 = dfa.addState(accepting: false)  // after `\uD8`..`\uDB`
        let high1 = dfa.addState(accepting: false)
        let highDone = dfa.addState(accepting: false)  // a high surrogate: `\u` and a low one must follow
        let lowBackslash = dfa.addState(accepting: false)
        let lowU = dfa.addState(accepting: false)
        let lowD = dfa.addState(accepting: false)

        dfa.addTransition(from: start, byte: UInt8(ascii: "\""), to: body)
        dfa.addTransition(from: body, bytes: 0x20...0x7F, to: body)
        dfa.addTransition(from: body, byte: UInt8(ascii: "\""), to: done)
        dfa.addTransition(from: body, byte: UInt8(ascii: "\\"), to: escape)
        dfa.addTransition(from: body, bytes: 0xC2...0xDF, to: continuation1)
        dfa.addTransition(from: body, byte: 0xE0, to: afterE0)
        dfa.addTransition(from: body, bytes: 0xE1...0xEC, to: continuation2)
        dfa.addTransition(from: body, byte: 0xED, to: afterED)
        dfa.addTransition(from: body, bytes: 0xEE...0xEF, to: continuation2)
        dfa.addTransition(from: body, byte: 0xF0, to: afterF0)
        dfa.addTransition(from: body, bytes: 0xF1...0xF3, to: continuation3)
        dfa.addTransition(from: body, byte: 0xF4, to: afterF4)
        dfa.addTransition(from: continuation1, bytes: 0x80...0xBF, to: body)
        dfa.addTransition(from: continuation2, bytes: 0x80...0xBF, to: continuation1)
        dfa.addTransition(from: continuation3, bytes: 0x80...0xBF, to: continuation2)
        dfa.addTransition(from: afterE0, bytes: 0xA0...0xBF, to: continuation1)
        dfa.addTransition(from: afterED, bytes: 0x80...0x9F, to: continuation1)
        dfa.addTransition(from: afterF0, bytes: 0x90...0xBF, to: continuation2)
        dfa.addTransition(from: afterF4, bytes: 0x80...0x8F, to: continuation2)
        dfa.addTransitions(from: escape, bytes: "\"\\/bfnrt".utf8, to: body)
        dfa.addTransition(from: escape, byte: UInt8(ascii: "u"), to: hex4)
        dfa.addTransitions(from: hex4, bytes: "0123456789abcefABCEF".utf8, to: hex3)
        dfa.addTransitions(from: hex4, bytes: "dD".utf8, to: surrogateD)
        dfa.addTransitions(from: hex3, bytes: hexDigits, to: hex2)
        dfa.addTransitions(from: hex2, bytes: hexDigits, to: hex1)
        dfa.addTransitions(from: hex1, bytes: hexDigits, to: body)
        dfa.addTransitions(from: surrogateD, bytes: "01234567".utf8, to: hex2)
        dfa.addTransitions(from: surrogateD, bytes: "89abAB".utf8, to: high2)
        dfa.addTransitions(from: high2, bytes: hexDigits, to: high1)
        dfa.addTransitions(from: high1, bytes: hexDigits, to: highDone)
        dfa.addTransition(from: highDone, byte: UInt8(ascii: "\\"), to: lowBackslash)
        dfa.addTransition(from: lowBackslash, byte: UInt8(ascii: "u"), to: lowU)
        dfa.addTransitions(from: lowU, bytes: "dD".utf8, to: lowD)
        dfa.addTransitions(from: lowD, bytes: "cdefCDEF".utf8, to: hex2)
        return dfa
    }

    /// A JSON number (`integerOnly`: `-?(0|[1-9][0-9]*)`), with the digit bounds above.
    static func number(integerOnly: Bool) -> ByteDFA {
        var dfa = ByteDFA()
        let start = dfa.addState(accepting: false)
        let minus = dfa.addState(accepting: false)
        let zero = dfa.addState(accepting: true)
        let integerDigits = (0..<maximumIntegerDigits).map { _ in dfa.addState(accepting: true) }
        dfa.addTransition(from: start, byte: UInt8(ascii: "-"), to: minus)
        for from in [start, minus] {
            dfa.addTransition(from: from, byte: UInt8(ascii: "0"), to: zero)
            dfa.addTransition(from: from, bytes: UInt8(ascii: "1")...UInt8(ascii: "9"), to: integerDigits[0])
        }
        for index in 0..<(maximumIntegerDigits - 1) {
            dfa.addTransition(from: integerDigits[index], bytes: digits, to: integerDigits[index + 1])
        }
        if integerOnly { return dfa }

        let dot = dfa.addState(accepting: false)
        let fractionDigits = (0..<maximumFractionDigits).map { _ in dfa.addState(accepting: true) }
        let exponent = dfa.addState(accepting: false)
        let exponentSign = dfa.addState(accepting: false)
        let exponentDigits = (0..<maximumExponentDigits).map { _ in dfa.addState(accepting: true) }
        for from in [zero] + integerDigits {
            dfa.addTransition(from: from, byte: UInt8(ascii: "."), to: dot)
            dfa.addTransitions(from: from, bytes: "eE".utf8, to: exponent)
        }
        dfa.addTransition(from: dot, bytes: digits, to: fractionDigits[0])
        for index in 0..<maximumFractionDigits {
            if index + 1 < maximumFractionDigits {
                dfa.addTransition(from: fractionDigits[index], bytes: digits, to: fractionDigits[index + 1])
            }
            dfa.addTransitions(from: fractionDigits[index], bytes: "eE".utf8, to: exponent)
        }
        dfa.addTransitions(from: exponent, bytes: "+-".utf8, to: exponentSign)
        for from in [exponent, exponentSign] {
            dfa.addTransition(from: from, bytes: digits, to: exponentDigits[0])
        }
        for index in 0..<(maximumExponentDigits - 1) {
            dfa.addTransition(from: exponentDigits[index], bytes: digits, to: exponentDigits[index + 1])
        }
        return dfa
    }

    /// The JSON integers in `range`, exactly: `-?(0|[1-9][0-9]*)` whose value lies in it (no `-0`).
    ///
    /// A minimal DFA, built breadth-first over digit prefixes: two prefixes are one state when they
    /// allow the same continuations, i.e. when, for each number of digits still to come, the same
    /// interval of suffixes keeps the value in range (Myhill-Nerode). Negative values are `-` and a
    /// magnitude in the range's negative part (from 1: no `-0`); the rest are the non-negative part.
    static func integer(in range: ClosedRange<Int64>) -> ByteDFA {
        var dfa = ByteDFA()
        let start = dfa.addState(accepting: false)
        // Signatures (with the part they belong to) -> state, and a prefix value standing for each state.
        var states: [[UInt64]: Int32] = [:]
        var work: [(state: Int32, prefix: UInt64, low: UInt64, high: UInt64, part: UInt64)] = []
        /// The state after the digits `prefix` of a magnitude in low...high, or -1 (dead).
        func state(prefix: UInt64, low: UInt64, high: UInt64, part: UInt64) -> Int32 {
            let signature = [part] + magnitudeSignature(prefix: prefix, low: low, high: high)
            guard signature.count > 1 else { return -1 }
            if let known = states[signature] { return known }
            // The signature lists (digits to come, lowest suffix, highest suffix); 0 digits to come
            // first when the prefix itself is in range.
            let new = dfa.addState(accepting: signature[1] == 0)
            states[signature] = new
            work.append((new, prefix, low, high, part))
            return new
        }
        if range.upperBound >= 0 {
            let low = UInt64(Swift.max(range.lowerBound, 0))
            let high = UInt64(range.upperBound)
            for digit in UInt64(0)...9 {
                let target = state(prefix: digit, low: low, high: high, part: 0)
                if target >= 0 { dfa.addTransition(from: start, byte: UInt8(ascii: "0") + UInt8(digit), to: target) }
            }
        }
        if range.lowerBound < 0 {
            let minus = dfa.addState(accepting: false)
            dfa.addTransition(from: start, byte: UInt8(ascii: "-"), to: minus)
            let low = range.upperBound < 0 ? range.upperBound.magnitude : 1
            let high = range.lowerBound.magnitude
            for digit in UInt64(0)...9 {
                let target = state(prefix: digit, low: low, high: high, part: 1)
                if target >= 0 { dfa.addTransition(from: minus, byte: UInt8(ascii: "0") + UInt8(digit), to: target) }
            }
        }
        while let (from, prefix, low, high, part) = work.popLast() {
            // "0" takes no more digits: no leading zeros.
            guard prefix > 0 else { continue }
            let (shifted, overflow) = prefix.multipliedReportingOverflow(by: 10)
            guard !overflow else { continue }
            for digit in UInt64(0)...9 {
                let (next, carry) = shifted.addingReportingOverflow(digit)
                guard !carry else { continue }
                let target = state(prefix: next, low: low, high: high, part: part)
                if target >= 0 { dfa.addTransition(from: from, byte: UInt8(ascii: "0") + UInt8(digit), to: target) }
            }
        }
        return dfa
    }

    /// For each number `k` of digits that may still follow the digits `prefix` (no more once the
    /// prefix is 0), the suffixes `s` (k digits, leading zeros allowed) with `prefix * 10^k + s` in
    /// `low...high`, as an interval: `k, lowest, highest` for each non-empty one, `k` increasing.
    static func magnitudeSignature(prefix: UInt64, low: UInt64, high: UInt64) -> [UInt64] {
        var signature: [UInt64] = []
        var scale: UInt64 = 1  // 10^k
        var digits: UInt64 = 0
        while true {
            let (base, overflow) = prefix.multipliedReportingOverflow(by: scale)
            if overflow || base > high { break }
            let lowest = low > base ? low - base : 0
            let highest = Swift.min(high - base, scale - 1)
            if lowest <= highest { signature += [digits, lowest, highest] }
            if prefix == 0 { break }
            let (nextScale, scaleOverflow) = scale.multipliedReportingOverflow(by: 10)
            if scaleOverflow { break }
            scale = nextScale
            digits += 1
        }
        return signature
    }

    /// Whitespace between JSON tokens: "", " ", or "\n" followed by at most ``maximumIndent`` spaces or tabs.
    static func whitespace() -> ByteDFA {
        var dfa = ByteDFA()
        let start = dfa.addState(accepting: true)
        let space = dfa.addState(accepting: true)
        let indents = (0...maximumIndent).map { _ in dfa.addState(accepting: true) }
        dfa.addTransition(from: start, byte: UInt8(ascii: " "), to: space)
        dfa.addTransition(from: start, byte: UInt8(ascii: "\n"), to: indents[0])
        for index in 0..<maximumIndent {
            dfa.addTransitions(from: indents[index], bytes: " \t".utf8, to: indents[index + 1])
        }
        return dfa
    }

    private static let digits: ClosedRange<UInt8> = UInt8(ascii: "0")...UInt8(ascii: "9")
}
