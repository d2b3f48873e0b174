import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOSSL

/// Answers a request that HTTP/1 cannot parse with 400 and closes its connection.
///
/// Hummingbird answers parse errors only once a connection has been handed to its request loop;
/// with the WebSocket upgrade in front, a first request that does not parse (`GET v1 HTTP/9.9`,
/// a header without a colon, two Content-Lengths) reached nobody, and the connection stayed open
/// and silent until the idle timeout. These handlers sit at both ends of every connection's
/// pipeline: the last one sees the decoder's error, the first one writes the raw answer straight
/// to the socket (the HTTP encoders in between may be mid-response).
///
/// It also keeps an upgrade to `/ws/monitor` without the API key from reaching the upgrader
/// (which can only refuse with an empty 400): the request goes on as a plain GET, and the
/// router's middleware answers 401 in OpenAI's shape like on every other route.
///
/// And it caps the connections open at once (`--max_connections`): one past the cap is answered
/// 503 with `Retry-After` in OpenAI's shape and closed before anything of it is parsed.
struct MalformedRequestGuard<Inner: ServerChildChannel>: ServerChildChannel {
    let inner: Inner
    let apiKey: String?
    let connections: ConnectionLimit

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Inner.Value> {
        guard connections.enter() else {
            logger.warning(
                "refused a connection from \(channel.remoteAddress?.description ?? "?"): \(connections.limit) are open (--max_connections)"
            )
            // Set up as usual (the server expects a value), but the refusal sits first in the
            // pipeline: it answers 503 and lets nothing through to HTTP.
            return inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
                try channel.pipeline.syncOperations.addHandler(OverCapacityAnswer(), position: Self.front(channel))
                return value
            }
        }
        channel.closeFuture.whenComplete { _ in connections.leave() }
        return inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let writer = RawAnswerWriter()
            let operations = channel.pipeline.syncOperations
            try operations.addHandler(writer, position: Self.front(channel))
            try operations.addHandler(ParseErrorAnswer(writer: writer, logger: logger), position: .last)
            if let apiKey {
                let decoder = try operations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
                try operations.addHandler(UnauthorizedUpgradeFilter(apiKey: apiKey), position: .after(decoder))
            }
            return value
        }
    }

    /// Where the raw writers go: first, or right after TLS (their bytes must be encrypted).
    private static func front(_ channel: any Channel) -> ChannelPipeline.SynchronousOperations.Position {
        guard let tls = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self) else {
            return .first
        }
        return .after(tls)
    }

    func handle(value: Inner.Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// How many HTTP connections are open, against `--max_connections`.
final class ConnectionLimit: Sendable {
    let limit: Int
    private let open = NIOLockedValueBox(0)

    init(limit: Int) { self.limit = limit }

    /// Counts a new connection in; false (nothing counted) when `limit` are open.
    func enter() -> Bool {
        open.withLockedValue { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func leave() { open.withLockedValue { $0 -= 1 } }

}

/// A connection over `--max_connections`: 503 with `Retry-After` in OpenAI's shape, written
/// straight to the socket once it is active, then no more writes, and the close a moment later
/// (closing at once with the client's request unread would reset the connection and lose the
/// answer). What the client sends is read and dropped.
final class OverCapacityAnswer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    private var answered = false

    static let answer: String = {
        let body =
            #"{"error":{"message":"The server has too many open connections; retry shortly.","#
            + #""type":"server_error","param":null,"code":"too_many_connections"}}"#
        return "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }()

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { answer(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        answer(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    /// Nothing from the HTTP handlers behind reaches the socket.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.outputClosed)
    }

    private func answer(_ context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        let channel = context.channel
        context.writeAndFlush(NIOAny(ByteBuffer(string: Self.answer))).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
            channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        }
    }
}

@available(*, unavailable)
extension OverCapacityAnswer: Sendable {}

extension HTTPServerBuilder {
    /// HTTP/1 with the WebSocket upgrade, behind `MalformedRequestGuard`.
    /// With `tls`, the connection speaks TLS first (HummingbirdTLS) and the guard's raw
    /// answers go through it.
    static func guardedHTTP1WebSocketUpgrade(
        apiKey: String?, connections: ConnectionLimit, tls: TLSConfiguration?,
        configuration: HTTP1WebSocketUpgradeChannel.Configuration,
        shouldUpgrade:
            @escaping @Sendable (HTTPRequest, any Channel, Logger) throws -> ShouldUpgradeResult<
                WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>
            >
    ) -> HTTPServerBuilder {
        .init { responder in
            let http = HTTP1WebSocketUpgradeChannel(
                responder: responder, configuration: configuration, shouldUpgrade: shouldUpgrade)
            guard let tls else { return MalformedRequestGuard(inner: http, apiKey: apiKey, connections: connections) }
            return MalformedRequestGuard(
                inner: try TLSChannel(http, tlsConfiguration: tls), apiKey: apiKey, connections: connections)
        }
    }
}

/// The first handler: writes bytes that bypass the HTTP encoders.
final class RawAnswerWriter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    fileprivate var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }
}

@available(*, unavailable)
extension RawAnswerWriter: Sendable {}

/// The last handler: turns an HTTP parse error into a 400 and a close.
final class ParseErrorAnswer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let writer: RawAnswerWriter
    private let logger: Logger
    private var answered = false

    init(writer: RawAnswerWriter, logger: Logger) {
        self.writer = writer
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError, !answered, let head = writer.context else {
            context.fireErrorCaught(error)
            return
        }
        answered = true
        logger.debug("malformed HTTP request from \(context.remoteAddress?.description ?? "?"): \(error)")
        let answer = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        let channel = context.channel
        head.writeAndFlush(NIOAny(ByteBuffer(string: answer))).whenComplete { _ in channel.close(promise: nil) }
    }
}

@available(*, unavailable)
extension ParseErrorAnswer: Sendable {}

/// Turns a WebSocket upgrade request that lacks the API key into a plain request (its `Upgrade`
/// header removed), so that the router answers it 401 instead of the upgrader answering 400.
///
/// Only a connection's first request can be upgraded, so the filter looks at the first head and
/// then leaves the pipeline: after an upgrade, WebSocket frames flow where it sat.
final class UnauthorizedUpgradeFilter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    private let apiKey: String

    init(apiKey: String) { self.apiKey = apiKey }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The decoder sends a request's head first.
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        let authorized =
            APIKey.matches(head.headers.first(name: "authorization"), key: apiKey)
            || APIKey.queryKey(head.uri).map { APIKey.matches("Bearer \($0)", key: apiKey) } == true
        if head.headers.contains(name: "upgrade") && !authorized {
            head.headers.remove(name: "upgrade")
            head.headers.remove(name: "connection")
            head.headers.add(name: "connection", value: "close")
        }
        context.fireChannelRead(wrapInboundOut(.head(head)))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

@available(*, unavailable)
extension UnauthorizedUpgradeFilter: Sendable {}
