// The 8-bit activation path (optional, like llama.cpp's): activations are quantised per
// 32-value block to int8, and quantised weights are multiplied with integer dot products
// (AVX512-VNNI / AVX2), several times fewer instructions per weight than dequantising to float.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "tllm_matmul.h"

#ifdef __cplusplus
extern "C" {
#endif

/// 32 activations: x ≈ d * q; `s` = d * Σq (for the offset terms of Q4_0 / Q4_1).
typedef struct {
    float d;
    float s;
    int8_t qs[32];
} tllm_block_q8_act;

_Static_assert(sizeof(tllm_block_q8_act) == 40, "wrong q8 activation block size");

/// Quantises `n` floats (a multiple of 32) to activation blocks (round to nearest).
void tllm_quantize_activations(const float *x, tllm_block_q8_act *out, size_t n);

/// The residual of blocks `hi` (from tllm_quantize_activations on the same `x`) as a second
/// 8-bit plane with scale hi.d / 256: x ≈ hi + lo, a step of max|x| / 32512 per block, about
/// 16 bits. The kernels take a plane as they take any activation row; the planes' products add.
void tllm_quantize_residual(const float *x, const tllm_block_q8_act *hi, tllm_block_q8_act *out, size_t n);

/// `batch` rows of `cols` floats (`x_stride` apart) quantised into a malloc'ed array of
/// activation blocks: for each row, `planes` (1, or 2 with the residual) rows of blocks. NULL
/// when out of memory. The caller frees it.
tllm_block_q8_act *tllm_quantize_rows(const float *x, size_t x_stride, size_t batch, size_t cols, int planes);

/// Whether a weight type has an 8-bit-activation dot product (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
/// Q4_K, Q5_K, Q6_K).
int tllm_q8_supported(int type);

/// dot(row, x) for quantised activations; reference computes with the same integers in scalar.
float tllm_vec_dot_q8(int type, const void *row, const tllm_block_q8_act *x, size_t n);
float tllm_vec_dot_q8_ref(int type, const void *row, const tllm_block_q8_act *x, size_t n);

/// The sum over `planes` activation planes stored one after the other (`n` / 32 blocks each),
/// as tllm_quantize_rows lays them out: with 2, about 16-bit activations.
float tllm_vec_dot_q8_planes(int type, const void *row, const tllm_block_q8_act *x, size_t n, int planes);

/// As tllm_matmul_rows, with each row of X quantised once to `planes` 8-bit planes first (1, or
/// 2 with the residual: about 16 bits, twice the integer work). Returns -1 when the type has no
/// 8-bit path, the shape is not whole blocks or `planes` is not 1 or 2.
int tllm_matmul_rows_q8(tllm_pool *pool, int type, const void *w, size_t row_bytes, size_t rows, size_t cols,
                        const float *x, size_t x_stride, size_t batch, int planes, float *y, size_t y_stride);

/// Rows per interleaved group of the packed layout (docs/packed-weights.md).
#define TLLM_Q8_PACK_ROWS 16

/// Whether `rows` × `cols` weights of `type` can be packed: an 8-bit type, rows a multiple of
/// TLLM_Q8_PACK_ROWS, whole blocks.
int tllm_q8_packable(int type, size_t rows, size_t cols);

/// Rewrites row-major weights into groups of 16 rows, the same number of bytes: per group and
/// block, the rows' scales (d, then m for Q4_1), then their quant bytes interleaved 4 at a
/// time. Split over the pool. Returns -1 when not packable.
int tllm_q8_pack(tllm_pool *pool, int type, const void *w, size_t row_bytes, size_t rows, size_t cols, void *out);

/// As tllm_matmul_rows_q8, on packed weights (any batch; four activation planes share each
/// pass). `planes` 1 quantises activations to 8 bits; 2 adds the residual plane (about 16 bits,
/// close to the float path at twice the integer work).
int tllm_matmul_packed_q8(tllm_pool *pool, int type, const void *packed, size_t rows, size_t cols, const float *x,
                          size_t x_stride, size_t batch, int planes, float *y, size_t y_stride);

/// Rows [row_start, row_start + row_count) of packed weights as float32, `cols` apart.
int tllm_dequantize_packed(int type, const void *packed, size_t cols, size_t row_start, size_t row_count,
                           float *out);

#ifdef __cplusplus
}
#endif
