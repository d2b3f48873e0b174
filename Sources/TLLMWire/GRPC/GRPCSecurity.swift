/// What a node's gRPC servers require of callers and what its channels present to servers
/// (docs/wire.md, "Security"). Empty by default: the original protocol, which Python tllm
/// nodes speak, carries neither.
public struct GRPCSecurity: Sendable {
    /// The cluster key: every call carries `authorization: Bearer <key>` metadata, and a server
    /// answers a call without it UNAUTHENTICATED before reading its message.
    public var clusterKey: String?
    /// TLS on every connection (nil: plaintext h2c, as the original).
    public var tls: TLSContexts?

    /// Nothing required, nothing presented.
    public static let none = GRPCSecurity()

    public init(clusterKey: String? = nil, tls: TLSContexts? = nil) {
        self.clusterKey = clusterKey
        self.tls = tls
    }

    /// The metadata a channel adds to every call.
    var callMetadata: [HeaderField] {
        clusterKey.map { [("authorization", "Bearer \($0)")] } ?? []
    }
}

/// Checks of `Authorization: Bearer <key>` values, for gRPC metadata and HTTP headers alike.
public enum BearerKey {
    /// Whether `authorization` is exactly `Bearer <key>`. The time taken depends on the key's
    /// length only, never on how much of it matched, so timing cannot reveal a prefix.
    public static func matches(_ authorization: String?, key: String) -> Bool {
        guard let authorization else { return false }
        let expected = Array("Bearer \(key)".utf8)
        let given = Array(authorization.utf8)
        var difference = UInt8(given.count == expected.count ? 0 : 1)
        for index in expected.indices {
            difference |= expected[index] ^ (index < given.count ? given[index] : 0)
        }
        return difference == 0
    }
}
