import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import TLLMWire

/// The gRPC stack end to end over real sockets: our nghttp2 server and client.
@Suite struct GRPCTransportTests {
    /// A simple RPCService for typed calls.
    struct Service: RPCServiceProtocol {
        func status(_ request: StatusRequest, context: GRPCCallContext) async throws -> StatusResponse {
            StatusResponse(msg: "Successful \(request.ppIdx)", status: 200)
        }
        func forward(_ request: ForwardRequest, context: GRPCCallContext) async throws -> ForwardResponse {
            let rows = request.hiddenStates?.shape.first ?? 0
            return ForwardResponse(
                msg: "Forward Completed \(request.uuidList.joined(separator: "-")) \(rows)", status: 200)
        }
        func health(_ request: Empty, context: GRPCCallContext) async throws -> HealthResponse {
            HealthResponse(msg: "Healthy", status: 200)
        }
        func setConfig(_ request: SetConfigRequest, context: GRPCCallContext) async throws -> SetConfigResponse {
            SetConfigResponse(msg: "SetConfig Completed \(request.forwardURL)", status: 200)
        }
    }

    @Test func allFiveMethodsOverTCPAndUnixSocket() async throws {
        let socketPath = "/tmp/tllm-test-\(UUID().uuidString.prefix(8)).sock"
        let server = GRPCServer(methods: Service().grpcMethods)
        let bound = try await server.start([.tcp(host: "::", port: 0), .unix(path: socketPath)])
        let port = bound[0].port!
        for target in ["127.0.0.1:\(port)", "[::1]:\(port)", "localhost:\(port)", "unix://\(socketPath)"] {
            let client = RPCServiceClient(channel: try GRPCChannel(target: target))
            #expect(try await client.health().msg == "Healthy")
            #expect(try await client.status(StatusRequest(uuid: ["a"], ppIdx: 2)).msg == "Successful 2")
            #expect(try await client.setConfig(SetConfigRequest(forwardURL: "x:1")).msg == "SetConfig Completed x:1")
            let tensor = try TensorCodec.encode([Float](repeating: 0.5, count: 3 * 8), rows: 3, columns: 8)
            let forward = try await client.forward(ForwardRequest(uuidList: ["u1", "u2"], hiddenStates: tensor))
            #expect(forward.msg == "Forward Completed u1-u2 3")
            await #expect(throws: RPCError.self) { try await client.imageForward(ImageForwardRequest()) }
            do {
                _ = try await client.imageForward(ImageForwardRequest())
            } catch {
                #expect(error.code == .unimplemented)
            }
            await client.channel.close()
        }
        await server.shutdown()
    }

    @Test func unknownMethodIsUnimplemented() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
        do {
            _ = try await channel.unary(path: "/schemas.RPCService/Nope", request: ByteBuffer())
            Issue.record("expected UNIMPLEMENTED")
        } catch {
            #expect(error.code == .unimplemented)
            #expect(error.message.contains("/schemas.RPCService/Nope"))
        }
        try await expectServing(port: port)
        await channel.close()
        await server.shutdown()
    }

    @Test func thousandConcurrentCallsShareOneConnection() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<1000 {
                group.addTask {
                    let response = try await channel.unary(
                        path: TestMethods.echo, request: ByteBuffer(string: "call \(index)"), timeout: .seconds(60))
                    return String(buffer: response) == "call \(index)"
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.count == 1000 && results.allSatisfy { $0 })
        #expect(server.acceptedConnections == 1)
        await channel.close()
        await server.shutdown()
    }

    @Test func hundredMegabyteMessageRoundTrips() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
        var payload = ByteBuffer()
        payload.writeRepeatingByte(0x5a, count: 100_000_000)
        payload.setInteger(UInt64(0x0102030405060708), at: 50_000_000)
        let response = try await channel.unary(path: TestMethods.echo, request: payload, timeout: .seconds(120))
        #expect(response.readableBytes == 100_000_000)
        #expect(response == payload)
        await channel.close()
        await server.shutdown()
    }

    @Test func oversizedMessageIsResourceExhaustedAndServerKeepsServing() async throws {
        let invocations = Counter()
        let (server, port) = try await startServer(methods: TestMethods.make(invocations: invocations))
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
        var payload = ByteBuffer()
        payload.writeRepeatingByte(1, count: (129 << 20))
        do {
            _ = try await channel.unary(path: TestMethods.echo, request: payload, timeout: .seconds(60))
            Issue.record("expected RESOURCE_EXHAUSTED")
        } catch {
            #expect(error.code == .resourceExhausted, "\(error)")
        }
        #expect(invocations.value == 0)
        // The same connection and a new one both still work.
        #expect(
            String(buffer: try await channel.unary(path: TestMethods.echo, request: ByteBuffer(string: "ok"))) == "ok")
        try await expectServing(port: port)
        await channel.close()
        await server.shutdown()
    }

    @Test func clientDeadlineIsDeadlineExceeded() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
        do {
            _ = try await channel.unary(
                path: TestMethods.sleep, request: ByteBuffer(string: "5000"), timeout: .milliseconds(200))
            Issue.record("expected DEADLINE_EXCEEDED")
        } catch {
            // Had the deadline not fired, the call would have succeeded after 5 s.
            #expect(error.code == .deadlineExceeded)
        }
        try await expectServing(port: port)
        await channel.close()
        await server.shutdown()
    }

    @Test func serverHonoursGrpcTimeout() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let client = try RawHTTP2Client(port: port)
        let stream = client.request(
            path: TestMethods.sleep, prefix: grpcMessagePrefix(length: 4), payload: Array("5000".utf8),
            extraHeaders: [("grpc-timeout", "150m")])
        let answered = try await client.pump { $0.responses[stream]?.grpcStatus != nil }
        #expect(answered)
        #expect(client.responses[stream]?.grpcStatus == RPCError.Code.deadlineExceeded.rawValue)
        try await expectServing(port: port)
        client.disconnect()
        await server.shutdown()
    }

    @Test func cancellingTheTaskCancelsTheCall() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
        let task = Task { try await channel.unary(path: TestMethods.sleep, request: ByteBuffer(string: "5000")) }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("expected CANCELLED")
        } catch let error as RPCError {
            #expect(error.code == .cancelled)
        }
        await channel.close()
        await server.shutdown()
    }

    @Test func unreachablePeerIsUnavailableNotAHang() async throws {
        // Port 1 on loopback: nothing listens there.
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: 1))
        do {
            _ = try await channel.unary(path: TestMethods.echo, request: ByteBuffer(), timeout: .seconds(5))
            Issue.record("expected UNAVAILABLE")
        } catch {
            #expect(error.code == .unavailable)
        }
        let missingSocket = GRPCChannel(target: .unix(path: "/tmp/tllm-no-such-socket"))
        await #expect(throws: RPCError.self) {
            try await missingSocket.unary(path: TestMethods.echo, request: ByteBuffer())
        }
    }

    @Test func clientReconnectsAfterThePeerRestarts() async throws {
        let (first, port) = try await startServer(methods: TestMethods.make())
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
        #expect(
            String(buffer: try await channel.unary(path: TestMethods.echo, request: ByteBuffer(string: "1"))) == "1")
        await first.shutdown(gracePeriod: .seconds(1))
        // While the peer is down, calls fail with a status instead of hanging.
        await #expect(throws: RPCError.self) {
            try await channel.unary(path: TestMethods.echo, request: ByteBuffer(string: "x"), timeout: .seconds(2))
        }
        let second = GRPCServer(methods: TestMethods.make())
        try await second.start([.tcp(host: "127.0.0.1", port: port)])
        #expect(
            String(buffer: try await channel.unary(path: TestMethods.echo, request: ByteBuffer(string: "2"))) == "2")
        await channel.close()
        await second.shutdown()
    }

    @Test func gracefulShutdownLetsInFlightCallsFinish() async throws {
        let invocations = Counter()
        let (server, port) = try await startServer(methods: TestMethods.make(invocations: invocations))
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
        let inFlight = Task {
            try await channel.unary(path: TestMethods.sleep, request: ByteBuffer(string: "700"), timeout: .seconds(120))
        }
        while invocations.value == 0 { try await Task.sleep(for: .milliseconds(10)) }
        // The deadline and grace period are generous on purpose: this checks that the call
        // finishes, not how fast. Model tests running in parallel can keep the 2-core
        // cooperative pool busy for seconds, delaying the handler's wake-up (CI saw >10 s).
        await server.shutdown(gracePeriod: .seconds(120))
        #expect(String(buffer: try await inFlight.value) == "done")
        // After shutdown nothing listens: a new call fails cleanly.
        await #expect(throws: RPCError.self) {
            try await channel.unary(path: TestMethods.echo, request: ByteBuffer(), timeout: .seconds(2))
        }
        await channel.close()
    }
}

/// Bad input from a misbehaving peer: each case is followed by a good call that still succeeds.
@Suite struct GRPCBadInputTests {
    @Test func garbageInsteadOfThePrefaceClosesOnlyThatConnection() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let client = try RawHTTP2Client(port: port)
        client.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(await client.waitForClose())
        try await expectServing(port: port)
        client.disconnect()
        await server.shutdown()
    }

    @Test func truncatedFrameThenDisconnect() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let client = try RawHTTP2Client(port: port)
        _ = client.request(
            path: TestMethods.echo, prefix: grpcMessagePrefix(length: 1000), payload: Array(repeating: 7, count: 1000))
        let bytes = try client.sessionOutput()
        client.send(Array(bytes.dropLast(300)))  // cut inside the DATA frame
        try await Task.sleep(for: .milliseconds(100))
        client.disconnect()
        try await expectServing(port: port)
        try await expectAllConnectionsClosed(server)
        client.disconnect()
        await server.shutdown()
    }

    @Test func malformedFrameIsAProtocolError() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let client = try RawHTTP2Client(port: port)
        try client.flush()  // preface + SETTINGS
        // A SETTINGS frame whose length is not a multiple of 6: FRAME_SIZE_ERROR, GOAWAY, close.
        client.send([0, 0, 5, 0x4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5])
        #expect(await client.waitForClose())
        try await expectServing(port: port)
        client.disconnect()
        await server.shutdown()
    }

    @Test func lengthPrefixLongerThanTheBody() async throws {
        let invocations = Counter()
        let (server, port) = try await startServer(methods: TestMethods.make(invocations: invocations))
        let client = try RawHTTP2Client(port: port)
        let stream = client.request(
            path: TestMethods.echo, prefix: grpcMessagePrefix(length: 100), payload: Array(repeating: 1, count: 10))
        #expect(try await client.pump { $0.responses[stream]?.grpcStatus != nil })
        #expect(client.responses[stream]?.grpcStatus == RPCError.Code.internal.rawValue)
        #expect(client.responses[stream]?.grpcMessage.contains("truncated") == true)
        #expect(invocations.value == 0)
        try await expectServing(port: port)
        client.disconnect()
        await server.shutdown()
    }

    @Test func compressedFlagWithoutEncoding() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let client = try RawHTTP2Client(port: port)
        let stream = client.request(path: TestMethods.echo, prefix: [1, 0, 0, 0, 3], payload: [1, 2, 3])
        #expect(try await client.pump { $0.responses[stream]?.grpcStatus != nil })
        #expect(client.responses[stream]?.grpcStatus == RPCError.Code.internal.rawValue)
        #expect(client.responses[stream]?.grpcMessage.contains("compressed") == true)
        try await expectServing(port: port)
        client.disconnect()
        await server.shutdown()
    }

    @Test func unknownMethodOnARawStream() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let client = try RawHTTP2Client(port: port)
        let stream = client.request(path: "/nope.Service/Method", prefix: grpcMessagePrefix(length: 0), payload: [])
        #expect(try await client.pump { $0.responses[stream]?.grpcStatus != nil })
        #expect(client.responses[stream]?.grpcStatus == RPCError.Code.unimplemented.rawValue)
        try await expectServing(port: port)
        client.disconnect()
        await server.shutdown()
    }

    @Test func clientDisconnectsMidMessage() async throws {
        let invocations = Counter()
        let (server, port) = try await startServer(methods: TestMethods.make(invocations: invocations))
        let client = try RawHTTP2Client(port: port)
        _ = client.request(
            path: TestMethods.echo, prefix: grpcMessagePrefix(length: 2_000_000),
            payload: Array(repeating: 3, count: 2_000_000))
        let bytes = try client.sessionOutput()
        client.send(Array(bytes.prefix(bytes.count / 2)))
        client.disconnect()
        try await Task.sleep(for: .milliseconds(200))
        #expect(invocations.value == 0)
        try await expectServing(port: port)
        // The half-sent connection is gone, and so is the checking call's.
        try await expectAllConnectionsClosed(server)
        client.disconnect()
        await server.shutdown()
    }

    @Test func clientResetsWhileTheHandlerRuns() async throws {
        let (server, port) = try await startServer(methods: TestMethods.make())
        let client = try RawHTTP2Client(port: port)
        let stream = client.request(
            path: TestMethods.sleep, prefix: grpcMessagePrefix(length: 4), payload: Array("2000".utf8))
        try client.flush()
        try await Task.sleep(for: .milliseconds(100))
        client.session.resetStream(stream, errorCode: 0x8)
        try client.flush()
        try await expectServing(port: port)
        client.disconnect()
        await server.shutdown()
    }
}
