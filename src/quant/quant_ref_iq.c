/* quant_ref_iq.c — scalar references for the IQ, TQ and MXFP4 types: decoders,
 * dequantization, dot products, tiles and the quantizers we have for them.
 *
 * IQ4_NL and MXFP4 pair with Q8_0 activations (blocks of 32). All the others pair with
 * Q8_K and are decoded to quant_sblock (quant_impl.h): small integers, an integer scale
 * per 16 and one float, from which both dequantization (bit-exact with ggml's decoders:
 * the float steps are the same) and integer dot products follow. Layouts: see
 * ../shared/notes/quants.md and the block structs in quant_impl.h.
 */
#include "quant_impl.h"

#include <math.h>

#define H(x) f16_to_f32(x)

static inline uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ---------------- decoders to quant_sblock ---------------- */

static void sd_iq4_xs(const void *blk, quant_sblock *o)
{
    const block_iq4_xs *x = blk;
    o->d = H(x->d);
    for (int ib = 0; ib < 8; ib++) {
        int ls = ((x->scales_l[ib / 2] >> (4 * (ib % 2))) & 15) | (((x->scales_h >> (2 * ib)) & 3) << 4);
        o->sc[2 * ib] = o->sc[2 * ib + 1] = (int16_t)(ls - 32);
        const uint8_t *qs = x->qs + 16 * ib;
        for (int j = 0; j < 16; j++) {
            o->q[32 * ib + j] = quant_iq4nl_values[qs[j] & 15];
            o->q[32 * ib + 16 + j] = quant_iq4nl_values[qs[j] >> 4];
        }
    }
}

/* Trit n (0..4) of a base-3 byte: the byte is a fraction b/256 of five base-3 digits,
 * most significant first; multiplying by 3^n (mod 256) brings digit n to the top. */
static inline int trit(uint8_t b, int n)
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    uint8_t v = (uint8_t)(b * pow3[n]);
    return (v * 3) >> 8;
}

static void sd_tq1_0(const void *blk, quant_sblock *o)
{
    const block_tq1_0 *x = blk;
    o->d = H(x->d);
    for (int j = 0; j < 16; j++)
        o->sc[j] = 1;
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++)
            o->q[32 * n + m] = (int8_t)(trit(x->qs[m], n) - 1);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++)
            o->q[160 + 16 * n + m] = (int8_t)(trit(x->qs[32 + m], n) - 1);
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++)
            o->q[240 + 4 * n + j] = (int8_t)(trit(x->qh[j], n) - 1);
}

static void sd_tq2_0(const void *blk, quant_sblock *o)
{
    const block_tq2_0 *x = blk;
    o->d = H(x->d);
    for (int j = 0; j < 16; j++)
        o->sc[j] = 1;
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++)
                o->q[128 * h + 32 * l + m] = (int8_t)(((x->qs[32 * h + m] >> (2 * l)) & 3) - 1);
}

/* 8 magnitudes with the signs of byte s (bit j: element j negative). */
static inline void put_signed8(int8_t *q, const uint8_t *mag, unsigned s)
{
    for (int j = 0; j < 8; j++)
        q[j] = (int8_t)((s >> j) & 1 ? -mag[j] : mag[j]);
}

static inline unsigned parity_signs(unsigned k7)
{
    return k7 | (unsigned)(__builtin_popcount(k7) & 1) << 7;
}

/* IQ2_XXS: per 32, one u32 of four grid indices (bytes) and one of four 7-bit sign
 * indices plus a 4-bit scale s; values d * (s + 1/2) / 4 * grid = (d/8)(2s+1) grid. */
static void sd_iq2_xxs(const void *blk, quant_sblock *o)
{
    const block_iq2_xxs *x = blk;
    const uint8_t *qs = (const uint8_t *)x->qs;
    o->d = H(x->d) * 0.125f;
    for (int ib = 0; ib < 8; ib++) {
        uint32_t idx = rd32(qs + 8 * ib), ss = rd32(qs + 8 * ib + 4);
        o->sc[2 * ib] = o->sc[2 * ib + 1] = (int16_t)(2 * (ss >> 28) + 1);
        for (int l = 0; l < 4; l++)
            put_signed8(o->q + 32 * ib + 8 * l, quant_grid_iq2xxs[(idx >> (8 * l)) & 255],
                        parity_signs((ss >> (7 * l)) & 127));
    }
}

/* IQ2_XS: 16-bit words of a 9-bit grid index and a 7-bit sign index; two 4-bit scales
 * per 32 (low nibble for the first 16). */
static void sd_iq2_xs(const void *blk, quant_sblock *o)
{
    const block_iq2_xs *x = blk;
    o->d = H(x->d) * 0.125f;
    for (int ib = 0; ib < 8; ib++) {
        o->sc[2 * ib] = (int16_t)(2 * (x->scales[ib] & 15) + 1);
        o->sc[2 * ib + 1] = (int16_t)(2 * (x->scales[ib] >> 4) + 1);
        for (int l = 0; l < 4; l++) {
            uint16_t v = x->qs[4 * ib + l];
            put_signed8(o->q + 32 * ib + 8 * l, quant_grid_iq2xs[v & 511], parity_signs(v >> 9));
        }
    }
}

/* IQ2_S: 10-bit indices (8 bits in qs, 2 in qh per 8), explicit sign bytes. */
static void sd_iq2_s(const void *blk, quant_sblock *o)
{
    const block_iq2_s *x = blk;
    o->d = H(x->d) * 0.125f;
    for (int ib = 0; ib < 8; ib++) {
        o->sc[2 * ib] = (int16_t)(2 * (x->scales[ib] & 15) + 1);
        o->sc[2 * ib + 1] = (int16_t)(2 * (x->scales[ib] >> 4) + 1);
        for (int l = 0; l < 4; l++) {
            int idx = x->qs[4 * ib + l] | ((x->qh[ib] << (8 - 2 * l)) & 0x300);
            put_signed8(o->q + 32 * ib + 8 * l, quant_grid_iq2s[idx], x->qs[32 + 4 * ib + l]);
        }
    }
}

/* IQ3_XXS: 64 bytes of grid indices (4 values each), then per 32 a u32 of four 7-bit
 * sign indices and a 4-bit scale; values d * (s + 1/2) / 2 * grid = (d/4)(2s+1) grid. */
static void sd_iq3_xxs(const void *blk, quant_sblock *o)
{
    const block_iq3_xxs *x = blk;
    o->d = H(x->d) * 0.25f;
    for (int ib = 0; ib < 8; ib++) {
        uint32_t ss = rd32(x->qs + 64 + 4 * ib);
        o->sc[2 * ib] = o->sc[2 * ib + 1] = (int16_t)(2 * (ss >> 28) + 1);
        for (int l = 0; l < 4; l++) {
            uint8_t mag[8];
            memcpy(mag, quant_grid_iq3xxs[x->qs[8 * ib + 2 * l]], 4);
            memcpy(mag + 4, quant_grid_iq3xxs[x->qs[8 * ib + 2 * l + 1]], 4);
            put_signed8(o->q + 32 * ib + 8 * l, mag, parity_signs((ss >> (7 * l)) & 127));
        }
    }
}

/* IQ3_S: 9-bit indices (qs, and one bit per index from qh), explicit sign bytes, a
 * 4-bit scale per 32; values d (2s+1) grid. */
static void sd_iq3_s(const void *blk, quant_sblock *o)
{
    const block_iq3_s *x = blk;
    o->d = H(x->d);
    for (int ib = 0; ib < 8; ib++) {
        o->sc[2 * ib] = o->sc[2 * ib + 1] = (int16_t)(2 * ((x->scales[ib / 2] >> (4 * (ib % 2))) & 15) + 1);
        int qh = x->qh[ib];
        for (int l = 0; l < 4; l++) {
            uint8_t mag[8];
            const uint8_t *qs = x->qs + 8 * ib + 2 * l;
            memcpy(mag, quant_grid_iq3s[qs[0] | ((qh << (8 - 2 * l)) & 256)], 4);
            memcpy(mag + 4, quant_grid_iq3s[qs[1] | ((qh << (7 - 2 * l)) & 256)], 4);
            put_signed8(o->q + 32 * ib + 8 * l, mag, x->signs[4 * ib + l]);
        }
    }
}

/* IQ1_S: per 32, a u16 of four 3-bit index highs, a 3-bit scale and the sign of the
 * ±1/8 offset; value d (2s+1) (grid ± 1/8), stored as (d/8) (2s+1) (8 grid ± 1). */
static void sd_iq1_s(const void *blk, quant_sblock *o)
{
    const block_iq1_s *x = blk;
    o->d = H(x->d) * 0.125f;
    for (int ib = 0; ib < 8; ib++) {
        unsigned qh = x->qh[ib];
        o->sc[2 * ib] = o->sc[2 * ib + 1] = (int16_t)(2 * ((qh >> 12) & 7) + 1);
        int delta = qh & 0x8000 ? -1 : 1;
        for (int l = 0; l < 4; l++) {
            const int8_t *g = quant_grid_iq1s[x->qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8)];
            for (int j = 0; j < 8; j++)
                o->q[32 * ib + 8 * l + j] = (int8_t)(8 * g[j] + delta);
        }
    }
}

/* The f16 scale of an IQ1_M block: the top nibble of each of the four scale words. */
static inline uint16_t iq1m_d(const block_iq1_m *x, uint16_t sc[4])
{
    memcpy(sc, x->scales, 8);
    return (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
}

/* IQ1_M: 3-bit scales per 16 (four per 16-bit word, 6 bits per 32), a qh nibble per 8
 * of three index-high bits and the offset's sign (0x8). */
static void sd_iq1_m(const void *blk, quant_sblock *o)
{
    const block_iq1_m *x = blk;
    uint16_t sc[4];
    o->d = H(iq1m_d(x, sc)) * 0.125f;
    for (int ib = 0; ib < 8; ib++) {
        o->sc[2 * ib] = (int16_t)(2 * ((sc[ib / 2] >> (6 * (ib % 2))) & 7) + 1);
        o->sc[2 * ib + 1] = (int16_t)(2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 7) + 1);
        for (int l = 0; l < 4; l++) {
            int nib = (x->qh[2 * ib + l / 2] >> (4 * (l % 2))) & 15;
            const int8_t *g = quant_grid_iq1s[x->qs[4 * ib + l] | ((nib & 7) << 8)];
            int delta = nib & 8 ? -1 : 1;
            for (int j = 0; j < 8; j++)
                o->q[32 * ib + 8 * l + j] = (int8_t)(8 * g[j] + delta);
        }
    }
}

quant_sdecode_fn quant_ref_sdecoder(int type)
{
    switch (type) {
    case T_IQ4_XS: return sd_iq4_xs;
    case T_TQ1_0: return sd_tq1_0;
    case T_TQ2_0: return sd_tq2_0;
    case T_IQ2_XXS: return sd_iq2_xxs;
    case T_IQ2_XS: return sd_iq2_xs;
    case T_IQ2_S: return sd_iq2_s;
    case T_IQ3_XXS: return sd_iq3_xxs;
    case T_IQ3_S: return sd_iq3_s;
    case T_IQ1_S: return sd_iq1_s;
    case T_IQ1_M: return sd_iq1_m;
    default: return NULL;
    }
}

/* ---------------- dequantize, dot, tile for the quant_sblock types ---------------- */

static inline void sb_dequant(quant_sdecode_fn dec, size_t bb, const void *src, float *dst, int64_t n)
{
    quant_sblock s;
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        dec((const uint8_t *)src + (size_t)b * bb, &s);
        for (int j = 0; j < 16; j++) {
            float dl = s.d * s.sc[j];
            for (int l = 0; l < 16; l++)
                dst[16 * j + l] = dl * s.q[16 * j + l];
        }
    }
}

static inline float sb_dot(quant_sdecode_fn dec, size_t bb, int64_t n, const void *w, const void *a)
{
    const block_q8_K *y = a;
    quant_sblock s;
    float sum = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        dec((const uint8_t *)w + (size_t)b * bb, &s);
        int32_t isum = 0;
        for (int j = 0; j < 16; j++) {
            int32_t sub = 0;
            for (int l = 0; l < 16; l++)
                sub += s.q[16 * j + l] * y[b].qs[16 * j + l];
            isum += s.sc[j] * sub;
        }
        sum += (float)isum * (s.d * y[b].d);
    }
    return sum;
}

#define SB_TYPE(name, block)                                                             \
    static void dq_##name(const void *src, float *dst, int64_t n)                        \
    {                                                                                    \
        sb_dequant(sd_##name, sizeof(block), src, dst, n);                               \
    }                                                                                    \
    static float dot_##name(int64_t n, const void *w, const void *a)                     \
    {                                                                                    \
        return sb_dot(sd_##name, sizeof(block), n, w, a);                                \
    }

SB_TYPE(iq4_xs, block_iq4_xs)
SB_TYPE(tq1_0, block_tq1_0)
SB_TYPE(tq2_0, block_tq2_0)
SB_TYPE(iq2_xxs, block_iq2_xxs)
SB_TYPE(iq2_xs, block_iq2_xs)
SB_TYPE(iq2_s, block_iq2_s)
SB_TYPE(iq3_xxs, block_iq3_xxs)
SB_TYPE(iq3_s, block_iq3_s)
SB_TYPE(iq1_s, block_iq1_s)
SB_TYPE(iq1_m, block_iq1_m)

/* ---------------- IQ4_NL and MXFP4 (blocks of 32, against Q8_0) ---------------- */

/* Both store element j in the low nibble of qs[j] and j+16 in the high one, as codes
 * into a 16-entry table; they differ in the scale (f16 d, or E8M0 e halved). */
static void dq_iq4_nl(const void *src, float *dst, int64_t n)
{
    const block_iq4_nl *x = src;
    for (int64_t b = 0; b < n / 32; b++, dst += 32) {
        float d = H(x[b].d);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * quant_iq4nl_values[x[b].qs[j] & 15];
            dst[j + 16] = d * quant_iq4nl_values[x[b].qs[j] >> 4];
        }
    }
}

static void dq_mxfp4(const void *src, float *dst, int64_t n)
{
    const block_mxfp4 *x = src;
    for (int64_t b = 0; b < n / 32; b++, dst += 32) {
        float d = quant_e8m0_half(x[b].e);
        for (int j = 0; j < 16; j++) {
            dst[j] = quant_mxfp4_values[x[b].qs[j] & 15] * d;
            dst[j + 16] = quant_mxfp4_values[x[b].qs[j] >> 4] * d;
        }
    }
}

static inline int nl_sum(const int8_t *table, const uint8_t *qs, const int8_t *a)
{
    int s = 0;
    for (int j = 0; j < 16; j++)
        s += table[qs[j] & 15] * a[j] + table[qs[j] >> 4] * a[j + 16];
    return s;
}

static float dot_iq4_nl(int64_t n, const void *w, const void *a)
{
    const block_iq4_nl *x = w;
    const block_q8_0 *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++)
        s += (H(y[b].d) * H(x[b].d)) * (float)nl_sum(quant_iq4nl_values, x[b].qs, y[b].qs);
    return s;
}

static float dot_mxfp4(int64_t n, const void *w, const void *a)
{
    const block_mxfp4 *x = w;
    const block_q8_0 *y = a;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++)
        s += (H(y[b].d) * quant_e8m0_half(x[b].e)) * (float)nl_sum(quant_mxfp4_values, x[b].qs, y[b].qs);
    return s;
}

#define REF_TILE(name)                                                                   \
    static void tile_##name(int64_t n, int nr, int nc, const void *w, size_t ws,         \
                            const void *a, size_t as, float *out, size_t os)             \
    {                                                                                    \
        for (int c = 0; c < nc; c++)                                                     \
            for (int r = 0; r < nr; r++)                                                 \
                out[(size_t)c * os + r] = dot_##name(n, (const char *)w + (size_t)r * ws, \
                                                     (const char *)a + (size_t)c * as);  \
    }

REF_TILE(iq4_nl)
REF_TILE(mxfp4)
REF_TILE(iq4_xs)
REF_TILE(tq1_0)
REF_TILE(tq2_0)
REF_TILE(iq2_xxs)
REF_TILE(iq2_xs)
REF_TILE(iq2_s)
REF_TILE(iq3_xxs)
REF_TILE(iq3_s)
REF_TILE(iq1_s)
REF_TILE(iq1_m)

/* ---------------- quantizers ---------------- */

static inline int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The code of the table value nearest to v. IQ4_NL's values are sorted, so a binary
 * search; MXFP4's are 0..12 (codes 0..7) and their negatives (8..15), so the sign picks
 * the half and a search over the magnitudes the code. Ties go to the lower code. */
static inline int nearest_sorted(const int8_t *t, int len, float v)
{
    int lo = 0, hi = len - 1;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < t[mid])
            hi = mid;
        else
            lo = mid;
    }
    return fabsf(v - t[lo]) <= fabsf(v - t[hi]) ? lo : hi;
}

static inline int nearest_code(const int8_t *table, float v)
{
    if (table == quant_iq4nl_values)
        return nearest_sorted(table, 16, v);
    int k = nearest_sorted(table, 8, fabsf(v));
    return v < 0 && k ? k + 8 : k;
}

/* Squared error of 32 values coded against table with scale d (codes to q when set). */
static float nl_fit(const int8_t *table, const float *x, float d, uint8_t *codes)
{
    float err = 0;
    for (int j = 0; j < 32; j++) {
        /* a division: 1/d overflows for MXFP4's smallest scales */
        int k = nearest_code(table, d != 0 ? x[j] / d : 0);
        float e = x[j] - d * table[k];
        err += e * e;
        if (codes)
            codes[j] = (uint8_t)k;
    }
    return err;
}

static void pack_nibbles(const uint8_t codes[32], uint8_t qs[16])
{
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(codes[j] | codes[j + 16] << 4);
}

/* The IQ4 scale of 32 values: the largest-magnitude one maps to the table's -127 end,
 * then a few scales around that; the least squared error wins. d is rounded to f16
 * before it is tried, so the codes match the stored scale. */
static float iq4_scale32(const float *x)
{
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    if (amax == 0)
        return 0;
    float best_d = 0, best_e = INFINITY;
    for (int k = -8; k <= 8; k++) {
        float d = max / (-127.f + 2.f * (float)k);
        float e = nl_fit(quant_iq4nl_values, x, d, NULL);
        if (e < best_e) {
            best_e = e;
            best_d = d;
        }
    }
    return best_d;
}

static void q_iq4_nl(const float *x, void *dst, int64_t n)
{
    block_iq4_nl *y = dst;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        y[b].d = f32_to_f16(iq4_scale32(x));
        uint8_t codes[32];
        nl_fit(quant_iq4nl_values, x, H(y[b].d), codes);
        pack_nibbles(codes, y[b].qs);
    }
}

/* IQ4_XS: each 32's own best scale, then one f16 d with 6-bit signed multiples of it
 * (d * (ls - 32)), and the codes chosen again against the stored sub-scale. */
static void q_iq4_xs(const float *x, void *dst, int64_t n)
{
    block_iq4_xs *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float sub[8], smax = 0, amax = 0;
        for (int ib = 0; ib < 8; ib++) {
            sub[ib] = iq4_scale32(x + 32 * ib);
            if (fabsf(sub[ib]) > amax) {
                amax = fabsf(sub[ib]);
                smax = sub[ib];
            }
        }
        memset(&y[b], 0, sizeof y[b]);
        y[b].d = f32_to_f16(smax / -32.f);
        float d = H(y[b].d), id = d != 0 ? 1 / d : 0;
        for (int ib = 0; ib < 8; ib++) {
            int ls = clampi(quant_nearest_int(sub[ib] * id) + 32, 0, 63);
            y[b].scales_l[ib / 2] |= (uint8_t)((ls & 15) << (4 * (ib % 2)));
            y[b].scales_h |= (uint16_t)((ls >> 4) << (2 * ib));
            uint8_t codes[32];
            nl_fit(quant_iq4nl_values, x + 32 * ib, d * (float)(ls - 32), codes);
            pack_nibbles(codes, y[b].qs + 16 * ib);
        }
    }
}

/* MXFP4: the smallest power-of-two scale that keeps the largest value within the code
 * range (±6, doubled ±12), or one step below it if clipping that value costs less. */
static void q_mxfp4(const float *x, void *dst, int64_t n)
{
    block_mxfp4 *y = dst;
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        int e = 0;
        while (e < 254 && 12.f * quant_e8m0_half((uint8_t)e) < amax)
            e++;
        if (e > 0 && nl_fit(quant_mxfp4_values, x, quant_e8m0_half((uint8_t)(e - 1)), NULL) <
                         nl_fit(quant_mxfp4_values, x, quant_e8m0_half((uint8_t)e), NULL))
            e--;
        y[b].e = (uint8_t)e;
        uint8_t codes[32];
        nl_fit(quant_mxfp4_values, x, quant_e8m0_half((uint8_t)e), codes);
        pack_nibbles(codes, y[b].qs);
    }
}

/* Ternary: d = the largest magnitude of the 256, q = round(x / d) in {-1, 0, 1}. */
static float ternary(const float *x, int8_t t[QK_K])
{
    float amax = 0;
    for (int j = 0; j < QK_K; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float id = amax != 0 ? 1 / amax : 0;
    for (int j = 0; j < QK_K; j++)
        t[j] = (int8_t)(clampi(quant_nearest_int(x[j] * id), -1, 1) + 1);
    return amax;
}

/* Five trits as the byte whose fraction b/256 just exceeds their base-3 value / 243. */
static uint8_t pack_trits(const int8_t *t, int count, int stride)
{
    int v = 0;
    for (int k = 0; k < 5; k++)
        v = 3 * v + (k < count ? t[k * stride] : 0);
    return (uint8_t)((v * 256 + 242) / 243);
}

static void q_tq1_0(const float *x, void *dst, int64_t n)
{
    block_tq1_0 *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        int8_t t[QK_K];
        y[b].d = f32_to_f16(ternary(x, t));
        for (int m = 0; m < 32; m++)
            y[b].qs[m] = pack_trits(t + m, 5, 32);
        for (int m = 0; m < 16; m++)
            y[b].qs[32 + m] = pack_trits(t + 160 + m, 5, 16);
        for (int j = 0; j < 4; j++)
            y[b].qh[j] = pack_trits(t + 240 + j, 4, 4);
    }
}

static void q_tq2_0(const float *x, void *dst, int64_t n)
{
    block_tq2_0 *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        int8_t t[QK_K];
        y[b].d = f32_to_f16(ternary(x, t));
        memset(y[b].qs, 0, sizeof y[b].qs);
        for (int i = 0; i < QK_K; i++)
            y[b].qs[32 * (i / 128) + i % 32] |= (uint8_t)(t[i] << (2 * ((i % 128) / 32)));
    }
}

void quant_ref_fill_iq(quant_kernels *k)
{
#define SET(T, name)                 \
    k->dequantize[T] = dq_##name;    \
    k->vec_dot[T] = dot_##name;      \
    k->tile[T] = tile_##name;
    SET(T_IQ4_NL, iq4_nl)
    SET(T_MXFP4, mxfp4)
    SET(T_IQ4_XS, iq4_xs)
    SET(T_TQ1_0, tq1_0)
    SET(T_TQ2_0, tq2_0)
    SET(T_IQ2_XXS, iq2_xxs)
    SET(T_IQ2_XS, iq2_xs)
    SET(T_IQ2_S, iq2_s)
    SET(T_IQ3_XXS, iq3_xxs)
    SET(T_IQ3_S, iq3_s)
    SET(T_IQ1_S, iq1_s)
    SET(T_IQ1_M, iq1_m)
#undef SET
    k->quantize[T_IQ4_NL] = q_iq4_nl;
    k->quantize[T_IQ4_XS] = q_iq4_xs;
    k->quantize[T_MXFP4] = q_mxfp4;
    k->quantize[T_TQ1_0] = q_tq1_0;
    k->quantize[T_TQ2_0] = q_tq2_0;
}
