import Foundation
import HTTPTypes

/// Bearer-key checks for the HTTP API and the monitor socket.
enum APIKey {
    /// Whether an `Authorization` header carries `Bearer <key>`. The comparison takes the same
    /// time whatever the header holds, so response timing does not reveal a prefix of the key.
    static func matches(_ authorization: String?, key: String) -> Bool {
        guard let authorization else { return false }
        let expected = Array("Bearer \(key)".utf8)
        let given = Array(authorization.utf8)
        var difference = UInt8(given.count == expected.count ? 0 : 1)
        for index in expected.indices {
            difference |= expected[index] ^ (index < given.count ? given[index] : 0)
        }
        return difference == 0
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
        guard let target = request.path, let query = URLComponents(string: target)?.queryItems,
            let given = query.first(where: { $0.name == "api_key" })?.value
        else { return false }
        return matches("Bearer \(given)", key: key)
    }
}
