import CTLLMKernels
import Foundation
import Testing

/// Every dot-product path (portable, AVX2, AVX-512 where the machine has them) agrees with
/// the reference (bit-exact dequantisation, double accumulation) within float rounding.
@Suite(.serialized) struct DotProductTests {
    static let types: [(name: String, id: Int32)] = [
        ("F32", 0), ("F16", 1), ("BF16", 30), ("Q4_0", 2), ("Q4_1", 3), ("Q5_0", 6), ("Q5_1", 7), ("Q8_0", 8),
        ("Q2_K", 10), ("Q3_K", 11), ("Q4_K", 12), ("Q5_K", 13), ("Q6_K", 14), ("IQ4_NL", 20), ("IQ4_XS", 23),
    ]

    /// Random weight rows of `type`: random bytes with finite, modest scales.
    static func randomRows(type: Int32, rows: Int, columns: Int) -> [UInt8] {
        let traits = tllm_type_traits_of(type)
        let blocksPerRow = columns / traits.block_size
        var bytes = (0..<(rows * blocksPerRow * traits.type_size)).map { _ in UInt8.random(in: 0...255) }
        func half(_ value: Float) -> (UInt8, UInt8) {
            let bits = Float16(value).bitPattern
            return (UInt8(bits & 0xff), UInt8(bits >> 8))
        }
        for block in 0..<(rows * blocksPerRow) {
            let base = block * traits.type_size
            switch type {
            case 0:
                let value = Float.random(in: -2...2).bitPattern
                for k in 0..<4 { bytes[base + k] = UInt8((value >> (8 * UInt32(k))) & 0xff) }
            case 1:
                (bytes[base], bytes[base + 1]) = half(Float.random(in: -2...2))
            case 30:
                let value = Float.random(in: -2...2).bitPattern >> 16
                (bytes[base], bytes[base + 1]) = (UInt8(value & 0xff), UInt8(value >> 8))
            case 2, 6, 8, 20, 23:
                (bytes[base], bytes[base + 1]) = half(Float.random(in: -0.1...0.1))
            case 3, 7, 12, 13:
                (bytes[base], bytes[base + 1]) = half(Float.random(in: -0.1...0.1))
                (bytes[base + 2], bytes[base + 3]) = half(Float.random(in: -0.1...0.1))
            case 14:
                (bytes[base + 208], bytes[base + 209]) = half(Float.random(in: -0.01...0.01))
            case 10:
                (bytes[base + 80], bytes[base + 81]) = half(Float.random(in: -0.1...0.1))
                (bytes[base + 82], bytes[base + 83]) = half(Float.random(in: -0.1...0.1))
            case 11:
                (bytes[base + 108], bytes[base + 109]) = half(Float.random(in: -0.1...0.1))
            default:
                break
            }
        }
        return bytes
    }

    static let paths = KernelPaths.available(top: TLLM_CPU_AVX512F)

    @Test func everyPathMatchesTheReference() {
        let rows = 8
        let columns = 1536
        let x = (0..<columns).map { _ in Float.random(in: -1...1) }
        for (name, type) in Self.types {
            let traits = tllm_type_traits_of(type)
            let rowBytes = columns / traits.block_size * traits.type_size
            let weights = Self.randomRows(type: type, rows: rows, columns: columns)
            for mask in Self.paths {
                tllm_set_cpu_features(mask)
                defer { tllm_set_cpu_features(~0) }
                weights.withUnsafeBytes { w in
                    for row in 0..<rows {
                        let pointer = w.baseAddress! + row * rowBytes
                        let reference = tllm_vec_dot_ref(type, pointer, x, columns)
                        let fast = tllm_vec_dot(type, pointer, x, columns)
                        // Bound: float accumulation over `columns` products of the dequantised magnitudes.
                        var magnitude = [Float](repeating: 0, count: columns)
                        tllm_dequantize_ref(type, pointer, &magnitude, columns)
                        let scale = zip(magnitude, x).reduce(Float(0)) { $0 + abs($1.0 * $1.1) }
                        let tolerance = max(scale * 2e-6, 1e-6)
                        #expect(
                            abs(fast - reference) <= tolerance,
                            "\(name) path \(mask) row \(row): \(fast) vs \(reference)")
                    }
                }
            }
        }
    }

    /// Products of a weight matrix with batches of activation rows (one dequantisation per
    /// weight block for all rows on AVX-512) agree with the reference on every path and batch
    /// size, and do not depend on how many threads share the work.
    @Test func matmulRowsMatchesTheReferenceForEveryBatchSize() {
        let rows = 301
        let columns = 768  // a whole number of 256-weight K-quant blocks
        let batches = [1, 2, 3, 8, 11]
        let x = (0..<(11 * columns)).map { _ in Float.random(in: -1...1) }
        let pools = [1, 3].map { tllm_pool_create(Int32($0)) }
        defer { pools.forEach { tllm_pool_destroy($0) } }
        for (name, type) in Self.types {
            let traits = tllm_type_traits_of(type)
            let rowBytes = columns / traits.block_size * traits.type_size
            let weights = Self.randomRows(type: type, rows: rows, columns: columns)
            // Reference and tolerance per (activation row, weight row), as in everyPathMatchesTheReference.
            let (reference, tolerance) = weights.withUnsafeBytes { w in
                x.withUnsafeBufferPointer { xs in
                    var reference: [Float] = []
                    var tolerance: [Float] = []
                    var magnitude = [Float](repeating: 0, count: columns)
                    for batch in 0..<11 {
                        for row in 0..<rows {
                            let pointer = w.baseAddress! + row * rowBytes
                            let xb = xs.baseAddress! + batch * columns
                            reference.append(tllm_vec_dot_ref(type, pointer, xb, columns))
                            tllm_dequantize_ref(type, pointer, &magnitude, columns)
                            let scale = (0..<columns).reduce(Float(0)) { $0 + abs(magnitude[$1] * xb[$1]) }
                            tolerance.append(max(scale * 2e-6, 1e-6))
                        }
                    }
                    return (reference, tolerance)
                }
            }
            for mask in Self.paths {
                tllm_set_cpu_features(mask)
                defer { tllm_set_cpu_features(~0) }
                for batch in batches {
                    var results: [[Float]] = []
                    for pool in pools {
                        var y = [Float](repeating: .nan, count: batch * rows)
                        let status = weights.withUnsafeBytes { w in
                            tllm_matmul_rows(
                                pool, type, w.baseAddress, rowBytes, rows, columns, x, columns, batch, &y, rows)
                        }
                        #expect(status == 0)
                        results.append(y)
                    }
                    #expect(
                        results[0] == results[1], "\(name) path \(mask) batch \(batch): thread count changed results")
                    let worst = (0..<(batch * rows)).map { abs(results[0][$0] - reference[$0]) / tolerance[$0] }.max()!
                    #expect(worst <= 1, "\(name) path \(mask) batch \(batch): error \(worst) × tolerance")
                }
            }
        }
    }

    /// `tllm_dequantize` (SIMD for the K-quants, used by prefill tiles, sgemm tiles and the
    /// float dot of block-dequantised types) gives the reference's bits on every path.
    @Test func dequantisationIsBitIdenticalOnEveryPath() {
        let columns = 1024
        for (name, type) in Self.types {
            let weights = Self.randomRows(type: type, rows: 3, columns: columns)
            var reference = [Float](repeating: 0, count: 3 * columns)
            #expect(tllm_dequantize_ref(type, weights, &reference, 3 * columns) == 0)
            for mask in Self.paths {
                tllm_set_cpu_features(mask)
                defer { tllm_set_cpu_features(~0) }
                var fast = [Float](repeating: .nan, count: 3 * columns)
                #expect(tllm_dequantize(type, weights, &fast, 3 * columns) == 0)
                let differing = zip(fast, reference).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differing == 0, "\(name) path \(mask): \(differing) values differ from the reference")
            }
        }
    }

    @Test func unsupportedShapesAreRefused() {
        var y = [Float](repeating: 0, count: 4)
        let w = [UInt8](repeating: 0, count: 1024)
        #expect(tllm_matvec(nil, 2, w, 18, 1, 33, [Float](repeating: 0, count: 33), &y) == -1)
        // IQ2_XXS (id 16) is a type we do not read.
        #expect(tllm_matvec(nil, 16, w, 66, 1, 256, [Float](repeating: 0, count: 256), &y) == -1)
    }
}

/// The softmax exponential: every path close to expf.
@Suite(.serialized) struct SoftmaxExponentialTests {
    @Test func everyPathIsCloseToExpf() {
        let input = (0..<1001).map { _ in Float.random(in: -100...0) } + [0, -87, -88, -1e-8]
        for mask in KernelPaths.available() {
            tllm_set_cpu_features(mask)
            defer { tllm_set_cpu_features(~0) }
            var values = input
            let sum = tllm_exp_shift_sum(&values, values.count, 0.5)
            var expected: Double = 0
            for (got, x) in zip(values, input) {
                let reference = exp(Double(x - 0.5))  // the kernel subtracts in float
                expected += reference
                #expect(abs(Double(got) - reference) <= max(reference * 4e-7, 1e-37), "path \(mask): e^\(x - 0.5)")
            }
            #expect(abs(Double(sum) - expected) <= expected * 1e-5)
        }
    }

    /// silu(g)·u on every path against double precision, across the range where e^-g overflows.
    @Test func siluTimesUpIsCloseOnEveryPath() {
        let gate = (0..<1001).map { _ in Float.random(in: -30...30) } + [0, -87, -88, -89, -120, 88, 89, 1e-8, -1e-8]
        let up = gate.map { _ in Float.random(in: -4...4) }
        for mask in KernelPaths.available() {
            tllm_set_cpu_features(mask)
            defer { tllm_set_cpu_features(~0) }
            var out = [Float](repeating: .nan, count: gate.count)
            tllm_silu_mul(gate, up, &out, gate.count)
            for i in gate.indices {
                let g = Double(gate[i])
                let reference = g / (1 + exp(-g)) * Double(up[i])
                #expect(
                    abs(Double(out[i]) - reference) <= abs(reference) * 1e-6 + 1e-30,
                    "path \(mask): silu(\(gate[i])) × \(up[i]) = \(out[i]), expected \(reference)")
            }
        }
    }
}
