/* backend_cpu_impl.h — the CPU backend's inner loops that have ISA-specific versions.
 *
 * Attention over an f16 cache for a group of g query heads sharing one KV head, and
 * the few elementwise loops worth vectorising. backend_cpu.c holds the portable
 * versions; backend_cpu_avx2.c the AVX2/F16C/FMA ones, chosen at run time.
 */
#ifndef LLMFS_BACKEND_CPU_IMPL_H
#define LLMFS_BACKEND_CPU_IMPL_H

#include <stddef.h>
#include <stdint.h>

typedef struct cpu_kernels {
    /* out[h * out_stride + j] = scale * dot(q[h], k row j), h < g, j < n; k rows are f16,
     * k_stride bytes apart; q [g][hd] floats. */
    void (*scores_f16)(const uint8_t *k, size_t k_stride, int n, const float *q, int g, int hd,
                       float scale, float *out, size_t out_stride);
    /* acc[h][d] += sum_j p[h * p_stride + j] * v row j [d], h < g, j < n, d < hd; v rows
     * are f16, v_stride bytes apart. */
    void (*accum_f16)(float *acc, const uint8_t *v, size_t v_stride, int n, const float *p,
                      size_t p_stride, int g, int hd);
    /* the same with f32 value rows */
    void (*accum_f32)(float *acc, const float *v, size_t v_stride, int n, const float *p,
                      size_t p_stride, int g, int hd);
    /* x[i] = the f16 nearest x[i] (ties to even), as a float */
    void (*round_f16)(float *x, int n);
    /* out[i] = silu(gate[i]) * up[i] */
    void (*swiglu)(float *out, const float *gate, const float *up, int64_t n);
    /* One row s[0..d) of a gated delta rule state (one value dim of one head), one
     * token: s = decay s; s += beta (v - s.k) k; returns s.q (the updated state's). */
    float (*delta_row)(float *s, const float *k, const float *q, int d, float decay, float beta, float v);
} cpu_kernels;

/* Fills k with the AVX2 versions; false if this CPU lacks AVX2, FMA or F16C. */
bool cpu_kernels_avx2(cpu_kernels *k);

#endif
