import CTLLMKernels
import Testing

/// Causal GQA attention over paged float32 and float16 caches against the double-precision
/// reference, which reads the same rows from one contiguous array, on every kernel path.
@Suite(.serialized) struct AttentionTests {
    /// (start, rows): a chunk within one tile, a prefill over several row blocks and tiles, decode
    /// steps deep in the cache (split into position ranges, the last one partly past the end),
    /// a chunk that crosses tiles on both sides.
    static let shapes: [(start: Int, rows: Int)] = [(37, 5), (0, 20), (100, 1), (70, 70), (700, 1), (130, 1)]

    @Test(arguments: [false, true], [0, 1, 2, 3, 4, 5])
    func matchesTheReference(float16Cache: Bool, shape: Int) {
        let (start, rows) = Self.shapes[shape]
        check(start: start, rows: rows, heads: 9, kvHeads: 3, float16Cache: float16Cache)
    }

    /// Head dimensions the vector path takes (whole vectors: 128, 256) and does not (72), at
    /// positions that leave partial groups of 16 in a tile.
    @Test(arguments: [72, 128, 256])
    func otherHeadDimensions(dimension: Int) {
        check(start: 45, rows: 19, heads: 4, kvHeads: 2, float16Cache: false, dimension: dimension)
    }

    /// One KV head on 2 threads splits a decode row into 4 ranges of whole tiles: at position 270
    /// (9 tiles, 3 per range) the last range starts past the row's end and contributes nothing.
    @Test(arguments: [false, true])
    func splitDecodeWithARangePastTheEnd(float16Cache: Bool) {
        check(start: 270, rows: 1, heads: 4, kvHeads: 1, float16Cache: float16Cache)
    }

    func check(start: Int, rows: Int, heads: Int, kvHeads: Int, float16Cache: Bool, dimension: Int = 64) {
        let kvWidth = kvHeads * dimension
        let positions = start + rows
        let q = (0..<(rows * heads * dimension)).map { _ in Float.random(in: -1...1) }
        var k = (0..<(positions * kvWidth)).map { _ in Float.random(in: -1...1) }
        var v = (0..<(positions * kvWidth)).map { _ in Float.random(in: -1...1) }
        if float16Cache {
            // The reference sees the values the float16 cache holds.
            k = k.map { Float(Float16($0)) }
            v = v.map { Float(Float16($0)) }
        }
        var expected = [Float](repeating: 0, count: q.count)
        tllm_attention_ref(q, k, v, &expected, rows, start, heads, kvHeads, dimension, kvWidth, 0.125)

        // Pages of 8 positions, K block then V block, scattered over a larger pool in random order.
        let pageTokens = 8
        let element = float16Cache ? 2 : 4
        let rowBytes = kvWidth * element
        let pageBytes = 2 * pageTokens * rowBytes
        let poolPages = (positions + pageTokens - 1) / pageTokens + 4
        let pages = Array((0..<poolPages).shuffled().prefix((positions + pageTokens - 1) / pageTokens)).map(Int32.init)
        let pool = UnsafeMutableRawPointer.allocate(byteCount: poolPages * pageBytes, alignment: 64)
        defer { pool.deallocate() }
        for t in 0..<positions {
            let slot = pool + Int(pages[t / pageTokens]) * pageBytes + (t % pageTokens) * rowBytes
            for (block, source) in [(0, k), (pageTokens * rowBytes, v)] {
                source.withUnsafeBufferPointer { rows in
                    let row = rows.baseAddress! + t * kvWidth
                    if float16Cache {
                        tllm_f32_to_f16(row, (slot + block).assumingMemoryBound(to: UInt16.self), kvWidth)
                    } else {
                        (slot + block).copyMemory(from: row, byteCount: rowBytes)
                    }
                }
            }
        }
        let threads = tllm_pool_create(2)
        defer { tllm_pool_destroy(threads) }
        for mask in KernelPaths.available() {
            tllm_set_cpu_features(mask)
            defer { tllm_set_cpu_features(~0) }
            var output = [Float](repeating: .nan, count: q.count)
            pages.withUnsafeBufferPointer { table in
                var view = tllm_kv_view(
                    keys: pool, values: pool + pageTokens * rowBytes, pages: table.baseAddress,
                    page_tokens: pageTokens, page_stride: pageBytes, row_stride: rowBytes,
                    type: Int32(float16Cache ? TLLM_TYPE_F16.rawValue : TLLM_TYPE_F32.rawValue))
                tllm_attention(threads, q, &view, &output, rows, start, heads, kvHeads, dimension, 0.125)
            }
            let worst = zip(output, expected).map { abs($0 - $1) }.max() ?? .infinity
            #expect(
                worst < 1e-5, "path \(mask), start \(start), rows \(rows), d \(dimension): largest difference \(worst)")
        }
    }
}
