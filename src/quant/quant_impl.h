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

/* Non-linear 4-bit codes: IQ4_NL (32 per block) and IQ4_XS (256, with 6-bit scales per
 * 32: low nibbles in scales_l, high two bits in scales_h); MXFP4 (32 per block, E8M0
 * exponent first, so blocks are 17 bytes and byte-aligned). */
typedef struct { uint16_t d; uint8_t qs[16]; } block_iq4_nl;
typedef struct { uint16_t d, scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } block_iq4_xs;
typedef struct { uint8_t e; uint8_t qs[16]; } block_mxfp4;
/* Grid types (quant_grids.h): indices into a grid of 4 or 8 magnitudes, signs and block
 * scales. IQ1_M has no d field: its f16 scale is spread over the top nibbles of the
 * four 16-bit words of scales. */
typedef struct { uint16_t d; uint16_t qs[32]; } block_iq2_xxs;
typedef struct { uint16_t d; uint16_t qs[32]; uint8_t scales[8]; } block_iq2_xs;
typedef struct { uint16_t d; uint8_t qs[64]; uint8_t qh[8]; uint8_t scales[8]; } block_iq2_s;
typedef struct { uint16_t d; uint8_t qs[96]; } block_iq3_xxs;
typedef struct { uint16_t d; uint8_t qs[64]; uint8_t qh[8]; uint8_t signs[32]; uint8_t scales[4]; } block_iq3_s;
typedef struct { uint16_t d; uint8_t qs[32]; uint16_t qh[8]; } block_iq1_s;
typedef struct { uint8_t qs[32]; uint8_t qh[16]; uint8_t scales[8]; } block_iq1_m;
/* Ternary: d stored last. */
typedef struct { uint8_t qs[48]; uint8_t qh[4]; uint16_t d; } block_tq1_0;
typedef struct { uint8_t qs[64]; uint16_t d; } block_tq2_0;

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
_Static_assert(sizeof(block_iq4_nl) == 18, "iq4_nl layout");
_Static_assert(sizeof(block_iq4_xs) == 136, "iq4_xs layout");
_Static_assert(sizeof(block_mxfp4) == 17, "mxfp4 layout");
_Static_assert(sizeof(block_iq2_xxs) == 66, "iq2_xxs layout");
_Static_assert(sizeof(block_iq2_xs) == 74, "iq2_xs layout");
_Static_assert(sizeof(block_iq2_s) == 82, "iq2_s layout");
_Static_assert(sizeof(block_iq3_xxs) == 98, "iq3_xxs layout");
_Static_assert(sizeof(block_iq3_s) == 110, "iq3_s layout");
_Static_assert(sizeof(block_iq1_s) == 50, "iq1_s layout");
_Static_assert(sizeof(block_iq1_m) == 56, "iq1_m layout");
_Static_assert(sizeof(block_tq1_0) == 54, "tq1_0 layout");
_Static_assert(sizeof(block_tq2_0) == 66, "tq2_0 layout");

/* ---- the 256-element IQ/TQ types in one integer form ----
 *
 * Every super-block of IQ4_XS, the IQ3/IQ2/IQ1 grid types and TQ1_0/TQ2_0 decodes to
 * 256 small signed integers q, a signed integer scale per 16 elements and one float
 * factor d, with element i = (d * sc[i/16]) * q[i] (computed in that order, which gives
 * the bits of ggml's own decoders). Odd scales 2s+1 and the ×0.5/×0.25/×0.125 of the
 * IQ2/IQ3 types go into sc and d; IQ1's ±1/8 offsets are folded in by storing 8 × the
 * grid value ± 1 and d / 8. So a dot product with Q8_K activations is integer sums per
 * 16, times sc, summed, times d × d_a, for every one of these types: one kernel serves
 * them all and each type only needs a decoder. |q| <= 127. */
typedef struct {
    int8_t q[QK_K];
    int16_t sc[QK_K / 16];
    float d;
} quant_sblock;
typedef void (*quant_sdecode_fn)(const void *blk, quant_sblock *out);
/* The scalar decoder of such a type, NULL for others. */
quant_sdecode_fn quant_ref_sdecoder(int type);

/* The grids of quant_grids.h expanded to one byte per element (magnitudes for IQ2/IQ3,
 * signed values for IQ1), and the sign masks: byte j of quant_sign_bytes[k] is 0xFF
 * when element j of an 8-group is negative for the 7-bit sign index k, whose eighth
 * sign is the parity bit (an even count of minus signs). Ready once quant_grids_init has
 * run, which quant.c does before any kernel table exists. */
extern uint8_t quant_grid_iq2xxs[256][8];
extern uint8_t quant_grid_iq2xs[512][8];
extern uint8_t quant_grid_iq2s[1024][8];
extern uint8_t quant_grid_iq3xxs[256][4];
extern uint8_t quant_grid_iq3s[512][4];
extern int8_t quant_grid_iq1s[2048][8];
extern uint8_t quant_sign_bytes[128][8];
/* The packed IQ2_XXS, IQ2_XS and IQ3_XXS grids themselves (quant_grids.h: one 16-bit
 * word per entry, 2 or 3 bits per element), 64-byte aligned, for kernels that look
 * entries up in registers. */
extern const uint16_t quant_grid_iq2xxs_packed[256];
extern const uint16_t quant_grid_iq2xs_packed[512];
extern const uint16_t quant_grid_iq3xxs_packed[256];
extern const int8_t quant_iq4nl_values[16];
extern const int8_t quant_mxfp4_values[16];
void quant_grids_init(void);

/* MXFP4's block scale: 2^(e - 128), half the E8M0 value because the code points are
 * stored doubled. e = 0 and 1 give the float denormals 2^-128, 2^-127. */
static inline float quant_e8m0_half(uint8_t e)
{
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

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
void quant_ref_fill_iq(quant_kernels *k);
void quant_avx2_fill(quant_kernels *k);
void quant_iq_avx2_fill(quant_kernels *k); /* called by quant_avx2_fill */
void quant_avx512_fill(quant_kernels *k);
void quant_iq_avx512_fill(quant_kernels *k); /* called by quant_avx512_fill */

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
