/* quant_iq_dec.h — what the AVX2 and AVX-512 IQ kernel files share, included under
 * each file's own compiler flags: vector decoders of the quant_sblock types (quant_impl.h;
 * a type without one here goes through its scalar decoder), the IQ4_NL/MXFP4 block
 * reads, IQ4_XS's scale layout and the list of scalar-decoded types. */
#ifndef LLMFS_QUANT_IQ_DEC_H
#define LLMFS_QUANT_IQ_DEC_H

#include "quant_impl.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 4")
#define UNROLL8 _Pragma("GCC unroll 8")

INLINE __m256i table16(const int8_t *t)
{
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)t));
}

/* ---- IQ4_NL and MXFP4: a 32-block's scale and codes, for both files ---- */

INLINE float nl4_scale(const int mx, const uint8_t *x)
{
    if (mx)
        return quant_e8m0_half(x[0]);
    uint16_t h;
    memcpy(&h, x, 2);
    return _cvtsh_ss(h);
}

/* the 32 codes of a block as bytes: elements 0..15 low nibbles, 16..31 high */
INLINE __m256i nl4_codes(const int mx, const uint8_t *x)
{
    __m128i q = _mm_loadu_si128((const __m128i *)(x + (mx ? 1 : 2)));
    return _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1),
                            _mm256_set1_epi8(0x0F));
}

/* The types that decode a block into quant_sblock and multiply that, in both files:
 * X(name, type id, decoder kind, block struct). IQ2_XS does so in the AVX2 file only
 * (AVX-512 has a kernel of its own). */
#define SB_DECODED_TYPES(X)                          \
    X(tq1_0, T_TQ1_0, DEC_SCALAR, block_tq1_0)       \
    X(iq3_s, T_IQ3_S, DEC_IQ3_S, block_iq3_s)        \
    X(iq2_s, T_IQ2_S, DEC_IQ2_S, block_iq2_s)        \
    X(iq1_s, T_IQ1_S, DEC_IQ1_S, block_iq1_s)        \
    X(iq1_m, T_IQ1_M, DEC_IQ1_M, block_iq1_m)

/* ---- IQ4_XS in registers (the dedicated kernels of both files) ---- */

/* |value| of each IQ4_NL code. The codebook is sorted with codes 0..7 negative, so a
 * value's sign is bit 3 of its code and the kernels need no signed lookup. */
INLINE __m128i iq4_abs_table(void)
{
    return _mm_abs_epi8(_mm_loadu_si128((const __m128i *)quant_iq4nl_values));
}

/* In a lane holding an IQ4_XS block's first 16 bytes (d, scales_h, scales_l[4]), word k
 * of the result gets scales_l[k / 2] (IQ4_PICK_SCALES_L) or scales_h (..._H), from
 * which the 6-bit scale k is cut with per-word shifts. */
#define IQ4_PICK_SCALES_L _mm_setr_epi8(4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1)
#define IQ4_PICK_SCALES_H _mm_setr_epi8(2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3)

typedef struct {
    _Alignas(64) int8_t q[QK_K];
    _Alignas(64) int16_t sc[QK_K / 16];
    float d;
} sblock32; /* quant_sblock with the alignment the vector loads want */
_Static_assert(sizeof(((sblock32 *)0)->q) == sizeof(((quant_sblock *)0)->q), "sblock");

INLINE void dec_iq4_xs(const void *blk, sblock32 *o)
{
    const block_iq4_xs *x = blk;
    o->d = _cvtsh_ss(x->d);
    const __m256i tab = table16(quant_iq4nl_values), low4 = _mm256_set1_epi8(0x0F);
    UNROLL for (int p = 0; p < 4; p++) {
        /* sub-blocks 2p (low lane) and 2p+1 (high lane) */
        __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * p));
        __m256i lo = _mm256_shuffle_epi8(tab, _mm256_and_si256(raw, low4));
        __m256i hi = _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4));
        _mm256_store_si256((__m256i *)(o->q + 64 * p), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_store_si256((__m256i *)(o->q + 64 * p + 32), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
    UNROLL8 for (int ib = 0; ib < 8; ib++) {
        int ls = ((x->scales_l[ib / 2] >> (4 * (ib % 2))) & 15) | (((x->scales_h >> (2 * ib)) & 3) << 4);
        o->sc[2 * ib] = o->sc[2 * ib + 1] = (int16_t)(ls - 32);
    }
}

INLINE void dec_tq2_0(const void *blk, sblock32 *o)
{
    const block_tq2_0 *x = blk;
    o->d = _cvtsh_ss(x->d);
    const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    UNROLL for (int h = 0; h < 2; h++) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * h));
        UNROLL for (int l = 0; l < 4; l++) {
            __m256i v = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * l), three);
            _mm256_store_si256((__m256i *)(o->q + 128 * h + 32 * l), _mm256_sub_epi8(v, one));
        }
    }
    _mm256_store_si256((__m256i *)o->sc, _mm256_set1_epi16(1));
}

INLINE uint64_t ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

INLINE uint32_t ld32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Magnitudes g with the sign masks s (0 or 0xFF per byte): g where s = 0, -g else. */
INLINE __m256i apply_signs(__m256i g, __m256i s)
{
    return _mm256_sub_epi8(_mm256_xor_si256(g, s), s);
}

/* Four 8-byte table rows (grid entries or sign masks) in one register, loaded straight
 * into vector registers two to 128 bits (through general registers each row would
 * cost a transfer). */
INLINE __m256i rows4(const uint8_t (*t)[8], unsigned i0, unsigned i1, unsigned i2, unsigned i3)
{
    __m128i lo = _mm_castpd_si128(_mm_loadh_pd(_mm_castsi128_pd(_mm_loadl_epi64((const __m128i *)t[i0])), (const double *)t[i1]));
    __m128i hi = _mm_castpd_si128(_mm_loadh_pd(_mm_castsi128_pd(_mm_loadl_epi64((const __m128i *)t[i2])), (const double *)t[i3]));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

/* the grid rows of the four index bytes of idx, and the sign masks of the four 7-bit
 * fields of ss */
INLINE __m256i grid_rows4(uint32_t idx)
{
    return rows4((const uint8_t(*)[8])quant_grid_iq2xxs, idx & 255, (idx >> 8) & 255, (idx >> 16) & 255, idx >> 24);
}
INLINE __m256i sign_rows4(uint32_t ss)
{
    return rows4((const uint8_t(*)[8])quant_sign_bytes, ss & 127, (ss >> 7) & 127, (ss >> 14) & 127, (ss >> 21) & 127);
}

INLINE void dec_iq2_xxs(const void *blk, sblock32 *o)
{
    const block_iq2_xxs *x = blk;
    const uint8_t *qs = (const uint8_t *)x->qs;
    o->d = _cvtsh_ss(x->d) * 0.125f;
    UNROLL8 for (int ib = 0; ib < 8; ib++) {
        uint32_t idx = ld32(qs + 8 * ib), ss = ld32(qs + 8 * ib + 4);
        _mm256_store_si256((__m256i *)(o->q + 32 * ib), apply_signs(grid_rows4(idx), sign_rows4(ss)));
        o->sc[2 * ib] = o->sc[2 * ib + 1] = (int16_t)(2 * (ss >> 28) + 1);
    }
}

INLINE void dec_iq3_xxs(const void *blk, sblock32 *o)
{
    const block_iq3_xxs *x = blk;
    o->d = _cvtsh_ss(x->d) * 0.25f;
    UNROLL8 for (int ib = 0; ib < 8; ib++) {
        const uint8_t *qs = x->qs + 8 * ib;
        uint32_t ss = ld32(x->qs + 64 + 4 * ib);
        __m256i g = _mm256_setr_epi32((int)ld32(quant_grid_iq3xxs[qs[0]]), (int)ld32(quant_grid_iq3xxs[qs[1]]),
                                      (int)ld32(quant_grid_iq3xxs[qs[2]]), (int)ld32(quant_grid_iq3xxs[qs[3]]),
                                      (int)ld32(quant_grid_iq3xxs[qs[4]]), (int)ld32(quant_grid_iq3xxs[qs[5]]),
                                      (int)ld32(quant_grid_iq3xxs[qs[6]]), (int)ld32(quant_grid_iq3xxs[qs[7]]));
        __m256i s = _mm256_setr_epi64x((long long)ld64(quant_sign_bytes[ss & 127]),
                                       (long long)ld64(quant_sign_bytes[(ss >> 7) & 127]),
                                       (long long)ld64(quant_sign_bytes[(ss >> 14) & 127]),
                                       (long long)ld64(quant_sign_bytes[(ss >> 21) & 127]));
        _mm256_store_si256((__m256i *)(o->q + 32 * ib), apply_signs(g, s));
        o->sc[2 * ib] = o->sc[2 * ib + 1] = (int16_t)(2 * (ss >> 28) + 1);
    }
}

/* The 32 sign masks of four sign bytes (bit j of byte l: element 8l + j negative), for
 * the types that store their signs explicitly (IQ2_S, IQ3_S). */
INLINE __m256i sign_bits4(uint32_t b4)
{
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                            3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i t = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)b4), spread), bit);
    return _mm256_cmpeq_epi8(t, bit);
}

/* IQ2_XS: per 8 elements a 16-bit word of a 9-bit grid index and a 7-bit sign index;
 * two 4-bit scales per 32. */
INLINE void dec_iq2_xs(const void *blk, sblock32 *o)
{
    const block_iq2_xs *x = blk;
    o->d = _cvtsh_ss(x->d) * 0.125f;
    const uint8_t (*grid)[8] = (const uint8_t(*)[8])quant_grid_iq2xs;
    const uint8_t (*sign)[8] = (const uint8_t(*)[8])quant_sign_bytes;
    UNROLL8 for (int ib = 0; ib < 8; ib++) {
        const uint16_t *v = x->qs + 4 * ib;
        __m256i g = rows4(grid, v[0] & 511u, v[1] & 511u, v[2] & 511u, v[3] & 511u);
        __m256i sg = rows4(sign, v[0] >> 9, v[1] >> 9, v[2] >> 9, v[3] >> 9);
        _mm256_store_si256((__m256i *)(o->q + 32 * ib), apply_signs(g, sg));
        o->sc[2 * ib] = (int16_t)(2 * (x->scales[ib] & 15) + 1);
        o->sc[2 * ib + 1] = (int16_t)(2 * (x->scales[ib] >> 4) + 1);
    }
}

/* IQ2_S: 10-bit grid indices (a byte of qs and two bits of qh per 8 elements), the sign
 * bytes after the 32 index bytes, two 4-bit scales per 32. */
INLINE void dec_iq2_s(const void *blk, sblock32 *o)
{
    const block_iq2_s *x = blk;
    o->d = _cvtsh_ss(x->d) * 0.125f;
    const uint8_t (*grid)[8] = (const uint8_t(*)[8])quant_grid_iq2s;
    UNROLL8 for (int ib = 0; ib < 8; ib++) {
        const uint8_t *qs = x->qs + 4 * ib;
        const unsigned qh = x->qh[ib];
        __m256i g = rows4(grid, qs[0] | ((qh << 8) & 0x300), qs[1] | ((qh << 6) & 0x300), qs[2] | ((qh << 4) & 0x300),
                          qs[3] | ((qh << 2) & 0x300));
        _mm256_store_si256((__m256i *)(o->q + 32 * ib), apply_signs(g, sign_bits4(ld32(x->qs + 32 + 4 * ib))));
        o->sc[2 * ib] = (int16_t)(2 * (x->scales[ib] & 15) + 1);
        o->sc[2 * ib + 1] = (int16_t)(2 * (x->scales[ib] >> 4) + 1);
    }
}

/* IQ3_S: 9-bit indices into a grid of 4-element rows (a byte of qs, a bit of qh each),
 * explicit sign bytes, one 4-bit scale per 32. */
INLINE void dec_iq3_s(const void *blk, sblock32 *o)
{
    const block_iq3_s *x = blk;
    o->d = _cvtsh_ss(x->d);
    UNROLL8 for (int ib = 0; ib < 8; ib++) {
        const uint8_t *qs = x->qs + 8 * ib;
        const unsigned qh = x->qh[ib];
#define IQ3S_ROW(k) (int)ld32(quant_grid_iq3s[qs[k] | (((qh >> (k)) & 1) << 8)])
        __m256i g = _mm256_setr_epi32(IQ3S_ROW(0), IQ3S_ROW(1), IQ3S_ROW(2), IQ3S_ROW(3), IQ3S_ROW(4), IQ3S_ROW(5),
                                      IQ3S_ROW(6), IQ3S_ROW(7));
#undef IQ3S_ROW
        _mm256_store_si256((__m256i *)(o->q + 32 * ib), apply_signs(g, sign_bits4(ld32(x->signs + 4 * ib))));
        o->sc[2 * ib] = o->sc[2 * ib + 1] = (int16_t)(2 * ((x->scales[ib / 2] >> (4 * (ib % 2))) & 15) + 1);
    }
}

/* IQ1_S / IQ1_M values 8 g + delta: g from the signed grid (-1, 0, 1), delta = -1 or +1
 * per 8 elements (a byte of 0xFF or 0x01 in each lane of delta). */
INLINE __m256i iq1_values(__m256i g, __m256i delta)
{
    return _mm256_add_epi8(_mm256_sign_epi8(_mm256_set1_epi8(8), g), delta);
}

/* IQ1_S: per 32, four index bytes and a 16-bit word of four 3-bit index highs, a 3-bit
 * scale and the sign of the offset. */
INLINE void dec_iq1_s(const void *blk, sblock32 *o)
{
    const block_iq1_s *x = blk;
    o->d = _cvtsh_ss(x->d) * 0.125f;
    const uint8_t (*grid)[8] = (const uint8_t(*)[8])quant_grid_iq1s;
    UNROLL8 for (int ib = 0; ib < 8; ib++) {
        const uint8_t *qs = x->qs + 4 * ib;
        const unsigned qh = x->qh[ib];
        __m256i g = rows4(grid, qs[0] | ((qh & 7) << 8), qs[1] | (((qh >> 3) & 7) << 8),
                          qs[2] | (((qh >> 6) & 7) << 8), qs[3] | (((qh >> 9) & 7) << 8));
        __m256i delta = _mm256_set1_epi8(qh & 0x8000 ? -1 : 1);
        _mm256_store_si256((__m256i *)(o->q + 32 * ib), iq1_values(g, delta));
        o->sc[2 * ib] = o->sc[2 * ib + 1] = (int16_t)(2 * ((qh >> 12) & 7) + 1);
    }
}

/* IQ1_M: a qh nibble per 8 elements (three index-high bits, the offset's sign in bit
 * 3), 3-bit scales per 16 in four 16-bit words whose top nibbles make the f16 d. */
INLINE void dec_iq1_m(const void *blk, sblock32 *o)
{
    const block_iq1_m *x = blk;
    uint16_t sc[4];
    memcpy(sc, x->scales, 8);
    const uint16_t dh = (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
    o->d = _cvtsh_ss(dh) * 0.125f;
    const uint8_t (*grid)[8] = (const uint8_t(*)[8])quant_grid_iq1s;
    UNROLL8 for (int ib = 0; ib < 8; ib++) {
        const uint8_t *qs = x->qs + 4 * ib;
        const unsigned h0 = x->qh[2 * ib], h1 = x->qh[2 * ib + 1];
        __m256i g = rows4(grid, qs[0] | ((h0 & 7) << 8), qs[1] | (((h0 >> 4) & 7) << 8), qs[2] | ((h1 & 7) << 8),
                          qs[3] | (((h1 >> 4) & 7) << 8));
        __m256i delta = _mm256_setr_epi64x(h0 & 0x08 ? -1ll : 0x0101010101010101ll, h0 & 0x80 ? -1ll : 0x0101010101010101ll,
                                           h1 & 0x08 ? -1ll : 0x0101010101010101ll, h1 & 0x80 ? -1ll : 0x0101010101010101ll);
        _mm256_store_si256((__m256i *)(o->q + 32 * ib), iq1_values(g, delta));
        const unsigned w = sc[ib / 2] >> (6 * (ib % 2));
        o->sc[2 * ib] = (int16_t)(2 * (w & 7) + 1);
        o->sc[2 * ib + 1] = (int16_t)(2 * ((w >> 3) & 7) + 1);
    }
}

/* The scalar decoders for the rest, through a copy into the aligned form. */
INLINE void dec_scalar(quant_sdecode_fn f, const void *blk, sblock32 *o)
{
    quant_sblock s;
    f(blk, &s);
    memcpy(o->q, s.q, sizeof s.q);
    memcpy(o->sc, s.sc, sizeof s.sc);
    o->d = s.d;
}

enum { DEC_IQ4_XS, DEC_TQ2_0, DEC_IQ2_XXS, DEC_IQ3_XXS, DEC_IQ2_XS, DEC_IQ2_S, DEC_IQ3_S, DEC_IQ1_S, DEC_IQ1_M, DEC_SCALAR };

INLINE void decode(const int kind, quant_sdecode_fn f, const void *blk, sblock32 *o)
{
    switch (kind) {
    case DEC_IQ4_XS: dec_iq4_xs(blk, o); break;
    case DEC_TQ2_0: dec_tq2_0(blk, o); break;
    case DEC_IQ2_XXS: dec_iq2_xxs(blk, o); break;
    case DEC_IQ3_XXS: dec_iq3_xxs(blk, o); break;
    case DEC_IQ2_XS: dec_iq2_xs(blk, o); break;
    case DEC_IQ2_S: dec_iq2_s(blk, o); break;
    case DEC_IQ3_S: dec_iq3_s(blk, o); break;
    case DEC_IQ1_S: dec_iq1_s(blk, o); break;
    case DEC_IQ1_M: dec_iq1_m(blk, o); break;
    default: dec_scalar(f, blk, o); break;
    }
}

#endif
