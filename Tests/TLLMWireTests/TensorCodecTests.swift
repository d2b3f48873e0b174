import Testing

@testable import TLLMWire

@Suite struct TensorCodecTests {
    static func randomValues(_ count: Int, scale: Float = 3) -> [Float] {
        (0..<count).map { _ in Float.random(in: -scale...scale) }
    }

    @Test(arguments: [(1, 576), (63, 64), (64, 64), (512, 4096)])
    func roundTripsThroughFloat16(rows: Int, columns: Int) throws {
        let values = Self.randomValues(rows * columns)
        let tensor = try TensorCodec.encode(values, rows: rows, columns: columns)
        #expect(tensor.shape == [Int32(rows), Int32(columns)])
        let isFrame = tensor.data.starts(with: [0x04, 0x22, 0x4D, 0x18])
        #expect(isFrame == (rows >= 64), "LZ4 frame exactly when rows >= 64")
        if rows < 64 { #expect(tensor.data.count == rows * columns * 2) }
        let decoded = try TensorCodec.decode(tensor)
        #expect(decoded.rows == rows && decoded.columns == columns)
        for (original, back) in zip(values, decoded.values) {
            #expect(back == Float(Float16(original)))
        }
    }

    @Test func zeroRowsIsAnEmptyTensor() throws {
        let tensor = try TensorCodec.encode([], rows: 0, columns: 576)
        #expect(tensor.data.isEmpty && tensor.shape == [0, 576])
        let decoded = try TensorCodec.decode(tensor)
        #expect(decoded.rows == 0 && decoded.values.isEmpty)
    }

    @Test func refusesNonFiniteAndOverflowingValues() {
        for bad: Float in [.nan, .infinity, -.infinity, 70000] {
            var values = [Float](repeating: 1, count: 2 * 8)
            values[11] = bad
            #expect(throws: TensorCodecError.self) { try TensorCodec.encode(values, rows: 2, columns: 8) }
            do {
                _ = try TensorCodec.encode(values, rows: 2, columns: 8)
            } catch {
                #expect(error.description.contains("row 1, column 3"), "\(error)")
            }
        }
    }

    @Test func refusesMismatchedShapesAndData() throws {
        #expect(throws: TensorCodecError.self) { try TensorCodec.encode([1, 2, 3], rows: 2, columns: 2) }
        #expect(throws: TensorCodecError.self) { try TensorCodec.encode([], rows: -1, columns: 2) }
        let cases: [BFloat16Tensor] = [
            BFloat16Tensor(data: [0, 0, 0], shape: [2, 4]),  // raw, too short
            BFloat16Tensor(data: [0, 0], shape: [4]),  // not 2-D
            BFloat16Tensor(data: [], shape: [2, -4]),  // negative
            BFloat16Tensor(data: [1, 2, 3, 4], shape: [64, 4]),  // >= 64 rows but not a frame
            BFloat16Tensor(data: [], shape: [Int32.max, Int32.max]),  // absurd
            BFloat16Tensor(data: [0x00, 0x7c], shape: [1, 1]),  // +inf from the peer
        ]
        for tensor in cases {
            #expect(throws: TensorCodecError.self, "\(tensor.shape)") { try TensorCodec.decode(tensor) }
        }
    }

    @Test func refusesFramesOfTheWrongSizeOrCorrupt() throws {
        let values = Self.randomValues(64 * 8)
        let good = try TensorCodec.encode(values, rows: 64, columns: 8)
        // The same frame announced with one row more (too short) and one row less (too long).
        #expect(throws: TensorCodecError.self) {
            try TensorCodec.decode(BFloat16Tensor(data: good.data, shape: [65, 8]))
        }
        #expect(throws: TensorCodecError.self) {
            try TensorCodec.decode(BFloat16Tensor(data: good.data, shape: [64, 7]))
        }
        var truncated = good.data
        truncated.removeLast(10)
        #expect(throws: TensorCodecError.self) {
            try TensorCodec.decode(BFloat16Tensor(data: truncated, shape: [64, 8]))
        }
        var trailing = good.data
        trailing.append(contentsOf: [1, 2, 3])
        #expect(throws: TensorCodecError.self) {
            try TensorCodec.decode(BFloat16Tensor(data: trailing, shape: [64, 8]))
        }
        var corrupt = good.data
        for index in 12..<min(corrupt.count, 40) { corrupt[index] ^= 0xff }
        #expect(throws: TensorCodecError.self) {
            try TensorCodec.decode(BFloat16Tensor(data: corrupt, shape: [64, 8]))
        }
    }
}
