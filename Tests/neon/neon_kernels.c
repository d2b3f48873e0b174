// The NEON kernels against the portable references, built for arm64 and run under
// qemu-aarch64 by test_neon_kernels.py (this machine is x86). Prints one line per failed
// check and a summary; exits 1 if any check failed.
#include "tllm_kernels.h"
#include "tllm_matmul.h"
#include "tllm_ops.h"
#include "tllm_q8.h"
#include "tllm_quants.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks, failures;

static void expect_close(const char *what, int type, size_t index, float got, float want, float tolerance) {
    checks++;
    if (!(fabsf(got - want) <= tolerance)) {
        failures++;
        printf("FAIL %s type %d at %zu: %.9g vs reference %.9g (tolerance %.3g)\n", what, type, index, got, want,
               tolerance);
    }
}

static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)rand() / (float)RAND_MAX; }

/// `rows` random rows of `type` with finite, moderate scales.
static uint8_t *random_rows(int type, size_t rows, size_t cols, size_t *row_bytes) {
    tllm_type_traits t = tllm_type_traits_of(type);
    *row_bytes = cols / t.block_size * t.type_size;
    uint8_t *w = malloc(rows * *row_bytes);
    for (size_t i = 0; i < rows * *row_bytes; i++) w[i] = (uint8_t)rand();
    if (type == TLLM_TYPE_F32) {
        for (size_t i = 0; i < rows * cols; i++) ((float *)w)[i] = uniform(-2, 2);
    } else if (type == TLLM_TYPE_F16) {
        float *f = malloc(rows * cols * sizeof(float));
        for (size_t i = 0; i < rows * cols; i++) f[i] = uniform(-2, 2);
        tllm_f32_to_f16_ref(f, (uint16_t *)w, rows * cols);
        free(f);
    } else {
        for (size_t b = 0; b < rows * cols / 32; b++) {
            float scales[2] = {uniform(-0.1f, 0.1f), uniform(-1, 1)};
            uint16_t halves[2];
            tllm_f32_to_f16_ref(scales, halves, 2);
            memcpy(w + b * t.type_size, halves, type == TLLM_TYPE_Q4_1 ? 4 : 2);
        }
    }
    return w;
}

/// Σ|w·x| of each row: the scale of rounding differences between summation orders.
static float magnitude(int type, const uint8_t *w, size_t row_bytes, size_t cols, size_t row, const float *x) {
    float *values = malloc(cols * sizeof(float)), sum = 0;
    tllm_dequantize_rows(type, w, row_bytes, cols, row, 1, values);
    for (size_t i = 0; i < cols; i++) sum += fabsf(values[i] * x[i]);
    free(values);
    return sum;
}

int main(void) {
    srand(7);
    if (!(tllm_cpu_features() & TLLM_CPU_NEON)) {
        printf("FAIL: the NEON path is not detected\n");
        return 1;
    }
    // Float-activation dot products: every type with a NEON kernel, lengths with a tail.
    const int dot_types[] = {TLLM_TYPE_F32, TLLM_TYPE_F16, TLLM_TYPE_Q8_0, TLLM_TYPE_Q4_0, TLLM_TYPE_Q4_1};
    for (size_t t = 0; t < sizeof dot_types / sizeof *dot_types; t++) {
        int type = dot_types[t];
        size_t cols = type == TLLM_TYPE_F32 || type == TLLM_TYPE_F16 ? 1013 : 1536, row_bytes, rows = 6;
        uint8_t *w = random_rows(type, rows, cols, &row_bytes);
        float *x = malloc(cols * sizeof(float));
        for (size_t i = 0; i < cols; i++) x[i] = uniform(-1, 1);
        for (size_t r = 0; r < rows; r++) {
            const void *row = w + r * row_bytes;
            float want = tllm_vec_dot_ref(type, row, x, cols);
            float scale = magnitude(type, w, row_bytes, cols, r, x);
            expect_close("vec_dot", type, r, tllm_vec_dot(type, row, x, cols), want, scale * 1e-5f + 1e-5f);
        }
        free(w);
        free(x);
    }
    // 8-bit activations on packed 16-row groups, batches of 1, 4 and 6, against the scalar
    // integer reference on the row layout (all SIMD paths off).
    const int q8_types[] = {TLLM_TYPE_Q4_0, TLLM_TYPE_Q4_1, TLLM_TYPE_Q8_0};
    for (size_t t = 0; t < 3; t++) {
        int type = q8_types[t];
        size_t cols = 320, rows = 48, row_bytes;
        uint8_t *w = random_rows(type, rows, cols, &row_bytes), *packed = malloc(rows * row_bytes);
        if (tllm_q8_pack(NULL, type, w, row_bytes, rows, cols, packed) != 0) {
            printf("FAIL: packing type %d\n", type);
            return 1;
        }
        const size_t batches[] = {1, 4, 6};
        for (size_t bi = 0; bi < 3; bi++) {
            size_t batch = batches[bi];
            float *x = malloc(batch * cols * sizeof(float)), *want = malloc(batch * rows * sizeof(float)),
                  *got = malloc(batch * rows * sizeof(float));
            for (size_t i = 0; i < batch * cols; i++) x[i] = uniform(-2, 2);
            unsigned all = tllm_set_cpu_features(~0u);
            tllm_set_cpu_features(0);
            tllm_matmul_rows_q8(NULL, type, w, row_bytes, rows, cols, x, cols, batch, 1, want, rows);
            tllm_set_cpu_features(all);
            tllm_matmul_packed_q8(NULL, type, packed, rows, cols, x, cols, batch, 1, got, rows);
            for (size_t i = 0; i < batch * rows; i++) {
                float scale = magnitude(type, w, row_bytes, cols, i % rows, x + i / rows * cols);
                expect_close("packed q8", type, i, got[i], want[i], scale * 4e-6f + 1e-5f);
            }
            // Two planes: the same kernel on twice the rows, against the reference's two planes.
            tllm_set_cpu_features(0);
            tllm_matmul_packed_q8(NULL, type, packed, rows, cols, x, cols, batch, 2, want, rows);
            tllm_set_cpu_features(all);
            tllm_matmul_packed_q8(NULL, type, packed, rows, cols, x, cols, batch, 2, got, rows);
            for (size_t i = 0; i < batch * rows; i++) {
                float scale = magnitude(type, w, row_bytes, cols, i % rows, x + i / rows * cols);
                expect_close("packed two planes", type, i, got[i], want[i], scale * 4e-6f + 1e-5f);
            }
            free(x);
            free(want);
            free(got);
        }
        free(w);
        free(packed);
    }
    printf("neon kernels: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
