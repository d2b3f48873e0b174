import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A client channel to one gRPC target: one HTTP/2 connection that multiplexes every
/// concurrent call, opened on first use and opened again after the peer went away.
///
/// Failures are always an `RPCError` (UNAVAILABLE when the peer cannot be reached,
/// DEADLINE_EXCEEDED when the per-call timeout runs out), never a hang.
public final class GRPCChannel: Sendable {
    /// The address calls go to.
    public let target: GRPCTarget
    private let group: any EventLoopGroup
    private let connectTimeout: TimeAmount
    private let security: GRPCSecurity
    private let state = NIOLockedValueBox(State())

    private struct Connection: Sendable {
        var channel: any Channel
        var handler: NIOLoopBound<GRPCClientHandler>
    }

    private struct State {
        var connection: Connection?
        var connecting: (id: Int, future: EventLoopFuture<Connection>)?
        var nextID = 0
        var closed = false
    }

    /// Creates a channel; nothing connects until the first call.
    public init(
        target: GRPCTarget, security: GRPCSecurity = .none,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, connectTimeout: TimeAmount = .seconds(5)
    ) {
        self.target = target
        self.security = security
        self.group = group
        self.connectTimeout = connectTimeout
    }

    /// Creates a channel from a target string (`host:port`, `[v6]:port`, `unix:///path`).
    public convenience init(
        target: String, security: GRPCSecurity = .none,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws(RPCError) {
        self.init(target: try GRPCTarget(parsing: target), security: security, group: group)
    }

    /// Makes a unary call with request message bytes; returns the response message bytes.
    ///
    /// A call that provably never reached the server (its connection was going away, or the
    /// server refused the stream after GOAWAY) is sent again on a new connection.
    public func unary(path: String, request: ByteBuffer, timeout: TimeAmount? = nil) async throws(RPCError)
        -> ByteBuffer
    {
        let deadline = timeout.map { NIODeadline.now() + $0 }
        let attempts = 3
        for attempt in 1...attempts {
            let callID = state.withLockedValue { state -> Int in
                state.nextID += 1
                return state.nextID
            }
            let connection = try await connection(deadline: deadline)
            switch await send(path: path, request: request, deadline: deadline, callID: callID, on: connection) {
            case .success(let response):
                return response
            case .failure(let error as RPCError):
                throw error
            case .failure(is CallNotStarted):
                connectionBecameUnusable(connection.channel)
                if attempt == attempts { break }
            case .failure(let error):
                throw RPCError(.unavailable, "call to \(target) failed: \(error)")
            }
        }
        throw RPCError(.unavailable, "call to \(target) was refused \(attempts) times (server shutting down)")
    }

    private func send(
        path: String, request: ByteBuffer, deadline: NIODeadline?, callID: Int, on connection: Connection
    ) async -> Result<ByteBuffer, any Error> {
        let eventLoop = connection.channel.eventLoop
        let promise = eventLoop.makePromise(of: ByteBuffer.self)
        return await withTaskCancellationHandler {
            if Task.isCancelled {
                promise.fail(RPCError(.cancelled, "call cancelled"))
            } else {
                eventLoop.execute {
                    connection.handler.value.startCall(
                        path: path, request: request, deadline: deadline, callID: callID, promise: promise)
                }
            }
            do {
                return .success(try await promise.futureResult.get())
            } catch {
                return .failure(error)
            }
        } onCancel: {
            eventLoop.execute { connection.handler.value.cancel(callID: callID) }
        }
    }

    /// Closes the connection; later calls fail with UNAVAILABLE.
    public func close() async {
        let channel = state.withLockedValue { state -> (any Channel)? in
            state.closed = true
            defer { state.connection = nil }
            return state.connection?.channel
        }
        try? await channel?.close()
    }

    // MARK: Connection management

    private func connection(deadline: NIODeadline?) async throws(RPCError) -> Connection {
        enum Next {
            case ready(Connection)
            case wait(EventLoopFuture<Connection>)
            case connect(Int)
            case closed
        }
        let next = state.withLockedValue { state -> Next in
            if state.closed { return .closed }
            if let connection = state.connection { return .ready(connection) }
            if let connecting = state.connecting { return .wait(connecting.future) }
            state.nextID += 1
            return .connect(state.nextID)
        }
        let future: EventLoopFuture<Connection>
        switch next {
        case .closed: throw RPCError(.unavailable, "channel to \(target) is closed")
        case .ready(let connection): return connection
        case .wait(let pending): future = pending
        case .connect(let id):
            var timeout = connectTimeout
            if let deadline { timeout = min(timeout, max(deadline - .now(), .milliseconds(1))) }
            future = connect(id: id, timeout: timeout)
            state.withLockedValue { $0.connecting = (id, future) }
            future.whenComplete { [weak self] result in
                self?.state.withLockedValue { state in
                    guard state.connecting?.id == id else { return }
                    state.connecting = nil
                    if case .success(let connection) = result, connection.handler.value.isUsable, !state.closed {
                        state.connection = connection
                    }
                }
            }
        }
        do {
            return try await future.get()
        } catch {
            throw RPCError(.unavailable, "cannot connect to \(target): \(error)")
        }
    }

    private func connect(id: Int, timeout: TimeAmount) -> EventLoopFuture<Connection> {
        let authority = target.authority
        let metadata = security.callMetadata
        let tls = security.tls
        let host: String? = if case .hostPort(let host, _) = target { host } else { nil }
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [weak self] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(try tls.clientHandler(host: host))
                    }
                    let handler = GRPCClientHandler(
                        authority: authority, scheme: tls == nil ? "http" : "https", settings: HTTP2Settings(),
                        metadata: metadata
                    ) {
                        self?.connectionBecameUnusable(channel)
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let connected: EventLoopFuture<any Channel>
        switch target {
        case .hostPort(let host, let port): connected = bootstrap.connect(host: host, port: port)
        case .unix(let path): connected = bootstrap.connect(unixDomainSocketPath: path)
        }
        return connected.flatMapThrowing { channel in
            let handler = try channel.pipeline.syncOperations.handler(type: GRPCClientHandler.self)
            return Connection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
        }
    }

    /// The connection got GOAWAY or closed: the next call opens a new one.
    private func connectionBecameUnusable(_ channel: any Channel) {
        state.withLockedValue { state in
            if let current = state.connection, current.channel === channel { state.connection = nil }
        }
    }
}
