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

void tllm_silu_mul(const float *gate, const float *up, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
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

/// One (row, head): scores over the visible cache, softmax, weighted sum of values.
/// Scores live in a per-thread buffer of `start + rows` floats.
static void attend_one(const attention_job *job, size_t row, size_t head, float *scores) {
    const tllm_kv_view *kv = job->kv;
    const size_t d = job->head_dim;
    const size_t group = job->heads / job->kv_heads;
    const size_t element = kv->type == TLLM_TYPE_F16 ? 2 : 4;
    const size_t head_offset = (head / group) * d * element;
    const float *q = job->q + row * job->heads * d + head * d;
    const size_t visible = job->start + row + 1;
    float max = -INFINITY;
    for (size_t t = 0; t < visible; t++) {
        // The SIMD dot product: a scalar reduction here is bound by the add latency.
        const float dot = tllm_vec_dot(kv->type, kv_row(kv, kv->keys, t) + head_offset, q, d) * job->scale;
        scores[t] = dot;
        if (dot > max) max = dot;
    }
    float inverse = 1.0f / tllm_exp_shift_sum(scores, visible, max);
    float *out = job->out + row * job->heads * d + head * d;
    memset(out, 0, d * sizeof(float));
    float converted[512];
    for (size_t t = 0; t < visible; t++) {
        const uint8_t *raw = kv_row(kv, kv->values, t) + head_offset;
        const float *v = (const float *)raw;
        if (kv->type == TLLM_TYPE_F16) {
            tllm_f16_to_f32((const uint16_t *)raw, converted, d);
            v = converted;
        }
        float w = scores[t] * inverse;
        for (size_t i = 0; i < d; i++) out[i] += w * v[i];
    }
}

static void attention_task(void *raw, int index, int count) {
    const attention_job *job = raw;
    size_t total = job->rows * job->heads;
    float *scores = malloc((job->start + job->rows) * sizeof(float));
    for (size_t item = (size_t)index; item < total; item += (size_t)count)
        attend_one(job, item / job->heads, item % job->heads, scores);
    free(scores);
}

void tllm_attention(tllm_pool *pool, const float *q, const tllm_kv_view *kv, float *out, size_t rows, size_t start,
                    size_t heads, size_t kv_heads, size_t head_dim, float scale) {
    attention_job job = {q, kv, out, rows, start, heads, kv_heads, head_dim, scale};
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
        if (tllm_dequantize_ref(type, (const uint8_t *)w + (row_start + r) * row_bytes, out + r * cols, cols) != 0)
            return -1;
    }
    return 0;
}
