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
    TLLM_TYPE_Q5_0 = 6,
    TLLM_TYPE_Q5_1 = 7,
    TLLM_TYPE_Q8_0 = 8,
    TLLM_TYPE_Q2_K = 10,
    TLLM_TYPE_Q3_K = 11,
    TLLM_TYPE_Q4_K = 12,
    TLLM_TYPE_Q5_K = 13,
    TLLM_TYPE_Q6_K = 14,
    TLLM_TYPE_IQ4_NL = 20,
    TLLM_TYPE_IQ4_XS = 23,
    TLLM_TYPE_BF16 = 30,
};

#define TLLM_QK4_0 32
#define TLLM_QK4_1 32
#define TLLM_QK5_0 32
#define TLLM_QK5_1 32
#define TLLM_QK8_0 32
#define TLLM_QK4_NL 32
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

/// 32 weights: x = d * (q - 16), q 5 bits: a nibble as in Q4_0, the fifth bit of weight i is
/// bit i of qh (little-endian).
typedef struct {
    tllm_half d;
    uint8_t qh[4];
    uint8_t qs[TLLM_QK5_0 / 2];
} tllm_block_q5_0;

/// 32 weights: x = d * q + m, q 5 bits laid out as in Q5_0.
typedef struct {
    tllm_half d;
    tllm_half m;
    uint8_t qh[4];
    uint8_t qs[TLLM_QK5_1 / 2];
} tllm_block_q5_1;

/// 32 weights: x = d * q, q a signed byte.
typedef struct {
    tllm_half d;
    int8_t qs[TLLM_QK8_0];
} tllm_block_q8_0;

/// 256 weights in 16 groups of 16, 4-bit scales (low nibble) and mins (high nibble), 2-bit q:
/// x = d * sc * q - dmin * m. Bytes 32n..32n+31 of qs hold groups 8n..8n+7, 2 bits per group
/// (group 8n + 2j + h: bits 2j of bytes 32n + 16h ..).
typedef struct {
    uint8_t scales[TLLM_QK_K / 16];
    uint8_t qs[TLLM_QK_K / 4];
    tllm_half d;
    tllm_half dmin;
} tllm_block_q2_K;

/// 256 weights in 16 groups of 16, 6-bit signed scales (offset 32) packed in 12 bytes, q of 2
/// bits as in Q2_K minus 4 where the weight's bit in hmask is clear: x = d * (sc - 32) * q.
typedef struct {
    uint8_t hmask[TLLM_QK_K / 8];
    uint8_t qs[TLLM_QK_K / 4];
    uint8_t scales[12];
    tllm_half d;
} tllm_block_q3_K;

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

/// The 16 values of the non-linear 4-bit types (IQ4_NL, IQ4_XS), indexed by a nibble.
extern const int8_t tllm_iq4_values[16];

/// 32 weights: x = d * tllm_iq4_values[q], nibbles laid out as in Q4_0.
typedef struct {
    tllm_half d;
    uint8_t qs[TLLM_QK4_NL / 2];
} tllm_block_iq4_nl;

/// 256 weights in 8 groups of 32 laid out as IQ4_NL blocks, 6-bit scales (offset 32): low 4
/// bits in scales_l (group 2i in the low nibble of byte i), high 2 in scales_h (bits 2g).
typedef struct {
    tllm_half d;
    uint16_t scales_h;
    uint8_t scales_l[TLLM_QK_K / 64];
    uint8_t qs[TLLM_QK_K / 2];
} tllm_block_iq4_xs;

_Static_assert(sizeof(tllm_block_q4_0) == 18, "wrong q4_0 block size");
_Static_assert(sizeof(tllm_block_q4_1) == 20, "wrong q4_1 block size");
_Static_assert(sizeof(tllm_block_q5_0) == 22, "wrong q5_0 block size");
_Static_assert(sizeof(tllm_block_q5_1) == 24, "wrong q5_1 block size");
_Static_assert(sizeof(tllm_block_q8_0) == 34, "wrong q8_0 block size");
_Static_assert(sizeof(tllm_block_q2_K) == 84, "wrong q2_K block size");
_Static_assert(sizeof(tllm_block_q3_K) == 110, "wrong q3_K block size");
_Static_assert(sizeof(tllm_block_iq4_nl) == 18, "wrong iq4_nl block size");
_Static_assert(sizeof(tllm_block_iq4_xs) == 136, "wrong iq4_xs block size");
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

/// The same values, bit for bit, on this CPU's SIMD path where there is one (AVX2 for Q4_K,
/// Q5_K, Q6_K); the reference otherwise.
int tllm_dequantize(int type, const void *src, float *dst, size_t n);

#ifdef __cplusplus
}
#endif
