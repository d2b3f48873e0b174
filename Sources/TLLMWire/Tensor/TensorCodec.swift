import CLZ4
import CTLLMKernels

/// Converts `[rows, hidden]` float32 activations to and from the wire's tensor payload.
///
/// The contract (`tllm-protocol.md`, "Tensor payload"): `data` holds the row-major
/// tensor as IEEE float16 little-endian; when `shape[0] >= 64` those bytes are
/// additionally an LZ4 frame (what Python's `lz4.frame.compress` writes). A receiver
/// decides by `shape[0]` alone.
public enum TensorCodec {
    /// Payloads with at least this many rows are LZ4-frame compressed.
    public static let compressionRowThreshold = 64
    /// Largest decoded payload accepted (bytes of float16), a guard against absurd shapes.
    public static let maximumDecodedBytes = 1 << 31

    /// A decoded tensor.
    public struct Decoded: Sendable, Equatable {
        /// Number of rows (tokens).
        public var rows: Int
        /// Row width (hidden size).
        public var columns: Int
        /// Row-major values.
        public var values: [Float]
    }

    /// Encodes `rows × columns` row-major floats. Non-finite values, and finite ones
    /// that overflow float16, are refused: a peer would compute garbage from them.
    public static func encode(_ values: [Float], rows: Int, columns: Int) throws(TensorCodecError) -> BFloat16Tensor {
        let result = values.withUnsafeBufferPointer { buffer in
            Result { () throws(TensorCodecError) in try encode(buffer, rows: rows, columns: columns) }
        }
        return try result.get()
    }

    /// Encodes `rows × columns` row-major floats from a buffer (see `encode(_:rows:columns:)`).
    public static func encode(
        _ values: UnsafeBufferPointer<Float>, rows: Int, columns: Int
    ) throws(TensorCodecError) -> BFloat16Tensor {
        let count = try elementCount(rows: rows, columns: columns)
        guard values.count == count else {
            throw .shapeMismatch("shape [\(rows), \(columns)] needs \(count) values, got \(values.count)")
        }
        var half = [UInt16](repeating: 0, count: count)
        half.withUnsafeMutableBufferPointer { out in
            if count > 0 { tllm_f32_to_f16(values.baseAddress!, out.baseAddress!, count) }
        }
        let bad = half.withUnsafeBufferPointer { tllm_f16_first_nonfinite($0.baseAddress, count) }
        if bad < count {
            let value = values[bad]
            let what =
                value.isFinite ? "\(value) overflows float16 (largest finite 65504)" : "non-finite value \(value)"
            throw .nonFinite("\(what) at row \(bad / columns), column \(bad % columns)")
        }
        // float16 bytes are little-endian on every platform we run on (x86-64, arm64).
        let raw = half.withUnsafeBytes { Array($0) }
        let data = rows >= compressionRowThreshold ? try lz4FrameCompress(raw) : raw
        return BFloat16Tensor(data: data, shape: [Int32(rows), Int32(columns)])
    }

    /// Decodes a payload to float32 values. With `expectedRows` / `expectedColumns`, a payload of
    /// another shape is refused before anything is decompressed or allocated.
    public static func decode(
        _ tensor: BFloat16Tensor, expectedRows: Int? = nil, expectedColumns: Int? = nil
    ) throws(TensorCodecError) -> Decoded {
        let (rows, columns, half) = try decodeFloat16(
            tensor, expectedRows: expectedRows, expectedColumns: expectedColumns)
        var values = [Float](repeating: 0, count: half.count)
        values.withUnsafeMutableBufferPointer { out in
            half.withUnsafeBufferPointer { input in
                if !input.isEmpty { tllm_f16_to_f32(input.baseAddress!, out.baseAddress!, input.count) }
            }
        }
        return Decoded(rows: rows, columns: columns, values: values)
    }

    /// Decodes a payload to its float16 bit patterns (`[rows, columns]`, row-major),
    /// refusing shape/data mismatches and non-finite values.
    public static func decodeFloat16(
        _ tensor: BFloat16Tensor, expectedRows: Int? = nil, expectedColumns: Int? = nil
    ) throws(TensorCodecError) -> (rows: Int, columns: Int, bits: [UInt16]) {
        guard tensor.shape.count == 2 else {
            throw .badShape("tensor shape must be [rows, hidden], got \(tensor.shape)")
        }
        let rows = Int(tensor.shape[0])
        let columns = Int(tensor.shape[1])
        if expectedRows.map({ $0 != rows }) ?? false || expectedColumns.map({ $0 != columns }) ?? false {
            throw .shapeMismatch(
                "hidden_states is [\(rows), \(columns)], expected [\(expectedRows.map(String.init) ?? "any"), \(expectedColumns.map(String.init) ?? "any")]"
            )
        }
        let count = try elementCount(rows: rows, columns: columns)
        let raw: [UInt8]
        if rows >= compressionRowThreshold {
            raw = try lz4FrameDecompress(tensor.data, expectedBytes: count * 2)
        } else {
            raw = tensor.data
        }
        guard raw.count == count * 2 else {
            throw .shapeMismatch(
                "shape [\(rows), \(columns)] needs \(count * 2) bytes of float16, payload has \(raw.count)")
        }
        let half = [UInt16](unsafeUninitializedCapacity: count) { buffer, initialized in
            raw.withUnsafeBytes { bytes in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: bytes)
            }
            initialized = count
        }
        let bad = half.withUnsafeBufferPointer { tllm_f16_first_nonfinite($0.baseAddress, count) }
        if bad < count {
            throw .nonFinite("payload holds a non-finite float16 at row \(bad / columns), column \(bad % columns)")
        }
        return (rows, columns, half)
    }

    private static func elementCount(rows: Int, columns: Int) throws(TensorCodecError) -> Int {
        guard rows >= 0, columns > 0 || (columns == 0 && rows == 0) else {
            throw .badShape("tensor shape [\(rows), \(columns)] has a negative or empty dimension")
        }
        let (count, overflow) = rows.multipliedReportingOverflow(by: columns)
        guard !overflow, count <= maximumDecodedBytes / 2 else {
            throw .badShape("tensor shape [\(rows), \(columns)] is larger than \(maximumDecodedBytes) bytes")
        }
        return count
    }

    // MARK: LZ4 frame

    /// Compresses as Python's `lz4.frame.compress` does by default (64 KB linked blocks, content size stored).
    static func lz4FrameCompress(_ input: [UInt8]) throws(TensorCodecError) -> [UInt8] {
        var preferences = LZ4F_preferences_t()
        preferences.frameInfo.contentSize = UInt64(input.count)
        let bound = LZ4F_compressFrameBound(input.count, &preferences)
        var failure: String?
        let output = [UInt8](unsafeUninitializedCapacity: bound) { buffer, initialized in
            let written = input.withUnsafeBytes { source in
                LZ4F_compressFrame(buffer.baseAddress, bound, source.baseAddress, input.count, &preferences)
            }
            if LZ4F_isError(written) != 0 {
                failure = String(cString: LZ4F_getErrorName(written))
                initialized = 0
            } else {
                initialized = written
            }
        }
        if let failure { throw .lz4("LZ4 frame compression failed: \(failure)") }
        return output
    }

    /// Decompresses one LZ4 frame whose content must be exactly `expectedBytes` long.
    static func lz4FrameDecompress(_ input: [UInt8], expectedBytes: Int) throws(TensorCodecError) -> [UInt8] {
        guard input.count >= 4, input[0] == 0x04, input[1] == 0x22, input[2] == 0x4D, input[3] == 0x18 else {
            throw .lz4("payload of a tensor with >= \(compressionRowThreshold) rows is not an LZ4 frame (bad magic)")
        }
        var context: OpaquePointer?
        let created = LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))
        guard LZ4F_isError(created) == 0, let context else { throw .lz4("cannot create an LZ4 decompression context") }
        defer { LZ4F_freeDecompressionContext(context) }

        var failure: String?
        let output = [UInt8](unsafeUninitializedCapacity: expectedBytes) { buffer, initialized in
            initialized = 0
            input.withUnsafeBytes { source in
                var consumed = 0
                while true {
                    var sourceSize = source.count - consumed
                    let remaining = expectedBytes - initialized
                    // Once the expected bytes are in, a one-byte scratch catches content beyond them.
                    var scratch: UInt8 = 0
                    var destinationSize = remaining > 0 ? remaining : 1
                    let hint = withUnsafeMutablePointer(to: &scratch) { scratchPointer in
                        LZ4F_decompress(
                            context,
                            remaining > 0
                                ? UnsafeMutableRawPointer(buffer.baseAddress! + initialized)
                                : UnsafeMutableRawPointer(scratchPointer),
                            &destinationSize, source.baseAddress! + consumed, &sourceSize, nil)
                    }
                    if LZ4F_isError(hint) != 0 {
                        failure = "corrupt LZ4 frame: \(String(cString: LZ4F_getErrorName(hint)))"
                        return
                    }
                    if remaining == 0 && destinationSize > 0 {
                        failure = "LZ4 frame decompresses to more than the \(expectedBytes) bytes its shape allows"
                        return
                    }
                    if remaining > 0 { initialized += destinationSize }
                    consumed += sourceSize
                    if hint == 0 {
                        if consumed != source.count {
                            failure = "\(source.count - consumed) bytes after the end of the LZ4 frame"
                        }
                        return
                    }
                    if consumed == source.count {
                        failure = "truncated LZ4 frame"
                        return
                    }
                }
            }
        }
        if let failure { throw .lz4(failure) }
        return output
    }
}

/// Why a tensor payload could not be encoded or decoded.
public enum TensorCodecError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The shape is not `[rows, hidden]` with sane dimensions.
    case badShape(String)
    /// The values or bytes do not match the shape.
    case shapeMismatch(String)
    /// NaN, infinity, or a value outside float16's range.
    case nonFinite(String)
    /// The LZ4 frame is missing, corrupt or of the wrong size.
    case lz4(String)

    public var description: String {
        switch self {
        case .badShape(let message), .shapeMismatch(let message), .nonFinite(let message), .lz4(let message):
            return message
        }
    }
}
