import Foundation
import Testing

/// The committed protoc-c output must be what scripts/generate-proto.sh makes from Protos/schemas.proto.
@Suite struct GeneratedProtoTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let protocAvailable = ["/usr/bin/protoc-c", "/usr/local/bin/protoc-c"].contains {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    @Test(
        .enabled(
            if: protocAvailable,
            "protoc-c is not installed (apt-get install protobuf-c-compiler): cannot check the generated code"))
    func committedCodeMatchesTheProto() throws {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("proto-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [Self.root.appendingPathComponent("scripts/generate-proto.sh").path, output.path]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        for file in ["schemas.pb-c.c", "include/schemas.pb-c.h"] {
            let fresh = try Data(contentsOf: output.appendingPathComponent(file))
            let committed = try Data(contentsOf: Self.root.appendingPathComponent("Sources/CTLLMProto/\(file)"))
            #expect(fresh == committed, "Sources/CTLLMProto/\(file) is stale: run scripts/generate-proto.sh")
        }
    }
}
