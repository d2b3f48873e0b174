import CNGHTTP2
import Logging
import NIOCore

/// What a unary method handler sees of its call.
public struct GRPCCallContext: Sendable {
    /// The full method path, `/package.Service/Method`.
    public var path: String
    /// When the client's `grpc-timeout` runs out, if it sent one.
    public var deadline: NIODeadline?
    /// The peer's address, when known.
    public var remoteAddress: SocketAddress?
}

/// A unary method: request message bytes in, response message bytes out; throw `RPCError`
/// for a non-OK status (any other error becomes UNKNOWN with its description).
public typealias GRPCUnaryMethod = @Sendable (ByteBuffer, GRPCCallContext) async throws -> ByteBuffer

/// The server side of one HTTP/2 connection: nghttp2 parses, this handler runs the gRPC
/// rules per stream and hands complete requests to the method handlers as tasks.
///
/// Everything here runs on the channel's event loop; handler results come back to it
/// through `NIOLoopBound`.
final class GRPCServerHandler: ChannelInboundHandler, HTTP2SessionDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Per-stream state; a class so that appending to the message buffer never copies it.
    private final class Stream {
        var headers: [String: String] = [:]
        /// Bytes of header names and values so far; past the limit the rest is dropped and the
        /// request answered RESOURCE_EXHAUSTED.
        var headerBytes = 0
        var assembler = GRPCMessageAssembler()
        var state: State = .receivingHeaders
        var deadline: NIODeadline?
        var deadlineTimer: Scheduled<Void>?

        enum State {
            case receivingHeaders
            case receivingMessage(GRPCUnaryMethod, path: String)
            /// A response was already sent (e.g. an error); further input is ignored.
            case answered
            case running(Task<Void, Never>)
        }
    }

    private let methods: [String: GRPCUnaryMethod]
    private let logger: Logger
    private let limits: GRPCServerLimits
    private let security: GRPCSecurity
    private let settings: HTTP2Settings
    /// When streams were reset by the client before their answer (within `limits.resetWindow`).
    private var earlyResets: [NIODeadline] = []
    /// Shuts the connection down after `limits.idleTimeout` without a stream.
    private var idleTimer: Scheduled<Void>?
    private var session: HTTP2Session!
    private var context: ChannelHandlerContext?
    private var streams: [Int32: Stream] = [:]
    private var quiescing = QuiesceState.serving
    /// Streams to reset (NO_ERROR) once their trailers-only answer has been serialised:
    /// nghttp2 drops a queued HEADERS frame of a stream reset before it was sent.
    private var pendingResets: [Int32] = []
    /// True while nghttp2 is inside mem_recv / mem_send: its callbacks must not re-enter it.
    private var inSession = false
    private var remoteAddress: SocketAddress?

    private enum QuiesceState {
        case serving
        /// Shutdown notice sent; waiting one round trip (a PING) before the final GOAWAY.
        case noticeSent
        /// Final GOAWAY sent; the connection closes when its last stream ends.
        case goawaySent
    }

    init(methods: [String: GRPCUnaryMethod], limits: GRPCServerLimits, security: GRPCSecurity, logger: Logger) {
        self.methods = methods
        self.limits = limits
        self.security = security
        var settings = HTTP2Settings()
        settings.maxConcurrentStreams = limits.maxConcurrentStreams
        settings.maxHeaderListSize = UInt32(clamping: limits.maxHeaderListBytes)
        self.settings = settings
        self.logger = logger
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.remoteAddress = context.channel.remoteAddress
        session = HTTP2Session(role: .server, settings: settings, delegate: self)
        armIdleTimer()
        if context.channel.isActive { flush() }
    }

    func channelActive(context: ChannelHandlerContext) {
        flush()
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        cancelAllStreams()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        cancelAllStreams()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do {
            inSession = true
            defer { inSession = false }
            try session.receive(buffer)
        } catch {
            // A malformed connection (bad preface, broken frame): nghttp2 has queued a GOAWAY;
            // send it and close this connection only. Other connections are unaffected.
            logger.info("closing gRPC connection from \(remoteAddress?.description ?? "?"): \(error)")
            flush(thenClose: true)
            return
        }
        flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            beginGracefulShutdown()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("gRPC connection error: \(error)")
        context.close(promise: nil)
    }

    // MARK: Graceful shutdown

    private func beginGracefulShutdown() {
        guard case .serving = quiescing else { return }
        quiescing = .noticeSent
        session.submitShutdownNotice()
        session.submitPing()
        flush()
    }

    func sessionPingAcknowledged() {
        guard case .noticeSent = quiescing else { return }
        // One round trip after the notice: every stream the client opened before it has reached us.
        quiescing = .goawaySent
        session.submitGoaway(lastStreamID: session.lastProcessedStreamID)
    }

    // MARK: Idle connections and reset floods

    /// (Re)starts the idle clock; called when the last stream ends.
    private func armIdleTimer() {
        idleTimer?.cancel()
        guard let eventLoop = context?.eventLoop else { return }
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        idleTimer = eventLoop.scheduleTask(in: limits.idleTimeout) { handler.value.idleTimeoutReached() }
    }

    private func idleTimeoutReached() {
        guard streams.isEmpty else { return }
        logger.debug(
            "gRPC connection from \(remoteAddress?.description ?? "?") idle for \(limits.idleTimeout): closing")
        beginGracefulShutdown()
    }

    /// Counts a stream the client reset before it was answered; too many in the window close the
    /// connection (HTTP/2 rapid reset: each open-and-cancel costs the server work, the client nothing).
    private func countEarlyReset() {
        let now = NIODeadline.now()
        earlyResets.removeAll { $0 + limits.resetWindow < now }
        earlyResets.append(now)
        guard earlyResets.count > limits.maxEarlyResets else { return }
        logger.warning(
            "closing gRPC connection from \(remoteAddress?.description ?? "?"): \(earlyResets.count) streams reset before their answer within \(limits.resetWindow)"
        )
        earlyResets.removeAll()
        session.submitGoaway(
            lastStreamID: session.lastProcessedStreamID, errorCode: UInt32(NGHTTP2_ENHANCE_YOUR_CALM.rawValue),
            debug: "too many stream resets")
        flush(thenClose: true)
    }

    // MARK: Output

    /// Writes what nghttp2 has to send, then closes the connection when it is done:
    /// after the final GOAWAY once no stream is left, or when nghttp2 wants nothing more.
    /// The close waits for the last write, so answers are never cut off.
    private func flush(thenClose forceClose: Bool = false) {
        guard !inSession, let context, context.channel.isActive else { return }
        inSession = true
        defer { inSession = false }
        var lastWrite: EventLoopFuture<Void>?
        do {
            while true {
                if let output = try session.pendingOutput() {
                    lastWrite = context.writeAndFlush(wrapOutboundOut(output))
                }
                if pendingResets.isEmpty { break }
                for streamID in pendingResets {
                    session.resetStream(streamID, errorCode: UInt32(NGHTTP2_NO_ERROR.rawValue))
                }
                pendingResets.removeAll()
            }
        } catch {
            logger.info("HTTP/2 session failed while sending: \(error)")
            context.close(promise: nil)
            return
        }
        var done = forceClose || !session.isActive
        if case .goawaySent = quiescing, streams.isEmpty { done = true }
        guard done else { return }
        let channel = context.channel
        if let lastWrite {
            lastWrite.whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }

    // MARK: Session events (stream state machine)

    func sessionBeginHeaders(streamID: Int32) {
        if streams[streamID] == nil {
            streams[streamID] = Stream()
            idleTimer?.cancel()
            idleTimer = nil
        }
    }

    func sessionHeader(streamID: Int32, name: String, value: String) {
        guard let stream = streams[streamID], case .receivingHeaders = stream.state else { return }
        // HPACK's accounting: name + value + 32 bytes per field.
        stream.headerBytes += name.utf8.count + value.utf8.count + 32
        guard stream.headerBytes <= limits.maxHeaderListBytes else { return }
        stream.headers[name] = value
    }

    func sessionHeadersComplete(streamID: Int32, endStream: Bool) {
        guard let stream = streams[streamID] else { return }
        guard case .receivingHeaders = stream.state else {
            // Trailers from a client: a unary request has none we care about.
            if endStream { requestEnded(streamID: streamID) }
            return
        }
        if stream.headerBytes > limits.maxHeaderListBytes {
            answer(
                streamID: streamID,
                error: RPCError(
                    .resourceExhausted,
                    "header list of \(stream.headerBytes) bytes exceeds the limit of \(limits.maxHeaderListBytes)"),
                stopPeer: !endStream)
            return
        }
        let path = stream.headers[":path"] ?? ""
        let contentType = stream.headers["content-type"] ?? ""
        if stream.headers[":method"] != "POST" {
            answerHTTP(streamID: streamID, status: 405)
            return
        }
        if !(contentType == "application/grpc" || contentType.hasPrefix("application/grpc+")
            || contentType.hasPrefix("application/grpc;"))
        {
            answerHTTP(streamID: streamID, status: 415)
            return
        }
        if let key = security.clusterKey, !BearerKey.matches(stream.headers["authorization"], key: key) {
            // Refused before the method runs or its message is read.
            logger.warning("refusing \(path) from \(remoteAddress?.description ?? "?"): no valid cluster key")
            answer(
                streamID: streamID,
                error: RPCError(.unauthenticated, "this node requires the cluster key ('authorization: Bearer KEY')"),
                stopPeer: !endStream)
            return
        }
        if let encoding = stream.headers["grpc-encoding"], encoding != "identity" {
            answer(streamID: streamID, error: RPCError(.unimplemented, "grpc-encoding \(encoding) is not supported"))
            return
        }
        guard let method = methods[path] else {
            logger.info("unknown gRPC method \(path)")
            answer(streamID: streamID, error: RPCError(.unimplemented, "unknown method \(path)"))
            return
        }
        if let timeoutValue = stream.headers["grpc-timeout"] {
            guard let timeout = GRPCTimeout.parse(timeoutValue) else {
                answer(streamID: streamID, error: RPCError(.internal, "malformed grpc-timeout \(timeoutValue)"))
                return
            }
            stream.deadline = .now() + timeout
            if let eventLoop = context?.eventLoop {
                let handler = NIOLoopBound(self, eventLoop: eventLoop)
                stream.deadlineTimer = eventLoop.scheduleTask(in: timeout) {
                    handler.value.deadlineReached(streamID: streamID)
                }
            }
        }
        stream.assembler = GRPCMessageAssembler(maximumBytes: limits.maximumRequestBytes(path))
        stream.state = .receivingMessage(method, path: path)
        if endStream { requestEnded(streamID: streamID) }
    }

    func sessionData(streamID: Int32, bytes: UnsafeRawBufferPointer) {
        guard let stream = streams[streamID], case .receivingMessage = stream.state else { return }
        stream.assembler.append(bytes)
        if let failure = stream.assembler.failure {
            logger.info("rejecting gRPC request on stream \(streamID): \(failure.rpcError)")
            answer(streamID: streamID, error: failure.rpcError, stopPeer: true)
        }
    }

    func sessionDataEnded(streamID: Int32) {
        requestEnded(streamID: streamID)
    }

    func sessionStreamClosed(streamID: Int32, errorCode: UInt32) {
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        stream.deadlineTimer?.cancel()
        if case .running(let task) = stream.state {
            // The client went away or reset the stream: nobody will read the answer.
            task.cancel()
        }
        if streams.isEmpty, case .serving = quiescing { armIdleTimer() }
        if errorCode != 0 {
            switch stream.state {
            case .answered: break
            case .receivingHeaders, .receivingMessage, .running: countEarlyReset()
            }
        }
    }

    func sessionGoawayReceived(lastStreamID: Int32, errorCode: UInt32) {}

    // MARK: Running a request

    private func requestEnded(streamID: Int32) {
        guard let stream = streams[streamID], case .receivingMessage(let method, let path) = stream.state else {
            return
        }
        let message: ByteBuffer
        switch stream.assembler.finish() {
        case .success(let buffer):
            message = buffer
        case .failure(let failure):
            logger.info("rejecting gRPC request on stream \(streamID): \(failure.rpcError)")
            answer(streamID: streamID, error: failure.rpcError)
            return
        }
        let callContext = GRPCCallContext(path: path, deadline: stream.deadline, remoteAddress: remoteAddress)
        let eventLoop = context!.eventLoop
        let loopBoundSelf = NIOLoopBound(self, eventLoop: eventLoop)
        let task = Task {
            let result: Result<ByteBuffer, RPCError>
            do {
                result = .success(try await method(message, callContext))
            } catch let error as RPCError {
                result = .failure(error)
            } catch is CancellationError {
                result = .failure(RPCError(.cancelled, "call cancelled"))
            } catch {
                result = .failure(RPCError(.unknown, "\(error)"))
            }
            eventLoop.execute { loopBoundSelf.value.methodFinished(streamID: streamID, result: result) }
        }
        stream.state = .running(task)
    }

    private func methodFinished(streamID: Int32, result: Result<ByteBuffer, RPCError>) {
        guard let stream = streams[streamID], case .running = stream.state else { return }
        switch result {
        case .success(let response):
            guard response.readableBytes <= GRPCLimits.maximumMessageBytes else {
                answer(
                    streamID: streamID,
                    error: RPCError(
                        .resourceExhausted, "response of \(response.readableBytes) bytes exceeds the message limit"))
                return
            }
            stream.state = .answered
            stream.deadlineTimer?.cancel()
            let body = OutgoingBody(
                prefix: grpcMessagePrefix(length: response.readableBytes), payload: response,
                trailers: [("grpc-status", "0")])
            session.submitResponse(streamID: streamID, headers: Self.responseHeaders, body: body)
            flush()
        case .failure(let error):
            answer(streamID: streamID, error: error)
        }
    }

    private func deadlineReached(streamID: Int32) {
        guard let stream = streams[streamID] else { return }
        switch stream.state {
        case .running(let task):
            task.cancel()
            answer(streamID: streamID, error: RPCError(.deadlineExceeded, "deadline exceeded"), stopPeer: true)
        case .receivingMessage:
            answer(streamID: streamID, error: RPCError(.deadlineExceeded, "deadline exceeded"), stopPeer: true)
        case .receivingHeaders, .answered:
            break
        }
    }

    private static let responseHeaders: [HeaderField] = [(":status", "200"), ("content-type", "application/grpc")]

    /// A trailers-only response carrying `error`. With `stopPeer`, also resets the stream
    /// (NO_ERROR) so a client still uploading stops instead of sending bytes we discard.
    private func answer(streamID: Int32, error: RPCError, stopPeer: Bool = false) {
        guard let stream = streams[streamID] else { return }
        if case .answered = stream.state { return }
        stream.deadlineTimer?.cancel()
        stream.state = .answered
        let headers: [HeaderField] =
            Self.responseHeaders + [
                ("grpc-status", String(error.code.rawValue)), ("grpc-message", GRPCStatusMessage.encode(error.message)),
            ]
        session.submitResponse(streamID: streamID, headers: headers, body: nil)
        if stopPeer { pendingResets.append(streamID) }
        flush()
    }

    private func answerHTTP(streamID: Int32, status: Int) {
        guard let stream = streams[streamID] else { return }
        stream.state = .answered
        session.submitResponse(streamID: streamID, headers: [(":status", String(status))], body: nil)
        flush()
    }

    private func cancelAllStreams() {
        for stream in streams.values {
            stream.deadlineTimer?.cancel()
            if case .running(let task) = stream.state { task.cancel() }
        }
        streams.removeAll()
    }
}

@available(*, unavailable)
extension GRPCServerHandler: Sendable {}
