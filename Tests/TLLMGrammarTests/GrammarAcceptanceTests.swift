import TLLMChatTemplate
import Testing

@testable import TLLMGrammar

/// A vocabulary of the 256 single bytes: enough to drive a matcher byte by byte.
let byteVocabulary = TokenVocabulary(tokenBytes: (0..<256).map { [UInt8($0)] })

func schemaGrammar(_ json: String) throws -> Grammar {
    try Grammar(.jsonSchema(try TemplateValue(jsonString: json)))
}

/// Whether `grammar` matches exactly `text` (every byte accepted, and the output may end there).
func matches(_ grammar: Grammar, _ text: String) -> Bool {
    matches(grammar, Array(text.utf8))
}

func matches(_ grammar: Grammar, _ bytes: [UInt8]) -> Bool {
    var matcher = GrammarMatcher(grammar: grammar, vocabulary: byteVocabulary, endTokens: [])
    return matcher.accept(bytes: bytes) && matcher.canEnd
}

/// Byte-level acceptance and rejection tables, one per feature.
@Suite struct GrammarAcceptanceTests {
    private func check(_ grammar: Grammar, accepts good: [String], rejects bad: [String]) {
        for text in good { #expect(matches(grammar, text), "should accept \(text)") }
        for text in bad { #expect(!matches(grammar, text), "should reject \(text)") }
    }

    @Test func strings() throws {
        check(
            try schemaGrammar(#"{"type": "string"}"#),
            accepts: [
                ##""""##, #""abc""#, #""a\"b\\c\/d\b\f\n\r\t""#, #""\u00e9\u0041""#, "\"é日本🎉\"",
                #""\ud83d\ude00""#, "\"\u{7F}\"",
            ],
            rejects: [
                ##"""##, "abc", #""a"#, #""\x""#, #""\u12""#, "\"a\nb\"", "\"\u{1}\"", #""\ud83d""#,
                #""\ude00""#, #""\ud83dx""#, #""a" "#, #"'a'"#,
            ])
        let grammar = try schemaGrammar(#"{"type": "string"}"#)
        // Invalid UTF-8 inside a string: overlong, surrogate, truncated, stray continuation, > U+10FFFF.
        for bad: [UInt8] in [
            [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xE6, 0x97], [0x80], [0xF4, 0x90, 0x80, 0x80], [0xFF],
        ] {
            #expect(!matches(grammar, [0x22] + bad + [0x22]), "should reject \(bad)")
        }
        #expect(matches(grammar, [0x22, 0xF4, 0x8F, 0xBF, 0xBF, 0x22]))
    }

    @Test func numbersAndIntegers() throws {
        check(
            try schemaGrammar(#"{"type": "number"}"#),
            accepts: ["0", "-0", "12", "-3.25", "1e5", "1E+5", "2.5e-10", "123456789012345678"],
            rejects: ["01", "+1", "1.", ".5", "1e", "--1", "1.2.3", "0x10", "NaN", "1234567890123456789", ""])
        check(
            try schemaGrammar(#"{"type": "integer"}"#),
            accepts: ["0", "-7", "42", "100"],
            rejects: ["1.0", "1e3", "00", "-", "1 "])
    }

    @Test func literalsBooleanNull() throws {
        check(try schemaGrammar(#"{"type": "boolean"}"#), accepts: ["true", "false"], rejects: ["True", "1", "null"])
        check(try schemaGrammar(#"{"type": "null"}"#), accepts: ["null"], rejects: ["nul", "None", ""])
        check(
            try schemaGrammar(#"{"type": ["string", "null"]}"#), accepts: [#""x""#, "null"], rejects: ["1", "true"])
    }

    @Test func objectsInSchemaOrder() throws {
        let grammar = try schemaGrammar(
            #"{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age"]}"#
        )
        check(
            grammar,
            accepts: [
                #"{"name":"a","age":1}"#, #"{"name": "a", "age": 1, "tags": ["x", "y"]}"#,
                "{\n  \"name\": \"a\",\n  \"age\": 3\n}", #"{ "name" : "a" , "age" : 1 , "tags" : [ ] }"#,
            ],
            rejects: [
                #"{"age":1,"name":"a"}"#, #"{"name":"a"}"#, #"{"name":"a","age":1,}"#,
                #"{"name":"a","age":1,"other":2}"#, #"{"name":"a","age":"1"}"#, #"{"name":"a","age":1"#, "{}",
                #"{"name":"a","age":1,"tags":[1]}"#,
            ])
    }

    @Test func optionalPropertiesAndCommas() throws {
        let grammar = try schemaGrammar(
            #"{"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}}}"#)
        check(
            grammar,
            accepts: ["{}", "{ }", #"{"a":1}"#, #"{"b":2}"#, #"{"a":1,"c":3}"#, #"{"a":1,"b":2,"c":3}"#, #"{"c":3}"#],
            rejects: [#"{,"a":1}"#, #"{"a":1,}"#, #"{"b":2,"a":1}"#, #"{"a":1"b":2}"#, #"{"a":1,,"b":2}"#])
    }

    @Test func requiredWithoutPropertiesAndClosedObjects() throws {
        check(
            try schemaGrammar(#"{"type": "object", "required": ["x"]}"#),
            accepts: [#"{"x": 1}"#, #"{"x": {"deep": [1, "two"]}}"#], rejects: ["{}", #"{"y": 1}"#])
        check(
            try schemaGrammar(#"{"type": "object", "additionalProperties": false}"#), accepts: ["{}", "{ }"],
            rejects: [#"{"a":1}"#])
        check(
            try schemaGrammar(#"{"type": "object"}"#), accepts: ["{}", #"{"k": [1, {"z": null}], "l": true}"#],
            rejects: ["[]", #"{"k"}"#])
    }

    @Test func whitespaceIsBounded() throws {
        let grammar = try schemaGrammar(#"{"type": "array", "items": {"type": "integer"}}"#)
        check(
            grammar,
            accepts: [
                "[1,2]", "[ 1, 2 ]", "[\n  1,\n  2\n]", "[\n\t\t1]", "[\n" + String(repeating: " ", count: 20) + "1]",
            ],
            rejects: [
                "[  1]", "[\n\n1]", "[\n" + String(repeating: " ", count: 21) + "1]", " [1]", "[1] ", "[1 ,2]x",
                "[\r\n1]",
            ])
    }

    @Test func arrays() throws {
        check(
            try schemaGrammar(#"{"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3}"#),
            accepts: ["[1,2]", "[1, 2, 3]"], rejects: ["[]", "[1]", "[1,2,3,4]", "[1,]", "[,1]"])
        check(
            try schemaGrammar(#"{"type": "array", "maxItems": 0}"#), accepts: ["[]", "[ ]"], rejects: ["[1]"])
        check(
            try schemaGrammar(#"{"type": "array"}"#), accepts: ["[]", #"[1, "a", [true], {"x": null}]"#],
            rejects: ["[", "[1,]"])
        check(
            try schemaGrammar(
                #"{"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}"#),
            accepts: ["[]", #"["a"]"#, #"["a", 1]"#], rejects: [#"[1]"#, #"["a", 1, 2]"#, #"["a", "b"]"#])
        check(
            try schemaGrammar(
                #"{"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "boolean"}, "minItems": 2}"#),
            accepts: [#"["a", true]"#, #"["a", true, false]"#], rejects: [#"["a"]"#, #"["a", 1]"#, #"[true, true]"#])
    }

    @Test func enumAndConst() throws {
        check(
            try schemaGrammar(#"{"enum": ["red", 2, 2.5, null, true, {"a": [1, "x"]}, ["q"]]}"#),
            accepts: [#""red""#, "2", "2.5", "null", "true", #"{"a":[1,"x"]}"#, #"["q"]"#],
            rejects: [#""blue""#, "3", "false", #"{"a": [1, "x"]}"#, #""re""#])
        check(
            try schemaGrammar(#"{"type": "string", "enum": ["a", 1, "b"]}"#), accepts: [#""a""#, #""b""#],
            rejects: ["1"])
        check(
            try schemaGrammar(#"{"const": "say \"hi\"\n"}"#), accepts: [#""say \"hi\"\n""#], rejects: [#""say""#])
    }

    @Test func anyOfOneOfAllOf() throws {
        check(
            try schemaGrammar(#"{"anyOf": [{"type": "integer"}, {"type": "string"}]}"#), accepts: ["1", #""x""#],
            rejects: ["true"])
        check(
            try schemaGrammar(#"{"oneOf": [{"type": "boolean"}, {"type": "null"}], "title": "T"}"#),
            accepts: ["true", "null"], rejects: ["0"])
        check(try schemaGrammar(#"{"allOf": [{"type": "integer"}]}"#), accepts: ["5"], rejects: [#""5""#])
    }

    @Test func refsAndRecursion() throws {
        let tree = try schemaGrammar(
            ##"""
            {"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {"value": {"type": "integer"},
             "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}, "required": ["value"]}}}
            """##)
        check(
            tree,
            accepts: [
                #"{"value":1}"#, #"{"value":1,"children":[]}"#,
                #"{"value":1,"children":[{"value":2,"children":[{"value":3}]}]}"#,
            ],
            rejects: [#"{"children":[]}"#, #"{"value":1,"children":[{}]}"#])
        let pydantic = try schemaGrammar(
            ##"""
            {"definitions": {"Pet": {"title": "Pet", "type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}}, "required": ["kind"]}},
             "type": "object", "properties": {"pet": {"anyOf": [{"$ref": "#/definitions/Pet"}, {"type": "null"}], "default": null}},
             "required": ["pet"]}
            """##)
        check(
            pydantic, accepts: [#"{"pet": {"kind": "cat"}}"#, #"{"pet": null}"#],
            rejects: [#"{"pet": {"kind": "cow"}}"#, "{}"])
        let rootRecursion = try schemaGrammar(
            ##"{"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}, "required": ["next"]}"##
        )
        check(
            rootRecursion, accepts: [#"{"next": null}"#, #"{"next": {"next": {"next": null}}}"#],
            rejects: [#"{"next": {}}"#])
    }

    @Test func anyJSONObjectIsBoundedInDepth() throws {
        let grammar = try Grammar(.anyJSONObject)
        check(
            grammar, accepts: ["{}", #"{"a": [1, 2.5, "x", true, false, null, {"b": {}}]}"#],
            rejects: ["[]", "1", #""x""#, "{", #"{"a" 1}"#])
        let depth = Grammar.anyValueDepth
        // `{"a":[...]}` k times: 2k container levels around the innermost 1.
        let nested = { (levels: Int) in
            String(repeating: #"{"a":["#, count: levels) + "1" + String(repeating: "]}", count: levels)
        }
        #expect(matches(grammar, nested(depth / 2)))
        #expect(!matches(grammar, nested(depth / 2 + 1)))
    }

    @Test func combinatorsForToolCalls() throws {
        let call = GrammarExpression.sequence([
            .literal("<tool_call>\n{\"name\": \"f\", \"arguments\": "),
            .jsonSchema(
                try TemplateValue(
                    jsonString: #"{"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}"#)),
            .literal("}\n</tool_call>"),
        ])
        let grammar = try Grammar(.repeat(call, min: 1, max: 2, separator: "\n"))
        let one = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>"
        check(grammar, accepts: [one, one + "\n" + one], rejects: ["", one + one, one + "\n" + one + "\n" + one])
        let choice = try Grammar(
            .choice([.literal("yes"), .literal("no"), .sequence([.literal("may"), .literal("be")])]))
        check(choice, accepts: ["yes", "no", "maybe"], rejects: ["ye", "yesno", "may"])
        let unbounded = try Grammar(.repeat(.literal("ab"), min: 0, max: nil, separator: ","))
        check(unbounded, accepts: ["", "ab", "ab,ab,ab"], rejects: ["ab,", "abab", ",ab"])
    }

    @Test func matcherEndStates() throws {
        var matcher = GrammarMatcher(
            grammar: try schemaGrammar(#"{"type": "integer"}"#), vocabulary: byteVocabulary, endTokens: [300])
        #expect(!matcher.canEnd)
        let accepted1 = matcher.accept(300)
        #expect(!accepted1)
        let accepted2 = matcher.accept(bytes: Array("12".utf8))
        #expect(accepted2)
        #expect(matcher.canEnd && !matcher.mustEnd)
        let accepted3 = matcher.accept(Int32(UInt8(ascii: "x")))
        #expect(!accepted3)
        #expect(matcher.canEnd)
        let accepted4 = matcher.accept(300)
        #expect(accepted4)
        #expect(matcher.mustEnd)
        let accepted5 = matcher.accept(Int32(UInt8(ascii: "3")))
        #expect(!accepted5)

        var literal = GrammarMatcher(grammar: try Grammar(.literal("ok")), vocabulary: byteVocabulary, endTokens: [])
        let accepted6 = literal.accept(bytes: Array("ok".utf8))
        #expect(accepted6)
        #expect(literal.mustEnd)
    }
}
