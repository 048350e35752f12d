/* quant_iq_avx512.c — AVX-512 (BW, VL, VNNI, VBMI) kernels for the IQ, TQ and MXFP4 types.
 *
 * The same plan as the AVX2 file, twice as wide:
 * - IQ4_NL and MXFP4 take two 32-blocks per 512-bit register (a last odd block goes
 *   through the 256-bit form of the same arithmetic); the codes are looked up with one
 *   vpshufb, and vpdpbusd multiplies |w| by the activations carrying w's sign and sums
 *   each 4 products, so a block's 8 partial sums need no separate widening step.
 * - IQ4_XS, IQ2_XXS, IQ3_XXS and IQ2_XS have kernels in Q4_K's mould: nothing is
 *   decoded to memory, codes and grid rows go straight into registers (the grids of
 *   the last three are looked up in registers) and the scales of a block are unpacked
 *   in registers.
 * - The other Q8_K types decode a block to quant_sblock (quant_iq_dec.h) and multiply
 *   64 elements per instruction; the scale of each 16 reaches its lanes through one
 *   vpermw per 64 elements, shared by every activation row of the tile.
 * AVX-512 has no vpsignb: the activations are negated under the mask of w's sign bits.
 */
#include "quant_iq_dec.h"

#include "quant_tile.h"

#define ZERO_ACC(acc)                      \
    __m512 acc[4][4];                      \
    UNROLL for (int r = 0; r < R; r++)     \
        UNROLL for (int c = 0; c < C; c++) \
            acc[r][c] = _mm512_setzero_ps();

INLINE void store_tile(const int R, const int C, __m512 acc[4][4], float *out, size_t os)
{
    UNROLL for (int c = 0; c < C; c++)
        UNROLL for (int r = 0; r < R; r++)
            out[(size_t)c * os + r] = _mm512_reduce_add_ps(acc[r][c]);
}

/* ================= IQ4_NL, MXFP4 against Q8_0 ================= */

INLINE void nl4_kernel(const int mx, int64_t n, const int R, const int C, const char *w, size_t ws,
                       const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / 32;
    const size_t bb = mx ? sizeof(block_mxfp4) : sizeof(block_iq4_nl);
    const __m512i tab = _mm512_broadcast_i32x4(_mm_loadu_si128(
        (const __m128i *)(mx ? quant_mxfp4_values : quant_iq4nl_values)));
    ZERO_ACC(acc)
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        __m512i aq[4];
        __m512 ad[4];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)c * as) + b;
            aq[c] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)y[0].qs)),
                                       _mm256_loadu_si256((const __m256i *)y[1].qs), 1);
            ad[c] = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(y[0].d)), _mm256_set1_ps(_cvtsh_ss(y[1].d)), 1);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const uint8_t *x = (const uint8_t *)(w + (size_t)r * ws) + (size_t)b * bb;
            prefetch_ahead(C, x, 64);
            __m512i codes = _mm512_inserti64x4(_mm512_castsi256_si512(nl4_codes(mx, x)), nl4_codes(mx, x + bb), 1);
            __m512i wq = _mm512_shuffle_epi8(tab, codes);
            __m512i wabs = _mm512_abs_epi8(wq);
            __mmask64 neg = _mm512_movepi8_mask(wq);
            __m512 wd = _mm512_insertf32x8(_mm512_set1_ps(nl4_scale(mx, x)), _mm256_set1_ps(nl4_scale(mx, x + bb)), 1);
            UNROLL for (int c = 0; c < C; c++) {
                __m512i as_ = _mm512_mask_sub_epi8(aq[c], neg, _mm512_setzero_si512(), aq[c]);
                __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wabs, as_);
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(ad[c], wd), acc[r][c]);
            }
        }
    }
    if (b < nb) { /* the odd last block, in the low half of the accumulators */
        __m256i aq[4];
        float ad[4];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)c * as) + b;
            aq[c] = _mm256_loadu_si256((const __m256i *)y->qs);
            ad[c] = _cvtsh_ss(y->d);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const uint8_t *x = (const uint8_t *)(w + (size_t)r * ws) + (size_t)b * bb;
            __m256i wq = _mm256_shuffle_epi8(_mm512_castsi512_si256(tab), nl4_codes(mx, x));
            __m256i wabs = _mm256_abs_epi8(wq);
            __mmask32 neg = _mm256_movepi8_mask(wq);
            float wd = nl4_scale(mx, x);
            UNROLL for (int c = 0; c < C; c++) {
                __m256i as_ = _mm256_mask_sub_epi8(aq[c], neg, _mm256_setzero_si256(), aq[c]);
                __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wabs, as_);
                __m512 t = _mm512_castps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ad[c] * wd)));
                acc[r][c] = _mm512_add_ps(acc[r][c], _mm512_maskz_mov_ps(0x00FF, t));
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

/* ================= IQ4_XS against Q8_K ================= */

/* Q4_K's plan with a codebook: decode streams the weights, so nothing is decoded to
 * memory and the per-block work that is not a multiply is shared by the rows.
 * - The R rows' 8-byte heads (d, scales_h, scales_l) sit in 128-bit lane r of one
 *   register: the 6-bit scales of all rows are unpacked there at once (word k of lane r
 *   = ls_k - 32 of row r) and the four d converted together.
 * - qs is read 64 bytes at a time: lane L holds sub-block 4j + L, its low nibbles
 *   elements 0..15 and its high ones 16..31, so the activation is regrouped to match
 *   once per block for all rows and every lane of a product takes one sub-block's scale.
 * - The codes index |value| with one vpshufb; a value is negative exactly when bit 3 of
 *   its code is clear (the codebook is sorted), which masks the activation's negation.
 * - vpmaddubsw's pair sums (at most 2 * 127 * 127, no saturation) meet the scales in
 *   vpdpwssd, so a row's block is one int32 vector, one convert and one FMA. */
INLINE void iq4_xs_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                          const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    const __m512i low4 = _mm512_set1_epi8(0x0F), bit3 = _mm512_set1_epi8(0x08);
    const __m512i tab = _mm512_broadcast_i32x4(iq4_abs_table());
    const __m512i pick_l = _mm512_broadcast_i32x4(IQ4_PICK_SCALES_L), pick_h = _mm512_broadcast_i32x4(IQ4_PICK_SCALES_H);
    /* low nibble for even k, high for odd; scales_h bits 2k, 2k+1 to the top of word k */
    const __m512i shr_l = _mm512_broadcast_i32x4(_mm_setr_epi16(0, 4, 0, 4, 0, 4, 0, 4));
    const __m512i shl_h = _mm512_broadcast_i32x4(_mm_setr_epi16(14, 12, 10, 8, 6, 4, 2, 0));
    /* the scale of sub-block 4j + L across 128-bit lane L */
    __m512i pick_sc[2];
    UNROLL for (int j = 0; j < 2; j++) {
        int8_t idx[64];
        for (int i = 0; i < 64; i++)
            idx[i] = (int8_t)(2 * (4 * j + i / 16) + (i & 1));
        pick_sc[j] = _mm512_loadu_si512(idx);
    }
    const __m512i pick_d = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                            0, 0, 0, 0, 0, 0, 24, 16, 8, 0);
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        const char *blk[4];
        __m512i head = _mm512_setzero_si512();
        UNROLL for (int r = 0; r < R; r++) {
            blk[r] = w + (size_t)r * ws + (size_t)b * sizeof(block_iq4_xs);
            prefetch_ahead(C, blk[r], sizeof(block_iq4_xs));
            head = _mm512_mask_broadcast_i32x4(head, (__mmask16)(0xF << (4 * r)),
                                               _mm_loadu_si128((const __m128i *)blk[r]));
        }
        __m512i lo = _mm512_srlv_epi16(_mm512_shuffle_epi8(head, pick_l), shr_l);
        __m512i hi = _mm512_srli_epi16(_mm512_sllv_epi16(_mm512_shuffle_epi8(head, pick_h), shl_h), 10);
        /* low nibble from lo, bits 4-5 from hi (whose bits above 5 are clear) */
        __m512i ls = _mm512_sub_epi16(_mm512_ternarylogic_epi32(_mm512_set1_epi16(0x0F), lo, hi, 0xCA),
                                      _mm512_set1_epi16(32));
        __m128 d = _mm_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi16(pick_d, head)));

        float dda[4][4];
        __m512i al[4][2], ah[4][2];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            _mm_storeu_ps(dda[c], _mm_mul_ps(d, _mm_set1_ps(y->d)));
            UNROLL for (int j = 0; j < 2; j++) {
                __m512i x0 = _mm512_loadu_si512(y->qs + 128 * j), x1 = _mm512_loadu_si512(y->qs + 128 * j + 64);
                al[c][j] = _mm512_shuffle_i64x2(x0, x1, 0x88); /* 16-byte pieces 0, 2 of each */
                ah[c][j] = _mm512_shuffle_i64x2(x0, x1, 0xDD); /* pieces 1, 3 */
            }
        }
        /* through memory, to be broadcast straight into the FMAs */
        __asm__("" : "+m"(dda));

        UNROLL for (int r = 0; r < R; r++) {
            const uint8_t *qs = (const uint8_t *)blk[r] + 8;
            __m512i smr = _mm512_permutexvar_epi32(_mm512_set4_epi32(4 * r + 3, 4 * r + 2, 4 * r + 1, 4 * r), ls);
            __m512i wl[2], wh[2], sc[2];
            __mmask64 nl[2], nh[2];
            UNROLL for (int j = 0; j < 2; j++) {
                __m512i q = _mm512_loadu_si512(qs + 64 * j);
                __m512i cl = _mm512_and_si512(q, low4), ch = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
                wl[j] = _mm512_shuffle_epi8(tab, cl);
                wh[j] = _mm512_shuffle_epi8(tab, ch);
                nl[j] = _mm512_testn_epi8_mask(cl, bit3);
                nh[j] = _mm512_testn_epi8_mask(ch, bit3);
                sc[j] = _mm512_shuffle_epi8(smr, pick_sc[j]);
            }
            UNROLL for (int c = 0; c < C; c++) {
                __m512i isum = _mm512_setzero_si512();
                UNROLL for (int j = 0; j < 2; j++) {
                    __m512i sl = _mm512_mask_sub_epi8(al[c][j], nl[j], _mm512_setzero_si512(), al[c][j]);
                    __m512i sh = _mm512_mask_sub_epi8(ah[c][j], nh[j], _mm512_setzero_si512(), ah[c][j]);
                    isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(wl[j], sl), sc[j]);
                    isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(wh[j], sh), sc[j]);
                }
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(dda[c][r]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(iq4_xs, iq4_xs_kernel)

/* ================= IQ2_XXS, IQ3_XXS against Q8_K ================= */

/* Byte k: the 8 signs of a group whose 7-bit sign index is k (bit j set: element j
 * negative), the eighth being the parity of the other seven (the grids' sign sets have
 * an even count of minus signs). */
static const uint8_t xxs_sign_mask[128] __attribute__((aligned(64))) = {
    0, 129, 130, 3, 132, 5, 6, 135, 136, 9, 10, 139, 12, 141, 142, 15,
    144, 17, 18, 147, 20, 149, 150, 23, 24, 153, 154, 27, 156, 29, 30, 159,
    160, 33, 34, 163, 36, 165, 166, 39, 40, 169, 170, 43, 172, 45, 46, 175,
    48, 177, 178, 51, 180, 53, 54, 183, 184, 57, 58, 187, 60, 189, 190, 63,
    192, 65, 66, 195, 68, 197, 198, 71, 72, 201, 202, 75, 204, 77, 78, 207,
    80, 209, 210, 83, 212, 85, 86, 215, 216, 89, 90, 219, 92, 221, 222, 95,
    96, 225, 226, 99, 228, 101, 102, 231, 232, 105, 106, 235, 108, 237, 238, 111,
    240, 113, 114, 243, 116, 245, 246, 119, 120, 249, 250, 123, 252, 125, 126, 255};

/* The 32 sign bytes of an IQ2_XXS/IQ3_XXS block, byte 4ib + l for group l of sub-block
 * ib, from the eight words that hold four 7-bit sign indices each (bits 7l..7l+6, a
 * scale in bits 28-31): vpmultishiftqb brings each field to the bottom of its byte and
 * vpermi2b looks the 128-entry table up (it reads only the low 7 bits). */
INLINE __m256i xxs_sign_bytes(__m256i ss, const __m512i tab[2])
{
    const __m512i fields = _mm512_set1_epi64(0x352E2720150E0700ll); /* bits 0 7 14 21 32 39 46 53 */
    const __m512i f = _mm512_multishift_epi64_epi8(fields, _mm512_castsi256_si512(ss));
    return _mm512_castsi512_si256(_mm512_permutex2var_epi8(tab[0], f, tab[1]));
}

/* Grid types in Q4_K's mould: per 64 weights (two sub-blocks) the eight grid rows go
 * straight into a register, the signs become a 64-bit mask that negates the activation,
 * and vpdpbusd sums each 4 products of magnitude times signed activation (at most
 * 4 * 43 * 127, or 4 * 62 * 127 for IQ3_XXS: both fit int16), so two such vectors
 * packed to int16 take their sub-block scales 2s + 1 in one vpdpwssd, as Q4_K does.
 *
 * The grid rows come from the packed grid (quant_grids.h: an entry is one 16-bit word,
 * a 2-bit level index per element for IQ2_XXS, 3-bit for IQ3_XXS), whose 256 words fit
 * eight registers: vpermi2w looks 32 indices up in each pair of 64 entries and two
 * blends by index bits 6 and 7 pick the pair. The indices are put in an order where
 * every qword of the result holds the entries that one qword of each 64 weights needs
 * (IQ2_XXS: entry 8g + j in word g of qword j; IQ3_XXS: entries 16e + 2q, 16e + 2q + 1
 * in words 2e, 2e + 1 of qword q), so one vpmultishiftqb per 64 weights moves every
 * element's bits to the bottom of its byte, and vpermb turns them into levels. This
 * kernel is bound by its shuffles (about 20 per 256 weights); eight scalar grid loads
 * and inserts per 64 weights were slower, a gather slower still on AMD Zen 5. */
typedef struct xxs_grid {
    __m512i tab[8];  /* the 256 packed entries, 32 words per register */
    __m512i level;   /* byte k: the magnitude of level index k mod 4 or mod 8 */
    __m512i sign[2]; /* xxs_sign_mask, 64 bytes per register */
} xxs_grid;

/* vpermb: the index bytes of a block in the order above, one per word (IQ2_XXS: from its
 * 8-byte sub-blocks; IQ3_XXS: each half of its 64 index bytes). */
static const uint8_t xxs_order2[64] __attribute__((aligned(64))) =
    {0, 0, 16, 0, 32, 0, 48, 0, 1, 0, 17, 0, 33, 0, 49, 0, 2, 0, 18, 0, 34, 0, 50, 0, 3, 0, 19, 0, 35, 0, 51,
     0, 8, 0, 24, 0, 40, 0, 56, 0, 9, 0, 25, 0, 41, 0, 57, 0, 10, 0, 26, 0, 42, 0, 58, 0, 11, 0, 27, 0, 43,
     0, 59, 0};
static const uint8_t xxs_order3[2][64] __attribute__((aligned(64))) = {
    {0, 0, 1, 0, 16, 0, 17, 0, 2, 0, 3, 0, 18, 0, 19, 0, 4, 0, 5, 0, 20, 0, 21, 0, 6, 0, 7, 0, 22, 0, 23, 0,
     8, 0, 9, 0, 24, 0, 25, 0, 10, 0, 11, 0, 26, 0, 27, 0, 12, 0, 13, 0, 28, 0, 29, 0, 14, 0, 15, 0, 30, 0,
     31, 0},
    {32, 0, 33, 0, 48, 0, 49, 0, 34, 0, 35, 0, 50, 0, 51, 0, 36, 0, 37, 0, 52, 0, 53, 0, 38, 0, 39, 0, 54, 0,
     55, 0, 40, 0, 41, 0, 56, 0, 57, 0, 42, 0, 43, 0, 58, 0, 59, 0, 44, 0, 45, 0, 60, 0, 61, 0, 46, 0, 47, 0,
     62, 0, 63, 0}};
/* vpmultishiftqb controls per 64 weights: byte i of qword j takes element i of its entry
 * (IQ2_XXS group g: bits 16g + 2i; IQ3_XXS group e of a half: the entry in word 2e for
 * bytes 0-3, 2e + 1 for bytes 4-7, 3 bits each). */
static const uint8_t xxs_spread2[4][64] __attribute__((aligned(64))) = {
    {0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12,
     14, 0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10,
     12, 14},
    {16, 18, 20, 22, 24, 26, 28, 30, 16, 18, 20, 22, 24, 26, 28, 30, 16, 18, 20, 22, 24, 26, 28, 30, 16, 18,
     20, 22, 24, 26, 28, 30, 16, 18, 20, 22, 24, 26, 28, 30, 16, 18, 20, 22, 24, 26, 28, 30, 16, 18, 20, 22,
     24, 26, 28, 30, 16, 18, 20, 22, 24, 26, 28, 30},
    {32, 34, 36, 38, 40, 42, 44, 46, 32, 34, 36, 38, 40, 42, 44, 46, 32, 34, 36, 38, 40, 42, 44, 46, 32, 34,
     36, 38, 40, 42, 44, 46, 32, 34, 36, 38, 40, 42, 44, 46, 32, 34, 36, 38, 40, 42, 44, 46, 32, 34, 36, 38,
     40, 42, 44, 46, 32, 34, 36, 38, 40, 42, 44, 46},
    {48, 50, 52, 54, 56, 58, 60, 62, 48, 50, 52, 54, 56, 58, 60, 62, 48, 50, 52, 54, 56, 58, 60, 62, 48, 50,
     52, 54, 56, 58, 60, 62, 48, 50, 52, 54, 56, 58, 60, 62, 48, 50, 52, 54, 56, 58, 60, 62, 48, 50, 52, 54,
     56, 58, 60, 62, 48, 50, 52, 54, 56, 58, 60, 62}};
static const uint8_t xxs_spread3[2][64] __attribute__((aligned(64))) = {
    {0, 3, 6, 9, 16, 19, 22, 25, 0, 3, 6, 9, 16, 19, 22, 25, 0, 3, 6, 9, 16, 19, 22, 25, 0, 3, 6, 9, 16, 19,
     22, 25, 0, 3, 6, 9, 16, 19, 22, 25, 0, 3, 6, 9, 16, 19, 22, 25, 0, 3, 6, 9, 16, 19, 22, 25, 0, 3, 6, 9,
     16, 19, 22, 25},
    {32, 35, 38, 41, 48, 51, 54, 57, 32, 35, 38, 41, 48, 51, 54, 57, 32, 35, 38, 41, 48, 51, 54, 57, 32, 35,
     38, 41, 48, 51, 54, 57, 32, 35, 38, 41, 48, 51, 54, 57, 32, 35, 38, 41, 48, 51, 54, 57, 32, 35, 38, 41,
     48, 51, 54, 57, 32, 35, 38, 41, 48, 51, 54, 57}};
/* vpermb tables: byte k is the magnitude of level index k mod 4 (IQ2) or mod 8 (IQ3),
 * as QUANT_IQ2_LEVELS and QUANT_IQ3XXS_LEVELS list them (test_quant checks the kernels
 * against the scalar decoders, which read those macros). */
static const uint8_t xxs_level[2][64] __attribute__((aligned(64))) = {
    {8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0,
     8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0, 8, 25, 43, 0},
    {4, 12, 20, 28, 36, 44, 52, 62, 4, 12, 20, 28, 36, 44, 52, 62, 4, 12, 20, 28, 36, 44, 52, 62, 4, 12, 20, 28,
     36, 44, 52, 62, 4, 12, 20, 28, 36, 44, 52, 62, 4, 12, 20, 28, 36, 44, 52, 62, 4, 12, 20, 28, 36, 44, 52, 62,
     4, 12, 20, 28, 36, 44, 52, 62},
};

INLINE xxs_grid xxs_grid_new(const int three)
{
    xxs_grid G;
    const uint16_t *packed = three ? quant_grid_iq3xxs_packed : quant_grid_iq2xxs_packed;
    UNROLL8 for (int k = 0; k < 8; k++)
        G.tab[k] = _mm512_loadu_si512(packed + 32 * k);
    G.level = _mm512_load_si512(xxs_level[three]);
    G.sign[0] = _mm512_load_si512(xxs_sign_mask);
    G.sign[1] = _mm512_load_si512(xxs_sign_mask + 64);
    return G;
}

/* The packed entries of 32 indices (one per 16-bit word) in a grid of 64 * n_pairs
 * entries held 32 to a register: vpermi2w looks every index up in each pair of
 * registers (index bits 0-5), then blends by bits 6, 7 (and 8) pick the pair. */
INLINE __m512i grid_lookup(const __m512i *tab, const int n_pairs, __m512i idx)
{
    __m512i r[8];
    UNROLL8 for (int p = 0; p < n_pairs; p++)
        r[p] = _mm512_permutex2var_epi16(tab[2 * p], idx, tab[2 * p + 1]);
    const __mmask32 b6 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(0x40));
    const __mmask32 b7 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(0x80));
    UNROLL for (int i = 0; i < n_pairs / 2; i++)
        r[i] = _mm512_mask_blend_epi16(b6, r[2 * i], r[2 * i + 1]);
    UNROLL for (int i = 0; i < n_pairs / 4; i++)
        r[i] = _mm512_mask_blend_epi16(b7, r[2 * i], r[2 * i + 1]);
    if (n_pairs == 8)
        r[0] = _mm512_mask_blend_epi16(_mm512_test_epi16_mask(idx, _mm512_set1_epi16(0x100)), r[0], r[1]);
    return r[0];
}

/* The magnitudes of a 256-block's weights, 64 per register, in weight order; q is the
 * block's first 64 bytes of qs. */
INLINE void xxs_grid_block(const int three, const xxs_grid *G, __m512i q, __m512i grid[4])
{
    const __mmask64 low_bytes = 0x5555555555555555ull;
    if (three) {
        UNROLL for (int h = 0; h < 2; h++) {
            const __m512i ent =
                grid_lookup(G->tab, 4, _mm512_maskz_permutexvar_epi8(low_bytes, _mm512_load_si512(xxs_order3[h]), q));
            UNROLL for (int e = 0; e < 2; e++)
                grid[2 * h + e] = _mm512_permutexvar_epi8(
                    _mm512_multishift_epi64_epi8(_mm512_load_si512(xxs_spread3[e]), ent), G->level);
        }
        return;
    }
    const __m512i ent = grid_lookup(G->tab, 4, _mm512_maskz_permutexvar_epi8(low_bytes, _mm512_load_si512(xxs_order2), q));
    UNROLL for (int g = 0; g < 4; g++)
        grid[g] = _mm512_permutexvar_epi8(_mm512_multishift_epi64_epi8(_mm512_load_si512(xxs_spread2[g]), ent),
                                          G->level);
}

/* IQ2_XXS (three = 0): qs is 8 words [4 grid indices][signs, scale] per sub-block;
 * IQ3_XXS (three = 1): 64 grid index bytes, then the 8 [signs, scale] words. */
INLINE void xxs_kernel(const int three, int64_t n, const int R, const int C, const char *w, size_t ws,
                       const char *a, size_t as, float *out, size_t os)
{
    if (R > 1) {
        /* the rows of a tile share nothing (each decodes its own grid rows and negates the
         * activations under its own signs), and the grid's tables leave too few
         * registers for R x C accumulators: one row at a time keeps them in registers */
        UNROLL for (int r = 0; r < R; r++)
            xxs_kernel(three, n, 1, C, w + (size_t)r * ws, 0, a, as, out + r, os);
        return;
    }
    const int64_t nb = n / QK_K;
    const size_t bb = three ? sizeof(block_iq3_xxs) : sizeof(block_iq2_xxs);
    /* after vpackssdw of 64-weight groups 2h and 2h + 1, lanes 0-1 hold sub-blocks 4h
     * (words 0-3) and 4h + 2 (4-7), lanes 2-3 sub-blocks 4h + 1 and 4h + 3; the scale of
     * sub-block ib is word 2ib of the scale vector */
    static const int16_t pick_sc[2][32] __attribute__((aligned(64))) = {
        {0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4, 2, 2, 2, 2, 6, 6, 6, 6, 2, 2, 2, 2, 6, 6, 6, 6},
        {8, 8, 8, 8, 12, 12, 12, 12, 8, 8, 8, 8, 12, 12, 12, 12, 10, 10, 10, 10, 14, 14, 14, 14, 10, 10, 10, 10, 14, 14, 14, 14}};
    const xxs_grid G = xxs_grid_new(three);
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        float yd[4];
        UNROLL for (int c = 0; c < C; c++)
            yd[c] = ((const block_q8_K *)(a + (size_t)c * as) + b)->d;
        UNROLL for (int r = 0; r < R; r++) {
            const uint8_t *x = (const uint8_t *)(w + (size_t)r * ws) + (size_t)b * bb;
            prefetch_ahead(C, x, (int)bb);
            const uint8_t *qs = x + 2;
            const __m512i q = _mm512_loadu_si512(qs);
            /* the eight [signs, scale] words: IQ2_XXS has them in the odd dwords */
            const __m256i ss = three ? _mm256_loadu_si256((const __m256i *)(qs + 64))
                                     : _mm512_castsi512_si256(_mm512_permutexvar_epi32(
                                           _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11, 13, 15), q));
            uint64_t sg[4];
            _mm256_storeu_si256((__m256i *)sg, xxs_sign_bytes(ss, G.sign));
            __m512i sc16 = _mm512_castsi256_si512(
                _mm256_or_si256(_mm256_slli_epi32(_mm256_srli_epi32(ss, 28), 1), _mm256_set1_epi32(1)));
            __m512i sc[2] = {_mm512_permutexvar_epi16(_mm512_load_si512(pick_sc[0]), sc16),
                             _mm512_permutexvar_epi16(_mm512_load_si512(pick_sc[1]), sc16)};
            __m512i grid[4];
            xxs_grid_block(three, &G, q, grid);
            uint16_t dh;
            memcpy(&dh, x, 2);
            /* the scalar decoders' d: (0.5 + s) / 4 = (2s + 1) / 8, and / 4 for IQ3 */
            const float d = _cvtsh_ss(dh) * (three ? 0.25f : 0.125f);
            UNROLL for (int c = 0; c < C; c++) {
                const int8_t *aq = ((const block_q8_K *)(a + (size_t)c * as) + b)->qs;
                __m512i isum = _mm512_setzero_si512();
                UNROLL for (int h = 0; h < 2; h++) {
                    __m512i p[2];
                    UNROLL for (int e = 0; e < 2; e++) {
                        const int g = 2 * h + e;
                        __m512i av = _mm512_loadu_si512(aq + 64 * g);
                        av = _mm512_mask_sub_epi8(av, _cvtu64_mask64(sg[g]), _mm512_setzero_si512(), av);
                        p[e] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), grid[g], av);
                    }
                    isum = _mm512_dpwssd_epi32(isum, _mm512_packs_epi32(p[0], p[1]), sc[h]);
                }
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d * yd[c]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}

INLINE void iq2_xxs_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                           const char *a, size_t as, float *out, size_t os)
{
    xxs_kernel(0, n, R, C, w, ws, a, as, out, os);
}
INLINE void iq3_xxs_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                           const char *a, size_t as, float *out, size_t os)
{
    xxs_kernel(1, n, R, C, w, ws, a, as, out, os);
}
DEFINE_TILE_AND_DOT(iq2_xxs, iq2_xxs_kernel)
DEFINE_TILE_AND_DOT(iq3_xxs, iq3_xxs_kernel)

/* ================= IQ2_XS against Q8_K ================= */

/* IQ2_XS: per 8 weights a 16-bit word of a 9-bit grid index and a 7-bit sign index, two
 * 4-bit scales per 32. The IQ2_XXS kernel's plan with a 512-entry grid: the words are
 * put in the order the field spread wants (word 4j + g: group 8g + j) and looked up in
 * eight pairs of 64 entries, the pair chosen by three blends on index bits 6-8; the
 * grid's fields are IQ2_XXS's (levels 8, 25, 43). Each 64 weights' 16 lanes of 4-sums
 * take the scales of their 16-weight runs through vpdpwssd on the sums themselves (an
 * int32 sum of at most 4 * 43 * 127 is its own low int16 word; the scale's high word is
 * zero). */
static const int16_t xs_order[32] __attribute__((aligned(64))) = {
    0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27, 4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31};
/* vpmultishiftqb controls for the scales: dword k of 64-weight group g takes nibble
 * 4g + k/4 (the low nibble of scale byte i is run 2i), at bit 16g + 4(k/4); the bytes
 * above it are masked off */
static const uint8_t xs_scale_spread[4][64] __attribute__((aligned(64))) = {
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0, 12, 0, 0, 0, 12, 0, 0, 0, 12, 0, 0, 0, 12, 0, 0, 0},
    {16, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 20, 0, 0, 0, 20, 0, 0, 0, 20, 0, 0, 0, 20, 0, 0, 0, 24, 0, 0, 0, 24, 0, 0, 0, 24, 0, 0, 0, 24, 0, 0, 0, 28, 0, 0, 0, 28, 0, 0, 0, 28, 0, 0, 0, 28, 0, 0, 0},
    {32, 0, 0, 0, 32, 0, 0, 0, 32, 0, 0, 0, 32, 0, 0, 0, 36, 0, 0, 0, 36, 0, 0, 0, 36, 0, 0, 0, 36, 0, 0, 0, 40, 0, 0, 0, 40, 0, 0, 0, 40, 0, 0, 0, 40, 0, 0, 0, 44, 0, 0, 0, 44, 0, 0, 0, 44, 0, 0, 0, 44, 0, 0, 0},
    {48, 0, 0, 0, 48, 0, 0, 0, 48, 0, 0, 0, 48, 0, 0, 0, 52, 0, 0, 0, 52, 0, 0, 0, 52, 0, 0, 0, 52, 0, 0, 0, 56, 0, 0, 0, 56, 0, 0, 0, 56, 0, 0, 0, 56, 0, 0, 0, 60, 0, 0, 0, 60, 0, 0, 0, 60, 0, 0, 0, 60, 0, 0, 0}};
/* the sign-mask bytes, found at byte 8m + l (group 4m + l), to byte 4m + l */
static const uint8_t xs_signs_compact[64] __attribute__((aligned(64))) = {
    0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27, 32, 33, 34, 35, 40, 41, 42, 43, 48, 49, 50, 51, 56, 57, 58, 59, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

INLINE void iq2_xs_kernel(int64_t n, const int R, const int C, const char *w, size_t ws, const char *a,
                          size_t as, float *out, size_t os)
{
    if (R > 1) { /* as xxs_kernel: one weight row at a time keeps the accumulators in registers */
        UNROLL for (int r = 0; r < R; r++)
            iq2_xs_kernel(n, 1, C, w + (size_t)r * ws, 0, a, as, out + r, os);
        return;
    }
    const int64_t nb = n / QK_K;
    const __m512i level = _mm512_load_si512(xxs_level[0]);
    const __m512i sign_lo = _mm512_load_si512(xxs_sign_mask), sign_hi = _mm512_load_si512(xxs_sign_mask + 64);
    /* byte 0 of a qword: bits 9, 25, 41, 57 (the sign fields of its four words) */
    const __m512i sign_fields = _mm512_set1_epi64(0x3929190939291909ll);
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        const block_iq2_xs *x = (const block_iq2_xs *)w + b;
        prefetch_ahead(C, x, (int)sizeof *x);
        const __m512i q = _mm512_loadu_si512(x->qs);
        /* grid entries */
        const __m512i idx = _mm512_permutexvar_epi16(_mm512_load_si512(xs_order), q);
        /* 16 registers of table: read from memory by each lookup (held across the
         * loop, they would spill beside the accumulators) */
        const __m512i ent = grid_lookup((const __m512i *)quant_grid_iq2xs_packed, 8, idx);
        __m512i grid[4];
        UNROLL for (int g = 0; g < 4; g++)
            grid[g] = _mm512_permutexvar_epi8(_mm512_multishift_epi64_epi8(_mm512_load_si512(xxs_spread2[g]), ent),
                                              level);
        /* sign masks, a 64-bit mask per 64 weights */
        const __m512i sm = _mm512_permutex2var_epi8(sign_lo, _mm512_multishift_epi64_epi8(sign_fields, q), sign_hi);
        uint64_t sg[4];
        _mm256_storeu_si256((__m256i *)sg,
                            _mm512_castsi512_si256(_mm512_permutexvar_epi8(_mm512_load_si512(xs_signs_compact), sm)));
        /* scales, 2s + 1 in the low word of each dword lane */
        uint64_t s64;
        memcpy(&s64, x->scales, 8);
        const __m512i sv = _mm512_set1_epi64((long long)s64);
        __m512i scl[4];
        UNROLL for (int g = 0; g < 4; g++) {
            const __m512i v = _mm512_and_si512(_mm512_multishift_epi64_epi8(_mm512_load_si512(xs_scale_spread[g]), sv),
                                               _mm512_set1_epi32(15));
            scl[g] = _mm512_or_si512(_mm512_add_epi32(v, v), _mm512_set1_epi32(1));
        }
        const float d = _cvtsh_ss(x->d) * 0.125f;
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            __m512i isum = _mm512_setzero_si512();
            UNROLL for (int g = 0; g < 4; g++) {
                __m512i av = _mm512_loadu_si512(y->qs + 64 * g);
                av = _mm512_mask_sub_epi8(av, _cvtu64_mask64(sg[g]), _mm512_setzero_si512(), av);
                isum = _mm512_dpwssd_epi32(isum, _mm512_dpbusd_epi32(_mm512_setzero_si512(), grid[g], av), scl[g]);
            }
            acc[0][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d * y->d), acc[0][c]);
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(iq2_xs, iq2_xs_kernel)

/* ================= the quant_sblock types against Q8_K ================= */

INLINE void sb_kernel(const int kind, quant_sdecode_fn f, const size_t bb, int64_t n, const int R,
                      const int C, const char *w, size_t ws, const char *a, size_t as, float *out,
                      size_t os)
{
    const int64_t nb = n / QK_K;
    /* lane j (an int16 pair sum of elements 2j, 2j+1) of 64-element run k takes scale
     * 4k + j/8 */
    __m512i pick[4];
    UNROLL for (int k = 0; k < 4; k++) {
        int16_t idx[32];
        for (int j = 0; j < 32; j++)
            idx[j] = (int16_t)(4 * k + j / 8);
        pick[k] = _mm512_loadu_si512(idx);
    }
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
            __m512i sc16 = _mm512_castsi256_si512(_mm256_load_si256((const __m256i *)sb.sc));
            __m512i s[4];
            UNROLL for (int k = 0; k < 4; k++) {
                /* two 256-bit loads, as the decoders stored them: one 512-bit load
                 * over two fresh 256-bit stores cannot be forwarded and stalls */
                __m512i wq = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_load_si256((const __m256i *)(sb.q + 64 * k))),
                                                _mm256_load_si256((const __m256i *)(sb.q + 64 * k + 32)), 1);
                __m512i wabs = _mm512_abs_epi8(wq);
                __mmask64 neg = _mm512_movepi8_mask(wq);
                __m512i scl = _mm512_permutexvar_epi16(pick[k], sc16);
                UNROLL for (int c = 0; c < C; c++) {
                    __m512i av = _mm512_loadu_si512(((const block_q8_K *)(a + (size_t)c * as) + b)->qs + 64 * k);
                    av = _mm512_mask_sub_epi8(av, neg, _mm512_setzero_si512(), av);
                    __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(wabs, av), scl);
                    s[c] = k ? _mm512_add_epi32(s[c], p) : p;
                }
            }
            UNROLL for (int c = 0; c < C; c++)
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[c]), _mm512_set1_ps(sb.d * yd[c]), acc[r][c]);
        }
    }
    store_tile(R, C, acc, out, os);
}

#define SB_TYPE(name, T, kind, block)                                                    \
    INLINE void name##_kernel(int64_t n, const int R, const int C, const char *w, size_t ws, \
                              const char *a, size_t as, float *out, size_t os)           \
    {                                                                                    \
        quant_sdecode_fn f = kind == DEC_SCALAR ? quant_ref_sdecoder(T) : NULL;          \
        sb_kernel(kind, f, sizeof(block), n, R, C, w, ws, a, as, out, os);               \
    }                                                                                    \
    DEFINE_TILE_AND_DOT(name, name##_kernel)

SB_TYPE(tq2_0, T_TQ2_0, DEC_TQ2_0, block_tq2_0)
SB_DECODED_TYPES(SB_TYPE)

/* Dequantization stays with the AVX2 entries (it is the embedding lookup, one row a
 * token, and bit-exact there). */
void quant_iq_avx512_fill(quant_kernels *k)
{
#define SET(T, name)                   \
    k->vec_dot[T] = dot_##name;        \
    k->tile[T] = tile_##name;
    SET(T_IQ4_NL, iq4_nl)
    SET(T_MXFP4, mxfp4)
    SET(T_IQ4_XS, iq4_xs)
    SET(T_TQ2_0, tq2_0)
    SET(T_IQ2_XXS, iq2_xxs)
    SET(T_IQ3_XXS, iq3_xxs)
#define SET_SB(name, T, kind, block) SET(T, name)
    SB_DECODED_TYPES(SET_SB)
#undef SET_SB
    SET(T_IQ2_XS, iq2_xs)
#undef SET
}
