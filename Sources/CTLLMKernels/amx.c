// Many-row products on AMX tiles: bfloat16 tile products accumulated in float32, each operand
// split into two bfloat16 parts so that the product keeps about 16 bits (docs/amx.md).
//
// Operands, in 1 KiB tiles (16 rows of 64 bytes, as the tile registers hold them):
// - A, the activations: tile (m-tile, step, part) holds rows 16·mt .. +16 and the 32 inputs of
//   the step, one row per tile row.
// - B, the weights of one block of output rows: tile (step, n-tile, part) holds, in tile row q,
//   the pair of inputs (2q, 2q + 1) of each of 16 output rows (the pairs layout TDPBF16PS reads).
// C[m][n] += A_hi·B_hi + A_hi·B_lo + A_lo·B_hi; the lo·lo term (2^-16 relative) is left out.
#include "tllm_matmul.h"
#include "tllm_q8.h"
#include "tllm_quants.h"
#include "tllm_ops.h"
#include "tllm_kernels.h"
#include "dispatch.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx2,f16c,fma")))

/// Steps per pass over the m-tiles (override to compare, as Benchmarks/kernels does for prefetch).
#ifndef TLLM_AMX_CHUNK
#define TLLM_AMX_CHUNK 8
#endif

enum {
    STEP = 32,           // inputs per tile product
    TILE_ELEMENTS = 512, // bfloat16 per tile
    /// Output rows per block: one pair of n-tiles. A block's weight tiles (32 × inputs × 4 bytes,
    /// 1 MiB at 8192 inputs) stay in L2 while every m-tile uses them, and threads take blocks
    /// one at a time, so they finish together.
    BLOCK_ROWS = 32,
    /// Steps per pass over the m-tiles: 8 steps of a block are 32 KiB of weight tiles, which
    /// stay in L1 while the activation tiles stream from L2 (docs/amx.md: 8 measured best).
    CHUNK_STEPS = TLLM_AMX_CHUNK,
};

typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/// x's float32 bits rounded to the nearest bfloat16 (ties to even), the low 16 bits cleared:
/// as a float, the hi part, with x − hi exact.
AMX_TARGET static inline __m512i bf16_round(__m512 x) {
    __m512i bits = _mm512_castps_si512(x);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    bits = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
    return _mm512_and_si512(bits, _mm512_set1_epi32((int)0xffff0000u));
}

/// The upper halves of a's then b's 16 words: 32 bfloat16.
AMX_TARGET static inline __m512i upper_halves(__m512i a, __m512i b) {
    const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27,
                                         25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_permutex2var_epi16(a, odd, b);
}

/// 32 floats (x0 then x1) as their hi and lo bfloat16 parts, 64 bytes each, in order.
AMX_TARGET static inline void split32(__m512 x0, __m512 x1, uint16_t *hi, uint16_t *lo) {
    __m512i h0 = bf16_round(x0), h1 = bf16_round(x1);
    __m512i l0 = bf16_round(_mm512_sub_ps(x0, _mm512_castsi512_ps(h0)));
    __m512i l1 = bf16_round(_mm512_sub_ps(x1, _mm512_castsi512_ps(h1)));
    _mm512_store_si512(hi, upper_halves(h0, h1));
    _mm512_store_si512(lo, upper_halves(l0, l1));
}

// ---- Activations -> A tiles ----

typedef struct {
    const float *x;
    size_t x_stride, batch, cols, steps, m_tiles;
    uint16_t *a;
} activation_job;

/// A tile (mt, s, part): part 0 hi, 1 lo.
static inline uint16_t *a_tile(uint16_t *a, size_t steps, size_t mt, size_t s, int part) {
    return a + ((mt * steps + s) * 2 + (size_t)part) * TILE_ELEMENTS;
}

AMX_TARGET static void activation_task(void *raw, int index, int count) {
    const activation_job *job = raw;
    size_t start, end;
    tllm_row_range(job->m_tiles, index, count, &start, &end);
    for (size_t mt = start; mt < end; mt++)
        for (size_t r = 0; r < 16; r++) {
            size_t m = mt * 16 + r;
            const float *row = job->x + m * job->x_stride;
            for (size_t s = 0; s < job->steps; s++) {
                uint16_t *hi = a_tile(job->a, job->steps, mt, s, 0) + r * 32, *lo = hi + TILE_ELEMENTS;
                if (m >= job->batch) {
                    memset(hi, 0, 64);
                    memset(lo, 0, 64);
                    continue;
                }
                split32(_mm512_loadu_ps(row + s * STEP), _mm512_loadu_ps(row + s * STEP + 16), hi, lo);
            }
        }
}

// ---- Weights -> B tiles ----

/// Where a packed group block's parts are (docs/packed-weights.md).
typedef struct {
    size_t block_bytes, scale_bytes, quant_bytes;
} group_shape;

/// Four inputs (4j .. 4j+3) of 16 rows as signed bytes, lane-major (row n's in bytes 4n..4n+3),
/// scaled by d (and offset by m, Q4_1) per row, into B rows 2j and 2j+1 of both parts.
AMX_TARGET static inline void quad_to_tiles(__m512i bytes, int j, __m512 d, __m512 m, uint16_t *hi, uint16_t *lo) {
    // Per 128-bit lane (4 rows): bytes 0,1 of each row, then bytes 2,3 of each row.
    const __m512i pairs = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15));
    __m512i v = _mm512_shuffle_epi8(bytes, pairs);
    // Even quadwords (inputs 4j, 4j+1 of rows 0..15), then odd ones (4j+2, 4j+3).
    v = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), v);
    // Each row's scale twice: rows 0..7, then 8..15.
    const __m512i first = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
    __m512 d0 = _mm512_permutexvar_ps(first, d), d1 = _mm512_permutexvar_ps(second, d);
    __m512 m0 = _mm512_permutexvar_ps(first, m), m1 = _mm512_permutexvar_ps(second, m);
    for (int half = 0; half < 2; half++) {
        __m256i q = half ? _mm512_extracti64x4_epi64(v, 1) : _mm512_castsi512_si256(v);
        __m512 w0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q))), d0, m0);
        __m512 w1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1))), d1, m1);
        size_t row = (size_t)(2 * j + half) * 32;
        split32(w0, w1, hi + row, lo + row);
    }
}

/// One 16-row group's block of packed Q4_0 / Q4_1 / Q8_0 as the B tiles (hi, lo) of its step.
AMX_TARGET static void packed_block_to_tiles(int type, const uint8_t *block, uint16_t *hi, uint16_t *lo) {
    __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)block));
    __m512 m = _mm512_setzero_ps();
    const uint8_t *quants = block + 32;
    if (type == TLLM_TYPE_Q4_1) {
        m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(block + 32)));
        quants += 32;
    }
    if (type == TLLM_TYPE_Q8_0) {
        for (int c = 0; c < 8; c++) quad_to_tiles(_mm512_loadu_si512(quants + c * 64), c, d, m, hi, lo);
        return;
    }
    // Q4: low nibbles of chunk c are inputs 4c.., high nibbles 16 + 4c..; Q4_0 centres on 8.
    const __m512i mask = _mm512_set1_epi8(0x0f);
    const __m512i offset = _mm512_set1_epi8(type == TLLM_TYPE_Q4_0 ? 8 : 0);
    for (int c = 0; c < 4; c++) {
        __m512i bytes = _mm512_loadu_si512(quants + c * 64);
        __m512i low = _mm512_sub_epi8(_mm512_and_si512(bytes, mask), offset);
        __m512i high = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(bytes, 4), mask), offset);
        quad_to_tiles(low, c, d, m, hi, lo);
        quad_to_tiles(high, 4 + c, d, m, hi, lo);
    }
}

typedef struct {
    int type, packed;
    const uint8_t *w;
    size_t row_bytes, rows, cols, steps, m_tiles, batch, y_stride;
    group_shape shape;
    const uint16_t *a;
    float *y;
    uint8_t *scratch;      // per thread: B tiles, C tiles, dequantised rows
    size_t scratch_bytes;  // per thread
    _Atomic size_t next_block;
} product_job;

/// B tile (s, nt, part) of a block with `n_tiles` tiles per step.
static inline uint16_t *b_tile(uint16_t *b, size_t n_tiles, size_t s, size_t nt, int part) {
    return b + ((s * n_tiles + nt) * 2 + (size_t)part) * TILE_ELEMENTS;
}

/// The B tiles of output rows [n0, n0 + 16 · n_tiles) (rows past the end are zeros). Rows in
/// the row layout are dequantised 16 at a time into `rows` (16 × cols floats).
AMX_TARGET static void weights_to_tiles(const product_job *job, size_t n0, size_t n_tiles, uint16_t *b, float *rows) {
    for (size_t nt = 0; nt < n_tiles; nt++) {
        size_t first = n0 + nt * 16;
        if (first >= job->rows) {
            for (size_t s = 0; s < job->steps; s++) memset(b_tile(b, n_tiles, s, nt, 0), 0, 2 * TILE_ELEMENTS * 2);
            continue;
        }
        if (job->packed) {
            const uint8_t *group = job->w + first * job->row_bytes;
            for (size_t s = 0; s < job->steps; s++)
                packed_block_to_tiles(job->type, group + s * 16 * job->shape.block_bytes, b_tile(b, n_tiles, s, nt, 0),
                                      b_tile(b, n_tiles, s, nt, 1));
            continue;
        }
        size_t count = job->rows - first < 16 ? job->rows - first : 16;
        if (job->type == TLLM_TYPE_F16)
            tllm_f16_to_f32((const uint16_t *)(job->w + first * job->row_bytes), rows, count * job->cols);
        else
            tllm_dequantize_rows(job->type, job->w, job->row_bytes, job->cols, first, count, rows);
        memset(rows + count * job->cols, 0, (16 - count) * job->cols * sizeof(float));
        // Row n's 16 pairs, split, go to column n of the 16 tile rows (a scatter per row and part).
        const __m512i column = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                  _mm512_set1_epi32(16));
        for (size_t s = 0; s < job->steps; s++) {
            uint16_t *hi = b_tile(b, n_tiles, s, nt, 0), *lo = b_tile(b, n_tiles, s, nt, 1);
            for (size_t n = 0; n < 16; n++) {
                _Alignas(64) uint16_t parts[2][32];
                const float *x = rows + n * job->cols + s * STEP;
                split32(_mm512_loadu_ps(x), _mm512_loadu_ps(x + 16), parts[0], parts[1]);
                _mm512_i32scatter_epi32((int *)hi + n, column, _mm512_load_si512(parts[0]), 4);
                _mm512_i32scatter_epi32((int *)lo + n, column, _mm512_load_si512(parts[1]), 4);
            }
        }
    }
}

// ---- Tile products ----

/// C tiles 0..3 = (m0, n0), (m0, n1), (m1, n0), (m1, n1) over `steps` steps; a0 / a1 and b0 / b1
/// are the hi tiles of the first step (lo follows each), a_step / b_step the distance to the next.
AMX_TARGET static void tile_steps(const uint16_t *a0, const uint16_t *a1, size_t a_step, const uint16_t *b0,
                                  const uint16_t *b1, size_t b_step, size_t steps) {
    for (size_t s = 0; s < steps; s++) {
        _tile_loadd(4, a0, 64);
        _tile_loadd(5, a1, 64);
        _tile_loadd(6, b0, 64);
        _tile_loadd(7, b1, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        _tile_loadd(6, b0 + TILE_ELEMENTS, 64);
        _tile_loadd(7, b1 + TILE_ELEMENTS, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        _tile_loadd(4, a0 + TILE_ELEMENTS, 64);
        _tile_loadd(5, a1 + TILE_ELEMENTS, 64);
        _tile_loadd(6, b0, 64);
        _tile_loadd(7, b1, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        a0 += a_step;
        a1 += a_step;
        b0 += b_step;
        b1 += b_step;
    }
}

/// Grow-only scratch owned by the calling thread, kept between products (prefill makes
/// hundreds of them; fresh megabytes each time would fault their pages in again every time).
static void *thread_scratch(size_t bytes) {
    static _Thread_local void *buffer;
    static _Thread_local size_t size;
    if (size < bytes) {
        free(buffer);
        size_t rounded = (bytes + 4095) & ~(size_t)4095;
        buffer = aligned_alloc(64, rounded);
        size = buffer ? rounded : 0;
    }
    return buffer;
}

/// Bytes of one thread's part of the scratch: B tiles of a block, its C tiles, 16 float rows.
static size_t per_thread_bytes(size_t steps, size_t m_tiles, size_t cols, int packed) {
    const size_t max_tiles = BLOCK_ROWS / 16;
    size_t bytes = steps * max_tiles * 2 * TILE_ELEMENTS * 2 + m_tiles * max_tiles * 256 * sizeof(float);
    if (!packed) bytes += 16 * cols * sizeof(float);
    return (bytes + 63) & ~(size_t)63;
}

AMX_TARGET static void product_task(void *raw, int index, int count) {
    product_job *job = raw;
    (void)count;
    size_t blocks = (job->rows + BLOCK_ROWS - 1) / BLOCK_ROWS;
    if ((size_t)index >= blocks) return;
    const size_t max_tiles = BLOCK_ROWS / 16;
    size_t b_bytes = job->steps * max_tiles * 2 * TILE_ELEMENTS * 2;
    size_t c_bytes = job->m_tiles * max_tiles * 256 * sizeof(float);
    uint8_t *scratch = job->scratch + (size_t)index * job->scratch_bytes;
    uint16_t *b = (uint16_t *)scratch;
    float *c = (float *)(scratch + b_bytes), *rows = (float *)(scratch + b_bytes + c_bytes);

    tile_config config = {.palette = 1};
    for (int t = 0; t < 8; t++) {
        config.rows[t] = 16;
        config.colsb[t] = 64;
    }
    _tile_loadconfig(&config);
    for (size_t block; (block = atomic_fetch_add_explicit(&job->next_block, 1, memory_order_relaxed)) < blocks;) {
        size_t n0 = block * BLOCK_ROWS;
        size_t n_rows = job->rows - n0 < BLOCK_ROWS ? job->rows - n0 : BLOCK_ROWS;
        size_t n_tiles = ((n_rows + 15) / 16 + 1) & ~(size_t)1;  // in pairs
        weights_to_tiles(job, n0, n_tiles, b, rows);
        for (size_t s0 = 0; s0 < job->steps; s0 += CHUNK_STEPS) {
            size_t steps = job->steps - s0 < CHUNK_STEPS ? job->steps - s0 : CHUNK_STEPS;
            for (size_t nt = 0; nt < n_tiles; nt += 2)
                for (size_t mt = 0; mt < job->m_tiles; mt += 2) {
                    float *c00 = c + (mt * n_tiles + nt) * 256, *c01 = c00 + 256;
                    float *c10 = c + ((mt + 1) * n_tiles + nt) * 256, *c11 = c10 + 256;
                    if (s0 == 0) {
                        _tile_zero(0);
                        _tile_zero(1);
                        _tile_zero(2);
                        _tile_zero(3);
                    } else {
                        _tile_loadd(0, c00, 64);
                        _tile_loadd(1, c01, 64);
                        _tile_loadd(2, c10, 64);
                        _tile_loadd(3, c11, 64);
                    }
                    tile_steps(a_tile((uint16_t *)job->a, job->steps, mt, s0, 0),
                               a_tile((uint16_t *)job->a, job->steps, mt + 1, s0, 0), 2 * TILE_ELEMENTS,
                               b_tile(b, n_tiles, s0, nt, 0), b_tile(b, n_tiles, s0, nt + 1, 0),
                               n_tiles * 2 * TILE_ELEMENTS, steps);
                    _tile_stored(0, c00, 64);
                    _tile_stored(1, c01, 64);
                    _tile_stored(2, c10, 64);
                    _tile_stored(3, c11, 64);
                }
        }
        // C tile (mt, nt) row r is output row 16·mt + r, columns n0 + 16·nt ... (masked past the end).
        for (size_t m = 0; m < job->batch; m++)
            for (size_t nt = 0; nt * 16 < n_rows; nt++) {
                size_t width = n_rows - nt * 16 < 16 ? n_rows - nt * 16 : 16;
                const __mmask16 columns = (__mmask16)((1u << width) - 1);
                _mm512_mask_storeu_ps(job->y + m * job->y_stride + n0 + nt * 16, columns,
                                      _mm512_load_ps(c + ((m / 16) * n_tiles + nt) * 256 + (m % 16) * 16));
            }
    }
    _tile_release();
}

int tllm_split_bf16_supported(int type, size_t cols) {
    if (!(tllm_active_features() & TLLM_CPU_AMX_BF16) || cols == 0 || cols % STEP != 0) return 0;
    tllm_type_traits traits = tllm_type_traits_of(type);
    return traits.name != NULL && type != TLLM_TYPE_F32 && cols % traits.block_size == 0;
}

int tllm_matmul_split_bf16(tllm_pool *pool, int type, const void *w, size_t row_bytes, int packed, size_t rows,
                           size_t cols, const float *x, size_t x_stride, size_t batch, float *y, size_t y_stride) {
    if (!tllm_split_bf16_supported(type, cols) || rows == 0 || batch == 0) return -1;
    group_shape shape = {0, 0, 0};
    if (packed) {
        if (!tllm_q8_packable(type, rows, cols)) return -1;
        shape.block_bytes = type == TLLM_TYPE_Q8_0 ? 34 : type == TLLM_TYPE_Q4_1 ? 20 : 18;
    }
    size_t steps = cols / STEP, m_tiles = ((batch + 15) / 16 + 1) & ~(size_t)1;
    size_t a_bytes = m_tiles * steps * 2 * TILE_ELEMENTS * 2, per_thread = per_thread_bytes(steps, m_tiles, cols, packed);
    int threads = pool ? tllm_pool_threads(pool) : 1;
    uint8_t *scratch = thread_scratch(a_bytes + (size_t)threads * per_thread);
    if (!scratch) return -1;
    uint16_t *a = (uint16_t *)scratch;
    activation_job activations = {x, x_stride, batch, cols, steps, m_tiles, a};
    tllm_pool_run(pool, activation_task, &activations);
    product_job job = {type,  packed, w, row_bytes, rows,      cols,   steps,           m_tiles,
                       batch, y_stride, shape, a, y, scratch + a_bytes, per_thread, 0};
    tllm_pool_run(pool, product_task, &job);
    return 0;
}

#else

int tllm_split_bf16_supported(int type, size_t cols) {
    (void)type;
    (void)cols;
    return 0;
}

int tllm_matmul_split_bf16(tllm_pool *pool, int type, const void *w, size_t row_bytes, int packed, size_t rows,
                           size_t cols, const float *x, size_t x_stride, size_t batch, float *y, size_t y_stride) {
    (void)pool, (void)type, (void)w, (void)row_bytes, (void)packed, (void)rows, (void)cols, (void)x, (void)x_stride,
        (void)batch, (void)y, (void)y_stride;
    return -1;
}

#endif
