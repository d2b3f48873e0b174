import COpenBLAS
import CTLLMKernels
import TLLMModelFiles

/// A linear layer's weight matrix `[outputs, inputs]`, computed as `y = x Wᵀ` on rows of x.
///
/// GGUF weights stay in their file format (mapped, never copied) and are read by the
/// quantised dot-product kernels; for many rows at once (prefill) they are dequantised a
/// tile at a time and multiplied with OpenBLAS sgemm. Float safetensors are used in place
/// (F32, F16) or converted once (BF16, MLX-quantised: to float32).
struct Linear: @unchecked Sendable {
    let outputs: Int
    let inputs: Int
    private let type: Int32
    private let rowBytes: Int
    private let base: UnsafeRawPointer
    /// Keeps the mapping or the converted copy alive.
    private let owner: AnyObject

    /// Batches of at least this many rows go through dequantise + sgemm.
    static let sgemmMinimumRows = 8
    /// Rows of weights dequantised per sgemm tile (bounded scratch: 256 × inputs floats).
    static let tileRows = 256

    init(_ tensor: WeightTensor) throws {
        guard tensor.shape.count == 2 else {
            throw ComputeError.badWeight("\(tensor.name) is not a matrix: \(tensor.shape)")
        }
        outputs = tensor.shape[0]
        inputs = tensor.shape[1]
        switch tensor.storage {
        case .gguf(let ggml, let bytes):
            type = Int32(bitPattern: ggml.rawValue)
            rowBytes = bytes.count / outputs
            base = bytes.baseAddress!
            owner = tensor.owner
        case .float(.f32, let bytes):
            type = Int32(TLLM_TYPE_F32.rawValue)
            rowBytes = inputs * 4
            base = bytes.baseAddress!
            owner = tensor.owner
        case .float(.f16, let bytes):
            type = Int32(TLLM_TYPE_F16.rawValue)
            rowBytes = inputs * 2
            base = bytes.baseAddress!
            owner = tensor.owner
        default:
            let values = FloatStorage(tensor.dequantize())
            type = Int32(TLLM_TYPE_F32.rawValue)
            rowBytes = inputs * 4
            base = UnsafeRawPointer(values.pointer)
            owner = values
        }
    }

    /// y[rows × outputs] = x[rows × inputs] · Wᵀ.
    func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, pool: ComputePool) {
        withExtendedLifetime(owner) {
            if rows < Self.sgemmMinimumRows || type == Int32(TLLM_TYPE_F32.rawValue) && rows < 2 {
                let status = tllm_matmul_rows(
                    pool.pointer, type, base, rowBytes, outputs, inputs, x, inputs, rows, y, outputs)
                precondition(status == 0, "matmul on an unsupported weight type \(type)")
                return
            }
            if type == Int32(TLLM_TYPE_F32.rawValue) {
                cblas_sgemm(
                    CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outputs), Int32(inputs), 1, x,
                    Int32(inputs), base.assumingMemoryBound(to: Float.self), Int32(inputs), 0, y, Int32(outputs))
                return
            }
            let tile = UnsafeMutablePointer<Float>.allocate(capacity: Self.tileRows * inputs)
            defer { tile.deallocate() }
            var start = 0
            while start < outputs {
                let count = min(Self.tileRows, outputs - start)
                tllm_dequantize_rows(type, base, rowBytes, inputs, start, count, tile)
                // y[:, start ..< start+count] = x · tileᵀ, written with row stride `outputs`.
                cblas_sgemm(
                    CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(count), Int32(inputs), 1, x,
                    Int32(inputs),
                    tile, Int32(inputs), 0, y + start, Int32(outputs))
                start += count
            }
        }
    }

    /// One row of the weight as float32 (embedding lookup).
    func row(_ index: Int, into output: UnsafeMutablePointer<Float>) {
        withExtendedLifetime(owner) {
            _ = tllm_dequantize_rows(type, base, rowBytes, inputs, index, 1, output)
        }
    }
}

/// A heap array of floats with a stable address.
final class FloatStorage: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    init(_ values: [Float]) {
        count = values.count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(from: values, count: count)
    }
    init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: count)
    }
    deinit { pointer.deallocate() }
}

/// Why a model cannot be computed.
public enum ComputeError: Error, CustomStringConvertible, Equatable {
    case badWeight(String)
    case contextExceeded(String)
    case badInput(String)

    public var description: String {
        switch self {
        case .badWeight(let message), .contextExceeded(let message), .badInput(let message): return message
        }
    }
}
