// Element-wise and attention operations of a Llama-family decoder layer, on float32 rows.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "tllm_matmul.h"

#ifdef __cplusplus
extern "C" {
#endif

/// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for `rows` rows of `n` (out may be x).
void tllm_rms_norm(const float *x, const float *weight, float *out, size_t rows, size_t n, float eps);
void tllm_rms_norm_ref(const float *x, const float *weight, float *out, size_t rows, size_t n, float eps);

/// Rotary embedding in place on `heads` heads of `head_dim` for one row at `position`.
/// neox = 1: pairs (i, i + head_dim/2) (Hugging Face layout); neox = 0: pairs (2i, 2i+1)
/// (llama.cpp's layout, whose GGUF Q/K rows are permuted to match). `freq_factors` (may be
/// NULL) divides each pair's frequency (Llama 3 scaling as llama.cpp stores it).
void tllm_rope(float *x, size_t heads, size_t head_dim, int position, float theta_base, const float *freq_factors, int neox);

/// out = silu(gate) * up, element-wise (out may alias gate).
void tllm_silu_mul(const float *gate, const float *up, float *out, size_t n);
/// Portable version of tllm_silu_mul (libm's expf).
void tllm_silu_mul_ref(const float *gate, const float *up, float *out, size_t n);

/// Where one layer's cached keys and values live: pages of `page_tokens` positions. Position t
/// is row (t mod page_tokens) of page pages[t / page_tokens]; its keys start at
/// keys + page * page_stride + row * row_stride (bytes), its values likewise from `values`.
typedef struct {
    const void *keys, *values;
    const int32_t *pages;
    size_t page_tokens, page_stride, row_stride;
    int type; // TLLM_TYPE_F32 or TLLM_TYPE_F16
} tllm_kv_view;

/// Causal grouped-query attention of one sequence.
///   q:      rows × (heads × head_dim), the new rows at positions start .. start+rows-1
///   kv:     cache positions 0 .. start+rows-1, each row kv_heads × head_dim
///   out:    rows × (heads × head_dim)
/// Row i attends to cache positions [0, start + i]. Tiled: work items are blocks of query rows
/// × the query heads of one KV head, walking the cache in tiles with an online softmax.
void tllm_attention(tllm_pool *pool, const float *q, const tllm_kv_view *kv, float *out, size_t rows, size_t start,
                    size_t heads, size_t kv_heads, size_t head_dim, float scale);
/// The same, computed plainly in double (tests).
void tllm_attention_ref(const float *q, const float *k, const float *v, float *out, size_t rows, size_t start,
                        size_t heads, size_t kv_heads, size_t head_dim, size_t kv_stride, float scale);

/// x[i] = exp(x[i] - shift) in place; returns the sum (softmax's denominator). The SIMD
/// path is within a few ulp of expf.
float tllm_exp_shift_sum(float *x, size_t n, float shift);

/// log-softmax of a row in place; returns nothing. For sampling and tests.
void tllm_log_softmax(float *x, size_t n);

/// Dequantises rows [row_start, row_start + row_count) of a weight matrix to float32.
int tllm_dequantize_rows(int type, const void *w, size_t row_bytes, size_t cols, size_t row_start, size_t row_count,
                         float *out);

#ifdef __cplusplus
}
#endif
