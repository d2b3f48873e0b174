import CNGHTTP2
import NIOCore

/// The client side of one HTTP/2 connection: opens a stream per unary call, collects
/// the response and trailers, and completes the call's promise with a message or a status.
/// Confined to its channel's event loop.
final class GRPCClientHandler: ChannelInboundHandler, HTTP2SessionDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Call {
        var promise: EventLoopPromise<ByteBuffer>
        var callID: Int
        var headers: [String: String] = [:]
        var trailers: [String: String] = [:]
        var sawResponseHeaders = false
        var assembler: GRPCMessageAssembler
        var timer: Scheduled<Void>?
        /// Set when we decided the outcome ourselves (deadline, cancellation, bad response).
        var forcedResult: RPCError?
    }

    private let settings: HTTP2Settings
    private let authority: String
    /// Added to every call's headers (the cluster key).
    private let metadata: [HeaderField]
    private var session: HTTP2Session!
    private var context: ChannelHandlerContext?
    private var calls: [Int32: Call] = [:]
    private var streamByCallID: [Int: Int32] = [:]
    /// Told once when this connection must not take new calls (GOAWAY, close).
    private var onUnusable: (() -> Void)?
    private(set) var isUsable = true
    /// `http`, or `https` under TLS.
    private let scheme: String
    /// True while nghttp2 is inside mem_recv / mem_send: its callbacks must not re-enter it.
    private var inSession = false

    init(
        authority: String, scheme: String = "http", settings: HTTP2Settings, metadata: [HeaderField],
        onUnusable: @escaping () -> Void
    ) {
        self.authority = authority
        self.scheme = scheme
        self.metadata = metadata
        self.settings = settings
        self.onUnusable = onUnusable
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        session = HTTP2Session(role: .client, settings: settings, delegate: self)
    }

    func channelActive(context: ChannelHandlerContext) {
        flush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        markUnusable()
        failAll(RPCError(.unavailable, "connection to \(authority) closed"))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        markUnusable()
        failAll(RPCError(.unavailable, "connection to \(authority) closed"))
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        markUnusable()
        failAll(RPCError(.unavailable, "connection to \(authority) failed: \(error)"))
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            inSession = true
            defer { inSession = false }
            try session.receive(unwrapInboundIn(data))
        } catch {
            markUnusable()
            failAll(RPCError(.internal, "protocol error from \(authority): \(error)"))
            flush(thenClose: true)
            return
        }
        flush()
    }

    // MARK: Calls

    /// Starts a unary call; `promise` completes with the response message or fails with `RPCError`.
    func startCall(
        path: String, request: ByteBuffer, deadline: NIODeadline?, callID: Int, promise: EventLoopPromise<ByteBuffer>
    ) {
        guard isUsable, context != nil else {
            promise.fail(CallNotStarted())
            return
        }
        var headers: [HeaderField] =
            [
                (":method", "POST"), (":scheme", scheme), (":path", path), (":authority", authority),
                ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "tllm-swift/0.1"),
            ] + metadata
        if let deadline {
            let remaining = deadline - .now()
            if remaining <= .zero {
                promise.fail(RPCError(.deadlineExceeded, "deadline exceeded before the call started"))
                return
            }
            headers.append(("grpc-timeout", GRPCTimeout.format(remaining)))
        }
        let body = OutgoingBody(
            prefix: grpcMessagePrefix(length: request.readableBytes), payload: request, trailers: nil)
        let streamID = session.submitRequest(headers: headers, body: body)
        guard streamID > 0 else {
            promise.fail(RPCError(.unavailable, "cannot open a stream: \(HTTP2SessionError(code: streamID))"))
            return
        }
        var call = Call(promise: promise, callID: callID, assembler: GRPCMessageAssembler())
        if let deadline {
            let eventLoop = context!.eventLoop
            let handler = NIOLoopBound(self, eventLoop: eventLoop)
            call.timer = eventLoop.scheduleTask(deadline: deadline) {
                handler.value.abort(streamID: streamID, error: RPCError(.deadlineExceeded, "deadline exceeded"))
            }
        }
        calls[streamID] = call
        streamByCallID[callID] = streamID
        flush()
    }

    /// Cancels a call (its task was cancelled).
    func cancel(callID: Int) {
        guard let streamID = streamByCallID[callID] else { return }
        abort(streamID: streamID, error: RPCError(.cancelled, "call cancelled"))
    }

    private func abort(streamID: Int32, error: RPCError) {
        guard calls[streamID] != nil else { return }
        calls[streamID]!.forcedResult = error
        session.resetStream(streamID, errorCode: UInt32(NGHTTP2_CANCEL.rawValue))
        flush()
        // nghttp2 reports the close of a reset stream; complete now in case the connection is gone.
        finish(streamID: streamID, http2Error: UInt32(NGHTTP2_CANCEL.rawValue))
    }

    // MARK: Session events

    func sessionBeginHeaders(streamID: Int32) {}

    func sessionHeader(streamID: Int32, name: String, value: String) {
        guard calls[streamID] != nil else { return }
        if calls[streamID]!.sawResponseHeaders {
            calls[streamID]!.trailers[name] = value
        } else {
            calls[streamID]!.headers[name] = value
        }
    }

    func sessionHeadersComplete(streamID: Int32, endStream: Bool) {
        guard calls[streamID] != nil else { return }
        if !calls[streamID]!.sawResponseHeaders {
            calls[streamID]!.sawResponseHeaders = true
            // A trailers-only response carries grpc-status in its only header block.
            if endStream { calls[streamID]!.trailers = calls[streamID]!.headers }
        }
    }

    func sessionData(streamID: Int32, bytes: UnsafeRawBufferPointer) {
        guard calls[streamID] != nil else { return }
        calls[streamID]!.assembler.append(bytes)
        if let failure = calls[streamID]!.assembler.failure {
            abort(streamID: streamID, error: failure.rpcError)
        }
    }

    func sessionDataEnded(streamID: Int32) {}

    func sessionStreamClosed(streamID: Int32, errorCode: UInt32) {
        finish(streamID: streamID, http2Error: errorCode)
    }

    func sessionGoawayReceived(lastStreamID: Int32, errorCode: UInt32) {
        // Streams above lastStreamID are closed by nghttp2 with REFUSED_STREAM; the rest finish.
        markUnusable()
    }

    func sessionPingAcknowledged() {}

    // MARK: Completion

    private func finish(streamID: Int32, http2Error: UInt32) {
        guard let call = calls.removeValue(forKey: streamID) else { return }
        streamByCallID[call.callID] = nil
        call.timer?.cancel()
        call.promise.completeWith(outcome(of: call, http2Error: http2Error))
    }

    private func outcome(of call: Call, http2Error: UInt32) -> Result<ByteBuffer, any Error> {
        if let forced = call.forcedResult { return .failure(forced) }
        if http2Error == UInt32(NGHTTP2_REFUSED_STREAM.rawValue) && !call.sawResponseHeaders {
            // Refused before processing (above the peer's GOAWAY limit): safe to send again.
            return .failure(CallNotStarted())
        }
        if let statusText = call.trailers["grpc-status"] {
            guard let code = Int(statusText) else {
                return .failure(RPCError(.internal, "malformed grpc-status \(statusText)"))
            }
            if code != 0 {
                let message = call.trailers["grpc-message"].map(GRPCStatusMessage.decode) ?? ""
                return .failure(RPCError(RPCError.Code(rawValue: code), message))
            }
            switch call.assembler.finish() {
            case .success(let message): return .success(message)
            case .failure(let failure): return .failure(failure.rpcError)
            }
        }
        if http2Error != 0 {
            return .failure(
                RPCError(
                    RPCError.Code(http2ErrorCode: http2Error),
                    "stream reset by \(authority) (HTTP/2 error \(http2Error))"))
        }
        if let status = call.headers[":status"], status != "200" {
            return .failure(
                RPCError(RPCError.Code(httpStatus: Int(status) ?? 0), "HTTP status \(status) from \(authority)"))
        }
        return .failure(RPCError(.internal, "response from \(authority) ended without grpc-status"))
    }

    private func failAll(_ error: RPCError) {
        let pending = calls
        calls.removeAll()
        streamByCallID.removeAll()
        for call in pending.values {
            call.timer?.cancel()
            call.promise.fail(call.forcedResult ?? error)
        }
    }

    private func markUnusable() {
        isUsable = false
        if let onUnusable {
            self.onUnusable = nil
            onUnusable()
        }
    }

    /// Writes what nghttp2 has to send; closes the connection once it is unusable and idle
    /// (after GOAWAY) or nghttp2 is done with it, after the last write.
    private func flush(thenClose forceClose: Bool = false) {
        guard !inSession, let context, context.channel.isActive else { return }
        inSession = true
        defer { inSession = false }
        var lastWrite: EventLoopFuture<Void>?
        do {
            if let output = try session.pendingOutput() {
                lastWrite = context.writeAndFlush(wrapOutboundOut(output))
            }
        } catch {
            markUnusable()
            failAll(RPCError(.internal, "HTTP/2 session to \(authority) failed: \(error)"))
            context.close(promise: nil)
            return
        }
        guard forceClose || !session.isActive || (!isUsable && calls.isEmpty) else { return }
        let channel = context.channel
        if let lastWrite {
            lastWrite.whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension GRPCClientHandler: Sendable {}

/// A call that never reached the server's application (connection closing, stream refused):
/// the channel sends it again on a fresh connection.
struct CallNotStarted: Error {}
