import CTLLMKernels
import Testing

/// Causal GQA attention over float32 and float16 caches against the double-precision reference.
@Suite struct AttentionTests {
    @Test(arguments: [false, true])
    func matchesTheReference(float16Cache: Bool) {
        let heads = 9
        let kvHeads = 3
        let dimension = 64
        let start = 37
        let rows = 5
        let kvWidth = kvHeads * dimension
        let q = (0..<(rows * heads * dimension)).map { _ in Float.random(in: -1...1) }
        var k = (0..<((start + rows) * kvWidth)).map { _ in Float.random(in: -1...1) }
        var v = (0..<((start + rows) * kvWidth)).map { _ in Float.random(in: -1...1) }
        if float16Cache {
            // The reference sees the values the float16 cache holds.
            k = k.map { Float(Float16($0)) }
            v = v.map { Float(Float16($0)) }
        }
        var expected = [Float](repeating: 0, count: q.count)
        tllm_attention_ref(q, k, v, &expected, rows, start, heads, kvHeads, dimension, kvWidth, 0.125)
        var output = [Float](repeating: .nan, count: q.count)
        let pool = tllm_pool_create(2)
        defer { tllm_pool_destroy(pool) }
        if float16Cache {
            var k16 = [UInt16](repeating: 0, count: k.count)
            var v16 = [UInt16](repeating: 0, count: v.count)
            tllm_f32_to_f16(k, &k16, k.count)
            tllm_f32_to_f16(v, &v16, v.count)
            tllm_attention(
                pool, q, k16, v16, Int32(TLLM_TYPE_F16.rawValue), &output, rows, start, heads, kvHeads, dimension,
                kvWidth,
                0.125)
        } else {
            tllm_attention(
                pool, q, k, v, Int32(TLLM_TYPE_F32.rawValue), &output, rows, start, heads, kvHeads, dimension, kvWidth,
                0.125)
        }
        let worst = zip(output, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst < 1e-5, "largest difference \(worst)")
    }
}
