// Dot products of weight rows (float or block-quantised, read in place from the model
// file) with float32 activations: a reference per type, AVX2 and AVX-512 paths for the
// types that dominate decode, and the row-parallel matrix-vector product built on them.
#include "tllm_matmul.h"
#include "tllm_quants.h"
#include "tllm_kernels.h"
#include "dispatch.h"
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

// MARK: - Reference: dequantise (bit-exact) and accumulate in double

float tllm_vec_dot_ref(int type, const void *row, const float *x, size_t n) {
    tllm_type_traits traits = tllm_type_traits_of(type);
    if (!traits.name || n % traits.block_size != 0) return 0;
    float chunk[TLLM_QK_K];
    double sum = 0;
    const size_t per = traits.block_size == 1 ? TLLM_QK_K : traits.block_size;
    const size_t bytes_per = per / traits.block_size * traits.type_size;
    for (size_t start = 0; start < n; start += per) {
        size_t count = n - start < per ? n - start : per;
        tllm_dequantize_ref(type, (const uint8_t *)row + start / per * bytes_per, chunk, count);
        for (size_t i = 0; i < count; i++) sum += (double)chunk[i] * (double)x[start + i];
    }
    return (float)sum;
}

// MARK: - Any other type: dequantise a block at a time, then the float dot product

static float dot_generic(int type, const void *row, const float *x, size_t n) {
    tllm_type_traits traits = tllm_type_traits_of(type);
    float chunk[TLLM_QK_K];
    float sum = 0;
    const size_t per = traits.block_size == 1 ? 64 : traits.block_size;
    const size_t bytes_per = per / traits.block_size * traits.type_size;
    for (size_t start = 0; start < n; start += per) {
        size_t count = n - start < per ? n - start : per;
        tllm_dequantize(type, (const uint8_t *)row + start / per * bytes_per, chunk, count);
        sum += tllm_vec_dot(TLLM_TYPE_F32, chunk, x + start, count);  // the SIMD F32 path where there is one
    }
    return sum;
}

#if defined(__x86_64__)

// MARK: - AVX-512

__attribute__((target("avx512f"))) static inline float hsum512(__m512 v) { return _mm512_reduce_add_ps(v); }

__attribute__((target("avx512f,f16c")))
static inline float half512(tllm_half h) { return _cvtsh_ss(h); }

__attribute__((target("avx512f")))
static float dot_f32_avx512(const float *w, const float *x, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    float sum = hsum512(_mm512_add_ps(a0, a1));
    for (; i < n; i++) sum += w[i] * x[i];
    return sum;
}

__attribute__((target("avx512f")))
static float dot_f16_avx512(const uint16_t *w, const float *x, size_t n) {
    __m512 acc = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 wf = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i)));
        acc = _mm512_fmadd_ps(wf, _mm512_loadu_ps(x + i), acc);
    }
    float sum = hsum512(acc);
    for (; i < n; i++) {
        float f;
        tllm_f16_to_f32_ref(&w[i], &f, 1);
        sum += f * x[i];
    }
    return sum;
}

__attribute__((target("avx512f,f16c")))
static float dot_q8_0_avx512(const tllm_block_q8_0 *b, const float *x, size_t nb) {
    __m512 total = _mm512_setzero_ps();
    for (size_t i = 0; i < nb; i++, x += 32) {
        __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[i].qs)));
        __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[i].qs + 16))));
        __m512 s = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(x)));
        total = _mm512_fmadd_ps(_mm512_set1_ps(half512(b[i].d)), s, total);
    }
    return hsum512(total);
}

/// Low nibbles of 16 bytes are weights 0..15 of a block, high nibbles 16..31.
__attribute__((target("avx512f")))
static inline void nibbles512(const uint8_t *qs, __m512 *low, __m512 *high) {
    __m128i bytes = _mm_loadu_si128((const __m128i *)qs);
    __m512i wide = _mm512_cvtepu8_epi32(bytes);
    *low = _mm512_cvtepi32_ps(_mm512_and_si512(wide, _mm512_set1_epi32(0x0F)));
    *high = _mm512_cvtepi32_ps(_mm512_srli_epi32(wide, 4));
}

__attribute__((target("avx512f,f16c")))
static float dot_q4_0_avx512(const tllm_block_q4_0 *b, const float *x, size_t nb) {
    __m512 total = _mm512_setzero_ps();
    const __m512 eight = _mm512_set1_ps(8.0f);
    for (size_t i = 0; i < nb; i++, x += 32) {
        __m512 low, high;
        nibbles512(b[i].qs, &low, &high);
        __m512 s = _mm512_fmadd_ps(_mm512_sub_ps(high, eight), _mm512_loadu_ps(x + 16),
                                   _mm512_mul_ps(_mm512_sub_ps(low, eight), _mm512_loadu_ps(x)));
        total = _mm512_fmadd_ps(_mm512_set1_ps(half512(b[i].d)), s, total);
    }
    return hsum512(total);
}

__attribute__((target("avx512f,f16c")))
static float dot_q4_1_avx512(const tllm_block_q4_1 *b, const float *x, size_t nb) {
    // Two blocks per iteration into separate accumulators: one chain would wait on the FMA
    // latency every block.
    __m512 total0 = _mm512_setzero_ps(), total1 = _mm512_setzero_ps();
    __m512 mins0 = _mm512_setzero_ps(), mins1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 2 <= nb; i += 2, x += 64) {
        __m512 low0, high0, low1, high1;
        nibbles512(b[i].qs, &low0, &high0);
        nibbles512(b[i + 1].qs, &low1, &high1);
        __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
        __m512 x2 = _mm512_loadu_ps(x + 32), x3 = _mm512_loadu_ps(x + 48);
        __m512 s0 = _mm512_fmadd_ps(high0, x1, _mm512_mul_ps(low0, x0));
        __m512 s1 = _mm512_fmadd_ps(high1, x3, _mm512_mul_ps(low1, x2));
        total0 = _mm512_fmadd_ps(_mm512_set1_ps(half512(b[i].d)), s0, total0);
        total1 = _mm512_fmadd_ps(_mm512_set1_ps(half512(b[i + 1].d)), s1, total1);
        mins0 = _mm512_fmadd_ps(_mm512_set1_ps(half512(b[i].m)), _mm512_add_ps(x0, x1), mins0);
        mins1 = _mm512_fmadd_ps(_mm512_set1_ps(half512(b[i + 1].m)), _mm512_add_ps(x2, x3), mins1);
    }
    for (; i < nb; i++, x += 32) {
        __m512 low, high;
        nibbles512(b[i].qs, &low, &high);
        __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
        __m512 s = _mm512_fmadd_ps(high, x1, _mm512_mul_ps(low, x0));
        total0 = _mm512_fmadd_ps(_mm512_set1_ps(half512(b[i].d)), s, total0);
        mins0 = _mm512_fmadd_ps(_mm512_set1_ps(half512(b[i].m)), _mm512_add_ps(x0, x1), mins0);
    }
    return hsum512(_mm512_add_ps(_mm512_add_ps(total0, total1), _mm512_add_ps(mins0, mins1)));
}

// MARK: - AVX2 (+FMA, F16C)

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma")))
static float dot_f32_avx2(const float *w, const float *x, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    float sum = hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; i++) sum += w[i] * x[i];
    return sum;
}

__attribute__((target("avx2,fma,f16c")))
static float dot_f16_avx2(const uint16_t *w, const float *x, size_t n) {
    __m256 acc = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
        acc = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + i), acc);
    }
    float sum = hsum256(acc);
    for (; i < n; i++) {
        float f;
        tllm_f16_to_f32_ref(&w[i], &f, 1);
        sum += f * x[i];
    }
    return sum;
}

__attribute__((target("avx2,fma,f16c")))
static float dot_q8_0_avx2(const tllm_block_q8_0 *b, const float *x, size_t nb) {
    __m256 total = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++, x += 32) {
        __m256 s = _mm256_setzero_ps();
        for (int k = 0; k < 32; k += 8) {
            __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b[i].qs + k))));
            s = _mm256_fmadd_ps(q, _mm256_loadu_ps(x + k), s);
        }
        total = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), s, total);
    }
    return hsum256(total);
}

__attribute__((target("avx2,fma,f16c")))
static float dot_q4_avx2(const uint8_t *qs, const float *x, float offset, __m256 *sum_x) {
    // Returns sum((q - offset) * x) over one 32-weight block; accumulates sum(x) when asked.
    __m128i bytes = _mm_loadu_si128((const __m128i *)qs);
    __m128i low = _mm_and_si128(bytes, _mm_set1_epi8(0x0F));
    __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0F));
    __m256 off = _mm256_set1_ps(offset);
    __m256 s = _mm256_setzero_ps();
    __m128i parts[4] = {low, _mm_srli_si128(low, 8), high, _mm_srli_si128(high, 8)};
    for (int k = 0; k < 4; k++) {
        __m256 q = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[k])), off);
        __m256 xv = _mm256_loadu_ps(x + 8 * k);
        s = _mm256_fmadd_ps(q, xv, s);
        if (sum_x) *sum_x = _mm256_add_ps(*sum_x, xv);
    }
    return hsum256(s);
}

__attribute__((target("avx2,fma,f16c")))
static float dot_q4_0_avx2(const tllm_block_q4_0 *b, const float *x, size_t nb) {
    float sum = 0;
    for (size_t i = 0; i < nb; i++, x += 32) sum += _cvtsh_ss(b[i].d) * dot_q4_avx2(b[i].qs, x, 8.0f, NULL);
    return sum;
}

__attribute__((target("avx2,fma,f16c")))
static float dot_q4_1_avx2(const tllm_block_q4_1 *b, const float *x, size_t nb) {
    float sum = 0;
    for (size_t i = 0; i < nb; i++, x += 32) {
        __m256 sx = _mm256_setzero_ps();
        float qx = dot_q4_avx2(b[i].qs, x, 0.0f, &sx);
        sum += _cvtsh_ss(b[i].d) * qx + _cvtsh_ss(b[i].m) * hsum256(sx);
    }
    return sum;
}

#endif  // __x86_64__


#if defined(__aarch64__)

// MARK: - NEON (baseline Armv8-A: every arm64 core has it)

static inline float32x4_t half4(const uint16_t *h) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h))); }

static float dot_f32_neon(const float *w, const float *x, size_t n) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = vfmaq_f32(a0, vld1q_f32(w + i), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, vld1q_f32(w + i + 4), vld1q_f32(x + i + 4));
        a2 = vfmaq_f32(a2, vld1q_f32(w + i + 8), vld1q_f32(x + i + 8));
        a3 = vfmaq_f32(a3, vld1q_f32(w + i + 12), vld1q_f32(x + i + 12));
    }
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; i++) sum += w[i] * x[i];
    return sum;
}

static float dot_f16_neon(const uint16_t *w, const float *x, size_t n) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 = vfmaq_f32(a0, half4(w + i), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, half4(w + i + 4), vld1q_f32(x + i + 4));
    }
    float sum = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) {
        float one;
        tllm_f16_to_f32_ref(&w[i], &one, 1);
        sum += one * x[i];
    }
    return sum;
}

/// Σ q[i]·x[i] over 16 signed bytes.
static inline float32x4_t dot16_s8(int8x16_t q, const float *x, float32x4_t acc) {
    int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_s8(vget_high_s8(q));
    acc = vfmaq_f32(acc, vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), vld1q_f32(x));
    acc = vfmaq_f32(acc, vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))), vld1q_f32(x + 4));
    acc = vfmaq_f32(acc, vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), vld1q_f32(x + 8));
    return vfmaq_f32(acc, vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))), vld1q_f32(x + 12));
}

static float dot_q8_0_neon(const tllm_block_q8_0 *b, const float *x, size_t nb) {
    float32x4_t acc = vdupq_n_f32(0);
    for (size_t i = 0; i < nb; i++) {
        float32x4_t block = dot16_s8(vld1q_s8(b[i].qs), x + 32 * i, vdupq_n_f32(0));
        block = dot16_s8(vld1q_s8(b[i].qs + 16), x + 32 * i + 16, block);
        float d;
        tllm_f16_to_f32_ref(&b[i].d, &d, 1);
        acc = vfmaq_n_f32(acc, block, d);
    }
    return vaddvq_f32(acc);
}

/// Q4_0 (offset 8) and Q4_1 (no offset, + m·Σx): low nibbles are weights 0..15, high 16..31.
static float dot_q4_neon(const uint8_t *blocks, size_t block_bytes, int q4_1, const float *x, size_t nb) {
    float32x4_t acc = vdupq_n_f32(0);
    float offsets = 0;
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *block = blocks + i * block_bytes;
        uint16_t dm[2];
        memcpy(dm, block, q4_1 ? 4 : 2);
        uint8x16_t packed = vld1q_u8(block + (q4_1 ? 4 : 2));
        int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0F)));
        int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(packed, 4));
        if (!q4_1) {
            lo = vsubq_s8(lo, vdupq_n_s8(8));
            hi = vsubq_s8(hi, vdupq_n_s8(8));
        }
        const float *xb = x + 32 * i;
        float32x4_t sum = dot16_s8(hi, xb + 16, dot16_s8(lo, xb, vdupq_n_f32(0)));
        float d[2];
        tllm_f16_to_f32_ref(dm, d, q4_1 ? 2 : 1);
        acc = vfmaq_n_f32(acc, sum, d[0]);
        if (q4_1) {
            float32x4_t xs = vaddq_f32(vaddq_f32(vld1q_f32(xb), vld1q_f32(xb + 4)),
                                       vaddq_f32(vld1q_f32(xb + 8), vld1q_f32(xb + 12)));
            xs = vaddq_f32(xs, vaddq_f32(vaddq_f32(vld1q_f32(xb + 16), vld1q_f32(xb + 20)),
                                         vaddq_f32(vld1q_f32(xb + 24), vld1q_f32(xb + 28))));
            offsets += d[1] * vaddvq_f32(xs);
        }
    }
    return vaddvq_f32(acc) + offsets;
}

#endif  // __aarch64__

float tllm_vec_dot(int type, const void *row, const float *x, size_t n) {
#if defined(__x86_64__)
    unsigned f = tllm_active_features();
    if (f & TLLM_CPU_AVX512F) {
        switch (type) {
        case TLLM_TYPE_F32: return dot_f32_avx512(row, x, n);
        case TLLM_TYPE_F16: return dot_f16_avx512(row, x, n);
        case TLLM_TYPE_Q8_0: return dot_q8_0_avx512(row, x, n / 32);
        case TLLM_TYPE_Q4_0: return dot_q4_0_avx512(row, x, n / 32);
        case TLLM_TYPE_Q4_1: return dot_q4_1_avx512(row, x, n / 32);
        default: break;
        }
    }
    if (f & TLLM_CPU_AVX2_F16C) {
        switch (type) {
        case TLLM_TYPE_F32: return dot_f32_avx2(row, x, n);
        case TLLM_TYPE_F16: return dot_f16_avx2(row, x, n);
        case TLLM_TYPE_Q8_0: return dot_q8_0_avx2(row, x, n / 32);
        case TLLM_TYPE_Q4_0: return dot_q4_0_avx2(row, x, n / 32);
        case TLLM_TYPE_Q4_1: return dot_q4_1_avx2(row, x, n / 32);
        default: break;
        }
    }
#elif defined(__aarch64__)
    if (tllm_active_features() & TLLM_CPU_NEON) {
        switch (type) {
        case TLLM_TYPE_F32: return dot_f32_neon(row, x, n);
        case TLLM_TYPE_F16: return dot_f16_neon(row, x, n);
        case TLLM_TYPE_Q8_0: return dot_q8_0_neon(row, x, n / 32);
        case TLLM_TYPE_Q4_0: return dot_q4_neon(row, sizeof(tllm_block_q4_0), 0, x, n / 32);
        case TLLM_TYPE_Q4_1: return dot_q4_neon(row, sizeof(tllm_block_q4_1), 1, x, n / 32);
        default: break;
        }
    }
#endif
    if (type == TLLM_TYPE_F32) {
        const float *w = row;
        float sum = 0;
        for (size_t i = 0; i < n; i++) sum += w[i] * x[i];
        return sum;
    }
    return dot_generic(type, row, x, n);
}

// MARK: - Matrix-vector products split over the pool

/// Bytes ahead of the row in use that the one-row loop prefetches.
#ifndef ROW_PREFETCH_AHEAD
#define ROW_PREFETCH_AHEAD 4096
#endif

typedef struct {
    int type;
    const uint8_t *w;
    size_t row_bytes, rows, cols;
    const float *x;
    size_t x_stride, batch;
    float *y;
    size_t y_stride;
} matvec_job;

void tllm_row_range(size_t rows, int index, int count, size_t *start, size_t *end) {
    // Contiguous row ranges per thread, rounded to 16 rows so threads never share a cache line of y.
    size_t per = (rows + (size_t)count - 1) / (size_t)count;
    per = (per + 15) / 16 * 16;
    *start = (size_t)index * per < rows ? (size_t)index * per : rows;
    *end = *start + per < rows ? *start + per : rows;
}

#if defined(__x86_64__)

// MARK: - Several activation rows per weight row (AVX-512)
//
// Decode of a batch multiplies each weight row with a few activation rows. Dequantising a
// 32-weight block once into two registers and multiplying it with every activation row costs
// the unpacking once instead of once per row. The batch is handled in groups of up to
// MULTIROW_MAX rows, each group's size a compile-time constant (the accumulators stay in
// registers); low and high halves of a block accumulate separately (two FMA chains).

#define MULTIROW_MAX 8

/// Weights 0..15 and 16..31 of block `i` of a row, as floats.
typedef void (*block_dequantizer)(const uint8_t *row, size_t i, __m512 *lo, __m512 *hi);

__attribute__((target("avx512f,f16c"), always_inline)) static inline void block_f32(const uint8_t *row, size_t i,
                                                                                     __m512 *lo, __m512 *hi) {
    const float *w = (const float *)row + i * 32;
    *lo = _mm512_loadu_ps(w);
    *hi = _mm512_loadu_ps(w + 16);
}

__attribute__((target("avx512f,f16c"), always_inline)) static inline void block_f16(const uint8_t *row, size_t i,
                                                                                     __m512 *lo, __m512 *hi) {
    const uint16_t *w = (const uint16_t *)row + i * 32;
    *lo = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w));
    *hi = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + 16)));
}

__attribute__((target("avx512f,f16c"), always_inline)) static inline void block_q8_0(const uint8_t *row, size_t i,
                                                                                      __m512 *lo, __m512 *hi) {
    const tllm_block_q8_0 *b = (const tllm_block_q8_0 *)row + i;
    __m512 d = _mm512_set1_ps(half512(b->d));
    *lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->qs))), d);
    *hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 16)))), d);
}

__attribute__((target("avx512f,f16c"), always_inline)) static inline void block_q4_0(const uint8_t *row, size_t i,
                                                                                      __m512 *lo, __m512 *hi) {
    const tllm_block_q4_0 *b = (const tllm_block_q4_0 *)row + i;
    __m512 d = _mm512_set1_ps(half512(b->d)), eight = _mm512_set1_ps(8.0f);
    __m512 low, high;
    nibbles512(b->qs, &low, &high);
    *lo = _mm512_mul_ps(_mm512_sub_ps(low, eight), d);
    *hi = _mm512_mul_ps(_mm512_sub_ps(high, eight), d);
}

__attribute__((target("avx512f,f16c"), always_inline)) static inline void block_q4_1(const uint8_t *row, size_t i,
                                                                                      __m512 *lo, __m512 *hi) {
    const tllm_block_q4_1 *b = (const tllm_block_q4_1 *)row + i;
    __m512 d = _mm512_set1_ps(half512(b->d)), m = _mm512_set1_ps(half512(b->m));
    __m512 low, high;
    nibbles512(b->qs, &low, &high);
    *lo = _mm512_fmadd_ps(low, d, m);
    *hi = _mm512_fmadd_ps(high, d, m);
}

/// y[b * y_stride] = row · x_b for `B` activation rows (B a constant after inlining).
__attribute__((target("avx512f,f16c"), always_inline)) static inline void multirow(
    block_dequantizer dequantize, const uint8_t *row, size_t nb, const float *x, size_t x_stride, float *y,
    size_t y_stride, const size_t B) {
    __m512 lo_acc[MULTIROW_MAX], hi_acc[MULTIROW_MAX];
    for (size_t b = 0; b < B; b++) lo_acc[b] = hi_acc[b] = _mm512_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m512 lo, hi;
        dequantize(row, i, &lo, &hi);
        for (size_t b = 0; b < B; b++) {
            const float *xb = x + b * x_stride + i * 32;
            lo_acc[b] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xb), lo_acc[b]);
            hi_acc[b] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb + 16), hi_acc[b]);
        }
    }
    for (size_t b = 0; b < B; b++) y[b * y_stride] = hsum512(_mm512_add_ps(lo_acc[b], hi_acc[b]));
}

/// Rows [start, end) of the weight times every activation row, for one weight type.
#define MULTIROW_RANGE(NAME, DEQUANTIZER)                                                                              \
    __attribute__((target("avx512f,f16c"))) static void NAME(const matvec_job *job, size_t start, size_t end) {     \
        const size_t nb = job->cols / 32;                                                                            \
        for (size_t r = start; r < end; r++) {                                                                       \
            const uint8_t *row = job->w + r * job->row_bytes;                                                        \
            for (size_t b0 = 0; b0 < job->batch; b0 += MULTIROW_MAX) {                                               \
                const float *x = job->x + b0 * job->x_stride;                                                        \
                float *y = job->y + b0 * job->y_stride + r;                                                          \
                switch (job->batch - b0 < MULTIROW_MAX ? job->batch - b0 : MULTIROW_MAX) {                           \
                case 1: multirow(DEQUANTIZER, row, nb, x, job->x_stride, y, job->y_stride, 1); break;                \
                case 2: multirow(DEQUANTIZER, row, nb, x, job->x_stride, y, job->y_stride, 2); break;                \
                case 3: multirow(DEQUANTIZER, row, nb, x, job->x_stride, y, job->y_stride, 3); break;                \
                case 4: multirow(DEQUANTIZER, row, nb, x, job->x_stride, y, job->y_stride, 4); break;                \
                case 5: multirow(DEQUANTIZER, row, nb, x, job->x_stride, y, job->y_stride, 5); break;                \
                case 6: multirow(DEQUANTIZER, row, nb, x, job->x_stride, y, job->y_stride, 6); break;                \
                case 7: multirow(DEQUANTIZER, row, nb, x, job->x_stride, y, job->y_stride, 7); break;                \
                default: multirow(DEQUANTIZER, row, nb, x, job->x_stride, y, job->y_stride, 8); break;               \
                }                                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
    }

MULTIROW_RANGE(multirow_f32, block_f32)
MULTIROW_RANGE(multirow_f16, block_f16)
MULTIROW_RANGE(multirow_q8_0, block_q8_0)
MULTIROW_RANGE(multirow_q4_0, block_q4_0)
MULTIROW_RANGE(multirow_q4_1, block_q4_1)

typedef void (*multirow_range)(const matvec_job *job, size_t start, size_t end);

static multirow_range multirow_for(int type, size_t cols, size_t batch) {
    // One activation row: the per-type dot products are as fast and keep single-sequence decode
    // bit-identical to what it always was.
    if (batch < 2 || cols % 32 != 0 || !(tllm_active_features() & TLLM_CPU_AVX512F)) return NULL;
    switch (type) {
    case TLLM_TYPE_F32: return multirow_f32;
    case TLLM_TYPE_F16: return multirow_f16;
    case TLLM_TYPE_Q8_0: return multirow_q8_0;
    case TLLM_TYPE_Q4_0: return multirow_q4_0;
    case TLLM_TYPE_Q4_1: return multirow_q4_1;
    default: return NULL;
    }
}
#endif  // __x86_64__

static void matvec_task(void *raw, int index, int count) {
    const matvec_job *job = raw;
    size_t start, end;
    tllm_row_range(job->rows, index, count, &start, &end);
#if defined(__x86_64__)
    multirow_range multirow_kernel = multirow_for(job->type, job->cols, job->batch);
    if (multirow_kernel) {
        multirow_kernel(job, start, end);
        return;
    }
#endif
    for (size_t r = start; r < end; r++) {
        const void *row = job->w + r * job->row_bytes;
#if defined(__x86_64__)
        // The rows are one stream; as in q8_packed.c, the hardware prefetchers alone leave one
        // core at about half its bandwidth, which memory-bound rows (F16, F32) feel.
        for (size_t line = 0; line < job->row_bytes; line += 64)
            _mm_prefetch((const char *)row + line + ROW_PREFETCH_AHEAD, _MM_HINT_T0);
#endif
        for (size_t b = 0; b < job->batch; b++)
            job->y[b * job->y_stride + r] = tllm_vec_dot(job->type, row, job->x + b * job->x_stride, job->cols);
    }
}

int tllm_matmul_rows(tllm_pool *pool, int type, const void *w, size_t row_bytes, size_t rows, size_t cols,
                     const float *x, size_t x_stride, size_t batch, float *y, size_t y_stride) {
    tllm_type_traits traits = tllm_type_traits_of(type);
    if (!traits.name || cols % traits.block_size != 0) return -1;
    matvec_job job = {type, w, row_bytes, rows, cols, x, x_stride, batch, y, y_stride};
    tllm_pool_run(pool, matvec_task, &job);
    return 0;
}

int tllm_matvec(tllm_pool *pool, int type, const void *w, size_t row_bytes, size_t rows, size_t cols, const float *x,
                float *y) {
    return tllm_matmul_rows(pool, type, w, row_bytes, rows, cols, x, cols, 1, y, rows);
}
