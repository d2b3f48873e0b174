/// Swift value types for the messages of `Protos/schemas.proto` (package `schemas`).
///
/// Field names follow the proto in Swift case; numbers and types are those of the
/// wire contract (`tllm-protocol.md`, section 2). Every message keeps the fields
/// it did not recognise (`unknownFields`) and writes them back when re-encoded,
/// as proto3 asks. Encoding and decoding go through protobuf-c (`ProtobufCCoding.swift`).

/// A field a decoder did not recognise, kept verbatim so re-encoding preserves it.
public struct UnknownField: Sendable, Hashable {
    /// The field number.
    public var number: UInt32
    /// The protobuf wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
    public var wireType: UInt32
    /// The field's payload as it appeared on the wire (without tag; with no length prefix for type 2).
    public var payload: [UInt8]

    /// Creates an unknown field.
    public init(number: UInt32, wireType: UInt32, payload: [UInt8]) {
        self.number = number
        self.wireType = wireType
        self.payload = payload
    }
}

/// `[rows, hidden]` float16 tensor bytes (the name is the original's; the data is IEEE float16).
public struct BFloat16Tensor: Sendable, Hashable {
    /// Row-major little-endian float16 values, LZ4-frame compressed when `shape[0] >= 64`.
    public var data: [UInt8]
    /// `[rows, hidden]`.
    public var shape: [Int32]
    /// Fields this decoder did not know.
    public var unknownFields: [UnknownField]

    /// Creates a tensor message.
    public init(data: [UInt8] = [], shape: [Int32] = [], unknownFields: [UnknownField] = []) {
        self.data = data
        self.shape = shape
        self.unknownFields = unknownFields
    }
}

/// The token ids one request contributes to a step.
public struct InputIds: Sendable, Hashable {
    /// Token ids.
    public var inputIds: [Int32]
    /// Fields this decoder did not know.
    public var unknownFields: [UnknownField]

    /// Creates the message.
    public init(inputIds: [Int32] = [], unknownFields: [UnknownField] = []) {
        self.inputIds = inputIds
        self.unknownFields = unknownFields
    }
}

/// One pipeline step: the requests in it, their new tokens and the stacked hidden states.
public struct ForwardRequest: Sendable, Hashable {
    /// Request ids, one per request in the step.
    public var uuidList: [String]
    /// Token ids per request, in `uuidList` order.
    public var inputIdsList: [InputIds]
    /// Rows of all requests stacked in order (absent in an empty message).
    public var hiddenStates: BFloat16Tensor?
    /// Fields this decoder did not know.
    public var unknownFields: [UnknownField]

    /// Creates the message.
    public init(
        uuidList: [String] = [], inputIdsList: [InputIds] = [], hiddenStates: BFloat16Tensor? = nil,
        unknownFields: [UnknownField] = []
    ) {
        self.uuidList = uuidList
        self.inputIdsList = inputIdsList
        self.hiddenStates = hiddenStates
        self.unknownFields = unknownFields
    }
}

/// A stage's report of a step it computed.
public struct StatusRequest: Sendable, Hashable {
    /// The step's uuid list.
    public var uuid: [String]
    /// The reporting stage's rank.
    public var ppIdx: Int32
    /// Compute seconds.
    public var costTime: Float
    /// Fields this decoder did not know.
    public var unknownFields: [UnknownField]

    /// Creates the message.
    public init(uuid: [String] = [], ppIdx: Int32 = 0, costTime: Float = 0, unknownFields: [UnknownField] = []) {
        self.uuid = uuid
        self.ppIdx = ppIdx
        self.costTime = costTime
        self.unknownFields = unknownFields
    }
}

/// `{msg, status}`: the shape of every response of the service.
public protocol MessageStatusResponse: Sendable, Hashable {
    /// Human-readable outcome.
    var msg: String { get set }
    /// HTTP-like status code (200 success).
    var status: Int32 { get set }
    /// Fields this decoder did not know.
    var unknownFields: [UnknownField] { get set }
    /// Creates the response.
    init(msg: String, status: Int32, unknownFields: [UnknownField])
}

/// Answer to `Status`.
public struct StatusResponse: MessageStatusResponse {
    public var msg: String
    public var status: Int32
    public var unknownFields: [UnknownField]
    /// Creates the response.
    public init(msg: String = "", status: Int32 = 0, unknownFields: [UnknownField] = []) {
        self.msg = msg
        self.status = status
        self.unknownFields = unknownFields
    }
}

/// Answer to `Forward` and `ImageForward`.
public struct ForwardResponse: MessageStatusResponse {
    public var msg: String
    public var status: Int32
    public var unknownFields: [UnknownField]
    /// Creates the response.
    public init(msg: String = "", status: Int32 = 0, unknownFields: [UnknownField] = []) {
        self.msg = msg
        self.status = status
        self.unknownFields = unknownFields
    }
}

/// Answer to `Health`.
public struct HealthResponse: MessageStatusResponse {
    public var msg: String
    public var status: Int32
    public var unknownFields: [UnknownField]
    /// Creates the response.
    public init(msg: String = "", status: Int32 = 0, unknownFields: [UnknownField] = []) {
        self.msg = msg
        self.status = status
        self.unknownFields = unknownFields
    }
}

/// Answer to `SetConfig`.
public struct SetConfigResponse: MessageStatusResponse {
    public var msg: String
    public var status: Int32
    public var unknownFields: [UnknownField]
    /// Creates the response.
    public init(msg: String = "", status: Int32 = 0, unknownFields: [UnknownField] = []) {
        self.msg = msg
        self.status = status
        self.unknownFields = unknownFields
    }
}

/// The empty message (`Health`'s request).
public struct Empty: Sendable, Hashable {
    /// Fields this decoder did not know.
    public var unknownFields: [UnknownField]
    /// Creates the message.
    public init(unknownFields: [UnknownField] = []) { self.unknownFields = unknownFields }
}

/// Tells a worker where to send its results.
public struct SetConfigRequest: Sendable, Hashable {
    /// The next hop's gRPC address (the master's for the last stage).
    public var forwardURL: String
    /// The master's gRPC address.
    public var masterURL: String
    /// The worker's pipeline rank.
    public var ppRank: Int32
    /// Fields this decoder did not know.
    public var unknownFields: [UnknownField]

    /// Creates the message.
    public init(forwardURL: String = "", masterURL: String = "", ppRank: Int32 = 0, unknownFields: [UnknownField] = [])
    {
        self.forwardURL = forwardURL
        self.masterURL = masterURL
        self.ppRank = ppRank
        self.unknownFields = unknownFields
    }
}

/// The image-generation step of the original (out of scope; decoded so it can be refused cleanly).
public struct ImageForwardRequest: Sendable, Hashable {
    public var uuid: [String]
    public var hiddenStates: BFloat16Tensor?
    public var encoderHiddenStates: BFloat16Tensor?
    public var textEmbeddings: BFloat16Tensor?
    public var seqLen: Int32
    public var height: Int32
    public var width: Int32
    /// Fields this decoder did not know.
    public var unknownFields: [UnknownField]

    /// Creates the message.
    public init(
        uuid: [String] = [], hiddenStates: BFloat16Tensor? = nil, encoderHiddenStates: BFloat16Tensor? = nil,
        textEmbeddings: BFloat16Tensor? = nil, seqLen: Int32 = 0, height: Int32 = 0, width: Int32 = 0,
        unknownFields: [UnknownField] = []
    ) {
        self.uuid = uuid
        self.hiddenStates = hiddenStates
        self.encoderHiddenStates = encoderHiddenStates
        self.textEmbeddings = textEmbeddings
        self.seqLen = seqLen
        self.height = height
        self.width = width
        self.unknownFields = unknownFields
    }
}
