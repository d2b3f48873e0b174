import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// One HTTP request and its response, with the body streamed to a caller-chosen sink, on
/// AsyncHTTPClient (SwiftNIO).
///
/// Redirects are never followed here: the hub puts the metadata we need (`X-Linked-Etag`,
/// `X-Repo-Commit`) on the redirect itself, and the caller decides which hops to take and which
/// headers (`Range`, `Authorization`) survive them. (Foundation's URLSession on Linux crashed the
/// process — "Received callback for HTTP redirection, but we're not waiting for it" — when a
/// delegate declined a redirect, which every hub download does.)
enum HTTPExchange {
    /// Receives the body of a response the caller chose to stream; throwing cancels the transfer.
    typealias BodyWriter = @Sendable (Data) throws -> Void

    /// What to send.
    struct Request: Sendable {
        var url: URL?
        var httpMethod = "GET"
        private(set) var headers = HTTPHeaders()

        init(url: URL) { self.url = url }

        /// Sets (or with nil removes) a header, as `URLRequest` does.
        mutating func setValue(_ value: String?, forHTTPHeaderField name: String) {
            headers.remove(name: name)
            if let value { headers.add(name: name, value: value) }
        }
    }

    /// A response's status and headers.
    struct Head: Sendable {
        var statusCode: Int
        var headers: HTTPHeaders
        func value(forHTTPHeaderField name: String) -> String? { headers.first(name: name) }
    }

    /// What came back.
    struct Response: Sendable {
        var head: Head
        /// The body if it was not streamed (capped: only error messages and JSON land here).
        var body: Data
        var status: Int { head.statusCode }
        func header(_ name: String) -> String? { head.value(forHTTPHeaderField: name) }
    }

    /// A transfer that stayed silent longer than its timeout.
    struct Timeout: Error, CustomStringConvertible {
        var seconds: TimeInterval
        var description: String { "no data for \(seconds) s" }
    }

    private static let collectedBodyLimit = 16 << 20

    /// One client for the process: connections are pooled per host. Redirects are the caller's.
    private static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        // One connection per request: a hub download is a few requests for large files, and a
        // pooled keep-alive connection that the server (or a CDN) closed meanwhile fails the
        // next request ("stream ended at an unexpected time").
        configuration.maximumUsesPerConnection = 1
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    /// Sends `request` and waits for the whole response.
    ///
    /// - Parameters:
    ///   - timeout: the longest silence tolerated (connecting, or waiting for more data), in seconds.
    ///   - chooseWriter: called with the response head; return a writer to stream the body,
    ///     or `nil` to collect it in memory.
    static func perform(
        _ request: Request, timeout: TimeInterval,
        chooseWriter: @escaping @Sendable (Head) -> BodyWriter? = { _ in nil }
    ) async throws -> Response {
        guard let url = request.url else { throw HTTPClientError.invalidURL }
        var prepared = HTTPClientRequest(url: url.absoluteString)
        prepared.method = HTTPMethod(rawValue: request.httpMethod)
        prepared.headers = request.headers
        let outgoing = prepared
        let silence = TimeAmount.nanoseconds(Int64(max(timeout, 0.001) * 1e9))
        return try await withSilenceLimit(silence, seconds: timeout) { touch in
            let response = try await client.execute(outgoing, deadline: .distantFuture)
            touch()
            let head = Head(statusCode: Int(response.status.code), headers: response.headers)
            let writer = chooseWriter(head)
            var collected = Data()
            for try await chunk in response.body {
                touch()
                let data = Data(chunk.readableBytesView)
                if let writer {
                    try writer(data)
                } else if collected.count < collectedBodyLimit {
                    collected.append(data)
                }
            }
            return Response(head: head, body: collected)
        }
    }

    /// Runs `body`, cancelling it when `touch` has not been called for `limit`: a stalled hub
    /// fails the download instead of hanging it, however long a healthy one takes.
    private static func withSilenceLimit<T: Sendable>(
        _ limit: TimeAmount, seconds: TimeInterval,
        _ body: @escaping @Sendable (_ touch: @escaping @Sendable () -> Void) async throws -> T
    ) async throws -> T {
        let lastActivity = LastActivity(NIODeadline.now())
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body { lastActivity.set(.now()) } }
            group.addTask {
                while true {
                    let idle = NIODeadline.now() - lastActivity.get()
                    if idle >= limit { throw Timeout(seconds: seconds) }
                    try await Task.sleep(nanoseconds: UInt64((limit - idle).nanoseconds))
                }
            }
            defer { group.cancelAll() }
            guard let result = try await group.next(), let value = result else { throw CancellationError() }
            return value
        }
    }
}

/// When a transfer last made progress: the transfer writes it, the watchdog reads it.
private final class LastActivity: @unchecked Sendable {
    private let lock = NSLock()
    private var value: NIODeadline
    init(_ value: NIODeadline) { self.value = value }
    func get() -> NIODeadline { lock.withLock { value } }
    func set(_ newValue: NIODeadline) { lock.withLock { value = newValue } }
}
