/// A gRPC address as the protocol writes it: `host:port`, `[v6]:port` or `unix:///path`.
public enum GRPCTarget: Sendable, Hashable, CustomStringConvertible {
    case hostPort(host: String, port: Int)
    case unix(path: String)

    /// Parses a target; also accepts `unix:path` and `ipv4:`/`ipv6:`/`dns:///` prefixes as grpcio does.
    public init(parsing text: String) throws(RPCError) {
        var rest = Substring(text.trimmingWhitespace())
        if rest.hasPrefix("unix://") {
            self = .unix(path: String(rest.dropFirst("unix://".count)))
            if case .unix(let path) = self, path.isEmpty {
                throw RPCError(.invalidArgument, "empty unix socket path in \(text)")
            }
            return
        }
        if rest.hasPrefix("unix:") {
            let path = String(rest.dropFirst("unix:".count))
            guard !path.isEmpty else { throw RPCError(.invalidArgument, "empty unix socket path in \(text)") }
            self = .unix(path: path)
            return
        }
        for prefix in ["dns:///", "ipv4:", "ipv6:"] where rest.hasPrefix(prefix) {
            rest = rest.dropFirst(prefix.count)
        }
        let (host, port) = try splitHostPort(rest, original: text)
        guard port > 0 else { throw RPCError(.invalidArgument, "target \(text) has port 0") }
        self = .hostPort(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .hostPort(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return "unix://\(path)"
        }
    }

    /// The `:authority` pseudo-header for calls to this target.
    var authority: String {
        switch self {
        case .hostPort: return description
        case .unix: return "localhost"
        }
    }
}

/// Splits `host:port` or `[v6]:port` (port 0...65535).
func splitHostPort(_ text: Substring, original: String) throws(RPCError) -> (host: String, port: Int) {
    let host: Substring
    let portText: Substring
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]") else {
            throw RPCError(.invalidArgument, "unterminated [ in \(original)")
        }
        host = text[text.index(after: text.startIndex)..<close]
        let after = text[text.index(after: close)...]
        guard after.hasPrefix(":") else { throw RPCError(.invalidArgument, "missing port in \(original)") }
        portText = after.dropFirst()
    } else {
        guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
            throw RPCError(.invalidArgument, "\(original) is not host:port, [v6]:port or unix:///path")
        }
        host = text[..<colon]
        portText = text[text.index(after: colon)...]
    }
    guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else {
        throw RPCError(.invalidArgument, "\(original) has no valid host and port")
    }
    return (String(host), port)
}

extension String {
    func trimmingWhitespace() -> Substring {
        var s = self[...]
        while let first = s.first, first.isWhitespace { s = s.dropFirst() }
        while let last = s.last, last.isWhitespace { s = s.dropLast() }
        return s
    }
}
