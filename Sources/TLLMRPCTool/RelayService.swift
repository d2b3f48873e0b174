import Logging
import TLLMWire

/// A worker with identity layers: validates the tensor, acknowledges, relays it onward.
actor RelayService: RPCServiceProtocol {
    /// What the relay's own channels use (TLS when the tool serves TLS).
    let security: GRPCSecurity

    init(security: GRPCSecurity = .none) { self.security = security }

    private var next: RPCServiceClient?
    private let logger = Logger(label: "tllm.rpc.relay")

    func status(_ request: StatusRequest, context: GRPCCallContext) async throws -> StatusResponse {
        StatusResponse(msg: "Successful", status: 200)
    }

    func health(_ request: Empty, context: GRPCCallContext) async throws -> HealthResponse {
        HealthResponse(msg: "Healthy", status: 200)
    }

    func setConfig(_ request: SetConfigRequest, context: GRPCCallContext) async throws -> SetConfigResponse {
        // An empty forward_url clears the next hop (the original answers every SetConfig alike).
        if request.forwardURL.isEmpty {
            next = nil
        } else {
            do {
                next = RPCServiceClient(channel: try GRPCChannel(target: request.forwardURL, security: security))
            } catch {
                throw RPCError(.invalidArgument, "forward_url: \(error.message)")
            }
        }
        return SetConfigResponse(msg: "SetConfig Completed", status: 200)
    }

    func forward(_ request: ForwardRequest, context: GRPCCallContext) async throws -> ForwardResponse {
        var decoded: TensorCodec.Decoded?
        if let tensor = request.hiddenStates {
            do {
                decoded = try TensorCodec.decode(tensor)
            } catch {
                throw RPCError(.invalidArgument, "hidden_states: \(error)")
            }
        }
        if let next {
            let logger = self.logger
            Task {
                do {
                    var relayed = request
                    if let decoded {
                        relayed.hiddenStates = try TensorCodec.encode(
                            decoded.values, rows: decoded.rows, columns: decoded.columns)
                    }
                    _ = try await next.forward(relayed)
                } catch {
                    logger.error("relay to \(next.channel.target) failed: \(error)")
                }
            }
        }
        return ForwardResponse(msg: "Forward Completed", status: 200)
    }
}
