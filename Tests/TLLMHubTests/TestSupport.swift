import Foundation
import Testing

@testable import TLLMHub

/// A fresh directory under the system temp folder, removed after `body`.
func withTemporaryDirectory<T>(_ body: (URL) async throws -> T) async throws -> T {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("tllm-hub-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: url) }
    return try await body(url.resolvingSymlinksInPath())
}

/// Deterministic pseudo-random bytes, so resumed downloads can be compared byte for byte.
func testBytes(_ count: Int, seed: UInt64) -> Data {
    var state = seed | 1
    var data = Data(capacity: count)
    for _ in 0..<count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        data.append(UInt8(truncatingIfNeeded: state))
    }
    return data
}

/// A locator confined to `home`: its own HF_HOME, HOME, and the given endpoint (the default
/// points at a closed port, so an unexpected network call fails fast instead of leaving the host).
func makeLocator(
    home: URL, endpoint: String = "http://127.0.0.1:9", extra: [String: String] = [:],
    onProgress: (@Sendable (DownloadProgress) -> Void)? = nil
) -> ModelLocator {
    var environment = [
        "HOME": home.path, "HF_HOME": home.appendingPathComponent("hf").path, "HF_ENDPOINT": endpoint,
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    ]
    environment.merge(extra) { $1 }
    var locator = ModelLocator(environment: environment, onProgress: onProgress)
    locator.requestTimeout = 10
    locator.retryDelay = 0.05
    return locator
}

/// Runs `body`, expecting a ``HubError`` with `code`; returns it for further checks.
@discardableResult
func expectHubError(
    _ code: HubError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async -> HubError? {
    do {
        try await body()
        Issue.record("expected HubError \(code), got success", sourceLocation: sourceLocation)
    } catch let error as HubError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected HubError \(code), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// Collects progress reports from the locator's callback.
final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var _reports: [DownloadProgress] = []
    var reports: [DownloadProgress] { lock.withLock { _reports } }
    func record(_ progress: DownloadProgress) { lock.withLock { _reports.append(progress) } }
}
