// Reference dequantisation of the GGUF block formats. The arithmetic follows the order of
// the `gguf` package's numpy code (and ggml's) operation by operation, without fused
// multiply-add, so results are bit-identical to it.
#pragma STDC FP_CONTRACT OFF
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
#include "tllm_quants.h"
#include "tllm_kernels.h"
#include "dispatch.h"
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline float half_to_float(tllm_half h) {
    float f;
    tllm_f16_to_f32_ref(&h, &f, 1);
    return f;
}

static void dequantize_q4_0(const tllm_block_q4_0 *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        for (int j = 0; j < TLLM_QK4_0 / 2; j++) {
            y[i * TLLM_QK4_0 + j] = d * (float)((x[i].qs[j] & 0x0F) - 8);
            y[i * TLLM_QK4_0 + j + TLLM_QK4_0 / 2] = d * (float)((x[i].qs[j] >> 4) - 8);
        }
    }
}

static void dequantize_q4_1(const tllm_block_q4_1 *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        const float m = half_to_float(x[i].m);
        for (int j = 0; j < TLLM_QK4_1 / 2; j++) {
            y[i * TLLM_QK4_1 + j] = d * (float)(x[i].qs[j] & 0x0F) + m;
            y[i * TLLM_QK4_1 + j + TLLM_QK4_1 / 2] = d * (float)(x[i].qs[j] >> 4) + m;
        }
    }
}

/// The fifth bits of a Q5 block: bit i of the result is weight i's.
static inline uint32_t q5_high_bits(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void dequantize_q5_0(const tllm_block_q5_0 *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        const uint32_t qh = q5_high_bits(x[i].qh);
        for (int j = 0; j < TLLM_QK5_0 / 2; j++) {
            const int q0 = (x[i].qs[j] & 0x0F) | ((qh >> j) & 1) << 4;
            const int q1 = (x[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
            y[i * TLLM_QK5_0 + j] = d * (float)(q0 - 16);
            y[i * TLLM_QK5_0 + j + TLLM_QK5_0 / 2] = d * (float)(q1 - 16);
        }
    }
}

static void dequantize_q5_1(const tllm_block_q5_1 *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        const float m = half_to_float(x[i].m);
        const uint32_t qh = q5_high_bits(x[i].qh);
        for (int j = 0; j < TLLM_QK5_1 / 2; j++) {
            const int q0 = (x[i].qs[j] & 0x0F) | ((qh >> j) & 1) << 4;
            const int q1 = (x[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
            y[i * TLLM_QK5_1 + j] = d * (float)q0 + m;
            y[i * TLLM_QK5_1 + j + TLLM_QK5_1 / 2] = d * (float)q1 + m;
        }
    }
}

static void dequantize_q8_0(const tllm_block_q8_0 *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        for (int j = 0; j < TLLM_QK8_0; j++) y[i * TLLM_QK8_0 + j] = (float)x[i].qs[j] * d;
    }
}

/// Q2_K and Q3_K share the 2-bit layout: group g (0..15) of 16 weights takes bits 2·((g / 2) % 4)
/// of bytes 32·(g / 8) + 16·(g % 2) ... + 15 of qs.
static inline int q2_bits(const uint8_t *qs, int group, int l) {
    return (qs[32 * (group / 8) + 16 * (group % 2) + l] >> (2 * ((group / 2) % 4))) & 3;
}

static void dequantize_q2_K(const tllm_block_q2_K *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        const float dmin = half_to_float(x[i].dmin);
        for (int g = 0; g < 16; g++) {
            const float dl = d * (float)(x[i].scales[g] & 0xF), ml = dmin * (float)(x[i].scales[g] >> 4);
            for (int l = 0; l < 16; l++) *y++ = dl * (float)q2_bits(x[i].qs, g, l) - ml;
        }
    }
}

/// The 6-bit scale of group g (0..15) of a Q3_K block, minus its offset of 32.
static inline int scale_q3_K(const uint8_t *scales, int g) {
    const int low = g < 8 ? scales[g] & 0xF : scales[g - 8] >> 4;
    const int high = (scales[8 + g % 4] >> (2 * (g / 4))) & 3;
    return (low | high << 4) - 32;
}

static void dequantize_q3_K(const tllm_block_q3_K *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        for (int g = 0; g < 16; g++) {
            const float dl = d * (float)scale_q3_K(x[i].scales, g);
            const int bit = g / 2;
            for (int l = 0; l < 16; l++) {
                const int h = (x[i].hmask[16 * (g % 2) + l] >> bit) & 1;
                *y++ = dl * (float)(q2_bits(x[i].qs, g, l) - (h ? 0 : 4));
            }
        }
    }
}

const int8_t tllm_iq4_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static void dequantize_iq4_nl(const tllm_block_iq4_nl *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        for (int j = 0; j < TLLM_QK4_NL / 2; j++) {
            y[i * TLLM_QK4_NL + j] = d * (float)tllm_iq4_values[x[i].qs[j] & 0x0F];
            y[i * TLLM_QK4_NL + j + TLLM_QK4_NL / 2] = d * (float)tllm_iq4_values[x[i].qs[j] >> 4];
        }
    }
}

static void dequantize_iq4_xs(const tllm_block_iq4_xs *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        for (int g = 0; g < 8; g++) {
            const int low = (x[i].scales_l[g / 2] >> (4 * (g % 2))) & 0xF;
            const int high = (x[i].scales_h >> (2 * g)) & 3;
            const float dl = d * (float)((low | high << 4) - 32);
            const uint8_t *qs = x[i].qs + 16 * g;
            for (int j = 0; j < 16; j++) y[j] = dl * (float)tllm_iq4_values[qs[j] & 0x0F];
            for (int j = 0; j < 16; j++) y[j + 16] = dl * (float)tllm_iq4_values[qs[j] >> 4];
            y += 32;
        }
    }
}

/// The 6-bit scale and min of group j (0..7) of a K-quant block.
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void dequantize_q4_K(const tllm_block_q4_K *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        const float dmin = half_to_float(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int group = 0; group < 8; group += 2) {
            uint8_t sc, m;
            scale_min_k4(group, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(group + 1, x[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
            q += 32;
        }
    }
}

static void dequantize_q5_K(const tllm_block_q5_K *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        const float dmin = half_to_float(x[i].dmin);
        const uint8_t *ql = x[i].qs;
        const uint8_t *qh = x[i].qh;
        uint8_t u1 = 1, u2 = 2;
        for (int group = 0; group < 8; group += 2) {
            uint8_t sc, m;
            scale_min_k4(group, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(group + 1, x[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            ql += 32;
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

static void dequantize_q6_K(const tllm_block_q6_K *x, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        const uint8_t *ql = x[i].ql;
        const uint8_t *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < TLLM_QK_K; n += 128) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = (d * (float)sc[is + 0]) * (float)q1;
                y[l + 32] = (d * (float)sc[is + 2]) * (float)q2;
                y[l + 64] = (d * (float)sc[is + 4]) * (float)q3;
                y[l + 96] = (d * (float)sc[is + 6]) * (float)q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

tllm_type_traits tllm_type_traits_of(int type) {
    switch (type) {
    case TLLM_TYPE_F32: return (tllm_type_traits){"F32", 1, 4};
    case TLLM_TYPE_F16: return (tllm_type_traits){"F16", 1, 2};
    case TLLM_TYPE_BF16: return (tllm_type_traits){"BF16", 1, 2};
    case TLLM_TYPE_Q4_0: return (tllm_type_traits){"Q4_0", TLLM_QK4_0, sizeof(tllm_block_q4_0)};
    case TLLM_TYPE_Q4_1: return (tllm_type_traits){"Q4_1", TLLM_QK4_1, sizeof(tllm_block_q4_1)};
    case TLLM_TYPE_Q5_0: return (tllm_type_traits){"Q5_0", TLLM_QK5_0, sizeof(tllm_block_q5_0)};
    case TLLM_TYPE_Q5_1: return (tllm_type_traits){"Q5_1", TLLM_QK5_1, sizeof(tllm_block_q5_1)};
    case TLLM_TYPE_Q8_0: return (tllm_type_traits){"Q8_0", TLLM_QK8_0, sizeof(tllm_block_q8_0)};
    case TLLM_TYPE_Q2_K: return (tllm_type_traits){"Q2_K", TLLM_QK_K, sizeof(tllm_block_q2_K)};
    case TLLM_TYPE_Q3_K: return (tllm_type_traits){"Q3_K", TLLM_QK_K, sizeof(tllm_block_q3_K)};
    case TLLM_TYPE_Q4_K: return (tllm_type_traits){"Q4_K", TLLM_QK_K, sizeof(tllm_block_q4_K)};
    case TLLM_TYPE_Q5_K: return (tllm_type_traits){"Q5_K", TLLM_QK_K, sizeof(tllm_block_q5_K)};
    case TLLM_TYPE_Q6_K: return (tllm_type_traits){"Q6_K", TLLM_QK_K, sizeof(tllm_block_q6_K)};
    case TLLM_TYPE_IQ4_NL: return (tllm_type_traits){"IQ4_NL", TLLM_QK4_NL, sizeof(tllm_block_iq4_nl)};
    case TLLM_TYPE_IQ4_XS: return (tllm_type_traits){"IQ4_XS", TLLM_QK_K, sizeof(tllm_block_iq4_xs)};
    default: return (tllm_type_traits){NULL, 0, 0};
    }
}

int tllm_dequantize_ref(int type, const void *src, float *dst, size_t n) {
    tllm_type_traits traits = tllm_type_traits_of(type);
    if (!traits.name || n % traits.block_size != 0) return -1;
    size_t nb = n / traits.block_size;
    switch (type) {
    case TLLM_TYPE_F32: memcpy(dst, src, n * sizeof(float)); return 0;
    case TLLM_TYPE_F16: tllm_f16_to_f32_ref((const uint16_t *)src, dst, n); return 0;
    case TLLM_TYPE_BF16: {
        const uint16_t *h = (const uint16_t *)src;
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)h[i] << 16;
            memcpy(&dst[i], &bits, 4);
        }
        return 0;
    }
    case TLLM_TYPE_Q4_0: dequantize_q4_0(src, dst, nb); return 0;
    case TLLM_TYPE_Q4_1: dequantize_q4_1(src, dst, nb); return 0;
    case TLLM_TYPE_Q5_0: dequantize_q5_0(src, dst, nb); return 0;
    case TLLM_TYPE_Q5_1: dequantize_q5_1(src, dst, nb); return 0;
    case TLLM_TYPE_Q8_0: dequantize_q8_0(src, dst, nb); return 0;
    case TLLM_TYPE_Q2_K: dequantize_q2_K(src, dst, nb); return 0;
    case TLLM_TYPE_Q3_K: dequantize_q3_K(src, dst, nb); return 0;
    case TLLM_TYPE_Q4_K: dequantize_q4_K(src, dst, nb); return 0;
    case TLLM_TYPE_Q5_K: dequantize_q5_K(src, dst, nb); return 0;
    case TLLM_TYPE_Q6_K: dequantize_q6_K(src, dst, nb); return 0;
    case TLLM_TYPE_IQ4_NL: dequantize_iq4_nl(src, dst, nb); return 0;
    case TLLM_TYPE_IQ4_XS: dequantize_iq4_xs(src, dst, nb); return 0;
    default: return -1;
    }
}

// MARK: - AVX2 dequantisation of the K-quants, bit-identical to the reference

#if defined(__x86_64__)

/// Q4_K (q5 = 0) or Q5_K blocks: the reference's operations (d·sc, then q times it minus dmin·m,
/// no fused multiply-add: this file is compiled without contraction) eight weights at a time.
__attribute__((target("avx2,f16c"))) static void dequantize_k4_avx2(const uint8_t *blocks, size_t block_bytes, int q5,
                                                                    float *y, size_t nb) {
    const __m128i low4 = _mm_set1_epi8(0x0F), five = _mm_set1_epi8(0x10);
    for (size_t i = 0; i < nb; i++, y += TLLM_QK_K) {
        const uint8_t *b = blocks + i * block_bytes, *scales = b + 4, *qh = b + 16, *qs = q5 ? b + 48 : b + 16;
        tllm_half halves[2];
        memcpy(halves, b, 4);
        const float d = half_to_float(halves[0]), dmin = half_to_float(halves[1]);
        for (int g = 0; g < 8; g++) {
            uint8_t sc, m;
            scale_min_k4(g, scales, &sc, &m);
            const __m256 dl = _mm256_set1_ps(d * (float)sc), ml = _mm256_set1_ps(dmin * (float)m);
            const __m128i bit = _mm_set1_epi8((char)(1 << g));
            for (int l = 0; l < 32; l += 8) {
                const __m128i raw = _mm_loadl_epi64((const __m128i *)(qs + 32 * (g / 2) + l));
                __m128i q = _mm_and_si128(g % 2 ? _mm_srli_epi16(raw, 4) : raw, low4);
                if (q5) {
                    const __m128i h = _mm_and_si128(_mm_loadl_epi64((const __m128i *)(qh + l)), bit);
                    q = _mm_add_epi8(q, _mm_and_si128(_mm_cmpeq_epi8(h, bit), five));
                }
                const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
                _mm256_storeu_ps(y + 32 * g + l, _mm256_sub_ps(_mm256_mul_ps(dl, v), ml));
            }
        }
    }
}

__attribute__((target("avx2,f16c"))) static void dequantize_q6_K_avx2(const tllm_block_q6_K *x, float *y, size_t nb) {
    const __m128i low4 = _mm_set1_epi8(0x0F), two = _mm_set1_epi8(0x03), offset = _mm_set1_epi8(32);
    for (size_t i = 0; i < nb; i++) {
        const float d = half_to_float(x[i].d);
        for (int n = 0; n < 2; n++, y += 128) {
            const uint8_t *ql = x[i].ql + 64 * n, *qh = x[i].qh + 32 * n;
            const int8_t *sc = x[i].scales + 8 * n;
            for (int l = 0; l < 32; l += 8) {
                const __m128i a = _mm_loadl_epi64((const __m128i *)(ql + l));
                const __m128i b = _mm_loadl_epi64((const __m128i *)(ql + 32 + l));
                const __m128i h = _mm_loadl_epi64((const __m128i *)(qh + l));
                const __m128i low[4] = {a, b, _mm_srli_epi16(a, 4), _mm_srli_epi16(b, 4)};
                for (int c = 0; c < 4; c++) {
                    const __m128i high = _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 2 * c), two), 4);
                    const __m128i q = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(low[c], low4), high), offset);
                    const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                    const __m256 dl = _mm256_set1_ps(d * (float)sc[l / 16 + 2 * c]);
                    _mm256_storeu_ps(y + 32 * c + l, _mm256_mul_ps(dl, v));
                }
            }
        }
    }
}

#endif

int tllm_dequantize(int type, const void *src, float *dst, size_t n) {
#if defined(__x86_64__)
    if ((tllm_active_features() & TLLM_CPU_AVX2_F16C) && n % TLLM_QK_K == 0) {
        switch (type) {
        case TLLM_TYPE_Q4_K: dequantize_k4_avx2(src, sizeof(tllm_block_q4_K), 0, dst, n / TLLM_QK_K); return 0;
        case TLLM_TYPE_Q5_K: dequantize_k4_avx2(src, sizeof(tllm_block_q5_K), 1, dst, n / TLLM_QK_K); return 0;
        case TLLM_TYPE_Q6_K: dequantize_q6_K_avx2(src, dst, n / TLLM_QK_K); return 0;
        default: break;
        }
    }
#endif
    return tllm_dequantize_ref(type, src, dst, n);
}
