import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import TLLMCluster
import TLLMWire

/// `tllm-rpc`: serve or call the tllm `RPCService` from the command line.
/// Used by the interop tests (against Python grpcio) and handy for poking a live node.
@main
struct RPCTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tllm-rpc",
        abstract: "Serve or call the tllm RPCService (gRPC over HTTP/2, nghttp2).",
        subcommands: [Serve.self, Call.self])
}

/// Serves the RPCService as a relay worker with identity layers.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve RPCService: Forward decodes the tensor and, after SetConfig, relays it to forward_url.")

    @Option(name: .customLong("listen"), help: "TCP address to listen on, HOST:PORT or [V6]:PORT (port 0 picks one).")
    var tcp: [String] = []

    @Option(name: .customLong("unix"), help: "Unix domain socket path to listen on.")
    var unix: [String] = []

    @OptionGroup var tls: TLSOptions

    func validate() throws {
        if tcp.isEmpty && unix.isEmpty { throw ValidationError("give at least one --listen or --unix") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var addresses: [GRPCListenAddress] = unix.map { .unix(path: $0) }
        for text in tcp {
            do {
                addresses.append(try GRPCListenAddress(parsing: text))
            } catch {
                throw ValidationError("--listen \(text): \(error.message)")
            }
        }
        let security = GRPCSecurity(tls: try tls.contexts())
        if let contexts = security.tls, contexts.server == nil {
            throw ValidationError("--tls_ca alone cannot serve: give --tls_cert and --tls_key")
        }
        let server = GRPCServer(methods: RelayService(security: security).grpcMethods, security: security)
        let bound = try await server.start(addresses)
        for address in bound {
            if let port = address.port {
                writeLine("listening tcp \(port)")
            } else {
                writeLine("listening unix \(address.pathname ?? "")")
            }
        }
        writeLine("ready")
        await waitForTermination()
        await server.shutdown(gracePeriod: .seconds(5))
    }
}

/// Writes a line to standard output unbuffered, so a parent process reading a pipe sees it at once.
func writeLine(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Waits for SIGTERM or SIGINT.
func waitForTermination() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let once = NIOLockedSignal(continuation)
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .main)
            source.setEventHandler { once.fire() }
            source.resume()
            retainedSignalSources.append(source)
        }
    }
}

nonisolated(unsafe) private var retainedSignalSources: [any DispatchSourceSignal] = []

/// Resumes a continuation once, from whichever signal arrives first.
private final class NIOLockedSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Void, Never>?
    init(_ continuation: CheckedContinuation<Void, Never>) { self.continuation = continuation }
    func fire() {
        lock.lock()
        let pending = continuation
        continuation = nil
        lock.unlock()
        pending?.resume()
    }
}

/// Calls one method of a remote RPCService and prints the response as JSON.
struct Call: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call one RPCService method and print the response as JSON.")

    @Argument(help: "host:port, [v6]:port or unix:///path")
    var target: String

    @Argument(help: "Status, Forward, Health, SetConfig or ImageForward")
    var method: String

    @Argument(help: "The request as proto3 JSON (snake_case field names).")
    var json: String = "{}"

    @Option(help: "Forward only: a file of raw little-endian float32 values sent as hidden_states.")
    var hiddenStatesF32: String?

    @Option(help: "Forward only: ROWS,COLS of --hidden-states-f32.")
    var shape: String?

    @Option(help: "Deadline of the call in seconds.")
    var timeout: Double = 30

    @OptionGroup var tls: TLSOptions

    func run() async throws {
        guard let rpcMethod = RPCServiceMethod(rawValue: method) else {
            throw ValidationError("unknown method \(method); use one of \(RPCServiceMethod.allCases.map(\.rawValue))")
        }
        var body = try RequestJSON(json)
        let client = RPCServiceClient(
            channel: try GRPCChannel(target: target, security: GRPCSecurity(tls: try tls.contexts())))
        let deadline = TimeAmount.nanoseconds(Int64(timeout * 1e9))
        let response: any MessageStatusResponse
        do {
            switch rpcMethod {
            case .status:
                response = try await client.status(try body.statusRequest(), timeout: deadline)
            case .health:
                try body.requireNoOtherFields("Empty")
                response = try await client.health(timeout: deadline)
            case .setConfig:
                response = try await client.setConfig(try body.setConfigRequest(), timeout: deadline)
            case .forward:
                var request = try body.forwardRequest()
                if let path = hiddenStatesF32 { request.hiddenStates = try loadTensor(path: path) }
                response = try await client.forward(request, timeout: deadline)
            case .imageForward:
                response = try await client.imageForward(try body.imageForwardRequest(), timeout: deadline)
            }
        } catch let error as RPCError {
            printJSON(["grpc_status": error.code.rawValue, "grpc_message": error.message])
            await client.channel.close()
            throw ExitCode(1)
        }
        printJSON(["msg": response.msg, "status": Int(response.status)])
        await client.channel.close()
    }

    private func loadTensor(path: String) throws -> BFloat16Tensor {
        guard let shape, case let parts = shape.split(separator: ",").compactMap({ Int($0) }), parts.count == 2 else {
            throw ValidationError("--hidden-states-f32 needs --shape ROWS,COLS")
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let values = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        return try TensorCodec.encode(values, rows: parts[0], columns: parts[1])
    }

    private func printJSON(_ object: [String: Any]) {
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        writeLine(String(decoding: data, as: UTF8.self))
    }
}
