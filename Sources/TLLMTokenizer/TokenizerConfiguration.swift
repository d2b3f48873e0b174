/// Everything a ``Tokenizer`` needs, as plain Swift values.
///
/// Two sources map onto it: the `tokenizer.ggml.*` metadata of a GGUF file (`init(ggufModel:pre:tokens:…)`)
/// and a Hugging Face `tokenizer.json` (``init(tokenizerJSON:tokenizerConfigJSON:)``). The GGUF reader lives in
/// another module, so nothing here knows about GGUF types.
public struct TokenizerConfiguration: Sendable, Equatable {
    /// The tokenization algorithm.
    public enum Model: Sendable, Equatable {
        /// GPT-2 style BPE over bytes mapped to printable characters, after a regex-like pre-tokenizer.
        case byteLevelBPE(PreTokenizer)
        /// SentencePiece-style BPE over characters with `▁` for spaces and `<0xXX>` byte fallback.
        case sentencePieceBPE
    }

    /// The splitting pattern applied before byte-level BPE (llama.cpp's `tokenizer.ggml.pre`).
    public enum PreTokenizer: String, Sendable, Equatable, CaseIterable {
        /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
        case gpt2 = "gpt-2"
        /// GPT-2's pattern after splitting every digit on its own (SmolLM, StarCoder).
        case smollm = "smollm"
        /// The Llama 3 pattern: case-insensitive contractions, numbers in groups of up to three digits.
        case llama3 = "llama-bpe"
        /// The Llama 3 pattern with single digits (Qwen2).
        case qwen2 = "qwen2"
    }

    /// Where SentencePiece-style models put the `▁` that stands for a leading space.
    public enum SpacePrefix: Sendable, Equatable {
        /// No prefix.
        case never
        /// Before every stretch of text between added tokens (llama.cpp, the legacy `Prepend` normalizer).
        case everySegment
        /// Only before the text at the very start of the input (`Metaspace` with `prepend_scheme: first`).
        case firstSegment
    }

    /// A token matched in the raw text before the model sees it (special and user-defined tokens).
    public struct AddedToken: Sendable, Equatable {
        /// The token's id.
        public var id: Int32
        /// The literal text that is matched.
        public var content: String
        /// Special tokens are left out by `decode(_:skipSpecialTokens: true)`.
        public var special: Bool
        /// Whether the match swallows whitespace on its left.
        public var lstrip: Bool
        /// Whether the match swallows whitespace on its right.
        public var rstrip: Bool
        /// Whether the token only matches as a whole word.
        public var singleWord: Bool

        /// Creates an added token.
        public init(
            id: Int32, content: String, special: Bool, lstrip: Bool = false, rstrip: Bool = false,
            singleWord: Bool = false
        ) {
            self.id = id
            self.content = content
            self.special = special
            self.lstrip = lstrip
            self.rstrip = rstrip
            self.singleWord = singleWord
        }
    }

    /// One BPE merge rule, `left right`; its position in ``merges`` is its rank.
    public struct Merge: Sendable, Hashable {
        /// The left half.
        public var left: String
        /// The right half.
        public var right: String

        /// Creates a merge rule.
        public init(_ left: String, _ right: String) {
            self.left = left
            self.right = right
        }
    }

    /// GGUF token types (`tokenizer.ggml.token_type`).
    public enum TokenType {
        /// An ordinary vocabulary entry.
        public static let normal: Int32 = 1
        /// The unknown token.
        public static let unknown: Int32 = 2
        /// A control token such as BOS/EOS or a chat marker.
        public static let control: Int32 = 3
        /// A user-defined token, matched in text but not special.
        public static let userDefined: Int32 = 4
        /// A reserved, unused entry.
        public static let unused: Int32 = 5
        /// A `<0xXX>` byte token.
        public static let byte: Int32 = 6
    }

    /// The algorithm.
    public var model: Model
    /// Token texts by id, as the file stores them (byte-level characters for byte-level BPE, `▁` for SentencePiece).
    public var tokens: [String]
    /// GGUF token types by id, if known.
    public var tokenTypes: [Int32]?
    /// Merge rules, highest priority first. Empty for SentencePiece models that rank by ``scores`` instead.
    public var merges: [Merge]
    /// SentencePiece scores by id (higher merges first); used when ``merges`` is empty.
    public var scores: [Float]?
    /// Tokens matched in text before the model runs.
    public var addedTokens: [AddedToken]
    /// Beginning-of-sequence token.
    public var bosTokenID: Int32?
    /// End-of-sequence token.
    public var eosTokenID: Int32?
    /// Unknown token, used for characters that neither the vocabulary nor byte fallback cover.
    public var unknownTokenID: Int32?
    /// Padding token.
    public var paddingTokenID: Int32?
    /// Whether `encode(_:addSpecialTokens: true)` prepends BOS.
    public var addBOS: Bool
    /// Whether `encode(_:addSpecialTokens: true)` appends EOS.
    public var addEOS: Bool
    /// Where SentencePiece models add a leading `▁`.
    public var spacePrefix: SpacePrefix
    /// Whether decoding removes one leading space (SentencePiece `Strip` decoder, llama.cpp's space prefix).
    public var stripLeadingSpaceOnDecode: Bool
    /// Whether the text is NFC-normalised first (Qwen2's `tokenizer.json`).
    public var normalizeNFC: Bool
    /// Whether a word found whole in the vocabulary skips the merges (Llama 3's `ignore_merges`).
    public var ignoreMerges: Bool
    /// Whether characters missing from a SentencePiece vocabulary become `<0xXX>` tokens.
    public var byteFallback: Bool
    /// Whether consecutive unknown tokens collapse into one.
    public var fuseUnknown: Bool
    /// Whether SentencePiece text is split into words before each `▁` (`Metaspace` with `split: true`).
    public var splitOnSpacePrefix: Bool
    /// Whether byte-level BPE prepends a space to text that does not start with one (`add_prefix_space`).
    public var byteLevelAddPrefixSpace: Bool

    /// Creates a configuration from its parts; see the properties for their meaning.
    public init(
        model: Model, tokens: [String], tokenTypes: [Int32]? = nil, merges: [Merge] = [], scores: [Float]? = nil,
        addedTokens: [AddedToken] = [], bosTokenID: Int32? = nil, eosTokenID: Int32? = nil,
        unknownTokenID: Int32? = nil, paddingTokenID: Int32? = nil, addBOS: Bool = false, addEOS: Bool = false,
        spacePrefix: SpacePrefix = .never, stripLeadingSpaceOnDecode: Bool = false, normalizeNFC: Bool = false,
        ignoreMerges: Bool = false, byteFallback: Bool = false, fuseUnknown: Bool = false,
        splitOnSpacePrefix: Bool = false, byteLevelAddPrefixSpace: Bool = false
    ) {
        self.model = model
        self.tokens = tokens
        self.tokenTypes = tokenTypes
        self.merges = merges
        self.scores = scores
        self.addedTokens = addedTokens
        self.bosTokenID = bosTokenID
        self.eosTokenID = eosTokenID
        self.unknownTokenID = unknownTokenID
        self.paddingTokenID = paddingTokenID
        self.addBOS = addBOS
        self.addEOS = addEOS
        self.spacePrefix = spacePrefix
        self.stripLeadingSpaceOnDecode = stripLeadingSpaceOnDecode
        self.normalizeNFC = normalizeNFC
        self.ignoreMerges = ignoreMerges
        self.byteFallback = byteFallback
        self.fuseUnknown = fuseUnknown
        self.splitOnSpacePrefix = splitOnSpacePrefix
        self.byteLevelAddPrefixSpace = byteLevelAddPrefixSpace
    }

    /// Creates a configuration from the `tokenizer.ggml.*` metadata of a GGUF file, with llama.cpp's semantics.
    ///
    /// - Parameters:
    ///   - ggufModel: `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"` (SentencePiece).
    ///   - pre: `tokenizer.ggml.pre` (`"smollm"`, `"llama-bpe"`, `"qwen2"`, `"gpt-2"`, `"default"`); byte-level only.
    ///   - tokens: `tokenizer.ggml.tokens`.
    ///   - tokenTypes: `tokenizer.ggml.token_type`; control (3) and user-defined (4) tokens are matched in text.
    ///   - merges: `tokenizer.ggml.merges`, each `"left right"`.
    ///   - scores: `tokenizer.ggml.scores`.
    ///   - addBOS: `tokenizer.ggml.add_bos_token`; llama.cpp's default is true for SentencePiece, false otherwise.
    ///   - addSpacePrefix: `tokenizer.ggml.add_space_prefix`; defaults to true for SentencePiece.
    public init(
        ggufModel: String, pre: String?, tokens: [String], tokenTypes: [Int32]?, merges: [String]?,
        scores: [Float]?, bosTokenID: Int32?, eosTokenID: Int32?, unknownTokenID: Int32?, paddingTokenID: Int32?,
        addBOS: Bool?, addEOS: Bool?, addSpacePrefix: Bool?
    ) throws(TokenizerError) {
        let model: Model
        switch ggufModel {
        case "gpt2":
            let preName = pre ?? "default"
            // llama.cpp treats "default" and unnamed files as GPT-2's pattern.
            let known: [String: PreTokenizer] = [
                "gpt-2": .gpt2, "gpt2": .gpt2, "default": .gpt2, "smollm": .smollm, "starcoder": .smollm,
                "llama-bpe": .llama3, "llama3": .llama3, "qwen2": .qwen2,
            ]
            guard let kind = known[preName] else {
                throw TokenizerError("unsupported tokenizer.ggml.pre '\(preName)'")
            }
            model = .byteLevelBPE(kind)
        case "llama":
            model = .sentencePieceBPE
        default:
            throw TokenizerError("unsupported tokenizer.ggml.model '\(ggufModel)'")
        }
        var parsedMerges: [Merge] = []
        parsedMerges.reserveCapacity(merges?.count ?? 0)
        for rule in merges ?? [] {
            guard let space = rule.firstIndex(of: " ") else {
                throw TokenizerError("merge '\(rule)' is not of the form 'left right'")
            }
            parsedMerges.append(Merge(String(rule[..<space]), String(rule[rule.index(after: space)...])))
        }
        var added: [AddedToken] = []
        if let tokenTypes {
            for (index, type) in tokenTypes.enumerated() where index < tokens.count {
                if type == TokenType.control || type == TokenType.userDefined {
                    added.append(
                        AddedToken(id: Int32(index), content: tokens[index], special: type == TokenType.control))
                }
            }
        }
        let isSentencePiece = model == .sentencePieceBPE
        let spacePrefix = addSpacePrefix ?? isSentencePiece
        self.init(
            model: model, tokens: tokens, tokenTypes: tokenTypes, merges: parsedMerges, scores: scores,
            addedTokens: added, bosTokenID: bosTokenID, eosTokenID: eosTokenID, unknownTokenID: unknownTokenID,
            paddingTokenID: paddingTokenID, addBOS: addBOS ?? isSentencePiece, addEOS: addEOS ?? false,
            spacePrefix: isSentencePiece && spacePrefix ? .everySegment : .never,
            stripLeadingSpaceOnDecode: isSentencePiece && spacePrefix, normalizeNFC: false,
            ignoreMerges: model == .byteLevelBPE(.llama3), byteFallback: isSentencePiece, fuseUnknown: isSentencePiece)
    }
}
