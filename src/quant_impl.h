/* quant_impl.h — private to the quant module: block layouts and the kernel tables that
 * quant.c dispatches through.
 *
 * Each instruction set fills a quant_kernels table; entries it leaves NULL fall back to
 * the table of the next lower instruction set, ending at the scalar references, so an
 * ISA file only has to provide what it speeds up.
 *
 * Blocks hold 16-bit fields, so block pointers need 2-byte alignment (4 for Q8_K);
 * GGUF tensor data (32-byte aligned) and every row of an even-sized block satisfy it.
 */
#ifndef LLMFS_QUANT_IMPL_H
#define LLMFS_QUANT_IMPL_H

#include "quant.h"

#include <string.h>

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256

typedef struct { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
typedef struct { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;
/* s = d * sum(qs), which lets Q4_1/Q5_1 apply their offset m without touching qs. */
typedef struct { uint16_t d, s; int8_t qs[QK8_1]; } block_q8_1;

/* K-quants: super-blocks of 256 with per-sub-block scales. */
typedef struct {
    uint8_t scales[QK_K / 16]; /* low nibble scale, high nibble min, per 16 */
    uint8_t qs[QK_K / 4];      /* 2-bit quants */
    uint16_t d, dmin;
} block_q2_K;
typedef struct {
    uint8_t hmask[QK_K / 8];   /* high bit of each 3-bit quant */
    uint8_t qs[QK_K / 4];      /* low 2 bits */
    uint8_t scales[12];        /* 16 6-bit signed scales, biased by 32 */
    uint16_t d;
} block_q3_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];        /* 8 6-bit scales and 8 6-bit mins, per 32 */
    uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
typedef struct {
    uint8_t ql[QK_K / 2];      /* low 4 bits */
    uint8_t qh[QK_K / 4];      /* high 2 bits */
    int8_t scales[QK_K / 16];
    uint16_t d;
} block_q6_K;
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];  /* sums of qs per 16, for the K-quants' min terms */
} block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1 layout");
_Static_assert(sizeof(block_q2_K) == 84, "q2_K layout");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K layout");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K layout");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K layout");

typedef void (*quant_dequant_fn)(const void *src, float *dst, int64_t n);
typedef void (*quant_quant_fn)(const float *src, void *dst, int64_t n);
typedef float (*quant_dot_fn)(int64_t n, const void *w, const void *a);
/* gemm_tile's contract: nr <= QUANT_TILE_R, nc <= QUANT_TILE_C. */
typedef void (*quant_tile_fn)(int64_t n, int nr, int nc, const void *w, size_t w_stride,
                              const void *a, size_t a_stride, float *out, size_t out_stride);

typedef struct quant_kernels {
    quant_dequant_fn dequantize[T_COUNT];
    quant_quant_fn quantize[T_COUNT];
    quant_dot_fn vec_dot[T_COUNT];
    quant_tile_fn tile[T_COUNT];
} quant_kernels;

/* Each fills the entries its instruction set provides and leaves the rest alone. */
void quant_ref_fill(quant_kernels *k);
void quant_ref_fill_quantize(quant_kernels *k);
void quant_avx2_fill(quant_kernels *k);
void quant_avx512_fill(quant_kernels *k);

/* ---- helpers shared by the scalar code ---- */

/* Round half to even, like the x86 conversion instructions in their default mode;
 * valid for |x| < 2^22, which every caller guarantees (quants are small integers). */
static inline int quant_nearest_int(float x)
{
    float v = x + 12582912.f; /* 1.5 * 2^23: the integer lands in the low mantissa bits */
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block: j < 4 sit in the
 * low 6 bits of bytes j and j+4; j >= 4 split into a nibble of byte j+4 and the top two
 * bits of bytes j-4 (scale) and j (min). */
static inline void quant_k4_scale_min(int j, const uint8_t *s, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* The 16 signed 6-bit scales of a Q3_K block: low nibbles in bytes 0..7 (scales 0..7
 * low, 8..15 high), the top two bits packed four to a byte in bytes 8..11. */
static inline void quant_k3_scales(const uint8_t *s, int8_t out[16])
{
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
        int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

#endif
