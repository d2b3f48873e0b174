import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Where a server listens.
public enum GRPCListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// TCP; host `::` binds dual-stack (IPv6 and IPv4-mapped), port 0 picks a free port.
    case tcp(host: String, port: Int)
    /// A Unix domain socket; a stale socket file at the path is replaced.
    case unix(path: String)

    /// Parses `host:port`, `[v6]:port` (port 0 picks a free one) or `unix:///path`.
    public init(parsing text: String) throws(RPCError) {
        let trimmed = text.trimmingWhitespace()
        if trimmed.hasPrefix("unix:") {
            guard case .unix(let path) = try GRPCTarget(parsing: text) else { fatalError("unix target expected") }
            self = .unix(path: path)
            return
        }
        let (host, port) = try splitHostPort(trimmed, original: text)
        self = .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return "unix://\(path)"
        }
    }
}

/// What a server lets its peers use. Every gRPC port faces a network we do not control: each
/// resource a peer can make us spend has a bound here (docs/wire.md, "Limits").
public struct GRPCServerLimits: Sendable {
    /// Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); nghttp2
    /// refuses more with REFUSED_STREAM.
    public var maxConcurrentStreams: UInt32 = 100
    /// Largest header list (metadata) of one request, bytes; a larger one is answered
    /// RESOURCE_EXHAUSTED.
    public var maxHeaderListBytes = 64 << 10
    /// Connections open at once; further ones are closed as they arrive.
    public var maxConnections = 256
    /// A connection with no open stream for this long is shut down (GOAWAY, then close).
    public var idleTimeout: TimeAmount = .minutes(5)
    /// Streams a client may reset before their answer within `resetWindow`; past that the
    /// connection is closed with GOAWAY ENHANCE_YOUR_CALM (open-and-cancel floods).
    public var maxEarlyResets = 200
    /// The window of `maxEarlyResets`.
    public var resetWindow: TimeAmount = .seconds(10)
    /// The largest request message of a method, by path. The 5-byte length prefix is checked
    /// against it before any buffer is allocated (RESOURCE_EXHAUSTED when larger).
    public var maximumRequestBytes: @Sendable (_ path: String) -> Int

    /// Limits with the defaults above and every message limited to `maximumMessageBytes`.
    public init(
        maximumRequestBytes: @escaping @Sendable (_ path: String) -> Int = { _ in GRPCLimits.maximumMessageBytes }
    ) {
        self.maximumRequestBytes = maximumRequestBytes
    }
}

/// A plaintext (h2c, prior knowledge) gRPC server for unary methods, nghttp2 on SwiftNIO.
public final class GRPCServer: Sendable {
    private let methods: [String: GRPCUnaryMethod]
    private let limits: GRPCServerLimits
    private let security: GRPCSecurity
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var listeners: [any Channel] = []
        var connections: [ObjectIdentifier: any Channel] = [:]
        var accepted = 0
        var stopped = false
    }

    /// Connections open now.
    public var openConnections: Int { state.withLockedValue { $0.connections.count } }
    /// Connections accepted since the server started.
    public var acceptedConnections: Int { state.withLockedValue { $0.accepted } }

    /// Creates a server for `methods` (keyed by full path, `/schemas.RPCService/Forward`).
    public init(
        methods: [String: GRPCUnaryMethod], limits: GRPCServerLimits = GRPCServerLimits(),
        security: GRPCSecurity = .none, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "tllm.grpc.server")
    ) {
        self.methods = methods
        self.limits = limits
        self.security = security
        self.group = group
        self.logger = logger
    }

    /// Binds every address; returns the bound addresses (with the real port for port 0).
    @discardableResult
    public func start(_ addresses: [GRPCListenAddress]) async throws -> [SocketAddress] {
        var bound: [SocketAddress] = []
        for address in addresses {
            let channel = try await bootstrap(for: address).get()
            state.withLockedValue { $0.listeners.append(channel) }
            if let local = channel.localAddress { bound.append(local) }
            logger.info("gRPC server listening on \(channel.localAddress.map { "\($0)" } ?? "\(address)")")
        }
        return bound
    }

    private func bootstrap(for address: GRPCListenAddress) -> EventLoopFuture<any Channel> {
        let methods = self.methods
        let limits = self.limits
        let security = self.security
        let logger = self.logger
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [weak self] channel in
                self?.track(channel)
                return channel.eventLoop.makeCompletedFuture {
                    if let tls = security.tls?.serverHandler() {
                        try channel.pipeline.syncOperations.addHandler(tls)
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        GRPCServerHandler(methods: methods, limits: limits, security: security, logger: logger))
                }
            }
        switch address {
        case .tcp(let host, let port):
            var dualStack = bootstrap
            if host.contains(":") {
                // Accept IPv4 too on `::`, whatever the system default (net.ipv6.bindv6only) says.
                dualStack = bootstrap.serverChannelOption(
                    ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 0)
            }
            return dualStack.bind(host: host, port: port)
        case .unix(let path):
            return bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
        }
    }

    private func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let limit = limits.maxConnections
        let accepted = state.withLockedValue { state -> Bool in
            if state.stopped || state.connections.count >= limit { return false }
            state.connections[id] = channel
            state.accepted += 1
            return true
        }
        if !accepted {
            logger.warning(
                "closing a gRPC connection from \(channel.remoteAddress?.description ?? "?"): \(limit) connections are open (or the server is stopping)"
            )
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.state.withLockedValue { $0.connections.removeValue(forKey: id) }
        }
    }

    /// Stops accepting, sends GOAWAY on every connection and lets in-flight calls finish;
    /// connections still open after `gracePeriod` are closed.
    public func shutdown(gracePeriod: TimeAmount = .seconds(10)) async {
        let (listeners, connections) = state.withLockedValue { state in
            state.stopped = true
            return (state.listeners, Array(state.connections.values))
        }
        for listener in listeners { try? await listener.close() }
        for connection in connections {
            connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = NIODeadline.now() + gracePeriod
        for connection in connections {
            let timer = connection.eventLoop.scheduleTask(deadline: deadline) { connection.close(promise: nil) }
            try? await connection.closeFuture.get()
            timer.cancel()
        }
    }
}
