import CNGHTTP2
import NIOCore

/// One header field as it travels in HPACK (lower-case name).
typealias HeaderField = (name: String, value: String)

/// What the session reports while it parses bytes from the peer. All calls happen on
/// the owning channel's event loop, from inside `HTTP2Session.receive`.
protocol HTTP2SessionDelegate: AnyObject {
    /// A HEADERS block starts on `streamID` (a new request on a server; response headers or trailers on a client).
    func sessionBeginHeaders(streamID: Int32)
    /// One header field of the block in progress.
    func sessionHeader(streamID: Int32, name: String, value: String)
    /// The HEADERS block is complete; `endStream` when the peer closed its side with it.
    func sessionHeadersComplete(streamID: Int32, endStream: Bool)
    /// Body bytes; the pointer is valid only during the call.
    func sessionData(streamID: Int32, bytes: UnsafeRawBufferPointer)
    /// The peer ended its side of the stream with a DATA frame.
    func sessionDataEnded(streamID: Int32)
    /// The stream is closed (both sides done, or reset); `errorCode` 0 is a clean close.
    func sessionStreamClosed(streamID: Int32, errorCode: UInt32)
    /// The peer sent GOAWAY: streams above `lastStreamID` will not be processed.
    func sessionGoawayReceived(lastStreamID: Int32, errorCode: UInt32)
    /// The peer acknowledged a PING we sent.
    func sessionPingAcknowledged()
}

/// The body we send on a stream: an optional 5-byte gRPC prefix then the payload,
/// followed by trailers (server) or END_STREAM (client).
struct OutgoingBody {
    var prefix: [UInt8]
    var payload: ByteBuffer
    var trailers: [HeaderField]?
    fileprivate var prefixOffset = 0

    init(prefix: [UInt8], payload: ByteBuffer, trailers: [HeaderField]?) {
        self.prefix = prefix
        self.payload = payload
        self.trailers = trailers
    }
}

/// A fatal HTTP/2 protocol error on the connection (bad preface, malformed frame, ...).
struct HTTP2SessionError: Error, CustomStringConvertible {
    var code: Int32
    var description: String { "HTTP/2: " + String(cString: nghttp2_strerror(code)) }
}

/// Flow-control and stream limits we advertise.
struct HTTP2Settings {
    /// Per-stream receive window. Large windows keep 100 MB messages flowing over fast links.
    var initialWindowSize: Int32 = 8 << 20
    /// Connection-level receive window.
    var connectionWindowSize: Int32 = 64 << 20
    /// Streams the peer may open at once (server side).
    var maxConcurrentStreams: UInt32 = 4096
    /// Largest frame payload we accept.
    var maxFrameSize: UInt32 = 1 << 16
    /// Largest header list we accept (32 MiB, the original's metadata limit).
    var maxHeaderListSize: UInt32 = 32 << 20
}

/// An nghttp2 session: the HTTP/2 codec of one connection.
///
/// It is confined to the event loop of the channel whose handler owns it: nghttp2 is
/// not thread-safe, and its callbacks call straight back into that handler.
final class HTTP2Session {
    enum Role { case client, server }

    private var session: OpaquePointer?
    private unowned let delegate: any HTTP2SessionDelegate
    private var outgoing: [Int32: OutgoingBody] = [:]
    private let allocator = ByteBufferAllocator()

    init(role: Role, settings: HTTP2Settings, delegate: any HTTP2SessionDelegate) {
        self.delegate = delegate
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        defer { nghttp2_option_del(option) }
        // Both sides are gRPC: nothing larger than our header limit is acceptable either way.
        nghttp2_option_set_max_send_header_block_length(option, Int(settings.maxHeaderListSize))
        let userData = Unmanaged.passUnretained(self).toOpaque()
        let result: Int32
        switch role {
        case .client: result = nghttp2_session_client_new2(&session, sessionCallbacks, userData, option)
        case .server: result = nghttp2_session_server_new2(&session, sessionCallbacks, userData, option)
        }
        precondition(result == 0 && session != nil, "nghttp2 session creation failed: \(result)")

        var entries = [
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                value: UInt32(settings.initialWindowSize)),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_FRAME_SIZE.rawValue), value: settings.maxFrameSize),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: settings.maxHeaderListSize),
        ]
        if role == .server {
            entries.append(
                nghttp2_settings_entry(
                    settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                    value: settings.maxConcurrentStreams))
        } else {
            entries.append(nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0))
        }
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count)
        nghttp2_session_set_local_window_size(
            session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, settings.connectionWindowSize)
    }

    deinit {
        nghttp2_session_del(session)
    }

    // MARK: Input

    /// Parses bytes from the peer, calling the delegate for what they contain.
    func receive(_ buffer: ByteBuffer) throws(HTTP2SessionError) {
        let result = buffer.withUnsafeReadableBytes { bytes -> Int in
            guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
            return nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        }
        if result < 0 { throw HTTP2SessionError(code: Int32(result)) }
    }

    // MARK: Output

    /// Everything nghttp2 wants to send now (frames allowed by flow control), or nil.
    func pendingOutput() throws(HTTP2SessionError) -> ByteBuffer? {
        var output: ByteBuffer?
        while true {
            var chunk: UnsafePointer<UInt8>?
            let count = nghttp2_session_mem_send(session, &chunk)
            if count < 0 { throw HTTP2SessionError(code: Int32(count)) }
            guard count > 0, let chunk else { break }
            if output == nil { output = allocator.buffer(capacity: max(count, 16 << 10)) }
            output!.writeBytes(UnsafeRawBufferPointer(start: chunk, count: count))
        }
        return output
    }

    /// True while the connection has something left to do (nghttp2's own verdict).
    var isActive: Bool {
        nghttp2_session_want_read(session) != 0 || nghttp2_session_want_write(session) != 0
    }

    /// The highest stream id the peer opened that we processed.
    var lastProcessedStreamID: Int32 { nghttp2_session_get_last_proc_stream_id(session) }
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS (as last received).
    var remoteMaxConcurrentStreams: UInt32 {
        nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
    }

    // MARK: Submitting

    /// Opens a request stream (client). Returns the stream id, or a negative nghttp2 error.
    func submitRequest(headers: [HeaderField], body: OutgoingBody) -> Int32 {
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: readBodyCallback)
        let streamID = withNameValuePairs(headers) { pairs, count in
            nghttp2_submit_request(session, nil, pairs, count, &provider, nil)
        }
        if streamID > 0 { outgoing[streamID] = body }
        return streamID
    }

    /// Sends response headers, then `body` and its trailers; without a body the
    /// headers end the stream (a gRPC "trailers-only" response).
    @discardableResult
    func submitResponse(streamID: Int32, headers: [HeaderField], body: OutgoingBody?) -> Int32 {
        if let body {
            outgoing[streamID] = body
            var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: readBodyCallback)
            let result = withNameValuePairs(headers) { pairs, count in
                nghttp2_submit_response(session, streamID, pairs, count, &provider)
            }
            if result != 0 { outgoing[streamID] = nil }
            return result
        }
        return withNameValuePairs(headers) { pairs, count in
            nghttp2_submit_response(session, streamID, pairs, count, nil)
        }
    }

    /// Resets a stream.
    func resetStream(_ streamID: Int32, errorCode: UInt32) {
        outgoing[streamID] = nil
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, errorCode)
    }

    /// First half of a graceful shutdown: a GOAWAY that announces it without refusing streams yet.
    func submitShutdownNotice() {
        nghttp2_submit_shutdown_notice(session)
    }

    /// Sends a PING; its acknowledgement arrives as `sessionPingAcknowledged`.
    func submitPing() {
        nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil)
    }

    /// The final GOAWAY: streams above `lastStreamID` are refused, the rest may finish.
    func submitGoaway(lastStreamID: Int32, errorCode: UInt32 = 0, debug: String = "") {
        var bytes = Array(debug.utf8)
        nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), lastStreamID, errorCode, &bytes, bytes.count)
    }

    // MARK: Callback plumbing (called by the C trampolines below)

    fileprivate func readBody(
        streamID: Int32, into buffer: UnsafeMutablePointer<UInt8>, length: Int, flags: UnsafeMutablePointer<UInt32>
    ) -> Int {
        guard var body = outgoing[streamID] else {
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        var written = 0
        if body.prefixOffset < body.prefix.count {
            let count = min(length, body.prefix.count - body.prefixOffset)
            body.prefix.withUnsafeBytes { prefix in
                UnsafeMutableRawPointer(buffer).copyMemory(
                    from: prefix.baseAddress! + body.prefixOffset, byteCount: count)
            }
            body.prefixOffset += count
            written = count
        }
        let count = min(length - written, body.payload.readableBytes)
        if count > 0 {
            body.payload.readWithUnsafeReadableBytes { payload in
                UnsafeMutableRawPointer(buffer + written).copyMemory(from: payload.baseAddress!, byteCount: count)
                return count
            }
            written += count
        }
        if body.prefixOffset == body.prefix.count && body.payload.readableBytes == 0 {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            outgoing[streamID] = nil
            if let trailers = body.trailers {
                flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                _ = withNameValuePairs(trailers) { pairs, count in
                    nghttp2_submit_trailer(session, streamID, pairs, count)
                }
            }
        } else {
            outgoing[streamID] = body
        }
        return written
    }

    fileprivate func streamClosed(streamID: Int32, errorCode: UInt32) {
        outgoing[streamID] = nil
        delegate.sessionStreamClosed(streamID: streamID, errorCode: errorCode)
    }

    fileprivate func frameReceived(_ frame: UnsafePointer<nghttp2_frame>) {
        let header = frame.pointee.hd
        let endStream = header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch UInt32(header.type) {
        case NGHTTP2_HEADERS.rawValue:
            delegate.sessionHeadersComplete(streamID: header.stream_id, endStream: endStream)
        case NGHTTP2_DATA.rawValue:
            if endStream { delegate.sessionDataEnded(streamID: header.stream_id) }
        case NGHTTP2_GOAWAY.rawValue:
            delegate.sessionGoawayReceived(
                lastStreamID: frame.pointee.goaway.last_stream_id, errorCode: frame.pointee.goaway.error_code)
        case NGHTTP2_PING.rawValue:
            if header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0 { delegate.sessionPingAcknowledged() }
        default:
            break
        }
    }

    fileprivate var delegateForCallbacks: any HTTP2SessionDelegate { delegate }
}

/// Lays the header fields out as `nghttp2_nv` for the duration of `body` (nghttp2 copies them).
private func withNameValuePairs<R>(_ headers: [HeaderField], _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
    var storage: [UInt8] = []
    var ranges: [(Int, Int, Int, Int)] = []
    for (name, value) in headers {
        let nameStart = storage.count
        storage.append(contentsOf: name.utf8)
        let valueStart = storage.count
        storage.append(contentsOf: value.utf8)
        ranges.append((nameStart, valueStart - nameStart, valueStart, storage.count - valueStart))
    }
    storage.append(0)  // never empty, so the base address exists
    return storage.withUnsafeMutableBufferPointer { bytes in
        let base = bytes.baseAddress!
        let pairs = ranges.map { nameStart, nameLength, valueStart, valueLength in
            nghttp2_nv(
                name: base + nameStart, value: base + valueStart, namelen: nameLength, valuelen: valueLength,
                flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        }
        return pairs.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
    }
}

private func session(_ userData: UnsafeMutableRawPointer?) -> HTTP2Session {
    Unmanaged<HTTP2Session>.fromOpaque(userData!).takeUnretainedValue()
}

private let readBodyCallback: nghttp2_data_source_read_callback = { _, streamID, buffer, length, flags, _, userData in
    session(userData).readBody(streamID: streamID, into: buffer!, length: length, flags: flags!)
}

/// One callback table for every session (nghttp2 copies it when a session is created).
nonisolated(unsafe) private let sessionCallbacks: OpaquePointer = {
    var callbacks: OpaquePointer?
    nghttp2_session_callbacks_new(&callbacks)
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
        session(userData).delegateForCallbacks.sessionBeginHeaders(streamID: frame!.pointee.hd.stream_id)
        return 0
    }
    nghttp2_session_callbacks_set_on_header_callback(callbacks) {
        _, frame, name, nameLength, value, valueLength, _, userData in
        let nameString = String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self)
        let valueString = String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self)
        session(userData).delegateForCallbacks.sessionHeader(
            streamID: frame!.pointee.hd.stream_id, name: nameString, value: valueString)
        return 0
    }
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
        session(userData).frameReceived(frame!)
        return 0
    }
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, length, userData in
        session(userData).delegateForCallbacks.sessionData(
            streamID: streamID, bytes: UnsafeRawBufferPointer(start: data, count: length))
        return 0
    }
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, userData in
        session(userData).streamClosed(streamID: streamID, errorCode: errorCode)
        return 0
    }
    return callbacks!
}()
