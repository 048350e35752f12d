/* quant.h — tensor element types: block layouts, conversion, dot products, matmul tiles.
 *
 * Type ids and block layouts are GGUF's (ggml's). Each weight type has a "dot type": the
 * form activations are converted to before a dot product with it (F32 for F32, F16 for
 * F16, BF16 for BF16, Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL/MXFP4, Q8_1 for Q4_1/Q5_1, Q8_K for
 * the K-quants and the other IQ and TQ types), which is how llama.cpp rounds activations
 * too.
 *
 * Every operation has a plain scalar reference (quant_ref_*); the fast paths (AVX2,
 * AVX-512) are chosen once at run time from the CPU's features and are tested against
 * the reference.
 *
 * Activations are quantized as llama.cpp's x86 build does (Q8_0/Q8_1: d = amax/127 and
 * q = round-half-even(x * 127/amax); Q8_K: scale from the signed extreme, -127/max, plus
 * the sums of each 16 quants), so their quants are always in [-127, 127]; the kernels
 * rely on that for activations (weights may hold any value).
 *
 * Rows are blocks of 16-bit fields: row pointers must be 2-byte aligned, Q8_K rows
 * 4-byte aligned (GGUF tensor data and malloc'd buffers are).
 */
#ifndef LLMFS_QUANT_H
#define LLMFS_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ggml_type {
    T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7,
    T_Q8_0 = 8, T_Q8_1 = 9, T_Q2_K = 10, T_Q3_K = 11, T_Q4_K = 12, T_Q5_K = 13,
    T_Q6_K = 14, T_Q8_K = 15, T_IQ2_XXS = 16, T_IQ2_XS = 17, T_IQ3_XXS = 18,
    T_IQ1_S = 19, T_IQ4_NL = 20, T_IQ3_S = 21, T_IQ2_S = 22, T_IQ4_XS = 23, T_IQ1_M = 29,
    T_BF16 = 30, T_TQ1_0 = 34, T_TQ2_0 = 35, T_MXFP4 = 39,
    T_COUNT = 40 /* ids below this may be looked up; unsupported ones have no traits */
};

typedef struct type_traits {
    const char *name;     /* "q4_K" style, as ggml names them */
    int block;            /* elements per block */
    size_t block_bytes;   /* bytes per block */
    int dot_type;         /* the activation type for dot products with this weight type */
    bool has_quantize;    /* quantize_row is available */
} type_traits;

/* NULL for ids that are unknown or unsupported. */
const type_traits *type_info(int type);
/* Parses "q8_0", "Q4_K", "f16", "bf16", ... (case-insensitive); -1 if unknown. */
int type_from_name(const char *name);
/* Bytes of a row of n elements (n must be a multiple of the block). Row lengths passed
 * to every function below must be multiples of the type's block too. */
size_t type_row_bytes(int type, int64_t n);

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);         /* round to nearest even */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);        /* round to nearest even */

/* n elements of type `type` at src -> floats. */
void dequantize_row(int type, const void *src, float *dst, int64_t n);
/* n floats -> type (has_quantize types, and every dot type). */
void quantize_row(int type, const float *src, void *dst, int64_t n);

/* Dot product of one row of weight type `type` with one activation row already in
 * type_info(type)->dot_type, both n elements. */
float vec_dot(int type, int64_t n, const void *w, const void *a);

/* A matmul tile: out[c * out_stride + r] = dot(w row r, a row c) for r < nr, c < nc,
 * where nr <= QUANT_TILE_R and nc <= QUANT_TILE_C. Rows are n elements long; w rows
 * are w_stride bytes apart, a rows a_stride bytes apart (a already in the dot type).
 * Fast paths load each weight block once for all nc activation rows. */
#define QUANT_TILE_R 4
#define QUANT_TILE_C 4
void gemm_tile(int type, int64_t n, int nr, int nc,
               const void *w, size_t w_stride, const void *a, size_t a_stride,
               float *out, size_t out_stride);

/* Decode's matrix-vector product: out[r] = dot(w row r, a) for r < nr (any nr), with
 * w rows w_stride bytes apart. Fast paths share each activation load among several
 * weight rows. */
void vec_dot_rows(int type, int64_t n, int nr, const void *w, size_t w_stride, const void *a,
                  float *out);

/* gemm_tile for any nr and nc: out[c * out_stride + r] = dot(w row r, a row c). Runs
 * tile by tile, each group of weight rows once over all activation rows, so the
 * weights are read from memory once. Threads split the rows (or columns) among
 * themselves. */
void quant_gemm(int type, int64_t n, int nr, int nc, const void *w, size_t w_stride,
                const void *a, size_t a_stride, float *out, size_t out_stride);

/* The instruction set in use: "scalar", "avx2", "avx512". quant_force_isa lets tests
 * pin one (returns false if this CPU lacks it); NULL or "auto" restores the best.
 * Not for use while other threads run kernels. */
const char *quant_isa(void);
bool quant_force_isa(const char *name);

/* Scalar references, always available, for tests. */
float quant_ref_vec_dot(int type, int64_t n, const void *w, const void *a);
void quant_ref_quantize_row(int type, const float *src, void *dst, int64_t n);
void quant_ref_dequantize_row(int type, const void *src, float *dst, int64_t n);

#endif
