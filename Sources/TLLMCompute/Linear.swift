import COpenBLAS
import CTLLMKernels
import Foundation
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
    static let sgemmMinimumRows = 64
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

    /// y[rows × outputs] = x[rows × inputs] · Wᵀ. With `int8Activations`, one-row products (a
    /// single sequence's decode) of Q4_0 / Q4_1 / Q8_0 weights quantise x to 8 bits and use
    /// integer dot products, four weight rows at a time. Several rows share each dequantised
    /// weight block in the float kernel instead, which the 8-bit path cannot.
    func apply(
        _ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, pool: ComputePool,
        int8Activations: Bool = false
    ) {
        withExtendedLifetime(owner) {
            if int8Activations && rows == 1 && tllm_q8_supported(type) != 0 {
                let status = tllm_matmul_rows_q8(
                    pool.pointer, type, base, rowBytes, outputs, inputs, x, inputs, rows, y, outputs)
                precondition(status == 0, "8-bit matmul on weight type \(type) failed")
                return
            }
            if rows < Self.sgemmMinimumRows || type == Int32(TLLM_TYPE_F32.rawValue) && rows < 2 {
                let status = tllm_matmul_rows(
                    pool.pointer, type, base, rowBytes, outputs, inputs, x, inputs, rows, y, outputs)
                precondition(status == 0, "matmul on an unsupported weight type \(type)")
                return
            }
            // Many rows: each pool thread dequantises its own tiles of weight rows and runs a
            // single-threaded sgemm on them (OpenBLAS's own threads would spin against ours).
            var job = TiledProduct(
                type: type, weights: base, rowBytes: rowBytes, outputs: outputs, inputs: inputs, x: x, rows: rows, y: y)
            withUnsafeMutablePointer(to: &job) { pointer in
                tllm_pool_run(
                    pool.pointer,
                    { context, index, count in
                        context!.assumingMemoryBound(to: TiledProduct.self).pointee.run(
                            thread: Int(index), of: Int(count))
                    }, pointer)
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

/// y = x · Wᵀ for many rows, split by output tiles over the pool's threads.
private struct TiledProduct {
    let type: Int32
    let weights: UnsafeRawPointer
    let rowBytes: Int
    let outputs: Int
    let inputs: Int
    let x: UnsafePointer<Float>
    let rows: Int
    let y: UnsafeMutablePointer<Float>

    func run(thread: Int, of threads: Int) {
        let tiles = (outputs + Linear.tileRows - 1) / Linear.tileRows
        var tile: UnsafeMutablePointer<Float>?
        defer { tile?.deallocate() }
        for index in stride(from: thread, to: tiles, by: threads) {
            let start = index * Linear.tileRows
            let count = min(Linear.tileRows, outputs - start)
            let matrix: UnsafePointer<Float>
            if type == Int32(TLLM_TYPE_F32.rawValue) {
                matrix = (weights + start * rowBytes).assumingMemoryBound(to: Float.self)
            } else {
                if tile == nil { tile = .allocate(capacity: Linear.tileRows * inputs) }
                tllm_dequantize_rows(type, weights, rowBytes, inputs, start, count, tile!)
                matrix = UnsafePointer(tile!)
            }
            // y[:, start ..< start+count] = x · tileᵀ, written with row stride `outputs`.
            cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(count), Int32(inputs), 1, x, Int32(inputs),
                matrix, Int32(inputs), 0, y + start, Int32(outputs))
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

/// How a shard or head computes.
public struct ComputeOptions: Sendable, Hashable {
    /// Element type of the KV cache.
    public enum CacheElement: String, Sendable, Hashable, CaseIterable {
        case float32, float16

        var byteCount: Int { self == .float32 ? 4 : 2 }
        var kernelType: Int32 { self == .float32 ? Int32(TLLM_TYPE_F32.rawValue) : Int32(TLLM_TYPE_F16.rawValue) }
    }

    /// Quantise activations to 8 bits for one-row products of Q4_0 / Q4_1 / Q8_0 weights, the
    /// LM head included (llama.cpp's approach: faster single-sequence decode, not bit-faithful
    /// to the float path).
    public var int8Activations: Bool
    /// KV cache precision: float16 halves its memory.
    public var kvCache: CacheElement
    /// Most bytes the shard's KV pages may hold together (nil: `defaultKVCacheBudget`).
    public var kvCacheBudget: Int?

    /// A quarter of the machine's memory. Pages are reserved, not committed: memory is only
    /// used as positions are written.
    public static var defaultKVCacheBudget: Int { Int(min(ProcessInfo.processInfo.physicalMemory / 4, 1 << 40)) }

    public init(int8Activations: Bool = false, kvCache: CacheElement = .float32, kvCacheBudget: Int? = nil) {
        self.int8Activations = int8Activations
        self.kvCache = kvCache
        self.kvCacheBudget = kvCacheBudget
    }
}

/// Why a model cannot be computed.
public enum ComputeError: Error, CustomStringConvertible, Equatable {
    case badWeight(String)
    case badInput(String)

    public var description: String {
        switch self {
        case .badWeight(let message), .badInput(let message):
            return message
        }
    }
}
