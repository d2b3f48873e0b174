import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import TLLMWire

/// Every resource a peer can make a gRPC server spend is bounded (`GRPCServerLimits`): each
/// test crosses one limit with the real nghttp2 session and checks the server keeps serving.
@Suite struct GRPCServerLimitsTests {
    /// Handlers that record how many of them run at once.
    final class Concurrency: Sendable {
        private let box = NIOLockedValueBox((now: 0, peak: 0, calls: 0))
        func enter() {
            box.withLockedValue {
                $0.now += 1; $0.calls += 1; $0.peak = max($0.peak, $0.now)
            }
        }
        func leave() { box.withLockedValue { $0.now -= 1 } }
        var peak: Int { box.withLockedValue { $0.peak } }
        var calls: Int { box.withLockedValue { $0.calls } }
    }

    static func methods(_ concurrency: Concurrency) -> [String: GRPCUnaryMethod] {
        var methods = TestMethods.make()
        methods[TestMethods.sleep] = { request, _ in
            concurrency.enter()
            defer { concurrency.leave() }
            try await Task.sleep(for: .milliseconds(Int(String(buffer: request)) ?? 0))
            return ByteBuffer(string: "done")
        }
        return methods
    }

    @Test func lyingLengthPrefixReservesLittle() throws {
        var assembler = GRPCMessageAssembler()
        let prefix = grpcMessagePrefix(length: 120 << 20)
        prefix.withUnsafeBytes { assembler.append($0) }
        #expect(assembler.failure == nil)
        #expect(assembler.reservedBytes <= 64 << 10, "reserved \(assembler.reservedBytes) bytes on the prefix's word")
        // The real bytes still assemble whole.
        var small = GRPCMessageAssembler()
        let body = [UInt8](repeating: 7, count: 200_000)
        (grpcMessagePrefix(length: body.count) + body).withUnsafeBytes { small.append($0) }
        #expect(try small.finish().get().readableBytes == body.count)
    }

    @Test func messageAboveTheMethodsLimitIsRefusedFromItsPrefix() async throws {
        let invocations = Counter()
        var limits = GRPCServerLimits { path in path == TestMethods.echo ? 1000 : GRPCLimits.maximumMessageBytes }
        limits.maxConcurrentStreams = 8
        let (server, port) = try await startServer(methods: TestMethods.make(invocations: invocations), limits: limits)
        let client = try RawHTTP2Client(port: port)
        // The prefix claims 1001 bytes; only 10 follow. The answer must not wait for the rest.
        let stream = client.request(
            path: TestMethods.echo, prefix: grpcMessagePrefix(length: 1001), payload: Array(repeating: 1, count: 10))
        #expect(try await client.pump { $0.responses[stream]?.grpcStatus != nil })
        #expect(client.responses[stream]?.grpcStatus == RPCError.Code.resourceExhausted.rawValue)
        #expect(client.responses[stream]?.grpcMessage.contains("limit of 1000 bytes") == true)
        // Exactly the limit is read.
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
        let payload = ByteBuffer(bytes: [UInt8](repeating: 2, count: 1000))
        #expect(try await channel.unary(path: TestMethods.echo, request: payload, timeout: .seconds(30)) == payload)
        #expect(invocations.value == 1)
        await channel.close()
        client.disconnect()
        await server.shutdown()
    }

    @Test func concurrentStreamsAreCapped() async throws {
        let concurrency = Concurrency()
        var limits = GRPCServerLimits()
        limits.maxConcurrentStreams = 4
        let (server, port) = try await startServer(methods: Self.methods(concurrency), limits: limits)
        // The limit is advertised...
        let raw = try RawHTTP2Client(port: port)
        try await raw.pump { $0.session.remoteMaxConcurrentStreams == 4 }
        #expect(raw.session.remoteMaxConcurrentStreams == 4)
        raw.disconnect()
        // ...and held against a client that sends before it has read it: 12 streams in its first
        // write; 4 run, 8 are refused (REFUSED_STREAM = 7), which a client may safely retry.
        let eager = try RawHTTP2Client(port: port)
        let streams = (0..<12).map { _ in
            eager.request(path: TestMethods.sleep, prefix: grpcMessagePrefix(length: 3), payload: Array("300".utf8))
        }
        try eager.flush()
        #expect(
            try await eager.pump(timeout: .seconds(30)) { c in streams.allSatisfy { c.responses[$0]?.closed == true } })
        let answered = streams.filter { eager.responses[$0]?.grpcStatus == 0 }.count
        let refused = streams.filter { eager.responses[$0]?.errorCode == 7 }.count
        #expect(answered == 4 && refused == 8, "answered \(answered), refused \(refused)")
        #expect(concurrency.peak <= 4, "peak \(concurrency.peak)")
        eager.disconnect()
        // Our client gets every call through (it retries refused streams).
        let channel = GRPCChannel(target: .hostPort(host: "127.0.0.1", port: port))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<12 {
                group.addTask {
                    let answer = try await channel.unary(
                        path: TestMethods.sleep, request: ByteBuffer(string: "150"), timeout: .seconds(60))
                    #expect(String(buffer: answer) == "done")
                }
            }
            try await group.waitForAll()
        }
        #expect(concurrency.calls == 16)
        await channel.close()
        await server.shutdown()
    }

    @Test func headerListAboveTheLimitIsRefused() async throws {
        let invocations = Counter()
        var limits = GRPCServerLimits()
        limits.maxHeaderListBytes = 4096
        let (server, port) = try await startServer(methods: TestMethods.make(invocations: invocations), limits: limits)
        let client = try RawHTTP2Client(port: port)
        let stream = client.request(
            path: TestMethods.echo, prefix: grpcMessagePrefix(length: 2), payload: [1, 2],
            extraHeaders: [("x-padding", String(repeating: "a", count: 8000))])
        #expect(try await client.pump { $0.responses[stream]?.closed == true })
        let response = try #require(client.responses[stream])
        // Refused either by status or by a stream reset; never run.
        #expect(response.grpcStatus == RPCError.Code.resourceExhausted.rawValue || response.errorCode != 0)
        #expect(invocations.value == 0)
        try await expectServing(port: port)
        client.disconnect()
        await server.shutdown()
    }

    @Test func idleConnectionIsClosedButABusyOneIsNot() async throws {
        var limits = GRPCServerLimits()
        limits.idleTimeout = .milliseconds(300)
        let (server, port) = try await startServer(methods: TestMethods.make(), limits: limits)
        let idle = try RawHTTP2Client(port: port)
        try idle.flush()
        #expect(await idle.waitForClose(timeout: .seconds(30)), "an idle connection stayed open")
        // A call longer than the idle timeout keeps its connection and gets its answer.
        let busy = try RawHTTP2Client(port: port)
        let stream = busy.request(
            path: TestMethods.sleep, prefix: grpcMessagePrefix(length: 4), payload: Array("1200".utf8))
        #expect(try await busy.pump(timeout: .seconds(30)) { $0.responses[stream]?.grpcStatus != nil })
        #expect(busy.responses[stream]?.grpcStatus == 0)
        #expect(String(decoding: busy.responses[stream]?.data.dropFirst(5) ?? [], as: UTF8.self) == "done")
        busy.disconnect()
        await server.shutdown()
    }

    @Test func rapidResetFloodClosesTheConnection() async throws {
        let concurrency = Concurrency()
        var limits = GRPCServerLimits()
        limits.maxEarlyResets = 20
        let (server, port) = try await startServer(methods: Self.methods(concurrency), limits: limits)
        let client = try RawHTTP2Client(port: port)
        for _ in 0..<60 where !client.peerClosed {
            let stream = client.request(
                path: TestMethods.sleep, prefix: grpcMessagePrefix(length: 4), payload: Array("5000".utf8))
            try client.flush()
            client.session.resetStream(stream, errorCode: 0x8)  // CANCEL
            try client.flush()
        }
        #expect(await client.waitForClose(timeout: .seconds(30)), "the flood's connection stayed open")
        try await expectServing(port: port)
        client.disconnect()
        await server.shutdown()
    }

    @Test func connectionsBeyondTheLimitAreClosed() async throws {
        var limits = GRPCServerLimits()
        limits.maxConnections = 2
        let (server, port) = try await startServer(methods: TestMethods.make(), limits: limits)
        let first = try RawHTTP2Client(port: port)
        let second = try RawHTTP2Client(port: port)
        try first.flush()
        try second.flush()
        try await first.pump { _ in server.openConnections == 2 }
        let third = try RawHTTP2Client(port: port)
        try third.flush()
        #expect(await third.waitForClose(timeout: .seconds(30)), "a third connection was kept")
        #expect(server.openConnections == 2)
        // Once one leaves, a new connection is served again.
        first.disconnect()
        let clock = ContinuousClock()
        let end = clock.now + .seconds(30)
        while server.openConnections > 1 && clock.now < end { try await Task.sleep(for: .milliseconds(10)) }
        try await expectServing(port: port)
        second.disconnect()
        third.disconnect()
        await server.shutdown()
    }
}
