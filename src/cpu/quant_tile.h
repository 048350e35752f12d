/* quant_tile.h — the tile driver every SIMD kernel file shares: a kernel written for
 * R x C tiles (R weight rows by C activation rows, both constants) is instantiated as 4x4,
 * 4x3, 4x2, 4x1, 1x4 and 1x1 only, other shapes split into those (decode runs 4x1,
 * prefill 4x4). The 4x2 and 4x3 tiles are for speculative verification and MTP heads,
 * whose batches of 2-3 rows would otherwise read and unpack every weight block once per
 * row. Decode tiles (C == 1) stream the weights: they fetch them PF_DIST_L2 bytes ahead
 * into L2 and PF_DIST_L1 into L1.
 * Included by the ISA files after their INLINE definition and <immintrin.h>. */
#ifndef LLMFS_QUANT_TILE_H
#define LLMFS_QUANT_TILE_H

#define TILE_SWITCH(kernel, n, nr, nc, w, ws, a, as, out, os)                      \
    if ((nr) == 4 && (nc) == 4) {                                                 \
        kernel(n, 4, 4, w, ws, a, as, out, os);                                   \
    } else if ((nr) == 4 && (nc) == 3) {                                          \
        kernel(n, 4, 3, w, ws, a, as, out, os);                                   \
    } else if ((nr) == 4 && (nc) == 2) {                                          \
        kernel(n, 4, 2, w, ws, a, as, out, os);                                   \
    } else if ((nr) == 4) {                                                       \
        for (int c_ = 0; c_ < (nc); c_++)                                         \
            kernel(n, 4, 1, w, ws, (a) + (size_t)c_ * (as), 0, (out) + (size_t)c_ * (os), 0); \
    } else if ((nc) == 4) {                                                       \
        for (int r_ = 0; r_ < (nr); r_++)                                         \
            kernel(n, 1, 4, (w) + (size_t)r_ * (ws), 0, a, as, (out) + r_, os);   \
    } else {                                                                      \
        for (int c_ = 0; c_ < (nc); c_++)                                         \
            for (int r_ = 0; r_ < (nr); r_++)                                     \
                kernel(n, 1, 1, (w) + (size_t)r_ * (ws), 0, (a) + (size_t)c_ * (as), 0, \
                       (out) + (size_t)c_ * (os) + r_, 0);                        \
    }

#define DEFINE_TILE_AND_DOT(name, kernel)                                                \
    static void tile_##name(int64_t n, int nr, int nc, const void *w, size_t ws,         \
                            const void *a, size_t as, float *out, size_t os)             \
    {                                                                                    \
        TILE_SWITCH(kernel, n, nr, nc, (const char *)w, ws, (const char *)a, as, out, os) \
    }                                                                                    \
    static float dot_##name(int64_t n, const void *w, const void *a)                     \
    {                                                                                    \
        float o;                                                                         \
        kernel(n, 1, 1, (const char *)w, 0, (const char *)a, 0, &o, 0);                  \
        return o;                                                                        \
    }

#define PF_DIST_L2 12288
#define PF_DIST_L1 1024
INLINE void prefetch_ahead(const int C, const void *p, int bytes)
{
    if (C == 1)
        for (int i = 0; i < bytes; i += 64) {
            _mm_prefetch((const char *)p + PF_DIST_L2 + i, _MM_HINT_T1);
            _mm_prefetch((const char *)p + PF_DIST_L1 + i, _MM_HINT_T0);
        }
}

#endif
