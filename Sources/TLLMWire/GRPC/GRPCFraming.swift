import NIOCore

/// The limits of the original tllm channels: 128 MiB messages, 32 MiB metadata.
public enum GRPCLimits {
    /// Largest message accepted or sent, as the original's channels configure it.
    public static let maximumMessageBytes = 128 << 20
    /// Largest message of the control methods (`Status`, `Health`, `SetConfig`): a few uuids or
    /// addresses. 1 MiB leaves room for steps of thousands of requests.
    public static let controlMessageBytes = 1 << 20

    /// The largest encoded `ForwardRequest` of a step of at most `rows` rows of `hiddenSize`
    /// values and `requests` requests, capped at `maximumMessageBytes`: the float16 tensor (an LZ4
    /// frame of incompressible data grows by under 1%), every input id as a 10-byte varint (the
    /// worst case, a negative id), each uuid up to 256 bytes, 64 KiB of framing to spare.
    public static func forwardMessageBytes(rows: Int, requests: Int, hiddenSize: Int) -> Int {
        let tensor = Double(max(rows, 0)) * Double(max(hiddenSize, 0)) * 2 * 1.01
        let total = tensor + Double(max(rows, 0)) * 11 + Double(max(requests, 0)) * 264 + 65536
        return total >= Double(maximumMessageBytes) ? maximumMessageBytes : Int(total)
    }
}

/// Reassembles the one length-prefixed message of a unary call from DATA chunks.
///
/// A gRPC message is `compressed-flag (1 byte) | length (4 bytes, big-endian) | bytes`.
/// We support identity encoding only, as the protocol does.
package struct GRPCMessageAssembler {
    package enum Failure: Error, Equatable {
        case tooLarge(Int, limit: Int)
        case compressedWithoutEncoding
        case truncated(expected: Int, received: Int)
        case moreThanOneMessage
        case missing
    }

    private var header: [UInt8] = []
    private var declaredLength: Int?
    private var body: ByteBuffer?
    private(set) var failure: Failure?
    private var messageCount = 0
    let maximumBytes: Int
    let compressionAllowed: Bool

    package init(maximumBytes: Int = GRPCLimits.maximumMessageBytes, compressionAllowed: Bool = false) {
        self.maximumBytes = maximumBytes
        self.compressionAllowed = compressionAllowed
    }

    /// Appends bytes; stops accepting (and remembers why) at the first problem.
    package mutating func append(_ bytes: UnsafeRawBufferPointer) {
        var bytes = bytes[...]
        while failure == nil && !bytes.isEmpty {
            if let declared = declaredLength {
                let missing = declared - body!.readableBytes
                let take = min(missing, bytes.count)
                body!.writeBytes(UnsafeRawBufferPointer(rebasing: bytes.prefix(take)))
                bytes = bytes.dropFirst(take)
                if body!.readableBytes == declared {
                    declaredLength = nil
                    messageCount += 1
                    header.removeAll(keepingCapacity: true)
                }
                continue
            }
            if messageCount >= 1 {
                failure = .moreThanOneMessage
                return
            }
            let take = min(5 - header.count, bytes.count)
            header.append(contentsOf: bytes.prefix(take))
            bytes = bytes.dropFirst(take)
            if header.count == 5 {
                if header[0] != 0 && !compressionAllowed {
                    failure = .compressedWithoutEncoding
                    return
                }
                let length = Int(header[1]) << 24 | Int(header[2]) << 16 | Int(header[3]) << 8 | Int(header[4])
                if length > maximumBytes {
                    failure = .tooLarge(length, limit: maximumBytes)
                    return
                }
                declaredLength = length
                // The prefix is the peer's claim: reserve at most 64 KiB on its word and grow as
                // bytes actually arrive (a lying prefix must not cost its declared size).
                body = ByteBufferAllocator().buffer(capacity: min(length, 64 << 10))
                if length == 0 {
                    declaredLength = nil
                    messageCount += 1
                    header.removeAll(keepingCapacity: true)
                }
            }
        }
    }

    /// Bytes reserved for the message so far (what a lying length prefix can cost).
    var reservedBytes: Int { body?.capacity ?? 0 }

    /// The message once the peer ended the stream: exactly one, complete.
    package func finish() -> Result<ByteBuffer, Failure> {
        if let failure { return .failure(failure) }
        if let declared = declaredLength {
            return .failure(.truncated(expected: declared, received: body?.readableBytes ?? 0))
        }
        if !header.isEmpty { return .failure(.truncated(expected: 5, received: header.count)) }
        guard messageCount == 1, let body else { return .failure(.missing) }
        return .success(body)
    }
}

extension GRPCMessageAssembler.Failure {
    /// The status a receiver answers for this failure.
    package var rpcError: RPCError {
        switch self {
        case .tooLarge(let length, let limit):
            return RPCError(.resourceExhausted, "message of \(length) bytes exceeds the limit of \(limit) bytes")
        case .compressedWithoutEncoding:
            return RPCError(.internal, "compressed flag set on a message but no grpc-encoding was negotiated")
        case .truncated(let expected, let received):
            return RPCError(
                .internal, "truncated message: length prefix says \(expected) bytes, stream ended after \(received)")
        case .moreThanOneMessage:
            return RPCError(.internal, "more than one message on a unary call")
        case .missing:
            return RPCError(.internal, "no message on a unary call")
        }
    }
}

/// The 5-byte prefix of an uncompressed message of `length` bytes.
func grpcMessagePrefix(length: Int) -> [UInt8] {
    [
        0, UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
        UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length),
    ]
}

/// `grpc-timeout` values: at most 8 digits and a unit (H, M, S, m, u, n).
enum GRPCTimeout {
    static func parse(_ value: String) -> TimeAmount? {
        guard let unit = value.last, value.count >= 2, value.count <= 9,
            let amount = Int64(value.dropLast()), amount >= 0
        else { return nil }
        switch unit {
        case "H": return .hours(amount)
        case "M": return .minutes(amount)
        case "S": return .seconds(amount)
        case "m": return .milliseconds(amount)
        case "u": return .microseconds(amount)
        case "n": return .nanoseconds(amount)
        default: return nil
        }
    }

    /// Encodes a timeout with the finest unit that fits in 8 digits.
    static func format(_ timeout: TimeAmount) -> String {
        let nanoseconds = max(timeout.nanoseconds, 0)
        let units: [(Int64, Character)] = [
            (1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"), (60_000_000_000, "M"),
            (3_600_000_000_000, "H"),
        ]
        for (scale, unit) in units {
            let amount = (nanoseconds + scale - 1) / scale
            if amount < 100_000_000 { return "\(amount)\(unit)" }
        }
        return "99999999H"
    }
}

/// `grpc-message` is percent-encoded UTF-8 (gRPC HTTP/2 spec).
enum GRPCStatusMessage {
    static func encode(_ message: String) -> String {
        var out = ""
        for byte in message.utf8 {
            if byte >= 0x20 && byte <= 0x7e && byte != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out +=
                    "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 0xf, radix: 16, uppercase: true)
            }
        }
        return out
    }

    static func decode(_ value: String) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(value.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%"), utf8.count >= 2,
                let high = hexValue(utf8[utf8.startIndex]), let low = hexValue(utf8[utf8.startIndex + 1])
            {
                bytes.append(high << 4 | low)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
