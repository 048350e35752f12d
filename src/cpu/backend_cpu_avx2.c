/* backend_cpu_avx2.c — AVX2/F16C/FMA versions of the CPU backend's inner loops. */
#include <stdbool.h>

#include "backend_cpu_impl.h"

#include <cpuid.h>
#include <immintrin.h>
#include <math.h>

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Cache rows are one head's slice of a longer row: a strided walk the hardware
 * prefetchers follow poorly, so the rows a few steps ahead are requested explicitly
 * (reading a little past the last row is harmless: prefetches do not fault). */
#define PF_AHEAD 8

static inline void prefetch_row(const uint8_t *p, int bytes)
{
    for (int o = 0; o < bytes; o += 64)
        _mm_prefetch((const char *)p + o, _MM_HINT_T0);
}

static inline __m256 load_f16x8(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* Each K row is read once for all g heads; two accumulators per head hide the FMA
 * latency for the usual head sizes. */
static void scores_f16(const uint8_t *k, size_t k_stride, int n, const float *q, int g, int hd,
                       float scale, float *out, size_t out_stride)
{
    for (int j = 0; j < n; j++) {
        const uint16_t *kr = (const uint16_t *)(k + (size_t)j * k_stride);
        prefetch_row(k + (size_t)(j + PF_AHEAD) * k_stride, hd * 2);
        for (int h = 0; h < g; h++) {
            const float *qh = q + (size_t)h * hd;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            int d = 0;
            for (; d + 16 <= hd; d += 16) {
                a0 = _mm256_fmadd_ps(load_f16x8(kr + d), _mm256_loadu_ps(qh + d), a0);
                a1 = _mm256_fmadd_ps(load_f16x8(kr + d + 8), _mm256_loadu_ps(qh + d + 8), a1);
            }
            for (; d + 8 <= hd; d += 8)
                a0 = _mm256_fmadd_ps(load_f16x8(kr + d), _mm256_loadu_ps(qh + d), a0);
            float s = hsum8(_mm256_add_ps(a0, a1));
            for (; d < hd; d++)
                s += qh[d] * _cvtsh_ss(kr[d]);
            out[(size_t)h * out_stride + j] = s * scale;
        }
    }
}

/* Dimensions in chunks of 32 (one cache line of f16) with up to 4 heads at a time, so
 * the accumulators stay in registers while every cell streams past. LOAD8 turns 8
 * elements of a value row into floats. */
#define DEFINE_ACCUM(NAME, T, LOAD8, TOF)                                                        \
    static void NAME(float *acc, const uint8_t *v, size_t v_stride, int n, const float *p,       \
                     size_t p_stride, int g, int hd)                                             \
    {                                                                                            \
        int d = 0;                                                                               \
        for (; d + 32 <= hd; d += 32)                                                            \
            for (int h0 = 0; h0 < g; h0 += 4) {                                                  \
                int gh = g - h0 < 4 ? g - h0 : 4;                                                \
                __m256 a[4][4];                                                                  \
                for (int h = 0; h < gh; h++)                                                     \
                    for (int c = 0; c < 4; c++)                                                  \
                        a[h][c] = _mm256_loadu_ps(acc + (size_t)(h0 + h) * hd + d + 8 * c);      \
                for (int j = 0; j < n; j++) {                                                    \
                    const T *vr = (const T *)(v + (size_t)j * v_stride) + d;                     \
                    _mm_prefetch((const char *)(vr) + PF_AHEAD * v_stride, _MM_HINT_T0);         \
                    __m256 x0 = LOAD8(vr), x1 = LOAD8(vr + 8), x2 = LOAD8(vr + 16),              \
                           x3 = LOAD8(vr + 24);                                                  \
                    for (int h = 0; h < gh; h++) {                                               \
                        __m256 pj = _mm256_set1_ps(p[(size_t)(h0 + h) * p_stride + j]);          \
                        a[h][0] = _mm256_fmadd_ps(pj, x0, a[h][0]);                              \
                        a[h][1] = _mm256_fmadd_ps(pj, x1, a[h][1]);                              \
                        a[h][2] = _mm256_fmadd_ps(pj, x2, a[h][2]);                              \
                        a[h][3] = _mm256_fmadd_ps(pj, x3, a[h][3]);                              \
                    }                                                                            \
                }                                                                                \
                for (int h = 0; h < gh; h++)                                                     \
                    for (int c = 0; c < 4; c++)                                                  \
                        _mm256_storeu_ps(acc + (size_t)(h0 + h) * hd + d + 8 * c, a[h][c]);      \
            }                                                                                    \
        for (; d + 8 <= hd; d += 8)                                                              \
            for (int h = 0; h < g; h++) {                                                        \
                __m256 a = _mm256_loadu_ps(acc + (size_t)h * hd + d);                            \
                for (int j = 0; j < n; j++) {                                                    \
                    const T *vr = (const T *)(v + (size_t)j * v_stride) + d;                     \
                    a = _mm256_fmadd_ps(_mm256_set1_ps(p[(size_t)h * p_stride + j]), LOAD8(vr), a); \
                }                                                                                \
                _mm256_storeu_ps(acc + (size_t)h * hd + d, a);                                   \
            }                                                                                    \
        for (; d < hd; d++)                                                                      \
            for (int h = 0; h < g; h++)                                                          \
                for (int j = 0; j < n; j++)                                                      \
                    acc[(size_t)h * hd + d] += p[(size_t)h * p_stride + j] *                     \
                                               TOF(((const T *)(v + (size_t)j * v_stride))[d]);  \
    }

#define F32_IDENT(x) (x)
DEFINE_ACCUM(accum_f16, uint16_t, load_f16x8, _cvtsh_ss)
DEFINE_ACCUM(accum_f32_rows, float, _mm256_loadu_ps, F32_IDENT)

static void accum_f32(float *acc, const float *v, size_t v_stride, int n, const float *p, size_t p_stride,
                      int g, int hd)
{
    accum_f32_rows(acc, (const uint8_t *)v, v_stride, n, p, p_stride, g, hd);
}

static void round_f16(float *x, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i),
                                                                _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++)
        x[i] = _cvtsh_ss(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
}

/* exp(x) for x <= 0 region and beyond, to about 2 ulp: 2^(x log2 e) split into an
 * integer power (exponent bits) and a degree-6 polynomial of the fraction. */
static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
    __m256 fi = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x - fi * ln2 in two steps for accuracy */
    __m256 r = _mm256_fnmadd_ps(fi, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(fi, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fi), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 swiglu8(__m256 g, __m256 u)
{
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

/* The tail (n % 8) goes through the same 8-lane arithmetic, padded: an element's result
 * must not depend on where the split of a batch's rows over calls and threads puts it,
 * or a token evaluated alone and the same token in a batch would differ. */
static void swiglu(float *out, const float *gate, const float *up, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, swiglu8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
    if (i < n) {
        float g[8] = {0}, u[8] = {0}, o[8];
        for (int64_t j = i; j < n; j++)
            g[j - i] = gate[j], u[j - i] = up[j];
        _mm256_storeu_ps(o, swiglu8(_mm256_loadu_ps(g), _mm256_loadu_ps(u)));
        for (int64_t j = i; j < n; j++)
            out[j] = o[j - i];
    }
}

/* The delta rule's row update, 8 lanes at a time (two passes over the row, as the
 * scalar loop: decay and s.k, then the update and s.q). */
static float delta_row(float *s, const float *k, const float *q, int d, float decay, float beta, float v)
{
    const __m256 dv = _mm256_set1_ps(decay);
    __m256 u8 = _mm256_setzero_ps();
    int x = 0;
    for (; x + 8 <= d; x += 8) {
        __m256 sv = _mm256_mul_ps(_mm256_loadu_ps(s + x), dv);
        _mm256_storeu_ps(s + x, sv);
        u8 = _mm256_fmadd_ps(sv, _mm256_loadu_ps(k + x), u8);
    }
    float u = hsum8(u8);
    for (; x < d; x++) {
        s[x] *= decay;
        u += s[x] * k[x];
    }
    const float delta = beta * (v - u);
    const __m256 del = _mm256_set1_ps(delta);
    __m256 a8 = _mm256_setzero_ps();
    for (x = 0; x + 8 <= d; x += 8) {
        __m256 sv = _mm256_fmadd_ps(_mm256_loadu_ps(k + x), del, _mm256_loadu_ps(s + x));
        _mm256_storeu_ps(s + x, sv);
        a8 = _mm256_fmadd_ps(sv, _mm256_loadu_ps(q + x), a8);
    }
    float acc = hsum8(a8);
    for (; x < d; x++) {
        s[x] += k[x] * delta;
        acc += s[x] * q[x];
    }
    return acc;
}

bool cpu_kernels_avx2(cpu_kernels *k)
{
    /* clang's __builtin_cpu_supports does not know "f16c"; cpuid leaf 1 tells. */
    unsigned a, b, c, d;
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
        !__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_F16C))
        return false;
    k->scores_f16 = scores_f16;
    k->accum_f16 = accum_f16;
    k->accum_f32 = accum_f32;
    k->round_f16 = round_f16;
    k->swiglu = swiglu;
    k->delta_row = delta_row;
    return true;
}
