// float16 conversion: reference and x86 SIMD paths (F16C, AVX-512F).
#include "tllm_kernels.h"
#include <string.h>
#include "dispatch.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline uint16_t f32_to_f16_one(float value) {
    uint32_t x = f32_bits(value);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) {  // inf or NaN; keep NaN quiet and non-zero
        return sign | (absx > 0x7f800000u ? (uint16_t)(0x7e00u | ((absx >> 13) & 0x3ffu)) : 0x7c00u);
    }
    if (absx >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: overflow
    if (absx < 0x38800000u) {                        // below the smallest normal half: subnormal or zero
        if (absx < 0x33000000u) return sign;         // < 2^-25 rounds to zero (ties to even 0)
        uint32_t exp = absx >> 23;
        uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - exp;  // 14 + (113 - exp) - 1... shift so that result is in units of 2^-24
        uint32_t result = mant >> (shift - 0);
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (result & 1u))) result += 1;
        return sign | (uint16_t)result;
    }
    // normal: rebias exponent (127 -> 15) and round mantissa 23 -> 10 bits, ties to even
    uint32_t rounded = absx + 0xfffu + ((absx >> 13) & 1u);
    return sign | (uint16_t)((rounded - 0x38000000u) >> 13);
}

static inline float f16_to_f32_one(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        // subnormal (or zero): value = mant * 2^-24, exact in float32
        float f = (float)mant * 5.9604644775390625e-08f;
        return sign ? -f : f;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

void tllm_f32_to_f16_ref(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_f16_one(src[i]);
}

void tllm_f16_to_f32_ref(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32_one(src[i]);
}

#if defined(__x86_64__)
__attribute__((target("avx,f16c")))
static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + i), h);
    }
    tllm_f32_to_f16_ref(src + i, dst + i, n - i);
}

__attribute__((target("avx,f16c")))
static void f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    }
    tllm_f16_to_f32_ref(src + i, dst + i, n - i);
}

__attribute__((target("avx512f")))
static void f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)(dst + i), h);
    }
    tllm_f32_to_f16_ref(src + i, dst + i, n - i);
}

__attribute__((target("avx512f")))
static void f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    }
    tllm_f16_to_f32_ref(src + i, dst + i, n - i);
}
#endif

void tllm_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
#if defined(__x86_64__)
    unsigned f = tllm_active_features();
    if (f & TLLM_CPU_AVX512F) { f32_to_f16_avx512(src, dst, n); return; }
    if (f & TLLM_CPU_AVX2_F16C) { f32_to_f16_f16c(src, dst, n); return; }
#endif
    tllm_f32_to_f16_ref(src, dst, n);
}

void tllm_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
#if defined(__x86_64__)
    unsigned f = tllm_active_features();
    if (f & TLLM_CPU_AVX512F) { f16_to_f32_avx512(src, dst, n); return; }
    if (f & TLLM_CPU_AVX2_F16C) { f16_to_f32_f16c(src, dst, n); return; }
#endif
    tllm_f16_to_f32_ref(src, dst, n);
}

size_t tllm_f16_first_nonfinite(const uint16_t *src, size_t n) {
    // Plain loop: compilers vectorise the OR-reduction; the early exit only runs on error.
    const size_t chunk = 4096;
    for (size_t start = 0; start < n; start += chunk) {
        size_t end = start + chunk < n ? start + chunk : n;
        unsigned bad = 0;
        for (size_t i = start; i < end; i++) bad |= ((src[i] & 0x7c00u) == 0x7c00u);
        if (bad) {
            for (size_t i = start; i < end; i++)
                if ((src[i] & 0x7c00u) == 0x7c00u) return i;
        }
    }
    return n;
}
