/* quant_ref_quantize.c — scalar quantizers: floats to every type.
 *
 * Activation types (Q8_0, Q8_1, Q8_K, F16, BF16) round exactly as llama.cpp's x86 build
 * does, since the reference logits were computed that way:
 *   Q8_0/Q8_1: d = amax/127, q = round_half_even(x * (127/amax)); Q8_1 adds s = d*sum(q);
 *   Q8_K: m = the element of largest magnitude (signed), q = round_half_even(x * -127/m),
 *         d = m/-127, and the sums of each 16 quants.
 * Weight types use round-to-nearest with a small search for each block's scale (and
 * min) that minimises the squared error; good enough for writing test models, not a
 * match for llama-quantize's importance-weighted search.
 */
#include "quant_impl.h"

#include <float.h>
#include <math.h>

static inline int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---------------- activation types ---------------- */

static void q_f32(const float *x, void *dst, int64_t n)
{
    memcpy(dst, x, (size_t)n * sizeof(float));
}

static void q_f16(const float *x, void *dst, int64_t n)
{
    uint16_t *y = dst;
    for (int64_t i = 0; i < n; i++)
        y[i] = f32_to_f16(x[i]);
}

static void q_bf16(const float *x, void *dst, int64_t n)
{
    uint16_t *y = dst;
    for (int64_t i = 0; i < n; i++)
        y[i] = f32_to_bf16(x[i]);
}

/* Returns d; q[32] gets the quants. */
static float q8_block(const float *x, int8_t *q, int *sum)
{
    float amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.f;
    float id = amax != 0 ? 127.f / amax : 0.f;
    int s = 0;
    for (int j = 0; j < 32; j++) {
        q[j] = (int8_t)clampi(quant_nearest_int(x[j] * id), -127, 127);
        s += q[j];
    }
    *sum = s;
    return d;
}

static void q_q8_0(const float *x, void *dst, int64_t n)
{
    block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / QK8_0; b++, x += QK8_0) {
        int s;
        y[b].d = f32_to_f16(q8_block(x, y[b].qs, &s));
    }
}

static void q_q8_1(const float *x, void *dst, int64_t n)
{
    block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / QK8_1; b++, x += QK8_1) {
        int s;
        float d = q8_block(x, y[b].qs, &s);
        y[b].d = f32_to_f16(d);
        y[b].s = f32_to_f16(d * (float)s);
    }
}

static void q_q8_K(const float *x, void *dst, int64_t n)
{
    block_q8_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float amax = 0, max = 0;
        for (int j = 0; j < QK_K; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        if (amax == 0) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++)
            y[b].qs[j] = (int8_t)clampi(quant_nearest_int(iscale * x[j]), -127, 127);
        for (int j = 0; j < QK_K / 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += y[b].qs[16 * j + l];
            y[b].bsums[j] = (int16_t)s;
        }
        y[b].d = 1 / iscale;
    }
}

/* ---------------- scale searches for weight types ---------------- */

/* Symmetric: x ~ d*q with q in [qmin, qmax], qmin = -(qmax+1). The element of largest
 * magnitude maps near qmin (the side with one more level); tries a few divisors around
 * that and keeps the d with the least squared error. */
static float fit_symmetric(const float *x, int n, int qmax, int8_t *q)
{
    int qmin = -qmax - 1;
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < 1e-30f) {
        memset(q, 0, (size_t)n);
        return 0;
    }
    float best_d = 0, best_err = FLT_MAX;
    for (int k = -8; k <= 8; k++) {
        float d = max / ((float)qmin + 0.125f * (float)k);
        float err = 0;
        for (int i = 0; i < n; i++) {
            int v = clampi(quant_nearest_int(x[i] / d), qmin, qmax);
            float e = x[i] - d * (float)v;
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_d = d;
        }
    }
    for (int i = 0; i < n; i++)
        q[i] = (int8_t)clampi(quant_nearest_int(x[i] / best_d), qmin, qmax);
    return best_d;
}

/* Asymmetric: x ~ scale*q - mn with q in [0, qmax] and mn >= 0 (an offset below zero).
 * Tries several ranges; for each set of quants solves least squares for scale and mn. */
static float fit_affine(const float *x, int n, int qmax, uint8_t *q, float *mn_out)
{
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    if (lo > 0)
        lo = 0;
    if (hi - lo < 1e-30f) {
        memset(q, 0, (size_t)n);
        *mn_out = -lo;
        return 0;
    }
    float best_scale = (hi - lo) / (float)qmax, best_min = lo, best_err = FLT_MAX;
    uint8_t l[QK_K];
    for (int k = -10; k <= 10; k++) {
        float iscale = ((float)qmax + 0.1f * (float)k) / (hi - lo);
        double sl = 0, sll = 0, sx = 0, slx = 0;
        for (int i = 0; i < n; i++) {
            l[i] = (uint8_t)clampi(quant_nearest_int(iscale * (x[i] - lo)), 0, qmax);
            sl += l[i];
            sll += (double)l[i] * l[i];
            sx += x[i];
            slx += (double)l[i] * x[i];
        }
        double det = n * sll - sl * sl;
        if (det <= 0)
            continue;
        float scale = (float)((n * slx - sx * sl) / det);
        float min = (float)((sll * sx - sl * slx) / det);
        if (min > 0) { /* the offset may only go down: refit the scale alone */
            min = 0;
            scale = sll > 0 ? (float)(slx / sll) : 0;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float e = scale * l[i] + min - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_scale = scale;
            best_min = min;
        }
    }
    for (int i = 0; i < n; i++)
        q[i] = best_scale > 0
                   ? (uint8_t)clampi(quant_nearest_int((x[i] - best_min) / best_scale), 0, qmax)
                   : 0;
    *mn_out = -best_min;
    return best_scale;
}

/* ---------------- 32-element types ---------------- */

static void q_q4_0(const float *x, void *dst, int64_t n)
{
    block_q4_0 *y = dst;
    int8_t q[32];
    for (int64_t b = 0; b < n / QK4_0; b++, x += QK4_0) {
        /* requantize with the stored (f16) scale */
        uint16_t h = f32_to_f16(fit_symmetric(x, 32, 7, q));
        y[b].d = h;
        float d0 = f16_to_f32(h);
        for (int j = 0; j < 32; j++)
            q[j] = (int8_t)(d0 != 0 ? clampi(quant_nearest_int(x[j] / d0), -8, 7) : 0);
        for (int j = 0; j < 16; j++)
            y[b].qs[j] = (uint8_t)((q[j] + 8) | ((q[j + 16] + 8) << 4));
    }
}

static void q_q5_0(const float *x, void *dst, int64_t n)
{
    block_q5_0 *y = dst;
    int8_t q[32];
    for (int64_t b = 0; b < n / QK5_0; b++, x += QK5_0) {
        uint16_t h = f32_to_f16(fit_symmetric(x, 32, 15, q));
        y[b].d = h;
        float d0 = f16_to_f32(h);
        uint32_t qh = 0;
        for (int j = 0; j < 32; j++) {
            int v = (d0 != 0 ? clampi(quant_nearest_int(x[j] / d0), -16, 15) : 0) + 16;
            q[j] = (int8_t)(v & 0xF);
            qh |= (uint32_t)(v >> 4) << j;
        }
        for (int j = 0; j < 16; j++)
            y[b].qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
        memcpy(y[b].qh, &qh, sizeof qh);
    }
}

/* min/max affine for Q4_1/Q5_1: x ~ d*q + m. */
static void affine32(const float *x, int qmax, uint16_t *dh, uint16_t *mh, uint8_t *q)
{
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
        lo = fminf(lo, x[j]);
        hi = fmaxf(hi, x[j]);
    }
    *dh = f32_to_f16((hi - lo) / (float)qmax);
    *mh = f32_to_f16(lo);
    float d = f16_to_f32(*dh), m = f16_to_f32(*mh);
    for (int j = 0; j < 32; j++)
        q[j] = (uint8_t)(d != 0 ? clampi(quant_nearest_int((x[j] - m) / d), 0, qmax) : 0);
}

static void q_q4_1(const float *x, void *dst, int64_t n)
{
    block_q4_1 *y = dst;
    uint8_t q[32];
    for (int64_t b = 0; b < n / QK4_1; b++, x += QK4_1) {
        affine32(x, 15, &y[b].d, &y[b].m, q);
        for (int j = 0; j < 16; j++)
            y[b].qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
    }
}

static void q_q5_1(const float *x, void *dst, int64_t n)
{
    block_q5_1 *y = dst;
    uint8_t q[32];
    for (int64_t b = 0; b < n / QK5_1; b++, x += QK5_1) {
        affine32(x, 31, &y[b].d, &y[b].m, q);
        uint32_t qh = 0;
        for (int j = 0; j < 32; j++)
            qh |= (uint32_t)(q[j] >> 4) << j;
        for (int j = 0; j < 16; j++)
            y[b].qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
        memcpy(y[b].qh, &qh, sizeof qh);
    }
}

/* ---------------- K-quants ---------------- */

/* Quantizes per-sub-block scales (all >= 0) to `levels` steps of a super-block scale,
 * stored as f16; returns the stored scale and fills l[]. */
static float quantize_scales_unsigned(const float *s, int n, int levels, uint8_t *l, uint16_t *h)
{
    float max = 0;
    for (int j = 0; j < n; j++)
        max = fmaxf(max, s[j]);
    *h = f32_to_f16(max / (float)levels);
    float d = f16_to_f32(*h);
    for (int j = 0; j < n; j++)
        l[j] = (uint8_t)(d > 0 ? clampi(quant_nearest_int(s[j] / d), 0, levels) : 0);
    return d;
}

/* Q4_K/Q5_K share everything but the width of the quants. */
static void k4_like(const float *x, int qmax, uint16_t *dh, uint16_t *mh, uint8_t scales[12],
                    uint8_t q[QK_K])
{
    float sc[8], mn[8];
    uint8_t ls[8], lm[8];
    for (int g = 0; g < 8; g++)
        sc[g] = fit_affine(x + 32 * g, 32, qmax, q + 32 * g, &mn[g]);
    float d = quantize_scales_unsigned(sc, 8, 63, ls, dh);
    float dmin = quantize_scales_unsigned(mn, 8, 63, lm, mh);
    memset(scales, 0, 12);
    for (int g = 0; g < 8; g++) {
        if (g < 4) {
            scales[g] |= ls[g];
            scales[g + 4] |= lm[g];
        } else {
            scales[g + 4] = (uint8_t)((ls[g] & 0xF) | ((lm[g] & 0xF) << 4));
            scales[g - 4] |= (uint8_t)((ls[g] >> 4) << 6);
            scales[g] |= (uint8_t)((lm[g] >> 4) << 6);
        }
        float s = d * ls[g], m = dmin * lm[g];
        for (int l = 0; l < 32; l++)
            q[32 * g + l] =
                (uint8_t)(s > 0 ? clampi(quant_nearest_int((x[32 * g + l] + m) / s), 0, qmax) : 0);
    }
}

static void q_q4_K(const float *x, void *dst, int64_t n)
{
    block_q4_K *y = dst;
    uint8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        k4_like(x, 15, &y[b].d, &y[b].dmin, y[b].scales, q);
        for (int g = 0; g < 8; g += 2)
            for (int l = 0; l < 32; l++)
                y[b].qs[16 * g + l] = (uint8_t)(q[32 * g + l] | (q[32 * g + 32 + l] << 4));
    }
}

static void q_q5_K(const float *x, void *dst, int64_t n)
{
    block_q5_K *y = dst;
    uint8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        k4_like(x, 31, &y[b].d, &y[b].dmin, y[b].scales, q);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int g = 0; g < 8; g++)
            for (int l = 0; l < 32; l++)
                y[b].qh[l] |= (uint8_t)((q[32 * g + l] >> 4) << g);
        for (int g = 0; g < 8; g += 2)
            for (int l = 0; l < 32; l++)
                y[b].qs[16 * g + l] =
                    (uint8_t)((q[32 * g + l] & 0xF) | ((q[32 * g + 32 + l] & 0xF) << 4));
    }
}

/* Packs 2-bit values v[256] the Q2_K/Q3_K way. */
static void pack_2bit(const uint8_t *v, uint8_t qs[64])
{
    for (int half = 0; half < 2; half++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *p = v + 128 * half + l;
            qs[32 * half + l] = (uint8_t)((p[0] & 3) | ((p[32] & 3) << 2) | ((p[64] & 3) << 4) |
                                          ((p[96] & 3) << 6));
        }
}

static void q_q2_K(const float *x, void *dst, int64_t n)
{
    block_q2_K *y = dst;
    uint8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float sc[16], mn[16];
        uint8_t ls[16], lm[16];
        for (int j = 0; j < 16; j++)
            sc[j] = fit_affine(x + 16 * j, 16, 3, q + 16 * j, &mn[j]);
        float d = quantize_scales_unsigned(sc, 16, 15, ls, &y[b].d);
        float dmin = quantize_scales_unsigned(mn, 16, 15, lm, &y[b].dmin);
        for (int j = 0; j < 16; j++) {
            y[b].scales[j] = (uint8_t)(ls[j] | (lm[j] << 4));
            float s = d * ls[j], m = dmin * lm[j];
            for (int l = 0; l < 16; l++)
                q[16 * j + l] =
                    (uint8_t)(s > 0 ? clampi(quant_nearest_int((x[16 * j + l] + m) / s), 0, 3) : 0);
        }
        pack_2bit(q, y[b].qs);
    }
}

/* Signed sub-block scales to int steps of a super-block scale: the largest magnitude
 * maps to -steps (e.g. -32 for Q3_K, -128 for Q6_K), clamped to steps-1 above. */
static float quantize_scales_signed(const float *s, int n, int steps, int8_t *l, uint16_t *h)
{
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (fabsf(s[j]) > amax) {
            amax = fabsf(s[j]);
            max = s[j];
        }
    *h = f32_to_f16(amax > 0 ? max / (float)-steps : 0.f);
    float d = f16_to_f32(*h);
    for (int j = 0; j < n; j++)
        l[j] = (int8_t)(d != 0 ? clampi(quant_nearest_int(s[j] / d), -steps, steps - 1) : 0);
    return d;
}

static void q_q3_K(const float *x, void *dst, int64_t n)
{
    block_q3_K *y = dst;
    int8_t q[QK_K];
    uint8_t u[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float sc[16];
        int8_t ls[16];
        for (int j = 0; j < 16; j++)
            sc[j] = fit_symmetric(x + 16 * j, 16, 3, q + 16 * j);
        float d = quantize_scales_signed(sc, 16, 32, ls, &y[b].d);
        memset(y[b].scales, 0, sizeof y[b].scales);
        memset(y[b].hmask, 0, sizeof y[b].hmask);
        for (int j = 0; j < 16; j++) {
            int v = ls[j] + 32;
            if (j < 8)
                y[b].scales[j] |= (uint8_t)(v & 0xF);
            else
                y[b].scales[j - 8] |= (uint8_t)((v & 0xF) << 4);
            y[b].scales[8 + j % 4] |= (uint8_t)((v >> 4) << (2 * (j / 4)));
            float s = d * ls[j];
            for (int l = 0; l < 16; l++) {
                int i = 16 * j + l;
                int qv = s != 0 ? clampi(quant_nearest_int(x[i] / s), -4, 3) : 0;
                /* stored as 2 low bits plus a high bit that, when clear, means minus 4 */
                u[i] = (uint8_t)((qv + 4) & 3);
                if (qv >= 0)
                    y[b].hmask[i % 32] |= (uint8_t)(1 << (4 * (i / 128) + (i % 128) / 32));
            }
        }
        pack_2bit(u, y[b].qs);
    }
}

static void q_q6_K(const float *x, void *dst, int64_t n)
{
    block_q6_K *y = dst;
    int8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float sc[16];
        for (int j = 0; j < 16; j++)
            sc[j] = fit_symmetric(x + 16 * j, 16, 31, q + 16 * j);
        float d = quantize_scales_signed(sc, 16, 128, y[b].scales, &y[b].d);
        uint8_t u[QK_K];
        for (int i = 0; i < QK_K; i++) {
            float s = d * y[b].scales[i / 16];
            u[i] = (uint8_t)((s != 0 ? clampi(quant_nearest_int(x[i] / s), -32, 31) : 0) + 32);
        }
        for (int half = 0; half < 2; half++) {
            const uint8_t *v = u + 128 * half;
            uint8_t *ql = y[b].ql + 64 * half, *qh = y[b].qh + 32 * half;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((v[l] & 0xF) | ((v[l + 64] & 0xF) << 4));
                ql[l + 32] = (uint8_t)((v[l + 32] & 0xF) | ((v[l + 96] & 0xF) << 4));
                qh[l] = (uint8_t)((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) |
                                  ((v[l + 96] >> 4) << 6));
            }
        }
    }
}

void quant_ref_fill_quantize(quant_kernels *k)
{
    k->quantize[T_F32] = q_f32;
    k->quantize[T_F16] = q_f16;
    k->quantize[T_BF16] = q_bf16;
    k->quantize[T_Q4_0] = q_q4_0;
    k->quantize[T_Q4_1] = q_q4_1;
    k->quantize[T_Q5_0] = q_q5_0;
    k->quantize[T_Q5_1] = q_q5_1;
    k->quantize[T_Q8_0] = q_q8_0;
    k->quantize[T_Q8_1] = q_q8_1;
    k->quantize[T_Q2_K] = q_q2_K;
    k->quantize[T_Q3_K] = q_q3_K;
    k->quantize[T_Q4_K] = q_q4_K;
    k->quantize[T_Q5_K] = q_q5_K;
    k->quantize[T_Q6_K] = q_q6_K;
    k->quantize[T_Q8_K] = q_q8_K;
}
