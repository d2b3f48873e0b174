/// A gRPC status that is not OK: what every failed call surfaces as, on both sides.
public struct RPCError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A gRPC status code (an extensible set of static members, as in grpc-swift).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The numeric code on the wire (`grpc-status`).
        public var rawValue: Int

        /// Creates a code from its wire value.
        public init(rawValue: Int) { self.rawValue = rawValue }

        public static let cancelled = Code(rawValue: 1)
        public static let unknown = Code(rawValue: 2)
        public static let invalidArgument = Code(rawValue: 3)
        public static let deadlineExceeded = Code(rawValue: 4)
        public static let notFound = Code(rawValue: 5)
        public static let alreadyExists = Code(rawValue: 6)
        public static let permissionDenied = Code(rawValue: 7)
        public static let resourceExhausted = Code(rawValue: 8)
        public static let failedPrecondition = Code(rawValue: 9)
        public static let aborted = Code(rawValue: 10)
        public static let outOfRange = Code(rawValue: 11)
        public static let unimplemented = Code(rawValue: 12)
        public static let `internal` = Code(rawValue: 13)
        public static let unavailable = Code(rawValue: 14)
        public static let dataLoss = Code(rawValue: 15)
        public static let unauthenticated = Code(rawValue: 16)

        private static let names = [
            0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
            6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
            10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
            15: "DATA_LOSS", 16: "UNAUTHENTICATED",
        ]

        public var description: String { Self.names[rawValue] ?? "STATUS_\(rawValue)" }
    }

    /// The status code.
    public var code: Code
    /// The status message (`grpc-message`).
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

extension RPCError.Code {
    /// The gRPC code for an HTTP response without `grpc-status` (the gRPC HTTP/2 spec's table).
    init(httpStatus: Int) {
        switch httpStatus {
        case 400: self = .internal
        case 401: self = .unauthenticated
        case 403: self = .permissionDenied
        case 404: self = .unimplemented
        case 429, 502, 503, 504: self = .unavailable
        default: self = .unknown
        }
    }

    /// The gRPC code for a stream reset with an HTTP/2 error code.
    init(http2ErrorCode: UInt32) {
        switch http2ErrorCode {
        case 0x7: self = .unavailable  // REFUSED_STREAM: not processed, safe to retry
        case 0x8: self = .cancelled  // CANCEL
        case 0xb: self = .resourceExhausted  // ENHANCE_YOUR_CALM
        case 0xc: self = .permissionDenied  // INADEQUATE_SECURITY
        default: self = .internal
        }
    }
}
