/* quant_avx2.c — AVX2/FMA/F16C kernels and activation quantizers.
 *
 * Same tile structure as the AVX-512 file (R weight rows x C activation rows, each
 * block unpacked once per tile), with 8-bit products through vpmaddubsw (unsigned x
 * signed, pairs summed to int16) and vpmaddwd. Unsigned weight quants (Q4_0, the
 * K-quants) go in directly and their offsets come back through activation sums;
 * signed ones (Q8_0) use |w| and sign(a, w).
 */
#include "quant_impl.h"
#include "quant_unpack.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 4")
#define UNROLL8 _Pragma("GCC unroll 8")

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

INLINE float h2f(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* ================= F32, F16, BF16 ================= */

/* Masked element loads for the last n % 8 elements of float rows. */
INLINE __m256i tail_mask(int64_t left)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), idx);
}

INLINE __m256 load_f32(const char *p, int64_t i, int64_t n)
{
    const float *f = (const float *)p + i;
    if (n - i >= 8)
        return _mm256_loadu_ps(f);
    return _mm256_maskload_ps(f, tail_mask(n - i));
}

/* 16-bit rows: the tail is copied out rather than over-read. */
INLINE __m128i load_h8(const char *p, int64_t i, int64_t n)
{
    const uint16_t *h = (const uint16_t *)p + i;
    if (n - i >= 8)
        return _mm_loadu_si128((const __m128i *)h);
    uint16_t t[8] = {0};
    memcpy(t, h, (size_t)(n - i) * 2);
    return _mm_loadu_si128((const __m128i *)t);
}

INLINE __m256 load_f16(const char *p, int64_t i, int64_t n)
{
    return _mm256_cvtph_ps(load_h8(p, i, n));
}

INLINE __m256 load_bf16(const char *p, int64_t i, int64_t n)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_h8(p, i, n)), 16));
}

/* A single dot takes the same one chain per output as a tile, so a token's result does
 * not depend on how many tokens share the call (a recurrent state carries any
 * difference forward). */
#define FLOAT_KERNEL(name, LOAD)                                                       \
    INLINE void name(int64_t n, const int R, const int C, const char *w, size_t ws,    \
                     const char *a, size_t as, float *out, size_t os)                  \
    {                                                                                  \
        ZERO_ACC(acc)                                                                  \
        for (int64_t i = 0; i < n; i += 8) {                                           \
            __m256 av[4];                                                              \
            UNROLL for (int c = 0; c < C; c++) av[c] = LOAD(a + (size_t)c * as, i, n); \
            UNROLL for (int r = 0; r < R; r++) {                                       \
                prefetch_ahead(C, w + (size_t)r * ws + i * 4, 32);                     \
                __m256 wv = LOAD(w + (size_t)r * ws, i, n);                            \
                UNROLL for (int c = 0; c < C; c++)                                     \
                    acc[r][c] = _mm256_fmadd_ps(wv, av[c], acc[r][c]);                 \
            }                                                                          \
        }                                                                              \
        store_tile(R, C, acc, out, os);                                                \
    }

FLOAT_KERNEL(f32_kernel, load_f32)
FLOAT_KERNEL(f16_kernel, load_f16)
FLOAT_KERNEL(bf16_kernel, load_bf16)
DEFINE_TILE_AND_DOT(f32, f32_kernel)
DEFINE_TILE_AND_DOT(f16, f16_kernel)
DEFINE_TILE_AND_DOT(bf16, bf16_kernel)

/* ================= Q8_0, Q4_0 against Q8_0 ================= */

INLINE __m256i sum_pairs16(__m256i p)
{
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

INLINE void q8_0_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK8_0;
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        __m256i aq[4];
        float ad[4];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)c * as) + b;
            aq[c] = _mm256_loadu_si256((const __m256i *)y->qs);
            ad[c] = h2f(y->d);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const block_q8_0 *x = (const block_q8_0 *)(w + (size_t)r * ws) + b;
            prefetch_ahead(C, x, 64);
            __m256i wq = _mm256_loadu_si256((const __m256i *)x->qs);
            __m256i wabs = _mm256_sign_epi8(wq, wq);
            float wd = h2f(x->d);
            UNROLL for (int c = 0; c < C; c++) {
                __m256i p = sum_pairs16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(aq[c], wq)));
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(wd * ad[c]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q8_0, q8_0_kernel)

INLINE void q4_0_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK4_0;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        __m256i aq[4], neg8[4];
        float ad[4];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)c * as) + b;
            aq[c] = _mm256_loadu_si256((const __m256i *)y->qs);
            ad[c] = h2f(y->d);
            /* -8 * (pair sums of a), in the lanes the products land in */
            neg8[c] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), aq[c]),
                                        _mm256_set1_epi16(-1));
        }
        UNROLL for (int r = 0; r < R; r++) {
            const block_q4_0 *x = (const block_q4_0 *)(w + (size_t)r * ws) + b;
            prefetch_ahead(C, x, 64);
            __m128i q = _mm_loadu_si128((const __m128i *)x->qs);
            __m256i wq = _mm256_and_si256(
                _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), low4);
            float wd = h2f(x->d);
            UNROLL for (int c = 0; c < C; c++) {
                __m256i p = _mm256_add_epi32(sum_pairs16(_mm256_maddubs_epi16(wq, aq[c])), neg8[c]);
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(wd * ad[c]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q4_0, q4_0_kernel)

/* 32 bits to 32 bytes of 0xFF (bit set) or 0: byte j tests bit j. */
INLINE __m256i bits_to_bytes(uint32_t bits)
{
    const __m256i spread = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                              0x0202020202020202, 0x0303030303030303);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    const __m256i probe = _mm256_set1_epi64x(0x8040201008040201);
    return _mm256_cmpeq_epi8(_mm256_and_si256(b, probe), probe);
}

/* Nibbles of a 32-block's 16 bytes: elements 0..15 low, 16..31 high. */
INLINE __m256i nibbles32(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1),
                            _mm256_set1_epi8(0x0F));
}

INLINE void q5_0_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK5_0;
    const __m256i bit4 = _mm256_set1_epi8(0x10);
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        __m256i aq[4], neg16[4];
        float ad[4];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)c * as) + b;
            aq[c] = _mm256_loadu_si256((const __m256i *)y->qs);
            ad[c] = h2f(y->d);
            neg16[c] = _mm256_madd_epi16(_mm256_maddubs_epi16(bit4, aq[c]), _mm256_set1_epi16(-1));
        }
        UNROLL for (int r = 0; r < R; r++) {
            const block_q5_0 *x = (const block_q5_0 *)(w + (size_t)r * ws) + b;
            prefetch_ahead(C, x, 64);
            uint32_t qh;
            memcpy(&qh, x->qh, 4);
            __m256i wq = _mm256_or_si256(nibbles32(x->qs), _mm256_and_si256(bits_to_bytes(qh), bit4));
            float wd = h2f(x->d);
            UNROLL for (int c = 0; c < C; c++) {
                __m256i p = _mm256_add_epi32(sum_pairs16(_mm256_maddubs_epi16(wq, aq[c])), neg16[c]);
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(wd * ad[c]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q5_0, q5_0_kernel)

/* Q4_1/Q5_1 against Q8_1: d*da*sum(q*a) per block plus m*s, the latter kept apart. */
INLINE void q4_1_like_kernel(const int five, int64_t n, const int R, const int C, const char *w,
                             size_t ws, const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / 32;
    const size_t bb = five ? sizeof(block_q5_1) : sizeof(block_q4_1);
    const __m256i bit4 = _mm256_set1_epi8(0x10);
    ZERO_ACC(acc)
    float ms[4][4] = {{0}};
    for (int64_t b = 0; b < nb; b++) {
        __m256i aq[4];
        float ad[4], asum[4];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_1 *y = (const block_q8_1 *)(a + (size_t)c * as) + b;
            aq[c] = _mm256_loadu_si256((const __m256i *)y->qs);
            ad[c] = h2f(y->d);
            asum[c] = h2f(y->s);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const uint8_t *x = (const uint8_t *)(w + (size_t)r * ws) + (size_t)b * bb;
            prefetch_ahead(C, x, 64);
            uint16_t dm[2];
            memcpy(dm, x, 4);
            __m256i wq = nibbles32(x + (five ? 8 : 4));
            if (five) {
                uint32_t qh;
                memcpy(&qh, x + 4, 4);
                wq = _mm256_or_si256(wq, _mm256_and_si256(bits_to_bytes(qh), bit4));
            }
            float wd = h2f(dm[0]), wm = h2f(dm[1]);
            UNROLL for (int c = 0; c < C; c++) {
                __m256i p = sum_pairs16(_mm256_maddubs_epi16(wq, aq[c]));
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(wd * ad[c]), acc[r][c]);
                ms[r][c] += wm * asum[c];
            }
        }
    }
    UNROLL for (int c = 0; c < C; c++)
        UNROLL for (int r = 0; r < R; r++)
            out[(size_t)c * os + r] = hsum256(acc[r][c]) + ms[r][c];
}

INLINE void q4_1_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    q4_1_like_kernel(0, n, R, C, w, ws, a, as, out, os);
}
INLINE void q5_1_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    q4_1_like_kernel(1, n, R, C, w, ws, a, as, out, os);
}
DEFINE_TILE_AND_DOT(q4_1, q4_1_kernel)
DEFINE_TILE_AND_DOT(q5_1, q5_1_kernel)

/* ================= K-quants against Q8_K ================= */

/* Q4_K and Q5_K. Decode (4 weight rows x 1 activation row) streams weights from memory,
 * so per block the kernel keeps the work that is not a multiply small:
 * - the 16-byte block heads (d, dmin, 12 scale bytes) of rows 0,1 and rows 2,3 share a
 *   register, 128-bit lane r & 1 for row r, so scales and mins are unpacked two rows at
 *   a time and d, dmin of all rows converted at once;
 * - the mins of all rows meet an activation row's bsums (summed in pairs, one per
 *   sub-block) in two madds and one hadd, with their own accumulator, split per row at
 *   the end;
 * - each row's scales go to memory as int32 [sc sc] (two int16) and come back as
 *   broadcast loads, which cost no shuffle;
 * - d * da is one float per row, so a row costs one convert and one FMA per block.
 * Every tile shape does the same arithmetic lane for lane, so a row's result does not
 * depend on the tile it was computed in (decode and prefill agree exactly). */
INLINE void k4_kernel(const int five, int64_t n, const int R, const int C, const char *w,
                      size_t ws, const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    const size_t bb = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const __m256i low4 = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10);
    /* Per lane, the head's words are [d|dmin, u0, u1, u2] with scales 0-3 = u0 & 0x3f..,
     * mins 0-3 = u1 & 0x3f.., scales 4-7 = low nibbles of u2 with u0's top two bits above
     * them, mins 4-7 = high nibbles of u2 with u1's; unpacked to [sc0..7, m0..7]. */
    const __m256i sm_shift = _mm256_setr_epi32(0, 0, 0, 4, 0, 0, 0, 4);
    const __m256i m6 = _mm256_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f,
                                         0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f);
    const __m256i m2 = _mm256_setr_epi32(0, 0x30303030, 0, 0x30303030, 0, 0x30303030, 0, 0x30303030);
    /* int16 [m0..m7] and int32 [sc sc] for scales 0-3 / 4-7, per lane */
    const __m256i pick_mins = _mm256_setr_epi8(8, -1, 9, -1, 10, -1, 11, -1, 12, -1, 13, -1, 14, -1, 15, -1,
                                               8, -1, 9, -1, 10, -1, 11, -1, 12, -1, 13, -1, 14, -1, 15, -1);
    const __m256i pick_sc_lo = _mm256_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1,
                                                0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1);
    const __m256i pick_sc_hi = _mm256_setr_epi8(4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1,
                                                4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1);
    __m256 acc[4][4], accm[4];
    UNROLL for (int c = 0; c < C; c++) {
        accm[c] = _mm256_setzero_ps();
        UNROLL for (int r = 0; r < R; r++)
            acc[r][c] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const char *blk[4];
        UNROLL for (int r = 0; r < R; r++)
            blk[r] = w + (size_t)r * ws + (size_t)b * bb;
        /* heads: h[0] = rows 0|1, h[1] = rows 2|3 (absent rows zero) */
        __m256i h[2], sm[2], mins[2];
        UNROLL for (int p = 0; p < 2; p++) {
            h[p] = _mm256_setzero_si256();
            if (2 * p < R)
                h[p] = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)blk[2 * p]));
            if (2 * p + 1 < R)
                h[p] = _mm256_inserti128_si256(h[p], _mm_loadu_si128((const __m128i *)blk[2 * p + 1]), 1);
            __m256i x = _mm256_srlv_epi32(_mm256_shuffle_epi32(h[p], _MM_SHUFFLE(3, 2, 3, 1)), sm_shift);
            __m256i top = _mm256_srli_epi32(_mm256_shuffle_epi32(h[p], _MM_SHUFFLE(2, 2, 1, 1)), 2);
            sm[p] = _mm256_or_si256(_mm256_and_si256(x, m6), _mm256_and_si256(top, m2));
            mins[p] = _mm256_shuffle_epi8(sm[p], pick_mins);
        }
        /* [d0 dmin0 d2 dmin2 | d1 dmin1 d3 dmin3]: word 0 of each lane, in that order */
        __m256 dd = _mm256_cvtph_ps(_mm256_castsi256_si128(
            _mm256_permute4x64_epi64(_mm256_unpacklo_epi32(h[0], h[1]), _MM_SHUFFLE(2, 0, 2, 0))));
        /* scales to memory, row r at sct[r] */
        int32_t sct[4][8];
        UNROLL for (int p = 0; p < 2; p++) {
            if (2 * p >= R)
                break;
            __m256i lo = _mm256_shuffle_epi8(sm[p], pick_sc_lo), hi = _mm256_shuffle_epi8(sm[p], pick_sc_hi);
            _mm_storeu_si128((__m128i *)sct[2 * p], _mm256_castsi256_si128(lo));
            _mm_storeu_si128((__m128i *)(sct[2 * p] + 4), _mm256_castsi256_si128(hi));
            if (2 * p + 1 < R) {
                _mm_storeu_si128((__m128i *)sct[2 * p + 1], _mm256_extracti128_si256(lo, 1));
                _mm_storeu_si128((__m128i *)(sct[2 * p + 1] + 4), _mm256_extracti128_si256(hi, 1));
            }
        }

        /* per activation row: d and dmin times da, and the mins against the bsums */
        float dda[4][8];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            __m256 ddc = _mm256_mul_ps(dd, _mm256_set1_ps(y->d));
            _mm256_storeu_ps(dda[c], ddc);
            /* bsums summed in pairs (one per sub-block), as int16 in both lanes */
            __m256i bp = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), _mm256_set1_epi16(1));
            bp = _mm256_permute4x64_epi64(_mm256_packs_epi32(bp, bp), _MM_SHUFFLE(2, 0, 2, 0));
            /* [r0 r0 r2 r2 | r1 r1 r3 r3] partial sums, against [dmin0 dmin0 dmin2 dmin2 | ..] */
            __m256i m = _mm256_hadd_epi32(_mm256_madd_epi16(mins[0], bp), _mm256_madd_epi16(mins[1], bp));
            accm[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_movehdup_ps(ddc), accm[c]);
        }
        /* through memory so that the FMAs and madds take broadcast loads rather than
         * shuffles */
        __asm__("" : "+m"(dda), "+m"(sct));

        UNROLL for (int r = 0; r < R; r++) {
            /* here rather than with the head loads above: all rows' prefetches in one
             * burst cost memory throughput */
            prefetch_ahead(C, blk[r], five ? 192 : 144);
            const uint8_t *qs = (const uint8_t *)blk[r] + (five ? 48 : 16);
            __m256i hb = five ? _mm256_loadu_si256((const __m256i *)(blk[r] + 16)) : _mm256_setzero_si256();
            __m256i s[4];
            UNROLL for (int k = 0; k < 4; k++) {
                /* 32 bytes: sub-block 2k in the low nibbles, 2k + 1 in the high */
                __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
                __m256i lo = _mm256_and_si256(raw, low4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
                if (five) {
                    /* bit g of qh[l] is the fifth bit of element 32g + l */
                    lo = _mm256_or_si256(lo, _mm256_and_si256(
                        k == 0 ? _mm256_slli_epi16(hb, 4) : k == 1 ? _mm256_slli_epi16(hb, 2)
                        : k == 2 ? hb : _mm256_srli_epi16(hb, 2), bit4));
                    hi = _mm256_or_si256(hi, _mm256_and_si256(
                        k == 0 ? _mm256_slli_epi16(hb, 3) : k == 1 ? _mm256_slli_epi16(hb, 1)
                        : k == 2 ? _mm256_srli_epi16(hb, 1) : _mm256_srli_epi16(hb, 3), bit4));
                }
                UNROLL for (int c = 0; c < C; c++) {
                    const __m256i *aq = (const __m256i *)((const block_q8_K *)(a + (size_t)c * as) + b)->qs + 2 * k;
                    __m256i p = _mm256_add_epi32(
                        _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(aq)), _mm256_set1_epi32(sct[r][2 * k])),
                        _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256(aq + 1)), _mm256_set1_epi32(sct[r][2 * k + 1])));
                    s[c] = k ? _mm256_add_epi32(s[c], p) : p;
                }
            }
            /* d of row r sits at 4 * (r & 1) + 2 * (r >> 1) of dd */
            const int di = 4 * (r & 1) + 2 * (r >> 1);
            UNROLL for (int c = 0; c < C; c++)
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[c]), _mm256_set1_ps(dda[c][di]), acc[r][c]);
        }
    }
    UNROLL for (int c = 0; c < C; c++) {
        float m[8];
        _mm256_storeu_ps(m, accm[c]);
        UNROLL for (int r = 0; r < R; r++) {
            const int mi = 4 * (r & 1) + 2 * (r >> 1);
            out[(size_t)c * os + r] = hsum256(acc[r][c]) - (m[mi] + m[mi + 1]);
        }
    }
}

INLINE void q4_K_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    k4_kernel(0, n, R, C, w, ws, a, as, out, os);
}
INLINE void q5_K_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    k4_kernel(1, n, R, C, w, ws, a, as, out, os);
}
DEFINE_TILE_AND_DOT(q4_K, q4_K_kernel)
DEFINE_TILE_AND_DOT(q5_K, q5_K_kernel)

/* Q6_K: see the AVX-512 file for the layout; here in 32-element runs. Run g takes
 * scales 2g (first 16 elements) and 2g+1 (last 16), so the scales are kept as int16
 * [s0 s2 .. s14 | s1 s3 .. s15] (evens in the low 128-bit lane, odds in the high) and
 * each run's pair comes out in one in-lane shuffle. The -32 of the quants meets the
 * bsums, put in the same order once per activation block, in one madd. */
INLINE void q6_K_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    const __m256i low4 = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
    const __m128i evens_odds = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    /* bsums to int16 [b0 b2 b4 b6 b1 b3 b5 b7 | b8 ..] in lanes; qwords 0 2 1 3 then make
     * them [b0 b2 .. b14 | b1 b3 .. b15], the scales' order */
    const __m256i bs_evens_odds = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                                   0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        const block_q6_K *x[4];
        uint16_t dh[4] = {0};
        UNROLL for (int r = 0; r < R; r++) {
            x[r] = (const block_q6_K *)(w + (size_t)r * ws) + b;
            dh[r] = x[r]->d;
        }
        /* d of all rows at once; d * da goes through memory to be broadcast straight
         * into the FMAs */
        __m128 d = _mm_cvtph_ps(_mm_setr_epi16((short)dh[0], (short)dh[1], (short)dh[2], (short)dh[3], 0, 0, 0, 0));
        float dda[4][4];
        /* -bsums in the scales' order */
        __m256i nbs[4];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            _mm_storeu_ps(dda[c], _mm_mul_ps(d, _mm_set1_ps(y->d)));
            __m256i bs = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)y->bsums), bs_evens_odds);
            nbs[c] = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_permute4x64_epi64(bs, _MM_SHUFFLE(3, 1, 2, 0)));
        }
        __asm__("" : "+m"(dda));
        UNROLL for (int r = 0; r < R; r++) {
            /* here rather than with the d loads above: all rows' prefetches in one
             * burst cost memory throughput */
            prefetch_ahead(C, x[r], 256);
            __m256i sv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)x[r]->scales), evens_odds));
            /* 32 * scale fits int16; 32 * bsum does not */
            __m256i sv32 = _mm256_slli_epi16(sv, 5);
            __m256i s[4];
            UNROLL for (int c = 0; c < C; c++)
                s[c] = _mm256_madd_epi16(sv32, nbs[c]);
            UNROLL for (int h = 0; h < 2; h++) {
                __m256i l0 = _mm256_loadu_si256((const __m256i *)(x[r]->ql + 64 * h));
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(x[r]->ql + 64 * h + 32));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(x[r]->qh + 32 * h));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_and_si256(qh, bits45));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45));
                UNROLL for (int c = 0; c < C; c++) {
                    const __m256i *aq = (const __m256i *)((const block_q8_K *)(a + (size_t)c * as) + b)->qs + 4 * h;
                    __m256i p[4];
                    UNROLL for (int k = 0; k < 4; k++) {
                        const int g = 4 * h + k;
                        const __m256i pick = _mm256_set1_epi16((short)(2 * g | (2 * g + 1) << 8));
                        p[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], _mm256_loadu_si256(aq + k)),
                                                 _mm256_shuffle_epi8(sv, pick));
                    }
                    s[c] = _mm256_add_epi32(s[c], _mm256_add_epi32(_mm256_add_epi32(p[0], p[1]), _mm256_add_epi32(p[2], p[3])));
                }
            }
            UNROLL for (int c = 0; c < C; c++)
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[c]), _mm256_set1_ps(dda[c][r]), acc[r][c]);
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q6_K, q6_K_kernel)

/* int16 [s[2g] x8, s[2g+1] x8] from 16 int8 scales: the pair for 32-element run g. */
INLINE __m256i scale_pair16(__m128i s8, int g, int is_signed)
{
    const char lo = (char)(2 * g), hi = (char)(2 * g + 1);
    __m128i p = _mm_shuffle_epi8(s8, _mm_set_epi8(hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo));
    return is_signed ? _mm256_cvtepi8_epi16(p) : _mm256_cvtepu8_epi16(p);
}

/* 2-bit quants of run g (elements 32g..32g+31) of a Q2_K/Q3_K block. */
INLINE __m256i k2_run(const uint8_t *qs, int g)
{
    __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * (g / 4)));
    return _mm256_and_si256(_mm256_srli_epi16(q, 2 * (g % 4)), _mm256_set1_epi8(3));
}

INLINE void q2_K_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        float ad[4];
        __m256i bsums[4];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            ad[c] = y->d;
            bsums[c] = _mm256_loadu_si256((const __m256i *)y->bsums);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const block_q2_K *x = (const block_q2_K *)(w + (size_t)r * ws) + b;
            prefetch_ahead(C, x, 128);
            __m128i raw = _mm_loadu_si128((const __m128i *)x->scales);
            __m128i s8 = _mm_and_si128(raw, _mm_set1_epi8(0x0F));
            __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F)));
            __m256i q[8], sc[8];
            UNROLL8 for (int g = 0; g < 8; g++) {
                q[g] = k2_run(x->qs, g);
                sc[g] = scale_pair16(s8, g, 0);
            }
            float d = h2f(x->d), dmin = h2f(x->dmin);
            UNROLL for (int c = 0; c < C; c++) {
                const int8_t *aq = ((const block_q8_K *)(a + (size_t)c * as) + b)->qs;
                __m256i s = _mm256_setzero_si256();
                UNROLL8 for (int g = 0; g < 8; g++)
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(q[g], _mm256_loadu_si256((const __m256i *)(aq + 32 * g))), sc[g]));
                __m256i m = _mm256_madd_epi16(mins, bsums[c]);
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * ad[c]), acc[r][c]);
                acc[r][c] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(dmin * ad[c]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q2_K, q2_K_kernel)

INLINE __m128i k3_scales(const uint8_t *s)
{
    uint32_t u[3];
    memcpy(u, s, 12);
    __m128i v = _mm_setr_epi32((int)u[0], (int)u[1], (int)u[2], 0);
    __m128i lo = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 1, 0)), _mm_set_epi32(4, 4, 0, 0)),
                               _mm_set1_epi8(0x0F));
    __m128i hi = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 2, 2)), _mm_set_epi32(6, 4, 2, 0)),
                               _mm_set1_epi8(3));
    return _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
}

INLINE void q3_K_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    const __m256i bit2 = _mm256_set1_epi8(4);
    ZERO_ACC(acc)
    for (int64_t b = 0; b < nb; b++) {
        float ad[4];
        __m256i bsums[4];
        UNROLL for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            ad[c] = y->d;
            bsums[c] = _mm256_loadu_si256((const __m256i *)y->bsums);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const block_q3_K *x = (const block_q3_K *)(w + (size_t)r * ws) + b;
            prefetch_ahead(C, x, 128);
            __m256i hm = _mm256_loadu_si256((const __m256i *)x->hmask);
            __m128i s8 = k3_scales(x->scales);
            __m256i neg4 = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(_mm256_cvtepi8_epi16(s8), 2));
            __m256i q[8], sc[8];
            UNROLL8 for (int g = 0; g < 8; g++) {
                /* bit g of hmask[l] (g = 4h + s) to bit 2 */
                __m256i h = g < 2 ? _mm256_slli_epi16(hm, 2 - g) : _mm256_srli_epi16(hm, g - 2);
                q[g] = _mm256_or_si256(k2_run(x->qs, g), _mm256_and_si256(h, bit2));
                sc[g] = scale_pair16(s8, g, 1);
            }
            float d = h2f(x->d);
            UNROLL for (int c = 0; c < C; c++) {
                const int8_t *aq = ((const block_q8_K *)(a + (size_t)c * as) + b)->qs;
                __m256i s = _mm256_madd_epi16(neg4, bsums[c]);
                UNROLL8 for (int g = 0; g < 8; g++)
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(q[g], _mm256_loadu_si256((const __m256i *)(aq + 32 * g))), sc[g]));
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * ad[c]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q3_K, q3_K_kernel)

/* ================= dequantization (bit-identical to the references) ================= */

static void dequant_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *x = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++)
        dst[i] = h2f(x[i]);
}

static void dequant_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *x = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i))), 16));
    for (; i < n; i++)
        dst[i] = bf16_to_f32(x[i]);
}

/* 8 unsigned bytes (low half of q), minus `off`, times d. */
INLINE __m256 bytes8_times(__m128i q, int off, float d)
{
    __m256i v = _mm256_sub_epi32(_mm256_cvtepu8_epi32(q), _mm256_set1_epi32(off));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(d));
}

/* 16 bytes to 16 floats via two 8-wide halves. */
INLINE void store16(float *dst, __m128i q, int off, float d)
{
    _mm256_storeu_ps(dst, bytes8_times(q, off, d));
    _mm256_storeu_ps(dst + 8, bytes8_times(_mm_unpackhi_epi64(q, q), off, d));
}

static void dequant_q8_0(const void *src, float *dst, int64_t n)
{
    const block_q8_0 *x = src;
    for (int64_t b = 0; b < n / QK8_0; b++, dst += QK8_0) {
        __m256 d = _mm256_set1_ps(h2f(x[b].d));
        for (int i = 0; i < 4; i++)
            _mm256_storeu_ps(dst + 8 * i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                _mm_loadl_epi64((const __m128i *)(x[b].qs + 8 * i)))), d));
    }
}

static void dequant_q4_0(const void *src, float *dst, int64_t n)
{
    const block_q4_0 *x = src;
    for (int64_t b = 0; b < n / QK4_0; b++, dst += QK4_0) {
        float d = h2f(x[b].d);
        __m128i q = _mm_loadu_si128((const __m128i *)x[b].qs);
        store16(dst, _mm_and_si128(q, _mm_set1_epi8(0x0F)), 8, d);
        store16(dst + 16, _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F)), 8, d);
    }
}

static void dequant_k4(const int five, const void *src, float *dst, int64_t n)
{
    const size_t bb = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = (const uint8_t *)src + (size_t)b * bb;
        uint16_t dd[2];
        memcpy(dd, blk, 4);
        float d = h2f(dd[0]), dmin = h2f(dd[1]);
        const uint8_t *qs = blk + (five ? 48 : 16), *qh = blk + 16;
        for (int g = 0; g < 8; g++) {
            uint8_t sc, m;
            quant_k4_scale_min(g, blk + 4, &sc, &m);
            __m256 ds = _mm256_set1_ps(d * sc), dm = _mm256_set1_ps(dmin * m);
            for (int h = 0; h < 2; h++) {
                __m128i q = k4_quants16(qs, qh, five, g, h);
                for (int e = 0; e < 2; e++) {
                    __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(e ? _mm_unpackhi_epi64(q, q) : q));
                    _mm256_storeu_ps(dst + 32 * g + 16 * h + 8 * e, _mm256_sub_ps(_mm256_mul_ps(ds, v), dm));
                }
            }
        }
        dst += QK_K;
    }
}

static void dequant_q4_K(const void *src, float *dst, int64_t n)
{
    dequant_k4(0, src, dst, n);
}
static void dequant_q5_K(const void *src, float *dst, int64_t n)
{
    dequant_k4(1, src, dst, n);
}

static void dequant_q6_K(const void *src, float *dst, int64_t n)
{
    const block_q6_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        float d = h2f(x[b].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[b].ql + 64 * h, *qh = x[b].qh + 32 * h;
            for (int s = 0; s < 4; s++)
                for (int half = 0; half < 2; half++) {
                    int j = (128 * h + 32 * s + 16 * half) / 16;
                    store16(dst + 16 * j, q6_quants16(ql, qh, s, half), 32, d * x[b].scales[j]);
                }
        }
    }
}

/* ================= activation quantizers ================= */

INLINE float hmax256(__m256 v)
{
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

INLINE int hsum_i32(__m256i v)
{
    __m128i q = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    q = _mm_add_epi32(q, _mm_unpackhi_epi64(q, q));
    q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 1));
    return _mm_cvtsi128_si32(q);
}

/* 32 int32 (as 4 vectors) to 32 int8 in order, saturating. */
INLINE __m256i pack32(__m256i i0, __m256i i1, __m256i i2, __m256i i3)
{
    __m256i a = _mm256_packs_epi32(i0, i1), b = _mm256_packs_epi32(i2, i3);
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* One 32-float block to quants (half-to-even rounding, like the reference); returns d
 * and the sum of the quants. */
INLINE float q8_32(const float *x, int8_t *qs, int *sum)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
    }
    float amax = hmax256(m);
    __m256 id = _mm256_set1_ps(amax != 0 ? 127.f / amax : 0.f);
    __m256i q[4];
    for (int i = 0; i < 4; i++)
        q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));
    *sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    _mm256_storeu_si256((__m256i *)qs, pack32(q[0], q[1], q[2], q[3]));
    return amax / 127.f;
}

static void quantize_q8_0(const float *x, void *dst, int64_t n)
{
    block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        int s;
        y[b].d = (uint16_t)_cvtss_sh(q8_32(x + 32 * b, y[b].qs, &s), 0);
    }
}

static void quantize_q8_1(const float *x, void *dst, int64_t n)
{
    block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / QK8_1; b++) {
        int s;
        float d = q8_32(x + 32 * b, y[b].qs, &s);
        y[b].d = (uint16_t)_cvtss_sh(d, 0);
        y[b].s = (uint16_t)_cvtss_sh(d * (float)s, 0);
    }
}

static void quantize_q8_K(const float *x, void *dst, int64_t n)
{
    block_q8_K *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < QK_K; i += 8)
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
        float amax = hmax256(m);
        if (amax == 0) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float max = 0;
        __m256 am = _mm256_set1_ps(amax);
        for (int i = 0; i < QK_K; i += 8) {
            int k = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)), am, _CMP_EQ_OQ));
            if (k) {
                max = x[i + __builtin_ctz((unsigned)k)];
                break;
            }
        }
        float iscale = -127.f / max;
        __m256 is = _mm256_set1_ps(iscale);
        for (int i = 0; i < QK_K; i += 32) {
            __m256i q[4];
            for (int j = 0; j < 4; j++) {
                q[j] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * j), is));
                q[j] = _mm256_max_epi32(_mm256_min_epi32(q[j], _mm256_set1_epi32(127)), _mm256_set1_epi32(-127));
            }
            _mm256_storeu_si256((__m256i *)(y[b].qs + i), pack32(q[0], q[1], q[2], q[3]));
            y[b].bsums[i / 16] = (int16_t)hsum_i32(_mm256_add_epi32(q[0], q[1]));
            y[b].bsums[i / 16 + 1] = (int16_t)hsum_i32(_mm256_add_epi32(q[2], q[3]));
        }
        y[b].d = 1 / iscale;
    }
}

static void quantize_f16(const float *x, void *dst, int64_t n)
{
    uint16_t *y = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = f32_to_f16(x[i]);
}

static void quantize_bf16(const float *x, void *dst, int64_t n)
{
    uint16_t *y = dst;
    int64_t i = 0;
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(x + i));
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absmask), inf);
        __m256i qn = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
        r = _mm256_blendv_epi8(r, qn, nan);
        /* 8 int32 holding 16-bit values -> 8 uint16 */
        __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
        _mm_storeu_si128((__m128i *)(y + i), _mm_packus_epi32(lo, hi));
    }
    for (; i < n; i++)
        y[i] = f32_to_bf16(x[i]);
}

void quant_avx2_fill(quant_kernels *k)
{
#define SET(T, name)               \
    k->vec_dot[T] = dot_##name;    \
    k->tile[T] = tile_##name;
    SET(T_F32, f32)
    SET(T_F16, f16)
    SET(T_BF16, bf16)
    SET(T_Q8_0, q8_0)
    SET(T_Q4_0, q4_0)
    SET(T_Q4_K, q4_K)
    SET(T_Q5_K, q5_K)
    SET(T_Q6_K, q6_K)
    SET(T_Q5_0, q5_0)
    SET(T_Q4_1, q4_1)
    SET(T_Q5_1, q5_1)
    SET(T_Q2_K, q2_K)
    SET(T_Q3_K, q3_K)
#undef SET
    k->dequantize[T_F16] = dequant_f16;
    k->dequantize[T_BF16] = dequant_bf16;
    k->dequantize[T_Q8_0] = dequant_q8_0;
    k->dequantize[T_Q4_0] = dequant_q4_0;
    k->dequantize[T_Q4_K] = dequant_q4_K;
    k->dequantize[T_Q5_K] = dequant_q5_K;
    k->dequantize[T_Q6_K] = dequant_q6_K;
    k->quantize[T_Q8_0] = quantize_q8_0;
    k->quantize[T_Q8_1] = quantize_q8_1;
    k->quantize[T_Q8_K] = quantize_q8_K;
    k->quantize[T_F16] = quantize_f16;
    k->quantize[T_BF16] = quantize_bf16;
    quant_iq_avx2_fill(k);
}
