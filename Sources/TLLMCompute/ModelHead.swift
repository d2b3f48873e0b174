import CTLLMKernels
import TLLMModelFiles

/// The master's share of the model: token embedding, final norm and LM head.
public final class ModelHead {
    /// Hyperparameters.
    public let configuration: ModelConfiguration
    private let embedding: Linear
    private let outputNorm: FloatStorage
    private let output: Linear
    private let pool: ComputePool
    private let options: ComputeOptions
    private let model: any ModelWeights

    /// Loads the head's weights (the LM head reuses the embedding when tied).
    public init(model: any ModelWeights, pool: ComputePool, options: ComputeOptions = ComputeOptions()) throws {
        self.model = model
        self.options = options
        configuration = model.configuration
        self.pool = pool
        // Only an embedding that is also the LM head is worth packing for the integer paths.
        let tied = !model.hasTensor(.output)
        let matrix = [configuration.vocabularySize, configuration.hiddenSize]
        embedding = try Linear(model.tensor(.embedding, shape: matrix), options: tied ? options : ComputeOptions())
        outputNorm = FloatStorage(try model.tensor(.outputNorm, shape: [configuration.hiddenSize]).dequantize())
        output = tied ? embedding : try Linear(model.tensor(.output, shape: matrix), options: options)
    }

    /// Vocabulary size (rows of the LM head).
    public var vocabularySize: Int { output.outputs }

    /// Embedding rows of `tokens`, stacked.
    public func embed(_ tokens: [Int32]) throws -> [Float] {
        let width = configuration.hiddenSize
        for token in tokens where token < 0 || Int(token) >= embedding.outputs {
            throw ComputeError.badInput("token id \(token) is outside the vocabulary (0..<\(embedding.outputs))")
        }
        var rows = [Float](repeating: 0, count: tokens.count * width)
        rows.withUnsafeMutableBufferPointer { buffer in
            for (index, token) in tokens.enumerated() {
                embedding.row(Int(token), into: buffer.baseAddress! + index * width)
            }
        }
        return rows
    }

    /// Logits of each given row (final norm, then LM head): `rows × vocabularySize`.
    public func logits(_ hidden: [Float], rows: Int) -> [Float] {
        let width = configuration.hiddenSize
        precondition(hidden.count == rows * width)
        var normed = [Float](repeating: 0, count: hidden.count)
        tllm_rms_norm(hidden, outputNorm.pointer, &normed, rows, width, configuration.rmsNormEpsilon)
        var logits = [Float](repeating: 0, count: rows * output.outputs)
        normed.withUnsafeBufferPointer { input in
            logits.withUnsafeMutableBufferPointer { out in
                // One row per request, however many requests the step has: always the same kernel.
                output.apply(input.baseAddress!, rows: rows, into: out.baseAddress!, pool: pool, kind: .generated)
            }
        }
        return logits
    }
}
