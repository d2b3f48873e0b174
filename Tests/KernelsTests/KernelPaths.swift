import CTLLMKernels

/// The kernel paths a test should compare: the portable one (mask 0) and each SIMD level the
/// machine has, as masks for `tllm_set_cpu_features`.
enum KernelPaths {
    static func available(top: Int = TLLM_CPU_AVX512F) -> [UInt32] {
        let all = tllm_cpu_features()
        var masks: [UInt32] = [0]
        if all & UInt32(TLLM_CPU_AVX2_F16C) != 0 { masks.append(UInt32(TLLM_CPU_AVX2_F16C)) }
        if all & UInt32(top) != 0 { masks.append(all) }
        return masks
    }
}
