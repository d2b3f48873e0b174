// Quantised matrix-vector products on a matrix that stays in L2 ("hot") and on 512 MiB of
// matrices read once per pass ("cold", as decode reads a model): float activations on the row
// layout (the float path), 8-bit activations on the row layout, and packed 16-row groups with
// one plane (8-bit) and two planes (about 16-bit). Built and run by run.sh; prints GMAC/s and
// GB/s of weights, the best of 5 passes each.
#include "tllm_kernels.h"
#include "tllm_matmul.h"
#include "tllm_ops.h"
#include "tllm_q8.h"
#include "tllm_quants.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int type = argc > 1 ? atoi(argv[1]) : TLLM_TYPE_Q4_0;
    size_t batch = argc > 2 ? (size_t)atoi(argv[2]) : 1;
    const size_t cols = 2048, rows = 512;
    size_t block = type == TLLM_TYPE_Q8_0 ? 34 : type == TLLM_TYPE_Q4_1 ? 20 : 18;
    size_t row_bytes = cols / 32 * block, matrix = rows * row_bytes, count = (512u << 20) / matrix;
    uint8_t *w = malloc(count * matrix), *packed = aligned_alloc(64, count * matrix);
    float *x = malloc(cols * batch * sizeof(float)), *y = malloc(rows * batch * sizeof(float));
    if (!w || !packed || !x || !y) return 1;
    srand(1);
    for (size_t i = 0; i < count * matrix; i++) w[i] = (uint8_t)rand();
    for (size_t r = 0; r < count * rows; r++)  // small positive scales (finite sums)
        for (size_t b = 0; b < cols / 32; b++) {
            uint16_t scale[2] = {(uint16_t)(0x2000 + rand() % 256), (uint16_t)(0x2000 + rand() % 256)};
            memcpy(w + r * row_bytes + b * block, scale, type == TLLM_TYPE_Q4_1 ? 4 : 2);
        }
    for (size_t m = 0; m < count; m++)
        if (tllm_q8_pack(NULL, type, w + m * matrix, row_bytes, rows, cols, packed + m * matrix) != 0) return 1;
    for (size_t i = 0; i < cols * batch; i++) x[i] = (float)(rand() % 2001 - 1000) / 1000.0f;
    static const char *const names[4] = {"float", "rows", "packed", "packed2"};
    for (int layout = 0; layout < 4; layout++)
        for (int hot = 1; hot >= 0; hot--) {
            size_t passes = hot ? 1000 : 2 * count;
            double best = 1e30;
            for (int repetition = 0; repetition < 5; repetition++) {
                double start = now();
                for (size_t i = 0; i < passes; i++) {
                    size_t m = hot ? 0 : i % count;
                    if (layout == 0)
                        tllm_matmul_rows(NULL, type, w + m * matrix, row_bytes, rows, cols, x, cols, batch, y, rows);
                    else if (layout == 1)
                        tllm_matmul_rows_q8(NULL, type, w + m * matrix, row_bytes, rows, cols, x, cols, batch, 1, y, rows);
                    else
                        tllm_matmul_packed_q8(NULL, type, packed + m * matrix, rows, cols, x, cols, batch, layout - 1, y,
                                              rows);
                }
                double elapsed = now() - start;
                if (elapsed < best) best = elapsed;
            }
            printf("%-7s %s type %d batch %zu: %6.2f GMAC/s %6.2f GB/s\n", names[layout], hot ? "hot " : "cold",
                   type, batch, (double)passes * rows * cols * batch / best / 1e9, (double)passes * matrix / best / 1e9);
        }
    return 0;
}
