/* host_check.cu — the kernels' decode, repack, dot and KV-row code run on the host,
 * for unit tests on machines without a GPU (declared in host_check.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "kv_layout.cuh"
#include "quant_layout.cuh"
#include "rope_theta.cuh"

#include "host_check.h"

long cq_host_misaligned;

namespace {

/* Fails a check whose loads the device would have made off their alignment. */
int misaligned_since(long before, const char *what, char *msg, size_t cap)
{
    const long n = cq_host_misaligned - before;
    if (n == 0)
        return 0;
    if (msg)
        snprintf(msg, cap, "%s: %ld loads off their alignment (a fault on the device)", what, n);
    return -EFAULT;
}

struct host_dequant {
    const cq_seg *L;
    int64_t ne0, rows;
    float *dst;
    template <int T> void run()
    {
        typedef cq<T> Q;
        const int64_t nb = ne0 / Q::QK;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < nb; b++)
                for (int unit = 0; unit < Q::UPB; unit++) {
                    typename Q::R reg;
                    Q::load(reg, *L, r * nb + b, unit);
                    for (int u = 0; u < Q::U; u++) {
                        cq_group g;
                        Q::decode(reg, unit, u, g);
                        float *o = dst + r * ne0 + b * Q::QK + Q::group(unit, u) * 32;
                        for (int i = 0; i < 32; i++)
                            o[i] = cq_group_value(g, i);
                    }
                }
    }
};

struct host_dot {
    const cq_seg *L;
    int64_t ne0, rows;
    const int8_t *xq;
    const float4 *xm;
    float *out;
    template <int T> void run()
    {
        typedef cq<T> Q;
        const int64_t nb = ne0 / Q::QK;
        for (int64_t r = 0; r < rows; r++) {
            /* the kernel's lanes each sum their own units, then add up: same here */
            float lane_acc[32] = {0};
            const int64_t upr = nb * Q::UPB;
            for (int64_t ui = 0; ui < upr; ui++) {
                const int64_t b = ui / Q::UPB;
                const int unit = (int)(ui % Q::UPB);
                typename Q::R reg;
                Q::load(reg, *L, r * nb + b, unit);
                for (int u = 0; u < Q::U; u++) {
                    const int64_t gi = b * Q::GPB + Q::group(unit, u);
                    cq_group g;
                    Q::decode(reg, unit, u, g);
                    const int4 a0 = ld16((const uint8_t *)(xq + gi * 32));
                    const int4 a1 = ld16((const uint8_t *)(xq + gi * 32 + 16));
                    lane_acc[ui % 32] += cq_dot_group(g, a0, a1, xm[gi]);
                }
            }
            float s = 0.0f;
            for (int l = 0; l < 32; l++)
                s += lane_acc[l];
            out[r] = s;
        }
    }
};

} // namespace

static int type_ok(int type, int64_t ne0, char *msg, size_t cap)
{
    const int qk = cq_block_elems(type);
    if (qk == 0 || ne0 % qk) {
        snprintf(msg, cap, "type %d with rows of %lld not handled", type, (long long)ne0);
        return -EINVAL;
    }
    return 0;
}

extern "C" int cuda_host_repack_dequant(int type, const void *src, int64_t ne0, int64_t n_rows, float *dst, char *msg,
                                        size_t msg_cap)
{
    int rc = type_ok(type, ne0, msg, msg_cap);
    if (rc)
        return rc;
    const int64_t nblk = ne0 / cq_block_elems(type) * n_rows;
    int64_t off[3];
    const int64_t bytes = cq_regions(type, nblk, off);
    uint8_t *dev = (uint8_t *)malloc((size_t)bytes);
    if (!dev)
        return -ENOMEM;
    cq_repack(type, src, nblk, dev, nblk > 7 ? 7 : 1); /* pieces as staging cuts them */
    const long before = cq_host_misaligned;
    if (cq_is_float(type)) {
        for (int64_t i = 0; i < ne0 * n_rows; i++)
            dst[i] = cq_float_at(type, dev, i);
    } else {
        const cq_seg L = cq_seg_of(type, dev, nblk);
        host_dequant h = {&L, ne0, n_rows, dst};
        cq_dispatch(type, h);
    }
    free(dev);
    return misaligned_since(before, "dequantize", msg, msg_cap);
}

extern "C" int cuda_host_dot(int type, const void *src, int64_t ne0, int64_t n_rows, const float *x, float *out,
                             char *msg, size_t msg_cap)
{
    int rc = type_ok(type, ne0, msg, msg_cap);
    if (rc)
        return rc;
    const int64_t nblk = ne0 / cq_block_elems(type) * n_rows;
    int64_t off[3];
    const int64_t bytes = cq_regions(type, nblk, off);
    uint8_t *dev = (uint8_t *)malloc((size_t)bytes);
    int8_t *xq = (int8_t *)malloc((size_t)ne0 + 16);
    float4 *xm = (float4 *)malloc(sizeof(float4) * (size_t)(ne0 / 32 + 1));
    if (!dev || !xq || !xm) {
        free(dev);
        free(xq);
        free(xm);
        return -ENOMEM;
    }
    cq_repack(type, src, nblk, dev, nblk);
    const long before = cq_host_misaligned;
    if (cq_is_float(type)) {
        for (int64_t r = 0; r < n_rows; r++) {
            float s = 0.0f;
            for (int64_t i = 0; i < ne0; i++)
                s += cq_float_at(type, dev, r * ne0 + i) * x[i];
            out[r] = s;
        }
    } else {
        for (int64_t b = 0; b < ne0 / 32; b++)
            cq_quantize_block(x + b * 32, xq + b * 32, xm[b]);
        const cq_seg L = cq_seg_of(type, dev, nblk);
        host_dot h = {&L, ne0, n_rows, xq, xm, out};
        cq_dispatch(type, h);
    }
    free(dev);
    free(xq);
    free(xm);
    return misaligned_since(before, "dot", msg, msg_cap);
}

extern "C" int cuda_host_kv_roundtrip(int type_kv, const float *x, int d, float *out)
{
    const int64_t rb = kvl_row_bytes(type_kv, d);
    if (rb < 0 || d % 8)
        return -EINVAL;
    /* two cells: the row is stored in the second, at the offset a cache row has on the
     * device, and read with the alignment the attention kernels assume for it */
    uint8_t *cells = (uint8_t *)calloc(1, 2 * (size_t)rb + 16);
    if (!cells)
        return -ENOMEM;
    uint8_t *row = cells + rb;
    if (type_kv == T_F16 && d % 32) {
        for (int i = 0; i < d; i++) {
            const uint16_t h = kvl_f2h(x[i]);
            memcpy(row + 2 * i, &h, 2);
        }
    } else {
        for (int b = 0; b < d / 32; b++)
            kvl_store_block(type_kv, row, d, b, x + b * 32);
    }
    const bool al8 = rb % 8 == 0;
    const long before = cq_host_misaligned;
    int rc = (int)rb;
    for (int e = 0; e < d && rc > 0; e += 8) {
        float a[8], b[8];
        kvl_load8(type_kv, row, d, e, al8, a);
        kvl_load8(type_kv, row, d, e, false, b); /* both load paths must agree */
        for (int i = 0; i < 8; i++) {
            if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
                rc = -EIO;
            out[e + i] = a[i];
        }
    }
    if (rc > 0 && misaligned_since(before, "KV row", NULL, 0))
        rc = -EFAULT;
    free(cells);
    return rc;
}

extern "C" double cuda_host_rope_theta(int pos, int i, int n_rot, float freq_base, float freq_scale, float l3_factor,
                                       float l3_low, float l3_high, int l3_orig_ctx)
{
    rope_params p;
    memset(&p, 0, sizeof p);
    p.n_rot = n_rot;
    p.freq_base = freq_base;
    p.freq_scale = freq_scale;
    p.l3_factor = l3_factor;
    p.l3_low_freq_factor = l3_low;
    p.l3_high_freq_factor = l3_high;
    p.l3_orig_ctx = l3_orig_ctx;
    return (double)pos * rope_inv_freq(&p, i);
}
