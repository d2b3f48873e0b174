import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// One HTTP request and its response, with the body streamed to a caller-chosen sink.
///
/// Redirects are never followed here: the hub puts the metadata we need (`X-Linked-Etag`,
/// `X-Repo-Commit`) on the redirect itself, and the caller decides which hops to take and which
/// headers (`Range`, `Authorization`) survive them. URLSession's async conveniences cannot stream
/// on Linux, hence the delegate.
final class HTTPExchange: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    /// Receives the body of a response the caller chose to stream; throwing cancels the transfer.
    typealias BodyWriter = @Sendable (Data) throws -> Void

    /// What came back.
    struct Response: Sendable {
        var head: HTTPURLResponse
        /// The body if it was not streamed (capped, only error messages and JSON land here).
        var body: Data
        var status: Int { head.statusCode }
        func header(_ name: String) -> String? { head.value(forHTTPHeaderField: name) }
    }

    private static let collectedBodyLimit = 16 << 20

    // Guarded by `lock`; delegate callbacks arrive on URLSession's serial delegate queue while
    // the continuation is set from the caller's task.
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Response, any Error>?
    private var head: HTTPURLResponse?
    private var collected = Data()
    private var writer: BodyWriter?
    private var writerError: (any Error)?
    private let chooseWriter: @Sendable (HTTPURLResponse) -> BodyWriter?

    private init(chooseWriter: @escaping @Sendable (HTTPURLResponse) -> BodyWriter?) {
        self.chooseWriter = chooseWriter
    }

    /// Sends `request` and waits for the whole response.
    ///
    /// - Parameters:
    ///   - timeout: the longest silence tolerated while waiting for data, in seconds.
    ///   - chooseWriter: called with the response head; return a writer to stream the body,
    ///     or `nil` to collect it in memory.
    static func perform(
        _ request: URLRequest, timeout: TimeInterval,
        chooseWriter: @escaping @Sendable (HTTPURLResponse) -> BodyWriter? = { _ in nil }
    ) async throws -> Response {
        let exchange = HTTPExchange(chooseWriter: chooseWriter)
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        configuration.urlCache = nil
        configuration.httpCookieStorage = nil
        let session = URLSession(configuration: configuration, delegate: exchange, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        let task = session.dataTask(with: request)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                exchange.lock.withLock { exchange.continuation = continuation }
                task.resume()
            }
        } onCancel: {
            task.cancel()
        }
    }

    func urlSession(
        _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
        newRequest request: URLRequest, completionHandler: @escaping @Sendable (URLRequest?) -> Void
    ) {
        completionHandler(nil)
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping @Sendable (URLSession.ResponseDisposition) -> Void
    ) {
        if let http = response as? HTTPURLResponse {
            let writer = chooseWriter(http)
            lock.withLock {
                head = http
                self.writer = writer
            }
        }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        let (writer, failed) = lock.withLock { (self.writer, writerError != nil) }
        guard !failed else { return }
        if let writer {
            do {
                try writer(data)
            } catch {
                lock.withLock { writerError = error }
                dataTask.cancel()
            }
        } else {
            lock.withLock {
                if collected.count < Self.collectedBodyLimit { collected.append(data) }
            }
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        let (continuation, head, body, writerError) = lock.withLock {
            let result = (
                self.continuation, self.head ?? task.response as? HTTPURLResponse, collected, self.writerError
            )
            self.continuation = nil
            return result
        }
        guard let continuation else { return }
        if let writerError {
            continuation.resume(throwing: writerError)
        } else if let error {
            continuation.resume(throwing: error)
        } else if let head {
            continuation.resume(returning: Response(head: head, body: body))
        } else {
            continuation.resume(throwing: URLError(.badServerResponse))
        }
    }
}
