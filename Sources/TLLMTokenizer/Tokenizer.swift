import Foundation

/// A byte-level or SentencePiece-style BPE tokenizer; immutable after `init`, safe to share between tasks.
///
/// Encoding follows Hugging Face `tokenizers`: added tokens are cut out of the text first (so special tokens
/// written in user text are matched), each remaining stretch is normalised and pre-tokenized, and every piece goes
/// through the merge loop. Decoding mirrors the `ByteLevel` and SentencePiece (`Replace`, `ByteFallback`, `Fuse`,
/// `Strip`) decoders.
public final class Tokenizer: Sendable {
    /// The configuration this tokenizer was built from.
    public let configuration: TokenizerConfiguration
    /// Ids of special added tokens (BOS, EOS, chat markers), which `skipSpecialTokens` leaves out.
    public let specialTokenIDs: Set<Int32>

    private let scanner: PreTokenizerScanner?
    private let merger: BytePairMerger
    private let splitter: AddedTokenSplitter
    /// The bytes each token stands for when decoded (byte-level: the mapped bytes; SentencePiece: `▁` as a space).
    private let tokenBytes: [[UInt8]]
    /// SentencePiece byte tokens (`<0xXX>`): the byte, or -1 for other tokens.
    private let byteValue: [Int16]
    /// The first token for each byte: byte-level single-byte tokens, or SentencePiece `<0xXX>` fallback tokens.
    private let idForByte: [Int32]
    /// Every token by the UTF-8 bytes BPE sees (byte-level: decoded bytes; SentencePiece: text with `▁`).
    private let idForPiece: [[UInt8]: Int32]
    /// SentencePiece: single-character tokens by scalar value.
    private let idForScalar: [UInt32: Int32]

    /// An upper bound on the bytes of text one token stands for: a text of `n` bytes encodes to at
    /// least `n / longestTokenBytes` tokens (a server refuses a prompt too long without encoding it).
    public let longestTokenBytes: Int

    /// The number of token ids.
    public var vocabularySize: Int { configuration.tokens.count }
    /// The beginning-of-sequence token, if any.
    public var bosTokenID: Int32? { configuration.bosTokenID }
    /// The end-of-sequence token, if any.
    public var eosTokenID: Int32? { configuration.eosTokenID }

    /// Builds a tokenizer, checking that every merge and special id refers to a token of the vocabulary.
    public init(_ configuration: TokenizerConfiguration) throws(TokenizerError) {
        self.configuration = configuration
        let tokens = configuration.tokens
        guard !tokens.isEmpty else { throw TokenizerError("the vocabulary is empty") }
        for (name, id) in [
            ("bos", configuration.bosTokenID), ("eos", configuration.eosTokenID),
            ("unknown", configuration.unknownTokenID), ("padding", configuration.paddingTokenID),
        ] {
            if let id, id < 0 || Int(id) >= tokens.count {
                throw TokenizerError("\(name) token id \(id) is outside the vocabulary of \(tokens.count) tokens")
            }
        }
        for added in configuration.addedTokens where added.id < 0 || Int(added.id) >= tokens.count {
            throw TokenizerError("added token '\(added.content)' has id \(added.id) outside the vocabulary")
        }
        if let types = configuration.tokenTypes, types.count != tokens.count {
            throw TokenizerError("\(types.count) token types for \(tokens.count) tokens")
        }
        if let scores = configuration.scores, scores.count != tokens.count {
            throw TokenizerError("\(scores.count) scores for \(tokens.count) tokens")
        }
        let addedIDs = Set(configuration.addedTokens.map(\.id))
        specialTokenIDs = Set(configuration.addedTokens.filter(\.special).map(\.id))
        splitter = AddedTokenSplitter(configuration.addedTokens)

        var bytesByID: [[UInt8]] = []
        bytesByID.reserveCapacity(tokens.count)
        var byteValue = [Int16](repeating: -1, count: tokens.count)
        var idForPiece: [[UInt8]: Int32] = [:]
        idForPiece.reserveCapacity(tokens.count)
        var idForByte = [Int32](repeating: -1, count: 256)
        var idForScalar: [UInt32: Int32] = [:]
        // BPE pieces as keys: what the merge loop sees for each token.
        var pieceForID: [[UInt8]] = []
        pieceForID.reserveCapacity(tokens.count)

        switch configuration.model {
        case .byteLevelBPE(let kind):
            scanner = PreTokenizerScanner(kind: kind)
            for (index, token) in tokens.enumerated() {
                // Added tokens are stored as plain text; the ByteLevel decoder falls back to their UTF-8 too.
                let bytes = ByteLevelAlphabet.bytes(of: token) ?? Array(token.utf8)
                bytesByID.append(bytes)
                pieceForID.append(bytes)
                if !addedIDs.contains(Int32(index)) || idForPiece[bytes] == nil {
                    idForPiece[bytes] = Int32(index)
                }
                if bytes.count == 1, idForByte[Int(bytes[0])] < 0, !addedIDs.contains(Int32(index)) {
                    idForByte[Int(bytes[0])] = Int32(index)
                }
            }
        case .sentencePieceBPE:
            scanner = nil
            for (index, token) in tokens.enumerated() {
                let piece = Array(token.utf8)
                pieceForID.append(piece)
                idForPiece[piece] = Int32(index)
                if let byte = Self.fallbackByte(token) {
                    byteValue[index] = Int16(byte)
                    if idForByte[Int(byte)] < 0 { idForByte[Int(byte)] = Int32(index) }
                    bytesByID.append([byte])
                } else {
                    bytesByID.append(Array(token.replacingOccurrences(of: "▁", with: " ").utf8))
                }
                var scalars = token.unicodeScalars.makeIterator()
                if let first = scalars.next(), scalars.next() == nil, !addedIDs.contains(Int32(index)) {
                    idForScalar[first.value] = Int32(index)
                }
            }
        }
        tokenBytes = bytesByID
        // A text of n bytes encodes to at least n / longest tokens: byte-level tokens cover their
        // decoded bytes, added tokens their content (SentencePiece's `▁` is at most 3 bytes of text).
        longestTokenBytes = max(
            1, bytesByID.lazy.map { $0.count + 2 }.max() ?? 1,
            configuration.addedTokens.lazy.map(\.content.utf8.count).max() ?? 1)
        self.byteValue = byteValue
        self.idForByte = idForByte
        self.idForPiece = idForPiece
        self.idForScalar = idForScalar
        merger = try Self.makeMerger(configuration, idForPiece: idForPiece, pieceForID: pieceForID)
    }

    /// `<0xXX>` → XX.
    private static func fallbackByte(_ token: String) -> UInt8? {
        let utf8 = Array(token.utf8)
        guard utf8.count == 6, utf8[0] == UInt8(ascii: "<"), utf8[1] == UInt8(ascii: "0"),
            utf8[2] == UInt8(ascii: "x"), utf8[5] == UInt8(ascii: ">")
        else { return nil }
        return UInt8(String(decoding: utf8[3..<5], as: UTF8.self), radix: 16)
    }

    private static func makeMerger(
        _ configuration: TokenizerConfiguration, idForPiece: [[UInt8]: Int32], pieceForID: [[UInt8]]
    ) throws(TokenizerError) -> BytePairMerger {
        let isByteLevel = configuration.model != .sentencePieceBPE
        func piece(_ text: String) -> [UInt8]? {
            isByteLevel ? ByteLevelAlphabet.bytes(of: text) : Array(text.utf8)
        }
        if !configuration.merges.isEmpty || configuration.scores == nil {
            var merger = BytePairMerger(capacity: configuration.merges.count)
            for (rank, rule) in configuration.merges.enumerated() {
                guard let left = piece(rule.left).flatMap({ idForPiece[$0] }) else {
                    throw TokenizerError(
                        "merge '\(rule.left) \(rule.right)' names '\(rule.left)', which is not a token")
                }
                guard let right = piece(rule.right).flatMap({ idForPiece[$0] }) else {
                    throw TokenizerError(
                        "merge '\(rule.left) \(rule.right)' names '\(rule.right)', which is not a token")
                }
                guard let merged = piece(rule.left + rule.right).flatMap({ idForPiece[$0] }) else {
                    throw TokenizerError(
                        "merge '\(rule.left) \(rule.right)' makes '\(rule.left + rule.right)', which is not a token")
                }
                merger.insert(left: left, right: right, rank: UInt32(rank), merged: merged)
            }
            return merger
        }
        // SentencePiece without merges (GGUF "llama" files): any split of an ordinary token into two tokens is a
        // rule, and a higher score of the result merges first.
        let scores = configuration.scores ?? []
        let types = configuration.tokenTypes
        func mergeable(_ id: Int) -> Bool {
            guard let types else { return true }
            return types[id] == TokenizerConfiguration.TokenType.normal
                || types[id] == TokenizerConfiguration.TokenType.userDefined
        }
        var rules: [(score: Float, left: Int32, right: Int32, merged: Int32)] = []
        for (id, bytes) in pieceForID.enumerated() where bytes.count > 1 && mergeable(id) {
            var cut = 1
            while cut < bytes.count {
                // Only cut at character boundaries: SentencePiece symbols are whole characters.
                if bytes[cut] & 0xC0 != 0x80, let left = idForPiece[Array(bytes[..<cut])],
                    let right = idForPiece[Array(bytes[cut...])], mergeable(Int(left)), mergeable(Int(right))
                {
                    rules.append((scores[id], left, right, Int32(id)))
                }
                cut += 1
            }
        }
        rules.sort { $0.score != $1.score ? $0.score > $1.score : $0.merged < $1.merged }
        var merger = BytePairMerger(capacity: rules.count)
        for (rank, rule) in rules.enumerated() {
            merger.insert(left: rule.left, right: rule.right, rank: UInt32(rank), merged: rule.merged)
        }
        return merger
    }

    // MARK: - Encoding

    /// Encodes text to token ids.
    ///
    /// - Parameters:
    ///   - text: Any text; added and special tokens written in it are matched as tokens.
    ///   - addSpecialTokens: Whether to add BOS/EOS as the configuration asks.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int32] {
        var ids: [Int32] = []
        ids.reserveCapacity(text.utf8.count / 3 + 2)
        if addSpecialTokens, configuration.addBOS, let bos = configuration.bosTokenID { ids.append(bos) }
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBufferPointer { buffer in
            let text = UnsafeBufferPointer(buffer)
            var cache: [ArraySlice<UInt8>: [Int32]] = [:]
            for segment in splitter.split(text) {
                switch segment {
                case .token(let id):
                    ids.append(id)
                case .text(let range):
                    encodeSegment(
                        UnsafeBufferPointer(rebasing: text[range]), isFirst: range.lowerBound == 0,
                        into: &ids, cache: &cache)
                }
            }
        }
        if addSpecialTokens, configuration.addEOS, let eos = configuration.eosTokenID { ids.append(eos) }
        return ids
    }

    private func encodeSegment(
        _ segment: UnsafeBufferPointer<UInt8>, isFirst: Bool, into ids: inout [Int32],
        cache: inout [ArraySlice<UInt8>: [Int32]]
    ) {
        var normalized: [UInt8]? = nil
        if configuration.normalizeNFC, segment.contains(where: { $0 >= 0x80 }) {
            let string = String(decoding: segment, as: UTF8.self).precomposedStringWithCanonicalMapping
            normalized = Array(string.utf8)
        }
        if let scanner {
            if configuration.byteLevelAddPrefixSpace, (normalized.map { $0.first } ?? segment.first) != 0x20 {
                normalized = [0x20] + (normalized ?? Array(segment))
            }
            if let normalized {
                normalized.withUnsafeBufferPointer { encodeByteLevel($0, scanner, into: &ids, cache: &cache) }
            } else {
                encodeByteLevel(segment, scanner, into: &ids, cache: &cache)
            }
        } else {
            encodeSentencePiece(
                normalized.map { String(decoding: $0, as: UTF8.self) } ?? String(decoding: segment, as: UTF8.self),
                isFirst: isFirst, into: &ids)
        }
    }

    private func encodeByteLevel(
        _ text: UnsafeBufferPointer<UInt8>, _ scanner: PreTokenizerScanner, into ids: inout [Int32],
        cache: inout [ArraySlice<UInt8>: [Int32]]
    ) {
        var symbols: [Int32] = []
        scanner.split(text) { range in
            if range.count == 1 {
                let id = idForByte[Int(text[range.lowerBound])]
                if id >= 0 { ids.append(id) }
                return
            }
            let word = ArraySlice(text[range])
            if let cached = cache[word] {
                ids.append(contentsOf: cached)
                return
            }
            if configuration.ignoreMerges, let id = idForPiece[Array(word)] {
                ids.append(id)
                cache[word] = [id]
                return
            }
            symbols.removeAll(keepingCapacity: true)
            for byte in word {
                let id = idForByte[Int(byte)]
                // A byte without a token of its own is dropped, as `tokenizers` does (SmolLM2 lacks 0x1D).
                if id >= 0 { symbols.append(id) }
            }
            merger.merge(&symbols)
            ids.append(contentsOf: symbols)
            cache[word] = symbols
        }
    }

    private func encodeSentencePiece(_ text: String, isFirst: Bool, into ids: inout [Int32]) {
        guard !text.isEmpty else { return }
        var normalized = text.replacingOccurrences(of: " ", with: "▁")
        let prefix: Bool
        switch configuration.spacePrefix {
        case .never: prefix = false
        case .everySegment: prefix = true
        case .firstSegment: prefix = isFirst && !normalized.hasPrefix("▁")
        }
        if prefix { normalized = "▁" + normalized }
        if configuration.splitOnSpacePrefix {
            // Metaspace `split: true`: every `▁` starts a new word.
            var word = ""
            for scalar in normalized.unicodeScalars {
                if scalar == "▁", !word.isEmpty {
                    encodeSentencePieceWord(word, into: &ids)
                    word = ""
                }
                word.unicodeScalars.append(scalar)
            }
            encodeSentencePieceWord(word, into: &ids)
        } else {
            encodeSentencePieceWord(normalized, into: &ids)
        }
    }

    private func encodeSentencePieceWord(_ word: String, into ids: inout [Int32]) {
        guard !word.isEmpty else { return }
        if configuration.ignoreMerges, let id = idForPiece[Array(word.utf8)] {
            ids.append(id)
            return
        }
        var symbols: [Int32] = []
        symbols.reserveCapacity(word.unicodeScalars.count)
        var previousWasUnknown = false
        for scalar in word.unicodeScalars {
            if let id = idForScalar[scalar.value] {
                symbols.append(id)
                previousWasUnknown = false
                continue
            }
            if configuration.byteFallback {
                let fallback = scalar.utf8.map { idForByte[Int($0)] }
                if !fallback.contains(where: { $0 < 0 }) {
                    symbols.append(contentsOf: fallback)
                    previousWasUnknown = false
                    continue
                }
            }
            guard let unknown = configuration.unknownTokenID else { continue }
            if !(configuration.fuseUnknown && previousWasUnknown) { symbols.append(unknown) }
            previousWasUnknown = true
        }
        merger.merge(&symbols)
        ids.append(contentsOf: symbols)
    }

    // MARK: - Decoding

    /// The stored text of a token (byte-level tokens in their mapped spelling, SentencePiece with `▁`).
    public func tokenText(_ id: Int32) -> String? {
        guard id >= 0, Int(id) < configuration.tokens.count else { return nil }
        return configuration.tokens[Int(id)]
    }

    /// The bytes a token decodes to (without the SentencePiece leading-space rule); empty for unknown ids.
    public func tokenBytes(_ id: Int32) -> [UInt8] {
        guard id >= 0, Int(id) < tokenBytes.count else { return [] }
        return tokenBytes[Int(id)]
    }

    /// Whether `id` is a special added token (BOS, EOS, chat markers).
    public func isSpecial(_ id: Int32) -> Bool { specialTokenIDs.contains(id) }

    /// Decodes token ids to text; invalid UTF-8 becomes U+FFFD, as in `tokenizers`.
    ///
    /// - Parameter skipSpecialTokens: Leaves out special added tokens (see ``specialTokenIDs``).
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) -> String {
        let kept = ids.filter { id in
            id >= 0 && Int(id) < tokenBytes.count && !(skipSpecialTokens && specialTokenIDs.contains(id))
        }
        guard configuration.model == .sentencePieceBPE else {
            return String(decoding: kept.flatMap { tokenBytes[Int($0)] }, as: UTF8.self)
        }
        // ByteFallback: a run of byte tokens is decoded together; if it is not valid UTF-8, every byte is a U+FFFD.
        var text = ""
        var pendingBytes: [UInt8] = []
        func flushBytes() {
            guard !pendingBytes.isEmpty else { return }
            if let valid = String(validating: pendingBytes, as: UTF8.self) {
                text += valid
            } else {
                text += String(repeating: "\u{FFFD}", count: pendingBytes.count)
            }
            pendingBytes.removeAll()
        }
        for id in kept {
            if byteValue[Int(id)] >= 0 {
                pendingBytes.append(UInt8(byteValue[Int(id)]))
            } else {
                flushBytes()
                text += String(decoding: tokenBytes[Int(id)], as: UTF8.self)
            }
        }
        flushBytes()
        if configuration.stripLeadingSpaceOnDecode, text.hasPrefix(" ") { text.removeFirst() }
        return text
    }

    /// A decoder for streaming output, one token at a time; `keeping` names special tokens whose text
    /// it keeps even when `skipSpecialTokens` is set.
    public func makeIncrementalDecoder(
        skipSpecialTokens: Bool = false, keeping: Set<Int32> = []
    ) -> IncrementalDecoder {
        IncrementalDecoder(tokenizer: self, skipSpecialTokens: skipSpecialTokens, keeping: keeping)
    }

    var stripsLeadingSpace: Bool { configuration.stripLeadingSpaceOnDecode }
}
