/// A metadata value of a GGUF file (the 13 value types of the format).
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8)
    case int8(Int8)
    case uint16(UInt16)
    case int16(Int16)
    case uint32(UInt32)
    case int32(Int32)
    case float32(Float)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])
    case uint64(UInt64)
    case int64(Int64)
    case float64(Double)

    /// The value as an integer, for any integer type that fits in `Int`.
    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// The value as a floating-point number, for float and integer types.
    public var double: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return int.map(Double.init)
        }
    }

    /// The string, for `.string`.
    public var string: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    /// The flag, for `.bool`.
    public var bool: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    /// The elements, for `.array`.
    public var array: [GGUFValue]? {
        if case .array(let v) = self { return v }
        return nil
    }

    /// The elements as strings, for an array of strings.
    public var strings: [String]? { elements(\.string) }

    /// The elements as integers, for an array of integers.
    public var ints: [Int]? { elements(\.int) }

    /// The elements as floats, for an array of numbers.
    public var floats: [Float]? { elements { $0.double.map(Float.init) } }

    /// Every element converted, or nil when this is not an array or an element does not convert.
    private func elements<T>(_ convert: (GGUFValue) -> T?) -> [T]? {
        guard let array else { return nil }
        var result: [T] = []
        result.reserveCapacity(array.count)
        for element in array {
            guard let value = convert(element) else { return nil }
            result.append(value)
        }
        return result
    }
}
