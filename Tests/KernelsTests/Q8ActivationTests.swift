import CTLLMKernels
import Testing

/// The optional 8-bit-activation path: every SIMD path equals the integer reference exactly
/// up to float summation order, and stays close to the float path.
@Suite(.serialized) struct Q8ActivationTests {
    static let types: [(name: String, id: Int32)] = [
        ("Q4_0", 2), ("Q4_1", 3), ("Q5_0", 6), ("Q5_1", 7), ("Q8_0", 8), ("Q4_K", 12), ("Q5_K", 13), ("Q6_K", 14),
    ]
    /// The types with a packed layout.
    static let packableTypes = types.filter { tllm_q8_packable($0.id, 16, 32) != 0 }

    static let paths = KernelPaths.available(top: TLLM_CPU_AVX512VNNI)

    @Test func everyPathMatchesTheReferenceAndTracksTheFloatDot() {
        let columns = 1536
        let rows = 8
        let x = (0..<columns).map { _ in Float.random(in: -2...2) }
        var quantized = [tllm_block_q8_act](repeating: tllm_block_q8_act(), count: columns / 32)
        tllm_quantize_activations(x, &quantized, columns)
        for (name, type) in Self.types {
            let traits = tllm_type_traits_of(type)
            let rowBytes = columns / traits.block_size * traits.type_size
            let weights = DotProductTests.randomRows(type: type, rows: rows, columns: columns)
            weights.withUnsafeBytes { w in
                for row in 0..<rows {
                    let pointer = w.baseAddress! + row * rowBytes
                    let reference = tllm_vec_dot_q8_ref(type, pointer, quantized, columns)
                    let float = tllm_vec_dot_ref(type, pointer, x, columns)
                    var magnitude = [Float](repeating: 0, count: columns)
                    tllm_dequantize_ref(type, pointer, &magnitude, columns)
                    let scale = zip(magnitude, x).reduce(Float(0)) { $0 + abs($1.0 * $1.1) }
                    // Rounding x to 8 bits moves each product by at most half a step of its block.
                    #expect(
                        abs(reference - float) <= scale * 0.01 + 1e-4,
                        "\(name) row \(row): \(reference) vs float \(float)")
                    for mask in Self.paths {
                        tllm_set_cpu_features(mask)
                        defer { tllm_set_cpu_features(~0) }
                        let fast = tllm_vec_dot_q8(type, pointer, quantized, columns)
                        #expect(
                            abs(fast - reference) <= max(scale * 2e-6, 1e-5),
                            "\(name) path \(mask): \(fast) vs \(reference)")
                    }
                }
            }
        }
    }

    /// The matmul runs rows four at a time (one activation load, four accumulators; the 32-weight
    /// types) and the rest one by one: 11 rows × 2 activation rows cover both, on every path.
    @Test func fourRowKernelsMatchTheReference() {
        let columns = 768
        let rows = 11
        let batch = 2
        let x = (0..<(batch * columns)).map { _ in Float.random(in: -2...2) }
        for (name, type) in Self.types {
            let traits = tllm_type_traits_of(type)
            let rowBytes = columns / traits.block_size * traits.type_size
            let weights = DotProductTests.randomRows(type: type, rows: rows, columns: columns)
            var expected = [Float](repeating: 0, count: batch * rows)
            var scales = [Float](repeating: 0, count: batch * rows)
            weights.withUnsafeBytes { w in
                for b in 0..<batch {
                    var quantized = [tllm_block_q8_act](repeating: tllm_block_q8_act(), count: columns / 32)
                    Array(x[(b * columns)..<((b + 1) * columns)]).withUnsafeBufferPointer {
                        tllm_quantize_activations($0.baseAddress, &quantized, columns)
                    }
                    for row in 0..<rows {
                        let pointer = w.baseAddress! + row * rowBytes
                        expected[b * rows + row] = tllm_vec_dot_q8_ref(type, pointer, quantized, columns)
                        var magnitude = [Float](repeating: 0, count: columns)
                        tllm_dequantize_ref(type, pointer, &magnitude, columns)
                        scales[b * rows + row] = zip(magnitude, x[(b * columns)...]).reduce(Float(0)) {
                            $0 + abs($1.0 * $1.1)
                        }
                    }
                }
                for mask in Self.paths {
                    tllm_set_cpu_features(mask)
                    defer { tllm_set_cpu_features(~0) }
                    var y = [Float](repeating: .nan, count: batch * rows)
                    #expect(
                        tllm_matmul_rows_q8(
                            nil, type, w.baseAddress, rowBytes, rows, columns, x, columns, batch, 1, &y, rows)
                            == 0)
                    for index in 0..<(batch * rows) {
                        #expect(
                            abs(y[index] - expected[index]) <= max(scales[index] * 2e-6, 1e-5),
                            "\(name) path \(mask) row \(index % rows) of batch \(index / rows): \(y[index]) vs \(expected[index])"
                        )
                    }
                }
            }
        }
    }

    /// Packed 16-row groups: every path gives the row-layout reference for batches of 1 to 6
    /// activation rows (one and two passes of up to four), the packed rows dequantise to exactly
    /// the row-layout values, and shapes that do not pack are refused.
    @Test func packedGroupsMatchTheRowLayout() {
        let columns = 320
        let rows = 48
        for (name, type) in Self.packableTypes {
            let traits = tllm_type_traits_of(type)
            let rowBytes = columns / traits.block_size * traits.type_size
            let weights = DotProductTests.randomRows(type: type, rows: rows, columns: columns)
            var packed = [UInt8](repeating: 0, count: weights.count)
            #expect(tllm_q8_pack(nil, type, weights, rowBytes, rows, columns, &packed) == 0)
            #expect(packed != weights, "\(name): packing changed nothing")
            // Dequantised rows, including a range that starts and ends inside groups.
            var fromRows = [Float](repeating: 0, count: 21 * columns)
            var fromPacked = [Float](repeating: .nan, count: 21 * columns)
            tllm_dequantize_rows(type, weights, rowBytes, columns, 13, 21, &fromRows)
            #expect(tllm_dequantize_packed(type, packed, columns, 13, 21, &fromPacked) == 0)
            #expect(fromRows == fromPacked, "\(name): packed rows dequantise differently")
            var all = [Float](repeating: 0, count: rows * columns)
            tllm_dequantize_rows(type, weights, rowBytes, columns, 0, rows, &all)
            for batch in [1, 4, 6] {
                let x = (0..<(batch * columns)).map { _ in Float.random(in: -2...2) }
                // The scalar integer reference on the row layout (no SIMD path enabled).
                var expected = [Float](repeating: 0, count: batch * rows)
                tllm_set_cpu_features(0)
                #expect(
                    tllm_matmul_rows_q8(
                        nil, type, weights, rowBytes, rows, columns, x, columns, batch, 1, &expected, rows) == 0)
                tllm_set_cpu_features(~0)
                for mask in Self.paths {
                    tllm_set_cpu_features(mask)
                    defer { tllm_set_cpu_features(~0) }
                    var y = [Float](repeating: .nan, count: batch * rows)
                    #expect(
                        tllm_matmul_packed_q8(nil, type, packed, rows, columns, x, columns, batch, 1, &y, rows) == 0)
                    for index in 0..<(batch * rows) {
                        // Summation order differs: allow rounding relative to Σ|w·x| of the row.
                        let (i, row) = index.quotientAndRemainder(dividingBy: rows)
                        let scale = (0..<columns).reduce(Float(0)) {
                            $0 + abs(all[row * columns + $1] * x[i * columns + $1])
                        }
                        #expect(
                            abs(y[index] - expected[index]) <= scale * 4e-6 + 1e-5,
                            "\(name) path \(mask) batch \(batch) row \(row): \(y[index]) vs \(expected[index])")
                    }
                    #expect(
                        tllm_matmul_packed_q8(nil, type, packed, rows, columns, x, columns, batch, 2, &y, rows) == 0)
                    Self.expectTwoPlanes(
                        y, weights: all, x: x, rows: rows, columns: columns, "\(name) two planes, path \(mask)")
                }
            }
        }
        let q40 = Int32(2)
        let bytes = [UInt8](repeating: 0, count: 18 * 24)
        var out = bytes
        #expect(tllm_q8_packable(q40, 24, 32) == 0, "24 rows are not whole groups of 16")
        #expect(tllm_q8_pack(nil, q40, bytes, 18, 24, 32, &out) == -1)
        #expect(tllm_q8_packable(12, 16, 256) == 0, "Q4_K has no packed layout")
        #expect(tllm_q8_packable(q40, 16, 32) == 1)
    }

    @Test func quantisationRoundTripsWithinHalfAStep() {
        let x = (0..<256).map { _ in Float.random(in: -5...5) }
        var blocks = [tllm_block_q8_act](repeating: tllm_block_q8_act(), count: 8)
        tllm_quantize_activations(x, &blocks, 256)
        for (index, value) in x.enumerated() {
            let block = blocks[index / 32]
            let q = withUnsafeBytes(of: block.qs) { Int8(bitPattern: $0[index % 32]) }
            #expect(abs(Float(q) * block.d - value) <= block.d / 2 + 1e-6)
        }
        // The residual plane: hi + lo within half its step, d / 256 (one step where clamped).
        var residual = [tllm_block_q8_act](repeating: tllm_block_q8_act(), count: 8)
        tllm_quantize_residual(x, blocks, &residual, 256)
        for (index, value) in x.enumerated() {
            let (hi, lo) = (blocks[index / 32], residual[index / 32])
            let q = withUnsafeBytes(of: hi.qs) { Int8(bitPattern: $0[index % 32]) }
            let r = withUnsafeBytes(of: lo.qs) { Int8(bitPattern: $0[index % 32]) }
            #expect(lo.d == hi.d / 256)
            #expect(abs(Float(q) * hi.d + Float(r) * lo.d - value) <= lo.d + 1e-6)
        }
        // Every path quantises both planes to the same bytes as the scalar reference (mask 0).
        let paths = KernelPaths.available(top: TLLM_CPU_AVX512F)
        let results = paths.map { mask -> [tllm_block_q8_act] in
            tllm_set_cpu_features(mask)
            defer { tllm_set_cpu_features(~0) }
            var out = [tllm_block_q8_act](repeating: tllm_block_q8_act(), count: 16)
            out.withUnsafeMutableBufferPointer { planes in
                tllm_quantize_activations(x, planes.baseAddress!, 256)
                tllm_quantize_residual(x, planes.baseAddress!, planes.baseAddress! + 8, 256)
            }
            return out
        }
        for (mask, result) in zip(paths, results) {
            for (a, b) in zip(result, results[0]) {
                let same = withUnsafeBytes(of: a) { ra in withUnsafeBytes(of: b) { rb in ra.elementsEqual(rb) } }
                #expect(same, "path \(mask) quantises differently from the reference")
            }
        }
        var y: Float = 0
        let f16Row = [UInt8](repeating: 0, count: 512)
        #expect(tllm_matmul_rows_q8(nil, 1, f16Row, 512, 1, 256, x, 256, 1, 1, &y, 1) == -1, "F16 has no 8-bit path")
        let q4KRow = [UInt8](repeating: 0, count: 144)
        #expect(tllm_matmul_rows_q8(nil, 12, q4KRow, 144, 1, 224, x, 224, 1, 1, &y, 1) == -1, "not whole K blocks")
        #expect(tllm_matmul_rows_q8(nil, 12, q4KRow, 144, 1, 256, x, 256, 1, 3, &y, 1) == -1, "three planes")
    }

    /// Two planes on the row layout (int16 decode of K-quants and of shapes that do not pack):
    /// the float product within the residual's step, on every path, for batches of 1 and 3.
    @Test func twoPlanesOnRowsTrackTheFloatProduct() {
        let columns = 512
        let rows = 6
        for (name, type) in Self.types {
            let traits = tllm_type_traits_of(type)
            let rowBytes = columns / traits.block_size * traits.type_size
            let weights = DotProductTests.randomRows(type: type, rows: rows, columns: columns)
            var all = [Float](repeating: 0, count: rows * columns)
            tllm_dequantize_rows(type, weights, rowBytes, columns, 0, rows, &all)
            for batch in [1, 3] {
                let x = (0..<(batch * columns)).map { _ in Float.random(in: -2...2) }
                for mask in Self.paths {
                    tllm_set_cpu_features(mask)
                    defer { tllm_set_cpu_features(~0) }
                    var y = [Float](repeating: .nan, count: batch * rows)
                    #expect(
                        tllm_matmul_rows_q8(nil, type, weights, rowBytes, rows, columns, x, columns, batch, 2, &y, rows)
                            == 0)
                    Self.expectTwoPlanes(y, weights: all, x: x, rows: rows, columns: columns, "\(name) path \(mask)")
                }
            }
        }
    }

    /// Two planes: each of `y` (batch × rows) is the float product of dequantised `weights` and
    /// `x` within the residual's step, max|x| / 32512 per block (1.5 steps where the residual is
    /// clamped), ~85× tighter than one plane.
    static func expectTwoPlanes(
        _ y: [Float], weights: [Float], x: [Float], rows: Int, columns: Int, _ label: String
    ) {
        for index in 0..<y.count {
            let (i, row) = index.quotientAndRemainder(dividingBy: rows)
            var exact = 0.0
            var bound = 0.0
            var magnitude = 0.0
            for block in 0..<(columns / 32) {
                let values = x[(i * columns + block * 32)..<(i * columns + block * 32 + 32)]
                let step = Double(values.map(abs).max()!) / 32512
                for column in (block * 32)..<(block * 32 + 32) {
                    let product = Double(weights[row * columns + column]) * Double(x[i * columns + column])
                    exact += product
                    magnitude += abs(product)
                    bound += abs(Double(weights[row * columns + column])) * step * 1.5
                }
            }
            #expect(
                abs(Double(y[index]) - exact) <= bound + magnitude * 4e-6 + 1e-5,
                "\(label) batch \(y.count / rows) row \(row): \(y[index]) vs \(exact)")
        }
    }
}
