import CTLLMKernels
import Foundation
import Testing

@testable import TLLMModelFiles

@Suite struct GGUFFileTests {
    @Test(
        .enabled(if: TestFiles.defaultModelTestsEnabled, "default model not fetched (scripts/fetch-default-model.sh)"))
    func defaultModelMatchesTheGGUFPackage() throws {
        let file = try GGUFFile(path: TestFiles.defaultModelPath)
        let summaryJSON = try JSONSerialization.jsonObject(with: TestFiles.fixture("smollm2_gguf_summary.json"))
        let summary = try #require(summaryJSON as? [String: Any])
        #expect(file.version == summary["version"] as? Int)

        let metadata = try #require(summary["metadata"] as? [String: [String: Any]])
        #expect(Set(file.metadata.keys) == Set(metadata.keys))
        for (key, expected) in metadata {
            let value = try #require(file.metadata[key], "\(key)")
            switch expected["type"] as? String {
            case "STRING":
                #expect(value.string == expected["value"] as? String, "\(key)")
            case "array":
                let array = try #require(value.array, "\(key)")
                #expect(array.count == expected["length"] as? Int, "\(key)")
                if expected["element_type"] as? String == "STRING" {
                    let strings = try #require(value.strings)
                    #expect(Array(strings.prefix(5)) == expected["head"] as? [String], "\(key)")
                    #expect(Array(strings.suffix(3)) == expected["tail"] as? [String], "\(key)")
                } else {
                    let numbers = array.compactMap(\.double)
                    let head = (expected["head"] as? [NSNumber])?.map(\.doubleValue)
                    #expect(Array(numbers.prefix(5)) == head, "\(key)")
                }
            case "BOOL":
                #expect(value.bool == expected["value"] as? Bool, "\(key)")
            default:
                let number = try #require(expected["value"] as? NSNumber)
                #expect(
                    value.double == number.doubleValue || Float(value.double ?? .nan) == number.floatValue, "\(key)")
            }
        }

        let tensors = try #require(summary["tensors"] as? [[String: Any]])
        #expect(file.tensors.count == tensors.count)
        for (ours, theirs) in zip(file.tensors, tensors) {
            #expect(ours.name == theirs["name"] as? String)
            #expect(ours.dimensions == theirs["dimensions"] as? [Int], "\(ours.name)")
            #expect(ours.type.description == theirs["type"] as? String, "\(ours.name)")
            #expect(ours.offset == theirs["offset"] as? Int, "\(ours.name)")
            #expect(ours.byteCount == theirs["n_bytes"] as? Int, "\(ours.name)")
        }
        // The shapes the model code relies on.
        #expect(try file.tensor(named: "token_embd.weight").shape == [49152, 576])
        #expect(try file.tensor(named: "blk.0.attn_k.weight").shape == [192, 576])
        #expect(file.metadata["llama.block_count"]?.int == 30)
    }

    @Test(arguments: [
        "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
        "IQ4_XS",
    ])
    func dequantisationIsBitIdenticalToTheGGUFPackage(type: String) throws {
        let fixtureJSON = try JSONSerialization.jsonObject(with: TestFiles.fixture("dequant_\(type).json"))
        let fixture = try #require(fixtureJSON as? [String: Any])
        let typeID = try #require(GGMLType.supported.first { $0.description == type })
        for source in ["random", "real"] {
            guard let entry = fixture[source] as? [String: Any] else { continue }
            let blocksText = try #require(entry["blocks"] as? String)
            let expectedText = try #require(entry["expected"] as? String)
            let blocks = try #require(Data(base64Encoded: blocksText))
            let expected = try #require(Data(base64Encoded: expectedText))
            let count = try #require(entry["count"] as? Int)
            var output = [Float](repeating: .nan, count: count)
            let status = blocks.withUnsafeBytes {
                tllm_dequantize_ref(Int32(typeID.rawValue), $0.baseAddress, &output, count)
            }
            #expect(status == 0)
            let expectedValues = expected.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            let mismatches = zip(output, expectedValues).filter { $0.bitPattern != $1.bitPattern }
            #expect(
                mismatches.isEmpty,
                "\(type) \(source): \(mismatches.count) of \(count) differ, first \(mismatches.first.map { "\($0)" } ?? "")"
            )
        }
    }

    @Test func readsEveryValueTypeAndVersion2() throws {
        for version: UInt32 in [2, 3] {
            var writer = GGUFTestWriter(version: version)
            writer.metadata = [
                ("u8", .uint8(200)), ("i8", .int8(-5)), ("u16", .uint16(65000)), ("i16", .int16(-30000)),
                ("u32", .uint32(4_000_000_000)), ("i32", .int32(-7)), ("f32", .float32(0.5)), ("flag", .bool(true)),
                ("name", .string("héllo ✓")), ("u64", .uint64(1 << 40)), ("i64", .int64(-(1 << 40))),
                ("f64", .float64(2.25)),
                ("words", .array([.string("a"), .string(""), .string("日本")])),
                ("ids", .array([.int32(3), .int32(-4)])),
                ("nested", .array([.array([.uint8(1)]), .array([.uint8(2), .uint8(3)])])),
            ]
            let values = (0..<64).map { Float($0) - 20.5 }
            writer.tensors = [
                .init(name: "w", dimensions: [32, 2], type: 0, data: values.withUnsafeBytes { Array($0) })
            ]
            let path = try writer.write(named: "values.gguf")
            defer { try? FileManager.default.removeItem(atPath: path) }
            let file = try GGUFFile(path: path)
            #expect(file.version == Int(version))
            #expect(file.metadataKeys.first == "u8" && file.metadataKeys.count == 15)
            #expect(file.metadata["u8"] == .uint8(200) && file.metadata["i8"] == .int8(-5))
            #expect(file.metadata["u16"]?.int == 65000 && file.metadata["i16"]?.int == -30000)
            #expect(file.metadata["u32"]?.int == 4_000_000_000 && file.metadata["i32"]?.int == -7)
            #expect(file.metadata["f32"] == .float32(0.5) && file.metadata["flag"]?.bool == true)
            #expect(file.metadata["name"]?.string == "héllo ✓")
            #expect(file.metadata["u64"]?.int == 1 << 40 && file.metadata["i64"]?.int == -(1 << 40))
            #expect(file.metadata["f64"]?.double == 2.25)
            #expect(file.metadata["words"]?.strings == ["a", "", "日本"])
            #expect(file.metadata["ids"]?.ints == [3, -4])
            #expect(file.metadata["nested"]?.array?.count == 2)
            let tensor = try file.tensor(named: "w")
            #expect(tensor.shape == [2, 32] && tensor.type == .f32)
            #expect(file.dequantize(tensor) == values)
        }
    }

    /// Each broken file is a clear error naming the file and the problem, never a crash.
    @Test func brokenFilesAreClearErrors() throws {
        var good = GGUFTestWriter()
        good.metadata = [("general.architecture", .string("llama"))]
        good.tensors = [.init(name: "blk.0.w", dimensions: [32], type: 8, data: Array(repeating: 0, count: 34))]
        let goodBytes = good.bytes()

        var wrongMagic = good
        wrongMagic.magic = Array("GGML".utf8)
        var unknownType = good
        unknownType.tensors[0].type = 16  // IQ2_XXS: a real ggml type we do not read
        var pastTheEnd = good
        pastTheEnd.tensors[0].offset = 1 << 20
        var badRow = good
        badRow.tensors[0].dimensions = [31]
        var version1 = good
        version1.version = 1

        let cases: [(String, [UInt8], String)] = [
            ("truncated", Array(goodBytes.prefix(goodBytes.count - 40)), "truncated"),
            ("header-only", Array(goodBytes.prefix(10)), "truncated"),
            ("magic", wrongMagic.bytes(), "not a GGUF file"),
            ("type", unknownType.bytes(), "IQ2_XXS"),
            ("offset", pastTheEnd.bytes(), "past the end"),
            ("row", badRow.bytes(), "whole number"),
            ("version", version1.bytes(), "version 1"),
            ("empty", [], "truncated"),
        ]
        for (name, bytes, problem) in cases {
            let path = TestFiles.temporaryPath("\(name).gguf")
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            defer { try? FileManager.default.removeItem(atPath: path) }
            do {
                _ = try GGUFFile(path: path)
                Issue.record("\(name): expected an error")
            } catch {
                #expect(error.path == path)
                #expect(error.description.contains(problem), "\(name): \(error)")
            }
        }
        let file = try GGUFFile(path: try good.write(named: "good.gguf"))
        #expect(throws: ModelFileError.self) { try file.tensor(named: "output.weight") }
        #expect(throws: ModelFileError.self) { try GGUFFile(path: "/nonexistent/model.gguf") }
    }
}
