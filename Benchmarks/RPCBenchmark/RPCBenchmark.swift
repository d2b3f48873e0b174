import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import TLLMWire

/// Unary `Forward` round trips, Swift client → Swift server (nghttp2 on SwiftNIO), over
/// loopback TCP, a Unix socket and (with --tls-dir) TLS over loopback TCP: latency percentiles of sequential calls and throughput
/// with several calls in flight. `Benchmarks/rpc/run.sh` runs it next to the grpcio
/// reference (`Benchmarks/rpc/grpcio_bench.py`) and prints the ratios.
@main
struct RPCBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rpc-benchmark")

    @Option(help: "Sequential calls per latency measurement.")
    var calls = 2000

    @Option(help: "Seconds per throughput measurement.")
    var duration = 3.0

    @Option(help: "Calls in flight during the throughput measurement.")
    var concurrency = 8

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    @Option(help: "A directory with ca.pem, node1.pem and node1.key: adds the tls transport (TCP + TLS).")
    var tlsDir: String?

    /// Answers like the protocol's master: parse the request, acknowledge at once.
    struct AcknowledgingService: RPCServiceProtocol {
        func status(_ request: StatusRequest, context: GRPCCallContext) async throws -> StatusResponse {
            StatusResponse(msg: "Successful", status: 200)
        }
        func forward(_ request: ForwardRequest, context: GRPCCallContext) async throws -> ForwardResponse {
            ForwardResponse(msg: "Forward Completed", status: 200)
        }
        func health(_ request: Empty, context: GRPCCallContext) async throws -> HealthResponse {
            HealthResponse(msg: "Healthy", status: 200)
        }
        func setConfig(_ request: SetConfigRequest, context: GRPCCallContext) async throws -> SetConfigResponse {
            SetConfigResponse(msg: "SetConfig Completed", status: 200)
        }
    }

    func run() async throws {
        let socketPath = "/tmp/tllm-rpc-bench-\(getpid()).sock"
        let server = GRPCServer(methods: AcknowledgingService().grpcMethods)
        let bound = try await server.start([.tcp(host: "127.0.0.1", port: 0), .unix(path: socketPath)])
        var targets: [(String, GRPCTarget, GRPCSecurity)] = [
            ("tcp", .hostPort(host: "127.0.0.1", port: bound[0].port!), .none),
            ("unix", .unix(path: socketPath), .none),
        ]
        var tlsServer: GRPCServer?
        if let tlsDir {
            let tls = GRPCSecurity(
                tls: try TLSContexts(
                    TLSContexts.Files(certificate: tlsDir + "/node1.pem", key: tlsDir + "/node1.key", ca: nil)))
            let client = GRPCSecurity(tls: try TLSContexts(TLSContexts.Files(ca: tlsDir + "/ca.pem")))
            let server = GRPCServer(methods: AcknowledgingService().grpcMethods, security: tls)
            let port = try await server.start([.tcp(host: "127.0.0.1", port: 0)])[0].port!
            targets.append(("tls", .hostPort(host: "127.0.0.1", port: port), client))
            tlsServer = server
        }
        var results: [[String: Any]] = []
        for (transport, target, security) in targets {
            for shape in [[1, 576], [1, 4096], [512, 4096]] {
                let values = (0..<(shape[0] * shape[1])).map { _ in Float.random(in: -3...3) }
                let tensor = try TensorCodec.encode(values, rows: shape[0], columns: shape[1])
                let request = ForwardRequest(
                    uuidList: ["bench-request"],
                    inputIdsList: [InputIds(inputIds: Array(repeating: 42, count: shape[0]))],
                    hiddenStates: tensor)
                let payloadBytes = Double(request.serializedBytes().count)
                let client = RPCServiceClient(channel: GRPCChannel(target: target, security: security))
                // Large payloads: fewer sequential calls keep each measurement a few seconds long.
                let count = shape[0] >= 512 ? max(calls / 10, 50) : calls
                for _ in 0..<min(100, count) { _ = try await client.forward(request) }

                var latencies: [Double] = []
                latencies.reserveCapacity(count)
                let clock = ContinuousClock()
                for _ in 0..<count {
                    let start = clock.now
                    _ = try await client.forward(request)
                    latencies.append((clock.now - start).microseconds)
                }
                latencies.sort()

                let end = clock.now + .milliseconds(Int(duration * 1000))
                let completed = try await withThrowingTaskGroup(of: Int.self) { group in
                    for _ in 0..<concurrency {
                        group.addTask {
                            var done = 0
                            while clock.now < end {
                                _ = try await client.forward(request)
                                done += 1
                            }
                            return done
                        }
                    }
                    return try await group.reduce(0, +)
                }
                let callsPerSecond = Double(completed) / duration
                let row: [String: Any] = [
                    "transport": transport, "shape": shape,
                    "p50_us": percentile(latencies, 0.50), "p99_us": percentile(latencies, 0.99),
                    "calls_per_s": callsPerSecond, "mb_per_s": callsPerSecond * payloadBytes / 1e6,
                ]
                results.append(row)
                FileHandle.standardError.write(
                    Data(
                        String(
                            format: "swift  %-5@ %-12@ p50 %9.1f us  p99 %9.1f us  %9.0f calls/s  %8.1f MB/s\n",
                            transport, "\(shape)", percentile(latencies, 0.50), percentile(latencies, 0.99),
                            callsPerSecond, callsPerSecond * payloadBytes / 1e6
                        ).utf8))
                await client.channel.close()
            }
        }
        await server.shutdown()
        await tlsServer?.shutdown()
        let output = try JSONSerialization.data(
            withJSONObject: ["impl": "swift-nghttp2", "results": results], options: [.sortedKeys])
        if let json {
            try output.write(to: URL(fileURLWithPath: json))
        } else {
            print(String(decoding: output, as: UTF8.self))
        }
    }

    private func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * fraction + 0.5))]
    }
}

extension Duration {
    fileprivate var microseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1e6 + Double(attoseconds) / 1e12
    }
}
