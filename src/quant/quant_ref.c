/* quant_ref.c — scalar references: dequantization and dot products for every type.
 *
 * Dot products follow llama.cpp's arithmetic: integer sums within a block, scaled and
 * accumulated in float per block, so results match the reference logits' rounding.
 * The fast paths are tested against these.
 */
#include "quant_impl.h"

#define H(x) f16_to_f32(x)

/* ---------------- dequantize ---------------- */

static void dq_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void dq_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *x = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = H(x[i]);
}

static void dq_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *x = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(x[i]);
}

/* 32-element blocks store element j in the low nibble of qs[j] and element j+16 in
 * the high nibble; Q5 adds bit j of qh as the fifth bit of element j. */
static void dq_q4_0(const void *src, float *dst, int64_t n)
{
    const block_q4_0 *x = src;
    for (int64_t b = 0; b < n / QK4_0; b++, dst += QK4_0) {
        float d = H(x[b].d);
        for (int j = 0; j < 16; j++) {
            dst[j] = ((x[b].qs[j] & 0xF) - 8) * d;
            dst[j + 16] = ((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dq_q4_1(const void *src, float *dst, int64_t n)
{
    const block_q4_1 *x = src;
    for (int64_t b = 0; b < n / QK4_1; b++, dst += QK4_1) {
        float d = H(x[b].d), m = H(x[b].m);
        for (int j = 0; j < 16; j++) {
            dst[j] = (x[b].qs[j] & 0xF) * d + m;
            dst[j + 16] = (x[b].qs[j] >> 4) * d + m;
        }
    }
}

static inline uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void dq_q5_0(const void *src, float *dst, int64_t n)
{
    const block_q5_0 *x = src;
    for (int64_t b = 0; b < n / QK5_0; b++, dst += QK5_0) {
        float d = H(x[b].d);
        uint32_t qh = load_u32(x[b].qh);
        for (int j = 0; j < 16; j++) {
            int lo = (x[b].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int hi = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[j] = (lo - 16) * d;
            dst[j + 16] = (hi - 16) * d;
        }
    }
}

static void dq_q5_1(const void *src, float *dst, int64_t n)
{
    const block_q5_1 *x = src;
    for (int64_t b = 0; b < n / QK5_1; b++, dst += QK5_1) {
        float d = H(x[b].d), m = H(x[b].m);
        uint32_t qh = load_u32(x[b].qh);
        for (int j = 0; j < 16; j++) {
            int lo = (x[b].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int hi = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[j] = lo * d + m;
            dst[j + 16] = hi * d + m;
        }
    }
}

static void dq_q8_0(const void *src, float *dst, int64_t n)
{
    const block_q8_0 *x = src;
    for (int64_t b = 0; b < n / QK8_0; b++, dst += QK8_0) {
        float d = H(x[b].d);
        for (int j = 0; j < QK8_0; j++)
            dst[j] = x[b].qs[j] * d;
    }
}

static void dq_q8_1(const void *src, float *dst, int64_t n)
{
    const block_q8_1 *x = src;
    for (int64_t b = 0; b < n / QK8_1; b++, dst += QK8_1) {
        float d = H(x[b].d);
        for (int j = 0; j < QK8_1; j++)
            dst[j] = x[b].qs[j] * d;
    }
}

/* Q2_K and Q3_K: each 128-element half uses 32 bytes of qs; element 32*s + l of the
 * half sits in bits 2s..2s+1 of byte l. Sub-blocks of 16 take the scales in order. */
static void dq_q2_K(const void *src, float *dst, int64_t n)
{
    const block_q2_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        float d = H(x[b].d), dmin = H(x[b].dmin);
        for (int i = 0; i < QK_K; i++) {
            int half = i / 128, s = (i % 128) / 32, l = i % 32;
            int q = (x[b].qs[32 * half + l] >> (2 * s)) & 3;
            uint8_t sc = x[b].scales[i / 16];
            *dst++ = d * (sc & 0xF) * q - dmin * (sc >> 4);
        }
    }
}

static void dq_q3_K(const void *src, float *dst, int64_t n)
{
    const block_q3_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        float d = H(x[b].d);
        int8_t sc[16];
        quant_k3_scales(x[b].scales, sc);
        for (int i = 0; i < QK_K; i++) {
            int half = i / 128, s = (i % 128) / 32, l = i % 32;
            int q = (x[b].qs[32 * half + l] >> (2 * s)) & 3;
            /* hmask bit (4*half + s) of byte l set: q as is, clear: q - 4 */
            int h = (x[b].hmask[l] >> (4 * half + s)) & 1;
            *dst++ = d * sc[i / 16] * (q - (h ? 0 : 4));
        }
    }
}

/* Q4_K and Q5_K: each 64-element group uses 32 bytes of qs, low nibbles first; the
 * fifth bit of Q5_K element 32*g + l is bit g of qh[l]. */
static void dq_q4_K(const void *src, float *dst, int64_t n)
{
    const block_q4_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        float d = H(x[b].d), dmin = H(x[b].dmin);
        for (int g = 0; g < 8; g++) {
            uint8_t sc, m;
            quant_k4_scale_min(g, x[b].scales, &sc, &m);
            const uint8_t *q = x[b].qs + 32 * (g / 2);
            for (int l = 0; l < 32; l++) {
                int v = g & 1 ? q[l] >> 4 : q[l] & 0xF;
                *dst++ = d * sc * v - dmin * m;
            }
        }
    }
}

static void dq_q5_K(const void *src, float *dst, int64_t n)
{
    const block_q5_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        float d = H(x[b].d), dmin = H(x[b].dmin);
        for (int g = 0; g < 8; g++) {
            uint8_t sc, m;
            quant_k4_scale_min(g, x[b].scales, &sc, &m);
            const uint8_t *q = x[b].qs + 32 * (g / 2);
            for (int l = 0; l < 32; l++) {
                int v = (g & 1 ? q[l] >> 4 : q[l] & 0xF) | (((x[b].qh[l] >> g) & 1) << 4);
                *dst++ = d * sc * v - dmin * m;
            }
        }
    }
}

/* Q6_K: per 128-element half, 64 bytes of ql and 32 of qh. Element 32*s + l of the half:
 * low nibble of ql[l] (s=0), ql[l+32] (s=1), high nibble of ql[l] (s=2), ql[l+32] (s=3);
 * bits 2s..2s+1 of qh[l] on top; minus 32. */
static inline int q6_value(const block_q6_K *x, int i)
{
    int half = i / 128, s = (i % 128) / 32, l = i % 32;
    const uint8_t *ql = x->ql + 64 * half, *qh = x->qh + 32 * half;
    int lo = (s & 1) ? ql[l + 32] : ql[l];
    lo = (s & 2) ? lo >> 4 : lo & 0xF;
    return (lo | (((qh[l] >> (2 * s)) & 3) << 4)) - 32;
}

static void dq_q6_K(const void *src, float *dst, int64_t n)
{
    const block_q6_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        float d = H(x[b].d);
        for (int i = 0; i < QK_K; i++)
            *dst++ = d * x[b].scales[i / 16] * q6_value(&x[b], i);
    }
}

static void dq_q8_K(const void *src, float *dst, int64_t n)
{
    const block_q8_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++)
        for (int i = 0; i < QK_K; i++)
            *dst++ = x[b].d * x[b].qs[i];
}

/* ---------------- dot products ---------------- */

static float dot_f32(int64_t n, const void *w, const void *a)
{
    const float *x = w, *y = a;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * y[i];
    return (float)s;
}

static float dot_f16(int64_t n, const void *w, const void *a)
{
    const uint16_t *x = w, *y = a;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)H(x[i]) * H(y[i]);
    return (float)s;
}

static float dot_bf16(int64_t n, const void *w, const void *a)
{
    const uint16_t *x = w, *y = a;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)bf16_to_f32(x[i]) * bf16_to_f32(y[i]);
    return (float)s;
}

static float dot_q4_0(int64_t n, const void *w, const void *a)
{
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        int sum = 0;
        for (int j = 0; j < 16; j++)
            sum += ((x[b].qs[j] & 0xF) - 8) * y[b].qs[j] + ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + 16];
        s += sum * H(x[b].d) * H(y[b].d);
    }
    return s;
}

static float dot_q4_1(int64_t n, const void *w, const void *a)
{
    const block_q4_1 *x = w;
    const block_q8_1 *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK4_1; b++) {
        int sum = 0;
        for (int j = 0; j < 16; j++)
            sum += (x[b].qs[j] & 0xF) * y[b].qs[j] + (x[b].qs[j] >> 4) * y[b].qs[j + 16];
        s += sum * H(x[b].d) * H(y[b].d) + H(x[b].m) * H(y[b].s);
    }
    return s;
}

static float dot_q5_0(int64_t n, const void *w, const void *a)
{
    const block_q5_0 *x = w;
    const block_q8_0 *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK5_0; b++) {
        uint32_t qh = load_u32(x[b].qh);
        int sum = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (x[b].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int hi = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            sum += (lo - 16) * y[b].qs[j] + (hi - 16) * y[b].qs[j + 16];
        }
        s += sum * H(x[b].d) * H(y[b].d);
    }
    return s;
}

static float dot_q5_1(int64_t n, const void *w, const void *a)
{
    const block_q5_1 *x = w;
    const block_q8_1 *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK5_1; b++) {
        uint32_t qh = load_u32(x[b].qh);
        int sum = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (x[b].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int hi = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            sum += lo * y[b].qs[j] + hi * y[b].qs[j + 16];
        }
        s += sum * H(x[b].d) * H(y[b].d) + H(x[b].m) * H(y[b].s);
    }
    return s;
}

static float dot_q8_0(int64_t n, const void *w, const void *a)
{
    const block_q8_0 *x = w;
    const block_q8_0 *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        int sum = 0;
        for (int j = 0; j < QK8_0; j++)
            sum += x[b].qs[j] * y[b].qs[j];
        s += sum * H(x[b].d) * H(y[b].d);
    }
    return s;
}

static float dot_q8_1(int64_t n, const void *w, const void *a)
{
    const block_q8_1 *x = w;
    const block_q8_1 *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK8_1; b++) {
        int sum = 0;
        for (int j = 0; j < QK8_1; j++)
            sum += x[b].qs[j] * y[b].qs[j];
        s += sum * H(x[b].d) * H(y[b].d);
    }
    return s;
}

static float dot_q2_K(int64_t n, const void *w, const void *a)
{
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int isum = 0, msum = 0;
        for (int j = 0; j < 16; j++) {
            int sub = 0;
            for (int l = 0; l < 16; l++) {
                int i = 16 * j + l, half = i / 128, sh = 2 * ((i % 128) / 32);
                sub += ((x[b].qs[32 * half + i % 32] >> sh) & 3) * y[b].qs[i];
            }
            isum += (x[b].scales[j] & 0xF) * sub;
            msum += (x[b].scales[j] >> 4) * y[b].bsums[j];
        }
        s += y[b].d * H(x[b].d) * isum - y[b].d * H(x[b].dmin) * msum;
    }
    return s;
}

static float dot_q3_K(int64_t n, const void *w, const void *a)
{
    const block_q3_K *x = w;
    const block_q8_K *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int8_t sc[16];
        quant_k3_scales(x[b].scales, sc);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int sub = 0;
            for (int l = 0; l < 16; l++) {
                int i = 16 * j + l, half = i / 128, k = (i % 128) / 32, p = i % 32;
                int q = (x[b].qs[32 * half + p] >> (2 * k)) & 3;
                q -= ((x[b].hmask[p] >> (4 * half + k)) & 1) ? 0 : 4;
                sub += q * y[b].qs[i];
            }
            isum += sc[j] * sub;
        }
        s += y[b].d * H(x[b].d) * isum;
    }
    return s;
}

static float dot_q4_K(int64_t n, const void *w, const void *a)
{
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int isum = 0, msum = 0;
        for (int g = 0; g < 8; g++) {
            uint8_t sc, m;
            quant_k4_scale_min(g, x[b].scales, &sc, &m);
            const uint8_t *q = x[b].qs + 32 * (g / 2);
            int sub = 0;
            for (int l = 0; l < 32; l++)
                sub += (g & 1 ? q[l] >> 4 : q[l] & 0xF) * y[b].qs[32 * g + l];
            isum += sc * sub;
            msum += m * (y[b].bsums[2 * g] + y[b].bsums[2 * g + 1]);
        }
        s += y[b].d * H(x[b].d) * isum - y[b].d * H(x[b].dmin) * msum;
    }
    return s;
}

static float dot_q5_K(int64_t n, const void *w, const void *a)
{
    const block_q5_K *x = w;
    const block_q8_K *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int isum = 0, msum = 0;
        for (int g = 0; g < 8; g++) {
            uint8_t sc, m;
            quant_k4_scale_min(g, x[b].scales, &sc, &m);
            const uint8_t *q = x[b].qs + 32 * (g / 2);
            int sub = 0;
            for (int l = 0; l < 32; l++) {
                int v = (g & 1 ? q[l] >> 4 : q[l] & 0xF) | (((x[b].qh[l] >> g) & 1) << 4);
                sub += v * y[b].qs[32 * g + l];
            }
            isum += sc * sub;
            msum += m * (y[b].bsums[2 * g] + y[b].bsums[2 * g + 1]);
        }
        s += y[b].d * H(x[b].d) * isum - y[b].d * H(x[b].dmin) * msum;
    }
    return s;
}

static float dot_q6_K(int64_t n, const void *w, const void *a)
{
    const block_q6_K *x = w;
    const block_q8_K *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int sub = 0;
            for (int l = 0; l < 16; l++)
                sub += q6_value(&x[b], 16 * j + l) * y[b].qs[16 * j + l];
            isum += x[b].scales[j] * sub;
        }
        s += y[b].d * H(x[b].d) * isum;
    }
    return s;
}

static float dot_q8_K(int64_t n, const void *w, const void *a)
{
    const block_q8_K *x = w;
    const block_q8_K *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sum = 0;
        for (int i = 0; i < QK_K; i++)
            sum += x[b].qs[i] * y[b].qs[i];
        s += x[b].d * y[b].d * sum;
    }
    return s;
}

/* ---------------- tiles ---------------- */

/* One tile_fn per type, each calling its own dot, so the scalar table needs no lookup. */
#define REF_TILE(name)                                                                   \
    static void tile_##name(int64_t n, int nr, int nc, const void *w, size_t ws,         \
                            const void *a, size_t as, float *out, size_t os)             \
    {                                                                                    \
        for (int c = 0; c < nc; c++)                                                     \
            for (int r = 0; r < nr; r++)                                                 \
                out[(size_t)c * os + r] = dot_##name(n, (const char *)w + (size_t)r * ws, \
                                                     (const char *)a + (size_t)c * as);  \
    }

REF_TILE(f32)
REF_TILE(f16)
REF_TILE(bf16)
REF_TILE(q4_0)
REF_TILE(q4_1)
REF_TILE(q5_0)
REF_TILE(q5_1)
REF_TILE(q8_0)
REF_TILE(q8_1)
REF_TILE(q2_K)
REF_TILE(q3_K)
REF_TILE(q4_K)
REF_TILE(q5_K)
REF_TILE(q6_K)
REF_TILE(q8_K)

void quant_ref_fill(quant_kernels *k)
{
#define SET(T, name)                 \
    k->dequantize[T] = dq_##name;    \
    k->vec_dot[T] = dot_##name;      \
    k->tile[T] = tile_##name;
    SET(T_F32, f32)
    SET(T_F16, f16)
    SET(T_BF16, bf16)
    SET(T_Q4_0, q4_0)
    SET(T_Q4_1, q4_1)
    SET(T_Q5_0, q5_0)
    SET(T_Q5_1, q5_1)
    SET(T_Q8_0, q8_0)
    SET(T_Q8_1, q8_1)
    SET(T_Q2_K, q2_K)
    SET(T_Q3_K, q3_K)
    SET(T_Q4_K, q4_K)
    SET(T_Q5_K, q5_K)
    SET(T_Q6_K, q6_K)
    SET(T_Q8_K, q8_K)
#undef SET
    quant_ref_fill_quantize(k);
    quant_ref_fill_iq(k);
}
