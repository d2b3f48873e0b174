import Foundation

extension TokenizerConfiguration {
    /// The split patterns we implement with hand-written scanners, keyed by the regex text found in `tokenizer.json`.
    static let knownSplitPatterns: [String: PreTokenizer] = [
        #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#: .gpt2,
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"#
            + #"|\s*[\r\n]+|\s+(?!\S)|\s+"#: .llama3,
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"#
            + #"|\s*[\r\n]+|\s+(?!\S)|\s+"#: .qwen2,
    ]

    /// Reads a Hugging Face `tokenizer.json` and, optionally, its `tokenizer_config.json`.
    ///
    /// Supported: a `BPE` model (merges as `"a b"` strings or `[a, b]` pairs, `byte_fallback`, `ignore_merges`),
    /// `added_tokens`, the pre-tokenizers `ByteLevel`, `Split` with the GPT-2 / Llama 3 / Qwen2 regex,
    /// `Digits` + `ByteLevel` (SmolLM) and `Metaspace`, the normalizers `NFC`, `Prepend` and `Replace`, and
    /// `TemplateProcessing` for BOS/EOS. Anything else is a ``TokenizerError`` that names it.
    public init(tokenizerJSON: Data, tokenizerConfigJSON: Data? = nil) throws(TokenizerError) {
        let root = try Self.object(tokenizerJSON, "tokenizer.json")
        let config = try tokenizerConfigJSON.map { data throws(TokenizerError) in
            try Self.object(data, "tokenizer_config.json")
        }
        guard let modelJSON = root["model"] as? [String: Any] else {
            throw TokenizerError("tokenizer.json has no model")
        }
        let modelType = modelJSON["type"] as? String ?? "BPE"
        guard modelType == "BPE" else {
            throw TokenizerError("unsupported tokenizer.json model type '\(modelType)'")
        }
        guard let vocab = modelJSON["vocab"] as? [String: Any] else {
            throw TokenizerError("tokenizer.json model has no vocab")
        }

        // Vocabulary and added tokens share one id space; added tokens may lie past the model's vocabulary.
        var idByToken: [String: Int32] = [:]
        idByToken.reserveCapacity(vocab.count)
        var maxID = -1
        for (token, value) in vocab {
            guard let id = Self.integer(value) else { throw TokenizerError("vocab entry '\(token)' has no integer id") }
            guard (0...Self.maximumTokenID).contains(id) else {
                throw TokenizerError("vocab entry '\(token)' has id \(id), outside 0...\(Self.maximumTokenID)")
            }
            idByToken[token] = Int32(id)
            maxID = max(maxID, id)
        }
        var added: [AddedToken] = []
        for entry in root["added_tokens"] as? [[String: Any]] ?? [] {
            guard let id = Self.integer(entry["id"] as Any), let content = entry["content"] as? String else {
                throw TokenizerError("added token without id or content: \(entry)")
            }
            guard (0...Self.maximumTokenID).contains(id) else {
                throw TokenizerError("added token '\(content)' has id \(id), outside 0...\(Self.maximumTokenID)")
            }
            added.append(
                AddedToken(
                    id: Int32(id), content: content, special: entry["special"] as? Bool ?? false,
                    lstrip: entry["lstrip"] as? Bool ?? false, rstrip: entry["rstrip"] as? Bool ?? false,
                    singleWord: entry["single_word"] as? Bool ?? false))
            maxID = max(maxID, id)
        }
        var tokens = [String](repeating: "", count: maxID + 1)
        for (token, id) in idByToken { tokens[Int(id)] = token }
        for token in added {
            tokens[Int(token.id)] = token.content
            idByToken[token.content] = token.id
        }

        var merges: [Merge] = []
        let rawMerges = modelJSON["merges"] as? [Any] ?? []
        merges.reserveCapacity(rawMerges.count)
        for rule in rawMerges {
            if let text = rule as? String {
                guard let space = text.firstIndex(of: " ") else {
                    throw TokenizerError("merge '\(text)' is not of the form 'left right'")
                }
                merges.append(Merge(String(text[..<space]), String(text[text.index(after: space)...])))
            } else if let pair = rule as? [Any], pair.count == 2, let left = pair[0] as? String,
                let right = pair[1] as? String
            {
                merges.append(Merge(left, right))
            } else {
                throw TokenizerError("unreadable merge \(rule)")
            }
        }

        // Pre-tokenizer, normalizer and decoder decide between the two model kinds.
        let preTokenizers = Self.flatten(root["pre_tokenizer"], key: "pretokenizers")
        let normalizers = Self.flatten(root["normalizer"], key: "normalizers")
        let decoders = Self.flatten(root["decoder"], key: "decoders")
        let preTypes = preTokenizers.map { $0["type"] as? String ?? "" }
        var model: Model
        var byteLevelAddPrefixSpace = false
        var spacePrefix = SpacePrefix.never
        var splitOnSpacePrefix = false
        var normalizeNFC = false
        if let byteLevel = preTokenizers.first(where: { $0["type"] as? String == "ByteLevel" }) {
            byteLevelAddPrefixSpace = byteLevel["add_prefix_space"] as? Bool ?? false
            let useRegex = byteLevel["use_regex"] as? Bool ?? true
            if preTypes == ["ByteLevel"], useRegex {
                model = .byteLevelBPE(.gpt2)
            } else if preTypes == ["Digits", "ByteLevel"], useRegex,
                preTokenizers[0]["individual_digits"] as? Bool == true
            {
                model = .byteLevelBPE(.smollm)
            } else if preTypes == ["Split", "ByteLevel"], !useRegex {
                let split = preTokenizers[0]
                let pattern = (split["pattern"] as? [String: Any])?["Regex"] as? String ?? ""
                guard let kind = Self.knownSplitPatterns[pattern] else {
                    throw TokenizerError("unsupported pre-tokenizer regex: \(pattern)")
                }
                let behavior = split["behavior"] as? String ?? "Isolated"
                guard behavior == "Isolated", split["invert"] as? Bool != true else {
                    throw TokenizerError("unsupported Split behaviour '\(behavior)' for regex \(pattern)")
                }
                model = .byteLevelBPE(kind)
            } else {
                throw TokenizerError("unsupported pre-tokenizer sequence \(preTypes)")
            }
        } else {
            model = .sentencePieceBPE
            for pre in preTokenizers {
                guard pre["type"] as? String == "Metaspace" else {
                    throw TokenizerError("unsupported pre-tokenizer '\(pre["type"] ?? "?")' for a SentencePiece model")
                }
                splitOnSpacePrefix = pre["split"] as? Bool ?? true
                switch pre["prepend_scheme"] as? String ?? "always" {
                case "first": spacePrefix = .firstSegment
                case "never": spacePrefix = .never
                default: spacePrefix = .everySegment
                }
            }
        }
        for normalizer in normalizers {
            switch normalizer["type"] as? String {
            case "NFC":
                normalizeNFC = true
            case "Prepend" where model == .sentencePieceBPE && normalizer["prepend"] as? String == "▁":
                spacePrefix = .everySegment
            case "Replace" where model == .sentencePieceBPE:
                let pattern = (normalizer["pattern"] as? [String: Any])?["String"] as? String
                guard pattern == " ", normalizer["content"] as? String == "▁" else {
                    throw TokenizerError("unsupported Replace normalizer \(normalizer)")
                }
            default:
                throw TokenizerError("unsupported normalizer '\(normalizer["type"] ?? "?")'")
            }
        }
        var stripLeadingSpace = false
        for decoder in decoders {
            switch decoder["type"] as? String {
            case "Strip":
                stripLeadingSpace = (Self.integer(decoder["start"] as Any) ?? 0) > 0
            case "Metaspace":
                let scheme = decoder["prepend_scheme"] as? String ?? "always"
                stripLeadingSpace = scheme != "never" && (decoder["add_prefix_space"] as? Bool ?? true)
            default:
                break
            }
        }

        // BOS/EOS: the post-processor template is what `tokenizers` applies; tokenizer_config.json fills gaps.
        func tokenID(_ value: Any?) -> Int32? {
            if let text = value as? String { return idByToken[text] }
            if let dictionary = value as? [String: Any], let text = dictionary["content"] as? String {
                return idByToken[text]
            }
            return nil
        }
        var bos = tokenID(config?["bos_token"])
        var eos = tokenID(config?["eos_token"])
        var addBOS = config?["add_bos_token"] as? Bool ?? false
        var addEOS = config?["add_eos_token"] as? Bool ?? false
        if let post = Self.flatten(root["post_processor"], key: "processors").first(where: {
            $0["type"] as? String == "TemplateProcessing"
        }), let single = post["single"] as? [[String: Any]] {
            let specials = post["special_tokens"] as? [String: Any] ?? [:]
            func specialID(_ item: [String: Any]) -> Int32? {
                guard let name = (item["SpecialToken"] as? [String: Any])?["id"] as? String else { return nil }
                let ids = (specials[name] as? [String: Any])?["ids"] as? [Any]
                return ids?.first.flatMap { Self.integer($0) }.map { Int32($0) } ?? idByToken[name]
            }
            addBOS = false
            addEOS = false
            if let first = single.first, let id = specialID(first) {
                addBOS = true
                bos = id
            }
            if single.count > 1, let last = single.last, let id = specialID(last) {
                addEOS = true
                eos = id
            }
        }
        let unknown = (modelJSON["unk_token"] as? String).flatMap { idByToken[$0] }
        self.init(
            model: model, tokens: tokens, tokenTypes: nil, merges: merges, scores: nil, addedTokens: added,
            bosTokenID: bos, eosTokenID: eos, unknownTokenID: unknown, paddingTokenID: tokenID(config?["pad_token"]),
            addBOS: addBOS, addEOS: addEOS, spacePrefix: spacePrefix, stripLeadingSpaceOnDecode: stripLeadingSpace,
            normalizeNFC: normalizeNFC, ignoreMerges: modelJSON["ignore_merges"] as? Bool ?? false,
            byteFallback: modelJSON["byte_fallback"] as? Bool ?? false,
            fuseUnknown: modelJSON["fuse_unk"] as? Bool ?? false, splitOnSpacePrefix: splitOnSpacePrefix,
            byteLevelAddPrefixSpace: byteLevelAddPrefixSpace)
    }

    private static func object(_ data: Data, _ name: String) throws(TokenizerError) -> [String: Any] {
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw TokenizerError("\(name) is not valid JSON: \(error)")
        }
        guard let object = value as? [String: Any] else { throw TokenizerError("\(name) is not a JSON object") }
        return object
    }

    private static func integer(_ value: Any) -> Int? {
        if let int = value as? Int { return int }
        if let number = value as? NSNumber { return number.intValue }
        return nil
    }

    /// A component, or the members of a `Sequence` component, as a flat list (null gives an empty list).
    private static func flatten(_ value: Any?, key: String) -> [[String: Any]] {
        guard let object = value as? [String: Any] else { return [] }
        if object["type"] as? String == "Sequence", let members = object[key] as? [Any] {
            return members.flatMap { flatten($0, key: key) }
        }
        return [object]
    }
}

extension TokenizerConfiguration {
    /// The largest token id a tokenizer file may use: vocabularies of real models stay far below
    /// (Gemma 3: 262 144), and every id must fit the `Int32` of the wire and the kernels.
    static let maximumTokenID = 1 << 24
}
