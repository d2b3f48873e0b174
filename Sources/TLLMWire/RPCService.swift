import NIOCore

/// The tllm `schemas.RPCService`: what a master or worker implements to serve it.
///
/// Methods receive decoded messages and return responses; throw `RPCError` for a
/// non-OK gRPC status. `imageForward` belongs to an out-of-scope image mode and is
/// UNIMPLEMENTED unless a service overrides it.
public protocol RPCServiceProtocol: Sendable {
    func status(_ request: StatusRequest, context: GRPCCallContext) async throws -> StatusResponse
    func forward(_ request: ForwardRequest, context: GRPCCallContext) async throws -> ForwardResponse
    func health(_ request: Empty, context: GRPCCallContext) async throws -> HealthResponse
    func setConfig(_ request: SetConfigRequest, context: GRPCCallContext) async throws -> SetConfigResponse
    func imageForward(_ request: ImageForwardRequest, context: GRPCCallContext) async throws -> ForwardResponse
    /// The largest request message this service reads for `method`; the server checks each
    /// message's length prefix against it before allocating (RESOURCE_EXHAUSTED beyond). Called on
    /// an event loop for every call: it must be quick and must not wait.
    func maximumRequestBytes(_ method: RPCServiceMethod) -> Int
}

extension RPCServiceProtocol {
    /// Tensors may be as large as the protocol allows; the control messages are small.
    public func maximumRequestBytes(_ method: RPCServiceMethod) -> Int {
        switch method {
        case .forward, .imageForward: GRPCLimits.maximumMessageBytes
        case .status, .health, .setConfig: GRPCLimits.controlMessageBytes
        }
    }

    public func imageForward(_ request: ImageForwardRequest, context: GRPCCallContext) async throws -> ForwardResponse {
        throw RPCError(.unimplemented, "ImageForward (image generation) is not supported by this node")
    }
}

/// Method names and paths of `schemas.RPCService`.
public enum RPCServiceMethod: String, CaseIterable, Sendable {
    case status = "Status"
    case forward = "Forward"
    case health = "Health"
    case setConfig = "SetConfig"
    case imageForward = "ImageForward"

    /// The service's full name.
    public static let serviceName = "schemas.RPCService"

    /// The HTTP/2 `:path` of the method.
    public var path: String { "/\(Self.serviceName)/\(rawValue)" }
}

extension RPCServiceProtocol {
    /// The service's methods keyed by path, ready for `GRPCServer`.
    public var grpcMethods: [String: GRPCUnaryMethod] {
        [
            RPCServiceMethod.status.path: unaryMethod(status),
            RPCServiceMethod.forward.path: unaryMethod(forward),
            RPCServiceMethod.health.path: unaryMethod(health),
            RPCServiceMethod.setConfig.path: unaryMethod(setConfig),
            RPCServiceMethod.imageForward.path: unaryMethod(imageForward),
        ]
    }

    /// Server limits whose per-method message limits come from `maximumRequestBytes`.
    public var grpcLimits: GRPCServerLimits {
        let methods = Dictionary(uniqueKeysWithValues: RPCServiceMethod.allCases.map { ($0.path, $0) })
        return GRPCServerLimits { path in
            guard let method = methods[path] else { return GRPCLimits.controlMessageBytes }
            return maximumRequestBytes(method)
        }
    }
}

/// Wraps a typed method: protobuf decode (INVALID_ARGUMENT on failure), call, encode.
private func unaryMethod<Request: WireMessage, Response: WireMessage>(
    _ method: @escaping @Sendable (Request, GRPCCallContext) async throws -> Response
) -> GRPCUnaryMethod {
    { buffer, context in
        let decoded = buffer.withUnsafeReadableBytes { bytes in
            Result { () throws(MessageDecodingError) in try Request(serializedBytes: bytes) }
        }
        let request: Request
        switch decoded {
        case .success(let message): request = message
        case .failure(let error): throw RPCError(.invalidArgument, error.description)
        }
        let response = try await method(request, context)
        return ByteBuffer(bytes: response.serializedBytes())
    }
}

/// A typed client of `schemas.RPCService` over a `GRPCChannel`.
public struct RPCServiceClient: Sendable {
    /// The channel calls travel on.
    public let channel: GRPCChannel
    /// Timeout applied to calls that do not pass their own.
    public var defaultTimeout: TimeAmount?

    /// Creates a client.
    public init(channel: GRPCChannel, defaultTimeout: TimeAmount? = .seconds(30)) {
        self.channel = channel
        self.defaultTimeout = defaultTimeout
    }

    public func status(_ request: StatusRequest, timeout: TimeAmount? = nil) async throws(RPCError) -> StatusResponse {
        try await call(.status, request, timeout)
    }
    public func forward(_ request: ForwardRequest, timeout: TimeAmount? = nil) async throws(RPCError) -> ForwardResponse
    {
        try await call(.forward, request, timeout)
    }
    public func health(_ request: Empty = Empty(), timeout: TimeAmount? = nil) async throws(RPCError) -> HealthResponse
    {
        try await call(.health, request, timeout)
    }
    public func setConfig(_ request: SetConfigRequest, timeout: TimeAmount? = nil) async throws(RPCError)
        -> SetConfigResponse
    {
        try await call(.setConfig, request, timeout)
    }
    public func imageForward(_ request: ImageForwardRequest, timeout: TimeAmount? = nil) async throws(RPCError)
        -> ForwardResponse
    {
        try await call(.imageForward, request, timeout)
    }

    private func call<Request: WireMessage, Response: WireMessage>(
        _ method: RPCServiceMethod, _ request: Request, _ timeout: TimeAmount?
    ) async throws(RPCError) -> Response {
        let bytes = request.serializedBytes()
        guard bytes.count <= GRPCLimits.maximumMessageBytes else {
            throw RPCError(.resourceExhausted, "request of \(bytes.count) bytes exceeds the message limit")
        }
        let response = try await channel.unary(
            path: method.path, request: ByteBuffer(bytes: bytes), timeout: timeout ?? defaultTimeout)
        let decoded = response.withUnsafeReadableBytes { raw in
            Result { () throws(MessageDecodingError) in try Response(serializedBytes: raw) }
        }
        switch decoded {
        case .success(let message): return message
        case .failure(let error): throw RPCError(.internal, "response: \(error.description)")
        }
    }
}
