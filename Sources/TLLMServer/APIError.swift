import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
public struct APIError: HTTPResponseError, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    /// Extra response headers (`Retry-After`).
    public var headers: HTTPFields = [:]

    public init(
        _ status: HTTPResponse.Status, _ message: String, type: String? = nil, param: String? = nil,
        code: String? = nil
    ) {
        self.status = status
        self.message = message
        self.type = type ?? Self.defaultType(status)
        self.param = param
        self.code = code
    }

    /// 400 `invalid_request_error` naming the offending parameter.
    static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(.badRequest, message, param: param, code: code)
    }

    public var description: String { "\(status.code) \(type): \(message)" }

    var json: JSONValue {
        .object([
            (
                "error",
                .object([
                    ("message", .string(message)), ("type", .string(type)), ("param", .optional(param)),
                    ("code", .optional(code)),
                ])
            )
        ])
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(
            status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(string: json.serialized)))
    }

    private static func defaultType(_ status: HTTPResponse.Status) -> String {
        switch status.code {
        case 401: "authentication_error"
        case 404: "not_found_error"
        case 429: "rate_limit_error"
        case 400..<500: "invalid_request_error"
        default: "server_error"
        }
    }
}

extension APIError {
    /// The OpenAI-shaped error for a JSON decoding failure: the field's path and what was expected.
    init(decoding error: DecodingError) {
        switch error {
        case .typeMismatch(let type, let context):
            let path = Self.path(context.codingPath)
            let expected =
                context.debugDescription.hasPrefix("expected ")
                ? String(context.debugDescription.dropFirst(9)) : Self.describe(type)
            self = .invalid("Invalid type for '\(path)': expected \(expected).", param: path, code: "invalid_type")
        case .valueNotFound(let type, let context):
            let path = Self.path(context.codingPath)
            self = .invalid(
                "Invalid value for '\(path)': expected \(Self.describe(type)), got null.", param: path,
                code: "invalid_type")
        case .keyNotFound(let key, let context):
            let path = Self.path(context.codingPath + [key])
            self = .invalid("Missing required parameter: '\(path)'.", param: path, code: "missing_required_parameter")
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            self = .invalid(
                "We could not parse the JSON body of your request: \(context.debugDescription) "
                    + "(send a JSON object with Content-Type: application/json).",
                code: "invalid_json")
        case .dataCorrupted(let context):
            let path = Self.path(context.codingPath)
            self = .invalid(
                "Invalid value for '\(path)': \(context.debugDescription)", param: path, code: "invalid_value")
        @unknown default:
            self = .invalid("Invalid request: \(error)")
        }
    }

    /// `messages[0].content` from a coding path.
    static func path(_ keys: [any CodingKey]) -> String {
        var text = ""
        for key in keys {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : "." + key.stringValue
            }
        }
        return text
    }

    private static func describe(_ type: Any.Type) -> String {
        if type is Int.Type || type is Int32.Type || type is Int64.Type || type is UInt64.Type { return "an integer" }
        if type is Double.Type || type is Float.Type { return "a number" }
        if type is String.Type { return "a string" }
        if type is Bool.Type { return "a boolean" }
        let name = String(describing: type)
        if name.hasPrefix("Array") { return "an array" }
        if name.hasPrefix("Dictionary") { return "an object" }
        return "a valid value"
    }
}
