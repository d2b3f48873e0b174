import CTLLMKernels
import Testing

@testable import TLLMCompute

@Suite struct OpenBLASKernelTests {
    let avx512 = UInt32(TLLM_CPU_AVX512F) | UInt32(TLLM_CPU_AVX2_F16C)

    @Test func fallbackKernelIsReplacedByTheBestTheCPUHas() {
        #expect(OpenBLASKernel.betterCore(loaded: "Prescott", features: avx512, environment: [:]) == "SkylakeX")
        #expect(
            OpenBLASKernel.betterCore(loaded: "Nehalem", features: UInt32(TLLM_CPU_AVX2_F16C), environment: [:])
                == "Haswell")
    }

    @Test func aGoodKernelOrTheUsersChoiceIsKept() {
        #expect(OpenBLASKernel.betterCore(loaded: "SapphireRapids", features: avx512, environment: [:]) == nil)
        #expect(OpenBLASKernel.betterCore(loaded: "Haswell", features: avx512, environment: [:]) == nil)
        #expect(
            OpenBLASKernel.betterCore(loaded: "Prescott", features: avx512, environment: ["OPENBLAS_CORETYPE": "Core2"])
                == nil)
        #expect(OpenBLASKernel.betterCore(loaded: "Prescott", features: 0, environment: [:]) == nil)
    }

    @Test func theLoadedCoreIsNamed() {
        #expect(!OpenBLASKernel.coreName.isEmpty)
    }
}
