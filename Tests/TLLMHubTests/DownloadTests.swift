import Foundation
import Testing

@testable import TLLMHub

/// Downloads from the local test hub into a temporary `HF_HOME`.
@Suite(.timeLimit(.minutes(1))) struct DownloadTests {
    static let commit = String(repeating: "0123456789", count: 4)

    /// A sharded safetensors checkpoint; the weights are LFS files (served through the CDN).
    static func checkpoint() -> TestRepository {
        let index =
            #"{"metadata":{"total_size":1},"weight_map":{"#
            + #""a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#
        return TestRepository(
            id: "org/tiny-llama", commit: commit,
            files: [
                "config.json": Data(#"{"model_type":"llama"}"#.utf8),
                "tokenizer.json": Data(#"{"model":{}}"#.utf8),
                "tokenizer_config.json": Data("{}".utf8),
                "README.md": Data("# readme".utf8),
                "model.safetensors.index.json": Data(index.utf8),
                "model-00001-of-00002.safetensors": testBytes(300_000, seed: 1),
                "model-00002-of-00002.safetensors": testBytes(1_500_000, seed: 2),
                "original/consolidated.pth": testBytes(10, seed: 3),
            ],
            lfsFiles: ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
    }

    static func ggufRepository() -> TestRepository {
        TestRepository(
            id: "org/tiny-GGUF", commit: String(repeating: "abcdef0123", count: 4),
            files: [
                "README.md": Data("gguf".utf8),
                "tiny-Q4_K_M.gguf": testBytes(2_000_000, seed: 4),
                "tiny-Q8_0.gguf": testBytes(50_000, seed: 5),
            ],
            lfsFiles: ["tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf"])
    }

    @Test func downloadsACheckpointIntoTheCacheLayout() async throws {
        try await withTemporaryDirectory { home in
            let repo = Self.checkpoint()
            try await HubTestServer.with(repositories: [repo]) { server in
                let log = ProgressLog()
                let locator = makeLocator(home: home, endpoint: server.endpoint, onProgress: log.record)
                let model = try await locator.resolve("org/tiny-llama")

                let repoFolder = home.appendingPathComponent("hf/hub/models--org--tiny-llama")
                let snapshot = repoFolder.appendingPathComponent("snapshots/\(Self.commit)")
                #expect(model.format == .safetensors)
                #expect(model.directory.path == snapshot.path)
                #expect(model.source == .hub(RepositoryReference(id: "org/tiny-llama"), commit: Self.commit))
                #expect(
                    Set(model.files) == [
                        "config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json",
                        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                    ])
                // refs/main holds the commit, without a newline.
                #expect(
                    try String(contentsOf: repoFolder.appendingPathComponent("refs/main"), encoding: .utf8)
                        == Self.commit)
                // Every snapshot entry is a relative symlink to its blob, as huggingface_hub makes them.
                for file in model.files {
                    let data = try #require(repo.files[file])
                    let etag = TestRepository.etag(data)
                    let link = try FileManager.default.destinationOfSymbolicLink(
                        atPath: snapshot.appendingPathComponent(file).path)
                    #expect(link == "../../blobs/\(etag)")
                    #expect(try Data(contentsOf: repoFolder.appendingPathComponent("blobs/\(etag)")) == data)
                    #expect(try Data(contentsOf: model.url(for: file)) == data)
                }
                let blobs = try FileManager.default.contentsOfDirectory(
                    atPath: repoFolder.appendingPathComponent("blobs").path)
                #expect(!blobs.contains { $0.hasSuffix(".incomplete") })
                #expect(!blobs.contains(TestRepository.etag(repo.files["README.md"]!)))

                let requests = server.state.requests
                // The listing asks for sizes; the token-free CDN never sees credentials.
                #expect(requests.contains { $0.uri == "/api/models/org/tiny-llama/revision/main?blobs=true" })
                #expect(requests.filter(\.viaCDN).count == 2)
                #expect(requests.allSatisfy { $0.headers["authorization"] == nil })
                // HEAD for metadata did not follow the LFS redirect to the CDN.
                #expect(requests.filter { $0.viaCDN && $0.method == "HEAD" }.isEmpty)

                let reports = log.reports.filter { $0.file == "model-00002-of-00002.safetensors" }
                #expect(reports.last?.isFinished == true)
                #expect(reports.last?.receivedBytes == 1_500_000)
                #expect(reports.last?.totalBytes == 1_500_000)

                // Second time: straight from the cache.
                server.state.clearRequests()
                let again = try await locator.resolve("org/tiny-llama")
                #expect(again == model)
                #expect(server.state.requests.isEmpty)
            }
        }
    }

    @Test func ggufRepositoryNeedsAChoiceAndDownloadsOnlyIt() async throws {
        try await withTemporaryDirectory { home in
            let repo = Self.ggufRepository()
            try await HubTestServer.with(repositories: [repo]) { server in
                let locator = makeLocator(home: home, endpoint: server.endpoint)
                let error = await expectHubError(.ambiguousModelFile) { _ = try await locator.resolve("org/tiny-GGUF") }
                #expect(error?.message.contains("tiny-Q4_K_M.gguf") == true)
                #expect(error?.message.contains("tiny-Q8_0.gguf") == true)

                let model = try await locator.resolve("org/tiny-GGUF:Q8_0")
                #expect(model.format == .gguf)
                #expect(model.files == ["tiny-Q8_0.gguf"])
                #expect(try Data(contentsOf: try #require(model.primaryFile)) == repo.files["tiny-Q8_0.gguf"])
                #expect(!server.state.requests.contains { $0.uri.contains("Q4_K_M") })

                // The explicit selection works the same as the suffix, and now comes from the cache.
                server.state.clearRequests()
                let again = try await locator.resolve("org/tiny-GGUF", files: .gguf("tiny-Q8_0.gguf"))
                #expect(again.primaryFile == model.primaryFile)
                #expect(server.state.requests.isEmpty)
            }
        }
    }

    /// N of a `Range: bytes=N-` header.
    static func resumeOffset(_ range: String?) -> Int? {
        guard let range, range.hasPrefix("bytes="), range.hasSuffix("-") else { return nil }
        return Int(range.dropFirst(6).dropLast())
    }

    @Test func interruptedDownloadResumesWithRange() async throws {
        try await withTemporaryDirectory { home in
            let repo = Self.ggufRepository()
            let file = "tiny-Q4_K_M.gguf"
            let data = try #require(repo.files[file])
            try await HubTestServer.with(repositories: [repo]) { server in
                server.state.cutOnce = [file: 700_000]
                var locator = makeLocator(home: home, endpoint: server.endpoint)
                locator.maxAttempts = 1
                let error = await expectHubError(.network) { _ = try await locator.resolve("org/tiny-GGUF:Q4_K_M") }
                #expect(error?.file == file)
                #expect(error?.location?.contains("/org/tiny-GGUF/resolve/") == true)

                let partial = home.appendingPathComponent(
                    "hf/hub/models--org--tiny-GGUF/blobs/\(TestRepository.etag(data)).incomplete")
                // What reached the file before the cut: a prefix of the file (the HTTP client may not
                // hand over the last bytes it read before the connection broke).
                let kept = try Data(contentsOf: partial)
                #expect(kept.count <= 700_000)
                #expect(kept == data.prefix(kept.count))

                server.state.clearRequests()
                let model = try await locator.resolve("org/tiny-GGUF:Q4_K_M")
                #expect(try Data(contentsOf: try #require(model.primaryFile)) == data)
                let gets = server.state.requests.filter { $0.method == "GET" && $0.viaCDN }
                #expect(gets.count == 1)
                #expect(gets.first?.headers["range"] == (kept.isEmpty ? nil : "bytes=\(kept.count)-"))
                #expect(!FileManager.default.fileExists(atPath: partial.path))
            }
        }
    }

    @Test func retriesResumeWithinOneCall() async throws {
        try await withTemporaryDirectory { home in
            let repo = Self.ggufRepository()
            let file = "tiny-Q4_K_M.gguf"
            try await HubTestServer.with(repositories: [repo]) { server in
                server.state.cutOnce = [file: 1_234_567]
                let model = try await makeLocator(home: home, endpoint: server.endpoint).resolve("org/tiny-GGUF:Q4_K_M")
                #expect(try Data(contentsOf: try #require(model.primaryFile)) == repo.files[file])
                let ranges = server.state.requests.filter { $0.method == "GET" && $0.viaCDN }.map {
                    $0.headers["range"]
                }
                #expect(ranges.count == 2 && ranges[0] == nil)
                #expect(Self.resumeOffset(ranges.last ?? nil).map { $0 <= 1_234_567 } ?? true, "\(ranges)")
            }
        }
    }

    @Test func serverIgnoringRangeRestartsFromTheStart() async throws {
        try await withTemporaryDirectory { home in
            let repo = Self.ggufRepository()
            let file = "tiny-Q4_K_M.gguf"
            try await HubTestServer.with(repositories: [repo]) { server in
                server.state.cutOnce = [file: 500_000]
                server.state.ignoresRange = true
                let model = try await makeLocator(home: home, endpoint: server.endpoint).resolve("org/tiny-GGUF:Q4_K_M")
                #expect(try Data(contentsOf: try #require(model.primaryFile)) == repo.files[file])
                let ranges = server.state.requests.filter { $0.method == "GET" && $0.viaCDN }.map {
                    $0.headers["range"]
                }
                #expect(ranges.count == 2 && ranges[0] == nil)
                #expect(Self.resumeOffset(ranges.last ?? nil).map { $0 <= 500_000 } ?? true, "\(ranges)")
            }
        }
    }

    @Test func sizeMismatchDeletesTheFile() async throws {
        try await withTemporaryDirectory { home in
            let repo = Self.ggufRepository()
            try await HubTestServer.with(repositories: [repo]) { server in
                server.state.announcedSizes = ["tiny-Q8_0.gguf": 60_000]
                let locator = makeLocator(home: home, endpoint: server.endpoint)
                let error = await expectHubError(.sizeMismatch) { _ = try await locator.resolve("org/tiny-GGUF:Q8_0") }
                #expect(error?.message.contains("60000") == true)
                #expect(error?.file == "tiny-Q8_0.gguf")
                let blobs = home.appendingPathComponent("hf/hub/models--org--tiny-GGUF/blobs")
                #expect((try? FileManager.default.contentsOfDirectory(atPath: blobs.path)) ?? [] == [])
                #expect(
                    !FileManager.default.fileExists(
                        atPath: home.appendingPathComponent("hf/hub/models--org--tiny-GGUF/refs/main").path))

                // Announcing less than is sent is caught while downloading.
                server.state.announcedSizes = ["tiny-Q8_0.gguf": 40_000]
                await expectHubError(.sizeMismatch) { _ = try await locator.resolve("org/tiny-GGUF:Q8_0") }
            }
        }
    }

    @Test func gatedRepositoryNeedsAToken() async throws {
        try await withTemporaryDirectory { home in
            let repo = Self.ggufRepository()
            try await HubTestServer.with(repositories: [repo]) { server in
                server.state.requiredToken = "hf_secret"
                let anonymous = makeLocator(home: home, endpoint: server.endpoint)
                let error = await expectHubError(.unauthorized) {
                    _ = try await anonymous.resolve("org/tiny-GGUF:Q8_0")
                }
                #expect(error?.message.contains("set HF_TOKEN") == true)
                #expect(error?.message.contains("401") == true)
                #expect(error?.repository == "org/tiny-GGUF")

                let wrong = makeLocator(home: home, endpoint: server.endpoint, extra: ["HF_TOKEN": "hf_wrong"])
                let rejected = await expectHubError(.unauthorized) { _ = try await wrong.resolve("org/tiny-GGUF:Q8_0") }
                #expect(rejected?.message.contains("token in HF_TOKEN was rejected") == true)

                server.state.clearRequests()
                let authorized = makeLocator(home: home, endpoint: server.endpoint, extra: ["HF_TOKEN": "hf_secret"])
                let model = try await authorized.resolve("org/tiny-GGUF:Q8_0")
                #expect(try Data(contentsOf: try #require(model.primaryFile)) == repo.files["tiny-Q8_0.gguf"])
                let requests = server.state.requests
                #expect(requests.filter { !$0.viaCDN }.allSatisfy { $0.headers["authorization"] == "Bearer hf_secret" })
                // Credentials stay with the hub when it redirects to the CDN.
                #expect(requests.filter(\.viaCDN).allSatisfy { $0.headers["authorization"] == nil })
            }
        }
    }

    @Test func missingRepositoryAndFileAreNotFound() async throws {
        try await withTemporaryDirectory { home in
            try await HubTestServer.with(repositories: [Self.ggufRepository()]) { server in
                let locator = makeLocator(home: home, endpoint: server.endpoint)
                let error = await expectHubError(.notFound) { _ = try await locator.resolve("org/nothing-here") }
                #expect(error?.repository == "org/nothing-here")
                #expect(error?.location?.hasPrefix(server.endpoint + "/api/models/org/nothing-here") == true)

                let file = await expectHubError(.notFound) {
                    _ = try await locator.resolve("org/tiny-GGUF", files: .files(["absent.bin"]))
                }
                #expect(file?.file == "absent.bin")
                await expectHubError(.notFound) { _ = try await locator.resolve("org/tiny-GGUF:IQ1_S") }
                await expectHubError(.notFound) { _ = try await locator.resolve("org/tiny-GGUF@v9:Q8_0") }
            }
        }
    }

    @Test func offlineModeNeverCallsTheHub() async throws {
        try await withTemporaryDirectory { home in
            try await HubTestServer.with(repositories: [Self.ggufRepository()]) { server in
                let offline = makeLocator(home: home, endpoint: server.endpoint, extra: ["HF_HUB_OFFLINE": "1"])
                await expectHubError(.notCached) { _ = try await offline.resolve("org/tiny-GGUF:Q8_0") }
                #expect(server.state.requests.isEmpty)

                // Once downloaded online, the same call succeeds offline.
                _ = try await makeLocator(home: home, endpoint: server.endpoint).resolve("org/tiny-GGUF:Q8_0")
                server.state.clearRequests()
                let model = try await offline.resolve("org/tiny-GGUF:Q8_0")
                #expect(model.files == ["tiny-Q8_0.gguf"])
                // The other quantization is not cached: offline says so instead of downloading.
                await expectHubError(.notCached) { _ = try await offline.resolve("org/tiny-GGUF:Q4_K_M") }
                #expect(server.state.requests.isEmpty)
            }
        }
    }

    @Test func unwritableCacheIsADiskError() async throws {
        try await withTemporaryDirectory { home in
            // A plain file where the cache folder should be: no folder can be made under it.
            try Data("not a folder".utf8).write(to: home.appendingPathComponent("hf"))
            try await HubTestServer.with(repositories: [Self.ggufRepository()]) { server in
                let locator = makeLocator(home: home, endpoint: server.endpoint)
                let error = await expectHubError(.disk) { _ = try await locator.resolve("org/tiny-GGUF:Q8_0") }
                #expect(error?.repository == "org/tiny-GGUF")
                #expect(error?.location?.hasPrefix(home.appendingPathComponent("hf").path) == true)
            }
        }
    }

    @Test func unreachableEndpointIsANetworkError() async throws {
        try await withTemporaryDirectory { home in
            let error = await expectHubError(.network) { _ = try await makeLocator(home: home).resolve("org/model") }
            #expect(error?.location?.hasPrefix("http://127.0.0.1:9/api/models/org/model") == true)
        }
    }
}
