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

/// Runs protobuf-c's typed unpack function, converts the result and frees it.
private func unpack<CMessage, Value>(
    _ bytes: UnsafeRawBufferPointer, name: String,
    _ unpack: (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<
        CMessage
    >?,
    _ free: (UnsafeMutablePointer<CMessage>?, UnsafeMutablePointer<ProtobufCAllocator>?) -> Void,
    _ convert: (CMessage) -> Value
) throws(MessageDecodingError) -> Value {
    // protobuf-c wants a non-null pointer even for zero bytes (the empty message).
    var zero: UInt8 = 0
    let message = withUnsafePointer(to: &zero) { zeroPointer in
        unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? zeroPointer)
    }
    guard let message else { throw MessageDecodingError(messageName: name, byteCount: bytes.count) }
    defer { free(message, nil) }
    return convert(message.pointee)
}

/// Runs protobuf-c's typed size and pack functions over a C struct.
private func pack<CMessage>(
    _ message: inout CMessage,
    size: (UnsafePointer<CMessage>) -> Int,
    pack: (UnsafePointer<CMessage>, UnsafeMutablePointer<UInt8>) -> Int
) -> [UInt8] {
    let count = size(&message)
    if count == 0 { return [] }
    return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
        initialized = pack(&message, buffer.baseAddress!)
        precondition(initialized == count, "protobuf-c packed \(initialized) bytes, announced \(count)")
    }
}

// MARK: - BFloat16Tensor and InputIds (also nested in other messages)

extension BFloat16Tensor {
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
}

/// Nests `withCStruct` for an optional tensor: nil when absent.
private func withOptionalTensor<R>(
    _ tensor: BFloat16Tensor?, _ arena: CArena, _ body: (UnsafeMutablePointer<Schemas__BFloat16Tensor>?) -> R
) -> R {
    guard let tensor else { return body(nil) }
    return tensor.withCStruct(arena) { body($0) }
}

extension BFloat16Tensor: WireMessage {
    public static let protoName = "BFloat16Tensor"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try unpack(
            bytes, name: Self.protoName, schemas__bfloat16_tensor__unpack, schemas__bfloat16_tensor__free_unpacked
        ) {
            BFloat16Tensor($0)
        }
    }
    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        return withCStruct(arena) { c in
            pack(&c.pointee, size: schemas__bfloat16_tensor__get_packed_size, pack: schemas__bfloat16_tensor__pack)
        }
    }
}

extension InputIds {
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
}

extension InputIds: WireMessage {
    public static let protoName = "InputIds"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try unpack(bytes, name: Self.protoName, schemas__input_ids__unpack, schemas__input_ids__free_unpacked) {
            InputIds($0)
        }
    }
    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        let c = cStruct(arena)
        return pack(&c.pointee, size: schemas__input_ids__get_packed_size, pack: schemas__input_ids__pack)
    }
}

// MARK: - ForwardRequest

extension ForwardRequest: WireMessage {
    public static let protoName = "ForwardRequest"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try unpack(
            bytes, name: Self.protoName, schemas__forward_request__unpack, schemas__forward_request__free_unpacked
        ) { c in
            ForwardRequest(
                uuidList: readStrings(c.n_uuid_list, c.uuid_list),
                inputIdsList: readArray(c.n_input_ids_list, c.input_ids_list).map { InputIds($0!.pointee) },
                hiddenStates: c.hidden_states.map { BFloat16Tensor($0.pointee) },
                unknownFields: readUnknownFields(c.base))
        }
    }
    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        var c = Schemas__ForwardRequest()
        schemas__forward_request__init(&c)
        c.n_uuid_list = uuidList.count
        c.uuid_list = arena.cStrings(uuidList)
        c.n_input_ids_list = inputIdsList.count
        c.input_ids_list = arena.copy(inputIdsList.map { Optional($0.cStruct(arena)) })
        setUnknownFields(&c.base, unknownFields, arena)
        return withOptionalTensor(hiddenStates, arena) { tensor in
            c.hidden_states = tensor
            return pack(&c, size: schemas__forward_request__get_packed_size, pack: schemas__forward_request__pack)
        }
    }
}

// MARK: - StatusRequest

extension StatusRequest: WireMessage {
    public static let protoName = "StatusRequest"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try unpack(
            bytes, name: Self.protoName, schemas__status_request__unpack, schemas__status_request__free_unpacked
        ) { c in
            StatusRequest(
                uuid: readStrings(c.n_uuid, c.uuid), ppIdx: c.pp_idx, costTime: c.cost_time,
                unknownFields: readUnknownFields(c.base))
        }
    }
    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        var c = Schemas__StatusRequest()
        schemas__status_request__init(&c)
        c.n_uuid = uuid.count
        c.uuid = arena.cStrings(uuid)
        c.pp_idx = ppIdx
        c.cost_time = costTime
        setUnknownFields(&c.base, unknownFields, arena)
        return pack(&c, size: schemas__status_request__get_packed_size, pack: schemas__status_request__pack)
    }
}

// MARK: - The {msg, status} responses

/// The four `{msg, status}` messages differ only in their protobuf-c functions.
private func decodeStatusResponse<CMessage, Value: MessageStatusResponse>(
    _ bytes: UnsafeRawBufferPointer, as: Value.Type, name: String,
    _ unpackFunction: (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<
        CMessage
    >?,
    _ free: (UnsafeMutablePointer<CMessage>?, UnsafeMutablePointer<ProtobufCAllocator>?) -> Void,
    _ fields: (CMessage) -> (ProtobufCMessage, UnsafeMutablePointer<CChar>?, Int32)
) throws(MessageDecodingError) -> Value {
    try unpack(bytes, name: name, unpackFunction, free) { c in
        let (base, msg, status) = fields(c)
        return Value(msg: readString(msg), status: status, unknownFields: readUnknownFields(base))
    }
}

private func encodeStatusResponse<CMessage>(
    _ value: some MessageStatusResponse, _ initialize: (UnsafeMutablePointer<CMessage>) -> Void,
    _ set: (inout CMessage, ProtobufCMessage, UnsafeMutablePointer<CChar>, Int32) -> Void,
    _ base: (CMessage) -> ProtobufCMessage,
    size: (UnsafePointer<CMessage>) -> Int,
    pack packFunction: (UnsafePointer<CMessage>, UnsafeMutablePointer<UInt8>) -> Int
) -> [UInt8] {
    let arena = CArena()
    let c = arena.allocate(CMessage.self, count: 1)
    initialize(c)
    var header = base(c.pointee)
    setUnknownFields(&header, value.unknownFields, arena)
    set(&c.pointee, header, arena.cString(value.msg), value.status)
    return pack(&c.pointee, size: size, pack: packFunction)
}

extension StatusResponse: WireMessage {
    public static let protoName = "StatusResponse"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try decodeStatusResponse(
            bytes, as: Self.self, name: Self.protoName, schemas__status_response__unpack,
            schemas__status_response__free_unpacked
        ) { ($0.base, $0.msg, $0.status) }
    }
    public func serializedBytes() -> [UInt8] {
        encodeStatusResponse(
            self, schemas__status_response__init,
            {
                $0.base = $1; $0.msg = $2; $0.status = $3
            }, { $0.base },
            size: schemas__status_response__get_packed_size, pack: schemas__status_response__pack)
    }
}

extension ForwardResponse: WireMessage {
    public static let protoName = "ForwardResponse"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try decodeStatusResponse(
            bytes, as: Self.self, name: Self.protoName, schemas__forward_response__unpack,
            schemas__forward_response__free_unpacked
        ) { ($0.base, $0.msg, $0.status) }
    }
    public func serializedBytes() -> [UInt8] {
        encodeStatusResponse(
            self, schemas__forward_response__init,
            {
                $0.base = $1; $0.msg = $2; $0.status = $3
            }, { $0.base },
            size: schemas__forward_response__get_packed_size, pack: schemas__forward_response__pack)
    }
}

extension HealthResponse: WireMessage {
    public static let protoName = "HealthResponse"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try decodeStatusResponse(
            bytes, as: Self.self, name: Self.protoName, schemas__health_response__unpack,
            schemas__health_response__free_unpacked
        ) { ($0.base, $0.msg, $0.status) }
    }
    public func serializedBytes() -> [UInt8] {
        encodeStatusResponse(
            self, schemas__health_response__init,
            {
                $0.base = $1; $0.msg = $2; $0.status = $3
            }, { $0.base },
            size: schemas__health_response__get_packed_size, pack: schemas__health_response__pack)
    }
}

extension SetConfigResponse: WireMessage {
    public static let protoName = "SetConfigResponse"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try decodeStatusResponse(
            bytes, as: Self.self, name: Self.protoName, schemas__set_config_response__unpack,
            schemas__set_config_response__free_unpacked
        ) { ($0.base, $0.msg, $0.status) }
    }
    public func serializedBytes() -> [UInt8] {
        encodeStatusResponse(
            self, schemas__set_config_response__init,
            {
                $0.base = $1; $0.msg = $2; $0.status = $3
            }, { $0.base },
            size: schemas__set_config_response__get_packed_size, pack: schemas__set_config_response__pack)
    }
}

// MARK: - Empty, SetConfigRequest, ImageForwardRequest

extension Empty: WireMessage {
    public static let protoName = "Empty"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try unpack(bytes, name: Self.protoName, schemas__empty__unpack, schemas__empty__free_unpacked) {
            Empty(unknownFields: readUnknownFields($0.base))
        }
    }
    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        var c = Schemas__Empty()
        schemas__empty__init(&c)
        setUnknownFields(&c.base, unknownFields, arena)
        return pack(&c, size: schemas__empty__get_packed_size, pack: schemas__empty__pack)
    }
}

extension SetConfigRequest: WireMessage {
    public static let protoName = "SetConfigRequest"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try unpack(
            bytes, name: Self.protoName, schemas__set_config_request__unpack, schemas__set_config_request__free_unpacked
        ) { c in
            SetConfigRequest(
                forwardURL: readString(c.forward_url), masterURL: readString(c.master_url), ppRank: c.pp_rank,
                unknownFields: readUnknownFields(c.base))
        }
    }
    public func serializedBytes() -> [UInt8] {
        let arena = CArena()
        var c = Schemas__SetConfigRequest()
        schemas__set_config_request__init(&c)
        c.forward_url = arena.cString(forwardURL)
        c.master_url = arena.cString(masterURL)
        c.pp_rank = ppRank
        setUnknownFields(&c.base, unknownFields, arena)
        return pack(&c, size: schemas__set_config_request__get_packed_size, pack: schemas__set_config_request__pack)
    }
}

extension ImageForwardRequest: WireMessage {
    public static let protoName = "ImageForwardRequest"
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(MessageDecodingError) {
        self = try unpack(
            bytes, name: Self.protoName, schemas__image_forward_request__unpack,
            schemas__image_forward_request__free_unpacked
        ) { c in
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
        var c = Schemas__ImageForwardRequest()
        schemas__image_forward_request__init(&c)
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
                    return pack(
                        &c, size: schemas__image_forward_request__get_packed_size,
                        pack: schemas__image_forward_request__pack)
                }
            }
        }
    }
}
