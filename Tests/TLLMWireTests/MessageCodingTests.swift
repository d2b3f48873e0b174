import Testing

@testable import TLLMWire

@Suite struct MessageCodingTests {
    @Test func everyMessageRoundTrips() throws {
        let tensor = BFloat16Tensor(data: [1, 2, 3, 4], shape: [1, 2])
        let forward = ForwardRequest(
            uuidList: ["a", "b-ü"], inputIdsList: [InputIds(inputIds: [1, 2, 3]), InputIds(inputIds: [])],
            hiddenStates: tensor)
        #expect(try ForwardRequest(serializedBytes: forward.serializedBytes()) == forward)
        let status = StatusRequest(uuid: ["x"], ppIdx: 3, costTime: 0.25)
        #expect(try StatusRequest(serializedBytes: status.serializedBytes()) == status)
        let config = SetConfigRequest(forwardURL: "[::1]:25002", masterURL: "unix:///tmp/m.sock", ppRank: 1)
        #expect(try SetConfigRequest(serializedBytes: config.serializedBytes()) == config)
        let image = ImageForwardRequest(
            uuid: ["i"], hiddenStates: tensor, textEmbeddings: tensor, seqLen: 4, height: 8, width: 9)
        #expect(try ImageForwardRequest(serializedBytes: image.serializedBytes()) == image)
        #expect(
            try StatusResponse(serializedBytes: StatusResponse(msg: "Successful", status: 200).serializedBytes()).msg
                == "Successful")
        #expect(
            try ForwardResponse(serializedBytes: ForwardResponse(msg: "m", status: 500).serializedBytes()).status == 500
        )
        #expect(
            try HealthResponse(serializedBytes: HealthResponse(msg: "Healthy", status: 200).serializedBytes()).msg
                == "Healthy")
        #expect(
            try SetConfigResponse(serializedBytes: SetConfigResponse(msg: "ok", status: 1).serializedBytes()).msg
                == "ok")
        #expect(try BFloat16Tensor(serializedBytes: tensor.serializedBytes()) == tensor)
        #expect(try InputIds(serializedBytes: InputIds(inputIds: [-1, 7]).serializedBytes()).inputIds == [-1, 7])
    }

    @Test func bytesMatchTheProtobufEncoding() {
        // msg = "ok" (field 1, length-delimited), status = 200 (field 2, varint c8 01).
        #expect(StatusResponse(msg: "ok", status: 200).serializedBytes() == [0x0a, 0x02, 0x6f, 0x6b, 0x10, 0xc8, 0x01])
        // Packed repeated int32 (proto3 default): field 1, length 3, values 1 2 300 (ac 02).
        #expect(InputIds(inputIds: [1, 2, 300]).serializedBytes() == [0x0a, 0x04, 0x01, 0x02, 0xac, 0x02])
    }

    @Test func defaultsAndEmptyMessagesEncodeToNothing() throws {
        #expect(Empty().serializedBytes().isEmpty)
        #expect(StatusResponse().serializedBytes().isEmpty)
        #expect(ForwardRequest().serializedBytes().isEmpty)
        #expect(try ForwardRequest(serializedBytes: [UInt8]()) == ForwardRequest())
        #expect(try Empty(serializedBytes: [UInt8]()) == Empty())
        #expect(try SetConfigRequest(serializedBytes: [UInt8]()).forwardURL == "")
    }

    @Test func unknownFieldsArePreservedThroughReencoding() throws {
        // Health's Empty request carrying field 5 (varint 42) and field 9 (bytes "hi"): a newer peer's message.
        let bytes: [UInt8] = [0x28, 0x2a, 0x4a, 0x02, 0x68, 0x69]
        let empty = try Empty(serializedBytes: bytes)
        #expect(empty.unknownFields.count == 2)
        #expect(empty.serializedBytes() == bytes)
        // Unknown field 15 inside a known message, next to known fields.
        let status: [UInt8] = [0x0a, 0x02, 0x6f, 0x6b, 0x78, 0x01, 0x10, 0xc8, 0x01]
        let decoded = try StatusResponse(serializedBytes: status)
        #expect(decoded.msg == "ok" && decoded.status == 200 && decoded.unknownFields.count == 1)
        let again = try StatusResponse(serializedBytes: decoded.serializedBytes())
        #expect(again == decoded)
    }

    /// Bytes that cannot be the message are refused with the error that names it, however they are wrong.
    @Test func garbageIsAClearError() {
        // A length past the end, at the top level, inside a nested message, and for a field the decoder does not know.
        Self.expectRefused(ForwardRequest.self, [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01])
        Self.expectRefused(StatusRequest.self, [0x0a, 0x05, 0x61])
        Self.expectRefused(ForwardRequest.self, [0x1a, 0x02, 0x0a, 0x05])
        Self.expectRefused(Empty.self, [0x4a, 0x05, 0x68])
        // Cut off: a varint value, a tag after a whole field, a fixed32, packed ids inside a nested message.
        Self.expectRefused(StatusResponse.self, [0x10, 0xc8])
        Self.expectRefused(StatusResponse.self, [0x0a, 0x02, 0x6f, 0x6b, 0x80])
        Self.expectRefused(StatusRequest.self, [0x1d, 0x01, 0x02])
        Self.expectRefused(ForwardRequest.self, [0x12, 0x03, 0x0a, 0x01, 0x80])
        Self.expectRefused(Empty.self, [0x28])
        // A varint longer than ten bytes.
        Self.expectRefused(StatusResponse.self, [0x10] + [UInt8](repeating: 0xff, count: 10) + [0x01])
        // A wire type that does not fit the known field: int32 status length-delimited, string msg as a varint,
        // float cost_time as a varint and as fixed64, message hidden_states as a varint, packed int32 as fixed32.
        Self.expectRefused(StatusResponse.self, [0x12, 0x01, 0x00])
        Self.expectRefused(StatusResponse.self, [0x08, 0x01])
        Self.expectRefused(StatusRequest.self, [0x18, 0x01])
        Self.expectRefused(StatusRequest.self, [0x19, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08])
        Self.expectRefused(ForwardRequest.self, [0x18, 0x01])
        Self.expectRefused(SetConfigRequest.self, [0x08, 0x00])
        Self.expectRefused(InputIds.self, [0x0d, 0x01, 0x02, 0x03, 0x04])
        // Not protobuf: field number 0, a group (start), wire types 6 and 7.
        Self.expectRefused(StatusResponse.self, [0x00, 0x01])
        Self.expectRefused(StatusResponse.self, [0x0b])
        Self.expectRefused(StatusResponse.self, [0x0e, 0x00])
        Self.expectRefused(HealthResponse.self, [0x0f, 0x00])
    }

    /// Protobuf is permissive (unknown fields, repeated scalars packed or not, strings not checked for UTF-8, a field
    /// repeated), so bytes that are not a message this side wrote may still decode. Random bytes, and every cut and
    /// random one-byte edits of a valid message, each decoded as several messages: either refused with the decoding
    /// error, or decoded to a value whose encoding decodes again to the same value and the same bytes.
    @Test func arbitraryBytesAreRefusedOrDecodeToAMessageThatRoundTrips() throws {
        let valid: [UInt8] = [
            0x0a, 0x01, 0x61, 0x0a, 0x01, 0x62, 0x12, 0x05, 0x0a, 0x03, 0x01, 0xac, 0x02, 0x1a, 0x0a, 0x0a, 0x04, 0x01,
            0x02, 0x03, 0x04, 0x12, 0x02, 0x01, 0x02,
        ]
        let message = ForwardRequest(
            uuidList: ["a", "b"], inputIdsList: [InputIds(inputIds: [1, 300])],
            hiddenStates: BFloat16Tensor(data: [1, 2, 3, 4], shape: [1, 2]))
        #expect(message.serializedBytes() == valid)
        #expect(try ForwardRequest(serializedBytes: valid) == message)
        var inputs = (0...valid.count).map { Array(valid.prefix($0)) }
        var generator = SeededBytes(seed: 0x7E57)
        for _ in 0..<500 {
            var edited = valid
            let position = Int(generator.next() % UInt64(valid.count))
            let byte = generator.byte()
            edited[position] = byte
            inputs.append(edited)
        }
        for _ in 0..<1500 {
            let count = Int(generator.next() % 17)
            var bytes: [UInt8] = []
            for _ in 0..<count { bytes.append(generator.byte()) }
            inputs.append(bytes)
        }
        var outcomes: [String: (decoded: Int, refused: Int)] = [:]
        func tally<Message: WireMessage & Equatable>(_ type: Message.Type, _ bytes: [UInt8]) {
            let decoded = Self.refusedOrRoundTrips(Message.self, bytes)
            outcomes[Message.protoName, default: (0, 0)].decoded += decoded ? 1 : 0
            outcomes[Message.protoName, default: (0, 0)].refused += decoded ? 0 : 1
        }
        for bytes in inputs {
            tally(ForwardRequest.self, bytes)
            tally(ImageForwardRequest.self, bytes)
            tally(StatusRequest.self, bytes)
            tally(SetConfigRequest.self, bytes)
            tally(StatusResponse.self, bytes)
            tally(Empty.self, bytes)
        }
        // Both outcomes, often, for every message: the inputs reach the decoder's paths, not only its first check.
        #expect(outcomes.count == 6)
        for (name, outcome) in outcomes.sorted(by: { $0.key < $1.key }) {
            #expect(outcome.decoded >= 50 && outcome.refused >= 50, "\(name): \(outcome) of \(inputs.count) inputs")
        }
    }

    /// Decoding `bytes` as `Message` must be refused with the decoding error, which names the message.
    static func expectRefused<Message: WireMessage>(
        _ type: Message.Type, _ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let result = Result { () throws(MessageDecodingError) in try Message(serializedBytes: bytes) }
        switch result {
        case .success(let decoded):
            Issue.record("\(bytes) decoded as \(decoded) instead of being refused", sourceLocation: sourceLocation)
        case .failure(let error):
            #expect(error.messageName == Message.protoName, sourceLocation: sourceLocation)
            #expect(error.byteCount == bytes.count, sourceLocation: sourceLocation)
            #expect(error.description.contains("schemas.\(Message.protoName)"), sourceLocation: sourceLocation)
        }
    }

    /// Decodes `bytes` as `Message`: false when refused (with the error naming the message); true when it decodes,
    /// after checking that the value's encoding decodes again to an equal value that re-encodes to the same bytes.
    /// (A float field decoded to NaN would not equal itself; none of the fixed inputs here decodes to one.)
    static func refusedOrRoundTrips<Message: WireMessage & Equatable>(
        _ type: Message.Type, _ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation
    ) -> Bool {
        let result = Result { () throws(MessageDecodingError) in try Message(serializedBytes: bytes) }
        switch result {
        case .failure(let error):
            #expect(error.messageName == Message.protoName, sourceLocation: sourceLocation)
            #expect(error.byteCount == bytes.count, sourceLocation: sourceLocation)
            return false
        case .success(let decoded):
            let encoded = decoded.serializedBytes()
            let again = Result { () throws(MessageDecodingError) in try Message(serializedBytes: encoded) }
            switch again {
            case .success(let value):
                #expect(
                    value == decoded, "\(bytes) decoded as \(decoded), then as \(value)",
                    sourceLocation: sourceLocation)
                #expect(
                    value.serializedBytes() == encoded, "\(bytes) re-encodes differently",
                    sourceLocation: sourceLocation)
            case .failure:
                Issue.record(
                    "\(bytes) decoded as \(decoded), whose encoding \(encoded) is refused",
                    sourceLocation: sourceLocation)
            }
            return true
        }
    }
}

/// A small deterministic generator (SplitMix64), so the fuzz inputs are the same on every run.
private struct SeededBytes {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The top byte of the next value.
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next() >> 56) }
}
