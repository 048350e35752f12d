/* quant_unpack.h — 16 quants of a K-quant block as bytes in an SSE register, for the
 * AVX2 and AVX-512 dequantizers, which differ only in how wide they convert and store.
 * Include only from files compiled for those instruction sets. */
#ifndef LLMFS_QUANT_UNPACK_H
#define LLMFS_QUANT_UNPACK_H

#include <immintrin.h>
#include <stdint.h>

/* Q4_K/Q5_K: elements 32g + 16h .. +15 of a block (sub-block g is the low nibbles of
 * qs[32(g/2)..] for even g, the high ones for odd g; Q5_K adds bit g of qh as bit 4). */
static inline __m128i k4_quants16(const uint8_t *qs, const uint8_t *qh, int five, int g, int h)
{
    __m128i q = _mm_loadu_si128((const __m128i *)(qs + 32 * (g / 2) + 16 * h));
    q = _mm_and_si128(g & 1 ? _mm_srli_epi16(q, 4) : q, _mm_set1_epi8(0x0F));
    if (five) {
        __m128i hb = _mm_loadu_si128((const __m128i *)(qh + 16 * h));
        __m128i bit = _mm_set1_epi8((char)(1 << g));
        q = _mm_or_si128(q, _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(hb, bit), bit), _mm_set1_epi8(0x10)));
    }
    return q;
}

/* Q6_K: elements 32s + 16half .. +15 of a 128-element half (ql, qh its 64 and 32 bytes),
 * unsigned 0..63: the nibble of ql below 2 bits of qh. */
static inline __m128i q6_quants16(const uint8_t *ql, const uint8_t *qh, int s, int half)
{
    __m128i lo = _mm_loadu_si128((const __m128i *)(ql + 32 * (s & 1) + 16 * half));
    lo = _mm_and_si128(s & 2 ? _mm_srli_epi16(lo, 4) : lo, _mm_set1_epi8(0x0F));
    __m128i hi = _mm_loadu_si128((const __m128i *)(qh + 16 * half));
    hi = _mm_and_si128(_mm_srl_epi16(hi, _mm_cvtsi32_si128(2 * s)), _mm_set1_epi8(3));
    return _mm_or_si128(lo, _mm_slli_epi16(hi, 4));
}

#endif
