import CTLLMKernels
import Testing

/// Every float16 conversion path equals the portable reference (and Swift's own Float16) bit for bit.
@Suite(.serialized) struct Float16ConversionTests {
    /// Inputs that exercise rounding, subnormals, overflow and specials.
    static func samples() -> [Float] {
        var values: [Float] = [
            0, -0, 1, -1, 65504, 65519.99, 65520, -65520, 1e-8, 5.96e-8, 2.98e-8, 2.9802322e-8,
            6.1035156e-5, 6.097555e-5, .infinity, -.infinity, .nan, .leastNonzeroMagnitude, .greatestFiniteMagnitude,
        ]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            values.append(Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &generator)))
            values.append(Float.random(in: -70000...70000, using: &generator))
            values.append(Float.random(in: -1e-4...1e-4, using: &generator))
        }
        return values
    }

    static let paths = KernelPaths.available(top: TLLM_CPU_AVX512F)

    @Test func floatToHalfMatchesReferenceAndSwift() {
        let input = Self.samples()
        var reference = [UInt16](repeating: 0, count: input.count)
        tllm_f32_to_f16_ref(input, &reference, input.count)
        for (value, bits) in zip(input, reference) {
            let swift = Float16(value)
            if value.isNaN {
                #expect(Float16(bitPattern: bits).isNaN)
            } else {
                #expect(swift.bitPattern == bits, "\(value): reference \(bits), Swift \(swift.bitPattern)")
            }
        }
        for mask in Self.paths {
            defer { tllm_set_cpu_features(~0) }
            tllm_set_cpu_features(mask)
            var output = [UInt16](repeating: 0, count: input.count)
            tllm_f32_to_f16(input, &output, input.count)
            for index in input.indices where !input[index].isNaN {
                #expect(output[index] == reference[index], "path \(mask), input \(input[index])")
            }
        }
    }

    @Test func halfToFloatIsExactForEveryPattern() {
        let all = (0...UInt16.max).map { $0 }
        var reference = [Float](repeating: 0, count: all.count)
        tllm_f16_to_f32_ref(all, &reference, all.count)
        for (bits, value) in zip(all, reference) {
            let swift = Float(Float16(bitPattern: bits))
            #expect(swift.bitPattern == value.bitPattern || (swift.isNaN && value.isNaN))
        }
        for mask in Self.paths {
            defer { tllm_set_cpu_features(~0) }
            tllm_set_cpu_features(mask)
            var output = [Float](repeating: 0, count: all.count)
            tllm_f16_to_f32(all, &output, all.count)
            #expect(zip(output, reference).allSatisfy { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) })
        }
    }

    @Test func firstNonFiniteFindsInfinityAndNaN() {
        var values = [UInt16](repeating: 0x3c00, count: 10_000)
        #expect(tllm_f16_first_nonfinite(values, values.count) == values.count)
        values[7777] = 0x7c00
        #expect(tllm_f16_first_nonfinite(values, values.count) == 7777)
        values[5] = 0xfe01
        #expect(tllm_f16_first_nonfinite(values, values.count) == 5)
    }
}
