/// One element of a rule's alternative. Alternatives are stored end to end in one array, each
/// closed by ``end``; a stack frame points at the element it is about to match.
enum GrammarElement: Sendable, Equatable {
    /// `count` bytes of ``GrammarProgram/literalBytes`` from `start`; frame state = bytes matched.
    case literal(start: Int32, count: Int32)
    /// A byte DFA of ``GrammarProgram/dfas``; frame state = the DFA's state.
    case dfa(Int32)
    /// Another rule: one of its alternatives.
    case call(Int32)
    /// `item` `min` to `max` (-1: unbounded) times, `separator` (a rule, -1: none) between;
    /// frame state = items done (clamped once it no longer matters).
    case `repeat`(item: Int32, separator: Int32, min: Int32, max: Int32)
    /// The alternative is complete: return to the caller.
    case end
}

/// Where one stack of the pushdown automaton is: an element and that element's own state.
struct Frame: Hashable, Sendable {
    var element: Int32
    var state: Int32
}

/// The compiled grammar: rules, terminals, and the automaton's moves over them.
///
/// A matcher's position is a set of stacks of ``Frame``s (several when the grammar is ambiguous so
/// far). Stacks are kept *expanded*: every stack's top frame sits on a terminal that can take a byte,
/// and a stack that has finished the whole grammar is empty. ``expand(_:into:)`` does that closure,
/// ``advance(_:byte:)`` moves every stack over one byte.
struct GrammarProgram: Sendable {
    var elements: [GrammarElement]
    /// For each rule, the element index where each of its alternatives starts.
    var rules: [[Int32]]
    var literalBytes: [UInt8]
    var dfas: [ByteDFA]
    /// The stacks before any output, expanded.
    var initialStacks: [[Frame]] = []

    /// Stacks deeper than this are dropped (only recursive schemas get there).
    static let maximumStackDepth = 1024
    /// Closure steps per expansion before giving up on the rest (a guard; real grammars use far fewer).
    static let maximumExpansionSteps = 100_000

    /// The next byte a leaf frame (top of an expanded stack) accepts.
    @inline(__always) func nextBytes(of frame: Frame) -> ByteSet {
        switch elements[Int(frame.element)] {
        case .literal(let start, _):
            var set = ByteSet()
            set.insert(literalBytes[Int(start + frame.state)])
            return set
        case .dfa(let index):
            return dfas[Int(index)].liveBytes(of: frame.state)
        default:
            return ByteSet()
        }
    }

    /// The first bytes any of `stacks` accepts.
    func nextBytes(of stacks: [[Frame]]) -> ByteSet {
        var set = ByteSet()
        for stack in stacks {
            if let top = stack.last { set.formUnion(nextBytes(of: top)) }
        }
        return set
    }

    /// Moves past the top frame's element (which has matched); returns from finished alternatives.
    @inline(__always) func stepPast(_ stack: inout [Frame]) {
        stack[stack.count - 1] = Frame(element: stack[stack.count - 1].element + 1, state: 0)
        while let top = stack.last, elements[Int(top.element)] == .end { stack.removeLast() }
    }

    /// Adds to `result` every expanded stack `seeds` lead to without consuming a byte.
    func expand(_ seeds: [[Frame]], into result: inout Set<[Frame]>) {
        var work = seeds
        var seen = Set<[Frame]>()
        var steps = 0
        while let stack = work.popLast() {
            steps += 1
            if steps > Self.maximumExpansionSteps { break }
            guard let top = stack.last else {
                result.insert(stack)
                continue
            }
            if stack.count > Self.maximumStackDepth { continue }
            switch elements[Int(top.element)] {
            case .literal(_, let count):
                if top.state < count {
                    result.insert(stack)
                } else {
                    var next = stack
                    stepPast(&next)
                    if seen.insert(next).inserted { work.append(next) }
                }
            case .dfa(let index):
                let dfa = dfas[Int(index)]
                if dfa.hasOutgoing(top.state) { result.insert(stack) }
                if dfa.isAccepting(top.state) {
                    var next = stack
                    stepPast(&next)
                    if seen.insert(next).inserted { work.append(next) }
                }
            case .call(let rule):
                var caller = stack
                stepPast(&caller)
                for start in rules[Int(rule)] {
                    var next = caller
                    next.append(Frame(element: start, state: 0))
                    if seen.insert(next).inserted { work.append(next) }
                }
            case .repeat(let item, let separator, let minimum, let maximum):
                let done = top.state
                if done >= minimum {
                    var next = stack
                    stepPast(&next)
                    if seen.insert(next).inserted { work.append(next) }
                }
                if maximum < 0 || done < maximum {
                    var caller = stack
                    // Past `min` an unbounded repeat only needs to know that some item came (for the
                    // separator): clamping keeps the state space finite.
                    let counted = maximum < 0 ? Swift.min(done + 1, Swift.max(minimum, 1)) : done + 1
                    caller[caller.count - 1].state = counted
                    let separators = (done > 0 && separator >= 0) ? rules[Int(separator)] : [-1]
                    for start in rules[Int(item)] {
                        for separatorStart in separators {
                            var next = caller
                            next.append(Frame(element: start, state: 0))
                            if separatorStart >= 0 { next.append(Frame(element: separatorStart, state: 0)) }
                            if seen.insert(next).inserted { work.append(next) }
                        }
                    }
                }
            case .end:
                var next = stack
                next.removeLast()
                while let top = next.last, elements[Int(top.element)] == .end { next.removeLast() }
                if seen.insert(next).inserted { work.append(next) }
            }
        }
    }

    /// Every expanded stack reachable from `stacks` by consuming `byte`; empty if none can take it.
    func advance(_ stacks: some Collection<[Frame]>, byte: UInt8) -> Set<[Frame]> {
        var seeds: [[Frame]] = []
        for stack in stacks {
            guard let top = stack.last else { continue }
            switch elements[Int(top.element)] {
            case .literal(let start, let count):
                guard literalBytes[Int(start + top.state)] == byte else { continue }
                var next = stack
                next[next.count - 1].state += 1
                if top.state + 1 == count { stepPast(&next) }
                seeds.append(next)
            case .dfa(let index):
                let target = dfas[Int(index)].next(top.state, byte)
                guard target >= 0 else { continue }
                var next = stack
                next[next.count - 1].state = target
                seeds.append(next)
            default:
                continue
            }
        }
        var result = Set<[Frame]>()
        if !seeds.isEmpty { expand(seeds, into: &result) }
        return result
    }
}
