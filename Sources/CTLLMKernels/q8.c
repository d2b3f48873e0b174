// 8-bit activation dot products for Q4_0, Q4_1, Q8_0 and the K-quants Q4_K, Q5_K, Q6_K.
// K-quant groups line up with the 32-value activation blocks (Q6_K's groups of 16 are halves
// of one), so every group is one integer dot product scaled by its weights' and activations'
// scales, like the 32-weight types.
#include "tllm_q8.h"
#include "tllm_quants.h"
#include "tllm_kernels.h"
#include "dispatch.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline float half_to_float(tllm_half h) {
    float f;
    tllm_f16_to_f32_ref(&h, &f, 1);
    return f;
}

static void quantize_activations_ref(const float *x, tllm_block_q8_act *out, size_t n) {
    for (size_t b = 0; b < n / 32; b++) {
        const float *v = x + b * 32;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
        const float d = amax / 127.0f;
        const float id = d > 0 ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < 32; i++) {
            int q = (int)lrintf(v[i] * id);
            out[b].qs[i] = (int8_t)q;
            sum += q;
        }
        out[b].d = d;
        out[b].s = d * (float)sum;
    }
}

#if defined(__x86_64__)
/// The same values as the reference: the maximum does not depend on order, and the conversion
/// rounds in the current mode, as lrintf does.
__attribute__((target("avx512f"))) static void quantize_activations_avx512(const float *x, tllm_block_q8_act *out,
                                                                            size_t n) {
    for (size_t b = 0; b < n / 32; b++) {
        const __m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127.0f;
        const __m512 id = _mm512_set1_ps(d > 0 ? 1.0f / d : 0.0f);
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
        _mm_storeu_si128((__m128i *)out[b].qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(out[b].qs + 16), _mm512_cvtepi32_epi8(q1));
        out[b].d = d;
        out[b].s = d * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}
#endif

void tllm_quantize_activations(const float *x, tllm_block_q8_act *out, size_t n) {
#if defined(__x86_64__)
    if (tllm_active_features() & TLLM_CPU_AVX512F) {
        quantize_activations_avx512(x, out, n);
        return;
    }
#endif
    quantize_activations_ref(x, out, n);
}

/// The residual x - d·q in steps of d/256, fused (one rounding) so every path gives the same
/// bytes; |x - d·q| ≤ d/2 puts it within ±128: the one end is clamped.
static void quantize_residual_ref(const float *x, const tllm_block_q8_act *hi, tllm_block_q8_act *out, size_t n) {
    for (size_t b = 0; b < n / 32; b++) {
        const float d = hi[b].d, id = d > 0 ? 256.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < 32; i++) {
            long q = lrintf(fmaf(-d, (float)hi[b].qs[i], x[b * 32 + i]) * id);
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            out[b].qs[i] = (int8_t)q;
            sum += (int)q;
        }
        out[b].d = d / 256.0f;
        out[b].s = out[b].d * (float)sum;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void quantize_residual_avx512(const float *x, const tllm_block_q8_act *hi,
                                                                            tllm_block_q8_act *out, size_t n) {
    const __m512i top = _mm512_set1_epi32(127), bottom = _mm512_set1_epi32(-127);
    for (size_t b = 0; b < n / 32; b++) {
        const float d = hi[b].d;
        const __m512 dv = _mm512_set1_ps(d), id = _mm512_set1_ps(d > 0 ? 256.0f / d : 0.0f);
        __m512i sum = _mm512_setzero_si512();
        for (int half = 0; half < 2; half++) {
            const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(hi[b].qs + 16 * half))));
            const __m512 r = _mm512_fnmadd_ps(dv, q, _mm512_loadu_ps(x + b * 32 + 16 * half));
            __m512i l = _mm512_cvtps_epi32(_mm512_mul_ps(r, id));
            l = _mm512_max_epi32(_mm512_min_epi32(l, top), bottom);
            _mm_storeu_si128((__m128i *)(out[b].qs + 16 * half), _mm512_cvtepi32_epi8(l));
            sum = _mm512_add_epi32(sum, l);
        }
        out[b].d = d / 256.0f;
        out[b].s = out[b].d * (float)_mm512_reduce_add_epi32(sum);
    }
}
#endif

void tllm_quantize_residual(const float *x, const tllm_block_q8_act *hi, tllm_block_q8_act *out, size_t n) {
#if defined(__x86_64__)
    if (tllm_active_features() & TLLM_CPU_AVX512F) {
        quantize_residual_avx512(x, hi, out, n);
        return;
    }
#endif
    quantize_residual_ref(x, hi, out, n);
}

tllm_block_q8_act *tllm_quantize_rows(const float *x, size_t x_stride, size_t batch, size_t cols, int planes) {
    size_t blocks = cols / 32;
    tllm_block_q8_act *xq = malloc((batch ? batch : 1) * (size_t)planes * blocks * sizeof(tllm_block_q8_act));
    if (xq)
        for (size_t b = 0; b < batch; b++) {
            tllm_block_q8_act *row = xq + b * (size_t)planes * blocks;
            tllm_quantize_activations(x + b * x_stride, row, cols);
            if (planes == 2) tllm_quantize_residual(x + b * x_stride, row, row + blocks, cols);
        }
    return xq;
}

int tllm_q8_supported(int type) {
    switch (type) {
    case TLLM_TYPE_Q4_0:
    case TLLM_TYPE_Q4_1:
    case TLLM_TYPE_Q5_0:
    case TLLM_TYPE_Q5_1:
    case TLLM_TYPE_Q8_0:
    case TLLM_TYPE_Q4_K:
    case TLLM_TYPE_Q5_K:
    case TLLM_TYPE_Q6_K: return 1;
    default: return 0;
    }
}

/// The 6-bit scale and min of group j (0..7) of a Q4_K / Q5_K block (as in quants.c).
static inline void k4_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/// The 12 scale bytes of a Q4_K / Q5_K block as 8 scales, then 8 mins, one byte each.
static inline void k4_scales_mins(const uint8_t *q, uint32_t out[4]) {
    uint32_t a, b, c;
    memcpy(&a, q, 4), memcpy(&b, q + 4, 4), memcpy(&c, q + 8, 4);
    out[0] = a & 0x3F3F3F3F;
    out[1] = (c & 0x0F0F0F0F) | ((a >> 6) & 0x03030303) << 4;
    out[2] = b & 0x3F3F3F3F;
    out[3] = ((c >> 4) & 0x0F0F0F0F) | ((b >> 6) & 0x03030303) << 4;
}

/// Weight l (0..31) of group g (0..7) of a Q4_K or Q5_K block (q5 selects the fifth bit).
static inline int k4_weight(const uint8_t *qs, const uint8_t *qh, int g, int l) {
    const int nibble = g % 2 ? qs[32 * (g / 2) + l] >> 4 : qs[32 * (g / 2) + l] & 0xF;
    return qh ? nibble | ((qh[l] >> g) & 1) << 4 : nibble;
}

/// Weight l (0..31) of the k-th 32 weights (0..7) of a Q6_K block, minus its offset 32.
static inline int q6_weight(const tllm_block_q6_K *w, int k, int l) {
    const uint8_t *ql = w->ql + 64 * (k / 4), *qh = w->qh + 32 * (k / 4);
    const int c = k % 4;
    const int low = (c % 2 ? ql[l + 32] : ql[l]) >> (c / 2 ? 4 : 0) & 0xF;
    return (low | ((qh[l] >> (2 * c)) & 3) << 4) - 32;
}

float tllm_vec_dot_q8_ref(int type, const void *row, const tllm_block_q8_act *x, size_t n) {
    double sum = 0;
    for (size_t b = 0; b < n / 32; b++) {
        int dot = 0;
        switch (type) {
        case TLLM_TYPE_Q4_0: {
            const tllm_block_q4_0 *w = (const tllm_block_q4_0 *)row + b;
            for (int j = 0; j < 16; j++) dot += ((w->qs[j] & 0xF) - 8) * x[b].qs[j] + ((w->qs[j] >> 4) - 8) * x[b].qs[j + 16];
            sum += (double)half_to_float(w->d) * x[b].d * dot;
            break;
        }
        case TLLM_TYPE_Q4_1: {
            const tllm_block_q4_1 *w = (const tllm_block_q4_1 *)row + b;
            for (int j = 0; j < 16; j++) dot += (w->qs[j] & 0xF) * x[b].qs[j] + (w->qs[j] >> 4) * x[b].qs[j + 16];
            sum += (double)half_to_float(w->d) * x[b].d * dot + (double)half_to_float(w->m) * x[b].s;
            break;
        }
        case TLLM_TYPE_Q5_0:
        case TLLM_TYPE_Q5_1: {
            // Q5_0: d·(q - 16)·x; Q5_1: d·q·x + m·Σx. q's fifth bit of weight i is bit i of qh.
            const int q5_1 = type == TLLM_TYPE_Q5_1;
            const uint8_t *w = (const uint8_t *)row + b * (q5_1 ? sizeof(tllm_block_q5_1) : sizeof(tllm_block_q5_0));
            const uint8_t *qh = w + (q5_1 ? 4 : 2), *qs = qh + 4;
            tllm_half h[2];
            memcpy(h, w, q5_1 ? 4 : 2);
            for (int j = 0; j < 32; j++) {
                const int q = (j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4) | ((qh[j / 8] >> (j % 8)) & 1) << 4;
                dot += (q5_1 ? q : q - 16) * x[b].qs[j];
            }
            sum += (double)half_to_float(h[0]) * x[b].d * dot + (q5_1 ? (double)half_to_float(h[1]) * x[b].s : 0);
            break;
        }
        case TLLM_TYPE_Q8_0: {
            const tllm_block_q8_0 *w = (const tllm_block_q8_0 *)row + b;
            for (int j = 0; j < 32; j++) dot += w->qs[j] * x[b].qs[j];
            sum += (double)half_to_float(w->d) * x[b].d * dot;
            break;
        }
        case TLLM_TYPE_Q4_K:
        case TLLM_TYPE_Q5_K: {
            // Block b is group b % 8 of super-block b / 8: d·sc·Σq·x - dmin·m·Σx.
            const int g = (int)(b % 8);
            const uint8_t *scales, *qs, *qh = NULL;
            tllm_half d, dmin;
            if (type == TLLM_TYPE_Q4_K) {
                const tllm_block_q4_K *w = (const tllm_block_q4_K *)row + b / 8;
                scales = w->scales, qs = w->qs, d = w->d, dmin = w->dmin;
            } else {
                const tllm_block_q5_K *w = (const tllm_block_q5_K *)row + b / 8;
                scales = w->scales, qs = w->qs, qh = w->qh, d = w->d, dmin = w->dmin;
            }
            int sc, m;
            k4_scale_min(g, scales, &sc, &m);
            for (int l = 0; l < 32; l++) dot += k4_weight(qs, qh, g, l) * x[b].qs[l];
            sum += (double)half_to_float(d) * sc * x[b].d * dot - (double)half_to_float(dmin) * m * x[b].s;
            break;
        }
        case TLLM_TYPE_Q6_K: {
            // Block b is weights 32k..32k+31 (k = b % 8) of super-block b / 8: two groups of 16.
            const tllm_block_q6_K *w = (const tllm_block_q6_K *)row + b / 8;
            const int k = (int)(b % 8);
            for (int h = 0; h < 2; h++) {
                int half = 0;
                for (int l = 16 * h; l < 16 * h + 16; l++) half += q6_weight(w, k, l) * x[b].qs[l];
                const int scale = w->scales[8 * (k / 4) + 2 * (k % 4) + h];
                sum += (double)half_to_float(w->d) * scale * x[b].d * half;
            }
            break;
        }
        default: return 0;
        }
    }
    return (float)sum;
}

#if defined(__x86_64__)

/// 32 nibbles of a Q4 block as bytes in weight order (low nibbles are weights 0..15).
__attribute__((target("avx2"))) static inline __m256i nibbles_to_bytes(const uint8_t *qs) {
    __m128i packed = _mm_loadu_si128((const __m128i *)qs);
    __m128i low = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
    __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F));
    return _mm256_set_m128i(high, low);
}

/// The 32 weights of a Q5 block as bytes 0..31: the nibbles, plus 16 where bit i of qh is set
/// (byte i of a broadcast of qh's byte i / 8, tested against bit i % 8).
__attribute__((target("avx2"))) static inline __m256i q5_to_bytes(const uint8_t *qh, const uint8_t *qs) {
    uint32_t bits;
    memcpy(&bits, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)bits),
        _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i mask = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask);
    return _mm256_or_si256(nibbles_to_bytes(qs), _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
}

/// Σ u[i] * s[i] over 32 bytes, unsigned × signed, with VNNI.
__attribute__((target("avx512f,avx512vl,avx512vnni"))) static inline __m256i dot_us_vnni(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

/// The same with AVX2: maddubs (u8 × s8 pairs to s16, saturating — fine for |q| ≤ 127 × 15 × 2)
/// then madd with ones.
__attribute__((target("avx2"))) static inline __m256i dot_us_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/// acc + Σ u[i] * s[i] per lane, as the two above compute it.
__attribute__((target("avx512f,avx512vl,avx512vnni"))) static inline __m256i dot_acc_vnni(__m256i acc, __m256i u,
                                                                                          __m256i s) {
    return _mm256_dpbusd_epi32(acc, u, s);
}

__attribute__((target("avx2"))) static inline __m256i dot_acc_avx2(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, dot_us_avx2(u, s));
}

#define DEFINE_Q8_DOTS(SUFFIX, TARGET, DOT)                                                                         \
    __attribute__((target(TARGET))) static float dot_q4_0_q8_##SUFFIX(const tllm_block_q4_0 *w,                    \
                                                                        const tllm_block_q8_act *x, size_t nb) {     \
        __m256 acc = _mm256_setzero_ps();                                                                           \
        for (size_t b = 0; b < nb; b++) {                                                                           \
            __m256i q = nibbles_to_bytes(w[b].qs);                                                                  \
            __m256i xs = _mm256_loadu_si256((const __m256i *)x[b].qs);                                              \
            /* (q - 8) · x = q · x - 8 Σx; Σx comes from the block's s / d. */                                       \
            __m256i dot = DOT(q, xs);                                                                               \
            float d = _cvtsh_ss(w[b].d);                                                                            \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * x[b].d), _mm256_cvtepi32_ps(dot), acc);                        \
            acc = _mm256_add_ps(acc, _mm256_setr_ps(-8.0f * d * x[b].s, 0, 0, 0, 0, 0, 0, 0));                      \
        }                                                                                                           \
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));                          \
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                                                     \
        s = _mm_add_ss(s, _mm_movehdup_ps(s));                                                                      \
        return _mm_cvtss_f32(s);                                                                                    \
    }                                                                                                               \
    __attribute__((target(TARGET))) static float dot_q4_1_q8_##SUFFIX(const tllm_block_q4_1 *w,                    \
                                                                        const tllm_block_q8_act *x, size_t nb) {     \
        __m256 acc = _mm256_setzero_ps();                                                                           \
        float offsets = 0;                                                                                          \
        for (size_t b = 0; b < nb; b++) {                                                                           \
            __m256i dot = DOT(nibbles_to_bytes(w[b].qs), _mm256_loadu_si256((const __m256i *)x[b].qs));             \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * x[b].d), _mm256_cvtepi32_ps(dot), acc);        \
            offsets += _cvtsh_ss(w[b].m) * x[b].s;                                                                  \
        }                                                                                                           \
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));                          \
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                                                     \
        s = _mm_add_ss(s, _mm_movehdup_ps(s));                                                                      \
        return _mm_cvtss_f32(s) + offsets;                                                                          \
    }                                                                                                               \
    /* Q5_0 (q5_1 = 0): d·(q - 16)·x, the offset through Σx = s / d; Q5_1: d·q·x + m·Σx. */                        \
    __attribute__((target(TARGET))) static float dot_q5_q8_##SUFFIX(const uint8_t *w, int q5_1,                     \
                                                                     const tllm_block_q8_act *x, size_t nb) {        \
        const size_t block = q5_1 ? sizeof(tllm_block_q5_1) : sizeof(tllm_block_q5_0);                              \
        __m256 acc = _mm256_setzero_ps();                                                                           \
        float offsets = 0;                                                                                          \
        for (size_t b = 0; b < nb; b++, w += block) {                                                               \
            const uint8_t *qh = w + (q5_1 ? 4 : 2);                                                                 \
            const float d = _cvtsh_ss(*(const uint16_t *)w);                                                        \
            __m256i dot = DOT(q5_to_bytes(qh, qh + 4), _mm256_loadu_si256((const __m256i *)x[b].qs));               \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * x[b].d), _mm256_cvtepi32_ps(dot), acc);                        \
            offsets += (q5_1 ? _cvtsh_ss(*(const uint16_t *)(w + 2)) : -16.0f * d) * x[b].s;                         \
        }                                                                                                           \
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));                          \
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                                                     \
        s = _mm_add_ss(s, _mm_movehdup_ps(s));                                                                      \
        return _mm_cvtss_f32(s) + offsets;                                                                          \
    }                                                                                                               \
    __attribute__((target(TARGET))) static float dot_q8_0_q8_##SUFFIX(const tllm_block_q8_0 *w,                    \
                                                                        const tllm_block_q8_act *x, size_t nb) {     \
        __m256 acc = _mm256_setzero_ps();                                                                           \
        for (size_t b = 0; b < nb; b++) {                                                                           \
            __m256i q = _mm256_loadu_si256((const __m256i *)w[b].qs);                                               \
            __m256i xs = _mm256_loadu_si256((const __m256i *)x[b].qs);                                              \
            /* signed × signed: |q| × (x with q's sign), unsigned × signed as the instruction wants. */               \
            __m256i dot = DOT(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xs, q));                                     \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * x[b].d), _mm256_cvtepi32_ps(dot), acc);        \
        }                                                                                                           \
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));                          \
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                                                     \
        s = _mm_add_ss(s, _mm_movehdup_ps(s));                                                                      \
        return _mm_cvtss_f32(s);                                                                                    \
    }

DEFINE_Q8_DOTS(vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", dot_us_vnni)
DEFINE_Q8_DOTS(avx2, "avx2,fma,f16c", dot_us_avx2)

/// Sum of the 8 lanes.
__attribute__((target("avx2"))) static inline float hsum_ps_256(__m256 acc) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// Lane k of the result: the sum of the 8 lanes of v[k].
__attribute__((target("avx2"))) static inline __m256i sums8_epi32(const __m256i v[8]) {
    // Per 128-bit half, two rounds of hadd leave v0..v3's partial sums in order.
    const __m256i ab = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i cd = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(ab, cd, 0x20), _mm256_permute2x128_si256(ab, cd, 0x31));
}

/// The integer dot product of 32 weights with 32 activations of `planes` planes, in the units of
/// the last plane: the residual plane's step is exactly the first's / 256, so (hi << 8) + lo is
/// exact in int32 and one conversion serves both (with VNNI, lo accumulates onto hi << 8).
#define K_PLANES_DOT(DOT_ACC, q, x, stride, planes)                                                                  \
    ((planes) == 2                                                                                                   \
         ? DOT_ACC(_mm256_slli_epi32(                                                                                \
                       DOT_ACC(_mm256_setzero_si256(), (q), _mm256_loadu_si256((const __m256i *)(x)->qs)), 8),      \
                   (q), _mm256_loadu_si256((const __m256i *)((x) + (stride))->qs))                                   \
         : DOT_ACC(_mm256_setzero_si256(), (q), _mm256_loadu_si256((const __m256i *)(x)->qs)))

/// K-quant rows against `planes` activation planes (`plane_stride` blocks apart; their products
/// add), `nsb` super-blocks of 256. Per super-block, each group's integer dot product stays in
/// int32 lanes; one horizontal tree gives the 8 group sums in one vector, scaled by the group
/// scales times the activation blocks' steps in one FMA. `side` holds, per activation block,
/// the step of the last plane, then (`plane_stride` floats on) Σx over the planes: computed
/// once per activation row (k_side), not per weight row.
/// Q4_K / Q5_K: each 32 bytes of qs are two groups (low nibbles, then high), group g's fifth bit
/// is bit g of qh, and the min term is dmin · Σ m_g · Σx_g. Q6_K: each 64 + 32 bytes of ql and qh
/// are four blocks of 32 (low nibbles of ql[0..31], of ql[32..63], high nibbles of each; 2 bits
/// of qh each) of two 16-weight groups each, one per 128-bit half of a dot product.
/// Bytes ahead of the current super-block that the K kernels prefetch (rows stream from memory).
#define K_PREFETCH 768

#define DEFINE_K_DOTS(SUFFIX, TARGET, DOT_ACC)                                                                          \
    __attribute__((target(TARGET), always_inline)) static inline float dot_k4_q8_##SUFFIX(                           \
        const uint8_t *w, size_t block_bytes, int q5, const tllm_block_q8_act *x, const float *side, size_t nsb,    \
        int planes, size_t plane_stride) {                                                                          \
        const __m256i low4 = _mm256_set1_epi8(0x0F), five = _mm256_set1_epi8(0x10);                                 \
        __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();                                            \
        for (size_t i = 0; i < nsb; i++, w += block_bytes) {                                                        \
            _mm_prefetch((const char *)w + K_PREFETCH, _MM_HINT_T0);                                                \
            _mm_prefetch((const char *)w + K_PREFETCH + 64, _MM_HINT_T0);                                           \
            _mm_prefetch((const char *)w + K_PREFETCH + 128, _MM_HINT_T0);                                          \
            /* Q4_K: d, dmin, scales, qs. Q5_K: d, dmin, scales, qh, qs. */                                         \
            const uint8_t *qh = w + 16, *qs = q5 ? w + 48 : w + 16;                                                 \
            const tllm_block_q8_act *xb = x + 8 * i;                                                                \
            uint32_t sm[4];                                                                                         \
            k4_scales_mins(w + 4, sm);                                                                              \
            const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)sm)));       \
            const __m256 mins = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(sm + 2)))); \
            const __m256i high = q5 ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();             \
            __m256i group[8];                                                                                       \
            for (int j = 0; j < 4; j++) {                                                                           \
                const __m256i packed = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));                          \
                __m256i lo = _mm256_and_si256(packed, low4);                                                        \
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);                                  \
                if (q5) {                                                                                           \
                    const __m256i bit_lo = _mm256_set1_epi8((char)(1 << (2 * j)));                                  \
                    const __m256i bit_hi = _mm256_set1_epi8((char)(2 << (2 * j)));                                  \
                    lo = _mm256_or_si256(                                                                           \
                        lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(high, bit_lo), bit_lo), five));     \
                    hi = _mm256_or_si256(                                                                           \
                        hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(high, bit_hi), bit_hi), five));     \
                }                                                                                                   \
                group[2 * j] = K_PLANES_DOT(DOT_ACC, lo, xb + 2 * j, plane_stride, planes);                              \
                group[2 * j + 1] = K_PLANES_DOT(DOT_ACC, hi, xb + 2 * j + 1, plane_stride, planes);                      \
            }                                                                                                       \
            const __m256 unit = _mm256_loadu_ps(side + 8 * i);                                                      \
            const __m256 sums = _mm256_loadu_ps(side + plane_stride + 8 * i);                                       \
            const __m256 d = _mm256_set1_ps(_cvtsh_ss(*(const uint16_t *)w));                                       \
            const __m256 dmin = _mm256_set1_ps(_cvtsh_ss(*(const uint16_t *)(w + 2)));                              \
            acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_mul_ps(sc, unit)), _mm256_cvtepi32_ps(sums8_epi32(group)),  \
                                  acc);                                                                             \
            acc_min = _mm256_fmadd_ps(_mm256_mul_ps(dmin, mins), sums, acc_min);                                     \
        }                                                                                                           \
        return hsum_ps_256(_mm256_sub_ps(acc, acc_min));                                                            \
    }                                                                                                               \
    __attribute__((target(TARGET))) static float dot_q4_K_q8_##SUFFIX(                                               \
        const void *w, const tllm_block_q8_act *x, const float *side, size_t nsb, int planes, size_t stride) {      \
        return planes == 2 ? dot_k4_q8_##SUFFIX(w, sizeof(tllm_block_q4_K), 0, x, side, nsb, 2, stride)              \
                           : dot_k4_q8_##SUFFIX(w, sizeof(tllm_block_q4_K), 0, x, side, nsb, 1, stride);            \
    }                                                                                                               \
    __attribute__((target(TARGET))) static float dot_q5_K_q8_##SUFFIX(                                               \
        const void *w, const tllm_block_q8_act *x, const float *side, size_t nsb, int planes, size_t stride) {      \
        return planes == 2 ? dot_k4_q8_##SUFFIX(w, sizeof(tllm_block_q5_K), 1, x, side, nsb, 2, stride)              \
                           : dot_k4_q8_##SUFFIX(w, sizeof(tllm_block_q5_K), 1, x, side, nsb, 1, stride);            \
    }                                                                                                               \
    __attribute__((target(TARGET), always_inline)) static inline float dot_q6_K_q8_planes_##SUFFIX(                  \
        const tllm_block_q6_K *w, const tllm_block_q8_act *x, const float *side, size_t nsb, int planes,            \
        size_t plane_stride) {                                                                                      \
        const __m256i low4 = _mm256_set1_epi8(0x0F), bits01 = _mm256_set1_epi8(0x03);                               \
        const __m256i bits23 = _mm256_set1_epi8(0x0C), bits45 = _mm256_set1_epi8(0x30);                             \
        /* Half-sums come out as [block 0..3 first halves | block 0..3 second halves]; scales as    */              \
        /* sc[2c + h] for block c, half h.                                                          */              \
        const __m256i scale_order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);                                      \
        const int32_t *offsets = (const int32_t *)(side + 2 * plane_stride);                                        \
        __m256 acc = _mm256_setzero_ps();                                                                           \
        for (size_t i = 0; i < nsb; i++) {                                                                          \
            for (int line = 0; line < 4; line++)                                                                    \
                _mm_prefetch((const char *)(w + i) + K_PREFETCH + 64 * line, _MM_HINT_T0);                          \
            const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[i].d));                                                     \
            for (int n = 0; n < 2; n++) {                                                                           \
                const __m256i a = _mm256_loadu_si256((const __m256i *)(w[i].ql + 64 * n));                          \
                const __m256i b = _mm256_loadu_si256((const __m256i *)(w[i].ql + 64 * n + 32));                     \
                const __m256i h = _mm256_loadu_si256((const __m256i *)(w[i].qh + 32 * n));                          \
                __m256i q[4];                                                                                       \
                q[0] = _mm256_or_si256(_mm256_and_si256(a, low4), _mm256_slli_epi16(_mm256_and_si256(h, bits01), 4)); \
                q[1] = _mm256_or_si256(_mm256_and_si256(b, low4), _mm256_slli_epi16(_mm256_and_si256(h, bits23), 2)); \
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), low4), _mm256_and_si256(h, bits45)); \
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), low4),                             \
                                       _mm256_and_si256(_mm256_srli_epi16(h, 2), bits45));                          \
                const tllm_block_q8_act *xb = x + 8 * i + 4 * n;                                                    \
                __m256i dot[4];                                                                                     \
                for (int c = 0; c < 4; c++) dot[c] = K_PLANES_DOT(DOT_ACC, q[c], xb + c, plane_stride, planes);           \
                /* (q - 32) · x = q · x - 32 · Σx, the second term per activation row, from k_side. */               \
                const __m256i halves = _mm256_sub_epi32(                                                           \
                    _mm256_hadd_epi32(_mm256_hadd_epi32(dot[0], dot[1]), _mm256_hadd_epi32(dot[2], dot[3])),      \
                    _mm256_loadu_si256((const __m256i *)(offsets + 16 * i + 8 * n)));                              \
                const __m256 sc = _mm256_cvtepi32_ps(_mm256_permutevar8x32_epi32(                                   \
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w[i].scales + 8 * n))), scale_order));   \
                const __m256 unit = _mm256_broadcast_ps((const __m128 *)(side + 8 * i + 4 * n));                     \
                acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_mul_ps(sc, unit)), _mm256_cvtepi32_ps(halves), acc);  \
            }                                                                                                       \
        }                                                                                                           \
        return hsum_ps_256(acc);                                                                                    \
    }                                                                                                               \
    __attribute__((target(TARGET))) static float dot_q6_K_q8_##SUFFIX(                                               \
        const void *w, const tllm_block_q8_act *x, const float *side, size_t nsb, int planes, size_t stride) {      \
        return planes == 2 ? dot_q6_K_q8_planes_##SUFFIX(w, x, side, nsb, 2, stride)                                 \
                           : dot_q6_K_q8_planes_##SUFFIX(w, x, side, nsb, 1, stride);                               \
    }

DEFINE_K_DOTS(vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", dot_acc_vnni)
DEFINE_K_DOTS(avx2, "avx2,fma,f16c", dot_acc_avx2)

/// Horizontal sums of four 8-lane accumulators, in order.
__attribute__((target("avx2"))) static inline __m128 hsum4_ps(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
    __m256 abcd = _mm256_hadd_ps(ab, cd);  // per 128-bit half: a, b, c, d partial sums
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/// Four rows against one activation vector at once: each activation block is loaded once, and
/// four independent accumulators hide the FMA latency that bounds a one-row loop (decode is
/// one activation row, so this is where single-sequence speed comes from).
#define DEFINE_Q8_DOTS4(SUFFIX, TARGET, DOT)                                                                         \
    /* Q4_0 and Q4_1 differ in block size and the offset term: -8·d·Σx, or m·Σx. Four named                          \
       accumulators: with an array and a loop over rows, -O2 may keep them in memory. */                             \
    __attribute__((target(TARGET), always_inline)) static inline void dot4_q4_q8_##SUFFIX(                           \
        int q4_1, const uint8_t *w, size_t row_bytes, const tllm_block_q8_act *x, size_t nb, float *out) {           \
        const size_t block = q4_1 ? sizeof(tllm_block_q4_1) : sizeof(tllm_block_q4_0), quants = q4_1 ? 4 : 2;        \
        const uint8_t *r0 = w, *r1 = w + row_bytes, *r2 = w + 2 * row_bytes, *r3 = w + 3 * row_bytes;                \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                                  \
        __m128 off = _mm_setzero_ps();                                                                               \
        for (size_t b = 0; b < nb; b++, r0 += block, r1 += block, r2 += block, r3 += block) {                        \
            __m256i xs = _mm256_loadu_si256((const __m256i *)x[b].qs);                                               \
            uint16_t h[8];                                                                                           \
            memcpy(&h[0], r0, 2), memcpy(&h[1], r1, 2), memcpy(&h[2], r2, 2), memcpy(&h[3], r3, 2);                  \
            __m128 d = _mm_cvtph_ps(_mm_setr_epi16(h[0], h[1], h[2], h[3], 0, 0, 0, 0));                             \
            __m128 dx = _mm_mul_ps(d, _mm_set1_ps(x[b].d));                                                          \
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(_mm_cvtss_f32(dx)),                                                  \
                                 _mm256_cvtepi32_ps(DOT(nibbles_to_bytes(r0 + quants), xs)), a0);                    \
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(_mm_cvtss_f32(_mm_shuffle_ps(dx, dx, 1))),                           \
                                 _mm256_cvtepi32_ps(DOT(nibbles_to_bytes(r1 + quants), xs)), a1);                    \
            a2 = _mm256_fmadd_ps(_mm256_set1_ps(_mm_cvtss_f32(_mm_shuffle_ps(dx, dx, 2))),                           \
                                 _mm256_cvtepi32_ps(DOT(nibbles_to_bytes(r2 + quants), xs)), a2);                    \
            a3 = _mm256_fmadd_ps(_mm256_set1_ps(_mm_cvtss_f32(_mm_shuffle_ps(dx, dx, 3))),                           \
                                 _mm256_cvtepi32_ps(DOT(nibbles_to_bytes(r3 + quants), xs)), a3);                    \
            if (q4_1) {                                                                                              \
                memcpy(&h[4], r0 + 2, 2), memcpy(&h[5], r1 + 2, 2), memcpy(&h[6], r2 + 2, 2), memcpy(&h[7], r3 + 2, 2);\
                __m128 m = _mm_cvtph_ps(_mm_setr_epi16(h[4], h[5], h[6], h[7], 0, 0, 0, 0));                         \
                off = _mm_fmadd_ps(m, _mm_set1_ps(x[b].s), off);                                                     \
            } else {                                                                                                 \
                off = _mm_fmadd_ps(d, _mm_set1_ps(-8.0f * x[b].s), off);                                             \
            }                                                                                                        \
        }                                                                                                            \
        _mm_storeu_ps(out, _mm_add_ps(hsum4_ps(a0, a1, a2, a3), off));                                               \
    }                                                                                                                \
    __attribute__((target(TARGET))) static void dot4_q4_0_q8_##SUFFIX(const uint8_t *w, size_t row_bytes,            \
                                                                        const tllm_block_q8_act *x, size_t nb,       \
                                                                        float *out) {                                \
        dot4_q4_q8_##SUFFIX(0, w, row_bytes, x, nb, out);                                                            \
    }                                                                                                                \
    __attribute__((target(TARGET))) static void dot4_q4_1_q8_##SUFFIX(const uint8_t *w, size_t row_bytes,            \
                                                                        const tllm_block_q8_act *x, size_t nb,       \
                                                                        float *out) {                                \
        dot4_q4_q8_##SUFFIX(1, w, row_bytes, x, nb, out);                                                            \
    }                                                                                                                \
    __attribute__((target(TARGET))) static void dot4_q8_0_q8_##SUFFIX(const uint8_t *w, size_t row_bytes,           \
                                                                        const tllm_block_q8_act *x, size_t nb,       \
                                                                        float *out) {                               \
        const tllm_block_q8_0 *r[4] = {(const void *)w, (const void *)(w + row_bytes),                             \
                                       (const void *)(w + 2 * row_bytes), (const void *)(w + 3 * row_bytes)};       \
        __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};         \
        for (size_t b = 0; b < nb; b++) {                                                                           \
            __m256i xs = _mm256_loadu_si256((const __m256i *)x[b].qs);                                              \
            __m128 d = _mm_mul_ps(_mm_cvtph_ps(_mm_setr_epi16(r[0][b].d, r[1][b].d, r[2][b].d, r[3][b].d, 0, 0, 0, 0)), \
                                  _mm_set1_ps(x[b].d));                                                             \
            float ds[4];                                                                                            \
            _mm_storeu_ps(ds, d);                                                                                   \
            for (int k = 0; k < 4; k++) {                                                                           \
                __m256i q = _mm256_loadu_si256((const __m256i *)r[k][b].qs);                                        \
                __m256i dot = DOT(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xs, q));                                 \
                a[k] = _mm256_fmadd_ps(_mm256_set1_ps(ds[k]), _mm256_cvtepi32_ps(dot), a[k]);                       \
            }                                                                                                       \
        }                                                                                                           \
        _mm_storeu_ps(out, hsum4_ps(a[0], a[1], a[2], a[3]));                                                       \
    }

DEFINE_Q8_DOTS4(vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", dot_us_vnni)
DEFINE_Q8_DOTS4(avx2, "avx2,fma,f16c", dot_us_avx2)

#endif  // __x86_64__

typedef void (*dot4_fn)(const uint8_t *w, size_t row_bytes, const tllm_block_q8_act *x, size_t nb, float *out);

/// The four-row kernel for this CPU and type, or NULL (then rows go one by one).
static dot4_fn dot4_for(int type) {
#if defined(__x86_64__)
    unsigned f = tllm_active_features();
    if (f & TLLM_CPU_AVX512VNNI) {
        switch (type) {
        case TLLM_TYPE_Q4_0: return dot4_q4_0_q8_vnni;
        case TLLM_TYPE_Q4_1: return dot4_q4_1_q8_vnni;
        case TLLM_TYPE_Q8_0: return dot4_q8_0_q8_vnni;
        default: return NULL;
        }
    }
    if (f & TLLM_CPU_AVX2_F16C) {
        switch (type) {
        case TLLM_TYPE_Q4_0: return dot4_q4_0_q8_avx2;
        case TLLM_TYPE_Q4_1: return dot4_q4_1_q8_avx2;
        case TLLM_TYPE_Q8_0: return dot4_q8_0_q8_avx2;
        default: return NULL;
        }
    }
#endif
    (void)type;
    return NULL;
}

typedef float (*planes_dot_fn)(const void *w, const tllm_block_q8_act *x, const float *side, size_t nsb, int planes,
                               size_t stride);

/// Floats of k_side per activation row of `blocks` blocks.
#define K_SIDE_FLOATS(blocks) (4 * (blocks))

/// What the K kernels read per activation block besides its bytes, for `blocks` blocks (a
/// multiple of 8) of `planes` planes: the last plane's step; then Σx over the planes; then, as
/// int32 in the last plane's units (first plane << 8, plus the second), 32 · Σq per 16 values,
/// per 4 blocks in the order of Q6_K's half-sums (the 4 blocks' first halves, then second).
static void k_side(const tllm_block_q8_act *x, size_t blocks, int planes, float *side) {
    const tllm_block_q8_act *last = x + (size_t)(planes - 1) * blocks;
    int32_t *offsets = (int32_t *)(side + 2 * blocks);
    for (size_t b = 0; b < blocks; b++) {
        side[b] = last[b].d;
        side[blocks + b] = planes == 2 ? x[b].s + last[b].s : x[b].s;
        for (int h = 0; h < 2; h++) {
            int32_t sum = 0;
            for (int l = 16 * h; l < 16 * h + 16; l++)
                sum += planes == 2 ? x[b].qs[l] * 256 + last[b].qs[l] : x[b].qs[l];
            offsets[8 * (b / 4) + 4 * h + b % 4] = 32 * sum;
        }
    }
}

/// The K-quant kernel for this CPU and type, or NULL (other types, or no SIMD path).
static planes_dot_fn k_dot_for(int type) {
#if defined(__x86_64__)
    unsigned f = tllm_active_features();
    if (f & TLLM_CPU_AVX512VNNI) {
        switch (type) {
        case TLLM_TYPE_Q4_K: return dot_q4_K_q8_vnni;
        case TLLM_TYPE_Q5_K: return dot_q5_K_q8_vnni;
        case TLLM_TYPE_Q6_K: return dot_q6_K_q8_vnni;
        default: return NULL;
        }
    }
    if (f & TLLM_CPU_AVX2_F16C) {
        switch (type) {
        case TLLM_TYPE_Q4_K: return dot_q4_K_q8_avx2;
        case TLLM_TYPE_Q5_K: return dot_q5_K_q8_avx2;
        case TLLM_TYPE_Q6_K: return dot_q6_K_q8_avx2;
        default: return NULL;
        }
    }
#endif
    (void)type;
    return NULL;
}

static int is_k_quant(int type) {
    return type == TLLM_TYPE_Q4_K || type == TLLM_TYPE_Q5_K || type == TLLM_TYPE_Q6_K;
}

/// One plane against a row of a 32-weight type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), on this CPU's best
/// path.
static float dot32_q8(int type, const void *row, const tllm_block_q8_act *x, size_t nb) {
#if defined(__x86_64__)
    unsigned f = tllm_active_features();
    if (f & TLLM_CPU_AVX512VNNI) {
        switch (type) {
        case TLLM_TYPE_Q4_0: return dot_q4_0_q8_vnni(row, x, nb);
        case TLLM_TYPE_Q4_1: return dot_q4_1_q8_vnni(row, x, nb);
        case TLLM_TYPE_Q5_0: return dot_q5_q8_vnni(row, 0, x, nb);
        case TLLM_TYPE_Q5_1: return dot_q5_q8_vnni(row, 1, x, nb);
        case TLLM_TYPE_Q8_0: return dot_q8_0_q8_vnni(row, x, nb);
        default: break;
        }
    }
    if (f & TLLM_CPU_AVX2_F16C) {
        switch (type) {
        case TLLM_TYPE_Q4_0: return dot_q4_0_q8_avx2(row, x, nb);
        case TLLM_TYPE_Q4_1: return dot_q4_1_q8_avx2(row, x, nb);
        case TLLM_TYPE_Q5_0: return dot_q5_q8_avx2(row, 0, x, nb);
        case TLLM_TYPE_Q5_1: return dot_q5_q8_avx2(row, 1, x, nb);
        case TLLM_TYPE_Q8_0: return dot_q8_0_q8_avx2(row, x, nb);
        default: break;
        }
    }
#endif
    return tllm_vec_dot_q8_ref(type, row, x, nb * 32);
}

float tllm_vec_dot_q8(int type, const void *row, const tllm_block_q8_act *x, size_t n) {
    return tllm_vec_dot_q8_planes(type, row, x, n, 1);
}

float tllm_vec_dot_q8_planes(int type, const void *row, const tllm_block_q8_act *x, size_t n, int planes) {
    const size_t nb = n / 32;
    if (is_k_quant(type)) {
        planes_dot_fn k_dot = k_dot_for(type);
        float *side = k_dot ? malloc(K_SIDE_FLOATS(nb) * sizeof(float)) : NULL;
        if (side) {
            k_side(x, nb, planes, side);
            const float sum = k_dot(row, x, side, n / TLLM_QK_K, planes, nb);
            free(side);
            return sum;
        }
    }
    float sum = 0;
    for (int p = 0; p < planes; p++) sum += dot32_q8(type, row, x + (size_t)p * nb, nb);
    return sum;
}

typedef struct {
    int type;
    const uint8_t *w;
    size_t row_bytes, rows, cols;
    const tllm_block_q8_act *xq;
    size_t batch;
    int planes;
    float *y;
    size_t y_stride;
    dot4_fn dot4;
    planes_dot_fn k_dot;  // with `side`: k_side of each activation row, K_SIDE_FLOATS(blocks) apart
    const float *side;
} q8_job;

static void q8_task(void *raw, int index, int count) {
    const q8_job *job = raw;
    size_t start, end;
    tllm_row_range(job->rows, index, count, &start, &end);
    const size_t blocks = job->cols / 32, x_row = blocks * (size_t)job->planes;
    if (job->dot4) {
        for (; start + 4 <= end; start += 4) {
            const uint8_t *rows = job->w + start * job->row_bytes;
            for (size_t b = 0; b < job->batch; b++) {
                float sum[4] = {0, 0, 0, 0};
                for (int p = 0; p < job->planes; p++) {
                    float out[4];
                    job->dot4(rows, job->row_bytes, job->xq + b * x_row + p * blocks, blocks, out);
                    for (int k = 0; k < 4; k++) sum[k] += out[k];
                }
                for (int k = 0; k < 4; k++) job->y[b * job->y_stride + start + k] = sum[k];
            }
        }
    }
    for (size_t r = start; r < end; r++) {
        const void *row = job->w + r * job->row_bytes;
        for (size_t b = 0; b < job->batch; b++)
            job->y[b * job->y_stride + r] =
                job->k_dot ? job->k_dot(row, job->xq + b * x_row, job->side + b * K_SIDE_FLOATS(blocks), job->cols / TLLM_QK_K,
                                        job->planes, blocks)
                           : tllm_vec_dot_q8_planes(job->type, row, job->xq + b * x_row, job->cols, job->planes);
    }
}

int tllm_matmul_rows_q8(tllm_pool *pool, int type, const void *w, size_t row_bytes, size_t rows, size_t cols,
                        const float *x, size_t x_stride, size_t batch, int planes, float *y, size_t y_stride) {
    const tllm_type_traits traits = tllm_type_traits_of(type);
    if (!tllm_q8_supported(type) || cols % traits.block_size != 0 || cols % 32 != 0 || (planes != 1 && planes != 2))
        return -1;
    tllm_block_q8_act *xq = tllm_quantize_rows(x, x_stride, batch, cols, planes);
    if (!xq) return -1;
    const size_t blocks = cols / 32;
    planes_dot_fn k_dot = is_k_quant(type) ? k_dot_for(type) : NULL;
    float *side = k_dot ? malloc(batch * K_SIDE_FLOATS(blocks) * sizeof(float)) : NULL;
    if (k_dot && !side) {
        free(xq);
        return -1;
    }
    for (size_t b = 0; side && b < batch; b++)
        k_side(xq + b * blocks * (size_t)planes, blocks, planes, side + b * K_SIDE_FLOATS(blocks));
    q8_job job = {type, w, row_bytes, rows, cols, xq, batch, planes, y, y_stride, dot4_for(type), k_dot, side};
    tllm_pool_run(pool, q8_task, &job);
    free(side);
    free(xq);
    return 0;
}
