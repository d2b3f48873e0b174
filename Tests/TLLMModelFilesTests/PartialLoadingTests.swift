import Foundation
import Testing

@testable import TLLMModelFiles

@Suite struct PartialLoadingTests {
    @Test func selectionsClassifyBothNamingSchemes() {
        let worker = TensorSelection(layers: 0..<15)
        #expect(worker.contains("blk.0.attn_q.weight") && worker.contains("model.layers.14.mlp.up_proj.weight"))
        #expect(!worker.contains("blk.15.attn_q.weight") && !worker.contains("model.layers.15.mlp.up_proj.scales"))
        #expect(
            !worker.contains("token_embd.weight") && !worker.contains("output.weight")
                && !worker.contains("lm_head.weight"))
        let master = TensorSelection(layers: 0..<0, embedding: true, head: true)
        #expect(master.contains("token_embd.weight") && master.contains("model.embed_tokens.biases"))
        #expect(master.contains("output_norm.weight") && master.contains("model.norm.weight"))
        #expect(!master.contains("blk.0.attn_q.weight"))
    }

    /// A worker that maps the whole file but touches only its layers keeps only those resident.
    @Test(
        .enabled(if: TestFiles.defaultModelTestsEnabled, "default model not fetched (scripts/fetch-default-model.sh)"))
    func residentMemoryReflectsOnlyTheSelectedLayers() throws {
        let file = try GGUFFile(path: TestFiles.defaultModelPath)
        let fileBytes = try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int ?? 0
        let selection = file.tensors(in: TensorSelection(layers: 0..<15))
        let selectedBytes = selection.reduce(0) { $0 + $1.byteCount }
        #expect(selectedBytes < fileBytes / 2)

        let before = residentFileBytes()
        var checksum: UInt64 = 0
        for tensor in selection {
            let data = file.data(of: tensor)
            for offset in stride(from: 0, to: data.count, by: 4096) { checksum &+= UInt64(data[offset]) }
        }
        let grown = residentFileBytes() - before
        // Fault-around maps a little beyond what is touched; the rest of the file stays out.
        #expect(
            grown >= selectedBytes * 8 / 10, "grew \(grown) bytes for \(selectedBytes) selected (checksum \(checksum))")
        #expect(
            grown <= selectedBytes + fileBytes / 10, "grew \(grown) bytes for \(selectedBytes) selected of \(fileBytes)"
        )
    }

    /// File-backed resident bytes of this process (RssFile in /proc/self/status).
    private func residentFileBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("RssFile:") {
            let kilobytes = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return kilobytes * 1024
        }
        return 0
    }
}
