/* quant_iq_avx2.c — AVX2 kernels for the IQ, TQ and MXFP4 types.
 *
 * IQ4_NL and MXFP4 (against Q8_0) look their 4-bit codes up with one vpshufb and then
 * go the way of Q8_0: |w| times sign(a, w) through vpmaddubsw.
 *
 * IQ4_XS and IQ2_XXS have their own kernels in Q4_K's mould (codes and grid rows go
 * straight into registers, nothing is decoded to memory). The other Q8_K types share
 * one kernel: a weight block is decoded to the integer form of quant_impl.h
 * (quant_sblock: 256 int8 quants, a scale per 16, one float) and then multiplied the
 * same way for every type, so a type only brings a decoder. TQ2_0 and IQ3_XXS have
 * vector decoders (quant_iq_dec.h; IQ4_XS's and IQ2_XXS's serve dequantization); the others
 * (IQ3_S, IQ2_XS, IQ2_S, IQ1_S, IQ1_M, TQ1_0) use the scalar decoder and still get the
 * vector product.
 * In a tile each row's block is decoded once for all C activation rows, which is what
 * makes prefill cheaper than C separate dot products.
 *
 * Each tile shape does the same arithmetic lane for lane, so decode and prefill give a
 * row the same result.
 */
#include "quant_iq_dec.h"

#include "quant_tile.h"

INLINE float hsum256(__m256 v)
{
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

#define ZERO_ACC(acc)                      \
    __m256 acc[4][4];                      \
    UNROLL for (int r = 0; r < R; r++)     \
        UNROLL for (int c = 0; c < C; c++) \
            acc[r][c] = _mm256_setzero_ps();

INLINE void store_tile(const int R, const int C, __m256 acc[4][4], float *out, size_t os)
{
    UNROLL for (int c = 0; c < C; c++)
        UNROLL for (int r = 0; r < R; r++)
            out[(size_t)c * os + r] = hsum256(acc[r][c]);
}

/* ================= IQ4_NL, MXFP4 against Q8_0 ================= */

INLINE void nl4_kernel(const int mx, int64_t n, const int R, const int C, const char *w, size_t ws,
                       const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / 32;
    const size_t bb = mx ? sizeof(block_mxfp4) : sizeof(block_iq4_nl);
    const __m256i tab = table16(mx ? quant_mxfp4_values : quant_iq4nl_values);
    const __m256i ones = _mm256_set1_epi16(1);
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        __m256i aq[4];
        float ad[4];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)c * as) + b;
            aq[c] = _mm256_loadu_si256((const __m256i *)y->qs);
            ad[c] = _cvtsh_ss(y->d);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const uint8_t *x = (const uint8_t *)(w + (size_t)r * ws) + (size_t)b * bb;
            prefetch_ahead(C, x, 64);
            const float wd = nl4_scale(mx, x);
            __m256i wq = _mm256_shuffle_epi8(tab, nl4_codes(mx, x));
            __m256i wabs = _mm256_sign_epi8(wq, wq);
            UNROLL for (int c = 0; c < C; c++) {
                __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(aq[c], wq)), ones);
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ad[c] * wd), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}

INLINE void iq4_nl_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                          const char *a, size_t as, float *out, size_t os)
{
    nl4_kernel(0, n, R, C, w, ws, a, as, out, os);
}
INLINE void mxfp4_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                         const char *a, size_t as, float *out, size_t os)
{
    nl4_kernel(1, n, R, C, w, ws, a, as, out, os);
}
DEFINE_TILE_AND_DOT(iq4_nl, iq4_nl_kernel)
DEFINE_TILE_AND_DOT(mxfp4, mxfp4_kernel)

/* Dequantization of both: the same lookup, then float. */
INLINE void nl4_dequant(const int mx, const void *src, float *dst, int64_t n)
{
    const size_t bb = mx ? sizeof(block_mxfp4) : sizeof(block_iq4_nl);
    const __m256i tab = table16(mx ? quant_mxfp4_values : quant_iq4nl_values);
    for (int64_t b = 0; b < n / 32; b++, dst += 32) {
        const uint8_t *x = (const uint8_t *)src + (size_t)b * bb;
        __m256i v = _mm256_shuffle_epi8(tab, nl4_codes(mx, x));
        __m256 dv = _mm256_set1_ps(nl4_scale(mx, x));
        UNROLL for (int k = 0; k < 4; k++) {
            __m128i part = k < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
            if (k & 1)
                part = _mm_srli_si128(part, 8);
            _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part)), dv));
        }
    }
}

static void dequant_iq4_nl(const void *src, float *dst, int64_t n)
{
    nl4_dequant(0, src, dst, n);
}
static void dequant_mxfp4(const void *src, float *dst, int64_t n)
{
    nl4_dequant(1, src, dst, n);
}

/* ================= IQ4_XS against Q8_K ================= */

/* The AVX-512 file's plan (Q4_K's, with a codebook) in 256-bit registers:
 * - heads of rows 0,1 and rows 2,3 share a register, 128-bit lane r & 1 for row r; the
 *   6-bit scales are cut out with vpmullw by powers of two (AVX2 has no per-word
 *   shift), two rows at a time;
 * - 32 bytes of qs are sub-blocks 2k (low lane) and 2k + 1 (high lane), low nibbles
 *   elements 0..15, high ones 16..31; the activation is regrouped to match once per
 *   block, for all rows, so a lane's products all take one scale;
 * - |w| and w come from two vpshufb, vpsignb carries w's sign to the activation, and
 *   vpmaddubsw's pair sums (at most 2 * 127 * 127) meet the scales in vpmaddwd. */
INLINE void iq4_xs_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                          const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i tab = table16(quant_iq4nl_values), tab_abs = _mm256_broadcastsi128_si256(iq4_abs_table());
    const __m256i pick_l = _mm256_broadcastsi128_si256(IQ4_PICK_SCALES_L);
    const __m256i pick_h = _mm256_broadcastsi128_si256(IQ4_PICK_SCALES_H);
    /* word k: the nibble of scale k to bits 4-7 (x16 for the low nibbles of even k);
     * scales_h bits 2k, 2k+1 to bits 14-15 */
    const __m256i mul_l = _mm256_setr_epi16(16, 1, 16, 1, 16, 1, 16, 1, 16, 1, 16, 1, 16, 1, 16, 1);
    const __m256i mul_h = _mm256_setr_epi16(1 << 14, 1 << 12, 1 << 10, 1 << 8, 1 << 6, 1 << 4, 1 << 2, 1,
                                            1 << 14, 1 << 12, 1 << 10, 1 << 8, 1 << 6, 1 << 4, 1 << 2, 1);
    /* for 32-byte run k: scale 2k across the low lane, 2k + 1 across the high */
    __m256i pick_sc[4];
    UNROLL for (int k = 0; k < 4; k++) {
        int8_t idx[32];
        for (int i = 0; i < 32; i++)
            idx[i] = (int8_t)(2 * (2 * k + i / 16) + (i & 1));
        pick_sc[k] = _mm256_loadu_si256((const __m256i *)idx);
    }
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        const char *blk[4];
        UNROLL for (int r = 0; r < R; r++) {
            blk[r] = w + (size_t)r * ws + (size_t)b * sizeof(block_iq4_xs);
            prefetch_ahead(C, blk[r], sizeof(block_iq4_xs));
        }
        __m256i h[2], ls[2];
        UNROLL for (int p = 0; p < 2; p++) {
            h[p] = _mm256_setzero_si256();
            if (2 * p < R)
                h[p] = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)blk[2 * p]));
            if (2 * p + 1 < R)
                h[p] = _mm256_inserti128_si256(h[p], _mm_loadu_si128((const __m128i *)blk[2 * p + 1]), 1);
            __m256i lo = _mm256_mullo_epi16(_mm256_shuffle_epi8(h[p], pick_l), mul_l);
            __m256i hi = _mm256_mullo_epi16(_mm256_shuffle_epi8(h[p], pick_h), mul_h);
            /* 16 * ls in bits 4-9, less 16 * 32; exact multiples of 16, so the
             * arithmetic shift divides */
            __m256i x = _mm256_or_si256(_mm256_and_si256(lo, _mm256_set1_epi16(0xF0)),
                                        _mm256_and_si256(_mm256_srli_epi16(hi, 6), _mm256_set1_epi16(0x300)));
            ls[p] = _mm256_srai_epi16(_mm256_sub_epi16(x, _mm256_set1_epi16(512)), 4);
        }
        /* word 0 of each head: [d0 d2 ..| d1 d3 ..], then [d0 d1 d2 d3] */
        __m256i dt = _mm256_unpacklo_epi16(h[0], h[1]);
        __m128 d = _mm_cvtph_ps(_mm_unpacklo_epi16(_mm256_castsi256_si128(dt), _mm256_extracti128_si256(dt, 1)));

        float dda[4][4];
        __m256i alh[4][8]; /* per activation row, run k: [2k] low nibbles' partners, [2k + 1] high */
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            _mm_storeu_ps(dda[c], _mm_mul_ps(d, _mm_set1_ps(y->d)));
            UNROLL for (int k = 0; k < 4; k++) {
                __m256i x0 = _mm256_loadu_si256((const __m256i *)(y->qs + 64 * k));
                __m256i x1 = _mm256_loadu_si256((const __m256i *)(y->qs + 64 * k + 32));
                alh[c][2 * k] = _mm256_permute2x128_si256(x0, x1, 0x20);
                alh[c][2 * k + 1] = _mm256_permute2x128_si256(x0, x1, 0x31);
            }
        }
        __asm__("" : "+m"(dda));

        UNROLL for (int r = 0; r < R; r++) {
            const uint8_t *qs = (const uint8_t *)blk[r] + 8;
            __m256i srow = _mm256_permutevar8x32_epi32(
                ls[r >> 1], r & 1 ? _mm256_setr_epi32(4, 5, 6, 7, 4, 5, 6, 7) : _mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3));
            __m256i s[4];
            UNROLL for (int k = 0; k < 4; k++) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
                __m256i cl = _mm256_and_si256(q, low4), ch = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
                __m256i wl = _mm256_shuffle_epi8(tab, cl), ul = _mm256_shuffle_epi8(tab_abs, cl);
                __m256i wh = _mm256_shuffle_epi8(tab, ch), uh = _mm256_shuffle_epi8(tab_abs, ch);
                __m256i sc = _mm256_shuffle_epi8(srow, pick_sc[k]);
                UNROLL for (int c = 0; c < C; c++) {
                    __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(ul, _mm256_sign_epi8(alh[c][2 * k], wl)), sc);
                    __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(uh, _mm256_sign_epi8(alh[c][2 * k + 1], wh)), sc);
                    __m256i p = _mm256_add_epi32(pl, ph);
                    s[c] = k ? _mm256_add_epi32(s[c], p) : p;
                }
            }
            UNROLL for (int c = 0; c < C; c++)
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[c]), _mm256_set1_ps(dda[c][r]), acc[r][c]);
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(iq4_xs, iq4_xs_kernel)

/* ================= IQ2_XXS against Q8_K ================= */

/* Per sub-block of 32 the grid rows and the sign masks of its four groups go straight
 * into registers, the signs move to the activation, and vpmaddubsw's pair sums (at most
 * 2 * 43 * 127) take the sub-block's scale 2s + 1 in vpmaddwd. */
INLINE void iq2_xxs_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                           const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        float yd[4];
        UNROLL for (int c = 0; c < C; c++)
            yd[c] = ((const block_q8_K *)(a + (size_t)c * as) + b)->d;
        UNROLL for (int r = 0; r < R; r++) {
            const uint8_t *x = (const uint8_t *)(w + (size_t)r * ws) + (size_t)b * sizeof(block_iq2_xxs);
            prefetch_ahead(C, x, sizeof(block_iq2_xxs));
            const uint8_t *qs = x + 2;
            __m256i s[4];
            UNROLL8 for (int ib = 0; ib < 8; ib++) {
                uint32_t idx = ld32(qs + 8 * ib), ss = ld32(qs + 8 * ib + 4);
                __m256i g = grid_rows4(idx);
                __m256i sm = sign_rows4(ss);
                __m256i sc = _mm256_set1_epi16((short)(2 * (ss >> 28) + 1));
                UNROLL for (int c = 0; c < C; c++) {
                    const int8_t *aq = ((const block_q8_K *)(a + (size_t)c * as) + b)->qs;
                    __m256i av = _mm256_loadu_si256((const __m256i *)(aq + 32 * ib));
                    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(g, apply_signs(av, sm)), sc);
                    s[c] = ib ? _mm256_add_epi32(s[c], p) : p;
                }
            }
            uint16_t dh;
            memcpy(&dh, x, 2);
            const float d = _cvtsh_ss(dh) * 0.125f;
            UNROLL for (int c = 0; c < C; c++)
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[c]), _mm256_set1_ps(d * yd[c]), acc[r][c]);
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(iq2_xxs, iq2_xxs_kernel)

/* ================= the quant_sblock types against Q8_K ================= */

/* Sub-blocks 2k (elements 0..15 of run k) and 2k+1 (16..31) as int16 in the lanes their
 * products land in: scales of the low 128-bit lane, then the high. */
INLINE __m256i run_scales(__m256i sc16, int k)
{
    const __m256i pick = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
                                          2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    return _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(k)), pick);
}

INLINE void sb_kernel(const int kind, quant_sdecode_fn f, const size_t bb, int64_t n, const int R,
                      const int C, const char *w, size_t ws, const char *a, size_t as, float *out,
                      size_t os)
{
    const int64_t nb = n / QK_K;
    ZERO_ACC(acc)
    sblock32 sb;
    for (int64_t b = 0; b < nb; b++) {
        float yd[4];
        UNROLL for (int c = 0; c < C; c++)
            yd[c] = ((const block_q8_K *)(a + (size_t)c * as) + b)->d;
        UNROLL for (int r = 0; r < R; r++) {
            const char *x = w + (size_t)r * ws + (size_t)b * bb;
            prefetch_ahead(C, x, (int)bb);
            decode(kind, f, x, &sb);
            __m256i sc16 = _mm256_load_si256((const __m256i *)sb.sc);
            __m256i s[4];
            UNROLL8 for (int k = 0; k < 8; k++) {
                __m256i wq = _mm256_load_si256((const __m256i *)(sb.q + 32 * k));
                __m256i wabs = _mm256_sign_epi8(wq, wq);
                __m256i scl = run_scales(sc16, k);
                UNROLL for (int c = 0; c < C; c++) {
                    const __m256i *aq = (const __m256i *)((const block_q8_K *)(a + (size_t)c * as) + b)->qs + k;
                    __m256i p = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(_mm256_loadu_si256(aq), wq)), scl);
                    s[c] = k ? _mm256_add_epi32(s[c], p) : p;
                }
            }
            UNROLL for (int c = 0; c < C; c++)
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[c]), _mm256_set1_ps(sb.d * yd[c]), acc[r][c]);
        }
    }
    store_tile(R, C, acc, out, os);
}

INLINE void sb_dequant(const int kind, quant_sdecode_fn f, const size_t bb, const void *src, float *dst,
                       int64_t n)
{
    sblock32 sb;
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        decode(kind, f, (const char *)src + (size_t)b * bb, &sb);
        UNROLL for (int j = 0; j < 16; j++) {
            /* (d * sc) * q, the scalar decoders' order, so the bits agree */
            __m256 dl = _mm256_set1_ps(sb.d * sb.sc[j]);
            __m128i q = _mm_load_si128((const __m128i *)(sb.q + 16 * j));
            _mm256_storeu_ps(dst + 16 * j, _mm256_mul_ps(dl, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
            _mm256_storeu_ps(dst + 16 * j + 8,
                             _mm256_mul_ps(dl, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)))));
        }
    }
}

/* Scalar-decoded types look their decoder up once per call. */
#define SB_TYPE(name, T, kind, block)                                                    \
    INLINE void name##_kernel(int64_t n, const int R, const int C, const char *w, size_t ws, \
                              const char *a, size_t as, float *out, size_t os)           \
    {                                                                                    \
        quant_sdecode_fn f = kind == DEC_SCALAR ? quant_ref_sdecoder(T) : NULL;          \
        sb_kernel(kind, f, sizeof(block), n, R, C, w, ws, a, as, out, os);               \
    }                                                                                    \
    DEFINE_TILE_AND_DOT(name, name##_kernel)                                             \
    static void dequant_##name(const void *src, float *dst, int64_t n)                   \
    {                                                                                    \
        quant_sdecode_fn f = kind == DEC_SCALAR ? quant_ref_sdecoder(T) : NULL;          \
        sb_dequant(kind, f, sizeof(block), src, dst, n);                                 \
    }

/* IQ4_XS has its own kernel above; its rows (the embedding lookup) decode here */
static void dequant_iq4_xs(const void *src, float *dst, int64_t n)
{
    sb_dequant(DEC_IQ4_XS, NULL, sizeof(block_iq4_xs), src, dst, n);
}
SB_TYPE(tq2_0, T_TQ2_0, DEC_TQ2_0, block_tq2_0)
static void dequant_iq2_xxs(const void *src, float *dst, int64_t n)
{
    sb_dequant(DEC_IQ2_XXS, NULL, sizeof(block_iq2_xxs), src, dst, n);
}
SB_TYPE(iq3_xxs, T_IQ3_XXS, DEC_IQ3_XXS, block_iq3_xxs)
SB_TYPE(iq2_xs, T_IQ2_XS, DEC_IQ2_XS, block_iq2_xs)
SB_DECODED_TYPES(SB_TYPE)

void quant_iq_avx2_fill(quant_kernels *k)
{
#define SET(T, name)                      \
    k->dequantize[T] = dequant_##name;    \
    k->vec_dot[T] = dot_##name;           \
    k->tile[T] = tile_##name;
    SET(T_IQ4_NL, iq4_nl)
    SET(T_MXFP4, mxfp4)
    SET(T_IQ4_XS, iq4_xs)
    SET(T_TQ2_0, tq2_0)
    SET(T_IQ2_XXS, iq2_xxs)
    SET(T_IQ3_XXS, iq3_xxs)
    SET(T_IQ2_XS, iq2_xs)
#define SET_SB(name, T, kind, block) SET(T, name)
    SB_DECODED_TYPES(SET_SB)
#undef SET_SB
#undef SET
}
