// The 8-bit path on weights repacked into groups of 16 rows (see docs/packed-weights.md).
//
// Per group and block: the 16 rows' scales (d, then m for Q4_1), then their quant bytes
// interleaved 4 at a time: chunk k holds bytes 4k..4k+3 of row 0, of row 1, … of row 15.
// One 64-byte load then gives four weights of each of the 16 rows, and a dot-product
// instruction against four activation bytes broadcast to every lane leaves each row's sum in
// its own 32-bit lane: no horizontal sums, one scale vector per block, one memory stream.
#include "tllm_q8.h"
#include "tllm_quants.h"
#include "tllm_ops.h"
#include "tllm_kernels.h"
#include "dispatch.h"
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

enum { GROUP = TLLM_Q8_PACK_ROWS };

/// Bytes ahead of the block in use that the kernels prefetch: one core's hardware prefetchers
/// alone keep a single stream at about half the bandwidth it can read (Benchmarks/kernels
/// builds with 0 and with this; 2–8 KiB ahead all did better than none).
#ifndef TLLM_PREFETCH_AHEAD
#define TLLM_PREFETCH_AHEAD 4096
#endif

#if defined(__x86_64__)
static inline void prefetch_block(const uint8_t *block, size_t bytes) {
    for (size_t line = 0; TLLM_PREFETCH_AHEAD && line < bytes; line += 64) _mm_prefetch((const char *)block + TLLM_PREFETCH_AHEAD + line, _MM_HINT_T0);
}
#endif

/// Where a block's parts are: bytes of one row's block, of the scales, and the quant offset.
typedef struct {
    size_t block_bytes;  // one row's block (18, 20 or 34)
    size_t scale_bytes;  // bytes before the quants in a row's block (2 or 4)
    size_t quant_bytes;  // quant bytes of one row's block (16 or 32)
} packed_shape;

static int shape_of(int type, packed_shape *s) {
    switch (type) {
    case TLLM_TYPE_Q4_0: *s = (packed_shape){18, 2, 16}; return 0;
    case TLLM_TYPE_Q4_1: *s = (packed_shape){20, 4, 16}; return 0;
    case TLLM_TYPE_Q8_0: *s = (packed_shape){34, 2, 32}; return 0;
    default: return -1;
    }
}

int tllm_q8_packable(int type, size_t rows, size_t cols) {
    packed_shape s;
    return shape_of(type, &s) == 0 && rows % GROUP == 0 && cols % 32 == 0 && rows > 0 && cols > 0;
}

/// Moves one row's block between the row layout (`row`) and its lane of a packed group block.
static void move_block(const packed_shape *s, uint8_t *group_block, int lane, uint8_t *row, int to_packed) {
    // Scales: the 16 rows' d values, then (Q4_1) their m values.
    for (size_t h = 0; h < s->scale_bytes / 2; h++) {
        uint8_t *packed = group_block + h * 2 * GROUP + lane * 2;
        if (to_packed) memcpy(packed, row + h * 2, 2);
        else memcpy(row + h * 2, packed, 2);
    }
    uint8_t *quants = group_block + s->scale_bytes * GROUP;
    for (size_t k = 0; k < s->quant_bytes / 4; k++) {
        uint8_t *packed = quants + k * 4 * GROUP + lane * 4;
        if (to_packed) memcpy(packed, row + s->scale_bytes + k * 4, 4);
        else memcpy(row + s->scale_bytes + k * 4, packed, 4);
    }
}

typedef struct {
    packed_shape shape;
    const uint8_t *w;
    size_t row_bytes, groups, blocks;
    uint8_t *out;
} pack_job;

static void pack_task(void *raw, int index, int count) {
    const pack_job *job = raw;
    size_t start, end;
    tllm_row_range(job->groups, index, count, &start, &end);
    size_t group_bytes = GROUP * job->row_bytes;
    for (size_t g = start; g < end; g++)
        for (int lane = 0; lane < GROUP; lane++) {
            uint8_t *row = (uint8_t *)job->w + (g * GROUP + lane) * job->row_bytes;
            for (size_t b = 0; b < job->blocks; b++)
                move_block(&job->shape, job->out + g * group_bytes + b * GROUP * job->shape.block_bytes, lane,
                           row + b * job->shape.block_bytes, 1);
        }
}

int tllm_q8_pack(tllm_pool *pool, int type, const void *w, size_t row_bytes, size_t rows, size_t cols, void *out) {
    packed_shape s;
    if (!tllm_q8_packable(type, rows, cols) || shape_of(type, &s) != 0 || row_bytes != cols / 32 * s.block_bytes)
        return -1;
    pack_job job = {s, w, row_bytes, rows / GROUP, cols / 32, out};
    tllm_pool_run(pool, pack_task, &job);
    return 0;
}

/// Row `row` of packed weights back in the row layout (`row_bytes` bytes at `out`).
static void unpack_row(const packed_shape *s, const uint8_t *packed, size_t blocks, size_t row, uint8_t *out) {
    const uint8_t *group = packed + row / GROUP * GROUP * blocks * s->block_bytes;
    for (size_t b = 0; b < blocks; b++)
        move_block(s, (uint8_t *)group + b * GROUP * s->block_bytes, (int)(row % GROUP), out + b * s->block_bytes, 0);
}

int tllm_dequantize_packed(int type, const void *packed, size_t cols, size_t row_start, size_t row_count,
                           float *out) {
    packed_shape s;
    if (shape_of(type, &s) != 0 || cols % 32 != 0) return -1;
    size_t blocks = cols / 32, row_bytes = blocks * s.block_bytes;
    uint8_t *row = malloc(row_bytes);
    if (!row) return -1;
    for (size_t r = 0; r < row_count; r++) {
        unpack_row(&s, packed, blocks, row_start + r, row);
        tllm_dequantize_rows(type, row, row_bytes, cols, 0, 1, out + r * cols);
    }
    free(row);
    return 0;
}

/// Products of one group (16 rows) with `nx` (1..4) activation rows of `planes` (1 or 2)
/// planes each, x[i * planes + p]: out[i * 16 + lane]. Two planes add in integers per block,
/// hi · 256 + lo (the lo plane's scale is hi's / 256), so they cost one conversion and scale.
typedef void (*group_fn)(const uint8_t *group, size_t blocks, const tllm_block_q8_act *const *x, int nx, int planes,
                         float *out);

/// Portable reference: each row unpacked and multiplied by the scalar integer dot, plane by plane.
static void group_ref(int type, int planes, const uint8_t *group, size_t blocks, const tllm_block_q8_act *const *x,
                      int nx, float *out) {
    packed_shape s;
    shape_of(type, &s);
    uint8_t row[34 * 512];
    for (int lane = 0; lane < GROUP; lane++)
        for (size_t done = 0; done < blocks; done += 512) {
            size_t n = blocks - done < 512 ? blocks - done : 512;
            for (size_t b = 0; b < n; b++)
                move_block(&s, (uint8_t *)group + (done + b) * GROUP * s.block_bytes, lane, row + b * s.block_bytes, 0);
            for (int i = 0; i < nx; i++) {
                float part = 0;
                for (int p = 0; p < planes; p++) part += tllm_vec_dot_q8_ref(type, row, x[i * planes + p] + done, n * 32);
                out[i * GROUP + lane] = done == 0 ? part : out[i * GROUP + lane] + part;
            }
        }
}

// One function per (path, type), with the plane count a constant in each branch, so the type
// and plane tests fold away inside the hot loop; ATTRIBUTES holds the path's target attribute
// (empty for the reference and NEON).
#define DEFINE_GROUP(PATH, ATTRIBUTES, NAME, TYPE)                                                                  \
    ATTRIBUTES static void group_##PATH##_##NAME(const uint8_t *group, size_t blocks,                                \
                                                 const tllm_block_q8_act *const *x, int nx, int planes, float *out) { \
        if (planes == 2) group_##PATH(TYPE, 2, group, blocks, x, nx, out);                                           \
        else group_##PATH(TYPE, 1, group, blocks, x, nx, out);                                                       \
    }

/// Per block and activation row: the scale and Σ-term of its planes together. With two planes
/// the integer dot is hi · 256 + lo, in units of the lo plane's scale.
typedef struct {
    float d, s;
} plane_scale;

static inline plane_scale planes_scale(const tllm_block_q8_act *const *x, int i, int planes, size_t b) {
    const tllm_block_q8_act *hi = &x[i * planes][b];
    if (planes == 1) return (plane_scale){hi->d, hi->s};
    const tllm_block_q8_act *lo = &x[i * planes + 1][b];
    return (plane_scale){lo->d, hi->s + lo->s};
}

#if defined(__x86_64__)

#define VNNI_TARGET "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
#define AVX2_TARGET "avx2,fma,f16c"

static inline int32_t four_bytes(const int8_t *q) {
    int32_t v;
    memcpy(&v, q, 4);
    return v;
}

/// AVX512-VNNI, all 16 rows in one register. Q4: each chunk's low nibbles are weights 4k..4k+3,
/// its high nibbles weights 16+4k..; Q8_0: weights XOR 0x80 are unsigned (w + 128), and the
/// 128·Σx that adds is taken off with the offset term, as Q4_0's 8·Σx is.
__attribute__((target(VNNI_TARGET))) static inline void group_vnni(int type, int planes, const uint8_t *group,
                                                                   size_t blocks, const tllm_block_q8_act *const *x,
                                                                   int nx, float *out) {
    const size_t stride = GROUP * (type == TLLM_TYPE_Q4_1 ? 20 : type == TLLM_TYPE_Q8_0 ? 34 : 18);
    const __m512i nibble = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8((char)0x80);
    __m512 acc[4], off[4];
    for (int i = 0; i < 4; i++) acc[i] = off[i] = _mm512_setzero_ps();
    for (size_t b = 0; b < blocks; b++) {
        const uint8_t *block = group + b * stride;
        prefetch_block(block, stride);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)block));
        if (type == TLLM_TYPE_Q8_0) {
            const uint8_t *q = block + 32;
            __m512i w[8];
            for (int k = 0; k < 8; k++) w[k] = _mm512_xor_si512(_mm512_loadu_si512(q + 64 * k), flip);
            for (int i = 0; i < nx; i++) {
                __m512i dot = _mm512_setzero_si512();
                for (int p = 0; p < planes; p++) {
                    const int8_t *xq = x[i * planes + p][b].qs;
                    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
                    for (int k = 0; k < 8; k += 2) {
                        s0 = _mm512_dpbusd_epi32(s0, w[k], _mm512_set1_epi32(four_bytes(xq + 4 * k)));
                        s1 = _mm512_dpbusd_epi32(s1, w[k + 1], _mm512_set1_epi32(four_bytes(xq + 4 * k + 4)));
                    }
                    dot = _mm512_add_epi32(_mm512_slli_epi32(dot, 8), _mm512_add_epi32(s0, s1));
                }
                const plane_scale a = planes_scale(x, i, planes, b);
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, _mm512_set1_ps(a.d)), acc[i]);
                off[i] = _mm512_fmadd_ps(d, _mm512_set1_ps(-128.0f * a.s), off[i]);
            }
            continue;
        }
        const int q4_1 = type == TLLM_TYPE_Q4_1;
        const __m512 m = q4_1 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(block + 32))) : d;
        const uint8_t *q = block + (q4_1 ? 64 : 32);
        __m512i lo[4], hi[4];
        for (int k = 0; k < 4; k++) {
            __m512i packed = _mm512_loadu_si512(q + 64 * k);
            lo[k] = _mm512_and_si512(packed, nibble);
            hi[k] = _mm512_and_si512(_mm512_srli_epi16(packed, 4), nibble);
        }
        for (int i = 0; i < nx; i++) {
            __m512i dot = _mm512_setzero_si512();
            for (int p = 0; p < planes; p++) {
                const int8_t *xq = x[i * planes + p][b].qs;
                __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
                for (int k = 0; k < 4; k++) {
                    s0 = _mm512_dpbusd_epi32(s0, lo[k], _mm512_set1_epi32(four_bytes(xq + 4 * k)));
                    s1 = _mm512_dpbusd_epi32(s1, hi[k], _mm512_set1_epi32(four_bytes(xq + 16 + 4 * k)));
                }
                dot = _mm512_add_epi32(_mm512_slli_epi32(dot, 8), _mm512_add_epi32(s0, s1));
            }
            const plane_scale a = planes_scale(x, i, planes, b);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, _mm512_set1_ps(a.d)), acc[i]);
            // Q4_0: (q - 8)·x = q·x - 8·Σx; Q4_1: + m·Σx.
            off[i] = _mm512_fmadd_ps(m, _mm512_set1_ps(q4_1 ? a.s : -8.0f * a.s), off[i]);
        }
    }
    for (int i = 0; i < nx; i++) _mm512_storeu_ps(out + i * GROUP, _mm512_add_ps(acc[i], off[i]));
}

/// AVX2: the group as two halves of 8 rows (bytes 0..31 and 32..63 of each chunk), with
/// maddubs + madd for the dot; Q8_0 takes |w| and x with w's sign (maddubs saturates on w + 128).
__attribute__((target(AVX2_TARGET))) static inline void group_avx2(int type, int planes, const uint8_t *group,
                                                                   size_t blocks, const tllm_block_q8_act *const *x,
                                                                   int nx, float *out) {
    const size_t stride = GROUP * (type == TLLM_TYPE_Q4_1 ? 20 : type == TLLM_TYPE_Q8_0 ? 34 : 18);
    const __m256i nibble = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const int q4_1 = type == TLLM_TYPE_Q4_1, q8 = type == TLLM_TYPE_Q8_0;
    for (int half = 0; half < 2; half++) {
        __m256 acc[4], off[4];
        for (int i = 0; i < 4; i++) acc[i] = off[i] = _mm256_setzero_ps();
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *block = group + b * stride;
            if (half == 0) prefetch_block(block, stride);
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(block + 16 * half)));
            const __m256 m = q4_1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(block + 32 + 16 * half))) : d;
            const uint8_t *q = block + (q4_1 ? 64 : 32) + 32 * half;
            __m256i w[8];
            if (q8) {
                for (int k = 0; k < 8; k++) w[k] = _mm256_loadu_si256((const __m256i *)(q + 64 * k));
            } else {
                for (int k = 0; k < 4; k++) {
                    __m256i packed = _mm256_loadu_si256((const __m256i *)(q + 64 * k));
                    w[k] = _mm256_and_si256(packed, nibble);
                    w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
                }
            }
            for (int i = 0; i < nx; i++) {
                __m256i dot = _mm256_setzero_si256();
                for (int p = 0; p < planes; p++) {
                    const int8_t *xq = x[i * planes + p][b].qs;
                    __m256i sum = _mm256_setzero_si256();
                    for (int k = 0; k < 8; k++) {
                        // Q4: w[k] for k < 4 are weights 4k.., w[k + 4] weights 16 + 4k..; Q8_0: 4k...
                        const int8_t *xs = q8 ? xq + 4 * k : (k < 4 ? xq + 4 * k : xq + 16 + 4 * (k - 4));
                        __m256i xv = _mm256_set1_epi32(four_bytes(xs));
                        __m256i u = q8 ? _mm256_sign_epi8(w[k], w[k]) : w[k];
                        __m256i s = q8 ? _mm256_sign_epi8(xv, w[k]) : xv;
                        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones));
                    }
                    dot = _mm256_add_epi32(_mm256_slli_epi32(dot, 8), sum);
                }
                const plane_scale a = planes_scale(x, i, planes, b);
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(d, _mm256_set1_ps(a.d)), acc[i]);
                if (!q8) off[i] = _mm256_fmadd_ps(m, _mm256_set1_ps(q4_1 ? a.s : -8.0f * a.s), off[i]);
            }
        }
        for (int i = 0; i < nx; i++) _mm256_storeu_ps(out + i * GROUP + 8 * half, _mm256_add_ps(acc[i], off[i]));
    }
}

DEFINE_GROUP(vnni, __attribute__((target(VNNI_TARGET))), q4_0, TLLM_TYPE_Q4_0)
DEFINE_GROUP(vnni, __attribute__((target(VNNI_TARGET))), q4_1, TLLM_TYPE_Q4_1)
DEFINE_GROUP(vnni, __attribute__((target(VNNI_TARGET))), q8_0, TLLM_TYPE_Q8_0)
DEFINE_GROUP(avx2, __attribute__((target(AVX2_TARGET))), q4_0, TLLM_TYPE_Q4_0)
DEFINE_GROUP(avx2, __attribute__((target(AVX2_TARGET))), q4_1, TLLM_TYPE_Q4_1)
DEFINE_GROUP(avx2, __attribute__((target(AVX2_TARGET))), q8_0, TLLM_TYPE_Q8_0)

#endif  // __x86_64__

#if defined(__aarch64__)

/// Lane r += Σ_j w[4r + j]·x[4r + j]: `sdot` where the core has it (Armv8.2 dotprod), else
/// widening multiplies and two pairwise adds (products fit in 16 bits: |w| ≤ 128, |x| ≤ 127).
static inline int32x4_t dot_lanes(int32x4_t acc, int8x16_t w, int8x16_t x) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, w, x);
#else
    int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    int32x4_t hi = vpaddlq_s16(vmull_s8(vget_high_s8(w), vget_high_s8(x)));
    return vaddq_s32(acc, vpaddq_s32(lo, hi));
#endif
}

static inline int8x16_t broadcast4(const int8_t *q) {
    int32_t v;
    memcpy(&v, q, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

/// NEON: the group as four quarters of 4 rows (16 bytes of each 64-byte chunk). Q8_0 weights are
/// signed already, so no offset; Q4 nibbles (0..15) are taken as signed bytes.
static inline void group_neon(int type, int planes, const uint8_t *group, size_t blocks,
                              const tllm_block_q8_act *const *x, int nx, float *out) {
    const size_t stride = GROUP * (type == TLLM_TYPE_Q4_1 ? 20 : type == TLLM_TYPE_Q8_0 ? 34 : 18);
    const int q4_1 = type == TLLM_TYPE_Q4_1, q8 = type == TLLM_TYPE_Q8_0;
    for (int quarter = 0; quarter < 4; quarter++) {
        float32x4_t acc[4];
        for (int i = 0; i < 4; i++) acc[i] = vdupq_n_f32(0);
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *block = group + b * stride;
            const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)block + 4 * quarter)));
            const float32x4_t m =
                q4_1 ? vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)(block + 32) + 4 * quarter))) : d;
            const uint8_t *q = block + (q4_1 ? 64 : 32) + 16 * quarter;
            int8x16_t w[8];
            if (q8) {
                for (int k = 0; k < 8; k++) w[k] = vld1q_s8((const int8_t *)q + 64 * k);
            } else {
                for (int k = 0; k < 4; k++) {
                    uint8x16_t packed = vld1q_u8(q + 64 * k);
                    w[k] = vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0F)));
                    w[k + 4] = vreinterpretq_s8_u8(vshrq_n_u8(packed, 4));
                }
            }
            for (int i = 0; i < nx; i++) {
                int32x4_t dot = vdupq_n_s32(0);
                for (int p = 0; p < planes; p++) {
                    const int8_t *xq = x[i * planes + p][b].qs;
                    int32x4_t sum = vdupq_n_s32(0);
                    for (int k = 0; k < 8; k++)
                        sum = dot_lanes(sum, w[k], broadcast4(q8 || k < 4 ? xq + 4 * k : xq + 16 + 4 * (k - 4)));
                    dot = vaddq_s32(vshlq_n_s32(dot, 8), sum);
                }
                const plane_scale a = planes_scale(x, i, planes, b);
                float32x4_t scaled = vmulq_n_f32(vcvtq_f32_s32(dot), a.d);
                if (!q8 && !q4_1) scaled = vsubq_f32(scaled, vdupq_n_f32(8.0f * a.s));
                acc[i] = vfmaq_f32(acc[i], d, scaled);
                if (q4_1) acc[i] = vfmaq_n_f32(acc[i], m, a.s);
            }
        }
        for (int i = 0; i < nx; i++) vst1q_f32(out + i * GROUP + 4 * quarter, acc[i]);
    }
}

DEFINE_GROUP(neon, , q4_0, TLLM_TYPE_Q4_0)
DEFINE_GROUP(neon, , q4_1, TLLM_TYPE_Q4_1)
DEFINE_GROUP(neon, , q8_0, TLLM_TYPE_Q8_0)

#endif  // __aarch64__

DEFINE_GROUP(ref, , q4_0, TLLM_TYPE_Q4_0)
DEFINE_GROUP(ref, , q4_1, TLLM_TYPE_Q4_1)
DEFINE_GROUP(ref, , q8_0, TLLM_TYPE_Q8_0)

static group_fn group_for(int type) {
    int index = type == TLLM_TYPE_Q4_0 ? 0 : type == TLLM_TYPE_Q4_1 ? 1 : 2;
#if defined(__x86_64__)
    unsigned f = tllm_active_features();
    static const group_fn vnni[3] = {group_vnni_q4_0, group_vnni_q4_1, group_vnni_q8_0};
    static const group_fn avx2[3] = {group_avx2_q4_0, group_avx2_q4_1, group_avx2_q8_0};
    if (f & TLLM_CPU_AVX512VNNI) return vnni[index];
    if (f & TLLM_CPU_AVX2_F16C) return avx2[index];
#elif defined(__aarch64__)
    static const group_fn neon[3] = {group_neon_q4_0, group_neon_q4_1, group_neon_q8_0};
    if (tllm_active_features() & TLLM_CPU_NEON) return neon[index];
#endif
    static const group_fn ref[3] = {group_ref_q4_0, group_ref_q4_1, group_ref_q8_0};
    return ref[index];
}

typedef struct {
    group_fn kernel;
    const uint8_t *packed;
    size_t group_bytes, groups, blocks;
    const tllm_block_q8_act *xq;  // per activation row, `planes` rows of blocks
    size_t batch;
    int planes;
    float *y;
    size_t y_stride;
} packed_job;

static void packed_task(void *raw, int index, int count) {
    const packed_job *job = raw;
    size_t start, end;
    tllm_row_range(job->groups, index, count, &start, &end);
    for (size_t g = start; g < end; g++) {
        // Up to four activation rows per pass share each unpacked weight chunk.
        for (size_t i0 = 0; i0 < job->batch; i0 += 4) {
            int nx = job->batch - i0 < 4 ? (int)(job->batch - i0) : 4;
            const tllm_block_q8_act *x[8];
            for (int i = 0; i < nx * job->planes; i++)
                x[i] = job->xq + (i0 * (size_t)job->planes + (size_t)i) * job->blocks;
            float out[4 * GROUP];
            job->kernel(job->packed + g * job->group_bytes, job->blocks, x, nx, job->planes, out);
            for (int i = 0; i < nx; i++)
                memcpy(job->y + (i0 + i) * job->y_stride + g * GROUP, out + i * GROUP, GROUP * sizeof(float));
        }
    }
}

int tllm_matmul_packed_q8(tllm_pool *pool, int type, const void *packed, size_t rows, size_t cols, const float *x,
                          size_t x_stride, size_t batch, int planes, float *y, size_t y_stride) {
    packed_shape s;
    if (!tllm_q8_packable(type, rows, cols) || shape_of(type, &s) != 0 || (planes != 1 && planes != 2)) return -1;
    size_t blocks = cols / 32;
    tllm_block_q8_act *xq = tllm_quantize_rows(x, x_stride, batch, cols, planes);
    if (!xq) return -1;
    packed_job job = {group_for(type), packed, GROUP * blocks * s.block_bytes, rows / GROUP, blocks, xq,
                      batch, planes, y, y_stride};
    tllm_pool_run(pool, packed_task, &job);
    free(xq);
    return 0;
}
