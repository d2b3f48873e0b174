import Foundation
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import TLLMWire

/// Raw methods used by the transport tests.
enum TestMethods {
    static let echo = "/test.Test/Echo"
    static let sleep = "/test.Test/Sleep"

    /// Echo returns its request; Sleep waits the milliseconds written as ASCII in its request, then answers "done".
    static func make(invocations: Counter? = nil) -> [String: GRPCUnaryMethod] {
        [
            echo: { request, _ in
                invocations?.increment()
                return request
            },
            sleep: { request, _ in
                invocations?.increment()
                let milliseconds = Int(String(buffer: request)) ?? 0
                try await Task.sleep(for: .milliseconds(milliseconds))
                return ByteBuffer(string: "done")
            },
        ]
    }
}

/// A thread-safe counter.
final class Counter: Sendable {
    private let box = NIOLockedValueBox(0)
    func increment() { box.withLockedValue { $0 += 1 } }
    var value: Int { box.withLockedValue { $0 } }
}

/// Starts a server on 127.0.0.1 with a free port (and optionally a Unix socket).
func startServer(
    methods: [String: GRPCUnaryMethod], limits: GRPCServerLimits = GRPCServerLimits(), unixPath: String? = nil
) async throws -> (GRPCServer, Int) {
    let server = GRPCServer(methods: methods, limits: limits)
    var addresses: [GRPCListenAddress] = [.tcp(host: "127.0.0.1", port: 0)]
    if let unixPath { addresses.append(.unix(path: unixPath)) }
    let bound = try await server.start(addresses)
    return (server, bound[0].port!)
}

/// A hand-driven HTTP/2 client over a blocking socket, built on the same nghttp2 session
/// wrapper, for sending what a well-behaved client never sends.
final class RawHTTP2Client: HTTP2SessionDelegate, @unchecked Sendable {
    struct Response {
        var headers: [String: String] = [:]
        var trailers: [String: String] = [:]
        var sawHeaders = false
        var data: [UInt8] = []
        var closed = false
        var errorCode: UInt32 = 0
        /// grpc-status from the trailers, or from a trailers-only header block.
        var grpcStatus: Int? { (trailers["grpc-status"] ?? headers["grpc-status"]).flatMap { Int($0) } }
        var grpcMessage: String { GRPCStatusMessage.decode(trailers["grpc-message"] ?? headers["grpc-message"] ?? "") }
    }

    private(set) var socket: Int32
    private(set) var session: HTTP2Session!
    var responses: [Int32: Response] = [:]
    private(set) var peerClosed = false

    init(port: Int) throws {
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else { throw RPCError(.unavailable, "connect failed: errno \(errno)") }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        session = HTTP2Session(role: .client, settings: HTTP2Settings(), delegate: self)
    }

    deinit { disconnect() }

    /// Closes the socket (once).
    func disconnect() {
        if socket >= 0 { close(socket) }
        socket = -1
    }

    /// Writes raw bytes, bypassing the session.
    func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if written <= 0 { return }
            offset += written
        }
    }

    /// The bytes the session wants to send now.
    func sessionOutput() throws -> [UInt8] {
        guard let buffer = try session.pendingOutput() else { return [] }
        return Array(buffer.readableBytesView)
    }

    func flush() throws { send(try sessionOutput()) }

    /// Opens a stream whose body is `prefix + payload` (which need not be a valid gRPC message).
    func request(path: String, prefix: [UInt8], payload: [UInt8], extraHeaders: [HeaderField] = []) -> Int32 {
        let headers: [HeaderField] =
            [
                (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                ("content-type", "application/grpc"), ("te", "trailers"),
            ] + extraHeaders
        return session.submitRequest(
            headers: headers, body: OutgoingBody(prefix: prefix, payload: ByteBuffer(bytes: payload), trailers: nil))
    }

    /// Reads and parses until `done` or the timeout, on a thread of its own (the blocking
    /// reads must not hold a cooperative-pool thread); returns whether `done` held.
    @discardableResult
    func pump(timeout: Duration = .seconds(10), until done: @escaping @Sendable (RawHTTP2Client) -> Bool) async throws
        -> Bool
    {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try self.pumpBlocking(timeout: timeout) { done(self) } }) }
                .start()
        }
    }

    private func pumpBlocking(timeout: Duration, until done: () -> Bool) throws -> Bool {
        let clock = ContinuousClock()
        let end = clock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while !done() && clock.now < end && !peerClosed {
            try flush()
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if count == 0 {
                peerClosed = true
                break
            }
            if count < 0 { continue }  // timeout tick
            try session.receive(ByteBuffer(bytes: buffer[0..<count]))
        }
        try? flush()
        return done()
    }

    /// Whether the server closed the connection within the timeout.
    func waitForClose(timeout: Duration = .seconds(10)) async -> Bool {
        _ = try? await pump(timeout: timeout) { _ in false }
        return peerClosed
    }

    func sessionBeginHeaders(streamID: Int32) {}
    func sessionHeader(streamID: Int32, name: String, value: String) {
        var response = responses[streamID] ?? Response()
        if response.sawHeaders { response.trailers[name] = value } else { response.headers[name] = value }
        responses[streamID] = response
    }
    func sessionHeadersComplete(streamID: Int32, endStream: Bool) {
        responses[streamID, default: Response()].sawHeaders = true
    }
    func sessionData(streamID: Int32, bytes: UnsafeRawBufferPointer) {
        responses[streamID, default: Response()].data.append(contentsOf: bytes)
    }
    func sessionDataEnded(streamID: Int32) {}
    func sessionStreamClosed(streamID: Int32, errorCode: UInt32) {
        responses[streamID, default: Response()].closed = true
        responses[streamID, default: Response()].errorCode = errorCode
    }
    func sessionGoawayReceived(lastStreamID: Int32, errorCode: UInt32) {}
    func sessionPingAcknowledged() {}
}

/// The server still answers a good call. A liveness check, not a timing one: the deadline is
/// generous because the suites run in parallel on 2 cores next to compute-heavy tests.
func expectServing(port: Int) async throws {
    let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
    let response = try await channel.unary(
        path: TestMethods.echo, request: ByteBuffer(string: "still serving"), timeout: .seconds(30))
    await channel.close()
    #expect(String(buffer: response) == "still serving")
}

/// Waits (up to 5 s) until the server has no open connection: closes are processed asynchronously.
func expectAllConnectionsClosed(_ server: GRPCServer) async throws {
    let clock = ContinuousClock()
    let end = clock.now + .seconds(5)
    while server.openConnections > 0 && clock.now < end { try await Task.sleep(for: .milliseconds(10)) }
    #expect(server.openConnections == 0)
}
