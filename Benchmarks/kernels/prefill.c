// Many-row products (prefill) of one weight matrix, three ways, as Linear can run them:
// the packed integer kernel with two activation planes (int16), dequantise + OpenBLAS sgemm
// in 256-row tiles (the float path), and AMX bfloat16 tiles with split operands
// (tllm_matmul_split_bf16, when the CPU has AMX). Prints GFLOP/s (2 per multiply-add), the best
// of 5 runs, and each path's largest error against a double-precision product of the same
// dequantised weights, relative to Σ|w·x| of the output. Built and run by prefill.sh.
//
//   prefill TYPE ROWS COLS THREADS BATCH...
#include "tllm_kernels.h"
#include "tllm_matmul.h"
#include "tllm_ops.h"
#include "tllm_q8.h"
#include "tllm_quants.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
    int type;
    const uint8_t *w;
    size_t row_bytes, rows, cols, batch;
    int packed;
    const float *x;
    float *y;
} sgemm_job;

/// Linear's TiledProduct: each thread dequantises 256-row tiles and runs sgemm on them.
static void sgemm_task(void *raw, int index, int count) {
    const sgemm_job *job = raw;
    const size_t tile_rows = 256;
    float *tile = malloc(tile_rows * job->cols * sizeof(float));
    for (size_t start = (size_t)index * tile_rows; start < job->rows; start += (size_t)count * tile_rows) {
        size_t n = job->rows - start < tile_rows ? job->rows - start : tile_rows;
        if (job->packed) tllm_dequantize_packed(job->type, job->w, job->cols, start, n, tile);
        else tllm_dequantize_rows(job->type, job->w, job->row_bytes, job->cols, start, n, tile);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)job->batch, (int)n, (int)job->cols, 1, job->x,
                    (int)job->cols, tile, (int)job->cols, 0, job->y + start, (int)job->rows);
    }
    free(tile);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: prefill TYPE ROWS COLS THREADS BATCH...\n");
        return 2;
    }
    int type = atoi(argv[1]);
    size_t rows = (size_t)atol(argv[2]), cols = (size_t)atol(argv[3]);
    int threads = atoi(argv[4]);
    openblas_set_num_threads(1);
    tllm_type_traits traits = tllm_type_traits_of(type);
    size_t row_bytes = cols / traits.block_size * traits.type_size, bytes = rows * row_bytes;
    uint8_t *w = aligned_alloc(64, bytes), *packed = aligned_alloc(64, bytes);
    srand(1);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rand();
    if (type == TLLM_TYPE_F16) {
        for (size_t i = 0; i < rows * cols; i++) {
            float value = (float)(rand() % 2001 - 1000) / 16000.0f;
            tllm_f32_to_f16(&value, (uint16_t *)w + i, 1);
        }
    } else {
        for (size_t r = 0; r < rows; r++)  // small positive scales (finite sums)
            for (size_t b = 0; b < cols / 32; b++) {
                uint16_t scale[2] = {(uint16_t)(0x2000 + rand() % 256), (uint16_t)(0x2000 + rand() % 256)};
                memcpy(w + r * row_bytes + b * traits.type_size, scale, type == TLLM_TYPE_Q4_1 ? 4 : 2);
            }
    }
    int can_pack = tllm_q8_packable(type, rows, cols);
    if (can_pack && tllm_q8_pack(NULL, type, w, row_bytes, rows, cols, packed) != 0) return 1;
    float *dense = malloc(rows * cols * sizeof(float));
    tllm_dequantize_rows(type, w, row_bytes, cols, 0, rows, dense);
    tllm_pool *pool = tllm_pool_create(threads);
    int amx = tllm_split_bf16_supported(type, cols);
    printf("type %s, %zu x %zu, %d thread(s), AMX %s\n", traits.name, rows, cols, threads, amx ? "yes" : "no");
    for (int argi = 5; argi < argc; argi++) {
        size_t batch = (size_t)atol(argv[argi]);
        float *x = malloc(batch * cols * sizeof(float)), *y = malloc(batch * rows * sizeof(float));
        for (size_t i = 0; i < batch * cols; i++) x[i] = (float)(rand() % 2001 - 1000) / 1000.0f;
        // Reference for a few output rows of each activation row.
        enum { CHECKED = 8 };
        double expect[CHECKED], scale[CHECKED];
        static const char *const names[3] = {"packed2", "sgemm", "amx"};
        for (int path = 0; path < 3; path++) {
            if ((path == 0 && !can_pack) || (path == 2 && !amx)) continue;
            double best = 1e30;
            for (int repetition = 0; repetition < 5; repetition++) {
                double start = now();
                if (path == 0) {
                    tllm_matmul_packed_q8(pool, type, packed, rows, cols, x, cols, batch, 2, y, rows);
                } else if (path == 1) {
                    sgemm_job job = {type, can_pack ? packed : w, row_bytes, rows, cols, batch, can_pack, x, y};
                    tllm_pool_run(pool, sgemm_task, &job);
                } else {
                    tllm_matmul_split_bf16(pool, type, can_pack ? packed : w, row_bytes, can_pack, rows, cols, x, cols,
                                           batch, y, rows);
                }
                double elapsed = now() - start;
                if (elapsed < best) best = elapsed;
            }
            double worst = 0;
            for (int i = 0; i < CHECKED; i++) {
                size_t m = (size_t)i * 7919 % batch, n = (size_t)i * 104729 % rows;
                expect[i] = scale[i] = 0;
                for (size_t k = 0; k < cols; k++) {
                    expect[i] += (double)dense[n * cols + k] * x[m * cols + k];
                    scale[i] += fabs((double)dense[n * cols + k] * x[m * cols + k]);
                }
                double error = fabs(y[m * rows + n] - expect[i]) / scale[i];
                if (error > worst) worst = error;
            }
            printf("  batch %4zu %-8s %8.1f GFLOP/s  max error %.2e of sum|wx|\n", batch, names[path],
                   2.0 * rows * cols * batch / best / 1e9, worst);
        }
        free(x);
        free(y);
    }
    tllm_pool_destroy(pool);
    return 0;
}
