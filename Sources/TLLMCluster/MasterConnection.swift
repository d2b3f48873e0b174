import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOSSL

/// A worker's HTTP conversation with the master (tllm-protocol.md §3): JSON bodies in and out.
public struct MasterConnection: Sendable {
    /// `http://host:port` of the master.
    public let baseURL: URL
    /// Sent as `Authorization: Bearer KEY` with registration requests.
    public let clusterKey: String?
    /// For an `https` master: the CA to verify it against (and a certificate to present).
    public let tls: TLSConfiguration?

    /// `address` may be `http(s)://host:port`, `host:port` or a bare host (port 8022); without a
    /// scheme it is `https` when `tls` is given.
    public init(address: String, clusterKey: String? = nil, tls: TLSConfiguration? = nil) throws {
        self.clusterKey = clusterKey
        self.tls = tls
        var text = address
        if !text.contains("://") { text = (tls == nil ? "http://" : "https://") + text }
        guard var components = URLComponents(string: text), components.host != nil else {
            throw PipelineError("not a master address: \(address) (expected http://HOST:PORT)")
        }
        if components.port == nil { components.port = 8022 }
        components.path = ""
        guard let url = components.url else { throw PipelineError("not a master address: \(address)") }
        baseURL = url
    }

    /// POSTs `body` as JSON to `path` and returns the decoded JSON object.
    public func post(_ path: String, _ body: [String: any Sendable], timeout: TimeInterval = 60) async throws
        -> [String: Any]
    {
        var request = HTTPClientRequest(url: baseURL.appendingPathComponent(path).absoluteString)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if let clusterKey { request.headers.add(name: "Authorization", value: "Bearer \(clusterKey)") }
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        request.tlsConfiguration = tls
        let response = try await Self.client.execute(request, timeout: .milliseconds(Int64(timeout * 1000)))
        // A master's answers are a few hundred bytes; a peer that sends more is not one.
        let data = Data(buffer: try await response.body.collect(upTo: Self.answerLimit))
        guard response.status.code == 200 else {
            if response.status.code == 401 {
                throw PipelineError(
                    "\(path): HTTP 401: the master at \(baseURL) requires the cluster key, and "
                        + (clusterKey == nil ? "this worker has none" : "this worker's differs")
                        + " (--cluster_key, $TLLM_CLUSTER_KEY or the config's \"cluster_key\")")
            }
            throw PipelineError("\(path): HTTP \(response.status.code) \(String(decoding: data, as: UTF8.self))")
        }
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw PipelineError("\(path): the answer is not a JSON object")
        }
        return object
    }

    private static let answerLimit = 1 << 20

    /// One client for the process, on SwiftNIO. A master never redirects: a redirect is refused.
    /// A master that is down fails the call at once (AsyncHTTPClient would otherwise retry the
    /// connection until the call's deadline): the worker says it is waiting and retries itself.
    private static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    /// The header of our master's `/health` answer that names its process (new at every start).
    public static let instanceHeader = "tllm-instance"

    /// What `GET /health` says of the master.
    public enum Health: Equatable, Sendable {
        case down
        /// Answers 200; `instance` identifies the master process (nil: a master that does not say,
        /// such as the original's).
        case up(instance: String?)
    }

    public func health(timeout: TimeInterval = 5) async -> Health {
        var request = HTTPClientRequest(url: baseURL.appendingPathComponent("health").absoluteString)
        request.tlsConfiguration = tls
        guard let response = try? await Self.client.execute(request, timeout: .milliseconds(Int64(timeout * 1000))),
            response.status.code == 200, (try? await response.body.collect(upTo: Self.answerLimit)) != nil
        else { return .down }
        return .up(instance: response.headers.first(name: Self.instanceHeader))
    }
}
