import Foundation
import Testing

@testable import TLLMHub

@Suite struct HubConfigurationTests {
    @Test func defaultsFollowHuggingFaceHub() {
        let configuration = HubConfiguration(environment: ["HOME": "/home/u"])
        #expect(configuration.cacheDirectory.path == "/home/u/.cache/huggingface/hub")
        #expect(configuration.endpoint.absoluteString == "https://huggingface.co")
        #expect(configuration.token == nil)
        #expect(!configuration.isOffline)
        #expect(configuration.showsProgressBars)
    }

    @Test func environmentOverrides() {
        let configuration = HubConfiguration(environment: [
            "HOME": "/home/u", "HF_HOME": "~/hf", "HF_ENDPOINT": "http://127.0.0.1:8080/", "HF_TOKEN": "hf_abc",
            "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "true",
        ])
        #expect(configuration.cacheDirectory.path == "/home/u/hf/hub")
        #expect(configuration.endpoint.absoluteString == "http://127.0.0.1:8080")
        #expect(configuration.token == "hf_abc")
        #expect(configuration.isOffline)
        #expect(!configuration.showsProgressBars)

        let direct = HubConfiguration(environment: ["HOME": "/h", "HF_HOME": "/x", "HF_HUB_CACHE": "/cache"])
        #expect(direct.cacheDirectory.path == "/cache")
        let xdg = HubConfiguration(environment: ["HOME": "/h", "XDG_CACHE_HOME": "/xdg"])
        #expect(xdg.cacheDirectory.path == "/xdg/huggingface/hub")
        #expect(!HubConfiguration(environment: ["HOME": "/h", "HF_HUB_OFFLINE": "0"]).isOffline)
    }

    @Test func tokenFileIsReadWhenNoVariableIsSet() async throws {
        try await withTemporaryDirectory { home in
            let hfHome = home.appendingPathComponent("hf")
            try FileManager.default.createDirectory(at: hfHome, withIntermediateDirectories: true)
            try Data("hf_from_file\n".utf8).write(to: hfHome.appendingPathComponent("token"))
            #expect(HubConfiguration(environment: ["HOME": home.path, "HF_HOME": hfHome.path]).token == "hf_from_file")
            #expect(
                HubConfiguration(environment: ["HOME": home.path, "HF_HOME": hfHome.path, "HF_TOKEN": "hf_env"]).token
                    == "hf_env")
        }
    }

    @Test func urlsUseTheHubLayout() {
        let client = HubClient(endpoint: URL(string: "http://h:1")!, token: nil, timeout: 1)
        #expect(
            client.modelInfoURL("org/name", revision: "refs/pr/1").absoluteString
                == "http://h:1/api/models/org/name/revision/refs%2Fpr%2F1?blobs=true")
        #expect(
            client.resolveURL("org/name", revision: "main", file: "sub dir/model.gguf").absoluteString
                == "http://h:1/org/name/resolve/main/sub%20dir/model.gguf")
        #expect(HubClient.normalizeETag("W/\"abc\"") == "abc")
        #expect(HubClient.normalizeETag("\"abc\"") == "abc")
    }
}
