/// Builds a ``GrammarProgram``: rules are declared (so recursive references work), then given their
/// alternatives; ``finish(root:)`` drops what can never complete and refuses what cannot be run.
struct GrammarBuilder {
    private(set) var elements: [GrammarElement] = []
    private(set) var rules: [[Int32]] = []
    private(set) var literalBytes: [UInt8] = []
    private var literalPositions: [[UInt8]: Int32] = [:]
    private(set) var dfas: [ByteDFA] = []
    /// The DFAs made for `minLength`/`maxLength` (max -1: none) and for integer ranges, for reuse.
    private var stringDFAs: [[Int32]: Int32] = [:]
    private var integerDFAs: [ClosedRange<Int64>: Int32] = [:]
    /// States of the integer-range DFAs so far (each has its own 1 KiB-per-state table).
    private var integerRangeStates = 0

    /// The shared JSON terminals.
    let jsonString: Int32 = 0
    let jsonNumber: Int32 = 1
    let jsonInteger: Int32 = 2
    let jsonWhitespace: Int32 = 3

    /// The bytes all literals may take together.
    static let maximumLiteralBytes = 4 << 20
    /// The states all integer-range DFAs may have together (a table of 1 KiB each).
    static let maximumIntegerRangeStates = 16_384

    init() {
        dfas = [
            JSONTerminals.string(), JSONTerminals.number(integerOnly: false), JSONTerminals.number(integerOnly: true),
            JSONTerminals.whitespace(),
        ]
    }

    var whitespace: GrammarElement { .dfa(jsonWhitespace) }

    /// A JSON string of `minimum` to `maximum` (nil: any number of) code points, as JSON Schema's
    /// `minLength`/`maxLength` count them (an escape is one, a `\u` surrogate pair is one). The DFA
    /// shares the plain string's table and counts in its state.
    mutating func string(minimumLength minimum: Int, maximumLength maximum: Int?) -> Int32 {
        if minimum == 0 && maximum == nil { return jsonString }
        let key = [Int32(minimum), Int32(maximum ?? -1)]
        if let known = stringDFAs[key] { return known }
        dfas.append(
            dfas[Int(jsonString)].counting(
                from: JSONTerminals.stringBody, closedBy: UInt8(ascii: "\""), minimum: Int32(minimum),
                maximum: maximum.map { Int32($0) }))
        stringDFAs[key] = Int32(dfas.count - 1)
        return Int32(dfas.count - 1)
    }

    /// The JSON integers in `range`, exactly (see ``JSONTerminals/integer(in:)``); nil once the
    /// integer ranges of the grammar have too many states together.
    mutating func integer(in range: ClosedRange<Int64>) -> Int32? {
        if let known = integerDFAs[range] { return known }
        let dfa = JSONTerminals.integer(in: range)
        guard integerRangeStates + dfa.baseStateCount <= Self.maximumIntegerRangeStates else { return nil }
        integerRangeStates += dfa.baseStateCount
        dfas.append(dfa)
        integerDFAs[range] = Int32(dfas.count - 1)
        return Int32(dfas.count - 1)
    }

    /// A new rule with no alternatives yet.
    mutating func declareRule() throws(GrammarError) -> Int32 {
        guard rules.count < Grammar.maximumElements else { throw Self.tooLarge() }
        rules.append([])
        return Int32(rules.count - 1)
    }

    /// Gives `rule` its alternatives (each a sequence of elements; an empty sequence matches nothing).
    mutating func define(_ rule: Int32, _ alternatives: [[GrammarElement]]) throws(GrammarError) {
        var starts: [Int32] = []
        for alternative in alternatives {
            guard elements.count + alternative.count + 1 <= Grammar.maximumElements else { throw Self.tooLarge() }
            starts.append(Int32(elements.count))
            elements.append(contentsOf: alternative)
            elements.append(.end)
        }
        rules[Int(rule)] = starts
    }

    /// A new rule with these alternatives.
    mutating func rule(_ alternatives: [[GrammarElement]]) throws(GrammarError) -> Int32 {
        let rule = try declareRule()
        try define(rule, alternatives)
        return rule
    }

    /// A call of a new rule with these alternatives, or the alternative itself when there is one.
    mutating func choice(_ alternatives: [[GrammarElement]]) throws(GrammarError) -> [GrammarElement] {
        if alternatives.count == 1 { return alternatives[0] }
        return [.call(try rule(alternatives))]
    }

    /// These bytes exactly (nothing for an empty string).
    mutating func literal(_ bytes: [UInt8]) throws(GrammarError) -> [GrammarElement] {
        if bytes.isEmpty { return [] }
        if let start = literalPositions[bytes] { return [.literal(start: start, count: Int32(bytes.count))] }
        guard literalBytes.count + bytes.count <= Self.maximumLiteralBytes else { throw Self.tooLarge() }
        let start = Int32(literalBytes.count)
        literalBytes.append(contentsOf: bytes)
        literalPositions[bytes] = start
        return [.literal(start: start, count: Int32(bytes.count))]
    }

    mutating func literal(_ text: String) throws(GrammarError) -> [GrammarElement] {
        try literal(Array(text.utf8))
    }

    static func tooLarge() -> GrammarError {
        GrammarError(
            path: "", keyword: nil,
            message: "the grammar is too large (more than \(Grammar.maximumElements) elements or 4 MiB of literals)")
    }

    // MARK: - Finishing

    /// The program with `root` as its start: unproductive alternatives removed, refused if the root
    /// can produce nothing or a rule can call itself before consuming a byte.
    func finish(root: Int32) throws(GrammarError) -> GrammarProgram {
        var program = GrammarProgram(elements: elements, rules: rules, literalBytes: literalBytes, dfas: dfas)
        let productive = fixpoint { element in
            switch element {
            case .literal, .dfa, .end: return .yes
            case .call(let rule): return .ifRule(rule)
            case .repeat(let item, _, let minimum, _): return minimum == 0 ? .yes : .ifRule(item)
            }
        }
        guard productive[Int(root)] else {
            throw GrammarError(path: "", keyword: nil, message: "the schema admits no value at all")
        }
        for rule in program.rules.indices {
            program.rules[rule] = program.rules[rule].filter { isAlternative($0, allOf: productive) }
        }
        let nullable = fixpoint { element in
            switch element {
            case .literal: return .no
            case .dfa(let index): return dfas[Int(index)].isAccepting(0) ? .yes : .no
            case .end: return .yes
            case .call(let rule): return .ifRule(rule)
            case .repeat(let item, _, let minimum, _): return minimum == 0 ? .yes : .ifRule(item)
            }
        }
        try checkRepeats(program, nullable: nullable)
        try checkLeftRecursion(program, nullable: nullable)
        var initial = Set<[Frame]>()
        program.expand(program.rules[Int(root)].map { [Frame(element: $0, state: 0)] }, into: &initial)
        program.initialStacks = Array(initial)
        return program
    }

    private enum ElementProperty {
        case yes, no
        case ifRule(Int32)
    }

    private func isAlternative(_ start: Int32, allOf property: [Bool]) -> Bool {
        var index = Int(start)
        while elements[index] != .end {
            switch elements[index] {
            case .call(let rule) where !property[Int(rule)]: return false
            case .repeat(let item, _, let minimum, _) where minimum > 0 && !property[Int(item)]: return false
            default: break
            }
            index += 1
        }
        return true
    }

    /// Which rules have an alternative whose every element has the property: a worklist fixpoint,
    /// linear in the grammar's size.
    private func fixpoint(_ property: (GrammarElement) -> ElementProperty) -> [Bool] {
        var result = [Bool](repeating: false, count: rules.count)
        // For each alternative: its rule and how many elements still wait on a rule.
        var pending: [Int] = []
        var alternativeRule: [Int32] = []
        var waiters = [[Int]](repeating: [], count: rules.count)
        var ready: [Int32] = []
        for (rule, starts) in rules.enumerated() {
            for start in starts {
                let alternative = pending.count
                var waiting = 0
                var impossible = false
                var index = Int(start)
                while elements[index] != .end {
                    switch property(elements[index]) {
                    case .yes: break
                    case .no: impossible = true
                    case .ifRule(let other):
                        waiting += 1
                        waiters[Int(other)].append(alternative)
                    }
                    index += 1
                }
                pending.append(impossible ? Int.max : waiting)
                alternativeRule.append(Int32(rule))
                if !impossible && waiting == 0 { ready.append(Int32(rule)) }
            }
        }
        while let rule = ready.popLast() {
            if result[Int(rule)] { continue }
            result[Int(rule)] = true
            for alternative in waiters[Int(rule)] where pending[alternative] != Int.max {
                pending[alternative] -= 1
                if pending[alternative] == 0 { ready.append(alternativeRule[alternative]) }
            }
        }
        return result
    }

    /// A repeated item that can match nothing would let the automaton loop without output.
    private func checkRepeats(_ program: GrammarProgram, nullable: [Bool]) throws(GrammarError) {
        for element in program.elements {
            if case .repeat(let item, _, _, _) = element, nullable[Int(item)] {
                throw GrammarError(
                    path: "", keyword: nil, message: "a repeated expression must not match the empty string")
            }
        }
    }

    /// Refuses a rule that reaches itself before consuming a byte (`{"$ref": "#"}`): the automaton
    /// would grow its stack forever.
    private func checkLeftRecursion(_ program: GrammarProgram, nullable: [Bool]) throws(GrammarError) {
        // Edges: rule -> rules it may call before any byte.
        var edges = [[Int32]](repeating: [], count: program.rules.count)
        for (rule, starts) in program.rules.enumerated() {
            for start in starts {
                var index = Int(start)
                scan: while true {
                    switch program.elements[index] {
                    case .end: break scan
                    case .literal: break scan
                    case .dfa(let dfa):
                        if !dfas[Int(dfa)].isAccepting(0) { break scan }
                    case .call(let callee):
                        edges[rule].append(callee)
                        if !nullable[Int(callee)] { break scan }
                    case .repeat(let item, _, let minimum, _):
                        edges[rule].append(item)
                        if minimum > 0 && !nullable[Int(item)] { break scan }
                    }
                    index += 1
                }
            }
        }
        // Iterative depth-first search for a cycle (0 = new, 1 = on the path, 2 = done).
        var color = [UInt8](repeating: 0, count: program.rules.count)
        for origin in 0..<program.rules.count where color[origin] == 0 {
            var path: [(rule: Int, next: Int)] = [(origin, 0)]
            color[origin] = 1
            while let (rule, next) = path.last {
                if next < edges[rule].count {
                    path[path.count - 1].next += 1
                    let callee = Int(edges[rule][next])
                    if color[callee] == 1 {
                        throw GrammarError(
                            path: "", keyword: "$ref",
                            message: "the grammar refers to itself without producing output (a reference loop)")
                    }
                    if color[callee] == 0 {
                        color[callee] = 1
                        path.append((callee, 0))
                    }
                } else {
                    color[rule] = 2
                    path.removeLast()
                }
            }
        }
    }
}
