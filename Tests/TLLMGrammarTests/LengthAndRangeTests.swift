import TLLMChatTemplate
import Testing

@testable import TLLMGrammar

/// `minLength`/`maxLength` on strings and `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`
/// on integers: enforced by the grammar, exactly.
@Suite struct LengthAndRangeTests {
    private func check(_ grammar: Grammar, accepts good: [String], rejects bad: [String]) {
        for text in good { #expect(matches(grammar, text), "should accept \(text)") }
        for text in bad { #expect(!matches(grammar, text), "should reject \(text)") }
    }

    private func refusal(_ json: String) throws -> GrammarError? {
        let schema = try TemplateValue(jsonString: json)
        return #expect(throws: GrammarError.self) { try Grammar(.jsonSchema(schema)) }
    }

    /// `text` quoted as a JSON string, raw (UTF-8 as is).
    private func quoted(_ text: String) -> String { "\"" + text + "\"" }

    // MARK: - String lengths

    @Test func lengthsCountCodePointsOfTheDecodedString() throws {
        let grammar = try schemaGrammar(#"{"type": "string", "minLength": 2, "maxLength": 4}"#)
        check(
            grammar,
            accepts: [
                quoted("ab"), quoted("abcd"), #""a\n""#, #""\"\\""#, #""\u00e9\u00e9\u00e9""#, #""\ud83d\ude00x""#,
                quoted("éé"), quoted("日本語!"), quoted("😀😀😀😀"), #""\ud83d\ude00\ud83d\ude00\uD83D\uDE00\ud83d\ude00""#,
                #""\/\b\f\r""#, quoted("é\\t😀"),
            ],
            rejects: [
                // min - 1
                quoted("a"), #""\n""#, quoted("😀"), #""\ud83d\ude00""#, #""\u00e9""#, quoted("é"), quoted(""),
                // max + 1
                quoted("abcde"), #""a\nb\tc""#, quoted("😀😀😀😀😀"), #""\u00e9\u00e9\u00e9\u00e9\u00e9""#,
                #""\ud83d\ude00\ud83d\ude00\ud83d\ude00\ud83d\ude00x""#, quoted("日本語!!"), quoted("ééééé"),
            ])
        // Bytes: a raw 4-byte character counts once, also next to escapes.
        #expect(matches(grammar, [0x22, 0xF0, 0x9F, 0x98, 0x80, 0x5C, 0x6E, 0x22]))
        #expect(!matches(grammar, [0x22, 0xF0, 0x9F, 0x98, 0x80, 0x22]))
    }

    @Test func exactAndOneSidedLengths() throws {
        check(
            try schemaGrammar(#"{"type": "string", "maxLength": 0}"#), accepts: [quoted("")],
            rejects: [quoted("a"), #""\n""#, quoted("é")])
        check(
            try schemaGrammar(#"{"type": "string", "minLength": 3, "maxLength": 3}"#),
            accepts: [quoted("abc"), #""\u0041\n😀""#], rejects: [quoted("ab"), quoted("abcd")])
        check(
            try schemaGrammar(#"{"type": "string", "minLength": 3}"#),
            accepts: [quoted("abc"), quoted(String(repeating: "é", count: 500)), #""\\\\\\""#],
            rejects: [quoted("ab"), #""\\\\""#, quoted("")])
        check(
            try schemaGrammar(#"{"type": "string", "maxLength": 2}"#),
            accepts: [quoted(""), quoted("a"), quoted("ab")],
            rejects: [quoted("abc"), #""\\\\\\""#])
        check(
            try schemaGrammar(#"{"type": "string", "minLength": 0, "maxLength": 1.0}"#), accepts: [quoted("x")],
            rejects: [quoted("xy")])
        // Without a type, length keywords mean a string.
        check(
            try schemaGrammar(#"{"minLength": 1, "maxLength": 2}"#), accepts: [quoted("a")],
            rejects: [quoted(""), "1", "null"])
        // Lengths do not constrain other types (and other types' bounds do not constrain strings).
        check(
            try schemaGrammar(#"{"type": ["string", "null", "integer"], "maxLength": 1, "minimum": 5}"#),
            accepts: [quoted("a"), "null", "5", "123"], rejects: [quoted("ab"), "4"])
        check(
            try schemaGrammar(#"{"type": "string", "minimum": 5, "maximum": 1}"#), accepts: [quoted("anything")],
            rejects: ["3"])
    }

    @Test func longLengthBounds() throws {
        let grammar = try schemaGrammar(#"{"type": "string", "minLength": 10000, "maxLength": 10000}"#)
        check(
            grammar, accepts: [quoted(String(repeating: "é", count: 10_000))],
            rejects: [quoted(String(repeating: "é", count: 9_999)), quoted(String(repeating: "é", count: 10_001))])
        let escaped = String(repeating: #"\u00e9"#, count: 9_999) + "😀"
        #expect(matches(grammar, quoted(escaped)))
        _ = try schemaGrammar(#"{"type": "string", "minLength": 100000, "maxLength": 100000}"#)
    }

    @Test func lengthsInsideObjectsArraysAndAlternatives() throws {
        let grammar = try schemaGrammar(
            #"{"type": "object", "properties": {"code": {"type": "string", "minLength": 2, "maxLength": 3}, "tags": {"type": "array", "items": {"type": "string", "maxLength": 1}}, "any": {"anyOf": [{"type": "string", "minLength": 4}, {"type": "string", "maxLength": 1}]}}, "required": ["code"]}"#
        )
        check(
            grammar,
            accepts: [
                #"{"code": "ab"}"#, #"{"code": "abc", "tags": ["a", "", "é"]}"#, #"{"code": "ab", "any": "x"}"#,
                #"{"code": "ab", "any": "wxyz"}"#, #"{"code": "ab", "any": ""}"#,
            ],
            rejects: [
                #"{"code": "a"}"#, #"{"code": "abcd"}"#, #"{"code": "ab", "tags": ["ab"]}"#,
                #"{"code": "ab", "any": "xy"}"#, #"{"code": "ab", "any": "xyz"}"#,
            ])
    }

    /// Random strings of every kind of character, raw and escaped, against several bounds.
    @Test func randomStringsAgreeWithACount() throws {
        let units: [String] = [
            "a", " ", "~", "\u{7F}", "é", "日", "😀", #"\n"#, #"\""#, #"\\"#, #"\/"#, #"\u0041"#, #"\u00E9"#,
            #"\ud83d\ude00"#, #"\uDBFF\uDFFF"#, "\u{10FFFF}",
        ]
        var random = SplitMix64(state: 42)
        for (minimum, maximum) in [(0, 3), (1, 1), (2, 5), (5, 5), (3, nil), (0, 7)] as [(Int, Int?)] {
            let bounds =
                ["\"type\": \"string\"", "\"minLength\": \(minimum)"] + (maximum.map { ["\"maxLength\": \($0)"] } ?? [])
            let grammar = try schemaGrammar("{" + bounds.joined(separator: ", ") + "}")
            for _ in 0..<150 {
                let count = Int.random(in: 0...9, using: &random)
                let text = (0..<count).map { _ in units[Int.random(in: 0..<units.count, using: &random)] }.joined()
                let expected = count >= minimum && count <= (maximum ?? .max)
                #expect(
                    matches(grammar, quoted(text)) == expected,
                    "\(text) with \(minimum)...\(String(describing: maximum))")
            }
        }
    }

    /// The mask over a vocabulary of multi-byte pieces agrees with `accept`, token by token, all along
    /// bounded strings: the cache keys (made canonical across counts) keep it exact.
    @Test func maskAgreesWithAcceptInsideBoundedStrings() throws {
        let pieces = [
            "\"", "a", "aa", "aaaa", "a\"", "aa\"", "\",", "é", "éé", #"\n"#, #"\u00e9"#, #"\ud83d"#, #"\ude00"#,
            #"\ud83d\ude00"#, "😀", "😀\"", "}", "{\"s\":", "{\"s\": \"", "\"}", "\", \"t\": \"", ", \"t\": ", "aaaaaaaa",
            "b\"}", "\\", "u", "00", "e9", "de", "d", " ", "t", ":", ",", "s", "{",
        ]
        let vocabulary = TokenVocabulary(tokenBytes: pieces.map { Array($0.utf8) })
        let schemas = [
            #"{"type": "object", "properties": {"s": {"type": "string", "minLength": 12, "maxLength": 30}, "t": {"type": "string", "maxLength": 2}}, "required": ["s"]}"#,
            #"{"type": "object", "properties": {"s": {"type": "string", "minLength": 25}}, "required": ["s"]}"#,
        ]
        var random = SplitMix64(state: 7)
        var finished = 0
        for schema in schemas {
            let grammar = try schemaGrammar(schema)
            for _ in 0..<12 {
                var matcher = GrammarMatcher(grammar: grammar, vocabulary: vocabulary, endTokens: [])
                var output = ""
                // Once the output must end, the row is left alone (no end tokens here): stop before.
                for _ in 0..<80 where !matcher.mustEnd {
                    var logits = [Float](repeating: 0, count: vocabulary.count)
                    logits.withUnsafeMutableBufferPointer { matcher.mask($0) }
                    // A piece the vocabulary lacks (e.g. half a surrogate escape): the row is left alone.
                    if matcher.isAtDeadEnd { break }
                    var allowed: [Int32] = []
                    for token in 0..<Int32(vocabulary.count) {
                        var copy = matcher
                        let accepted = copy.accept(token)
                        #expect(accepted == (logits[Int(token)] == 0), "token \(pieces[Int(token)]) after \(output)")
                        if accepted { allowed.append(token) }
                    }
                    if allowed.isEmpty { break }
                    let token = allowed[Int.random(in: 0..<allowed.count, using: &random)]
                    _ = matcher.accept(token)
                    output += pieces[Int(token)]
                }
                if matcher.mustEnd { finished += 1 }
            }
        }
        #expect(finished >= 6, "only \(finished) of 24 outputs finished")
    }

    @Test func canonicalStatesOnlyMergeCountsATokenCannotTellApart() {
        let base = JSONTerminals.string()
        let stride = Int32(base.baseStateCount)
        let body = JSONTerminals.stringBody
        let bounded = base.counting(from: body, closedBy: UInt8(ascii: "\""), minimum: 10, maximum: 40)
        // Horizon 4: counts 0...5 look alike (10 needs more than 4 more), 10...35 too; the rest are kept.
        for count: Int32 in 0...5 { #expect(bounded.canonicalState(count * stride + body, horizon: 4) == body) }
        for count: Int32 in 6...9 {
            #expect(bounded.canonicalState(count * stride + body, horizon: 4) == count * stride + body)
        }
        for count: Int32 in 10...35 {
            #expect(bounded.canonicalState(count * stride + body, horizon: 4) == 10 * stride + body)
        }
        for count: Int32 in 36...40 {
            #expect(bounded.canonicalState(count * stride + body, horizon: 4) == count * stride + body)
        }
        let open = base.counting(from: body, closedBy: UInt8(ascii: "\""), minimum: 10, maximum: nil)
        #expect(open.canonicalState(10 * stride + body, horizon: 4) == 10 * stride + body)
        #expect(open.canonicalState(3 * stride + body, horizon: 4) == body)
        #expect(base.canonicalState(body, horizon: 4) == body)
    }

    // MARK: - Integer ranges

    @Test func integerRanges() throws {
        check(
            try schemaGrammar(#"{"type": "integer", "minimum": -5, "maximum": 5}"#),
            accepts: ["-5", "-1", "0", "1", "5"],
            rejects: ["-6", "6", "-0", "05", "-05", "-", "", "10", "-10", "1.0", "+1", "00"])
        check(
            try schemaGrammar(#"{"type": "integer", "minimum": 7, "maximum": 7}"#), accepts: ["7"],
            rejects: ["6", "8", "70", "-7", "07"])
        check(
            try schemaGrammar(#"{"type": "integer", "minimum": -7, "maximum": -7}"#), accepts: ["-7"],
            rejects: ["7", "-70", "-6", "-8"])
        check(
            try schemaGrammar(#"{"type": "integer", "minimum": 0, "maximum": 0}"#), accepts: ["0"],
            rejects: ["-0", "00", "1"])
        check(
            try schemaGrammar(#"{"type": "integer", "minimum": -12, "maximum": 345}"#),
            accepts: ["-12", "-10", "-9", "0", "9", "10", "99", "100", "299", "339", "345"],
            rejects: ["-13", "-20", "-100", "346", "350", "400", "1000", "-0"])
        check(
            try schemaGrammar(#"{"type": "integer", "minimum": -100, "maximum": -10}"#),
            accepts: ["-10", "-55", "-99", "-100"], rejects: ["-9", "-101", "-1000", "10", "0", "-0"])
        check(
            try schemaGrammar(#"{"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}"#),
            accepts: ["1", "9"], rejects: ["0", "10", "-1"])
        check(
            try schemaGrammar(#"{"type": "integer", "minimum": 1.5, "maximum": 3.5}"#), accepts: ["2", "3"],
            rejects: ["1", "4"])
        check(
            try schemaGrammar(#"{"type": "integer", "exclusiveMinimum": 1.0, "maximum": 3e0}"#),
            accepts: ["2", "3"], rejects: ["1", "4"])
        check(
            try schemaGrammar(#"{"type": "integer", "exclusiveMinimum": -1.5, "exclusiveMaximum": 2.0}"#),
            accepts: ["-1", "0", "1"], rejects: ["-2", "2"])
        // Draft 4: boolean exclusives qualify minimum / maximum.
        check(
            try schemaGrammar(
                #"{"type": "integer", "minimum": 0, "exclusiveMinimum": true, "maximum": 3, "exclusiveMaximum": false}"#
            ),
            accepts: ["1", "3"], rejects: ["0", "4"])
        // Both forms of a bound: the tighter one wins.
        check(
            try schemaGrammar(#"{"type": "integer", "minimum": 3, "exclusiveMinimum": 4, "maximum": 9}"#),
            accepts: ["5", "9"], rejects: ["3", "4"])
    }

    @Test func bigAndOneSidedIntegerBounds() throws {
        check(
            try schemaGrammar(
                #"{"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807}"#),
            accepts: ["-9223372036854775808", "9223372036854775807", "0", "-1", "1000000000000000000"],
            rejects: ["9223372036854775808", "-9223372036854775809", "10000000000000000000", "-0"])
        check(
            try schemaGrammar(#"{"type": "integer", "minimum": 9223372036854775800}"#),
            accepts: ["9223372036854775800", "9223372036854775807"],
            rejects: ["9223372036854775799", "9223372036854775808", "922337203685477580"])
        check(
            try schemaGrammar(#"{"type": "integer", "maximum": -9223372036854775803}"#),
            accepts: ["-9223372036854775803", "-9223372036854775808"],
            rejects: ["-9223372036854775802", "-9223372036854775809", "0"])
        // A missing bound is the 18-digit limit of unbounded integers.
        check(
            try schemaGrammar(#"{"type": "integer", "minimum": 0}"#),
            accepts: ["0", "999999999999999999"], rejects: ["-1", "1000000000000000000"])
        check(
            try schemaGrammar(#"{"type": "integer", "exclusiveMaximum": 0}"#),
            accepts: ["-1", "-999999999999999999"], rejects: ["0", "-1000000000000000000"])
        // An integer type with no integer in range still allows the schema's other types.
        check(
            try schemaGrammar(#"{"type": ["integer", "null"], "minimum": 1.2, "maximum": 1.8}"#), accepts: ["null"],
            rejects: ["1", "2"])
    }

    /// Every range between interesting values, against every integer near them (and malformed ones).
    @Test func integerRangeDFAsAgreeWithArithmetic() {
        let marks: [Int64] = [-1000, -101, -100, -99, -11, -10, -9, -1, 0, 1, 9, 10, 11, 99, 100, 101, 999, 1000]
        func accepts(_ dfa: ByteDFA, _ text: String) -> Bool {
            var state: Int32 = 0
            for byte in text.utf8 {
                state = dfa.next(state, byte)
                if state < 0 { return false }
            }
            return dfa.isAccepting(state)
        }
        var largest = 0
        for low in marks {
            for high in marks where high >= low {
                let dfa = JSONTerminals.integer(in: low...high)
                largest = max(largest, dfa.baseStateCount)
                for value in Int64(-1100)...1100 where accepts(dfa, String(value)) != (low...high).contains(value) {
                    Issue.record("\(low)...\(high) wrong on \(value)")
                }
                for text in ["-0", "00", "01", "-01", "-", "", "1-"] where accepts(dfa, text) {
                    Issue.record("\(low)...\(high) accepts \(text)")
                }
            }
        }
        let full = JSONTerminals.integer(in: Int64.min...Int64.max)
        print(
            "integer range DFAs: at most \(largest) states between the marks, \(full.baseStateCount) for all of Int64")
        #expect(full.baseStateCount < 200)
        var random = SplitMix64(state: 11)
        for _ in 0..<200 {
            let a = Int64(bitPattern: random.next()) >> Int64.random(in: 0...62, using: &random)
            let b = Int64(bitPattern: random.next()) >> Int64.random(in: 0...62, using: &random)
            let range = min(a, b)...max(a, b)
            let dfa = JSONTerminals.integer(in: range)
            var probes: [Int64] = [0, 1, -1, Int64.min, Int64.max]
            for bound in [range.lowerBound, range.upperBound] {
                for delta: Int64 in -2...2 {
                    let (value, overflow) = bound.addingReportingOverflow(delta)
                    if !overflow { probes.append(value) }
                }
            }
            for _ in 0..<20 { probes.append(Int64.random(in: range, using: &random)) }
            for value in probes where accepts(dfa, String(value)) != range.contains(value) {
                Issue.record("\(range) wrong on \(value)")
            }
        }
    }

    // MARK: - Refusals

    @Test func hostileLengthsAndBoundsAreRefused() throws {
        #expect(try refusal(#"{"type": "string", "maxLength": 1000000000000000000}"#)?.keyword == "maxLength")
        #expect(try refusal(#"{"type": "string", "maxLength": 1e18}"#)?.keyword == "maxLength")
        #expect(try refusal(#"{"type": "string", "maxLength": 100001}"#)?.keyword == "maxLength")
        #expect(try refusal(#"{"type": "string", "minLength": -1}"#)?.keyword == "minLength")
        #expect(try refusal(#"{"type": "string", "minLength": 1.5}"#)?.keyword == "minLength")
        #expect(try refusal(#"{"type": "string", "minLength": "3"}"#)?.keyword == "minLength")
        let inverted = try #require(
            try refusal(#"{"properties": {"s": {"type": "string", "minLength": 5, "maxLength": 2}}}"#))
        #expect(inverted.keyword == "minLength" && inverted.path == "properties.s")
        #expect(try refusal(#"{"type": "integer", "minimum": 1e30}"#)?.keyword == "minimum")
        #expect(try refusal(#"{"type": "integer", "maximum": -9223372036854775809}"#)?.keyword == "maximum")
        #expect(
            try refusal(#"{"type": "integer", "exclusiveMinimum": 9223372036854775807}"#)?.keyword == "exclusiveMinimum"
        )
        #expect(try refusal(#"{"type": "integer", "maximum": "3"}"#)?.keyword == "maximum")
        #expect(try refusal(#"{"type": "integer", "minimum": 5, "maximum": 1}"#)?.keyword == "minimum")
        #expect(try refusal(#"{"type": "integer", "minimum": 1.2, "maximum": 1.8}"#)?.keyword == "minimum")
        let number = try #require(try refusal(#"{"properties": {"x": {"type": "number", "maximum": 1}}}"#))
        #expect(number.keyword == "maximum" && number.path == "properties.x" && number.message.contains("maximum"))
        #expect(try refusal(#"{"type": ["integer", "number"], "exclusiveMinimum": 0}"#)?.keyword == "exclusiveMinimum")
        #expect(try refusal(#"{"minimum": 0}"#)?.keyword == "minimum")
        #expect(try refusal(#"{"enum": ["a", "bb"], "maxLength": 1}"#)?.keyword == "maxLength")
        #expect(try refusal(##"{"$ref": "#/$defs/A", "minimum": 1, "$defs": {"A": true}}"##)?.keyword == "minimum")
        // Number bounds that constrain nothing are fine.
        _ = try schemaGrammar(#"{"type": "number", "exclusiveMinimum": false}"#)
        // Many different integer ranges: their tables are bounded together.
        let properties = (0..<2000).map {
            #""p\#($0)": {"type": "integer", "minimum": \#($0), "maximum": 9223372036854775807}"#
        }
        let wide = "{\"properties\": {" + properties.joined(separator: ", ") + "}}"
        let start = ContinuousClock.now
        #expect(try refusal(wide)?.keyword == "minimum")
        print("2000 integer ranges refused in \(ContinuousClock.now - start)")
    }
}
