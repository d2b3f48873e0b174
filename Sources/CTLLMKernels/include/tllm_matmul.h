// Dot products and matrix-vector products of quantised or float weights with float32
// activations, and the fixed pool of compute threads that splits them.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A fixed pool of compute threads (the caller is thread 0). Created once per process or
/// shard; `tllm_pool_run` is not reentrant.
typedef struct tllm_pool tllm_pool;

/// Creates a pool of `threads` threads in all (the calling thread included; >= 1).
tllm_pool *tllm_pool_create(int threads);
void tllm_pool_destroy(tllm_pool *pool);
int tllm_pool_threads(const tllm_pool *pool);

/// Runs `task(context, index, count)` for index in [0, count) on every thread of the pool
/// (the caller included) and returns when all are done.
void tllm_pool_run(tllm_pool *pool, void (*task)(void *context, int index, int count), void *context);

/// dot(row, x) for one row of `n` weights of `type` (n a multiple of its block size).
/// Reference versions compute in double for the float types' sake of tests.
float tllm_vec_dot(int type, const void *row, const float *x, size_t n);
float tllm_vec_dot_ref(int type, const void *row, const float *x, size_t n);

/// y[r] = dot(W[r], x) for r in [0, rows): W is `rows` rows of `cols` weights of `type`,
/// each row `row_bytes` long; split over the pool's threads (pool may be NULL).
/// Returns -1 for an unsupported type or a column count that is not a whole number of blocks.
int tllm_matvec(tllm_pool *pool, int type, const void *w, size_t row_bytes, size_t rows, size_t cols, const float *x,
                float *y);

/// Y[i][r] = dot(W[r], X[i]) for `batch` rows of X (each `cols` floats, `x_stride` apart),
/// Y rows `y_stride` apart. Small batches: one matvec per row sharing the weight reads.
int tllm_matmul_rows(tllm_pool *pool, int type, const void *w, size_t row_bytes, size_t rows, size_t cols,
                     const float *x, size_t x_stride, size_t batch, float *y, size_t y_stride);

/// Whether tllm_matmul_split_bf16 runs on this thread's paths for `type` (any dequantisable
/// type but F32) and `cols` (whole 32-input steps): needs TLLM_CPU_AMX_BF16.
int tllm_split_bf16_supported(int type, size_t cols);

/// As tllm_matmul_rows, on AMX tiles for many rows (prefill): activations and weights are each
/// split into bfloat16 parts hi + lo (lo = the residual, so about 16 bits of each), and three
/// tile products hi·hi + hi·lo + lo·hi accumulate in float32. `packed` says `w` holds 16-row
/// groups (tllm_q8_pack; Q4_0 / Q4_1 / Q8_0), read directly; row-layout weights are
/// dequantised 16 rows at a time. Scratch is kept per calling thread between calls. Returns -1
/// when unsupported (see above) or out of memory.
int tllm_matmul_split_bf16(tllm_pool *pool, int type, const void *w, size_t row_bytes, int packed, size_t rows,
                           size_t cols, const float *x, size_t x_stride, size_t batch, float *y, size_t y_stride);

#ifdef __cplusplus
}
#endif
