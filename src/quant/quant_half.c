/* quant_half.c — IEEE half (f16) and bfloat16 conversions, portable bit arithmetic. */
#include "quant.h"

#include <string.h>

static inline uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f)
        return float_of(sign | 0x7f800000 | (m << 13));
    if (e == 0) {
        /* zero or subnormal: m units of 2^-24, exact in float */
        float f = (float)m * 0x1p-24f;
        return sign ? -f : f;
    }
    return float_of(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t f32_to_f16(float f)
{
    uint32_t x = bits_of(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) /* inf, or nan kept quiet with its top payload bits */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 | ((ax >> 13) & 0x3ff) : 0));
    if (ax >= 0x477ff000) /* 65520 and up round to inf (65504 is odd, the tie goes up) */
        return (uint16_t)(sign | 0x7c00);
    if (ax >= 0x38800000) { /* normal half: round the 13 dropped bits to even, rebias */
        uint32_t r = ax + 0xfff + ((ax >> 13) & 1);
        return (uint16_t)(sign | ((r - 0x38000000) >> 13));
    }
    if (ax <= 0x33000000) /* at most 2^-25: rounds to zero (the tie goes to even 0) */
        return (uint16_t)sign;
    /* subnormal half: the value in units of 2^-24, rounded to even; a carry into
     * 0x400 is the smallest normal, which is the right encoding */
    uint32_t mant = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - (ax >> 23);
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return (uint16_t)(sign | q);
}

float bf16_to_f32(uint16_t h)
{
    return float_of((uint32_t)h << 16);
}

uint16_t f32_to_bf16(float f)
{
    uint32_t x = bits_of(f);
    if ((x & 0x7fffffff) > 0x7f800000) /* nan: truncate, but keep it a (quiet) nan */
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}
