import Foundation

/// A Hugging Face model directory: `config.json`, `model.safetensors` or shards listed in
/// `model.safetensors.index.json`, tokenizer files, optionally MLX-quantised weights
/// (`X.weight` packed uint32 with `X.scales` and `X.biases`).
public struct HuggingFaceModel: ModelWeights {
    public let path: String
    public let configuration: ModelConfiguration
    public var queryKeyRowsPermuted: Bool { false }
    /// The opened shards by file name (only those holding selected tensors).
    private let shards: [String: SafetensorsFile]
    /// Which shard holds each tensor.
    private let location: [String: String]

    /// `tokenizer.json`, if present.
    public var tokenizerJSON: URL? { existing("tokenizer.json") }
    /// `tokenizer_config.json` (chat template, special tokens), if present.
    public var tokenizerConfigJSON: URL? { existing("tokenizer_config.json") }
    /// `generation_config.json`, if present.
    public var generationConfigJSON: URL? { existing("generation_config.json") }

    /// Opens the directory, mapping only the shards that hold tensors of `selection`
    /// (all of them when nil).
    public init(directory: String, selection: TensorSelection? = nil) throws(ModelFileError) {
        path = directory
        let root = URL(fileURLWithPath: directory)
        let configURL = root.appendingPathComponent("config.json")
        guard let configData = try? Data(contentsOf: configURL) else {
            throw ModelFileError(
                configURL.path, "missing or unreadable (a Hugging Face model directory needs config.json)")
        }
        configuration = try ModelConfiguration(configJSON: configData, path: configURL.path)

        var location: [String: String] = [:]
        let indexURL = root.appendingPathComponent("model.safetensors.index.json")
        if FileManager.default.fileExists(atPath: indexURL.path) {
            guard let data = try? Data(contentsOf: indexURL),
                let index = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let weightMap = index["weight_map"] as? [String: String]
            else { throw ModelFileError(indexURL.path, "not a safetensors index (weight_map missing)") }
            location = weightMap
        } else {
            let single = root.appendingPathComponent("model.safetensors")
            guard FileManager.default.fileExists(atPath: single.path) else {
                throw ModelFileError(directory, "no model.safetensors or model.safetensors.index.json")
            }
            let file = try SafetensorsFile(path: single.path)
            for name in file.tensors.keys { location[name] = "model.safetensors" }
        }
        var shards: [String: SafetensorsFile] = [:]
        for (name, shard) in location where selection?.contains(name) ?? true && shards[shard] == nil {
            let shardPath = root.appendingPathComponent(shard).path
            guard FileManager.default.fileExists(atPath: shardPath) else {
                throw ModelFileError(
                    indexURL.path, "names shard \(shard) for tensor \(name), but \(shardPath) does not exist")
            }
            shards[shard] = try SafetensorsFile(path: shardPath)
        }
        for (name, shard) in location where shards[shard] != nil && shards[shard]!.tensors[name] == nil {
            throw ModelFileError(
                root.appendingPathComponent(shard).path, "tensor \(name) is missing (the index lists it here)")
        }
        self.shards = shards
        self.location = location
    }

    private func existing(_ name: String) -> URL? {
        let url = URL(fileURLWithPath: path).appendingPathComponent(name)
        return FileManager.default.fileExists(atPath: url.path) ? url : nil
    }

    private func info(_ name: String) -> (SafetensorsFile, SafetensorsTensorInfo)? {
        guard let shard = location[name].flatMap({ shards[$0] }), let info = shard.tensors[name] else { return nil }
        return (shard, info)
    }

    public func hasTensor(_ role: TensorRole) -> Bool { role.huggingFaceNames.contains { info($0) != nil } }

    public func tensor(_ role: TensorRole) throws(ModelFileError) -> WeightTensor {
        let name = role.huggingFaceNames.first { location[$0] != nil } ?? role.huggingFaceName
        guard let (file, info) = info(name) else {
            if location[name] != nil { throw ModelFileError(path, "tensor \(name) is not in the loaded selection") }
            throw ModelFileError(path, "tensor \(name) is missing")
        }
        switch info.dtype {
        case .f32, .f16, .bf16:
            return WeightTensor(
                name: name, shape: info.shape, storage: .float(info.dtype, file.data(of: info)), owner: file)
        case .u32:
            return try quantized(name: name, file: file, info: info)
        case .i32, .u8:
            throw ModelFileError(file.path, "tensor \(name) has dtype \(info.dtype.rawValue), not a weight type")
        }
    }

    /// An MLX-quantised weight: packed values with per-group scales and biases beside it.
    private func quantized(name: String, file: SafetensorsFile, info: SafetensorsTensorInfo) throws(ModelFileError)
        -> WeightTensor
    {
        guard let quantization = configuration.quantization else {
            throw ModelFileError(file.path, "tensor \(name) is packed uint32 but config.json has no quantization")
        }
        let stem = String(name.dropLast(".weight".count))
        guard let (scalesFile, scales) = self.info(stem + ".scales"),
            let (biasesFile, biases) = self.info(stem + ".biases")
        else { throw ModelFileError(file.path, "quantized tensor \(name) has no \(stem).scales / \(stem).biases") }
        guard info.shape.count == 2 else { throw ModelFileError(file.path, "quantized tensor \(name) is not a matrix") }
        let columns = info.shape[1] * 32 / quantization.bits
        let groups = info.shape[0] * columns / quantization.groupSize
        guard columns % quantization.groupSize == 0, scales.elementCount == groups, biases.elementCount == groups,
            [.f16, .bf16, .f32].contains(scales.dtype), scales.dtype == biases.dtype
        else {
            throw ModelFileError(
                file.path,
                "quantized tensor \(name): \(scales.elementCount) scales / \(biases.elementCount) biases "
                    + "for \(info.shape[0]) × \(columns) weights in groups of \(quantization.groupSize)")
        }
        return WeightTensor(
            name: name, shape: [info.shape[0], columns],
            storage: .mlxQuantized(
                packed: file.data(of: info),
                scales: .init(dtype: scales.dtype, bytes: scalesFile.data(of: scales)),
                biases: .init(dtype: biases.dtype, bytes: biasesFile.data(of: biases)),
                groupSize: quantization.groupSize, bits: quantization.bits),
            owner: ShardSet(files: [file, scalesFile, biasesFile]))
    }
}

/// Keeps several mappings alive behind one tensor view.
private final class ShardSet {
    let files: [SafetensorsFile]
    init(files: [SafetensorsFile]) { self.files = files }
}
