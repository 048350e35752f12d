/* quant_avx512.c — AVX-512 kernels: VNNI integer dot products, F16/BF16/F32 dots, and
 * the activation quantizers.
 *
 * Every dot product is a tile kernel over R weight rows and C activation rows (R, C <=
 * 4, constants after inlining): each weight block is loaded and unpacked once and
 * used for all C activation rows, each activation block once for all R weight rows.
 * vec_dot is the 1x1 tile.
 *
 * Signed-by-signed 8-bit products go through vpdpbusd (unsigned x signed) by flipping
 * the weight's sign bit, w ^ 0x80 = w + 128, and subtracting 128 * sum(a), which
 * depends on the activation only and so is computed once per activation block.
 */
#include "quant_impl.h"
#include "quant_unpack.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))

#include "quant_tile.h"

INLINE float hsum512(__m512 v)
{
    __m256 s = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* hsum512 of four vectors at once, into out[0..3]: the same additions of the same lanes
 * in the same order (halves, quarters, then lanes 0+2, 1+3 and their sum), so each sum
 * is bit for bit hsum512's, but the four share their shuffles. With rows of 256 (a
 * small model's hidden size) the sums are a third of a decode tile's work. */
INLINE void hsum512x4(__m512 a, __m512 b, __m512 c, __m512 d, float *out)
{
    /* [a.q0+a.q2, a.q1+a.q3, b.q0+b.q2, b.q1+b.q3] (q: 128-bit quarters), likewise c, d */
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
    /* quarter k: vector k's four partial sums */
    __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
    q = _mm512_add_ps(q, _mm512_permute_ps(q, _MM_SHUFFLE(1, 0, 3, 2)));
    q = _mm512_add_ps(q, _mm512_permute_ps(q, _MM_SHUFFLE(2, 3, 0, 1)));
    const __m512i first = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(first, q)));
}

INLINE void store_tile(const int R, const int C, __m512 acc[4][4], float *out, size_t os)
{
    _Pragma("GCC unroll 4")
    for (int c = 0; c < C; c++) {
        if (R == 4) {
            hsum512x4(acc[0][c], acc[1][c], acc[2][c], acc[3][c], out + (size_t)c * os);
            continue;
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < R; r++)
            out[(size_t)c * os + r] = hsum512(acc[r][c]);
    }
}

/* Two f16 scales, halves 0 and `second` of a 64-byte window, as [d0 x8, d1 x8]. */
INLINE __m512 two_scales(__m512i window, __m512i idx)
{
    return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(idx, window)));
}

INLINE __m512i scale_index(int second)
{
    return _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, second, second,
                            second, second, second, second, second, second, 0, 0, 0, 0, 0, 0, 0, 0);
}

/* ================= F32, F16, BF16 ================= */

/* Float tiles over 16 elements at a time; the tail (n % 16) goes through masked loads.
 * A single dot takes the same one chain per output as a tile, so a token's result does
 * not depend on how many tokens share the call (a recurrent state carries any
 * difference forward). */
#define FLOAT_KERNEL(name, LOADW, LOADA, WT)                                                    \
    INLINE void name(int64_t n, const int R, const int C, const char *w, size_t ws,       \
                     const char *a, size_t as, float *out, size_t os)                     \
    {                                                                                     \
        __m512 acc[4][4];                                                                 \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                                       \
            _Pragma("GCC unroll 4") for (int c = 0; c < C; c++)                                                   \
                acc[r][c] = _mm512_setzero_ps();                                          \
        for (int64_t i = 0; i < n; i += 16) {                                             \
            __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1); \
            __m512 av[4];                                                                 \
            _Pragma("GCC unroll 4") for (int c = 0; c < C; c++)                                                   \
                av[c] = LOADA(a + (size_t)c * as, i, m);                                  \
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                                 \
                prefetch_ahead(C, w + (size_t)r * ws + i * (int64_t)sizeof(WT), 64);      \
                __m512 wv = LOADW(w + (size_t)r * ws, i, m);                              \
                _Pragma("GCC unroll 4") for (int c = 0; c < C; c++)                                               \
                    acc[r][c] = _mm512_fmadd_ps(wv, av[c], acc[r][c]);                    \
            }                                                                             \
        }                                                                                 \
        store_tile(R, C, acc, out, os);                                                   \
    }

INLINE __m512 load_f32(const char *p, int64_t i, __mmask16 m)
{
    return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}
INLINE __m512 load_f16(const char *p, int64_t i, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
}

FLOAT_KERNEL(f32_kernel, load_f32, load_f32, float)
FLOAT_KERNEL(f16_kernel, load_f16, load_f16, uint16_t)
DEFINE_TILE_AND_DOT(f32, f32_kernel)
DEFINE_TILE_AND_DOT(f16, f16_kernel)

/* BF16 pairs straight into vdpbf16ps, 32 elements a step. */
INLINE void bf16_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    if (R == 1 && C == 1) { /* one dot: four chains so the adds overlap */
        const uint16_t *x = (const uint16_t *)w, *y = (const uint16_t *)a;
        __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        int64_t i = 0;
        for (; i + 128 <= n; i += 128) {
            prefetch_ahead(1, x + i, 256);
            for (int k = 0; k < 4; k++)
                s[k] = _mm512_dpbf16_ps(s[k], (__m512bh)_mm512_loadu_si512(x + i + 32 * k),
                                        (__m512bh)_mm512_loadu_si512(y + i + 32 * k));
        }
        for (; i < n; i += 32) {
            __mmask32 m = n - i >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (n - i)) - 1);
            s[0] = _mm512_dpbf16_ps(s[0], (__m512bh)_mm512_maskz_loadu_epi16(m, x + i),
                                    (__m512bh)_mm512_maskz_loadu_epi16(m, y + i));
        }
        *out = hsum512(_mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3])));
        return;
    }
    __m512 acc[4][4];
    _Pragma("GCC unroll 4")
    for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4")
        for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 32) {
        __mmask32 m = n - i >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (n - i)) - 1);
        __m512bh av[4];
        _Pragma("GCC unroll 4")
        for (int c = 0; c < C; c++)
            av[c] = (__m512bh)_mm512_maskz_loadu_epi16(m, (const uint16_t *)(a + (size_t)c * as) + i);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < R; r++) {
            prefetch_ahead(C, (const uint16_t *)(w + (size_t)r * ws) + i, 64);
            __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, (const uint16_t *)(w + (size_t)r * ws) + i);
            _Pragma("GCC unroll 4")
            for (int c = 0; c < C; c++)
                acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv, av[c]);
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(bf16, bf16_kernel)

/* ================= Q8_0 (and the Q8_0 side of Q4_0) ================= */

/* The quants of blocks b and b+1 of a Q8_0 row as one vector; two = 0 zeroes the second
 * (a lone last block), without reading it. */
INLINE __m512i q8_0_pair_quants(const block_q8_0 *x, int two)
{
    __m256i lo = _mm256_loadu_si256((const __m256i *)x[0].qs);
    if (!two)
        return _mm512_zextsi256_si512(lo);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)x[1].qs), 1);
}

INLINE __m512 q8_0_pair_scales(const block_q8_0 *x, int two)
{
    /* the pair spans 68 bytes, so the 64-byte window from its start holds both scales */
    __m512i win = two ? _mm512_loadu_si512(x) : _mm512_maskz_loadu_epi16(1, x);
    return two_scales(win, scale_index(17));
}

/* One block pair (or a lone last block) of a Q8_0 tile. With up to three activation
 * rows the sign flip goes on the weights (one xor per weight pair) and each activation
 * row's -128*sum(a) correction is shared by the weight rows; with four, the flip goes on
 * the activations and each weight row carries its own -128*sum(w), which keeps fewer
 * vectors live across the tile. The integer sums are the same either way. */
INLINE void q8_0_step(const int two, int64_t b, const int R, const int C, const char *w,
                      size_t ws, const char *a, size_t as, __m512 acc[4][4])
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i aq[4], corr[4];
    __m512 ad[4];
    _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
        const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)c * as) + b;
        aq[c] = q8_0_pair_quants(y, two);
        ad[c] = q8_0_pair_scales(y, two);
        if (C < 4)
            corr[c] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                       _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, aq[c]));
        else
            aq[c] = _mm512_xor_si512(aq[c], flip);
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
        const block_q8_0 *x = (const block_q8_0 *)(w + (size_t)r * ws) + b;
        prefetch_ahead(C, x, 128);
        __m512i wq = q8_0_pair_quants(x, two);
        __m512 wd = q8_0_pair_scales(x, two);
        if (C < 4) {
            const __m512i wf = _mm512_xor_si512(wq, flip);
            _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
                __m512i p = _mm512_dpbusd_epi32(corr[c], wf, aq[c]);
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(wd, ad[c]), acc[r][c]);
            }
        } else {
            __m512i wcorr = _mm512_sub_epi32(_mm512_setzero_si512(),
                                             _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, wq));
            _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
                __m512i p = _mm512_dpbusd_epi32(wcorr, aq[c], wq);
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(wd, ad[c]), acc[r][c]);
            }
        }
    }
}

INLINE void q8_0_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK8_0;
    __m512 acc[4][4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2)
        q8_0_step(1, b, R, C, w, ws, a, as, acc);
    if (b < nb)
        q8_0_step(0, b, R, C, w, ws, a, as, acc);
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q8_0, q8_0_kernel)

/* Q4_0: the quants of two blocks as [lo0 hi0 lo1 hi1] nibbles (0..15), and the -8
 * offset taken out through -8 * sum(a). */
INLINE void q4_0_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK4_0;
    const __m512i shifts = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
    const __m512i low4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
    const __m512i sidx = scale_index(9);
    __m512 acc[4][4];
    _Pragma("GCC unroll 4")
    for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4")
        for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        __m512i aq[4], neg[4];
        __m512 ad[4];
        _Pragma("GCC unroll 4")
        for (int c = 0; c < C; c++) {
            const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)c * as) + b;
            aq[c] = q8_0_pair_quants(y, two);
            ad[c] = q8_0_pair_scales(y, two);
            neg[c] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                      _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, aq[c]));
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < R; r++) {
            const block_q4_0 *x = (const block_q4_0 *)(w + (size_t)r * ws) + b;
            prefetch_ahead(C, x, 64);
            __m256i q01 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x[0].qs));
            __m512i q = _mm512_castsi256_si512(q01);
            if (two)
                q = _mm512_inserti64x4(q, _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x[1].qs)), 1);
            else
                q = _mm512_zextsi256_si512(q01);
            q = _mm512_and_si512(_mm512_srlv_epi64(q, shifts), low4);
            /* the pair spans 36 bytes: fetch just the two scale words */
            __m512i win = _mm512_maskz_loadu_epi16(two ? 0x201 : 0x1, x);
            __m512 wd = two_scales(win, sidx);
            _Pragma("GCC unroll 4")
            for (int c = 0; c < C; c++) {
                __m512i p = _mm512_dpbusd_epi32(neg[c], q, aq[c]);
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(wd, ad[c]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q4_0, q4_0_kernel)

/* Q5_0: Q4_0's nibbles plus a fifth bit per element from qh (bit j = element j), spread
 * to bytes with vpmovm2b; offset -16. */
INLINE void q5_0_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK5_0;
    const __m512i shifts = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
    const __m512i low4 = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);
    const __m512i sidx = scale_index(11);
    __m512 acc[4][4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        __m512i aq[4], neg[4];
        __m512 ad[4];
        _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
            const block_q8_0 *y = (const block_q8_0 *)(a + (size_t)c * as) + b;
            aq[c] = q8_0_pair_quants(y, two);
            ad[c] = q8_0_pair_scales(y, two);
            neg[c] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                      _mm512_dpbusd_epi32(_mm512_setzero_si512(), bit4, aq[c]));
        }
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const block_q5_0 *x = (const block_q5_0 *)(w + (size_t)r * ws) + b;
            prefetch_ahead(C, x, 64);
            __m256i q01 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x[0].qs));
            uint32_t h0, h1 = 0;
            memcpy(&h0, x[0].qh, 4);
            __m512i q;
            if (two) {
                memcpy(&h1, x[1].qh, 4);
                q = _mm512_inserti64x4(_mm512_castsi256_si512(q01),
                                       _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x[1].qs)), 1);
            } else {
                q = _mm512_zextsi256_si512(q01);
            }
            q = _mm512_and_si512(_mm512_srlv_epi64(q, shifts), low4);
            __m512i hi = _mm512_movm_epi8((__mmask64)h0 | ((__mmask64)h1 << 32));
            q = _mm512_ternarylogic_epi64(q, hi, bit4, 0xF8);
            __m512 wd = two_scales(_mm512_maskz_loadu_epi16(two ? 0x801 : 0x1, x), sidx);
            _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
                __m512i p = _mm512_dpbusd_epi32(neg[c], q, aq[c]);
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(wd, ad[c]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q5_0, q5_0_kernel)

/* Q4_1 and Q5_1 against Q8_1: x = d*q + m, so a block's dot is d*da*sum(q*a) + m*s,
 * with s = da*sum(a) stored in the activation block. The m*s terms of a pair land in
 * lanes 0 and 8 of the accumulator. */
INLINE void q4_1_like_kernel(const int five, int64_t n, const int R, const int C, const char *w,
                             size_t ws, const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / 32;
    const size_t bb = five ? sizeof(block_q5_1) : sizeof(block_q4_1);
    const int qs_off = five ? 8 : 4, wstep = (int)bb / 2;
    const __m512i shifts = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
    const __m512i low4 = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);
    const __m512i wdi = scale_index(wstep), wmi = _mm512_add_epi16(scale_index(wstep), _mm512_set1_epi16(1));
    const __m512i adi = scale_index(18), asi = _mm512_add_epi16(scale_index(18), _mm512_set1_epi16(1));
    __m512 acc[4][4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        __m512i aq[4];
        __m512 ad[4], asum[4];
        _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
            const block_q8_1 *y = (const block_q8_1 *)(a + (size_t)c * as) + b;
            __m256i lo = _mm256_loadu_si256((const __m256i *)y[0].qs);
            aq[c] = two ? _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)y[1].qs), 1)
                        : _mm512_zextsi256_si512(lo);
            __m512i win = _mm512_maskz_loadu_epi16(two ? 0xC0003 : 0x3, y);
            ad[c] = two_scales(win, adi);
            asum[c] = two_scales(win, asi);
        }
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const uint8_t *x = (const uint8_t *)(w + (size_t)r * ws) + (size_t)b * bb;
            prefetch_ahead(C, x, 64);
            __m256i q01 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x + qs_off)));
            __m512i q = two ? _mm512_inserti64x4(_mm512_castsi256_si512(q01),
                                                 _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x + bb + qs_off))), 1)
                            : _mm512_zextsi256_si512(q01);
            q = _mm512_and_si512(_mm512_srlv_epi64(q, shifts), low4);
            if (five) {
                uint32_t h0, h1 = 0;
                memcpy(&h0, x + 4, 4);
                if (two)
                    memcpy(&h1, x + bb + 4, 4);
                q = _mm512_ternarylogic_epi64(q, _mm512_movm_epi8((__mmask64)h0 | ((__mmask64)h1 << 32)), bit4, 0xF8);
            }
            __m512i win = _mm512_maskz_loadu_epi16(two ? (3u | 3u << wstep) : 3u, x);
            __m512 wd = two_scales(win, wdi), wm = two_scales(win, wmi);
            _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
                __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, aq[c]);
                __m512 t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(wd, ad[c]), acc[r][c]);
                acc[r][c] = _mm512_mask_add_ps(t, 0x0101, t, _mm512_mul_ps(wm, asum[c]));
            }
        }
    }
    store_tile(R, C, acc, out, os);
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

/* 16 int16 weights (low half of w) times an activation block's 16 bsums, pairwise
 * summed: 8 int32 lanes, zero above. Loaded at the point of use, so the tile keeps no
 * bsums vectors live. */
INLINE __m512i madd_bsums(__m512i w, const int16_t *bsums)
{
    return _mm512_zextsi256_si512(
        _mm256_madd_epi16(_mm512_castsi512_si256(w), _mm256_loadu_si256((const __m256i *)bsums)));
}

/* Q4_K and Q5_K. Decode (4 weight rows x 1 activation row) streams weights from memory,
 * so the kernel spends as few vector instructions per block as it can:
 * - the R rows' 16-byte block heads (d, dmin, 12 scale bytes) share one register, 128-bit
 *   lane r for row r, so scales and mins are unpacked, and d and dmin converted, once
 *   for all rows;
 * - the mins of all rows meet an activation row's bsums in one vector (lane r holds row
 *   r's partial sums) with its own accumulator, split per row at the end;
 * - qs is read 64 bytes at a time: low nibbles are sub-blocks 4j and 4j+2, high nibbles
 *   4j+1 and 4j+3, so one shift serves 128 weights; the activation is rearranged to
 *   match once per block for all rows;
 * - vpdpbusd makes 4-element sums (at most 4 * 31 * 128, so they fit int16); packing two
 *   such vectors to int16 lets one vpdpwssd apply 4 sub-block scales;
 * - d * da is one float per row, so a row costs one convert and one FMA per block.
 * Every tile shape does the same arithmetic lane for lane, so a row's result does not
 * depend on the tile it was computed in (decode and prefill agree exactly). */
INLINE void k4_kernel(const int five, int64_t n, const int R, const int C, const char *w,
                      size_t ws, const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    const size_t bb = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const __m512i low4 = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);
    /* Per lane, the head's words are [d|dmin, u0, u1, u2] with scales 0-3 = u0 & 0x3f..,
     * mins 0-3 = u1 & 0x3f.., scales 4-7 = low nibbles of u2 with u0's top two bits above
     * them, mins 4-7 = high nibbles of u2 with u1's; unpacked to [sc0..7, m0..7]. */
    const __m512i sm_shift = _mm512_set4_epi32(4, 0, 0, 0);
    const __m512i m6 = _mm512_set4_epi32(0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f);
    const __m512i m2 = _mm512_set4_epi32(0x30303030, 0, 0x30303030, 0);
    /* mins 0-3 / 4-7 as int16 pairs [m m], against bsums 0-7 / 8-15 */
    const __m512i pick_mins_lo = _mm512_broadcast_i32x4(
        _mm_setr_epi8(8, -1, 8, -1, 9, -1, 9, -1, 10, -1, 10, -1, 11, -1, 11, -1));
    const __m512i pick_mins_hi = _mm512_broadcast_i32x4(
        _mm_setr_epi8(12, -1, 12, -1, 13, -1, 13, -1, 14, -1, 14, -1, 15, -1, 15, -1));
    /* scales as int16 for the packed 4-sums of 64-byte half j: 128-bit lanes 0-1 hold
     * sub-blocks 4j (x4) and 4j+1 (x4), lanes 2-3 sub-blocks 4j+2 and 4j+3 */
    __m512i pick_sc[2];
    for (int j = 0; j < 2; j++) {
        const char s0 = (char)(4 * j), s1 = (char)(4 * j + 1), s2 = (char)(4 * j + 2), s3 = (char)(4 * j + 3);
        __m128i lo = _mm_setr_epi8(s0, -1, s0, -1, s0, -1, s0, -1, s1, -1, s1, -1, s1, -1, s1, -1);
        __m128i hi = _mm_setr_epi8(s2, -1, s2, -1, s2, -1, s2, -1, s3, -1, s3, -1, s3, -1, s3, -1);
        pick_sc[j] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(lo, lo)),
                                        _mm256_set_m128i(hi, hi), 1);
    }
    /* word 0 (d|dmin) of each row's head; [dmin of row r x4] from the converted pairs */
    const __m512i pick_dd = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    const __m512i pick_dmin = _mm512_set_epi32(7, 7, 7, 7, 5, 5, 5, 5, 3, 3, 3, 3, 1, 1, 1, 1);
    __m512 acc[4][4], accm[4];
    _Pragma("GCC unroll 4")
    for (int c = 0; c < C; c++) {
        accm[c] = _mm512_setzero_ps();
        _Pragma("GCC unroll 4")
        for (int r = 0; r < R; r++)
            acc[r][c] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const char *blk[4];
        __m512i head = _mm512_setzero_si512();
        _Pragma("GCC unroll 4")
        for (int r = 0; r < R; r++) {
            blk[r] = w + (size_t)r * ws + (size_t)b * bb;
            prefetch_ahead(C, blk[r], five ? 192 : 144);
            head = _mm512_mask_broadcast_i32x4(head, (__mmask16)(0xF << (4 * r)),
                                               _mm_loadu_si128((const __m128i *)blk[r]));
        }
        __m512i x = _mm512_srlv_epi32(_mm512_shuffle_epi32(head, _MM_PERM_DCDB), sm_shift);
        __m512i top = _mm512_srli_epi32(_mm512_shuffle_epi32(head, _MM_PERM_CCBB), 2);
        __m512i sm = _mm512_ternarylogic_epi32(_mm512_and_si512(x, m6), top, m2, 0xF8); /* x&m6 | top&m2 */
        __m256 dd = _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi32(pick_dd, head)));
        __m512i mins_lo = _mm512_shuffle_epi8(sm, pick_mins_lo), mins_hi = _mm512_shuffle_epi8(sm, pick_mins_hi);

        /* per activation row: [d0 dmin0 d1 dmin1 ..] * da, the mins, and the activation
         * for the low (al) and high (ah) nibbles of 64-byte half j of qs */
        float dda[4][8];
        __m512i al[4][2], ah[4][2];
        _Pragma("GCC unroll 4")
        for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            __m256 ddc = _mm256_mul_ps(dd, _mm256_set1_ps(y->d));
            _mm256_storeu_ps(dda[c], ddc);
            __m512i msum = _mm512_madd_epi16(mins_lo, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)y->bsums)));
            msum = _mm512_dpwssd_epi32(msum, mins_hi, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(y->bsums + 8))));
            accm[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_permutexvar_ps(pick_dmin, _mm512_castps256_ps512(ddc)),
                                      accm[c]);
            for (int j = 0; j < 2; j++) {
                const int8_t *q = y->qs + 128 * j;
                al[c][j] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)q)),
                                              _mm256_loadu_si256((const __m256i *)(q + 64)), 1);
                ah[c][j] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(q + 32))),
                                              _mm256_loadu_si256((const __m256i *)(q + 96)), 1);
            }
        }
        /* d * da goes through memory to be broadcast straight into the FMAs; else the
         * compiler reads it back with shuffles */
        __asm__("" : "+m"(dda));

        _Pragma("GCC unroll 4")
        for (int r = 0; r < R; r++) {
            const uint8_t *qs = (const uint8_t *)blk[r] + (five ? 48 : 16);
            __m512i hb = five ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk[r] + 16)))
                              : _mm512_setzero_si512();
            __m512i smr = _mm512_permutexvar_epi32(_mm512_set4_epi32(4 * r + 3, 4 * r + 2, 4 * r + 1, 4 * r), sm);
            __m512i lo[2], hi[2], sc[2];
            _Pragma("GCC unroll 2")
            for (int j = 0; j < 2; j++) {
                __m512i q = _mm512_loadu_si512(qs + 64 * j);
                lo[j] = _mm512_and_si512(q, low4);
                hi[j] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
                if (five) {
                    /* qh bit s is sub-block s's bit 4: lo needs bits 4j, 4j+2 (halves), hi
                     * 4j+1, 4j+3; qword shifts move them to bit 4 */
                    __m512i hl, hh;
                    if (j == 0) {
                        hl = _mm512_sllv_epi64(hb, _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4));
                        hh = _mm512_sllv_epi64(hb, _mm512_set_epi64(1, 1, 1, 1, 3, 3, 3, 3));
                    } else {
                        hl = _mm512_srlv_epi64(hb, _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0));
                        hh = _mm512_srlv_epi64(hb, _mm512_set_epi64(3, 3, 3, 3, 1, 1, 1, 1));
                    }
                    lo[j] = _mm512_ternarylogic_epi64(lo[j], hl, bit4, 0xF8); /* lo | (hl & bit4) */
                    hi[j] = _mm512_ternarylogic_epi64(hi[j], hh, bit4, 0xF8);
                }
                sc[j] = _mm512_shuffle_epi8(smr, pick_sc[j]);
            }
            _Pragma("GCC unroll 4")
            for (int c = 0; c < C; c++) {
                __m512i isum = _mm512_setzero_si512();
                _Pragma("GCC unroll 2")
                for (int j = 0; j < 2; j++) {
                    __m512i plo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[j], al[c][j]);
                    __m512i phi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi[j], ah[c][j]);
                    isum = _mm512_dpwssd_epi32(isum, _mm512_packs_epi32(plo, phi), sc[j]);
                }
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(dda[c][2 * r]), acc[r][c]);
            }
        }
    }
    _Pragma("GCC unroll 4")
    for (int c = 0; c < C; c++) {
        float m[16];
        _mm512_storeu_ps(m, accm[c]);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < R; r++)
            out[(size_t)c * os + r] = hsum512(acc[r][c]) - (m[4 * r] + m[4 * r + 1] + m[4 * r + 2] + m[4 * r + 3]);
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

/* Q6_K: per 128-element half, elements 0..63 are the low nibbles of ql[0..63] and
 * 64..127 the high nibbles, with 2 bits of qh[0..31] on top (bits 0-1, 2-3 for the two
 * 32-runs of the first 64, bits 4-5, 6-7 for the second). Quants q+32 are unsigned;
 * the -32 comes back as -32 * sum(scale_j * bsum_j), in the same integer sum. */
INLINE void q6_K_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    const __m512i low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
    const __m512i up01 = _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4);  /* qh bits 0-1 | 2-3 to 4-5 */
    const __m512i dn23 = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);  /* qh bits 4-5 | 6-7 to 4-5 */
    __m512 acc[4][4];
    _Pragma("GCC unroll 4")
    for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4")
        for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        float ad[4];
        const int16_t *bsums[4];
        _Pragma("GCC unroll 4")
        for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            ad[c] = y->d;
            bsums[c] = y->bsums;
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < R; r++) {
            const block_q6_K *x = (const block_q6_K *)(w + (size_t)r * ws) + b;
            prefetch_ahead(C, x, 256);
            __m512i wq[4], sc[4];
            for (int h = 0; h < 2; h++) {
                __m512i ql = _mm512_loadu_si512(x->ql + 64 * h);
                __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x->qh + 32 * h)));
                __m512i lo = _mm512_and_si512(ql, low4);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi16(ql, 4), low4);
                wq[2 * h] = _mm512_ternarylogic_epi64(lo, _mm512_sllv_epi64(qh, up01), bits45, 0xF8);
                wq[2 * h + 1] = _mm512_ternarylogic_epi64(hi, _mm512_srlv_epi64(qh, dn23), bits45, 0xF8);
            }
            /* scale j for each 16 elements, as int16 lanes: vector k covers scales 4k..4k+3 */
            __m512i s16 = _mm512_zextsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales)));
            _Pragma("GCC unroll 4")
            for (int k = 0; k < 4; k++) {
                const short j = (short)(4 * k);
                __m512i idx = _mm512_set_epi16(j + 3, j + 3, j + 3, j + 3, j + 3, j + 3, j + 3, j + 3,
                                               j + 2, j + 2, j + 2, j + 2, j + 2, j + 2, j + 2, j + 2,
                                               j + 1, j + 1, j + 1, j + 1, j + 1, j + 1, j + 1, j + 1,
                                               j, j, j, j, j, j, j, j);
                sc[k] = _mm512_permutexvar_epi16(idx, s16);
            }
            __m512i neg32 = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(s16, 5));
            __m512 wd = _mm512_set1_ps(_cvtsh_ss(x->d));
            _Pragma("GCC unroll 4")
            for (int c = 0; c < C; c++) {
                const int8_t *aq = ((const block_q8_K *)(a + (size_t)c * as) + b)->qs;
                __m512i isum = madd_bsums(neg32, bsums[c]);
                _Pragma("GCC unroll 4")
                for (int k = 0; k < 4; k++) {
                    __m512i p = _mm512_maddubs_epi16(wq[k], _mm512_loadu_si512(aq + 64 * k));
                    isum = _mm512_dpwssd_epi32(isum, p, sc[k]);
                }
                acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), wd), _mm512_set1_ps(ad[c]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q6_K, q6_K_kernel)

/* int16 vector k (elements 64k..64k+63, four 16-element sub-blocks) of per-16 scales:
 * lanes 8i..8i+7 hold scale 4k+i. */
INLINE __m512i scales16_for(__m512i s16, int k)
{
    const short j = (short)(4 * k);
    __m512i idx = _mm512_set_epi16(j + 3, j + 3, j + 3, j + 3, j + 3, j + 3, j + 3, j + 3,
                                   j + 2, j + 2, j + 2, j + 2, j + 2, j + 2, j + 2, j + 2,
                                   j + 1, j + 1, j + 1, j + 1, j + 1, j + 1, j + 1, j + 1,
                                   j, j, j, j, j, j, j, j);
    return _mm512_permutexvar_epi16(idx, s16);
}

/* 2-bit quants of a Q2_K/Q3_K block, vector k = elements 64k..64k+63: bits 2s..2s+1 of
 * qs[32h + l] for element 128h + 32s + l. */
INLINE __m512i k2_low_bits(const uint8_t *qs, int k)
{
    __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * (k / 2))));
    const int s = 4 * (k % 2);
    return _mm512_and_si512(_mm512_srlv_epi64(q, _mm512_set_epi64(s + 2, s + 2, s + 2, s + 2, s, s, s, s)),
                            _mm512_set1_epi8(3));
}

/* Q2_K: scales low nibble, mins high nibble, per 16 elements. */
INLINE void q2_K_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    __m512 acc[4][4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        float ad[4];
        const int16_t *bsums[4];
        _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            ad[c] = y->d;
            bsums[c] = y->bsums;
        }
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const block_q2_K *x = (const block_q2_K *)(w + (size_t)r * ws) + b;
            prefetch_ahead(C, x, 128);
            __m256i raw = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)x->scales));
            __m512i s16 = _mm512_zextsi256_si512(_mm256_and_si256(raw, _mm256_set1_epi16(0x0F)));
            __m512i mins = _mm512_zextsi256_si512(_mm256_srli_epi16(raw, 4));
            __m512i wq[4], sc[4];
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                wq[k] = k2_low_bits(x->qs, k);
                sc[k] = scales16_for(s16, k);
            }
            float d = _cvtsh_ss(x->d), dmin = _cvtsh_ss(x->dmin);
            _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
                const int8_t *aq = ((const block_q8_K *)(a + (size_t)c * as) + b)->qs;
                __m512i isum = _mm512_setzero_si512();
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++)
                    isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(wq[k], _mm512_loadu_si512(aq + 64 * k)), sc[k]);
                __m512i msum = madd_bsums(mins, bsums[c]);
                __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d));
                t = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_set1_ps(dmin), t);
                acc[r][c] = _mm512_fmadd_ps(t, _mm512_set1_ps(ad[c]), acc[r][c]);
            }
        }
    }
    store_tile(R, C, acc, out, os);
}
DEFINE_TILE_AND_DOT(q2_K, q2_K_kernel)

/* The 16 signed scales of a Q3_K block as int8 (see quant_k3_scales). */
INLINE __m128i k3_scales(const uint8_t *s)
{
    __m128i u = _mm_maskz_loadu_epi8(0x0FFF, s); /* the block may end 2 bytes after them */
    __m128i lo = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(u, _MM_SHUFFLE(1, 0, 1, 0)), _mm_set_epi32(4, 4, 0, 0)),
                               _mm_set1_epi8(0x0F));
    __m128i hi = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(u, _MM_SHUFFLE(2, 2, 2, 2)), _mm_set_epi32(6, 4, 2, 0)),
                               _mm_set1_epi8(3));
    return _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
}

/* Q3_K: quants lo2 + 4*h - 4 with h from hmask (bit 4h+s of hmask[l] for element
 * 128h + 32s + l); taken as unsigned lo2 + 4*h, the -4 returns via the bsums. */
INLINE void q3_K_kernel(int64_t n, const int R, const int C, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    const int64_t nb = n / QK_K;
    const __m512i bit2 = _mm512_set1_epi8(4);
    __m512 acc[4][4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        float ad[4];
        const int16_t *bsums[4];
        _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
            const block_q8_K *y = (const block_q8_K *)(a + (size_t)c * as) + b;
            ad[c] = y->d;
            bsums[c] = y->bsums;
        }
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const block_q3_K *x = (const block_q3_K *)(w + (size_t)r * ws) + b;
            prefetch_ahead(C, x, 128);
            __m512i hm = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)x->hmask));
            __m512i s16 = _mm512_zextsi256_si512(_mm256_cvtepi8_epi16(k3_scales(x->scales)));
            __m512i wq[4], sc[4];
            /* bit 4h+s to bit 2: vector k has s = 2(k%2) below and 2(k%2)+1 above */
            wq[0] = _mm512_ternarylogic_epi64(k2_low_bits(x->qs, 0), _mm512_sllv_epi64(hm, _mm512_set_epi64(1, 1, 1, 1, 2, 2, 2, 2)), bit2, 0xF8);
            wq[1] = _mm512_ternarylogic_epi64(k2_low_bits(x->qs, 1), _mm512_srlv_epi64(hm, _mm512_set_epi64(1, 1, 1, 1, 0, 0, 0, 0)), bit2, 0xF8);
            wq[2] = _mm512_ternarylogic_epi64(k2_low_bits(x->qs, 2), _mm512_srlv_epi64(hm, _mm512_set_epi64(3, 3, 3, 3, 2, 2, 2, 2)), bit2, 0xF8);
            wq[3] = _mm512_ternarylogic_epi64(k2_low_bits(x->qs, 3), _mm512_srlv_epi64(hm, _mm512_set_epi64(5, 5, 5, 5, 4, 4, 4, 4)), bit2, 0xF8);
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++)
                sc[k] = scales16_for(s16, k);
            __m512i neg4 = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16(s16, 2));
            float d = _cvtsh_ss(x->d);
            _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) {
                const int8_t *aq = ((const block_q8_K *)(a + (size_t)c * as) + b)->qs;
                __m512i isum = madd_bsums(neg4, bsums[c]);
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++)
                    isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(wq[k], _mm512_loadu_si512(aq + 64 * k)), sc[k]);
                acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d)),
                                            _mm512_set1_ps(ad[c]), acc[r][c]);
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
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i))));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)));
    }
}

static void dequant_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *x = src;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_si512(dst + i, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(x + i))), 16));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_epi32(dst + i, m, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x + i)), 16));
    }
}

/* 16 unsigned bytes, minus `off`, times d. */
INLINE __m512 bytes_times(__m128i q, int off, float d)
{
    __m512i v = _mm512_sub_epi32(_mm512_cvtepu8_epi32(q), _mm512_set1_epi32(off));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(d));
}

static void dequant_q8_0(const void *src, float *dst, int64_t n)
{
    const block_q8_0 *x = src;
    for (int64_t b = 0; b < n / QK8_0; b++, dst += QK8_0) {
        __m512 d = _mm512_set1_ps(_cvtsh_ss(x[b].d));
        for (int h = 0; h < 2; h++)
            _mm512_storeu_ps(dst + 16 * h, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                _mm_loadu_si128((const __m128i *)(x[b].qs + 16 * h)))), d));
    }
}

static void dequant_q4_0(const void *src, float *dst, int64_t n)
{
    const block_q4_0 *x = src;
    for (int64_t b = 0; b < n / QK4_0; b++, dst += QK4_0) {
        float d = _cvtsh_ss(x[b].d);
        __m128i q = _mm_loadu_si128((const __m128i *)x[b].qs);
        _mm512_storeu_ps(dst, bytes_times(_mm_and_si128(q, _mm_set1_epi8(0x0F)), 8, d));
        _mm512_storeu_ps(dst + 16, bytes_times(_mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F)), 8, d));
    }
}

/* Q4_K/Q5_K: (d*sc)*q - dmin*m per element, as the reference rounds it. */
static void dequant_k4(const int five, const void *src, float *dst, int64_t n)
{
    const size_t bb = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = (const uint8_t *)src + (size_t)b * bb;
        uint16_t dd[2];
        memcpy(dd, blk, 4);
        float d = _cvtsh_ss(dd[0]), dmin = _cvtsh_ss(dd[1]);
        const uint8_t *qs = blk + (five ? 48 : 16), *qh = blk + 16;
        for (int g = 0; g < 8; g++) {
            uint8_t sc, m;
            quant_k4_scale_min(g, blk + 4, &sc, &m);
            __m512 ds = _mm512_set1_ps(d * sc), dm = _mm512_set1_ps(dmin * m);
            for (int h = 0; h < 2; h++) {
                __m128i q = k4_quants16(qs, qh, five, g, h);
                __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q));
                _mm512_storeu_ps(dst + 32 * g + 16 * h, _mm512_sub_ps(_mm512_mul_ps(ds, v), dm));
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
        float d = _cvtsh_ss(x[b].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[b].ql + 64 * h, *qh = x[b].qh + 32 * h;
            for (int s = 0; s < 4; s++)
                for (int half = 0; half < 2; half++) {
                    int j = (128 * h + 32 * s + 16 * half) / 16;
                    _mm512_storeu_ps(dst + 16 * j, bytes_times(q6_quants16(ql, qh, s, half), 32, d * x[b].scales[j]));
                }
        }
    }
}

/* ================= activation quantizers ================= */

static void quantize_q8_0(const float *x, void *dst, int64_t n)
{
    block_q8_0 *y = dst;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / QK8_0; b++, x += QK8_0) {
        __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        __m512 m = _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1));
        float amax = _mm512_reduce_max_ps(m);
        y[b].d = (uint16_t)_cvtss_sh(amax / 127.f, 0);
        __m512 id = _mm512_set1_ps(amax != 0 ? 127.f / amax : 0.f);
        /* cvtps rounds half to even, like the reference */
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
        _mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16), _mm512_cvtsepi32_epi8(q1));
    }
}

static void quantize_q8_1(const float *x, void *dst, int64_t n)
{
    block_q8_1 *y = dst;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / QK8_1; b++, x += QK8_1) {
        __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        __m512 m = _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1));
        float amax = _mm512_reduce_max_ps(m);
        float d = amax / 127.f;
        __m512 id = _mm512_set1_ps(amax != 0 ? 127.f / amax : 0.f);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
        int s = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        y[b].d = (uint16_t)_cvtss_sh(d, 0);
        y[b].s = (uint16_t)_cvtss_sh(d * (float)s, 0);
        _mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16), _mm512_cvtsepi32_epi8(q1));
    }
}

static void quantize_q8_K(const float *x, void *dst, int64_t n)
{
    block_q8_K *y = dst;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        __m512 m = _mm512_setzero_ps();
        for (int i = 0; i < QK_K; i += 16)
            m = _mm512_max_ps(m, _mm512_andnot_ps(sign, _mm512_loadu_ps(x + i)));
        float amax = _mm512_reduce_max_ps(m);
        if (amax == 0) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        /* the signed value of the first element of largest magnitude */
        float max = 0;
        __m512 am = _mm512_set1_ps(amax);
        for (int i = 0; i < QK_K; i += 16) {
            __mmask16 k = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + i)), am, _CMP_EQ_OQ);
            if (k) {
                max = x[i + __builtin_ctz(k)];
                break;
            }
        }
        float iscale = -127.f / max;
        __m512 is = _mm512_set1_ps(iscale);
        for (int i = 0; i < QK_K; i += 16) {
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), is));
            q = _mm512_max_epi32(_mm512_min_epi32(q, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
            _mm_storeu_si128((__m128i *)(y[b].qs + i), _mm512_cvtepi32_epi8(q));
        }
        /* sums of each 16 quants: byte sums of 4 by vpdpbusd, then the 4 lanes of each
         * 128-bit lane added; vector k holds sums 4k..4k+3, one per 128-bit lane */
        __m512i g[4];
        for (int k = 0; k < 4; k++) {
            __m512i t = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1),
                                            _mm512_loadu_si512(y[b].qs + 64 * k));
            t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
            g[k] = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_CDAB));
        }
        /* lane 4j + k holds sum 4k + j: blend, then put them in order */
        __m512i v = _mm512_mask_blend_epi32(0x2222, g[0], g[1]);
        v = _mm512_mask_blend_epi32(0x4444, v, g[2]);
        v = _mm512_mask_blend_epi32(0x8888, v, g[3]);
        v = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), v);
        _mm256_storeu_si256((__m256i *)y[b].bsums, _mm512_cvtepi32_epi16(v));
        y[b].d = 1 / iscale;
    }
}

static void quantize_f16(const float *x, void *dst, int64_t n)
{
    uint16_t *y = dst;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++)
        y[i] = f32_to_f16(x[i]);
}

/* Integer rounding rather than vcvtneps2bf16, which flushes subnormals. */
static void quantize_bf16(const float *x, void *dst, int64_t n)
{
    uint16_t *y = dst;
    int64_t i = 0;
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512(x + i);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
        __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, absmask), inf);
        r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
        _mm256_storeu_si256((__m256i *)(y + i), _mm512_cvtepi32_epi16(r));
    }
    for (; i < n; i++)
        y[i] = f32_to_bf16(x[i]);
}

void quant_avx512_fill(quant_kernels *k)
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
    quant_iq_avx512_fill(k);
}
