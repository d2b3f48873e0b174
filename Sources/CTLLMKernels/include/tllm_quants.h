// Quantised block formats of GGUF (the layouts of ggml-common.h) and their reference
// dequantisation. Type ids are GGML's (`ggml_type`), as stored in GGUF tensor infos.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t tllm_half;  // IEEE binary16 bits

enum tllm_ggml_type {
    TLLM_TYPE_F32 = 0,
    TLLM_TYPE_F16 = 1,
    TLLM_TYPE_Q4_0 = 2,
    TLLM_TYPE_Q4_1 = 3,
    TLLM_TYPE_Q8_0 = 8,
    TLLM_TYPE_Q4_K = 12,
    TLLM_TYPE_Q5_K = 13,
    TLLM_TYPE_Q6_K = 14,
    TLLM_TYPE_BF16 = 30,
};

#define TLLM_QK4_0 32
#define TLLM_QK4_1 32
#define TLLM_QK8_0 32
#define TLLM_QK_K 256
#define TLLM_K_SCALE_SIZE 12

/// 32 weights: x = d * (q - 8), q a 4-bit nibble (low nibbles are weights 0..15, high 16..31).
typedef struct {
    tllm_half d;
    uint8_t qs[TLLM_QK4_0 / 2];
} tllm_block_q4_0;

/// 32 weights: x = d * q + m.
typedef struct {
    tllm_half d;
    tllm_half m;
    uint8_t qs[TLLM_QK4_1 / 2];
} tllm_block_q4_1;

/// 32 weights: x = d * q, q a signed byte.
typedef struct {
    tllm_half d;
    int8_t qs[TLLM_QK8_0];
} tllm_block_q8_0;

/// 256 weights in 8 groups of 32, 6-bit scales and mins: x = d * sc * q - dmin * m.
typedef struct {
    tllm_half d;
    tllm_half dmin;
    uint8_t scales[TLLM_K_SCALE_SIZE];
    uint8_t qs[TLLM_QK_K / 2];
} tllm_block_q4_K;

/// As Q4_K with a fifth bit per weight in qh.
typedef struct {
    tllm_half d;
    tllm_half dmin;
    uint8_t scales[TLLM_K_SCALE_SIZE];
    uint8_t qh[TLLM_QK_K / 8];
    uint8_t qs[TLLM_QK_K / 2];
} tllm_block_q5_K;

/// 256 weights in 16 groups of 16, 8-bit scales: x = d * scale * (q - 32), q 6 bits.
typedef struct {
    uint8_t ql[TLLM_QK_K / 2];
    uint8_t qh[TLLM_QK_K / 4];
    int8_t scales[TLLM_QK_K / 16];
    tllm_half d;
} tllm_block_q6_K;

_Static_assert(sizeof(tllm_block_q4_0) == 18, "wrong q4_0 block size");
_Static_assert(sizeof(tllm_block_q4_1) == 20, "wrong q4_1 block size");
_Static_assert(sizeof(tllm_block_q8_0) == 34, "wrong q8_0 block size");
_Static_assert(sizeof(tllm_block_q4_K) == 144, "wrong q4_K block size");
_Static_assert(sizeof(tllm_block_q5_K) == 176, "wrong q5_K block size");
_Static_assert(sizeof(tllm_block_q6_K) == 210, "wrong q6_K block size");

/// Layout of one tensor type: weights per block and bytes per block (0, 0 when unsupported).
typedef struct {
    const char *name;
    size_t block_size;
    size_t type_size;
} tllm_type_traits;

/// Traits of `type`; `name` is NULL for types we do not support.
tllm_type_traits tllm_type_traits_of(int type);

/// Reference dequantisation of `n` weights (a multiple of the type's block size) of
/// `type` at `src` into `dst`; computes exactly as the `gguf` package's numpy code does.
/// Returns 0, or -1 when the type is unsupported or `n` is not a whole number of blocks.
int tllm_dequantize_ref(int type, const void *src, float *dst, size_t n);

#ifdef __cplusplus
}
#endif
