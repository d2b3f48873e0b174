/// Which tensors of a model a node loads: the decoder layers `[a, b)` it computes and,
/// on the master, the embedding and the head (final norm, LM head).
///
/// Names follow both conventions: GGUF (`blk.N.`, `token_embd`, `output_norm`, `output`)
/// and Hugging Face (`model.layers.N.`, `model.embed_tokens`, `model.norm`, `lm_head`).
public struct TensorSelection: Sendable, Hashable {
    /// Decoder layers to load.
    public var layers: Range<Int>
    /// Whether to load the token embedding.
    public var embedding: Bool
    /// Whether to load the final norm and the LM head.
    public var head: Bool

    /// Creates a selection.
    public init(layers: Range<Int>, embedding: Bool = false, head: Bool = false) {
        self.layers = layers
        self.embedding = embedding
        self.head = head
    }

    /// Everything of a model with `layerCount` layers.
    public static func all(layerCount: Int) -> TensorSelection {
        TensorSelection(layers: 0..<layerCount, embedding: true, head: true)
    }

    /// The role of a tensor, by its name.
    public enum Role: Hashable, Sendable {
        case layer(Int)
        case embedding
        case head
        /// Tensors shared by all layers (e.g. `rope_freqs`), loaded by every node.
        case shared
    }

    /// Classifies a tensor name.
    public static func role(of name: String) -> Role {
        for prefix in ["blk.", "model.layers."] where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            if let dot = rest.firstIndex(of: "."), let index = Int(rest[..<dot]) { return .layer(index) }
        }
        switch name {
        case "token_embd.weight", "model.embed_tokens.weight": return .embedding
        case "output_norm.weight", "output.weight", "model.norm.weight", "lm_head.weight": return .head
        default:
            // MLX-quantized checkpoints name the embedding's scales and biases alongside it.
            if name.hasPrefix("model.embed_tokens.") { return .embedding }
            if name.hasPrefix("lm_head.") || name.hasPrefix("model.norm.") { return .head }
            return .shared
        }
    }

    /// Whether a tensor of that name belongs to this selection.
    public func contains(_ name: String) -> Bool {
        switch Self.role(of: name) {
        case .layer(let index): return layers.contains(index)
        case .embedding: return embedding
        case .head: return head
        case .shared: return true
        }
    }
}

extension GGUFFile {
    /// The tensors of a selection, in file order.
    public func tensors(in selection: TensorSelection) -> [GGUFTensorInfo] {
        tensors.filter { selection.contains($0.name) }
    }
}
