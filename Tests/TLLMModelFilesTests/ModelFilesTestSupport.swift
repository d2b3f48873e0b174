import Foundation
import Testing

/// Where the fixtures and the embedded default model are.
enum TestFiles {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func fixture(_ name: String) throws -> Data {
        let url = try #require(
            Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil), "fixture \(name)")
        return try Data(contentsOf: url)
    }

    /// The default model (scripts/fetch-default-model.sh), or $TLLM_DEFAULT_MODEL.
    static let defaultModelPath: String =
        ProcessInfo.processInfo.environment["TLLM_DEFAULT_MODEL"]
        ?? repositoryRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path

    /// Tests that need the default model run when it is there, and always in CI (where a
    /// missing model is a failure: .ci/run fetches it).
    static var defaultModelTestsEnabled: Bool {
        FileManager.default.fileExists(atPath: defaultModelPath) || ProcessInfo.processInfo.environment["CI"] != nil
    }

    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tllm-\(UUID().uuidString.prefix(8))-\(name)")
            .path
    }
}

/// Writes small GGUF files for tests: any metadata value type, tensors with chosen bytes.
struct GGUFTestWriter {
    enum Value {
        case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
        case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
        case array([Value])
    }

    struct Tensor {
        var name: String
        var dimensions: [UInt64]
        var type: UInt32
        var data: [UInt8]
        /// Override the stored offset (for corrupt files).
        var offset: UInt64?
    }

    var version: UInt32 = 3
    var magic: [UInt8] = Array("GGUF".utf8)
    var metadata: [(String, Value)] = []
    var tensors: [Tensor] = []
    var alignment = 32

    func bytes() -> [UInt8] {
        var out = magic
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func string(_ s: String) {
            u64(UInt64(s.utf8.count))
            out += Array(s.utf8)
        }
        func typeID(_ v: Value) -> UInt32 {
            switch v {
            case .uint8: 0
            case .int8: 1
            case .uint16: 2
            case .int16: 3
            case .uint32: 4
            case .int32: 5
            case .float32: 6
            case .bool: 7
            case .string: 8
            case .array: 9
            case .uint64: 10
            case .int64: 11
            case .float64: 12
            }
        }
        func value(_ v: Value) {
            switch v {
            case .uint8(let x): out.append(x)
            case .int8(let x): out.append(UInt8(bitPattern: x))
            case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { out += $0 }
            case .int16(let x): withUnsafeBytes(of: x.littleEndian) { out += $0 }
            case .uint32(let x): u32(x)
            case .int32(let x): withUnsafeBytes(of: x.littleEndian) { out += $0 }
            case .float32(let x): u32(x.bitPattern)
            case .bool(let x): out.append(x ? 1 : 0)
            case .string(let x): string(x)
            case .uint64(let x): u64(x)
            case .int64(let x): withUnsafeBytes(of: x.littleEndian) { out += $0 }
            case .float64(let x): u64(x.bitPattern)
            case .array(let items):
                u32(items.first.map(typeID) ?? 4)
                u64(UInt64(items.count))
                items.forEach(value)
            }
        }
        u32(version)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (key, v) in metadata {
            string(key)
            u32(typeID(v))
            value(v)
        }
        var offsets: [UInt64] = []
        var running: UInt64 = 0
        for tensor in tensors {
            offsets.append(running)
            running += UInt64((tensor.data.count + alignment - 1) / alignment * alignment)
        }
        for (tensor, offset) in zip(tensors, offsets) {
            string(tensor.name)
            u32(UInt32(tensor.dimensions.count))
            tensor.dimensions.forEach(u64)
            u32(tensor.type)
            u64(tensor.offset ?? offset)
        }
        while out.count % alignment != 0 { out.append(0) }
        for tensor in tensors {
            out += tensor.data
            while out.count % alignment != 0 { out.append(0) }
        }
        return out
    }

    func write(named name: String) throws -> String {
        let path = TestFiles.temporaryPath(name)
        try Data(bytes()).write(to: URL(fileURLWithPath: path))
        return path
    }
}
