import ArgumentParser
import Foundation
import TLLMWire

/// Reads a request given as proto3 JSON (snake_case names) strictly: unknown fields, wrong
/// types and out-of-range integers are errors naming the field, never silent zeros.
struct RequestJSON {
    private let object: [String: Any]
    private var used: Set<String> = []

    init(_ text: String) throws {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw ValidationError("the request must be a JSON object, got: \(text)")
        }
        self.object = object
    }

    private init(object: [String: Any]) { self.object = object }

    /// Fails when the JSON has fields the message does not.
    func requireNoOtherFields(_ message: String) throws {
        let unknown = Set(object.keys).subtracting(used)
        if !unknown.isEmpty { throw ValidationError("\(message) has no field(s) \(unknown.sorted())") }
    }

    mutating func string(_ key: String) throws -> String {
        used.insert(key)
        guard let value = object[key] else { return "" }
        guard let string = value as? String else { throw ValidationError("\(key) must be a string") }
        return string
    }

    mutating func strings(_ key: String) throws -> [String] {
        used.insert(key)
        guard let value = object[key] else { return [] }
        guard let strings = value as? [String] else { throw ValidationError("\(key) must be a list of strings") }
        return strings
    }

    mutating func int32(_ key: String) throws -> Int32 {
        used.insert(key)
        guard let value = object[key] else { return 0 }
        return try Self.int32(value, field: key)
    }

    mutating func int32s(_ key: String) throws -> [Int32] {
        used.insert(key)
        guard let value = object[key] else { return [] }
        guard let list = value as? [Any] else { throw ValidationError("\(key) must be a list of integers") }
        return try list.map { try Self.int32($0, field: key) }
    }

    mutating func float(_ key: String) throws -> Float {
        used.insert(key)
        guard let value = object[key] else { return 0 }
        if let number = value as? NSNumber, !Self.isBoolean(value) { return number.floatValue }
        if let text = value as? String, let number = Float(text) { return number }
        throw ValidationError("\(key) must be a number")
    }

    mutating func objects(_ key: String) throws -> [RequestJSON] {
        used.insert(key)
        guard let value = object[key] else { return [] }
        guard let list = value as? [[String: Any]] else { throw ValidationError("\(key) must be a list of objects") }
        return list.map { RequestJSON(object: $0) }
    }

    /// JSON true/false: NSNumber bridges to Bool for 0 and 1 too, so look at the class.
    private static func isBoolean(_ value: Any) -> Bool {
        String(describing: type(of: value)).contains("Boolean")
    }

    /// proto3 JSON writes int32 as a number or a decimal string.
    private static func int32(_ value: Any, field: String) throws -> Int32 {
        if let number = value as? NSNumber, !Self.isBoolean(value) {
            let double = number.doubleValue
            guard double == double.rounded(), let exact = Int32(exactly: double) else {
                throw ValidationError("\(field): \(number) is not an int32")
            }
            return exact
        }
        if let text = value as? String, let exact = Int32(text) { return exact }
        throw ValidationError("\(field): \(value) is not an int32")
    }
}

extension RequestJSON {
    /// Builds the request message of `method` from this JSON.
    mutating func statusRequest() throws -> StatusRequest {
        let request = StatusRequest(
            uuid: try strings("uuid"), ppIdx: try int32("pp_idx"), costTime: try float("cost_time"))
        try requireNoOtherFields("StatusRequest")
        return request
    }

    mutating func setConfigRequest() throws -> SetConfigRequest {
        let request = SetConfigRequest(
            forwardURL: try string("forward_url"), masterURL: try string("master_url"), ppRank: try int32("pp_rank"))
        try requireNoOtherFields("SetConfigRequest")
        return request
    }

    mutating func forwardRequest() throws -> ForwardRequest {
        var ids: [InputIds] = []
        for var entry in try objects("input_ids_list") {
            ids.append(InputIds(inputIds: try entry.int32s("input_ids")))
            try entry.requireNoOtherFields("InputIds")
        }
        let request = ForwardRequest(uuidList: try strings("uuid_list"), inputIdsList: ids)
        try requireNoOtherFields("ForwardRequest (hidden_states comes from --hidden-states-f32)")
        return request
    }

    mutating func imageForwardRequest() throws -> ImageForwardRequest {
        let request = ImageForwardRequest(
            uuid: try strings("uuid"), seqLen: try int32("seq_len"), height: try int32("height"),
            width: try int32("width"))
        try requireNoOtherFields("ImageForwardRequest (tensors are not settable here)")
        return request
    }
}
