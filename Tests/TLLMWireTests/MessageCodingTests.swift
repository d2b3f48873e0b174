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

    @Test func garbageIsAClearError() {
        let garbage: [UInt8] = [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]
        #expect(throws: MessageDecodingError.self) { try ForwardRequest(serializedBytes: garbage) }
        do {
            _ = try StatusRequest(serializedBytes: [0x0a, 0x05, 0x61])
        } catch {
            #expect(error.description.contains("schemas.StatusRequest"))
        }
    }
}
