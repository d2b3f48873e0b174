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
///
/// With integer activations (`ComputeOptions.activations` int16 or int8), Q4_0 / Q4_1 / Q8_0
/// matrices of whole 16-row groups are repacked once into interleaved groups
/// (docs/packed-weights.md) and the file's pages are released, so the copy costs no memory;
/// products on them then use the packed integer kernel.
struct Linear: @unchecked Sendable {
    let outputs: Int
    let inputs: Int
    private let type: Int32
    private let rowBytes: Int
    private let base: UnsafeRawPointer
    /// Whether `base` holds the packed 16-row groups instead of rows.
    private let packed: Bool
    /// How activations meet quantised weights.
    private let activations: ComputeOptions.Activations
    /// Keeps the mapping or the converted copy alive.
    private let owner: AnyObject

    /// Batches of at least this many rows go through dequantise + sgemm.
    static let sgemmMinimumRows = 64
    /// With int16 activations on a CPU with AMX, batches of at least this many rows go through
    /// split-bfloat16 tile products (`tllm_matmul_split_bf16`; Benchmarks/kernels/prefill.sh:
    /// 16 rows run faster on the packed integer kernel, 32 on the tiles).
    static let splitMinimumRows = 32
    /// Rows of weights dequantised per sgemm tile (bounded scratch: 256 × inputs floats).
    static let tileRows = 256

    /// The weight of `tensor`. Repacking runs on the calling thread: a compute pool may be busy
    /// with another shard's step while this one loads.
    init(_ tensor: WeightTensor, options: ComputeOptions = ComputeOptions()) throws {
        guard tensor.shape.count == 2 else {
            throw ComputeError.badWeight("\(tensor.name) is not a matrix: \(tensor.shape)")
        }
        outputs = tensor.shape[0]
        inputs = tensor.shape[1]
        activations = options.activations
        var packed = false
        switch tensor.storage {
        case .gguf(let ggml, let bytes):
            type = Int32(bitPattern: ggml.rawValue)
            rowBytes = bytes.count / outputs
            if options.activations != .float32 && tllm_q8_packable(type, outputs, inputs) != 0 {
                let copy = PackedStorage(byteCount: bytes.count)
                let status = tllm_q8_pack(nil, type, bytes.baseAddress, rowBytes, outputs, inputs, copy.pointer)
                precondition(status == 0, "packing \(tensor.name) failed")
                Self.releasePages(of: bytes)
                base = UnsafeRawPointer(copy.pointer)
                owner = copy
                packed = true
            } else {
                base = bytes.baseAddress!
                owner = tensor.owner
            }
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
        self.packed = packed
    }

    /// Drops the mapped file pages of a weight that was copied (they are read back from the
    /// file should anything touch them again), so the copy does not double the resident size.
    private static func releasePages(of bytes: UnsafeRawBufferPointer) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: bytes.baseAddress!) + page - 1) / page * page
        let end = (Int(bitPattern: bytes.baseAddress!) + bytes.count) / page * page
        guard end > start, let address = UnsafeMutableRawPointer(bitPattern: start) else { return }
        madvise(address, end - start, MADV_DONTNEED)
    }

    /// What the rows of a product are. The kernel follows the kind, never the number of rows,
    /// so that a request's numbers do not depend on what it shares a step with.
    public enum RowKind: Sendable, Hashable {
        /// Prompt tokens (prefill), for any number of rows: with int16 on a CPU with AMX the
        /// split-bfloat16 tiles; else with int16 / int8 the integer kernels of `generated`
        /// (exact per row); with float32, or weights without an 8-bit kernel, dequantise + sgemm
        /// (faster, but OpenBLAS's result for a row depends on the rows beside it).
        case prompt
        /// Generated tokens fed back (decode) and the LM head's rows: the integer dot-product
        /// kernels that read each weight once (packed, or the row layout's 8-bit kernel) with
        /// int16 / int8, the float row kernel with float32, for any number of rows.
        case generated
    }

    /// y[rows × outputs] = x[rows × inputs] · Wᵀ, on the kernel of `kind` (see `RowKind`):
    /// with int16 and int8 every row's result is the same whatever rows share the call.
    /// Without a kind, it follows the row count: many rows (`sgemmMinimumRows`, or
    /// `splitMinimumRows` with int16 on AMX) as prompt rows, fewer as generated ones.
    func apply(
        _ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, pool: ComputePool,
        kind: RowKind? = nil
    ) {
        guard rows > 0 else { return }
        withExtendedLifetime(owner) {
            let split = activations == .int16 && tllm_split_bf16_supported(type, inputs) != 0
            let kind =
                kind ?? (rows >= (split ? Self.splitMinimumRows : Self.sgemmMinimumRows) ? .prompt : .generated)
            switch kind {
            case .prompt:
                if split
                    && tllm_matmul_split_bf16(
                        pool.pointer, type, base, rowBytes, packed ? 1 : 0, outputs, inputs, x, inputs, rows, y,
                        outputs) == 0
                {
                    return
                }
                // Without AMX, int16 / int8 prompt rows take the integer kernels too: they are
                // exact per row, where sgemm is not (docs/compute.md, "Batch invariance").
                if packed && activations != .float32 {
                    return packedProduct(x, rows: rows, into: y, pool: pool)
                }
                if activations != .float32 && tllm_q8_supported(type) != 0 {
                    return rowsProduct(x, rows: rows, into: y, pool: pool)
                }
                tiledProduct(x, rows: rows, into: y, pool: pool)
            case .generated:
                if packed && activations != .float32 {
                    return packedProduct(x, rows: rows, into: y, pool: pool)
                }
                if activations != .float32 && tllm_q8_supported(type) != 0 {
                    return rowsProduct(x, rows: rows, into: y, pool: pool)
                }
                let status = tllm_matmul_rows(
                    pool.pointer, type, base, rowBytes, outputs, inputs, x, inputs, rows, y, outputs)
                precondition(status == 0, "matmul on an unsupported weight type \(type)")
            }
        }
    }

    private func rowsProduct(
        _ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, pool: ComputePool
    ) {
        let status = tllm_matmul_rows_q8(
            pool.pointer, type, base, rowBytes, outputs, inputs, x, inputs, rows, activations.planes, y, outputs)
        precondition(status == 0, "8-bit matmul on weight type \(type) failed")
    }

    private func packedProduct(
        _ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, pool: ComputePool
    ) {
        let status = tllm_matmul_packed_q8(
            pool.pointer, type, base, outputs, inputs, x, inputs, rows, activations.planes, y, outputs)
        precondition(status == 0, "packed integer matmul on weight type \(type) failed")
    }

    /// Each pool thread dequantises its own tiles of weight rows and runs a single-threaded
    /// sgemm on them (OpenBLAS's own threads would spin against ours).
    /// OpenBLAS's result for a row depends on where the row sits among the others (its place in
    /// the micro-kernel's columns), so this path is not batch-invariant (see `RowKind`).
    private func tiledProduct(
        _ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, pool: ComputePool
    ) {
        var job = TiledProduct(
            type: type, weights: base, rowBytes: rowBytes, packed: packed, outputs: outputs, inputs: inputs, x: x,
            rows: rows, y: y)
        withUnsafeMutablePointer(to: &job) { pointer in
            tllm_pool_run(
                pool.pointer,
                { context, index, count in
                    context!.assumingMemoryBound(to: TiledProduct.self).pointee.run(thread: Int(index), of: Int(count))
                }, pointer)
        }
    }

    /// One row of the weight as float32 (embedding lookup).
    func row(_ index: Int, into output: UnsafeMutablePointer<Float>) {
        withExtendedLifetime(owner) {
            TiledProduct.dequantize(
                type, base, rowBytes: rowBytes, packed: packed, inputs: inputs,
                rows: index..<(index + 1), into: output)
        }
    }
}

/// y = x · Wᵀ for many rows, split by output tiles over the pool's threads.
private struct TiledProduct {
    let type: Int32
    let weights: UnsafeRawPointer
    let rowBytes: Int
    let packed: Bool
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
                Self.dequantize(
                    type, weights, rowBytes: rowBytes, packed: packed, inputs: inputs, rows: start..<(start + count),
                    into: tile!)
                matrix = UnsafePointer(tile!)
            }
            // y[:, start ..< start+count] = x · tileᵀ, written with row stride `outputs`.
            cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(count), Int32(inputs), 1, x, Int32(inputs),
                matrix, Int32(inputs), 0, y + start, Int32(outputs))
        }
    }

    /// Weight rows as float32, from either layout.
    static func dequantize(
        _ type: Int32, _ weights: UnsafeRawPointer, rowBytes: Int, packed: Bool, inputs: Int, rows: Range<Int>,
        into output: UnsafeMutablePointer<Float>
    ) {
        let status =
            packed
            ? tllm_dequantize_packed(type, weights, inputs, rows.lowerBound, rows.count, output)
            : tllm_dequantize_rows(type, weights, rowBytes, inputs, rows.lowerBound, rows.count, output)
        precondition(status == 0, "dequantising weight type \(type) failed")
    }
}

/// A 64-byte-aligned heap copy of packed weights.
final class PackedStorage: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    init(byteCount: Int) { pointer = .allocate(byteCount: max(byteCount, 1), alignment: 64) }
    deinit { pointer.deallocate() }
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

    /// How activations meet Q4_0 / Q4_1 / Q8_0 weights in products (the LM head included).
    public enum Activations: String, Sendable, Hashable, CaseIterable {
        /// Weights dequantised to float32 times float32 activations: the reference's arithmetic.
        case float32
        /// About 16 bits of each activation, within float rounding of float32 in the reference
        /// tests. Few rows (decode): quantised per 32 values into two 8-bit planes (the second is
        /// the first's residual) on packed weights with integer dot products, twice the integer
        /// work of int8 and about as fast where memory bounds decode. Many rows (prefill) on a CPU
        /// with AMX: bfloat16 hi + lo splits of activations and weights on tiles (docs/amx.md).
        case int16
        /// 8 bits, as llama.cpp computes: the fastest, not faithful to the float path.
        case int8

        /// 8-bit planes per activation row in the packed kernel.
        var planes: Int32 { self == .int8 ? 1 : 2 }

        /// The commands' `--activations VALUE`, where `--int8_activations` is short for int8;
        /// nil for an unknown value.
        public init?(flag value: String, int8Shorthand: Bool) {
            guard let parsed = Self(rawValue: value) else { return nil }
            self = int8Shorthand ? .int8 : parsed
        }

        /// What the commands say of an unknown `--activations` value.
        public static let flagError = "--activations must be one of " + allCases.map(\.rawValue).joined(separator: ", ")

        /// The commands' default: it passes the same reference tests as float32 (docs/compute.md)
        /// and decodes several times faster. `ComputeOptions()` keeps float32, the reference.
        public static let commandDefault = Activations.int16

        /// Help for the commands' `--activations`.
        public static let help =
            "How activations meet Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K weights: float32 (the reference's arithmetic), int16 (two 8-bit planes; as faithful in the reference tests, faster), int8 (as llama.cpp: fastest, not faithful)."
    }

    /// How activations meet quantised weights.
    public var activations: Activations
    /// KV cache precision: float16 halves its memory.
    public var kvCache: CacheElement
    /// Most bytes the shard's KV pages may hold together (nil: `defaultKVCacheBudget`).
    public var kvCacheBudget: Int?

    /// A quarter of the machine's memory. Pages are reserved, not committed: memory is only
    /// used as positions are written.
    public static var defaultKVCacheBudget: Int { Int(min(ProcessInfo.processInfo.physicalMemory / 4, 1 << 40)) }

    public init(activations: Activations = .float32, kvCache: CacheElement = .float32, kvCacheBudget: Int? = nil) {
        self.activations = activations
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

extension ModelWeights {
    /// A weight that must have `shape` (`[outputs, inputs]`, or `[count]` for a vector); any other
    /// shape is a load error naming the file and the tensor, never a kernel reading past it.
    func tensor(_ role: TensorRole, shape expected: [Int]) throws(ModelFileError) -> WeightTensor {
        let tensor = try tensor(role)
        guard tensor.shape == expected else {
            throw ModelFileError(
                path, "tensor \(tensor.name) has shape \(tensor.shape), but the hyperparameters need \(expected)")
        }
        return tensor
    }
}
