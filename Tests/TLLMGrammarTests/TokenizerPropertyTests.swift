import Foundation
import TLLMChatTemplate
import TLLMModel
import TLLMTokenizer
import Testing

@testable import TLLMGrammar

/// A seeded generator, so a failing run can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Schema validation for the supported subset, written independently of the compiler.
enum SubsetValidator {
    static func validate(_ value: TemplateValue, _ schema: TemplateValue, root: TemplateValue) -> Bool {
        switch schema {
        case .bool(let allowed): return allowed
        case .dictionary(let keywords): return validate(value, keywords, root: root)
        default: return false
        }
    }

    private static func validate(_ value: TemplateValue, _ schema: TemplateDictionary, root: TemplateValue) -> Bool {
        if case .string(let reference)? = schema["$ref"] {
            if reference == "#" { return validate(value, root, root: root) }
            let parts = reference.split(separator: "/").map(String.init)
            guard parts.count == 3, case .dictionary(let rootSchema) = root,
                case .dictionary(let definitions)? = rootSchema[parts[1]], let target = definitions[parts[2]]
            else { return false }
            return validate(value, target, root: root)
        }
        for keyword in ["anyOf", "oneOf"] {
            if case .array(let options)? = schema[keyword] {
                return options.contains { validate(value, $0, root: root) }
            }
        }
        if case .array(let all)? = schema["allOf"] { return all.allSatisfy { validate(value, $0, root: root) } }
        if case .array(let options)? = schema["enum"], !options.contains(value) { return false }
        if let constant = schema["const"], constant != value { return false }
        if let type = schema["type"] {
            let types: [String]
            switch type {
            case .string(let name): types = [name]
            case .array(let names): types = names.compactMap(\.stringValue)
            default: return false
            }
            guard types.contains(where: { has(value, type: $0) }) else { return false }
        }
        switch value {
        case .dictionary(let object):
            if case .dictionary(let properties)? = schema["properties"] {
                for (key, propertySchema) in properties.entries {
                    if let propertyValue = object[key], !validate(propertyValue, propertySchema, root: root) {
                        return false
                    }
                }
                if schema["additionalProperties"] == .bool(false),
                    object.keys.contains(where: { properties[$0] == nil })
                {
                    return false
                }
            } else if schema["additionalProperties"] == .bool(false), !object.isEmpty {
                return false
            }
            if case .array(let required)? = schema["required"] {
                for name in required { if let name = name.stringValue, object[name] == nil { return false } }
            }
        case .array(let items):
            var prefixCount = 0
            if case .array(let prefix)? = schema["prefixItems"] {
                prefixCount = prefix.count
                for (item, itemSchema) in zip(items, prefix) where !validate(item, itemSchema, root: root) {
                    return false
                }
            }
            if let itemSchema = schema["items"] {
                for item in items.dropFirst(prefixCount) where !validate(item, itemSchema, root: root) { return false }
            }
            if case .int(let minimum)? = schema["minItems"], items.count < minimum { return false }
            if case .int(let maximum)? = schema["maxItems"], items.count > maximum { return false }
        case .string(let text):
            // Lengths count code points (Unicode scalars) of the decoded string.
            let length = text.unicodeScalars.count
            if let minimum = number(schema["minLength"]), Double(length) < minimum { return false }
            if let maximum = number(schema["maxLength"]), Double(length) > maximum { return false }
        case .int, .double:
            return inBounds(value, schema)
        default: break
        }
        return true
    }

    private static func number(_ value: TemplateValue?) -> Double? {
        switch value {
        case .int(let number)?: Double(number)
        case .double(let number)?: number
        default: nil
        }
    }

    /// `minimum` / `maximum` / `exclusiveMinimum` / `exclusiveMaximum`, numeric or (draft 4) boolean;
    /// integers compared as integers, so big Int64 bounds stay exact.
    private static func inBounds(_ value: TemplateValue, _ schema: TemplateDictionary) -> Bool {
        func compare(_ bound: TemplateValue) -> Int {  // sign of value - bound
            if case .int(let lhs) = value, case .int(let rhs) = bound { return lhs < rhs ? -1 : lhs > rhs ? 1 : 0 }
            guard let lhs = number(value), let rhs = number(bound) else { return 0 }
            return lhs < rhs ? -1 : lhs > rhs ? 1 : 0
        }
        let exclusiveMinimum = schema["exclusiveMinimum"] == .bool(true)
        let exclusiveMaximum = schema["exclusiveMaximum"] == .bool(true)
        if let bound = schema["minimum"], compare(bound) < (exclusiveMinimum ? 1 : 0) { return false }
        if let bound = schema["maximum"], compare(bound) > (exclusiveMaximum ? -1 : 0) { return false }
        if let bound = schema["exclusiveMinimum"], number(bound) != nil, compare(bound) <= 0 { return false }
        if let bound = schema["exclusiveMaximum"], number(bound) != nil, compare(bound) >= 0 { return false }
        return true
    }

    private static func has(_ value: TemplateValue, type: String) -> Bool {
        switch (value, type) {
        case (.string, "string"), (.int, "integer"), (.int, "number"), (.double, "number"), (.bool, "boolean"),
            (.none, "null"), (.array, "array"), (.dictionary, "object"):
            return true
        default: return false
        }
    }
}

/// The grammar against the real SmolLM2 vocabulary: random sampling under the mask always yields
/// valid JSON for the schema, and the mask agrees with `accept` token by token.
@Suite(.serialized) struct TokenizerPropertyTests {
    static let bundle: ModelBundle? = {
        let path = ProcessInfo.processInfo.environment["TLLM_DEFAULT_MODEL"] ?? "models/SmolLM2-135M-Instruct.Q4_1.gguf"
        return try? ModelBundle.open(path: path)
    }()

    static let vocabulary: TokenVocabulary? = bundle.map { bundle in
        let tokenizer = bundle.tokenizer
        return TokenVocabulary(
            tokenBytes: (0..<tokenizer.vocabularySize).map { id in
                tokenizer.isSpecial(Int32(id)) ? nil : tokenizer.tokenBytes(Int32(id))
            })
    }

    static let schemas: [String] = [
        #"{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "email": {"type": ["string", "null"]}}, "required": ["name", "age"]}"#,
        #"{"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 4}"#,
        #"{"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}, "ok": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}, "required": ["color", "ok"], "additionalProperties": false}"#,
        ##"""
        {"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {"value": {"type": "integer"},
         "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "maxItems": 2}}, "required": ["value"]}}}
        """##,
        #"{"anyOf": [{"type": "object", "properties": {"a": {"const": 1}}, "required": ["a"]}, {"type": "string"}, {"type": "null"}]}"#,
        #"{"type": "object"}"#,
    ]

    /// Schemas with string lengths and integer bounds (kept apart so the timing report compares).
    static let boundedSchemas: [String] = [
        #"{"type": "object", "properties": {"code": {"type": "string", "minLength": 2, "maxLength": 5}, "note": {"type": "string", "maxLength": 3}, "count": {"type": "integer", "minimum": -5, "maximum": 250}, "level": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 4}, "big": {"type": "integer", "minimum": 9223372036854775000}, "tags": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 2}, "maxItems": 3}}, "required": ["code", "count", "level", "big"]}"#,
        #"{"type": "object", "properties": {"summary": {"type": "string", "minLength": 40, "maxLength": 80}, "delta": {"type": "integer", "minimum": -1000, "maximum": -10}}, "required": ["summary", "delta"]}"#,
        #"{"type": "array", "items": {"type": ["string", "integer"], "minLength": 3, "maxLength": 3, "minimum": 0, "maximum": 9}, "minItems": 2, "maxItems": 4}"#,
    ]

    struct RunStatistics {
        var maskCalls = 0
        var maskTime = Duration.zero
        var completed = 0
        var runs = 0
    }

    /// One sampled output under the mask; returns its bytes if it ended.
    static func sample(
        grammar: Grammar, vocabulary: TokenVocabulary, tokenizer: Tokenizer?, end: Int32, seed: UInt64,
        statistics: inout RunStatistics, checkTokens: Bool = true
    ) -> [UInt8]? {
        var random = SplitMix64(state: seed)
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: vocabulary, endTokens: [end])
        var logits = [Float](repeating: 0, count: vocabulary.count)
        var output: [UInt8] = []
        for step in 0..<400 {
            var bits = random.next()
            let elapsed = logits.withUnsafeMutableBufferPointer { row in
                // xorshift: Float.random per entry is slow in debug builds.
                for index in 0..<row.count {
                    bits ^= bits << 13
                    bits ^= bits >> 7
                    bits ^= bits << 17
                    row[index] = Float(bits >> 40) / Float(1 << 24)
                }
                let start = ContinuousClock.now
                matcher.mask(row)
                return ContinuousClock.now - start
            }
            statistics.maskTime += elapsed
            statistics.maskCalls += 1
            var allowed: [Int32] = []
            logits.withUnsafeBufferPointer { row in
                for index in 0..<row.count where row[index] != -Float.infinity { allowed.append(Int32(index)) }
            }
            #expect(!allowed.isEmpty)
            #expect(!matcher.isAtDeadEnd, "dead end after \(String(decoding: output, as: UTF8.self))")
            if allowed.isEmpty { return nil }
            if checkTokens {
                // The mask is exact: sampled allowed tokens are accepted, sampled masked ones refused.
                for _ in 0..<8 {
                    var copy = matcher
                    let token = allowed[Int.random(in: 0..<allowed.count, using: &random)]
                    let allowedAccepted = copy.accept(token)
                    #expect(allowedAccepted, "mask allowed \(token) that accept refuses")
                    let other = Int32.random(in: 0..<Int32(vocabulary.count), using: &random)
                    if logits[Int(other)] == -Float.infinity {
                        var refusing = matcher
                        let maskedAccepted = refusing.accept(other)
                        #expect(!maskedAccepted, "mask refused \(other) that accept takes")
                    }
                }
            }
            let token: Int32
            let closing =
                step > 40
                ? allowed.filter { id in
                    vocabulary.bytes(of: id).map { $0.contains(where: { "]}\"".utf8.contains($0) }) } ?? false
                } : []
            if allowed.contains(end) && (step > 60 || Double.random(in: 0..<1, using: &random) < 0.3) {
                token = end
            } else if step > 40 && !closing.isEmpty && Bool.random(using: &random) {
                token = closing[Int.random(in: 0..<closing.count, using: &random)]
            } else if Double.random(in: 0..<1, using: &random) < 0.5 {
                token = allowed.max { logits[Int($0)] < logits[Int($1)] } ?? allowed[0]
            } else {
                // Short tokens drive structure (quotes, commas, brackets) forward.
                let short = allowed.filter { (vocabulary.bytes(of: $0)?.count ?? 0) <= 2 }
                let pool = short.isEmpty ? allowed : short
                token = pool[Int.random(in: 0..<pool.count, using: &random)]
            }
            guard matcher.accept(token) else {
                Issue.record("accept refused the sampled allowed token \(token)")
                return nil
            }
            if token == end { return output }
            output += vocabulary.bytes(of: token) ?? []
            if matcher.mustEnd {
                let endAccepted = matcher.accept(end)
                #expect(endAccepted)
                return output
            }
        }
        return nil
    }

    @Test func sampledOutputsAreValidJSONForTheSchema() throws {
        let bundle = try #require(Self.bundle, "the default model is missing: run scripts/fetch-default-model.sh")
        let vocabulary = try #require(Self.vocabulary)
        let end = try #require(bundle.tokenizer.eosTokenID)
        var statistics = RunStatistics()
        for schemaText in Self.schemas + Self.boundedSchemas {
            let schema = try TemplateValue(jsonString: schemaText)
            let grammar = try Grammar(.jsonSchema(schema))
            var completed = 0
            for seed in 0..<6 {
                statistics.runs += 1
                guard
                    let output = Self.sample(
                        grammar: grammar, vocabulary: vocabulary, tokenizer: bundle.tokenizer, end: end,
                        seed: UInt64(seed) &* 7919, statistics: &statistics)
                else { continue }
                completed += 1
                let data = Data(output)
                let text = String(decoding: output, as: UTF8.self)
                #expect(
                    (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) != nil,
                    "not JSON: \(text)")
                let value = try TemplateValue(jsonData: data)
                #expect(SubsetValidator.validate(value, schema, root: schema), "\(text) does not fit \(schemaText)")
            }
            statistics.completed += completed
            #expect(completed >= 3, "only \(completed) of 6 runs ended for \(schemaText)")
        }
        let mean = statistics.maskTime / max(statistics.maskCalls, 1)
        print(
            "SmolLM2 \(vocabulary.count) tokens: \(statistics.completed)/\(statistics.runs) outputs complete, "
                + "mask mean \(mean) over \(statistics.maskCalls) calls (with exactness checks)")
    }

    /// Mask time per token while generating JSON, at 49k (SmolLM2) and at a synthetic 152k vocabulary.
    /// Prints only: timing depends on the build (debug builds of TLLMGrammar are unoptimised).
    @Test func maskTimingReport() throws {
        let bundle = try #require(Self.bundle, "the default model is missing: run scripts/fetch-default-model.sh")
        let vocabulary = try #require(Self.vocabulary)
        let end = try #require(bundle.tokenizer.eosTokenID)
        var random = SplitMix64(state: 152)
        var large = vocabulary.tokenBytes
        let pieces = large.compactMap { $0 }.filter { $0.count <= 6 }
        while large.count < 152_064 {
            let first = pieces[Int.random(in: 0..<pieces.count, using: &random)]
            let second = pieces[Int.random(in: 0..<pieces.count, using: &random)]
            large.append(first + second)
        }
        let buildStart = ContinuousClock.now
        let largeVocabulary = TokenVocabulary(tokenBytes: large)
        print("synthetic 152k vocabulary trie built in \(ContinuousClock.now - buildStart)")
        for (name, vocab) in [("SmolLM2 49k", vocabulary), ("synthetic 152k", largeVocabulary)] {
            print("\(name): longest token \(vocab.maximumTokenLength) bytes")
            for (kind, schemas) in [("", Self.schemas), (", bounded schemas", Self.boundedSchemas)] {
                try Self.reportTiming(name: name + kind, schemas: schemas, vocabulary: vocab, end: end)
            }
        }
    }

    static func reportTiming(name: String, schemas: [String], vocabulary vocab: TokenVocabulary, end: Int32) throws {
        var statistics = RunStatistics()
        var firstMask = Duration.zero
        for schemaText in schemas {
            // A fresh grammar each time: the first masks pay for the caches, as a new request would.
            let grammar = try Grammar(.jsonSchema(try TemplateValue(jsonString: schemaText)))
            var single = RunStatistics()
            _ = Self.sample(
                grammar: grammar, vocabulary: vocab, tokenizer: nil, end: end, seed: 1, statistics: &single,
                checkTokens: false)
            firstMask += single.maskTime
            statistics.maskCalls += single.maskCalls
            for seed in 2..<4 {
                _ = Self.sample(
                    grammar: grammar, vocabulary: vocab, tokenizer: nil, end: end, seed: UInt64(seed),
                    statistics: &statistics, checkTokens: false)
            }
            statistics.maskTime += single.maskTime
        }
        let mean = statistics.maskTime / max(statistics.maskCalls, 1)
        print(
            "\(name): mask mean \(mean) per token over \(statistics.maskCalls) tokens (first outputs, cold caches: \(firstMask) total)"
        )
    }
}
