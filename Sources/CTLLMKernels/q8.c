// 8-bit activation dot products for Q4_0, Q4_1 and Q8_0 weights.
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
    return type == TLLM_TYPE_Q4_0 || type == TLLM_TYPE_Q4_1 || type == TLLM_TYPE_Q8_0;
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
        case TLLM_TYPE_Q8_0: {
            const tllm_block_q8_0 *w = (const tllm_block_q8_0 *)row + b;
            for (int j = 0; j < 32; j++) dot += w->qs[j] * x[b].qs[j];
            sum += (double)half_to_float(w->d) * x[b].d * dot;
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

__attribute__((target("avx2"))) static inline float hsum_i32_256(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return (float)_mm_cvtsi128_si32(s);
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

float tllm_vec_dot_q8(int type, const void *row, const tllm_block_q8_act *x, size_t n) {
#if defined(__x86_64__)
    unsigned f = tllm_active_features();
    size_t nb = n / 32;
    if (f & TLLM_CPU_AVX512VNNI) {
        switch (type) {
        case TLLM_TYPE_Q4_0: return dot_q4_0_q8_vnni(row, x, nb);
        case TLLM_TYPE_Q4_1: return dot_q4_1_q8_vnni(row, x, nb);
        case TLLM_TYPE_Q8_0: return dot_q8_0_q8_vnni(row, x, nb);
        default: break;
        }
    }
    if (f & TLLM_CPU_AVX2_F16C) {
        switch (type) {
        case TLLM_TYPE_Q4_0: return dot_q4_0_q8_avx2(row, x, nb);
        case TLLM_TYPE_Q4_1: return dot_q4_1_q8_avx2(row, x, nb);
        case TLLM_TYPE_Q8_0: return dot_q8_0_q8_avx2(row, x, nb);
        default: break;
        }
    }
#endif
    return tllm_vec_dot_q8_ref(type, row, x, n);
}

typedef struct {
    int type;
    const uint8_t *w;
    size_t row_bytes, rows, cols;
    const tllm_block_q8_act *xq;
    size_t batch;
    float *y;
    size_t y_stride;
    dot4_fn dot4;
} q8_job;

static void q8_task(void *raw, int index, int count) {
    const q8_job *job = raw;
    size_t start, end;
    tllm_row_range(job->rows, index, count, &start, &end);
    size_t blocks = job->cols / 32;
    if (job->dot4) {
        for (; start + 4 <= end; start += 4) {
            const uint8_t *rows = job->w + start * job->row_bytes;
            for (size_t b = 0; b < job->batch; b++) {
                float out[4];
                job->dot4(rows, job->row_bytes, job->xq + b * blocks, blocks, out);
                for (int k = 0; k < 4; k++) job->y[b * job->y_stride + start + k] = out[k];
            }
        }
    }
    for (size_t r = start; r < end; r++) {
        const void *row = job->w + r * job->row_bytes;
        for (size_t b = 0; b < job->batch; b++)
            job->y[b * job->y_stride + r] = tllm_vec_dot_q8(job->type, row, job->xq + b * blocks, job->cols);
    }
}

int tllm_matmul_rows_q8(tllm_pool *pool, int type, const void *w, size_t row_bytes, size_t rows, size_t cols,
                        const float *x, size_t x_stride, size_t batch, float *y, size_t y_stride) {
    if (!tllm_q8_supported(type) || cols % 32 != 0) return -1;
    tllm_block_q8_act *xq = tllm_quantize_rows(x, x_stride, batch, cols, 1);
    if (!xq) return -1;
    q8_job job = {type, w, row_bytes, rows, cols, xq, batch, y, y_stride, dot4_for(type)};
    tllm_pool_run(pool, q8_task, &job);
    free(xq);
    return 0;
}
