import Foundation

/// Where the Hugging Face cache lives and how to reach the hub, read from the same environment
/// variables `huggingface_hub` reads so that both share one cache and one set of settings.
public struct HubConfiguration: Sendable, Hashable {
    /// The hub's base URL (`HF_ENDPOINT`, default `https://huggingface.co`), without trailing slash.
    public var endpoint: URL
    /// The cache root holding `models--ORG--NAME` folders (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    public var cacheDirectory: URL
    /// The access token sent as `Authorization: Bearer …` (`HF_TOKEN`, else the token file).
    public var token: String?
    /// Whether the network must never be used (`HF_HUB_OFFLINE=1`).
    public var isOffline: Bool
    /// Whether progress bars are wanted (`HF_HUB_DISABLE_PROGRESS_BARS` turns them off).
    public var showsProgressBars: Bool

    /// Creates a configuration from explicit values.
    public init(
        endpoint: URL, cacheDirectory: URL, token: String? = nil, isOffline: Bool = false,
        showsProgressBars: Bool = true
    ) {
        self.endpoint = endpoint
        self.cacheDirectory = cacheDirectory
        self.token = token
        self.isOffline = isOffline
        self.showsProgressBars = showsProgressBars
    }

    /// Reads the configuration the way `huggingface_hub.constants` does.
    ///
    /// - `HF_ENDPOINT` (default `https://huggingface.co`)
    /// - `HF_HUB_CACHE`, legacy `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`; `HF_HOME` defaults to
    ///   `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`
    /// - `HF_TOKEN`, legacy `HUGGING_FACE_HUB_TOKEN`, else the file `HF_TOKEN_PATH` (default
    ///   `$HF_HOME/token`) that `huggingface-cli login` writes
    /// - `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_PROGRESS_BARS` (`1`, `true`, `yes`, `on`)
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        func value(_ name: String) -> String? {
            guard let value = environment[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else {
                return nil
            }
            return value
        }
        func flag(_ name: String) -> Bool {
            guard let value = value(name) else { return false }
            return ["1", "true", "yes", "on"].contains(value.lowercased())
        }
        // The environment is the only source for HOME so tests (and odd service setups) stay hermetic.
        let home = value("HOME") ?? FileManager.default.homeDirectoryForCurrentUser.path
        func expand(_ path: String) -> URL {
            URL(fileURLWithPath: LocalPath.expandingTilde(path, home: home)).standardizedFileURL
        }
        let hfHome =
            value("HF_HOME").map(expand)
            ?? expand(value("XDG_CACHE_HOME") ?? "\(home)/.cache").appendingPathComponent("huggingface")
        let cache =
            (value("HF_HUB_CACHE") ?? value("HUGGINGFACE_HUB_CACHE")).map(expand)
            ?? hfHome.appendingPathComponent("hub")

        var endpointString = value("HF_ENDPOINT") ?? "https://huggingface.co"
        while endpointString.hasSuffix("/") { endpointString.removeLast() }

        var token = value("HF_TOKEN") ?? value("HUGGING_FACE_HUB_TOKEN")
        if token == nil {
            let tokenFile = value("HF_TOKEN_PATH").map(expand) ?? hfHome.appendingPathComponent("token")
            if let contents = try? String(contentsOf: tokenFile, encoding: .utf8) {
                let trimmed = contents.trimmingCharacters(in: .whitespacesAndNewlines)
                token = trimmed.isEmpty ? nil : trimmed
            }
        }

        self.init(
            endpoint: URL(string: endpointString) ?? URL(string: "https://huggingface.co")!,
            cacheDirectory: cache,
            token: token,
            isOffline: flag("HF_HUB_OFFLINE"),
            showsProgressBars: !flag("HF_HUB_DISABLE_PROGRESS_BARS"))
    }
}
