import Foundation

/// Element types of safetensors files that we read.
public enum SafetensorsDType: String, Sendable, Hashable {
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    /// Packed quantised weights of MLX checkpoints.
    case u32 = "U32"
    case i32 = "I32"
    case u8 = "U8"

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .f32, .u32, .i32: return 4
        case .f16, .bf16: return 2
        case .u8: return 1
        }
    }
}

/// One tensor of a safetensors file.
public struct SafetensorsTensorInfo: Sendable, Hashable {
    /// The tensor's name.
    public var name: String
    /// Element type.
    public var dtype: SafetensorsDType
    /// Shape, row-major.
    public var shape: [Int]
    /// Absolute byte range in the file.
    public var range: Range<Int>

    /// Number of elements.
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A `.safetensors` file: an 8-byte header length, a JSON header, then the tensor data,
/// mapped in memory.
public final class SafetensorsFile: Sendable {
    /// The file's path.
    public let path: String
    /// Tensors by name.
    public let tensors: [String: SafetensorsTensorInfo]
    /// The header's `__metadata__` strings.
    public let metadata: [String: String]
    private let mapping: MappedFile

    /// Opens and validates a file.
    public init(path: String) throws(ModelFileError) {
        self.path = path
        mapping = try MappedFile(path: path)
        let bytes = mapping.bytes
        guard bytes.count >= 8 else { throw ModelFileError(path, "truncated: no safetensors header") }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(bytes.count - 8), headerLength <= 100 << 20 else {
            throw ModelFileError(
                path, "safetensors header of \(headerLength) bytes does not fit in the file (\(bytes.count) bytes)")
        }
        let dataStart = 8 + Int(headerLength)
        let headerData = Data(UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart]))
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw ModelFileError(path, "the safetensors header is not a JSON object")
        }
        var tensors: [String: SafetensorsTensorInfo] = [:]
        var metadata: [String: String] = [:]
        for (name, entry) in header {
            if name == "__metadata__" {
                metadata = (entry as? [String: String]) ?? [:]
                continue
            }
            guard let entry = entry as? [String: Any], let dtypeName = entry["dtype"] as? String,
                let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2
            else {
                throw ModelFileError(path, "tensor \(name): malformed header entry")
            }
            guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
                throw ModelFileError(
                    path, "tensor \(name) has dtype \(dtypeName), which is not supported (F32, F16, BF16, U32, I32, U8)"
                )
            }
            // Dimensions of at most 2^40 (as for GGUF) and at most 4 of them: the byte count of any
            // accepted shape fits an Int, so no product below can overflow.
            guard shape.count <= 4, shape.allSatisfy({ $0 >= 0 && $0 < 1 << 40 }), offsets[0] >= 0,
                offsets[0] <= offsets[1]
            else {
                throw ModelFileError(path, "tensor \(name): bad shape \(shape) or offsets \(offsets)")
            }
            let (elements, overflow) = shape.reduce((1, false)) { partial, dimension in
                let (product, overflow) = partial.0.multipliedReportingOverflow(by: dimension)
                return (product, partial.1 || overflow)
            }
            let (byteCount, bytesOverflow) = elements.multipliedReportingOverflow(by: dtype.byteCount)
            guard !overflow, !bytesOverflow, offsets[1] - offsets[0] == byteCount else {
                throw ModelFileError(
                    path, "tensor \(name): \(offsets[1] - offsets[0]) bytes for shape \(shape) of \(dtypeName)")
            }
            guard offsets[1] <= bytes.count - dataStart else {
                throw ModelFileError(path, "tensor \(name) data runs past the end of the file: truncated file?")
            }
            tensors[name] = SafetensorsTensorInfo(
                name: name, dtype: dtype, shape: shape, range: (dataStart + offsets[0])..<(dataStart + offsets[1]))
        }
        // Tensors must not share bytes: a file whose tensors overlap is corrupt (or crafted).
        let ranges = tensors.values.filter { !$0.range.isEmpty }.sorted { $0.range.lowerBound < $1.range.lowerBound }
        for (first, second) in zip(ranges, ranges.dropFirst()) where second.range.lowerBound < first.range.upperBound {
            throw ModelFileError(path, "tensors \(first.name) and \(second.name) overlap in the file")
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// The raw bytes of a tensor (valid while this object lives).
    public func data(of tensor: SafetensorsTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: mapping.bytes[tensor.range])
    }
}
