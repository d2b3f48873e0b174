import Foundation
import HTTPTypes
import TLLMWire

/// Bearer-key checks for the HTTP API and the monitor socket.
enum APIKey {
    /// Whether an `Authorization` header carries `Bearer <key>` (compared in constant time).
    static func matches(_ authorization: String?, key: String) -> Bool {
        BearerKey.matches(authorization, key: key)
    }

    /// The path part of a request target, without the query.
    static func monitorPath(_ target: String) -> Substring {
        target.prefix { $0 != "?" }
    }

    /// Whether a WebSocket upgrade of `/ws/monitor` may proceed: no key set, or the key in the
    /// `Authorization` header or in the `api_key` query parameter.
    static func allowsMonitor(_ request: HTTPRequest, key: String?) -> Bool {
        guard let key else { return true }
        if matches(request.headerFields[.authorization], key: key) { return true }
        guard let target = request.path, let given = queryKey(target) else { return false }
        return matches("Bearer \(given)", key: key)
    }

    /// The `api_key` query parameter of a request target, if any.
    static func queryKey(_ target: String) -> String? {
        URLComponents(string: target)?.queryItems?.first(where: { $0.name == "api_key" })?.value
    }
}
