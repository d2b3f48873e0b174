import TLLMChatTemplate
import Testing

@testable import TLLMGrammar

/// Schemas the compiler must refuse, naming the keyword and its path, without trapping.
@Suite struct SchemaRefusalTests {
    private func refusal(_ schema: TemplateValue) -> GrammarError? {
        #expect(throws: GrammarError.self) { try Grammar(.jsonSchema(schema)) }
    }

    private func refusal(_ json: String) throws -> GrammarError? {
        refusal(try TemplateValue(jsonString: json))
    }

    @Test(arguments: [
        "pattern", "format", "multipleOf", "uniqueItems", "contains", "minProperties", "maxProperties",
        "patternProperties",
        "propertyNames", "dependentRequired", "if", "not", "unevaluatedProperties", "nullable", "discriminator",
    ])
    func unsupportedKeywordIsNamedWithItsPath(keyword: String) throws {
        let schema = #"{"type": "object", "properties": {"email": {"type": "string", "\#(keyword)": 1}}}"#
        let error = try #require(try refusal(schema))
        #expect(error.keyword == keyword)
        #expect(error.path == "properties.email")
        #expect(error.message.contains(keyword))
    }

    /// Bounds are enforced on integers only: on a number they are refused by name.
    @Test(arguments: ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"])
    func numberBoundsAreNamedWithTheirPath(keyword: String) throws {
        let schema = #"{"type": "object", "properties": {"price": {"type": "number", "\#(keyword)": 1}}}"#
        let error = try #require(try refusal(schema))
        #expect(error.keyword == keyword)
        #expect(error.path == "properties.price")
        #expect(error.message.contains(keyword))
        _ = try schemaGrammar(#"{"properties": {"price": {"type": "integer", "\#(keyword)": 1}}}"#)
    }

    @Test func annotationsAreIgnored() throws {
        _ = try schemaGrammar(
            #"{"title": "T", "description": "d", "$schema": "x", "$id": "y", "default": 1, "examples": [1], "strict": true, "$comment": "c", "type": "integer"}"#
        )
    }

    @Test func unsupportedCombinations() throws {
        #expect(try refusal(#"{"allOf": [{"type": "string"}, {"type": "string"}]}"#)?.keyword == "allOf")
        #expect(try refusal(#"{"anyOf": [{"type": "string"}], "type": "string"}"#)?.keyword == "type")
        #expect(
            try refusal(##"{"$ref": "#/$defs/A", "properties": {}, "$defs": {"A": true}}"##)?.keyword == "properties")
        #expect(try refusal(#"{"anyOf": []}"#)?.keyword == "anyOf")
        #expect(try refusal(#"{"additionalProperties": {"type": "string"}}"#)?.keyword == "additionalProperties")
        #expect(try refusal(#"{"items": [{"type": "string"}]}"#)?.keyword == "items")
        #expect(try refusal(#"{"$ref": "https://example.com/schema"}"#)?.keyword == "$ref")
        #expect(try refusal(##"{"$ref": "#/$defs/Missing"}"##)?.keyword == "$ref")
        #expect(try refusal(##"{"$ref": "#/properties/a"}"##)?.keyword == "$ref")
        let nested = try #require(try refusal(#"{"properties": {"a": {"items": {"format": "date"}}}}"#))
        #expect(nested.path == "properties.a.items" && nested.keyword == "format")
        let deep = try #require(
            try refusal(##"{"$defs": {"A": {"type": "string", "pattern": "x"}}, "$ref": "#/$defs/A"}"##))
        #expect(deep.path == "$defs.A" && deep.keyword == "pattern")
    }

    @Test func badValuesAndTypes() throws {
        #expect(try refusal(#"{"type": "strnig"}"#)?.keyword == "type")
        #expect(try refusal(#"{"type": []}"#)?.keyword == "type")
        #expect(try refusal(#"{"type": 3}"#)?.keyword == "type")
        #expect(try refusal("3") != nil)
        #expect(try refusal(#""string""#) != nil)
        #expect(try refusal("null") != nil)
        #expect(try refusal(#"{"properties": {"a": 5}}"#)?.path == "properties.a")
        #expect(try refusal(#"{"properties": []}"#)?.keyword == "properties")
        #expect(try refusal(#"{"required": "a"}"#)?.keyword == "required")
        #expect(try refusal(#"{"enum": "a"}"#)?.keyword == "enum")
    }

    @Test func itemCountsAreBounded() throws {
        #expect(try refusal(#"{"type": "array", "maxItems": 1000000000000000000}"#)?.keyword == "maxItems")
        #expect(try refusal(#"{"type": "array", "minItems": 3, "maxItems": 2}"#)?.keyword == "minItems")
        #expect(try refusal(#"{"type": "array", "minItems": -1}"#)?.keyword == "minItems")
        #expect(try refusal(#"{"type": "array", "minItems": 1.5}"#)?.keyword == "minItems")
        #expect(try refusal(#"{"type": "array", "minItems": 2, "prefixItems": [true], "items": false}"#) != nil)
        _ = try schemaGrammar(#"{"type": "array", "minItems": 10000, "maxItems": 10000}"#)
        #expect(throws: GrammarError.self) { try Grammar(.repeat(.literal("a"), min: 5, max: 2, separator: "")) }
        #expect(throws: GrammarError.self) { try Grammar(.repeat(.literal("a"), min: 0, max: 1 << 40, separator: "")) }
        #expect(throws: GrammarError.self) { try Grammar(.repeat(.literal(""), min: 0, max: nil, separator: "")) }
    }

    @Test func schemasAdmittingNothing() throws {
        #expect(try refusal("false") != nil)
        #expect(try refusal(#"{"enum": []}"#) != nil)
        #expect(try refusal(#"{"type": "integer", "enum": ["a"]}"#) != nil)
        #expect(try refusal(#"{"properties": {"a": false}, "required": ["a"]}"#) != nil)
        #expect(
            try refusal(#"{"required": ["b"], "properties": {"a": true}, "additionalProperties": false}"#)?.keyword
                == "required")
        // Infinite only: every value would need another one inside it.
        #expect(try refusal(##"{"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}"##) != nil)
        // Optional false properties are simply never generated.
        let grammar = try schemaGrammar(#"{"properties": {"a": false, "b": {"type": "integer"}}}"#)
        #expect(matches(grammar, #"{"b": 1}"#) && !matches(grammar, #"{"a": 1}"#))
    }

    @Test func referenceLoopsAreRefused() throws {
        #expect(try refusal(##"{"$ref": "#"}"##) != nil)
        #expect(
            try refusal(##"{"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}}"##)
                != nil)
        #expect(try refusal(##"{"anyOf": [{"$ref": "#"}, {"type": "string"}]}"##)?.keyword == "$ref")
        #expect(try refusal(##"{"$defs": {"A": {"allOf": [{"$ref": "#/$defs/A"}]}}, "$ref": "#/$defs/A"}"##) != nil)
    }

    @Test func hostileSizesAreRefusedQuickly() throws {
        // 10 000 levels, built as a value (the JSON parser stops at 512).
        var deep: TemplateValue = ["type": "string"]
        for _ in 0..<10_000 { deep = .dictionary(TemplateDictionary([("type", "array"), ("items", deep)])) }
        let start = ContinuousClock.now
        let error = try #require(refusal(deep))
        #expect(error.message.contains("deeper"))
        let hugeEnum = TemplateValue.dictionary(["enum": .array((0..<100_000).map { .int($0) })])
        #expect(refusal(hugeEnum)?.keyword == "enum")
        // Wide: many properties, each a big enum, until the grammar size limit.
        let wide = TemplateValue.dictionary(
            TemplateDictionary(
                [
                    (
                        "properties",
                        .dictionary(
                            TemplateDictionary(
                                (0..<2000).map { index in
                                    (
                                        "p\(index)",
                                        TemplateValue.dictionary([
                                            "enum": .array((0..<100).map { .int($0 * 1_000_003 + index) })
                                        ])
                                    )
                                }))
                    )
                ]))
        #expect(refusal(wide) != nil)
        let elapsed = ContinuousClock.now - start
        print("hostile schemas refused in \(elapsed)")
        // Unwinding the 10 000-level value is recursive; keep it from outliving the test scope oddly.
        withExtendedLifetime(deep) {}
    }
}
