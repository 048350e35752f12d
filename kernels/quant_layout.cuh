/* quant_layout.cuh — GGUF weight blocks as the CUDA kernels read them.
 *
 * Device layout. A GGUF block mixes scales and quants at odd offsets (a Q4_0 block is
 * 18 bytes), so 16-byte loads of its quants would be misaligned. At upload each
 * tensor's blocks are split into up to three segments, and each segment of every block
 * is stored in its own region: Q4_0 becomes all blocks' 16 quant bytes, then all their
 * f16 scales. Segment s of block g is at region s + g * seg_bytes[s]; regions start on
 * 256-byte boundaries. Q4_K and Q5_K blocks are already 16-byte multiples and stay
 * whole; float types stay as they are.
 *
 * Decoding. Every quantized type is read in 32-element groups, each as 32 small
 * integers packed into 8 ints (element i in byte i) and, per 16-element half h, a
 * scale s[h] and offset m[h]: w[i] = s[i/16] * q[i] + m[i/16]. That one form serves
 * the dequantizer (get_rows, f16 tiles for cuBLAS) and the dp4a dot product against
 * activations in 8-bit blocks of 32 (scale d, and d times the sum of each half).
 * A thread loads a "unit" of U groups at once — groups that share loaded bytes, e.g.
 * the low and high nibbles of the same Q4_K bytes — and decodes them one by one.
 *
 * All of this compiles for the host too, so the unit tests check it against the
 * reference dequantizer without a GPU.
 */
#ifndef LLMFS_QUANT_LAYOUT_CUH
#define LLMFS_QUANT_LAYOUT_CUH

#include <stdint.h>
#include <string.h>

extern "C" {
#include "quant.h"
}
#include "quant_grids.h"

#define HD __host__ __device__ __forceinline__

/* ---- block geometry (GGUF's) ---- */

HD int cq_block_elems(int type)
{
    switch (type) {
    case T_F32: case T_F16: case T_BF16: return 1;
    case T_Q4_0: case T_Q4_1: case T_Q5_0: case T_Q5_1: case T_Q8_0: return 32;
    case T_IQ4_NL: case T_MXFP4: return 32;
    case T_Q2_K: case T_Q3_K: case T_Q4_K: case T_Q5_K: case T_Q6_K: return 256;
    case T_IQ4_XS: case T_TQ1_0: case T_TQ2_0: case T_IQ3_XXS: case T_IQ3_S: case T_IQ2_XXS:
    case T_IQ2_XS: case T_IQ2_S: case T_IQ1_S: case T_IQ1_M: return 256;
    default: return 0;
    }
}

HD int cq_block_bytes(int type)
{
    switch (type) {
    case T_F32: return 4;
    case T_F16: case T_BF16: return 2;
    case T_Q4_0: return 18;
    case T_Q4_1: return 20;
    case T_Q5_0: return 22;
    case T_Q5_1: return 24;
    case T_Q8_0: return 34;
    case T_Q2_K: return 84;
    case T_Q3_K: return 110;
    case T_Q4_K: return 144;
    case T_Q5_K: return 176;
    case T_Q6_K: return 210;
    case T_IQ4_NL: return 18;
    case T_MXFP4: return 17;
    case T_IQ4_XS: return 136;
    case T_TQ1_0: return 54;
    case T_TQ2_0: return 66;
    case T_IQ3_XXS: return 98;
    case T_IQ3_S: return 110;
    case T_IQ2_XXS: return 66;
    case T_IQ2_XS: return 74;
    case T_IQ2_S: return 82;
    case T_IQ1_S: return 50;
    case T_IQ1_M: return 56;
    default: return 0;
    }
}

HD bool cq_is_float(int type) { return type == T_F32 || type == T_F16 || type == T_BF16; }

/* ---- segments ---- */

struct cq_piece { int src, len; };
struct cq_seg_def {
    int nseg;
    int bytes[3];
    cq_piece piece[3][2]; /* up to two source ranges per segment, in order */
};

static inline cq_seg_def cq_segments(int type)
{
    cq_seg_def d;
    memset(&d, 0, sizeof d);
    switch (type) {
    case T_Q4_0: d = {2, {16, 2, 0}, {{{2, 16}}, {{0, 2}}, {}}}; break;
    case T_Q4_1: d = {2, {16, 4, 0}, {{{4, 16}}, {{0, 4}}, {}}}; break;
    case T_Q5_0: d = {3, {16, 4, 2}, {{{6, 16}}, {{2, 4}}, {{0, 2}}}}; break;
    case T_Q5_1: d = {2, {16, 8, 0}, {{{8, 16}}, {{4, 4}, {0, 4}}, {}}}; break; /* qh | d m */
    case T_Q8_0: d = {2, {32, 2, 0}, {{{2, 32}}, {{0, 2}}, {}}}; break;
    case T_Q2_K: d = {2, {80, 4, 0}, {{{0, 80}}, {{80, 4}}, {}}}; break;
    case T_Q3_K: d = {3, {96, 12, 2}, {{{0, 96}}, {{96, 12}}, {{108, 2}}}}; break;
    case T_Q4_K: d = {1, {144, 0, 0}, {{{0, 144}}, {}, {}}}; break;
    case T_Q5_K: d = {1, {176, 0, 0}, {{{0, 176}}, {}, {}}}; break;
    case T_Q6_K: d = {2, {208, 2, 0}, {{{0, 208}}, {{208, 2}}, {}}}; break;
    /* IQ4_NL as Q4_0; MXFP4's one exponent byte is a segment of its own */
    case T_IQ4_NL: d = {2, {16, 2, 0}, {{{2, 16}}, {{0, 2}}, {}}}; break;
    case T_MXFP4: d = {2, {16, 1, 0}, {{{1, 16}}, {{0, 1}}, {}}}; break;
    case T_IQ4_XS: d = {2, {128, 8, 0}, {{{8, 128}}, {{0, 8}}, {}}}; break;       /* qs | d scales */
    case T_TQ1_0: d = {3, {48, 4, 2}, {{{0, 48}}, {{48, 4}}, {{52, 2}}}}; break;
    case T_TQ2_0: d = {2, {64, 2, 0}, {{{0, 64}}, {{64, 2}}, {}}}; break;
    case T_IQ3_XXS: d = {2, {96, 2, 0}, {{{2, 96}}, {{0, 2}}, {}}}; break;
    case T_IQ3_S: d = {3, {96, 12, 2}, {{{2, 64}, {74, 32}}, {{66, 8}, {106, 4}}, {{0, 2}}}}; break; /* qs signs | qh scales | d */
    case T_IQ2_XXS: d = {2, {64, 2, 0}, {{{2, 64}}, {{0, 2}}, {}}}; break;
    case T_IQ2_XS: d = {3, {64, 8, 2}, {{{2, 64}}, {{66, 8}}, {{0, 2}}}}; break;
    case T_IQ2_S: d = {3, {64, 16, 2}, {{{2, 64}}, {{66, 16}}, {{0, 2}}}}; break;
    case T_IQ1_S: d = {2, {48, 2, 0}, {{{2, 48}}, {{0, 2}}, {}}}; break;  /* qs qh | d */
    case T_IQ1_M: d = {1, {56, 0, 0}, {{{0, 56}}, {}, {}}}; break;        /* no d: whole */
    case T_F32: d = {1, {4, 0, 0}, {{{0, 4}}, {}, {}}}; break;
    case T_F16: case T_BF16: d = {1, {2, 0, 0}, {{{0, 2}}, {}, {}}}; break;
    default: break;
    }
    return d;
}

static inline int64_t cq_align256(int64_t x) { return (x + 255) & ~(int64_t)255; }

/* Region offsets for nblk blocks; returns the total bytes (0 for an unknown type). */
static inline int64_t cq_regions(int type, int64_t nblk, int64_t off[3])
{
    cq_seg_def d = cq_segments(type);
    if (d.nseg == 0)
        return 0;
    int64_t o = 0;
    for (int s = 0; s < 3; s++) {
        off[s] = o;
        if (s < d.nseg)
            o = cq_align256(o + nblk * d.bytes[s]);
    }
    return o;
}

/* Segment s of the GGUF blocks [g0, g1) at src (the whole tensor's blocks), packed into
 * dst: (g1 - g0) * d.bytes[s] bytes. load_weight stages a tensor through this, a piece
 * of a segment at a time. */
static inline void cq_pack_segment(const cq_seg_def &d, int bb, const void *src, int s, int64_t g0, int64_t g1,
                                   void *dst)
{
    char *o = (char *)dst;
    if (d.nseg == 1 && d.bytes[0] == bb) { /* stored whole */
        memcpy(o, (const char *)src + g0 * bb, (size_t)((g1 - g0) * bb));
        return;
    }
    for (int64_t g = g0; g < g1; g++) {
        const char *blk = (const char *)src + g * bb;
        for (int p = 0; p < 2 && d.piece[s][p].len; p++) {
            memcpy(o, blk + d.piece[s][p].src, (size_t)d.piece[s][p].len);
            o += d.piece[s][p].len;
        }
    }
}

/* GGUF blocks [nblk] at src -> device layout at dst (cq_regions bytes), each segment in
 * pieces of `piece` blocks as load_weight stages them (any piece > 0 gives the same). */
static inline void cq_repack(int type, const void *src, int64_t nblk, void *dst, int64_t piece)
{
    const cq_seg_def d = cq_segments(type);
    const int bb = cq_block_bytes(type);
    int64_t off[3];
    const int64_t total = cq_regions(type, nblk, off);
    memset(dst, 0, (size_t)total);
    for (int s = 0; s < d.nseg; s++)
        for (int64_t g = 0; g < nblk; g += piece)
            cq_pack_segment(d, bb, src, s, g, g + piece < nblk ? g + piece : nblk,
                            (char *)dst + off[s] + g * d.bytes[s]);
}

/* Where a tensor's segments start on the device. */
struct cq_seg {
    const uint8_t *s0, *s1, *s2;
};

static inline cq_seg cq_seg_of(int type, const void *base, int64_t nblk)
{
    int64_t off[3] = {0, 0, 0};
    cq_regions(type, nblk, off);
    const uint8_t *b = (const uint8_t *)base;
    cq_seg s = {b + off[0], b + off[1], b + off[2]};
    return s;
}

/* ---- loads and integer tricks, host and device ---- */

#ifndef __CUDA_ARCH__
/* On the device a load off its natural alignment faults (misaligned address) and takes
 * the whole context with it. The host builds of the loads count such addresses instead
 * (relative to the 16-byte alignment of malloc and cudaMalloc), so the unit tests of the
 * layout catch them without a GPU. Defined in host_check.cu. */
extern long cq_host_misaligned;
#ifdef CUDASIM /* the simulated device faults as the real one does */
#define CQ_HOST_ALIGN_CHECK(p, n) (cusim_check_align((p), (n)), cq_host_misaligned += ((uintptr_t)(p) & ((n)-1)) != 0)
#else
#define CQ_HOST_ALIGN_CHECK(p, n) (cq_host_misaligned += ((uintptr_t)(p) & ((n)-1)) != 0)
#endif
#endif

HD int4 ld16(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return __ldg((const int4 *)p);
#else
    int4 v;
    CQ_HOST_ALIGN_CHECK(p, 16);
    memcpy(&v, p, 16);
    return v;
#endif
}
HD int ld4(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return __ldg((const int *)p);
#else
    int v;
    CQ_HOST_ALIGN_CHECK(p, 4);
    memcpy(&v, p, 4);
    return v;
#endif
}
HD uint16_t ld2(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return __ldg((const unsigned short *)p);
#else
    uint16_t v;
    CQ_HOST_ALIGN_CHECK(p, 2);
    memcpy(&v, p, 2);
    return v;
#endif
}

HD uint8_t ld1(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return __ldg(p);
#else
    return *p;
#endif
}

HD float cq_h2f(uint16_t h)
{
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half(h));
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

HD float cq_bf2f(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float f;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

HD int dp4a(int a, int b, int c)
{
#ifdef __CUDA_ARCH__
    return __dp4a(a, b, c);
#else
    for (int i = 0; i < 4; i++)
        c += (int)(int8_t)(a >> 8 * i) * (int)(int8_t)(b >> 8 * i);
    return c;
#endif
}

/* per-byte a - b, each byte wrapping on its own */
HD int vsub4(int a, int b)
{
#ifdef __CUDA_ARCH__
    return (int)__vsub4((unsigned)a, (unsigned)b);
#else
    uint32_t r = 0;
    for (int i = 0; i < 4; i++)
        r |= (uint32_t)(uint8_t)((uint8_t)(a >> 8 * i) - (uint8_t)(b >> 8 * i)) << 8 * i;
    return (int)r;
#endif
}

/* byte b of the little-endian words w0..w3 (b < 16, any value at run time) */
HD uint32_t byte_of(int w0, int w1, int w2, int w3, int b)
{
    int w = b < 8 ? (b < 4 ? w0 : w1) : (b < 12 ? w2 : w3);
    return ((uint32_t)w >> 8 * (b & 3)) & 0xff;
}

/* four bits b0..b3 -> bit 4 of bytes 0..3 */
HD int spread4_bit4(uint32_t b)
{
    return (int)(((b & 1) | (b & 2) << 7 | (b & 4) << 14 | (b & 8) << 21) << 4);
}

HD int i4x(const int4 &v, int k) { return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w; }

/* ---- per-type unit decoders ----
 * UPB units per block, U groups per unit, GPB groups per block (UPB * U == GPB).
 * load(r, seg, blk, unit); group(unit, u) = index in the block of the unit's u-th
 * group; decode(r, unit, u, q, s, m). */

struct cq_group {
    int q[8];   /* 32 signed bytes */
    float s[2]; /* scale per 16-element half */
    float m[2]; /* offset per half */
};

template <int T> struct cq;

template <> struct cq<T_Q4_0> {
    enum { QK = 32, GPB = 1, U = 1, UPB = 1 };
    struct R { int4 qs; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int) { r.qs = ld16(L.s0 + blk * 16); r.d = ld2(L.s1 + blk * 2); }
    static HD int group(int, int) { return 0; }
    static HD void decode(const R &r, int, int, cq_group &g)
    {
        for (int k = 0; k < 4; k++) {
            g.q[k] = i4x(r.qs, k) & 0x0f0f0f0f;
            g.q[k + 4] = (i4x(r.qs, k) >> 4) & 0x0f0f0f0f;
        }
        float d = cq_h2f(r.d);
        g.s[0] = g.s[1] = d;
        g.m[0] = g.m[1] = -8.0f * d;
    }
};

template <> struct cq<T_Q4_1> {
    enum { QK = 32, GPB = 1, U = 1, UPB = 1 };
    struct R { int4 qs; int dm; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int) { r.qs = ld16(L.s0 + blk * 16); r.dm = ld4(L.s1 + blk * 4); }
    static HD int group(int, int) { return 0; }
    static HD void decode(const R &r, int, int, cq_group &g)
    {
        for (int k = 0; k < 4; k++) {
            g.q[k] = i4x(r.qs, k) & 0x0f0f0f0f;
            g.q[k + 4] = (i4x(r.qs, k) >> 4) & 0x0f0f0f0f;
        }
        g.s[0] = g.s[1] = cq_h2f((uint16_t)(r.dm & 0xffff));
        g.m[0] = g.m[1] = cq_h2f((uint16_t)((uint32_t)r.dm >> 16));
    }
};

template <> struct cq<T_Q5_0> {
    enum { QK = 32, GPB = 1, U = 1, UPB = 1 };
    struct R { int4 qs; int qh; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int)
    {
        r.qs = ld16(L.s0 + blk * 16);
        r.qh = ld4(L.s1 + blk * 4);
        r.d = ld2(L.s2 + blk * 2);
    }
    static HD int group(int, int) { return 0; }
    static HD void decode(const R &r, int, int, cq_group &g)
    {
        uint32_t qh = (uint32_t)r.qh;
        for (int k = 0; k < 4; k++) {
            g.q[k] = (i4x(r.qs, k) & 0x0f0f0f0f) | spread4_bit4(qh >> 4 * k & 0xf);
            g.q[k + 4] = (i4x(r.qs, k) >> 4 & 0x0f0f0f0f) | spread4_bit4(qh >> (16 + 4 * k) & 0xf);
        }
        float d = cq_h2f(r.d);
        g.s[0] = g.s[1] = d;
        g.m[0] = g.m[1] = -16.0f * d;
    }
};

template <> struct cq<T_Q5_1> {
    enum { QK = 32, GPB = 1, U = 1, UPB = 1 };
    struct R { int4 qs; int qh, dm; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int)
    {
        r.qs = ld16(L.s0 + blk * 16);
        r.qh = ld4(L.s1 + blk * 8);
        r.dm = ld4(L.s1 + blk * 8 + 4);
    }
    static HD int group(int, int) { return 0; }
    static HD void decode(const R &r, int, int, cq_group &g)
    {
        uint32_t qh = (uint32_t)r.qh;
        for (int k = 0; k < 4; k++) {
            g.q[k] = (i4x(r.qs, k) & 0x0f0f0f0f) | spread4_bit4(qh >> 4 * k & 0xf);
            g.q[k + 4] = (i4x(r.qs, k) >> 4 & 0x0f0f0f0f) | spread4_bit4(qh >> (16 + 4 * k) & 0xf);
        }
        g.s[0] = g.s[1] = cq_h2f((uint16_t)(r.dm & 0xffff));
        g.m[0] = g.m[1] = cq_h2f((uint16_t)((uint32_t)r.dm >> 16));
    }
};

template <> struct cq<T_Q8_0> {
    enum { QK = 32, GPB = 1, U = 1, UPB = 1 };
    struct R { int4 a, b; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int)
    {
        r.a = ld16(L.s0 + blk * 32);
        r.b = ld16(L.s0 + blk * 32 + 16);
        r.d = ld2(L.s1 + blk * 2);
    }
    static HD int group(int, int) { return 0; }
    static HD void decode(const R &r, int, int, cq_group &g)
    {
        for (int k = 0; k < 4; k++) {
            g.q[k] = i4x(r.a, k);
            g.q[k + 4] = i4x(r.b, k);
        }
        g.s[0] = g.s[1] = cq_h2f(r.d);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* Q2_K: 256 = 2 halves of 128; half h's 32 quant bytes hold its 4 groups at shifts
 * 0,2,4,6. 16 scale bytes: low nibble scale, high nibble min, one per 16 elements. */
template <> struct cq<T_Q2_K> {
    enum { QK = 256, GPB = 8, U = 4, UPB = 2 };
    struct R { int4 sc, qa, qb; int dm; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        const uint8_t *b = L.s0 + blk * 80;
        r.sc = ld16(b);
        r.qa = ld16(b + 16 + unit * 32);
        r.qb = ld16(b + 32 + unit * 32);
        r.dm = ld4(L.s1 + blk * 4);
    }
    static HD int group(int unit, int u) { return unit * 4 + u; }
    static HD void decode(const R &r, int unit, int u, cq_group &g)
    {
        for (int k = 0; k < 4; k++) {
            g.q[k] = i4x(r.qa, k) >> 2 * u & 0x03030303;
            g.q[k + 4] = i4x(r.qb, k) >> 2 * u & 0x03030303;
        }
        float d = cq_h2f((uint16_t)(r.dm & 0xffff)), dmin = cq_h2f((uint16_t)((uint32_t)r.dm >> 16));
        for (int h = 0; h < 2; h++) {
            uint32_t sc = byte_of(r.sc.x, r.sc.y, r.sc.z, r.sc.w, unit * 8 + 2 * u + h);
            g.s[h] = d * (float)(sc & 15);
            g.m[h] = -dmin * (float)(sc >> 4);
        }
    }
};

/* Q3_K: like Q2_K plus one high bit per element in hmask (bit h*4+jj of byte l; a
 * clear bit subtracts 4) and 16 six-bit scales biased by 32 packed into 12 bytes. */
template <> struct cq<T_Q3_K> {
    enum { QK = 256, GPB = 8, U = 4, UPB = 2 };
    struct R { int4 ha, hb, qa, qb; int s0, s1, s2; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        const uint8_t *b = L.s0 + blk * 96;
        r.ha = ld16(b);
        r.hb = ld16(b + 16);
        r.qa = ld16(b + 32 + unit * 32);
        r.qb = ld16(b + 48 + unit * 32);
        const uint8_t *s = L.s1 + blk * 12;
        r.s0 = ld4(s);
        r.s1 = ld4(s + 4);
        r.s2 = ld4(s + 8);
        r.d = ld2(L.s2 + blk * 2);
    }
    static HD int group(int unit, int u) { return unit * 4 + u; }
    static HD int scale(const R &r, int i)
    {
        uint32_t lo = i < 8 ? byte_of(r.s0, r.s1, r.s2, 0, i) & 15 : byte_of(r.s0, r.s1, r.s2, 0, i - 8) >> 4;
        uint32_t hi = byte_of(r.s0, r.s1, r.s2, 0, 8 + (i & 3)) >> 2 * (i >> 2) & 3;
        return (int)(lo | hi << 4) - 32;
    }
    static HD void decode(const R &r, int unit, int u, cq_group &g)
    {
        const int bit = unit * 4 + u;
        for (int k = 0; k < 4; k++) {
            int q = i4x(r.qa, k) >> 2 * u & 0x03030303;
            int h = i4x(r.ha, k) >> bit & 0x01010101;
            g.q[k] = vsub4(q, (h ^ 0x01010101) << 2);
            q = i4x(r.qb, k) >> 2 * u & 0x03030303;
            h = i4x(r.hb, k) >> bit & 0x01010101;
            g.q[k + 4] = vsub4(q, (h ^ 0x01010101) << 2);
        }
        float d = cq_h2f(r.d);
        for (int h = 0; h < 2; h++) {
            g.s[h] = d * (float)scale(r, unit * 8 + 2 * u + h);
            g.m[h] = 0.0f;
        }
    }
};

/* Q4_K/Q5_K: scale and min j (0..7) from the 12 packed bytes: 6 bits each. */
HD void k4_scale_min(const int4 &hdr, int j, int &sc, int &mn)
{
    /* scale byte b is header byte 4 + b */
#define SB(b) byte_of(hdr.x, hdr.y, hdr.z, hdr.w, 4 + (b))
    if (j < 4) {
        sc = (int)(SB(j) & 63);
        mn = (int)(SB(j + 4) & 63);
    } else {
        sc = (int)((SB(j + 4) & 15) | (SB(j - 4) >> 6) << 4);
        mn = (int)((SB(j + 4) >> 4) | (SB(j) >> 6) << 4);
    }
#undef SB
}

/* Q4_K: 4 pairs of groups; pair p's 32 bytes hold group 2p (low nibbles) and 2p+1. */
template <> struct cq<T_Q4_K> {
    enum { QK = 256, GPB = 8, U = 2, UPB = 4 };
    struct R { int4 hdr, qa, qb; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        const uint8_t *b = L.s0 + blk * 144;
        r.hdr = ld16(b);
        r.qa = ld16(b + 16 + unit * 32);
        r.qb = ld16(b + 32 + unit * 32);
    }
    static HD int group(int unit, int u) { return unit * 2 + u; }
    static HD void decode(const R &r, int unit, int u, cq_group &g)
    {
        for (int k = 0; k < 4; k++) {
            g.q[k] = i4x(r.qa, k) >> 4 * u & 0x0f0f0f0f;
            g.q[k + 4] = i4x(r.qb, k) >> 4 * u & 0x0f0f0f0f;
        }
        int sc, mn;
        k4_scale_min(r.hdr, unit * 2 + u, sc, mn);
        float d = cq_h2f((uint16_t)(r.hdr.x & 0xffff)), dmin = cq_h2f((uint16_t)((uint32_t)r.hdr.x >> 16));
        g.s[0] = g.s[1] = d * (float)sc;
        g.m[0] = g.m[1] = -dmin * (float)mn;
    }
};

/* Q5_K: Q4_K plus a fifth bit per element: bit j of qh byte l for group j. */
template <> struct cq<T_Q5_K> {
    enum { QK = 256, GPB = 8, U = 2, UPB = 4 };
    struct R { int4 hdr, ha, hb, qa, qb; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        const uint8_t *b = L.s0 + blk * 176;
        r.hdr = ld16(b);
        r.ha = ld16(b + 16);
        r.hb = ld16(b + 32);
        r.qa = ld16(b + 48 + unit * 32);
        r.qb = ld16(b + 64 + unit * 32);
    }
    static HD int group(int unit, int u) { return unit * 2 + u; }
    static HD void decode(const R &r, int unit, int u, cq_group &g)
    {
        const int j = unit * 2 + u;
        for (int k = 0; k < 4; k++) {
            g.q[k] = (i4x(r.qa, k) >> 4 * u & 0x0f0f0f0f) | (i4x(r.ha, k) >> j & 0x01010101) << 4;
            g.q[k + 4] = (i4x(r.qb, k) >> 4 * u & 0x0f0f0f0f) | (i4x(r.hb, k) >> j & 0x01010101) << 4;
        }
        int sc, mn;
        k4_scale_min(r.hdr, j, sc, mn);
        float d = cq_h2f((uint16_t)(r.hdr.x & 0xffff)), dmin = cq_h2f((uint16_t)((uint32_t)r.hdr.x >> 16));
        g.s[0] = g.s[1] = d * (float)sc;
        g.m[0] = g.m[1] = -dmin * (float)mn;
    }
};

/* Q6_K: halves of 128; in half h, groups t = 0..3 take low nibbles of ql[h*64 + (t&1)*32
 * + l] for t < 2, high nibbles for t >= 2, and bits 2t..2t+1 of qh[h*32 + l]; values
 * are biased by 32; signed 8-bit scales per 16 elements. A unit is groups (t, t+2) of a
 * half, which share their ql and qh bytes. */
template <> struct cq<T_Q6_K> {
    enum { QK = 256, GPB = 8, U = 2, UPB = 4 };
    struct R { int4 la, lb, ha, hb, sc; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        const uint8_t *b = L.s0 + blk * 208;
        const int h = unit >> 1, tt = unit & 1;
        r.la = ld16(b + h * 64 + tt * 32);
        r.lb = ld16(b + h * 64 + tt * 32 + 16);
        r.ha = ld16(b + 128 + h * 32);
        r.hb = ld16(b + 128 + h * 32 + 16);
        r.sc = ld16(b + 192);
        r.d = ld2(L.s1 + blk * 2);
    }
    static HD int group(int unit, int u) { return (unit >> 1) * 4 + (unit & 1) + 2 * u; }
    static HD void decode(const R &r, int unit, int u, cq_group &g)
    {
        const int h = unit >> 1, t = (unit & 1) + 2 * u;
        for (int k = 0; k < 4; k++) {
            int q = (i4x(r.la, k) >> 4 * u & 0x0f0f0f0f) | (i4x(r.ha, k) >> 2 * t & 0x03030303) << 4;
            g.q[k] = vsub4(q, 0x20202020);
            q = (i4x(r.lb, k) >> 4 * u & 0x0f0f0f0f) | (i4x(r.hb, k) >> 2 * t & 0x03030303) << 4;
            g.q[k + 4] = vsub4(q, 0x20202020);
        }
        float d = cq_h2f(r.d);
        for (int hh = 0; hh < 2; hh++) {
            int8_t sc = (int8_t)byte_of(r.sc.x, r.sc.y, r.sc.z, r.sc.w, h * 8 + 2 * t + hh);
            g.s[hh] = d * (float)sc;
            g.m[hh] = 0.0f;
        }
    }
};

/* ---- the IQ, TQ and MXFP4 types ----
 * Every one decodes to the same group form: the 4-bit codes of IQ4_NL/IQ4_XS/MXFP4
 * through their 16-entry tables; the grid types to signed grid values times an odd
 * integer scale folded into s; IQ1's ±1/8 offsets as 8 x grid ± 1 with s / 8, so no
 * offset term is needed (m = 0 throughout). The tables of quant_grids.h live twice: in
 * device memory for the kernels and on the host for the host builds the unit tests
 * run. */

#define CQ_TABLES(X)                                                    \
    X(int8_t, iq4nl, 16, QUANT_IQ4NL_VALUES)                            \
    X(int8_t, mxfp4, 16, QUANT_MXFP4_VALUES)                            \
    X(uint16_t, iq2xxs, QUANT_GRID_IQ2XXS_N, {QUANT_GRID_IQ2XXS})       \
    X(uint16_t, iq2xs, QUANT_GRID_IQ2XS_N, {QUANT_GRID_IQ2XS})          \
    X(uint16_t, iq2s, QUANT_GRID_IQ2S_N, {QUANT_GRID_IQ2S})             \
    X(uint16_t, iq3xxs, QUANT_GRID_IQ3XXS_N, {QUANT_GRID_IQ3XXS})       \
    X(uint16_t, iq3s, QUANT_GRID_IQ3S_N, {QUANT_GRID_IQ3S})             \
    X(uint16_t, iq1s, QUANT_GRID_IQ1S_N, {QUANT_GRID_IQ1S})
#define CQ_TABLE_DEF(type, name, n, init)                               \
    static const __device__ type cq_tab_##name##_dev[n] = init;         \
    static const type cq_tab_##name##_host[n] = init;
CQ_TABLES(CQ_TABLE_DEF)
#undef CQ_TABLE_DEF
#ifdef __CUDA_ARCH__
#define CQ_TAB(name, i) cq_tab_##name##_dev[i]
#else
#define CQ_TAB(name, i) cq_tab_##name##_host[i]
#endif

/* four 4-bit codes (one per byte) -> four table values */
HD int cq_nl4(bool mx, uint32_t codes)
{
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        int c = (int)(codes >> 8 * i) & 15;
        r |= (uint32_t)(uint8_t)(mx ? CQ_TAB(mxfp4, c) : CQ_TAB(iq4nl, c)) << 8 * i;
    }
    return (int)r;
}

HD float cq_e8m0_half(uint8_t e)
{
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float f;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

/* Four elements of a packed grid entry (level indices, `bits` each, lowest first) as
 * bytes: IQ2's levels {8, 25, 43}, IQ3_XXS's {4, 12, ..., 52, 62}, IQ3_S's 2k + 1. */
HD int cq_iq2_4(uint32_t p)
{
    uint32_t r = 0;
    for (int j = 0; j < 4; j++) {
        uint32_t k = p >> 2 * j & 3;
        r |= (8 + 17 * k + (k >> 1)) << 8 * j;
    }
    return (int)r;
}
HD int cq_iq3xxs_4(uint32_t p)
{
    uint32_t r = 0;
    for (int j = 0; j < 4; j++) {
        uint32_t k = p >> 3 * j & 7;
        r |= (4 + 8 * k + 2 * ((k + 1) >> 3)) << 8 * j;
    }
    return (int)r;
}
HD int cq_iq3s_4(uint32_t p)
{
    uint32_t r = 0;
    for (int j = 0; j < 4; j++)
        r |= (2 * (p >> 3 * j & 7) + 1) << 8 * j;
    return (int)r;
}
/* IQ1: levels {-1, 0, 1} as 8 x level + delta */
HD int cq_iq1_4(uint32_t p, int delta)
{
    uint32_t r = 0;
    for (int j = 0; j < 4; j++)
        r |= (uint32_t)(uint8_t)(8 * ((int)(p >> 2 * j & 3) - 1) + delta) << 8 * j;
    return (int)r;
}

/* bytes of mag negated where bit j of bits (j < 4) is set */
HD int cq_signs4(int mag, uint32_t bits)
{
    uint32_t m = (bits & 1 ? 0xffu : 0) | (bits & 2 ? 0xff00u : 0) | (bits & 4 ? 0xff0000u : 0) |
                 (bits & 8 ? 0xff000000u : 0);
    return vsub4(mag ^ (int)m, (int)m);
}

/* a 7-bit sign index and its parity bit, the eighth sign */
HD uint32_t cq_parity_signs(uint32_t k)
{
    uint32_t p = k ^ k >> 4;
    p ^= p >> 2;
    p ^= p >> 1;
    return k | (p & 1) << 7;
}

template <> struct cq<T_IQ4_NL> {
    enum { QK = 32, GPB = 1, U = 1, UPB = 1 };
    struct R { int4 qs; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int) { r.qs = ld16(L.s0 + blk * 16); r.d = ld2(L.s1 + blk * 2); }
    static HD int group(int, int) { return 0; }
    static HD void decode(const R &r, int, int, cq_group &g)
    {
        for (int k = 0; k < 4; k++) {
            g.q[k] = cq_nl4(false, (uint32_t)i4x(r.qs, k) & 0x0f0f0f0f);
            g.q[k + 4] = cq_nl4(false, (uint32_t)i4x(r.qs, k) >> 4 & 0x0f0f0f0f);
        }
        g.s[0] = g.s[1] = cq_h2f(r.d);
        g.m[0] = g.m[1] = 0.0f;
    }
};

template <> struct cq<T_MXFP4> {
    enum { QK = 32, GPB = 1, U = 1, UPB = 1 };
    struct R { int4 qs; uint8_t e; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int) { r.qs = ld16(L.s0 + blk * 16); r.e = ld1(L.s1 + blk); }
    static HD int group(int, int) { return 0; }
    static HD void decode(const R &r, int, int, cq_group &g)
    {
        for (int k = 0; k < 4; k++) {
            g.q[k] = cq_nl4(true, (uint32_t)i4x(r.qs, k) & 0x0f0f0f0f);
            g.q[k + 4] = cq_nl4(true, (uint32_t)i4x(r.qs, k) >> 4 & 0x0f0f0f0f);
        }
        g.s[0] = g.s[1] = cq_e8m0_half(r.e);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* IQ4_XS: group ib is 16 bytes of IQ4_NL-ordered codes; the head holds d, scales_h and
 * the four scales_l bytes. */
template <> struct cq<T_IQ4_XS> {
    enum { QK = 256, GPB = 8, U = 1, UPB = 8 };
    struct R { int4 qs; int h0, h1; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        r.qs = ld16(L.s0 + blk * 128 + unit * 16);
        r.h0 = ld4(L.s1 + blk * 8);
        r.h1 = ld4(L.s1 + blk * 8 + 4);
    }
    static HD int group(int unit, int) { return unit; }
    static HD void decode(const R &r, int ib, int, cq_group &g)
    {
        for (int k = 0; k < 4; k++) {
            g.q[k] = cq_nl4(false, (uint32_t)i4x(r.qs, k) & 0x0f0f0f0f);
            g.q[k + 4] = cq_nl4(false, (uint32_t)i4x(r.qs, k) >> 4 & 0x0f0f0f0f);
        }
        uint32_t sh = (uint32_t)r.h0 >> 16, sl = byte_of(r.h1, 0, 0, 0, ib / 2);
        int ls = (int)((sl >> 4 * (ib % 2) & 15) | (sh >> 2 * ib & 3) << 4);
        g.s[0] = g.s[1] = cq_h2f((uint16_t)(r.h0 & 0xffff)) * (float)(ls - 32);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* TQ2_0: group 4h + l is bits 2l..2l+1 of bytes 32h..32h+31, minus 1. */
template <> struct cq<T_TQ2_0> {
    enum { QK = 256, GPB = 8, U = 1, UPB = 8 };
    struct R { int4 qa, qb; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        const uint8_t *b = L.s0 + blk * 64 + (unit >> 2) * 32;
        r.qa = ld16(b);
        r.qb = ld16(b + 16);
        r.d = ld2(L.s1 + blk * 2);
    }
    static HD int group(int unit, int) { return unit; }
    static HD void decode(const R &r, int unit, int, cq_group &g)
    {
        const int l = unit & 3;
        for (int k = 0; k < 4; k++) {
            g.q[k] = vsub4(i4x(r.qa, k) >> 2 * l & 0x03030303, 0x01010101);
            g.q[k + 4] = vsub4(i4x(r.qb, k) >> 2 * l & 0x03030303, 0x01010101);
        }
        g.s[0] = g.s[1] = cq_h2f(r.d);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* TQ1_0: five base-3 digits per byte (see quant_ref_iq.c); bytes 0..31 give elements
 * 32n + m, bytes 32..47 give 160 + 16n + m, the four qh bytes 240 + 4n + j. */
template <> struct cq<T_TQ1_0> {
    enum { QK = 256, GPB = 8, U = 1, UPB = 8 };
    struct R { int4 a, b, c; int qh; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int)
    {
        const uint8_t *p = L.s0 + blk * 48;
        r.a = ld16(p);
        r.b = ld16(p + 16);
        r.c = ld16(p + 32);
        r.qh = ld4(L.s1 + blk * 4);
        r.d = ld2(L.s2 + blk * 2);
    }
    static HD int group(int unit, int) { return unit; }
    static HD int trit(uint32_t byte, int n)
    {
        const uint32_t pow3[5] = {1, 3, 9, 27, 81};
        return (int)(((byte * pow3[n]) & 0xff) * 3 >> 8);
    }
    static HD void decode(const R &r, int unit, int, cq_group &g)
    {
        for (int k = 0; k < 8; k++) {
            uint32_t w = 0;
            for (int j = 0; j < 4; j++) {
                const int e = 32 * unit + 4 * k + j;
                uint32_t byte;
                int n;
                if (e < 160) {
                    n = e / 32;
                    byte = e % 32 < 16 ? byte_of(r.a.x, r.a.y, r.a.z, r.a.w, e % 32)
                                       : byte_of(r.b.x, r.b.y, r.b.z, r.b.w, e % 32 - 16);
                } else if (e < 240) {
                    n = (e - 160) / 16;
                    byte = byte_of(r.c.x, r.c.y, r.c.z, r.c.w, (e - 160) % 16);
                } else {
                    n = (e - 240) / 4;
                    byte = byte_of(r.qh, 0, 0, 0, (e - 240) % 4);
                }
                w |= (uint32_t)(uint8_t)(trit(byte, n) - 1) << 8 * j;
            }
            g.q[k] = (int)w;
        }
        g.s[0] = g.s[1] = cq_h2f(r.d);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* IQ2_XXS: per 32, a word of four grid indices and a word of four 7-bit sign indices
 * with the scale in its top 4 bits. */
template <> struct cq<T_IQ2_XXS> {
    enum { QK = 256, GPB = 8, U = 1, UPB = 8 };
    struct R { int w0, w1; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        r.w0 = ld4(L.s0 + blk * 64 + unit * 8);
        r.w1 = ld4(L.s0 + blk * 64 + unit * 8 + 4);
        r.d = ld2(L.s1 + blk * 2);
    }
    static HD int group(int unit, int) { return unit; }
    static HD void decode(const R &r, int, int, cq_group &g)
    {
        const uint32_t w0 = (uint32_t)r.w0, w1 = (uint32_t)r.w1;
        for (int l = 0; l < 4; l++) {
            uint32_t p = CQ_TAB(iq2xxs, w0 >> 8 * l & 255), sg = cq_parity_signs(w1 >> 7 * l & 127);
            g.q[2 * l] = cq_signs4(cq_iq2_4(p & 0xff), sg & 15);
            g.q[2 * l + 1] = cq_signs4(cq_iq2_4(p >> 8), sg >> 4);
        }
        g.s[0] = g.s[1] = cq_h2f(r.d) * 0.125f * (float)(2 * (w1 >> 28) + 1);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* IQ2_XS: 16-bit words of a 9-bit index and a 7-bit sign index; a scale per 16. */
template <> struct cq<T_IQ2_XS> {
    enum { QK = 256, GPB = 8, U = 1, UPB = 8 };
    struct R { int w0, w1, sc; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        r.w0 = ld4(L.s0 + blk * 64 + unit * 8);
        r.w1 = ld4(L.s0 + blk * 64 + unit * 8 + 4);
        r.sc = ld4(L.s1 + blk * 8 + (unit / 4) * 4);
        r.d = ld2(L.s2 + blk * 2);
    }
    static HD int group(int unit, int) { return unit; }
    static HD void decode(const R &r, int ib, int, cq_group &g)
    {
        for (int l = 0; l < 4; l++) {
            uint32_t v = (uint32_t)(l < 2 ? r.w0 : r.w1) >> 16 * (l & 1) & 0xffff;
            uint32_t p = CQ_TAB(iq2xs, v & 511), sg = cq_parity_signs(v >> 9);
            g.q[2 * l] = cq_signs4(cq_iq2_4(p & 0xff), sg & 15);
            g.q[2 * l + 1] = cq_signs4(cq_iq2_4(p >> 8), sg >> 4);
        }
        const uint32_t sc = byte_of(r.sc, 0, 0, 0, ib % 4);
        const float d = cq_h2f(r.d) * 0.125f;
        g.s[0] = d * (float)(2 * (sc & 15) + 1);
        g.s[1] = d * (float)(2 * (sc >> 4) + 1);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* IQ2_S: index low bytes, explicit sign bytes, two index-high bits per 8 in qh. */
template <> struct cq<T_IQ2_S> {
    enum { QK = 256, GPB = 8, U = 1, UPB = 8 };
    struct R { int idx, sg, qh, sc; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        r.idx = ld4(L.s0 + blk * 64 + unit * 4);
        r.sg = ld4(L.s0 + blk * 64 + 32 + unit * 4);
        r.qh = ld4(L.s1 + blk * 16 + (unit / 4) * 4);
        r.sc = ld4(L.s1 + blk * 16 + 8 + (unit / 4) * 4);
        r.d = ld2(L.s2 + blk * 2);
    }
    static HD int group(int unit, int) { return unit; }
    static HD void decode(const R &r, int ib, int, cq_group &g)
    {
        const uint32_t qh = byte_of(r.qh, 0, 0, 0, ib % 4);
        for (int l = 0; l < 4; l++) {
            uint32_t i = byte_of(r.idx, 0, 0, 0, l) | (qh << (8 - 2 * l) & 0x300);
            uint32_t p = CQ_TAB(iq2s, i), sg = byte_of(r.sg, 0, 0, 0, l);
            g.q[2 * l] = cq_signs4(cq_iq2_4(p & 0xff), sg & 15);
            g.q[2 * l + 1] = cq_signs4(cq_iq2_4(p >> 8), sg >> 4);
        }
        const uint32_t sc = byte_of(r.sc, 0, 0, 0, ib % 4);
        const float d = cq_h2f(r.d) * 0.125f;
        g.s[0] = d * (float)(2 * (sc & 15) + 1);
        g.s[1] = d * (float)(2 * (sc >> 4) + 1);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* IQ3_XXS: 8 grid index bytes per 32 (4 values each), and a word of four 7-bit sign
 * indices with the scale on top. */
template <> struct cq<T_IQ3_XXS> {
    enum { QK = 256, GPB = 8, U = 1, UPB = 8 };
    struct R { int g0, g1, ss; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        const uint8_t *b = L.s0 + blk * 96;
        r.g0 = ld4(b + unit * 8);
        r.g1 = ld4(b + unit * 8 + 4);
        r.ss = ld4(b + 64 + unit * 4);
        r.d = ld2(L.s1 + blk * 2);
    }
    static HD int group(int unit, int) { return unit; }
    static HD void decode(const R &r, int, int, cq_group &g)
    {
        const uint32_t ss = (uint32_t)r.ss;
        for (int l = 0; l < 4; l++) {
            uint32_t sg = cq_parity_signs(ss >> 7 * l & 127);
            uint32_t i1 = byte_of(r.g0, r.g1, 0, 0, 2 * l), i2 = byte_of(r.g0, r.g1, 0, 0, 2 * l + 1);
            g.q[2 * l] = cq_signs4(cq_iq3xxs_4(CQ_TAB(iq3xxs, i1)), sg & 15);
            g.q[2 * l + 1] = cq_signs4(cq_iq3xxs_4(CQ_TAB(iq3xxs, i2)), sg >> 4);
        }
        g.s[0] = g.s[1] = cq_h2f(r.d) * 0.25f * (float)(2 * (ss >> 28) + 1);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* IQ3_S: 9-bit indices (a high bit per index in qh), explicit signs, a 4-bit scale per
 * 32 (two per byte). */
template <> struct cq<T_IQ3_S> {
    enum { QK = 256, GPB = 8, U = 1, UPB = 8 };
    struct R { int q0, q1, sg, qh, sc; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        const uint8_t *b = L.s0 + blk * 96;
        r.q0 = ld4(b + unit * 8);
        r.q1 = ld4(b + unit * 8 + 4);
        r.sg = ld4(b + 64 + unit * 4);
        r.qh = ld4(L.s1 + blk * 12 + (unit / 4) * 4);
        r.sc = ld4(L.s1 + blk * 12 + 8);
        r.d = ld2(L.s2 + blk * 2);
    }
    static HD int group(int unit, int) { return unit; }
    static HD void decode(const R &r, int ib, int, cq_group &g)
    {
        const uint32_t qh = byte_of(r.qh, 0, 0, 0, ib % 4);
        for (int l = 0; l < 4; l++) {
            uint32_t i1 = byte_of(r.q0, r.q1, 0, 0, 2 * l) | (qh << (8 - 2 * l) & 256);
            uint32_t i2 = byte_of(r.q0, r.q1, 0, 0, 2 * l + 1) | (qh << (7 - 2 * l) & 256);
            uint32_t sg = byte_of(r.sg, 0, 0, 0, l);
            g.q[2 * l] = cq_signs4(cq_iq3s_4(CQ_TAB(iq3s, i1)), sg & 15);
            g.q[2 * l + 1] = cq_signs4(cq_iq3s_4(CQ_TAB(iq3s, i2)), sg >> 4);
        }
        const uint32_t sc = byte_of(r.sc, 0, 0, 0, ib / 2) >> 4 * (ib % 2) & 15;
        g.s[0] = g.s[1] = cq_h2f(r.d) * (float)(2 * sc + 1);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* IQ1_S: per 32, four index low bytes and a u16 of four 3-bit index highs, a 3-bit
 * scale and the offset's sign. */
template <> struct cq<T_IQ1_S> {
    enum { QK = 256, GPB = 8, U = 1, UPB = 8 };
    struct R { int qs, qh; uint16_t d; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        const uint8_t *b = L.s0 + blk * 48;
        r.qs = ld4(b + unit * 4);
        r.qh = ld4(b + 32 + (unit / 2) * 4);
        r.d = ld2(L.s1 + blk * 2);
    }
    static HD int group(int unit, int) { return unit; }
    static HD void decode(const R &r, int ib, int, cq_group &g)
    {
        const uint32_t qh = (uint32_t)r.qh >> 16 * (ib % 2) & 0xffff;
        const int delta = qh & 0x8000 ? -1 : 1;
        for (int l = 0; l < 4; l++) {
            uint32_t p = CQ_TAB(iq1s, byte_of(r.qs, 0, 0, 0, l) | (qh >> 3 * l & 7) << 8);
            g.q[2 * l] = cq_iq1_4(p & 0xff, delta);
            g.q[2 * l + 1] = cq_iq1_4(p >> 8, delta);
        }
        g.s[0] = g.s[1] = cq_h2f(r.d) * 0.125f * (float)(2 * (qh >> 12 & 7) + 1);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* IQ1_M: no d field; its f16 scale is the top nibbles of the four scale words, which
 * also hold 3-bit scales per 16. A qh nibble per 8: three index-high bits, the sign. */
template <> struct cq<T_IQ1_M> {
    enum { QK = 256, GPB = 8, U = 1, UPB = 8 };
    struct R { int qs, qh, s0, s1; };
    static HD void load(R &r, const cq_seg &L, int64_t blk, int unit)
    {
        const uint8_t *b = L.s0 + blk * 56;
        r.qs = ld4(b + unit * 4);
        r.qh = ld4(b + 32 + (unit / 2) * 4);
        r.s0 = ld4(b + 48);
        r.s1 = ld4(b + 52);
    }
    static HD int group(int unit, int) { return unit; }
    static HD void decode(const R &r, int ib, int, cq_group &g)
    {
        const uint32_t sc[4] = {(uint32_t)r.s0 & 0xffff, (uint32_t)r.s0 >> 16, (uint32_t)r.s1 & 0xffff,
                                (uint32_t)r.s1 >> 16};
        const uint16_t dh = (uint16_t)((sc[0] >> 12) | (sc[1] >> 8 & 0x00f0) | (sc[2] >> 4 & 0x0f00) |
                                       (sc[3] & 0xf000));
        const uint32_t qh = (uint32_t)r.qh >> 16 * (ib % 2) & 0xffff;
        for (int l = 0; l < 4; l++) {
            uint32_t nib = qh >> 4 * l & 15;
            uint32_t p = CQ_TAB(iq1s, byte_of(r.qs, 0, 0, 0, l) | (nib & 7) << 8);
            const int delta = nib & 8 ? -1 : 1;
            g.q[2 * l] = cq_iq1_4(p & 0xff, delta);
            g.q[2 * l + 1] = cq_iq1_4(p >> 8, delta);
        }
        const float d = cq_h2f(dh) * 0.125f;
        const uint32_t w = sc[ib / 2] >> 6 * (ib % 2);
        g.s[0] = d * (float)(2 * (w & 7) + 1);
        g.s[1] = d * (float)(2 * (w >> 3 & 7) + 1);
        g.m[0] = g.m[1] = 0.0f;
    }
};

/* Dot of a decoded group with one activation block (32 bytes a0|a1, meta am). */
HD float cq_dot_group(const cq_group &g, const int4 &a0, const int4 &a1, const float4 &am)
{
    int lo = dp4a(g.q[0], a0.x, dp4a(g.q[1], a0.y, dp4a(g.q[2], a0.z, dp4a(g.q[3], a0.w, 0))));
    int hi = dp4a(g.q[4], a1.x, dp4a(g.q[5], a1.y, dp4a(g.q[6], a1.z, dp4a(g.q[7], a1.w, 0))));
    return am.x * (g.s[0] * (float)lo + g.s[1] * (float)hi) + g.m[0] * am.y + g.m[1] * am.z;
}

/* Element i (0..31) of a decoded group as a float. */
HD float cq_group_value(const cq_group &g, int i)
{
    int8_t q = (int8_t)(g.q[i >> 2] >> 8 * (i & 3));
    return g.s[i >> 4] * (float)q + g.m[i >> 4];
}

/* 32 floats -> the activation block: q bytes and meta {d, d*sum lo, d*sum hi, 0}. */
HD void cq_quantize_block(const float *x, int8_t *q, float4 &meta)
{
    float amax = 0.0f;
    for (int i = 0; i < 32; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
    int slo = 0, shi = 0;
    for (int i = 0; i < 32; i++) {
        int v = (int)rintf(x[i] * id);
        v = v > 127 ? 127 : v < -127 ? -127 : v;
        q[i] = (int8_t)v;
        if (i < 16)
            slo += v;
        else
            shi += v;
    }
    meta = make_float4(d, d * (float)slo, d * (float)shi, 0.0f);
}

/* Calls f.template run<T>() with T the type id as a compile-time constant. */
template <typename F> static bool cq_dispatch(int type, F &f)
{
    switch (type) {
    case T_Q4_0: f.template run<T_Q4_0>(); return true;
    case T_Q4_1: f.template run<T_Q4_1>(); return true;
    case T_Q5_0: f.template run<T_Q5_0>(); return true;
    case T_Q5_1: f.template run<T_Q5_1>(); return true;
    case T_Q8_0: f.template run<T_Q8_0>(); return true;
    case T_Q2_K: f.template run<T_Q2_K>(); return true;
    case T_Q3_K: f.template run<T_Q3_K>(); return true;
    case T_Q4_K: f.template run<T_Q4_K>(); return true;
    case T_Q5_K: f.template run<T_Q5_K>(); return true;
    case T_Q6_K: f.template run<T_Q6_K>(); return true;
    case T_IQ4_NL: f.template run<T_IQ4_NL>(); return true;
    case T_MXFP4: f.template run<T_MXFP4>(); return true;
    case T_IQ4_XS: f.template run<T_IQ4_XS>(); return true;
    case T_TQ1_0: f.template run<T_TQ1_0>(); return true;
    case T_TQ2_0: f.template run<T_TQ2_0>(); return true;
    case T_IQ3_XXS: f.template run<T_IQ3_XXS>(); return true;
    case T_IQ3_S: f.template run<T_IQ3_S>(); return true;
    case T_IQ2_XXS: f.template run<T_IQ2_XXS>(); return true;
    case T_IQ2_XS: f.template run<T_IQ2_XS>(); return true;
    case T_IQ2_S: f.template run<T_IQ2_S>(); return true;
    case T_IQ1_S: f.template run<T_IQ1_S>(); return true;
    case T_IQ1_M: f.template run<T_IQ1_M>(); return true;
    default: return false;
    }
}

/* ---- float types ---- */
HD float cq_float_at(int type, const uint8_t *base, int64_t i)
{
    switch (type) {
    case T_F32: {
        float f;
#ifdef __CUDA_ARCH__
        f = __ldg((const float *)base + i);
#else
        CQ_HOST_ALIGN_CHECK(base + 4 * i, 4);
        memcpy(&f, base + 4 * i, 4);
#endif
        return f;
    }
    case T_F16: return cq_h2f(ld2(base + 2 * i));
    default: return cq_bf2f(ld2(base + 2 * i));
    }
}

#endif
