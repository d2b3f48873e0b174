import Foundation
import TLLMChatTemplate
import TLLMModelFiles
import TLLMTokenizer

/// Everything a node needs of a model besides compute: its weights, tokenizer, chat
/// template and stop tokens, read from a GGUF file (metadata) or a Hugging Face directory
/// (`tokenizer.json`, `tokenizer_config.json`, `generation_config.json`).
public struct ModelBundle: Sendable {
    /// The weights and hyperparameters.
    public let weights: any ModelWeights
    /// The tokenizer.
    public let tokenizer: Tokenizer
    /// The chat template, when the model has one.
    public let chatTemplate: ChatTemplate?
    /// Tokens that end generation: EOS, the end-of-turn tokens the vocabulary has, and
    /// `generation_config.json`'s `eos_token_id`s.
    public let stopTokenIDs: Set<Int32>
    /// The model's name as the API reports it (the file or directory name).
    public let name: String
    /// BOS and EOS as text, for templates.
    public let bosToken: String?
    public let eosToken: String?

    /// Opens a local model: a `.gguf` file or a Hugging Face directory. `selection` limits
    /// which tensors a worker maps (nil: all).
    public static func open(path: String, selection: TensorSelection? = nil) throws -> ModelBundle {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelFileError(path, "no such file or directory")
        }
        return isDirectory.boolValue ? try openDirectory(path, selection: selection) : try openGGUF(path)
    }

    private static func openGGUF(_ path: String) throws -> ModelBundle {
        let model = try GGUFModel(path: path)
        let metadata = model.file.metadata
        /// A token id from the metadata; ids that fit no `Int32` are refused (the tokenizer then
        /// checks them against the vocabulary).
        func id(_ key: String) throws -> Int32? {
            guard let value = metadata[key] else { return nil }
            guard let id = value.int.flatMap({ Int32(exactly: $0) }) else {
                throw ModelFileError(path, "\(key) is not a token id (\(value))")
            }
            return id
        }
        let tokenTypes = try metadata["tokenizer.ggml.token_type"]?.ints.map { types in
            try types.map { type in
                guard let value = Int32(exactly: type) else {
                    throw ModelFileError(path, "tokenizer.ggml.token_type holds \(type), not a token type")
                }
                return value
            }
        }
        guard let tokens = metadata["tokenizer.ggml.tokens"]?.strings,
            let kind = metadata["tokenizer.ggml.model"]?.string
        else { throw ModelFileError(path, "metadata has no tokenizer (tokenizer.ggml.model / tokens)") }
        let configuration: TokenizerConfiguration
        do {
            configuration = try TokenizerConfiguration(
                ggufModel: kind, pre: metadata["tokenizer.ggml.pre"]?.string, tokens: tokens,
                tokenTypes: tokenTypes,
                merges: metadata["tokenizer.ggml.merges"]?.strings, scores: metadata["tokenizer.ggml.scores"]?.floats,
                bosTokenID: try id("tokenizer.ggml.bos_token_id"), eosTokenID: try id("tokenizer.ggml.eos_token_id"),
                unknownTokenID: try id("tokenizer.ggml.unknown_token_id"),
                paddingTokenID: try id("tokenizer.ggml.padding_token_id"),
                addBOS: metadata["tokenizer.ggml.add_bos_token"]?.bool,
                addEOS: metadata["tokenizer.ggml.add_eos_token"]?.bool,
                addSpacePrefix: metadata["tokenizer.ggml.add_space_prefix"]?.bool)
        } catch let error as ModelFileError {
            throw error
        } catch {
            throw ModelFileError(path, "tokenizer: \(error)")
        }
        let tokenizer: Tokenizer
        do { tokenizer = try Tokenizer(configuration) } catch {
            throw ModelFileError(path, "tokenizer: \(error)")
        }
        let template = try metadata["tokenizer.chat_template"]?.string.map { source in
            do { return try ChatTemplate(source: source) } catch {
                throw ModelFileError(path, "chat template: \(error)")
            }
        }
        var stops: Set<Int32> = []
        if let eos = configuration.eosTokenID { stops.insert(eos) }
        if let eot = try id("tokenizer.ggml.eot_token_id") { stops.insert(eot) }
        return ModelBundle(
            weights: model, tokenizer: tokenizer, chatTemplate: template,
            stopTokenIDs: stops.union(endOfTurnTokens(tokenizer)), name: URL(fileURLWithPath: path).lastPathComponent,
            bosToken: configuration.bosTokenID.flatMap(tokenizer.tokenText),
            eosToken: configuration.eosTokenID.flatMap(tokenizer.tokenText))
    }

    private static func openDirectory(_ path: String, selection: TensorSelection?) throws -> ModelBundle {
        let model = try HuggingFaceModel(directory: path, selection: selection)
        guard let tokenizerURL = model.tokenizerJSON else { throw ModelFileError(path, "no tokenizer.json") }
        let configData = try model.tokenizerConfigJSON.map { try Data(contentsOf: $0) }
        let tokenizer: Tokenizer
        do {
            tokenizer = try Tokenizer(
                TokenizerConfiguration(tokenizerJSON: Data(contentsOf: tokenizerURL), tokenizerConfigJSON: configData))
        } catch {
            throw ModelFileError(tokenizerURL.path, "\(error)")
        }
        let config = try configData.flatMap { try JSONSerialization.jsonObject(with: $0) as? [String: Any] } ?? [:]
        var templateSource = chatTemplate(in: config)
        var templateFile = model.tokenizerConfigJSON?.path ?? path
        let jinja = URL(fileURLWithPath: path).appendingPathComponent("chat_template.jinja")
        if templateSource == nil, let text = try? String(contentsOf: jinja, encoding: .utf8) {
            templateSource = text
            templateFile = jinja.path
        }
        let template = try templateSource.map { source in
            do { return try ChatTemplate(source: source) } catch {
                throw ModelFileError(templateFile, "chat template: \(error)")
            }
        }
        var stops: Set<Int32> = []
        if let eos = tokenizer.eosTokenID { stops.insert(eos) }
        if let url = model.generationConfigJSON, let data = try? Data(contentsOf: url),
            let generation = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        {
            let ids = (generation["eos_token_id"] as? [Int]) ?? (generation["eos_token_id"] as? Int).map { [$0] } ?? []
            for id in ids {
                guard id >= 0, id < tokenizer.vocabularySize else {
                    throw ModelFileError(
                        url.path, "eos_token_id \(id) is outside the vocabulary (0..<\(tokenizer.vocabularySize))")
                }
                stops.insert(Int32(id))
            }
        }
        return ModelBundle(
            weights: model, tokenizer: tokenizer, chatTemplate: template,
            stopTokenIDs: stops.union(endOfTurnTokens(tokenizer)),
            name: URL(fileURLWithPath: path).lastPathComponent, bosToken: tokenText(config["bos_token"]),
            eosToken: tokenText(config["eos_token"]))
    }

    /// `chat_template` of tokenizer_config.json: a string, or a list of named templates.
    private static func chatTemplate(in config: [String: Any]) -> String? {
        if let text = config["chat_template"] as? String { return text }
        let named = config["chat_template"] as? [[String: Any]] ?? []
        return (named.first { $0["name"] as? String == "default" } ?? named.first)?["template"] as? String
    }

    /// A special token given as a string or as `{"content": …}`.
    private static func tokenText(_ value: Any?) -> String? {
        (value as? String) ?? ((value as? [String: Any])?["content"] as? String)
    }

    /// End-of-turn tokens that the original also stops at (`<|eot_id|>`), and their
    /// siblings in other families' vocabularies.
    private static func endOfTurnTokens(_ tokenizer: Tokenizer) -> Set<Int32> {
        let names = ["<|eot_id|>", "<|im_end|>", "<|end_of_turn|>", "<end_of_turn>", "<|endoftext|>"]
        return Set(tokenizer.encodeSpecialTokens(named: names))
    }

    /// Renders a chat prompt with the model's template (`messages` as OpenAI sends them); `extra`
    /// adds template variables (a request's `chat_template_kwargs`, such as `enable_thinking`).
    public func renderChat(
        messages: [TemplateValue], addGenerationPrompt: Bool = true, tools: [TemplateValue]? = nil,
        extra: [String: TemplateValue] = [:]
    ) throws -> String {
        guard let chatTemplate else {
            throw ModelFileError(name, "the model has no chat template; use the completions endpoint")
        }
        return try chatTemplate.render(
            messages: messages, addGenerationPrompt: addGenerationPrompt, bosToken: bosToken, eosToken: eosToken,
            tools: tools, extra: extra)
    }

    /// The same model with another chat template (`tllm.server --chat_template FILE`).
    public func replacingChatTemplate(_ template: ChatTemplate) -> ModelBundle {
        ModelBundle(
            weights: weights, tokenizer: tokenizer, chatTemplate: template, stopTokenIDs: stopTokenIDs, name: name,
            bosToken: bosToken, eosToken: eosToken)
    }

    /// Token ids of a rendered chat prompt. The tokenizer's own BOS is added unless the template
    /// already wrote it (Llama 3's `<|begin_of_text|>`), so a prompt never starts with two.
    public func chatPromptTokens(_ rendered: String) -> [Int32] {
        let templateWroteBOS = bosToken.map { !$0.isEmpty && rendered.hasPrefix($0) } ?? false
        return tokenizer.encode(rendered, addSpecialTokens: !templateWroteBOS)
    }
}

extension Tokenizer {
    /// Ids of the given special tokens that this vocabulary has.
    fileprivate func encodeSpecialTokens(named names: [String]) -> [Int32] {
        names.compactMap { name in
            let ids = encode(name, addSpecialTokens: false)
            return ids.count == 1 && tokenText(ids[0]) == name && isSpecial(ids[0]) ? ids[0] : nil
        }
    }
}
