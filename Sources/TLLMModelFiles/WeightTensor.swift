import CTLLMKernels

/// A weight tensor of a model, whatever file it comes from, viewed without copying.
///
/// `shape` is row-major (`[out, in]` for a linear layer, as PyTorch writes it).
public struct WeightTensor: @unchecked Sendable {
    /// How the weights are stored.
    public enum Storage {
        /// A GGUF tensor of any supported type (float or block-quantised).
        case gguf(GGMLType, UnsafeRawBufferPointer)
        /// Plain floats from safetensors (F32, F16 or BF16).
        case float(SafetensorsDType, UnsafeRawBufferPointer)
        /// MLX affine quantisation: packed `bits`-bit values in little-endian uint32 words,
        /// `x = scale * q + bias` per group of `groupSize` weights along each row.
        case mlxQuantized(
            packed: UnsafeRawBufferPointer, scales: WeightTensor.FloatView, biases: WeightTensor.FloatView,
            groupSize: Int, bits: Int)
    }

    /// A float tensor's bytes with its element type (MLX scales and biases).
    public struct FloatView {
        public var dtype: SafetensorsDType
        public var bytes: UnsafeRawBufferPointer
    }

    /// The tensor's name in its file.
    public var name: String
    /// Row-major shape of the dequantised tensor.
    public var shape: [Int]
    /// The stored bytes.
    public var storage: Storage
    /// Keeps the file mapping alive as long as the view: hold it while using `storage`.
    public let owner: AnyObject

    /// Number of weights.
    public var elementCount: Int { shape.reduce(1, *) }

    /// Part `index` of `shape[0]` equal parts along the first dimension (one expert of a merged
    /// expert tensor), without copying. Every stored array (packed weights, scales, biases) holds
    /// the parts one after another, each the same size.
    public func slice(_ index: Int) -> WeightTensor {
        let parts = shape[0]
        precondition(shape.count >= 2 && (0..<parts).contains(index))
        func part(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
            let size = bytes.count / parts
            return UnsafeRawBufferPointer(rebasing: bytes[(index * size)..<((index + 1) * size)])
        }
        let sliced: Storage
        switch storage {
        case .gguf(let type, let bytes): sliced = .gguf(type, part(bytes))
        case .float(let dtype, let bytes): sliced = .float(dtype, part(bytes))
        case .mlxQuantized(let packed, let scales, let biases, let groupSize, let bits):
            sliced = .mlxQuantized(
                packed: part(packed), scales: FloatView(dtype: scales.dtype, bytes: part(scales.bytes)),
                biases: FloatView(dtype: biases.dtype, bytes: part(biases.bytes)), groupSize: groupSize, bits: bits)
        }
        return WeightTensor(name: "\(name)[\(index)]", shape: Array(shape.dropFirst()), storage: sliced, owner: owner)
    }

    /// The weights as float32 (reference path; the compute kernels read `storage` directly).
    public func dequantize() -> [Float] {
        let count = elementCount
        return [Float](unsafeUninitializedCapacity: count) { output, initialized in
            initialized = count
            guard count > 0 else { return }
            withExtendedLifetime(owner) {
                switch storage {
                case .gguf(let type, let bytes):
                    let status = tllm_dequantize_ref(
                        Int32(bitPattern: type.rawValue), bytes.baseAddress, output.baseAddress, count)
                    precondition(status == 0, "validated tensor \(name) failed to dequantise")
                case .float(let dtype, let bytes):
                    FloatView(dtype: dtype, bytes: bytes).read(into: output)
                case .mlxQuantized(let packed, let scales, let biases, let groupSize, let bits):
                    let scaleValues = [Float](unsafeUninitializedCapacity: count / groupSize) { buffer, n in
                        scales.read(into: buffer)
                        n = count / groupSize
                    }
                    let biasValues = [Float](unsafeUninitializedCapacity: count / groupSize) { buffer, n in
                        biases.read(into: buffer)
                        n = count / groupSize
                    }
                    let rowLength = shape.last ?? count
                    let wordsPerRow = rowLength * bits / 32
                    let mask = UInt64((1 << bits) - 1)
                    for row in 0..<(count / rowLength) {
                        let rowWords = packed.baseAddress! + row * wordsPerRow * 4
                        for column in 0..<rowLength {
                            // Element i occupies bits [i*bits, (i+1)*bits) of the row's little-endian bit stream.
                            let bit = column * bits
                            let word = bit / 32
                            var chunk = UInt64(
                                UInt32(littleEndian: rowWords.loadUnaligned(fromByteOffset: word * 4, as: UInt32.self)))
                            if bit % 32 + bits > 32 {
                                chunk |=
                                    UInt64(
                                        UInt32(
                                            littleEndian: rowWords.loadUnaligned(
                                                fromByteOffset: (word + 1) * 4, as: UInt32.self))) << 32
                            }
                            let q = Float((chunk >> UInt64(bit % 32)) & mask)
                            let group = (row * rowLength + column) / groupSize
                            output[row * rowLength + column] = scaleValues[group] * q + biasValues[group]
                        }
                    }
                }
            }
        }
    }
}

extension WeightTensor.FloatView {
    /// Converts to float32 into `output` (which holds exactly the element count).
    func read(into output: UnsafeMutableBufferPointer<Float>) {
        guard let base = bytes.baseAddress, let out = output.baseAddress else { return }
        switch dtype {
        case .f32:
            UnsafeMutableRawBufferPointer(output).copyMemory(from: bytes)
        case .f16:
            tllm_f16_to_f32(base.assumingMemoryBound(to: UInt16.self), out, output.count)
        case .bf16:
            for index in 0..<output.count {
                let bits =
                    UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))) << 16
                out[index] = Float(bitPattern: bits)
            }
        case .u32, .i32, .u8:
            preconditionFailure("not a float tensor")
        }
    }
}

extension GGUFFile {
    /// A view of a tensor's weights.
    public func weight(_ info: GGUFTensorInfo) -> WeightTensor {
        WeightTensor(name: info.name, shape: info.shape, storage: .gguf(info.type, data(of: info)), owner: self)
    }
}
