import CTLLMKernels

/// A tensor element type as GGUF stores it (ggml's type id).
public struct GGMLType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    /// Creates a type from its id.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let f32 = GGMLType(rawValue: UInt32(TLLM_TYPE_F32.rawValue))
    public static let f16 = GGMLType(rawValue: UInt32(TLLM_TYPE_F16.rawValue))
    public static let bf16 = GGMLType(rawValue: UInt32(TLLM_TYPE_BF16.rawValue))
    public static let q4_0 = GGMLType(rawValue: UInt32(TLLM_TYPE_Q4_0.rawValue))
    public static let q4_1 = GGMLType(rawValue: UInt32(TLLM_TYPE_Q4_1.rawValue))
    public static let q5_0 = GGMLType(rawValue: UInt32(TLLM_TYPE_Q5_0.rawValue))
    public static let q5_1 = GGMLType(rawValue: UInt32(TLLM_TYPE_Q5_1.rawValue))
    public static let q8_0 = GGMLType(rawValue: UInt32(TLLM_TYPE_Q8_0.rawValue))
    public static let q2_K = GGMLType(rawValue: UInt32(TLLM_TYPE_Q2_K.rawValue))
    public static let q3_K = GGMLType(rawValue: UInt32(TLLM_TYPE_Q3_K.rawValue))
    public static let q4_K = GGMLType(rawValue: UInt32(TLLM_TYPE_Q4_K.rawValue))
    public static let q5_K = GGMLType(rawValue: UInt32(TLLM_TYPE_Q5_K.rawValue))
    public static let q6_K = GGMLType(rawValue: UInt32(TLLM_TYPE_Q6_K.rawValue))
    public static let iq4_NL = GGMLType(rawValue: UInt32(TLLM_TYPE_IQ4_NL.rawValue))
    public static let iq4_XS = GGMLType(rawValue: UInt32(TLLM_TYPE_IQ4_XS.rawValue))

    /// Every type this project reads.
    public static let supported: [GGMLType] = [
        .f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_NL, .iq4_XS,
    ]

    private var traits: tllm_type_traits { tllm_type_traits_of(Int32(bitPattern: rawValue)) }

    /// Whether we can read (dequantise) this type.
    public var isSupported: Bool { traits.name != nil }
    /// Weights per block (1 for float types).
    public var blockSize: Int { traits.block_size }
    /// Bytes per block.
    public var blockBytes: Int { traits.type_size }

    /// ggml's name of the type, for the types ggml defines.
    public var description: String {
        if let name = traits.name { return String(cString: name) }
        let names = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K",
            "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
            "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0",
        ]
        return rawValue < names.count ? names[Int(rawValue)] : "type \(rawValue)"
    }

    /// Bytes of `elements` weights laid out in rows of `rowLength`, or nil when a row is not
    /// a whole number of blocks.
    public func byteCount(elements: Int, rowLength: Int) -> Int? {
        guard isSupported, rowLength % blockSize == 0 else { return nil }
        let (blocks, overflow) = (elements / blockSize).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : blocks
    }
}
