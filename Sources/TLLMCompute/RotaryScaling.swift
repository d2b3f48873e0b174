import Foundation
import TLLMModelFiles

extension ModelWeights {
    /// Per-pair divisors of the RoPE frequencies, or nil for plain RoPE: llama.cpp's
    /// `rope_freqs` tensor when the file has one, else Llama 3 scaling from the config.
    func ropeFrequencyFactors() throws -> [Float]? {
        if hasTensor(.ropeFrequencies) { return try tensor(.ropeFrequencies).dequantize() }
        guard let scaling = configuration.ropeScaling else { return nil }
        // Hugging Face's `_compute_llama3_parameters`, expressed as divisors of each frequency.
        let dimension = configuration.headDimension
        let lowWavelength = Double(scaling.originalContextLength) / Double(scaling.lowFrequencyFactor)
        let highWavelength = Double(scaling.originalContextLength) / Double(scaling.highFrequencyFactor)
        return (0..<(dimension / 2)).map { i in
            let frequency = pow(Double(configuration.ropeTheta), -2 * Double(i) / Double(dimension))
            let wavelength = 2 * Double.pi / frequency
            let scaled: Double
            if wavelength < highWavelength {
                scaled = frequency
            } else if wavelength > lowWavelength {
                scaled = frequency / Double(scaling.factor)
            } else {
                let smooth =
                    (Double(scaling.originalContextLength) / wavelength - Double(scaling.lowFrequencyFactor))
                    / Double(scaling.highFrequencyFactor - scaling.lowFrequencyFactor)
                scaled = (1 - smooth) * frequency / Double(scaling.factor) + smooth * frequency
            }
            return Float(frequency / scaled)
        }
    }
}
