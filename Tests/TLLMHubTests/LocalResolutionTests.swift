import Foundation
import Testing

@testable import TLLMHub

/// Paths that exist on disk, and repos already in the cache: no server, and the endpoint points
/// at a closed port so an accidental request would fail the test.
@Suite struct LocalResolutionTests {
    @Test func ggufFileResolvesToItself() async throws {
        try await withTemporaryDirectory { home in
            let file = home.appendingPathComponent("model-Q4_1.gguf")
            try Data("GGUF".utf8).write(to: file)
            let model = try await makeLocator(home: home).resolve(file.path)
            #expect(model.format == .gguf)
            #expect(model.primaryFile == file)
            #expect(model.modelURL == file)
            #expect(model.files == ["model-Q4_1.gguf"])
            #expect(model.source == .local)
        }
    }

    @Test func firstPartOfASplitGGUFBringsTheRest() async throws {
        try await withTemporaryDirectory { home in
            for part in 1...2 {
                try Data([UInt8(part)]).write(to: home.appendingPathComponent("m-0000\(part)-of-00002.gguf"))
            }
            let model = try await makeLocator(home: home).resolve(
                home.appendingPathComponent("m-00001-of-00002.gguf").path)
            #expect(model.files == ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"])
        }
    }

    @Test func checkpointDirectoryResolves() async throws {
        try await withTemporaryDirectory { home in
            let folder = home.appendingPathComponent("ckpt")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for name in ["config.json", "tokenizer.json", "model.safetensors", "notes.txt"] {
                try Data("{}".utf8).write(to: folder.appendingPathComponent(name))
            }
            let model = try await makeLocator(home: home).resolve(folder.path)
            #expect(model.format == .safetensors)
            #expect(model.directory.path == folder.path)
            #expect(Set(model.files) == ["config.json", "model.safetensors", "tokenizer.json"])
            #expect(model.primaryFile == nil)
        }
    }

    @Test func directoryWithSeveralGGUFFilesNeedsAChoice() async throws {
        try await withTemporaryDirectory { home in
            for name in ["m-Q4_0.gguf", "m-Q8_0.gguf"] { try Data().write(to: home.appendingPathComponent(name)) }
            let locator = makeLocator(home: home)
            let error = await expectHubError(.ambiguousModelFile) { _ = try await locator.resolve(home.path) }
            #expect(error?.message.contains("m-Q8_0.gguf") == true)
            let model = try await locator.resolve(home.path, files: .gguf("Q8_0"))
            #expect(model.primaryFile?.lastPathComponent == "m-Q8_0.gguf")
        }
    }

    @Test func missingPathIsReportedAsSuch() async throws {
        try await withTemporaryDirectory { home in
            let locator = makeLocator(home: home)
            let error = await expectHubError(.invalidModelPath) {
                _ = try await locator.resolve("./no/such/model.gguf")
            }
            #expect(error?.location?.hasSuffix("no/such/model.gguf") == true)
            await expectHubError(.invalidModelPath) {
                _ = try await locator.resolve(home.appendingPathComponent("x").path)
            }
        }
    }

    @Test func cachedRepositoryResolvesWithoutNetwork() async throws {
        try await withTemporaryDirectory { home in
            let commit = String(repeating: "c0ffee12", count: 5)
            let repoFolder = home.appendingPathComponent("hf/hub/models--org--tiny")
            let snapshot = repoFolder.appendingPathComponent("snapshots/\(commit)")
            let blobs = repoFolder.appendingPathComponent("blobs")
            try FileManager.default.createDirectory(at: snapshot, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: blobs, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(
                at: repoFolder.appendingPathComponent("refs"), withIntermediateDirectories: true)
            try Data(commit.utf8).write(to: repoFolder.appendingPathComponent("refs/main"))
            for (index, name) in ["config.json", "tokenizer.json", "model.safetensors"].enumerated() {
                try Data("{\"n\":\(index)}".utf8).write(to: blobs.appendingPathComponent("blob\(index)"))
                try FileManager.default.createSymbolicLink(
                    atPath: snapshot.appendingPathComponent(name).path, withDestinationPath: "../../blobs/blob\(index)")
            }

            // Offline too: a complete cache needs no network at all.
            for extra in [[:], ["HF_HUB_OFFLINE": "1"]] {
                let model = try await makeLocator(home: home, extra: extra).resolve("org/tiny")
                #expect(model.format == .safetensors)
                #expect(model.directory.path == snapshot.path)
                #expect(model.source == .hub(RepositoryReference(id: "org/tiny"), commit: commit))
                #expect(try String(contentsOf: model.url(for: "config.json"), encoding: .utf8) == "{\"n\":0}")
            }
            // A commit hash names the snapshot directly, no ref needed.
            let pinned = try await makeLocator(home: home, extra: ["HF_HUB_OFFLINE": "1"]).resolve("org/tiny@\(commit)")
            #expect(pinned.directory.path == snapshot.path)
        }
    }

    @Test func offlineWithoutCacheFailsClearly() async throws {
        try await withTemporaryDirectory { home in
            let locator = makeLocator(home: home, extra: ["HF_HUB_OFFLINE": "1"])
            let error = await expectHubError(.notCached) { _ = try await locator.resolve("org/absent") }
            #expect(error?.message.contains("HF_HUB_OFFLINE") == true)
            #expect(error?.repository == "org/absent")
        }
    }

    @Test func terminalRendererWritesPlainLinesWhenNotATerminal() {
        let output = ProgressText()
        let renderer = TerminalProgressRenderer(isTerminal: false, lineInterval: 3600) { output.append($0) }
        let base = DownloadProgress(
            repository: "org/m", file: "model.gguf", receivedBytes: 5_000_000, totalBytes: 20_000_000,
            bytesPerSecond: 2_500_000, isFinished: false)
        renderer.report(base)
        renderer.report(base)  // within the interval: dropped
        var done = base
        done.receivedBytes = 20_000_000
        done.isFinished = true
        renderer.report(done)
        #expect(
            output.text == "Downloading org/m/model.gguf: 5.0 MB of 20.0 MB (25%), 2.5 MB/s\n"
                + "Downloaded org/m/model.gguf: 20.0 MB of 20.0 MB (100%), 2.5 MB/s\n")

        let bar = TerminalProgressRenderer.bar(base, width: 8)
        #expect(bar == "model.gguf  25% |██░░░░░░| 5.0 MB/20.0 MB 2.5 MB/s")
    }
}

final class ProgressText: @unchecked Sendable {
    private let lock = NSLock()
    private var _text = ""
    var text: String { lock.withLock { _text } }
    func append(_ text: String) { lock.withLock { _text += text } }
}
