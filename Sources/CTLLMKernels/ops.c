// Norm, rotary embedding, activation and attention kernels of a decoder layer.
#include "tllm_ops.h"
#include "tllm_quants.h"
#include "dispatch.h"
#include "tllm_kernels.h"
#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

void tllm_rms_norm_ref(const float *x, const float *weight, float *out, size_t rows, size_t n, float eps) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double sum = 0;
        for (size_t i = 0; i < n; i++) sum += (double)xr[i] * xr[i];
        float scale = (float)(1.0 / sqrt(sum / (double)n + eps));
        for (size_t i = 0; i < n; i++) out[r * n + i] = xr[i] * scale * weight[i];
    }
}

void tllm_rms_norm(const float *x, const float *weight, float *out, size_t rows, size_t n, float eps) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float sum = 0;
        for (size_t i = 0; i < n; i++) sum += xr[i] * xr[i];
        float scale = 1.0f / sqrtf(sum / (float)n + eps);
        float *o = out + r * n;
        for (size_t i = 0; i < n; i++) o[i] = xr[i] * scale * weight[i];
    }
}

void tllm_rope(float *x, size_t heads, size_t head_dim, int position, float theta_base, const float *freq_factors, int neox) {
    const size_t half = head_dim / 2;
    for (size_t i = 0; i < half; i++) {
        // theta_i = position * base^(-2i/d), computed in double so long contexts keep precision.
        double frequency = pow((double)theta_base, -2.0 * (double)i / (double)head_dim);
        if (freq_factors) frequency /= freq_factors[i];
        double angle = (double)position * frequency;
        float c = (float)cos(angle), s = (float)sin(angle);
        for (size_t h = 0; h < heads; h++) {
            float *head = x + h * head_dim;
            size_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float x0 = head[a], x1 = head[b];
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static inline __m512 exp512(__m512 x);

/// 16 at a time with exp512, whose range reduction holds for positive arguments too (up to
/// 88, past which e^x is +inf in float32 and silu is 0 either way).
__attribute__((target("avx512f"))) static size_t silu_mul_avx512(const float *gate, const float *up, float *out,
                                                                  size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 g = _mm512_loadu_ps(gate + i);
        __m512 e = exp512(_mm512_min_ps(_mm512_sub_ps(_mm512_setzero_ps(), g), _mm512_set1_ps(88.0f)));
        __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(silu, _mm512_loadu_ps(up + i)));
    }
    return i;
}
#endif

void tllm_silu_mul_ref(const float *gate, const float *up, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void tllm_silu_mul(const float *gate, const float *up, float *out, size_t n) {
    size_t done = 0;
#if defined(__x86_64__)
    if (tllm_active_features() & TLLM_CPU_AVX512F) done = silu_mul_avx512(gate, up, out, n);
#endif
    tllm_silu_mul_ref(gate + done, up + done, out + done, n - done);
}

void tllm_log_softmax(float *x, size_t n) {
    float max = -INFINITY;
    for (size_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += exp((double)(x[i] - max));
    float log_sum = (float)log(sum) + max;
    for (size_t i = 0; i < n; i++) x[i] -= log_sum;
}

// MARK: - Softmax exponentials

#if defined(__x86_64__)
/// e^x for 16 lanes: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial, then
/// scaled by 2^n; within ~2 ulp of expf over the softmax range (x <= 0), 0 below -87.
__attribute__((target("avx512f"))) static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f"))) static float exp_shift_sum_avx512(float *x, size_t n, float shift) {
    __m512 sum = _mm512_setzero_ps();
    const __m512 s = _mm512_set1_ps(shift);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), s));
        _mm512_storeu_ps(x + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (i < n) {
        __mmask16 mask = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), s));
        _mm512_mask_storeu_ps(x + i, mask, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(mask, e));
    }
    return _mm512_reduce_add_ps(sum);
}
#endif

float tllm_exp_shift_sum(float *x, size_t n, float shift) {
#if defined(__x86_64__)
    if (tllm_active_features() & TLLM_CPU_AVX512F) return exp_shift_sum_avx512(x, n, shift);
#endif
    float sum = 0;
    for (size_t i = 0; i < n; i++) sum += (x[i] = expf(x[i] - shift));
    return sum;
}

// MARK: - Attention

typedef struct {
    const float *q;
    const tllm_kv_view *kv;
    float *out;
    size_t rows, start, heads, kv_heads, head_dim;
    float scale;
} attention_job;

/// Address of position t's row in a paged view (keys or values base).
static inline const uint8_t *kv_row(const tllm_kv_view *kv, const void *base, size_t t) {
    return (const uint8_t *)base + (size_t)kv->pages[t / kv->page_tokens] * kv->page_stride +
           (t % kv->page_tokens) * kv->row_stride;
}

// Tiled attention (flash-attention's online softmax, on the CPU): a work item is a block of up
// to ATTENTION_ROWS query rows × a group of query heads that share one KV head. The cache is
// walked in tiles of ATTENTION_TILE positions; each tile's keys and values are read (and, for
// a float16 cache, converted) once for every query of the block, while it is hot in L1, instead
// of once per (row, head). A running maximum and denominator per query rescale the partial
// output when a later tile raises the maximum, so no score row of the whole context is kept.
enum { ATTENTION_TILE = 32, ATTENTION_ROWS = 8 };

/// Per-thread scratch for one work item.
typedef struct {
    float *keys, *values;  // ATTENTION_TILE × head_dim each: a float16 cache's tile as float32
    float *scores;         // ATTENTION_TILE
    float *max, *sum;      // one per query
    float *acc;            // queries × head_dim
} attention_scratch;

/// Rows of positions [t0, t0 + n) of one KV head as float32: a float32 cache's rows in place,
/// a float16 cache's converted into `tile`.
static void load_tile(const tllm_kv_view *kv, const void *base, size_t t0, size_t n, size_t head_offset, size_t d,
                      float *tile, const float **rows) {
    for (size_t t = 0; t < n; t++) {
        const uint8_t *raw = kv_row(kv, base, t0 + t) + head_offset;
        if (kv->type == TLLM_TYPE_F16) {
            tllm_f16_to_f32((const uint16_t *)raw, tile + t * d, d);
            rows[t] = tile + t * d;
        } else {
            rows[t] = (const float *)raw;
        }
    }
}

/// One query against `count` positions of a tile: scores q·k·scale, the online softmax's
/// running max and sum, and acc = acc·correction + Σ p·v.
typedef void (*query_tile_fn)(const float *q, const float *const *keys, const float *const *values, size_t count,
                              size_t d, float scale, float *scores, float *max, float *sum, float *acc);

static void attend_generic(const float *q, const float *const *keys, const float *const *values, size_t count,
                           size_t d, float scale, float *scores, float *max, float *sum, float *acc) {
    float tile_max = -INFINITY;
    for (size_t t = 0; t < count; t++) {
        const float score = tllm_vec_dot(TLLM_TYPE_F32, keys[t], q, d) * scale;
        scores[t] = score;
        if (score > tile_max) tile_max = score;
    }
    const float new_max = tile_max > *max ? tile_max : *max;
    const float correction = expf(*max - new_max);  // 0 on the first tile
    const float tile_sum = tllm_exp_shift_sum(scores, count, new_max);
    *sum = *sum * correction + tile_sum;
    *max = new_max;
    if (correction != 1.0f)
        for (size_t i = 0; i < d; i++) acc[i] *= correction;
    for (size_t t = 0; t < count; t++) {
        const float p = scores[t];
        const float *v = values[t];
        for (size_t i = 0; i < d; i++) acc[i] += p * v[i];
    }
}

#if defined(__x86_64__)
/// The 16 horizontal sums of a[0..15], in order, in one vector: pairs of vectors are folded
/// halves against halves four times (8 + 4 + 2 + 1 adds) and a permutation restores the order.
__attribute__((target("avx512f"))) static inline __m512 sums16(__m512 a[16]) {
    __m512 b[8], c[4], e[2];
    for (int i = 0; i < 8; i++)  // 256-bit halves: lanes 0-7 partial sums of a[2i], 8-15 of a[2i+1]
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xee));
    for (int i = 0; i < 4; i++)  // 128-bit lanes: a[4i], a[4i+1], a[4i+2], a[4i+3]
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xdd));
    for (int i = 0; i < 2; i++)  // lane L: two partials of a[8i+L] (c[2i]) and of a[8i+4+L] (c[2i+1])
        e[i] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0xee));
    // lane L: a[L], a[4+L], a[8+L], a[12+L]
    __m512 f = _mm512_add_ps(_mm512_shuffle_ps(e[0], e[1], 0x88), _mm512_shuffle_ps(e[0], e[1], 0xdd));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, f);
}

/// For head dimensions that are whole vectors (16 | d, d ≤ 256): scores of 16 positions at a
/// time with one accumulator each and one horizontal fold for all 16; the output accumulated
/// in registers, chunk by chunk, over four positions at a time.
__attribute__((target("avx512f"))) static void attend_avx512(const float *q, const float *const *keys,
                                                              const float *const *values, size_t count, size_t d,
                                                              float scale, float *scores, float *max, float *sum,
                                                              float *acc) {
    static const float zeros[256];
    const size_t chunks = d / 16;
    __m512 tile_max = _mm512_set1_ps(-INFINITY);
    for (size_t t0 = 0; t0 < count; t0 += 16) {
        const size_t n = count - t0 < 16 ? count - t0 : 16;
        const float *k[16];
        for (size_t t = 0; t < 16; t++) k[t] = t < n ? keys[t0 + t] : zeros;
        __m512 dots[16];
        for (int t = 0; t < 16; t++) dots[t] = _mm512_setzero_ps();
        for (size_t c = 0; c < chunks; c++) {
            const __m512 qc = _mm512_loadu_ps(q + c * 16);
            for (int t = 0; t < 16; t++) dots[t] = _mm512_fmadd_ps(_mm512_loadu_ps(k[t] + c * 16), qc, dots[t]);
        }
        const __mmask16 valid = (__mmask16)((1u << n) - 1);
        const __m512 s = _mm512_mul_ps(sums16(dots), _mm512_set1_ps(scale));
        _mm512_mask_storeu_ps(scores + t0, valid, s);
        tile_max = _mm512_mask_max_ps(tile_max, valid, tile_max, s);
    }
    const float top = _mm512_reduce_max_ps(tile_max);
    const float new_max = top > *max ? top : *max;
    const float correction = expf(*max - new_max);  // 0 on the first tile
    const float tile_sum = tllm_exp_shift_sum(scores, count, new_max);
    *sum = *sum * correction + tile_sum;
    *max = new_max;
    const __m512 scaled = _mm512_set1_ps(correction);
    for (size_t c = 0; c < chunks; c++) {
        __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(acc + c * 16), scaled);
        __m512 a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        size_t t = 0;
        for (; t + 4 <= count; t += 4) {
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t]), _mm512_loadu_ps(values[t] + c * 16), a0);
            a1 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t + 1]), _mm512_loadu_ps(values[t + 1] + c * 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t + 2]), _mm512_loadu_ps(values[t + 2] + c * 16), a2);
            a3 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t + 3]), _mm512_loadu_ps(values[t + 3] + c * 16), a3);
        }
        for (; t < count; t++)
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t]), _mm512_loadu_ps(values[t] + c * 16), a0);
        _mm512_storeu_ps(acc + c * 16, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}
#endif

/// The query-tile routine for this thread's paths and head dimension.
static query_tile_fn query_tile_for(size_t d) {
#if defined(__x86_64__)
    if ((tllm_active_features() & TLLM_CPU_AVX512F) && d % 16 == 0 && d <= 256) return attend_avx512;
#endif
    (void)d;
    return attend_generic;
}

/// Rows [row0, row0 + nrows) × heads [head0, head0 + nheads), all on KV head head0 / group,
/// over cache positions [from, to) (to = SIZE_MAX: all the block can see). With `partial`, the
/// unnormalised result goes there instead of `out`: max and sum per query, then the outputs.
static void attend_block(const attention_job *job, size_t row0, size_t nrows, size_t head0, size_t nheads,
                         size_t from, size_t to, const attention_scratch *w, float *partial) {
    const tllm_kv_view *kv = job->kv;
    const size_t d = job->head_dim;
    const size_t group = job->heads / job->kv_heads;
    const size_t element = kv->type == TLLM_TYPE_F16 ? 2 : 4;
    const size_t head_offset = (head0 / group) * d * element;
    const size_t queries = nrows * nheads;
    const query_tile_fn attend = query_tile_for(d);
    for (size_t i = 0; i < queries; i++) {
        w->max[i] = -INFINITY;
        w->sum[i] = 0;
    }
    memset(w->acc, 0, queries * d * sizeof(float));
    // The block's last row sees the most: positions [0, start + row0 + nrows).
    size_t end = job->start + row0 + nrows;
    if (to < end) end = to;
    for (size_t t0 = from; t0 < end; t0 += ATTENTION_TILE) {
        const size_t n = end - t0 < ATTENTION_TILE ? end - t0 : ATTENTION_TILE;
        const float *keys[ATTENTION_TILE], *values[ATTENTION_TILE];
        load_tile(kv, kv->keys, t0, n, head_offset, d, w->keys, keys);
        load_tile(kv, kv->values, t0, n, head_offset, d, w->values, values);
        for (size_t r = 0; r < nrows; r++) {
            const size_t visible = job->start + row0 + r + 1;  // causal: positions [0, visible)
            if (visible <= t0) continue;
            const size_t count = visible - t0 < n ? visible - t0 : n;
            for (size_t h = 0; h < nheads; h++) {
                const size_t qi = r * nheads + h;
                const float *q = job->q + (row0 + r) * job->heads * d + (head0 + h) * d;
                attend(q, keys, values, count, d, job->scale, w->scores, &w->max[qi], &w->sum[qi], w->acc + qi * d);
            }
        }
    }
    if (partial) {
        memcpy(partial, w->max, queries * sizeof(float));
        memcpy(partial + queries, w->sum, queries * sizeof(float));
        memcpy(partial + 2 * queries, w->acc, queries * d * sizeof(float));
        return;
    }
    for (size_t r = 0; r < nrows; r++) {
        for (size_t h = 0; h < nheads; h++) {
            const size_t qi = r * nheads + h;
            const float inverse = 1.0f / w->sum[qi];
            float *out = job->out + (row0 + r) * job->heads * d + (head0 + h) * d;
            for (size_t i = 0; i < d; i++) out[i] = w->acc[qi * d + i] * inverse;
        }
    }
}

/// Query heads per work item: the whole group sharing a KV head when that still leaves every
/// thread two items, else one head (decode of a model with few KV heads on several threads).
static size_t heads_per_item(const attention_job *job, int threads) {
    const size_t group = job->heads / job->kv_heads;
    const size_t blocks = (job->rows + ATTENTION_ROWS - 1) / ATTENTION_ROWS;
    for (size_t hg = group; hg > 1; hg--)
        if (group % hg == 0 && blocks * job->kv_heads * (group / hg) >= 2 * (size_t)threads) return hg;
    return 1;
}

static attention_scratch scratch_for(float *memory, size_t d, size_t queries) {
    attention_scratch w = {memory, memory + ATTENTION_TILE * d, memory + 2 * ATTENTION_TILE * d, NULL, NULL, NULL};
    w.max = w.scores + ATTENTION_TILE;
    w.sum = w.max + queries;
    w.acc = w.sum + queries;
    return w;
}

static float *scratch_memory(size_t d, size_t queries) {
    float *memory = malloc((2 * ATTENTION_TILE * d + ATTENTION_TILE + 2 * queries + queries * d) * sizeof(float));
    if (!memory) abort();
    return memory;
}

static void attention_task(void *raw, int index, int count) {
    const attention_job *job = raw;
    const size_t d = job->head_dim;
    const size_t hg = heads_per_item(job, count);
    const size_t per_row = job->heads / hg;
    const size_t blocks = (job->rows + ATTENTION_ROWS - 1) / ATTENTION_ROWS;
    float *memory = scratch_memory(d, ATTENTION_ROWS * hg);
    const attention_scratch w = scratch_for(memory, d, ATTENTION_ROWS * hg);
    for (size_t item = (size_t)index; item < blocks * per_row; item += (size_t)count) {
        const size_t block = item / per_row, head0 = (item % per_row) * hg;
        const size_t row0 = block * ATTENTION_ROWS;
        const size_t nrows = job->rows - row0 < ATTENTION_ROWS ? job->rows - row0 : ATTENTION_ROWS;
        attend_block(job, row0, nrows, head0, hg, 0, SIZE_MAX, &w, NULL);
    }
    free(memory);
}

// Decode deep in the cache (flash-decoding): one query row has too few (KV head) items to keep
// every thread busy, and splitting its heads re-reads the cache per head. Instead the cache is
// cut into position ranges: an item is one KV head's whole group of query heads over one range,
// leaving a partial (max, sum, unnormalised output) per head; the ranges are combined after.
typedef struct {
    const attention_job *job;
    size_t chunks, chunk_positions;
    float *partials;  // per item: group maxima, group sums, group × head_dim outputs
} split_job;

static void split_task(void *raw, int index, int count) {
    const split_job *split = raw;
    const attention_job *job = split->job;
    const size_t group = job->heads / job->kv_heads, d = job->head_dim;
    const size_t items = job->kv_heads * split->chunks, stride = group * (2 + d);
    float *memory = scratch_memory(d, group);
    const attention_scratch w = scratch_for(memory, d, group);
    for (size_t item = (size_t)index; item < items; item += (size_t)count) {
        const size_t kvh = item / split->chunks, chunk = item % split->chunks;
        const size_t from = chunk * split->chunk_positions, to = from + split->chunk_positions;
        attend_block(job, 0, 1, kvh * group, group, from, to, &w, split->partials + item * stride);
    }
    free(memory);
}

static void attention_split(tllm_pool *pool, const attention_job *job, size_t chunks) {
    const size_t group = job->heads / job->kv_heads, d = job->head_dim, visible = job->start + 1;
    const size_t tiles = (visible + ATTENTION_TILE - 1) / ATTENTION_TILE;
    const size_t stride = group * (2 + d);
    split_job split = {job, chunks, ((tiles + chunks - 1) / chunks) * ATTENTION_TILE, NULL};
    split.partials = malloc(job->kv_heads * chunks * stride * sizeof(float));
    if (!split.partials) abort();
    tllm_pool_run(pool, split_task, &split);
    for (size_t kvh = 0; kvh < job->kv_heads; kvh++) {
        for (size_t h = 0; h < group; h++) {
            const float *first = split.partials + kvh * chunks * stride;
            float top = -INFINITY;
            for (size_t c = 0; c < chunks; c++) top = fmaxf(top, first[c * stride + h]);
            float total = 0;
            float *out = job->out + (kvh * group + h) * d;
            memset(out, 0, d * sizeof(float));
            for (size_t c = 0; c < chunks; c++) {
                const float *part = first + c * stride;
                if (part[group + h] == 0) continue;  // a range past this row's last position
                const float weight = expf(part[h] - top);
                total += part[group + h] * weight;
                const float *acc = part + 2 * group + h * d;
                for (size_t i = 0; i < d; i++) out[i] += acc[i] * weight;
            }
            for (size_t i = 0; i < d; i++) out[i] /= total;
        }
    }
    free(split.partials);
}

void tllm_attention(tllm_pool *pool, const float *q, const tllm_kv_view *kv, float *out, size_t rows, size_t start,
                    size_t heads, size_t kv_heads, size_t head_dim, float scale) {
    attention_job job = {q, kv, out, rows, start, heads, kv_heads, head_dim, scale};
    // One row: enough position ranges for two items per thread, each at least two tiles long.
    const size_t threads = (size_t)tllm_pool_threads(pool);
    const size_t tiles = (start + 1 + ATTENTION_TILE - 1) / ATTENTION_TILE;
    size_t chunks = (2 * threads + kv_heads - 1) / kv_heads;
    if (chunks > tiles / 2) chunks = tiles / 2;
    if (rows == 1 && chunks > 1) {
        attention_split(pool, &job, chunks);
        return;
    }
    tllm_pool_run(pool, attention_task, &job);
}

void tllm_attention_ref(const float *q, const float *k, const float *v, float *out, size_t rows, size_t start,
                        size_t heads, size_t kv_heads, size_t head_dim, size_t kv_stride, float scale) {
    size_t group = heads / kv_heads;
    double *scores = malloc((start + rows) * sizeof(double));
    for (size_t r = 0; r < rows; r++) {
        for (size_t h = 0; h < heads; h++) {
            const float *qh = q + r * heads * head_dim + h * head_dim;
            size_t visible = start + r + 1, kvh = h / group;
            double max = -INFINITY, sum = 0;
            for (size_t t = 0; t < visible; t++) {
                double dot = 0;
                for (size_t i = 0; i < head_dim; i++) dot += (double)qh[i] * k[t * kv_stride + kvh * head_dim + i];
                scores[t] = dot * scale;
                if (scores[t] > max) max = scores[t];
            }
            for (size_t t = 0; t < visible; t++) sum += (scores[t] = exp(scores[t] - max));
            for (size_t i = 0; i < head_dim; i++) {
                double acc = 0;
                for (size_t t = 0; t < visible; t++) acc += scores[t] / sum * v[t * kv_stride + kvh * head_dim + i];
                out[r * heads * head_dim + h * head_dim + i] = (float)acc;
            }
        }
    }
    free(scores);
}

int tllm_dequantize_rows(int type, const void *w, size_t row_bytes, size_t cols, size_t row_start, size_t row_count,
                         float *out) {
    for (size_t r = 0; r < row_count; r++) {
        if (tllm_dequantize(type, (const uint8_t *)w + (row_start + r) * row_bytes, out + r * cols, cols) != 0)
            return -1;
    }
    return 0;
}
