import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A worker's HTTP conversation with the master (tllm-protocol.md §3): JSON bodies in and out.
public struct MasterConnection: Sendable {
    /// `http://host:port` of the master.
    public let baseURL: URL
    /// Sent as `Authorization: Bearer KEY` with registration requests.
    public let clusterKey: String?

    /// `address` may be `http://host:port`, `host:port` or a bare host (port 8022).
    public init(address: String, clusterKey: String? = nil) throws {
        self.clusterKey = clusterKey
        var text = address
        if !text.contains("://") { text = "http://" + text }
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
        var request = URLRequest(url: baseURL.appendingPathComponent(path), timeoutInterval: timeout)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        if let clusterKey { request.setValue("Bearer \(clusterKey)", forHTTPHeaderField: "Authorization") }
        request.httpBody = try JSONSerialization.data(withJSONObject: body)
        let (data, response) = try await URLSession.shared.data(for: request)
        guard let http = response as? HTTPURLResponse, http.statusCode == 200 else {
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            if status == 401 {
                throw PipelineError(
                    "\(path): HTTP 401: the master at \(baseURL) requires the cluster key, and "
                        + (clusterKey == nil ? "this worker has none" : "this worker's differs")
                        + " (--cluster_key, $TLLM_CLUSTER_KEY or the config's \"cluster_key\")")
            }
            throw PipelineError("\(path): HTTP \(status) \(String(decoding: data, as: UTF8.self))")
        }
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw PipelineError("\(path): the answer is not a JSON object")
        }
        return object
    }

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
        let request = URLRequest(url: baseURL.appendingPathComponent("health"), timeoutInterval: timeout)
        guard let (_, response) = try? await URLSession.shared.data(for: request),
            let http = response as? HTTPURLResponse, http.statusCode == 200
        else { return .down }
        return .up(instance: http.value(forHTTPHeaderField: Self.instanceHeader))
    }
}
