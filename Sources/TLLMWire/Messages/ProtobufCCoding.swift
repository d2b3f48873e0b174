import CProtobufC
import CTLLMProto

/// A message of the tllm protocol that travels as protobuf bytes.
public protocol WireMessage: Sendable {
    /// The message's name in the proto (used in error messages).
    static var protoName: String { get }
    /// Decodes protobuf bytes (protobuf-c does the parsing).
    init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError)
    /// Encodes to protobuf bytes (protobuf-c does the packing).
    func serializedBytes() -> [UInt8]
}

extension WireMessage {
    /// Decodes protobuf bytes held in an array.
    public init(serializedBytes bytes: [UInt8]) throws(MessageDecodingError) {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(MessageDecodingError) in try Self(serializedBytes: raw) }
        }
        self = try result.get()
    }
}

/// Protobuf bytes that do not parse as the expected message.
public struct MessageDecodingError: Error, CustomStringConvertible, Sendable {
    /// The message type that was expected.
    public var messageName: String
    /// How many bytes were offered.
    public var byteCount: Int
    public var description: String {
        "malformed protobuf: \(byteCount) bytes do not decode as schemas.\(messageName)"
    }
}

// MARK: - Memory for the C side of encoding

/// Owns the C memory a message's C struct points into while it is packed.
/// Encoding builds the protobuf-c structs in here, packs them, and frees all at once.
private final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for pointer in allocations { pointer.deallocate() }
    }

    func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let pointer = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        allocations.append(UnsafeMutableRawPointer(pointer))
        return pointer
    }

    func copy<T>(_ values: [T]) -> UnsafeMutablePointer<T>? {
        if values.isEmpty { return nil }
        let pointer = allocate(T.self, count: values.count)
        pointer.initialize(from: values, count: values.count)
        return pointer
    }

    func cString(_ string: String) -> UnsafeMutablePointer<CChar> {
        let utf8 = Array(string.utf8)
        let pointer = allocate(CChar.self, count: utf8.count + 1)
        utf8.withUnsafeBytes { source in
            UnsafeMutableRawBufferPointer(start: pointer, count: utf8.count).copyMemory(from: source)
        }
        pointer[utf8.count] = 0
        return pointer
    }

    func cStrings(_ strings: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? {
        copy(strings.map { Optional(cString($0)) })
    }

    func unknownFields(_ fields: [UnknownField]) -> UnsafeMutablePointer<ProtobufCMessageUnknownField>? {
        copy(
            fields.map { field in
                let data = copy(field.payload)
                return ProtobufCMessageUnknownField(
                    tag: field.number, wire_type: ProtobufCWireType(rawValue: field.wireType), len: field.payload.count,
                    data: data)
            })
    }
}

// MARK: - Reading the C structs protobuf-c produced

private func readStrings(_ count: Int, _ pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> [String] {
    guard let pointer, count > 0 else { return [] }
    return (0..<count).map { pointer[$0].map { String(cString: $0) } ?? "" }
}

private func readString(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
    pointer.map { String(cString: $0) } ?? ""
}

private func readArray<T>(_ count: Int, _ pointer: UnsafeMutablePointer<T>?) -> [T] {
    guard let pointer, count > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: pointer, count: count))
}

private func readUnknownFields(_ base: ProtobufCMessage) -> [UnknownField] {
    readArray(Int(base.n_unknown_fields), base.unknown_fields).map { field in
        UnknownField(number: field.tag, wireType: field.wire_type.rawValue, payload: readArray(field.len, field.data))
    }
}

private func setUnknownFields(_ base: inout ProtobufCMessage, _ fields: [UnknownField], _ arena: CArena) {
    base.n_unknown_fields = UInt32(fields.count)
    base.unknown_fields = arena.unknownFields(fields)
}

/// The functions protoc-c generated for one message type, and the two operations built on them.
private struct ProtobufCFunctions<CMessage>: Sendable {
    typealias Allocator = UnsafeMutablePointer<ProtobufCAllocator>?
    let name: String
    let initialize: @Sendable (UnsafeMutablePointer<CMessage>) -> Void
    let unpack: @Sendable (Allocator, Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<CMessage>?
    let free: @Sendable (UnsafeMutablePointer<CMessage>?, Allocator) -> Void
    let size: @Sendable (UnsafePointer<CMessage>) -> Int
    let pack: @Sendable (UnsafePointer<CMessage>, UnsafeMutablePointer<UInt8>) -> Int

    /// Unpacks `bytes`, converts the C struct and frees it.
    func decode<Value>(_ bytes: UnsafeRawBufferPointer, _ convert: (CMessage) -> Value) throws(MessageDecodingError)
        -> Value
    {
        // protobuf-c wants a non-null pointer even for zero bytes (the empty message).
        var zero: UInt8 = 0
        let message = withUnsafePointer(to: &zero) { zeroPointer in
            unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? zeroPointer)
        }
        guard let message else { throw MessageDecodingError(messageName: name, byteCount: bytes.count) }
        defer { free(message, nil) }
        return convert(message.pointee)
    }

    /// A freshly initialised C struct (descriptor set, proto3 defaults).
    func makeMessage() -> CMessage {
        let pointer = UnsafeMutablePointer<CMessage>.allocate(capacity: 1)
        defer { pointer.deallocate() }
        initialize(pointer)
        return pointer.move()
    }

    /// Packs a C struct into protobuf bytes; `arena` owns what the struct points to and
    /// must outlive the packing (Swift may otherwise end its lifetime at its last use).
    func encode(_ message: inout CMessage, arena: CArena) -> [UInt8] {
        withExtendedLifetime(arena) { encode(&message) }
    }

    private func encode(_ message: inout CMessage) -> [UInt8] {
        let count = size(&message)
        if count == 0 { return [] }
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            initialized = pack(&message, buffer.baseAddress!)
            precondition(initialized == count, "protobuf-c packed \(initialized) bytes, announced \(count)")
        }
    }
}

// MARK: - The generated functions of each message

private let tensorFunctions = ProtobufCFunctions(
    name: "BFloat16Tensor", initialize: schemas__bfloat16_tensor__init, unpack: schemas__bfloat16_tensor__unpack,
    free: schemas__bfloat16_tensor__free_unpacked, size: schemas__bfloat16_tensor__get_packed_size,
    pack: schemas__bfloat16_tensor__pack)
private let inputIdsFunctions = ProtobufCFunctions(
    name: "InputIds", initialize: schemas__input_ids__init, unpack: schemas__input_ids__unpack,
    free: schemas__input_ids__free_unpacked, size: schemas__input_ids__get_packed_size, pack: schemas__input_ids__pack)
private let forwardRequestFunctions = ProtobufCFunctions(
    name: "ForwardRequest", initialize: schemas__forward_request__init, unpack: schemas__forward_request__unpack,
    free: schemas__forward_request__free_unpacked, size: schemas__forward_request__get_packed_size,
    pack: schemas__forward_request__pack)
private let statusRequestFunctions = ProtobufCFunctions(
    name: "StatusRequest", initialize: schemas__status_request__init, unpack: schemas__status_request__unpack,
    free: schemas__status_request__free_unpacked, size: schemas__status_request__get_packed_size,
    pack: schemas__status_request__pack)
private let emptyFunctions = ProtobufCFunctions(
    name: "Empty", initialize: schemas__empty__init, unpack: schemas__empty__unpack,
    free: schemas__empty__free_unpacked, size: schemas__empty__get_packed_size, pack: schemas__empty__pack)
private let setConfigRequestFunctions = ProtobufCFunctions(
    name: "SetConfigRequest", initialize: schemas__set_config_request__init,
    unpack: schemas__set_config_request__unpack, free: schemas__set_config_request__free_unpacked,
    size: schemas__set_config_request__get_packed_size, pack: schemas__set_config_request__pack)
private let imageForwardRequestFunctions = ProtobufCFunctions(
    name: "ImageForwardRequest", initialize: schemas__image_forward_request__init,
    unpack: schemas__image_forward_request__unpack, free: schemas__image_forward_request__free_unpacked,
    size: schemas__image_forward_request__get_packed_size, pack: schemas__image_forward_request__pack)

// MARK: - BFloat16Tensor and InputIds (also nested in other messages)

extension BFloat16Tensor: WireMessage {
    public static let protoName = "BFloat16Tensor"

    fileprivate init(_ c: Schemas__BFloat16Tensor) {
        self.init(
            data: readArray(c.data.len, c.data.data), shape: readArray(c.n_shape, c.shape),
            unknownFields: readUnknownFields(c.base))
    }

    /// Fills a C struct that points into this tensor's bytes for the duration of `body`.
    fileprivate func withCStruct<R>(_ arena: CArena, _ body: (UnsafeMutablePointer<Schemas__BFloat16Tensor>) -> R) -> R
    {
        let c = arena.allocate(Schemas__BFloat16Tensor.self, count: 1)
        schemas__bfloat16_tensor__init(c)
        c.pointee.n_shape = shape.count
        c.pointee.shape = arena.copy(shape)
        setUnknownFields(&c.pointee.base, unknownFields, arena)
        return data.withUnsafeBufferPointer { bytes in
            c.pointee.data = ProtobufCBinaryData(
                len: bytes.count, data: UnsafeMutablePointer(mutating: bytes.baseAddress))
            return body(c)
        }
    }

    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try tensorFunctions.decode(bytes, BFloat16Tensor.init)
    }

    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        return withCStruct(arena) { tensorFunctions.encode(&$0.pointee, arena: arena) }
    }
}

/// Nests `withCStruct` for an optional tensor: nil when absent.
private func withOptionalTensor<R>(
    _ tensor: BFloat16Tensor?, _ arena: CArena, _ body: (UnsafeMutablePointer<Schemas__BFloat16Tensor>?) -> R
) -> R {
    guard let tensor else { return body(nil) }
    return tensor.withCStruct(arena) { body($0) }
}

extension InputIds: WireMessage {
    public static let protoName = "InputIds"

    fileprivate init(_ c: Schemas__InputIds) {
        self.init(inputIds: readArray(c.n_input_ids, c.input_ids), unknownFields: readUnknownFields(c.base))
    }

    fileprivate func cStruct(_ arena: CArena) -> UnsafeMutablePointer<Schemas__InputIds> {
        let c = arena.allocate(Schemas__InputIds.self, count: 1)
        schemas__input_ids__init(c)
        c.pointee.n_input_ids = inputIds.count
        c.pointee.input_ids = arena.copy(inputIds)
        setUnknownFields(&c.pointee.base, unknownFields, arena)
        return c
    }

    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try inputIdsFunctions.decode(bytes, InputIds.init)
    }

    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        return inputIdsFunctions.encode(&cStruct(arena).pointee, arena: arena)
    }
}

// MARK: - Requests

extension ForwardRequest: WireMessage {
    public static let protoName = "ForwardRequest"

    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try forwardRequestFunctions.decode(bytes) { c in
            ForwardRequest(
                uuidList: readStrings(c.n_uuid_list, c.uuid_list),
                inputIdsList: readArray(c.n_input_ids_list, c.input_ids_list).map { InputIds($0!.pointee) },
                hiddenStates: c.hidden_states.map { BFloat16Tensor($0.pointee) },
                unknownFields: readUnknownFields(c.base))
        }
    }

    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        var c = forwardRequestFunctions.makeMessage()
        c.n_uuid_list = uuidList.count
        c.uuid_list = arena.cStrings(uuidList)
        c.n_input_ids_list = inputIdsList.count
        c.input_ids_list = arena.copy(inputIdsList.map { Optional($0.cStruct(arena)) })
        setUnknownFields(&c.base, unknownFields, arena)
        return withOptionalTensor(hiddenStates, arena) { tensor in
            c.hidden_states = tensor
            return forwardRequestFunctions.encode(&c, arena: arena)
        }
    }
}

extension StatusRequest: WireMessage {
    public static let protoName = "StatusRequest"

    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try statusRequestFunctions.decode(bytes) { c in
            StatusRequest(
                uuid: readStrings(c.n_uuid, c.uuid), ppIdx: c.pp_idx, costTime: c.cost_time,
                unknownFields: readUnknownFields(c.base))
        }
    }

    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        var c = statusRequestFunctions.makeMessage()
        c.n_uuid = uuid.count
        c.uuid = arena.cStrings(uuid)
        c.pp_idx = ppIdx
        c.cost_time = costTime
        setUnknownFields(&c.base, unknownFields, arena)
        return statusRequestFunctions.encode(&c, arena: arena)
    }
}

extension Empty: WireMessage {
    public static let protoName = "Empty"

    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try emptyFunctions.decode(bytes) { Empty(unknownFields: readUnknownFields($0.base)) }
    }

    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        var c = emptyFunctions.makeMessage()
        setUnknownFields(&c.base, unknownFields, arena)
        return emptyFunctions.encode(&c, arena: arena)
    }
}

extension SetConfigRequest: WireMessage {
    public static let protoName = "SetConfigRequest"

    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try setConfigRequestFunctions.decode(bytes) { c in
            SetConfigRequest(
                forwardURL: readString(c.forward_url), masterURL: readString(c.master_url), ppRank: c.pp_rank,
                unknownFields: readUnknownFields(c.base))
        }
    }

    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        var c = setConfigRequestFunctions.makeMessage()
        c.forward_url = arena.cString(forwardURL)
        c.master_url = arena.cString(masterURL)
        c.pp_rank = ppRank
        setUnknownFields(&c.base, unknownFields, arena)
        return setConfigRequestFunctions.encode(&c, arena: arena)
    }
}

extension ImageForwardRequest: WireMessage {
    public static let protoName = "ImageForwardRequest"

    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try imageForwardRequestFunctions.decode(bytes) { c in
            ImageForwardRequest(
                uuid: readStrings(c.n_uuid, c.uuid),
                hiddenStates: c.hidden_states.map { BFloat16Tensor($0.pointee) },
                encoderHiddenStates: c.encoder_hidden_states.map { BFloat16Tensor($0.pointee) },
                textEmbeddings: c.text_embeddings.map { BFloat16Tensor($0.pointee) },
                seqLen: c.seq_len, height: c.height, width: c.width, unknownFields: readUnknownFields(c.base))
        }
    }

    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        var c = imageForwardRequestFunctions.makeMessage()
        c.n_uuid = uuid.count
        c.uuid = arena.cStrings(uuid)
        c.seq_len = seqLen
        c.height = height
        c.width = width
        setUnknownFields(&c.base, unknownFields, arena)
        return withOptionalTensor(hiddenStates, arena) { hidden in
            withOptionalTensor(encoderHiddenStates, arena) { encoder in
                withOptionalTensor(textEmbeddings, arena) { text in
                    c.hidden_states = hidden
                    c.encoder_hidden_states = encoder
                    c.text_embeddings = text
                    return imageForwardRequestFunctions.encode(&c, arena: arena)
                }
            }
        }
    }
}

// MARK: - The four {msg, status} responses

/// How one `{msg, status}` response maps onto its protobuf-c struct; the four generated
/// structs have the same fields, so one coding serves them all.
private struct StatusResponseCoding<Value: MessageStatusResponse, CMessage>: Sendable {
    let functions: ProtobufCFunctions<CMessage>
    let base: any WritableKeyPath<CMessage, ProtobufCMessage> & Sendable
    let msg: any WritableKeyPath<CMessage, UnsafeMutablePointer<CChar>?> & Sendable
    let status: any WritableKeyPath<CMessage, Int32> & Sendable

    func decode(_ bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) -> Value {
        try functions.decode(bytes) { c in
            Value(
                msg: readString(c[keyPath: msg]), status: c[keyPath: status],
                unknownFields: readUnknownFields(c[keyPath: base]))
        }
    }

    func encode(_ value: Value) -> [UInt8] {
        let arena = CArena()
        var c = functions.makeMessage()
        c[keyPath: msg] = arena.cString(value.msg)
        c[keyPath: status] = value.status
        setUnknownFields(&c[keyPath: base], value.unknownFields, arena)
        return functions.encode(&c, arena: arena)
    }
}

extension StatusResponse: WireMessage {
    public static let protoName = "StatusResponse"
    private static let coding = StatusResponseCoding<Self, Schemas__StatusResponse>(
        functions: ProtobufCFunctions(
            name: protoName, initialize: schemas__status_response__init, unpack: schemas__status_response__unpack,
            free: schemas__status_response__free_unpacked, size: schemas__status_response__get_packed_size,
            pack: schemas__status_response__pack),
        base: \.base, msg: \.msg, status: \.status)
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try Self.coding.decode(bytes)
    }
    public func serializedBytes() -> [UInt8] { Self.coding.encode(self) }
}

extension ForwardResponse: WireMessage {
    public static let protoName = "ForwardResponse"
    private static let coding = StatusResponseCoding<Self, Schemas__ForwardResponse>(
        functions: ProtobufCFunctions(
            name: protoName, initialize: schemas__forward_response__init, unpack: schemas__forward_response__unpack,
            free: schemas__forward_response__free_unpacked, size: schemas__forward_response__get_packed_size,
            pack: schemas__forward_response__pack),
        base: \.base, msg: \.msg, status: \.status)
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try Self.coding.decode(bytes)
    }
    public func serializedBytes() -> [UInt8] { Self.coding.encode(self) }
}

extension HealthResponse: WireMessage {
    public static let protoName = "HealthResponse"
    private static let coding = StatusResponseCoding<Self, Schemas__HealthResponse>(
        functions: ProtobufCFunctions(
            name: protoName, initialize: schemas__health_response__init, unpack: schemas__health_response__unpack,
            free: schemas__health_response__free_unpacked, size: schemas__health_response__get_packed_size,
            pack: schemas__health_response__pack),
        base: \.base, msg: \.msg, status: \.status)
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try Self.coding.decode(bytes)
    }
    public func serializedBytes() -> [UInt8] { Self.coding.encode(self) }
}

extension SetConfigResponse: WireMessage {
    public static let protoName = "SetConfigResponse"
    private static let coding = StatusResponseCoding<Self, Schemas__SetConfigResponse>(
        functions: ProtobufCFunctions(
            name: protoName, initialize: schemas__set_config_response__init,
            unpack: schemas__set_config_response__unpack, free: schemas__set_config_response__free_unpacked,
            size: schemas__set_config_response__get_packed_size, pack: schemas__set_config_response__pack),
        base: \.base, msg: \.msg, status: \.status)
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try Self.coding.decode(bytes)
    }
    public func serializedBytes() -> [UInt8] { Self.coding.encode(self) }
}
