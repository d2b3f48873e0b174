import CTLLMKernels

/// One tensor as a GGUF file describes it.
public struct GGUFTensorInfo: Sendable, Hashable {
    /// The tensor's name (`blk.3.attn_q.weight`).
    public var name: String
    /// Dimensions in GGUF order: `dimensions[0]` is the row length (the contiguous axis).
    public var dimensions: [Int]
    /// Element type.
    public var type: GGMLType
    /// Absolute offset of the data in the file.
    public var offset: Int
    /// Bytes of data.
    public var byteCount: Int

    /// Number of weights.
    public var elementCount: Int { dimensions.reduce(1, *) }
    /// The shape in row-major (numpy / PyTorch) order: `[rows, rowLength]` for a matrix.
    public var shape: [Int] { dimensions.reversed() }
}

/// A GGUF file (versions 2 and 3): metadata, tensor infos, and the tensor data mapped in
/// memory, never copied wholesale.
public final class GGUFFile: Sendable {
    /// The file's path.
    public let path: String
    /// The format version (2 or 3).
    public let version: Int
    /// Metadata key/value pairs.
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensor infos in file order.
    public let tensors: [GGUFTensorInfo]
    /// Alignment of tensor data (`general.alignment`, 32 by default).
    public let alignment: Int
    /// Offset of the tensor data section.
    public let dataOffset: Int
    private let tensorIndex: [String: Int]
    private let mapping: MappedFile

    /// Opens and validates `path`. Every problem is a `ModelFileError` naming the file.
    public init(path: String) throws(ModelFileError) {
        self.path = path
        mapping = try MappedFile(path: path)
        var reader = GGUFReader(bytes: mapping.bytes, path: path)
        let magic = try reader.uint32()
        guard magic == 0x4655_4747 else {  // "GGUF" little-endian
            throw ModelFileError(
                path, "not a GGUF file (magic 0x\(String(magic, radix: 16)), expected 0x46554747 \"GGUF\")")
        }
        let version = Int(try reader.uint32())
        guard version == 2 || version == 3 else {
            throw ModelFileError(path, "GGUF version \(version) is not supported (2 and 3 are)")
        }
        self.version = version
        let tensorCount = try reader.count(of: "tensors", minimumBytesEach: 24)
        let keyCount = try reader.count(of: "metadata entries", minimumBytesEach: 12)

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        keys.reserveCapacity(keyCount)
        for _ in 0..<keyCount {
            let key = try reader.string()
            let value = try reader.value(type: try reader.uint32(), key: key)
            if metadata.updateValue(value, forKey: key) != nil {
                throw ModelFileError(path, "metadata key \(key) appears twice")
            }
            keys.append(key)
        }
        self.metadata = metadata
        self.metadataKeys = keys

        // A value that fits no Int (2^63 as uint64) is refused, not taken as absent.
        let declaredAlignment = metadata["general.alignment"]
        let alignment = declaredAlignment.map { $0.int ?? 0 } ?? 32
        guard alignment > 0, alignment <= 1 << 16, alignment & (alignment - 1) == 0 else {
            throw ModelFileError(
                path, "general.alignment \(declaredAlignment.map { "\($0)" } ?? "") is not a power of two up to 65536")
        }
        self.alignment = alignment

        var infos: [(name: String, dimensions: [Int], type: GGMLType, relativeOffset: Int)] = []
        infos.reserveCapacity(tensorCount)
        for _ in 0..<tensorCount {
            let name = try reader.string()
            let dimensionCount = Int(try reader.uint32())
            guard (1...4).contains(dimensionCount) else {
                throw ModelFileError(path, "tensor \(name) has \(dimensionCount) dimensions (1 to 4 allowed)")
            }
            var dimensions: [Int] = []
            for _ in 0..<dimensionCount {
                let dimension = try reader.uint64()
                guard dimension > 0, dimension < 1 << 40 else {
                    throw ModelFileError(path, "tensor \(name) has dimension \(dimension)")
                }
                dimensions.append(Int(dimension))
            }
            let type = GGMLType(rawValue: try reader.uint32())
            let offset = try reader.uint64()
            guard offset < UInt64(Int.max) else { throw ModelFileError(path, "tensor \(name) has offset \(offset)") }
            infos.append((name, dimensions, type, Int(offset)))
        }
        let dataOffset = (reader.offset + alignment - 1) / alignment * alignment
        self.dataOffset = dataOffset

        var tensors: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        for info in infos {
            guard info.type.isSupported else {
                throw ModelFileError(
                    path,
                    "tensor \(info.name) has type \(info.type) (id \(info.type.rawValue)), which is not supported "
                        + "(supported: \(GGMLType.supported.map(\.description).joined(separator: ", ")))")
            }
            let (elements, overflow) = info.dimensions.reduce((1, false)) { partial, dimension in
                let (product, overflow) = partial.0.multipliedReportingOverflow(by: dimension)
                return (product, partial.1 || overflow)
            }
            guard !overflow else {
                throw ModelFileError(
                    path, "tensor \(info.name) has dimensions \(info.dimensions) whose product overflows")
            }
            guard let byteCount = info.type.byteCount(elements: elements, rowLength: info.dimensions[0]) else {
                throw ModelFileError(
                    path,
                    "tensor \(info.name) of type \(info.type) has rows of \(info.dimensions[0]) weights, "
                        + "not a whole number of \(info.type.blockSize)-weight blocks")
            }
            guard info.relativeOffset % alignment == 0 else {
                throw ModelFileError(
                    path, "tensor \(info.name) data offset \(info.relativeOffset) is not aligned to \(alignment)")
            }
            let (start, startOverflow) = dataOffset.addingReportingOverflow(info.relativeOffset)
            guard !startOverflow, start <= mapping.bytes.count, byteCount <= mapping.bytes.count - start else {
                throw ModelFileError(
                    path,
                    "tensor \(info.name) data (\(byteCount) bytes at offset \(start)) runs past the end of the file "
                        + "(\(mapping.bytes.count) bytes): truncated file?")
            }
            guard index.updateValue(tensors.count, forKey: info.name) == nil else {
                throw ModelFileError(path, "tensor \(info.name) appears twice")
            }
            tensors.append(
                GGUFTensorInfo(
                    name: info.name, dimensions: info.dimensions, type: info.type, offset: start, byteCount: byteCount))
        }
        self.tensors = tensors
        self.tensorIndex = index
    }

    /// The info of a tensor, or an error naming the file and the missing tensor.
    public func tensor(named name: String) throws(ModelFileError) -> GGUFTensorInfo {
        guard let position = tensorIndex[name] else { throw ModelFileError(path, "tensor \(name) is missing") }
        return tensors[position]
    }

    /// Whether the file has a tensor of that name.
    public func hasTensor(named name: String) -> Bool { tensorIndex[name] != nil }

    /// The raw bytes of a tensor, mapped from the file (valid while this object lives).
    public func data(of tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: mapping.bytes[tensor.offset..<(tensor.offset + tensor.byteCount)])
    }

    /// The tensor's weights as float32 (reference dequantisation).
    public func dequantize(_ tensor: GGUFTensorInfo) -> [Float] {
        let count = tensor.elementCount
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            let result = tllm_dequantize_ref(
                Int32(bitPattern: tensor.type.rawValue), data(of: tensor).baseAddress, buffer.baseAddress, count)
            precondition(result == 0, "validated tensor \(tensor.name) failed to dequantise")
            initialized = count
        }
    }

    /// Asks the kernel to load (or drop) the pages of these tensors.
    public func advise(_ tensors: [GGUFTensorInfo], willNeed: Bool) {
        for tensor in tensors { mapping.advise(tensor.offset..<(tensor.offset + tensor.byteCount), willNeed: willNeed) }
    }
}

/// A bounds-checked little-endian cursor over the mapped header.
private struct GGUFReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset = 0

    private mutating func take(_ count: Int, for what: @autoclosure () -> String) throws(ModelFileError)
        -> UnsafeRawBufferPointer
    {
        guard count >= 0, count <= bytes.count - offset else {
            throw ModelFileError(
                path, "truncated: \(what()) needs \(count) bytes at offset \(offset), the file has \(bytes.count)")
        }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }

    private mutating func load<T: FixedWidthInteger>(_: T.Type) throws(ModelFileError) -> T {
        let raw = try take(MemoryLayout<T>.size, for: "a \(T.self)")
        return T(littleEndian: raw.loadUnaligned(as: T.self))
    }

    mutating func uint32() throws(ModelFileError) -> UInt32 { try load(UInt32.self) }
    mutating func uint64() throws(ModelFileError) -> UInt64 { try load(UInt64.self) }

    /// A count that must be plausible for the bytes left (each element at least `minimumBytesEach`).
    mutating func count(of what: String, minimumBytesEach: Int) throws(ModelFileError) -> Int {
        let value = try uint64()
        guard value <= UInt64((bytes.count - offset) / max(minimumBytesEach, 1)) else {
            throw ModelFileError(path, "claims \(value) \(what), more than the file can hold: corrupt or truncated")
        }
        return Int(value)
    }

    mutating func string() throws(ModelFileError) -> String {
        let length = try uint64()
        guard length <= UInt64(bytes.count - offset) else {
            throw ModelFileError(
                path, "truncated: a string of \(length) bytes at offset \(offset), the file has \(bytes.count)")
        }
        return String(decoding: try take(Int(length), for: "a string"), as: UTF8.self)
    }

    mutating func value(type: UInt32, key: String, depth: Int = 0) throws(ModelFileError) -> GGUFValue {
        switch type {
        case 0: return .uint8(try load(UInt8.self))
        case 1: return .int8(try load(Int8.self))
        case 2: return .uint16(try load(UInt16.self))
        case 3: return .int16(try load(Int16.self))
        case 4: return .uint32(try load(UInt32.self))
        case 5: return .int32(try load(Int32.self))
        case 6: return .float32(Float(bitPattern: try load(UInt32.self)))
        case 7:
            let byte = try load(UInt8.self)
            guard byte <= 1 else { throw ModelFileError(path, "metadata \(key): bool value \(byte)") }
            return .bool(byte == 1)
        case 8: return .string(try string())
        case 9:
            guard depth < 4 else { throw ModelFileError(path, "metadata \(key): arrays nested too deeply") }
            let elementType = try uint32()
            let count = try self.count(of: "array elements in \(key)", minimumBytesEach: 1)
            var elements: [GGUFValue] = []
            elements.reserveCapacity(count)
            for _ in 0..<count { elements.append(try value(type: elementType, key: key, depth: depth + 1)) }
            return .array(elements)
        case 10: return .uint64(try load(UInt64.self))
        case 11: return .int64(try load(Int64.self))
        case 12: return .float64(Double(bitPattern: try load(UInt64.self)))
        default: throw ModelFileError(path, "metadata \(key) has unknown value type \(type)")
        }
    }
}
