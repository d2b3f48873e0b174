import CTLLMKernels
import Testing

/// The AMX split-bfloat16 products (prefill with int16 activations) against the exact product of
/// the same dequantised weights: packed groups and row-layout weights, batches and output counts
/// that do and do not fill the 32 × 32 tile pairs, inputs spanning several 32-step chunks.
@Suite(.serialized) struct SplitBF16Tests {
    static let amx = tllm_cpu_features() & UInt32(TLLM_CPU_AMX_BF16) != 0

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let type: Int32
        let rows: Int
        let columns: Int
        let packed: Bool
        var testDescription: String { "\(name) \(rows)×\(columns)\(packed ? " packed" : "")" }
    }

    static let cases: [Case] = [
        // 160 outputs: a 128-row block and a 32-row one; 1056 inputs: a 32-step chunk and one step.
        Case(name: "Q4_0", type: 2, rows: 160, columns: 1056, packed: true),
        Case(name: "Q4_1", type: 3, rows: 48, columns: 1056, packed: true),
        Case(name: "Q8_0", type: 8, rows: 48, columns: 1056, packed: true),
        // Row layout: 40 outputs do not pack (and leave a partial tile).
        Case(name: "Q4_0", type: 2, rows: 40, columns: 320, packed: false),
        Case(name: "F16", type: 1, rows: 40, columns: 1056, packed: false),
        Case(name: "BF16", type: 30, rows: 24, columns: 320, packed: false),
        Case(name: "Q6_K", type: 14, rows: 40, columns: 1280, packed: false),
    ]

    /// Each operand keeps about 16 bits (hi + lo), the lo·lo term is left out and float32 sums
    /// the products: ~2^-16 of Σ|w·x| at worst; the kernel measures ~2e-7 (prefill.c).
    static let tolerance = 1e-5

    @Test(.enabled(if: amx, "this CPU has no AMX-BF16"), arguments: cases)
    func productsMatchTheExactProduct(_ shape: Case) {
        let traits = tllm_type_traits_of(shape.type)
        let rowBytes = shape.columns / traits.block_size * traits.type_size
        let weights = DotProductTests.randomRows(type: shape.type, rows: shape.rows, columns: shape.columns)
        var dense = [Float](repeating: 0, count: shape.rows * shape.columns)
        #expect(tllm_dequantize_rows(shape.type, weights, rowBytes, shape.columns, 0, shape.rows, &dense) == 0)
        var stored = weights
        if shape.packed {
            #expect(tllm_q8_pack(nil, shape.type, weights, rowBytes, shape.rows, shape.columns, &stored) == 0)
        }
        let pool = tllm_pool_create(2)
        defer { tllm_pool_destroy(pool) }
        for (batch, threads) in [(1, 1), (17, 2), (33, 1), (70, 2)] {
            let x = (0..<(batch * shape.columns)).map { _ in Float.random(in: -2...2) }
            // Output rows 3 floats wider than the product: those must stay untouched.
            let stride = shape.rows + 3
            var y = [Float](repeating: .nan, count: batch * stride)
            let status = tllm_matmul_split_bf16(
                threads == 1 ? nil : pool, shape.type, stored, rowBytes, shape.packed ? 1 : 0, shape.rows,
                shape.columns,
                x, shape.columns, batch, &y, stride)
            #expect(status == 0)
            var worst = 0.0
            for i in 0..<batch {
                for row in 0..<shape.rows {
                    var exact = 0.0
                    var magnitude = 0.0
                    for column in 0..<shape.columns {
                        let product =
                            Double(dense[row * shape.columns + column]) * Double(x[i * shape.columns + column])
                        exact += product
                        magnitude += abs(product)
                    }
                    let relative = abs(Double(y[i * stride + row]) - exact) / magnitude
                    worst = max(worst, relative.isNaN ? .infinity : relative)
                }
                let untouched = y[(i * stride + shape.rows)..<((i + 1) * stride)].allSatisfy { $0.isNaN }
                #expect(untouched, "row \(i) overwritten")
            }
            let bound = Self.tolerance
            #expect(worst <= bound, "\(shape.testDescription) batch \(batch): error \(worst) of Σ|w·x|")
        }
    }

    @Test func refusedWithoutAMXAndForF32() {
        let weights = [UInt8](repeating: 0, count: 16 * 64 * 4)
        var y = [Float](repeating: 0, count: 16)
        let x = [Float](repeating: 1, count: 64)
        #expect(tllm_split_bf16_supported(0, 64) == 0, "F32 weights keep sgemm")
        #expect(tllm_matmul_split_bf16(nil, 0, weights, 64 * 4, 0, 16, 64, x, 64, 1, &y, 16) == -1)
        #expect(tllm_split_bf16_supported(1, 48) == 0, "48 inputs are not whole 32-input steps")
        tllm_set_cpu_features(~UInt32(TLLM_CPU_AMX_BF16))
        defer { tllm_set_cpu_features(~0) }
        #expect(tllm_split_bf16_supported(1, 64) == 0)
        #expect(tllm_matmul_split_bf16(nil, 1, weights, 64 * 2, 0, 16, 64, x, 64, 1, &y, 16) == -1)
    }
}
