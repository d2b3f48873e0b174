// Hot loops of together-LLM, organised like ggml: a portable reference per
// operation, SIMD paths selected once at run time by cpuid.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Which SIMD paths this CPU supports (bit set of TLLM_CPU_*), detected once.
enum {
    TLLM_CPU_AVX2_F16C = 1 << 0,
    TLLM_CPU_AVX512F = 1 << 1,
    TLLM_CPU_NEON = 1 << 2,
    TLLM_CPU_AVX512VNNI = 1 << 3,
    /// AMX tiles with bfloat16 products (and AVX-512 BW/VL), the kernel granted their use.
    TLLM_CPU_AMX_BF16 = 1 << 4,
};
unsigned tllm_cpu_features(void);

/// Restricts the SIMD paths in use to `mask & tllm_cpu_features()` (tests use this to compare
/// every path with the reference). Returns the mask in force. The restriction belongs to the
/// calling thread, and to the pool threads while they run its jobs: other threads (other tests,
/// a model computing) keep their own.
unsigned tllm_set_cpu_features(unsigned mask);

/// float32 -> IEEE binary16, round to nearest even (overflow -> +-inf, NaN stays NaN).
void tllm_f32_to_f16(const float *src, uint16_t *dst, size_t n);
/// IEEE binary16 -> float32 (exact).
void tllm_f16_to_f32(const uint16_t *src, float *dst, size_t n);
/// Portable references of the two conversions above.
void tllm_f32_to_f16_ref(const float *src, uint16_t *dst, size_t n);
void tllm_f16_to_f32_ref(const uint16_t *src, float *dst, size_t n);

/// Index of the first binary16 value that is infinite or NaN, or n when all are finite.
size_t tllm_f16_first_nonfinite(const uint16_t *src, size_t n);

#ifdef __cplusplus
}
#endif
