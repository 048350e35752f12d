/* mmv.cu — quantized matrix x few-vectors products: decode steps, small batches and
 * MoE experts.
 *
 * One warp per output row; lane l takes the row's units l, l+32, ... (a unit is the
 * 32..128 weights that share loaded bytes, quant_layout.cuh), loading UNR units before
 * using any so several 16-byte loads are in flight. Weights are decoded to 8-bit ints
 * in registers and multiplied with dp4a against activations already in 8-bit blocks of
 * 32; float weights multiply f32 activations directly. Each weight loaded is used for
 * up to NT activation rows (tokens, or expert pairs sharing an expert).
 */
#include <math.h>

#include "cuda_common.cuh"
#include "quant_layout.cuh"

#define MMV_WARPS 4

template <int NT>
__device__ __forceinline__ bool mmv_resolve(const mmv_job &j, int gy, int &e, int &cnt, int (&p)[NT])
{
    if (j.groups) {
        if (gy >= *j.n_groups)
            return false;
        int4 g = j.groups[gy];
        e = g.x;
        cnt = g.y < NT ? g.y : NT;
#pragma unroll
        for (int t = 0; t < NT; t++)
            p[t] = t < cnt ? j.sorted[g.z + t] : 0;
    } else if (j.ids) {
        e = j.ids[gy];
        cnt = 1;
#pragma unroll
        for (int t = 0; t < NT; t++)
            p[t] = gy;
    } else {
        e = 0;
        cnt = j.n < NT ? j.n : NT;
#pragma unroll
        for (int t = 0; t < NT; t++)
            p[t] = t;
    }
    if (e < 0 || e >= j.ne2)
        e = 0; /* router ids are produced on the device; never index outside the tensor */
    return true;
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + __expf(-x)); }

template <int NT, bool GATED>
__device__ __forceinline__ void mmv_store(const mmv_job &j, int64_t r, int cnt, const int (&p)[NT],
                                          float (&acc)[NT], float (&acc2)[NT], int lane)
{
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float a = warp_sum(acc[t]);
        float b = GATED ? warp_sum(acc2[t]) : 0.0f;
        if (lane == 0 && t < cnt)
            j.out[(int64_t)p[t] * j.ldo + r] = GATED ? silu(a) * b : a;
    }
}

template <int T, int NT, bool GATED>
__global__ void __launch_bounds__(MMV_WARPS * 32) k_mmv_q(const mmv_job j, const cq_seg L, const cq_seg L2)
{
    typedef cq<T> Q;
    constexpr int UNR = (GATED || NT >= 4) ? 1 : (Q::QK == 32 && T != T_Q8_0 ? 4 : 2);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * MMV_WARPS + warp;
    if (r >= j.ne1)
        return;
    int e, cnt, p[NT];
    if (!mmv_resolve<NT>(j, blockIdx.y, e, cnt, p))
        return;

    const int64_t nb = j.ne0 / Q::QK;
    const int64_t upr = nb * Q::UPB;
    const int64_t blk0 = ((int64_t)e * j.ne1 + r) * nb;
    const int64_t ng = j.ne0 / 32;
    const int8_t *xq[NT];
    const float4 *xm[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const int64_t arow = p[t] / j.act_div;
        xq[t] = j.xq + arow * j.ne0;
        xm[t] = j.xm + arow * ng;
    }
    float acc[NT], acc2[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = acc2[t] = 0.0f;

    for (int64_t base = lane; base < upr; base += 32 * UNR) {
        typename Q::R rg[UNR], rg2[GATED ? UNR : 1];
#pragma unroll
        for (int k = 0; k < UNR; k++) {
            const int64_t ui = base + 32 * k;
            if (ui < upr) {
                Q::load(rg[k], L, blk0 + ui / Q::UPB, (int)(ui % Q::UPB));
                if (GATED)
                    Q::load(rg2[GATED ? k : 0], L2, blk0 + ui / Q::UPB, (int)(ui % Q::UPB));
            }
        }
#pragma unroll
        for (int k = 0; k < UNR; k++) {
            const int64_t ui = base + 32 * k;
            if (ui >= upr)
                break;
            const int64_t b = ui / Q::UPB;
            const int unit = (int)(ui % Q::UPB);
#pragma unroll
            for (int u = 0; u < Q::U; u++) {
                const int64_t gi = b * Q::GPB + Q::group(unit, u);
                cq_group g, g2;
                Q::decode(rg[k], unit, u, g);
                if (GATED)
                    Q::decode(rg2[GATED ? k : 0], unit, u, g2);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    if (t < cnt) {
                        const int4 a0 = ld16((const uint8_t *)(xq[t] + gi * 32));
                        const int4 a1 = ld16((const uint8_t *)(xq[t] + gi * 32 + 16));
                        const float4 am = __ldg(xm[t] + gi);
                        acc[t] += cq_dot_group(g, a0, a1, am);
                        if (GATED)
                            acc2[t] += cq_dot_group(g2, a0, a1, am);
                    }
                }
            }
        }
    }
    mmv_store<NT, GATED>(j, r, cnt, p, acc, acc2, lane);
}

/* 16 bytes of float weights -> EPV floats */
template <int T> struct fvec {
    enum { EPV = T == T_F32 ? 4 : 8 };
    static __device__ __forceinline__ void get(const int4 &v, float *w)
    {
        if (T == T_F32) {
            w[0] = __int_as_float(v.x);
            w[1] = __int_as_float(v.y);
            w[2] = __int_as_float(v.z);
            w[3] = __int_as_float(v.w);
        } else {
            const int a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                if (T == T_F16) {
                    const float2 f = __half22float2(*(const __half2 *)&a[i]);
                    w[2 * i] = f.x;
                    w[2 * i + 1] = f.y;
                } else {
                    w[2 * i] = __uint_as_float((unsigned)a[i] << 16);
                    w[2 * i + 1] = __uint_as_float((unsigned)a[i] & 0xffff0000u);
                }
            }
        }
    }
};

template <int T, int NT, bool GATED>
__global__ void __launch_bounds__(MMV_WARPS * 32) k_mmv_f(const mmv_job j)
{
    typedef fvec<T> V;
    constexpr int EPV = V::EPV, ES = T == T_F32 ? 4 : 2;
    constexpr int UNR = (GATED || NT >= 4) ? 1 : 4;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * MMV_WARPS + warp;
    if (r >= j.ne1)
        return;
    int e, cnt, p[NT];
    if (!mmv_resolve<NT>(j, blockIdx.y, e, cnt, p))
        return;
    const int64_t row = (int64_t)e * j.ne1 + r;
    const uint8_t *w = (const uint8_t *)j.w + row * j.ne0 * ES;
    const uint8_t *w2 = GATED ? (const uint8_t *)j.w2 + row * j.ne0 * ES : NULL;
    const float *x[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        x[t] = j.xf + (int64_t)(p[t] / j.act_div) * j.ne0;
    float acc[NT], acc2[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = acc2[t] = 0.0f;

    if (j.ne0 % EPV == 0) {
        const int64_t nv = j.ne0 / EPV;
        for (int64_t base = lane; base < nv; base += 32 * UNR) {
            int4 rv[UNR], rv2[GATED ? UNR : 1];
#pragma unroll
            for (int k = 0; k < UNR; k++) {
                const int64_t vi = base + 32 * k;
                if (vi < nv) {
                    rv[k] = ld16(w + vi * 16);
                    if (GATED)
                        rv2[GATED ? k : 0] = ld16(w2 + vi * 16);
                }
            }
#pragma unroll
            for (int k = 0; k < UNR; k++) {
                const int64_t vi = base + 32 * k;
                if (vi >= nv)
                    break;
                float wf[EPV], wf2[EPV];
                V::get(rv[k], wf);
                if (GATED)
                    V::get(rv2[GATED ? k : 0], wf2);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    if (t < cnt) {
                        const float4 *xv = (const float4 *)(x[t] + vi * EPV);
#pragma unroll
                        for (int h = 0; h < EPV / 4; h++) {
                            const float4 a = __ldg(xv + h);
                            acc[t] += wf[4 * h] * a.x + wf[4 * h + 1] * a.y + wf[4 * h + 2] * a.z + wf[4 * h + 3] * a.w;
                            if (GATED)
                                acc2[t] += wf2[4 * h] * a.x + wf2[4 * h + 1] * a.y + wf2[4 * h + 2] * a.z +
                                           wf2[4 * h + 3] * a.w;
                        }
                    }
                }
            }
        }
    } else { /* rows not 16-byte aligned: one element at a time */
        for (int64_t i = lane; i < j.ne0; i += 32) {
            const float wf = cq_float_at(T, w, i);
            const float wf2 = GATED ? cq_float_at(T, w2, i) : 0.0f;
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < cnt) {
                    acc[t] += wf * x[t][i];
                    if (GATED)
                        acc2[t] += wf2 * x[t][i];
                }
            }
        }
    }
    mmv_store<NT, GATED>(j, r, cnt, p, acc, acc2, lane);
}

__global__ void k_quantize_act(const float *__restrict__ x, int64_t nblk, int8_t *__restrict__ q,
                               float4 *__restrict__ m)
{
    const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= nblk)
        return;
    float v[32];
    const float4 *xv = (const float4 *)(x + b * 32);
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const float4 f = xv[i];
        v[4 * i] = f.x;
        v[4 * i + 1] = f.y;
        v[4 * i + 2] = f.z;
        v[4 * i + 3] = f.w;
    }
    __align__(16) int8_t qb[32]; /* read back as two int4 */
    float4 meta;
    cq_quantize_block(v, qb, meta);
    int4 *qo = (int4 *)(q + b * 32);
    qo[0] = *(const int4 *)&qb[0];
    qo[1] = *(const int4 *)&qb[16];
    m[b] = meta;
}

bool cuda_quantize_act(cuda_backend *cb, const float *x, int64_t rows, int64_t ne0, int8_t *q, float4 *m)
{
    const int64_t nblk = rows * (ne0 / 32);
    if (nblk == 0)
        return true;
    LAUNCH(cdiv(nblk, 128), 128, 0, cb->stream, k_quantize_act)(x, nblk, q, m);
    return CUDA_LAUNCHED(cb, "quantize activations");
}

struct mmv_launch {
    cuda_backend *cb;
    const mmv_job *j;
    dim3 grid;
    int nt;
    bool gated;
    bool ok;
    template <int NT, bool G, int T> void go_q()
    {
        const cq_seg L = cq_seg_of(T, j->w, j->ne0 / cq<T>::QK * j->ne1 * j->ne2);
        const cq_seg L2 = G ? cq_seg_of(T, j->w2, j->ne0 / cq<T>::QK * j->ne1 * j->ne2) : L;
        LAUNCH(grid, MMV_WARPS * 32, 0, cb->stream, k_mmv_q<T, NT, G>)(*j, L, L2);
    }
    template <int T> void run()
    {
        if (gated) {
            if (nt == 1)
                go_q<1, true, T>();
            else
                go_q<8, true, T>();
        } else {
            switch (nt) {
            case 1: go_q<1, false, T>(); break;
            case 2: go_q<2, false, T>(); break;
            case 4: go_q<4, false, T>(); break;
            default: go_q<8, false, T>(); break;
            }
        }
    }
    template <int T> void run_f()
    {
        if (gated) {
            if (nt == 1)
                LAUNCH(grid, MMV_WARPS * 32, 0, cb->stream, k_mmv_f<T, 1, true>)(*j);
            else
                LAUNCH(grid, MMV_WARPS * 32, 0, cb->stream, k_mmv_f<T, 8, true>)(*j);
        } else {
            switch (nt) {
            case 1: LAUNCH(grid, MMV_WARPS * 32, 0, cb->stream, k_mmv_f<T, 1, false>)(*j); break;
            case 2: LAUNCH(grid, MMV_WARPS * 32, 0, cb->stream, k_mmv_f<T, 2, false>)(*j); break;
            case 4: LAUNCH(grid, MMV_WARPS * 32, 0, cb->stream, k_mmv_f<T, 4, false>)(*j); break;
            default: LAUNCH(grid, MMV_WARPS * 32, 0, cb->stream, k_mmv_f<T, 8, false>)(*j); break;
            }
        }
    }
};

bool cuda_mmv(cuda_backend *cb, const mmv_job *j)
{
    if (j->ne1 <= 0 || j->grid_rows <= 0)
        return true;
    if (!cq_is_float(j->type) && cq_block_elems(j->type) == 0)
        return cuda_fail(cb, EINVAL, "matrix-vector product: weight type %d not supported", j->type);
    if (j->grid_rows > 65535)
        return cuda_fail(cb, EINVAL, "matrix-vector product: %d pair groups exceed the launch limit", j->grid_rows);
    mmv_launch l;
    l.cb = cb;
    l.j = j;
    l.grid = dim3(cdiv(j->ne1, MMV_WARPS), (unsigned)j->grid_rows);
    l.nt = j->nt <= 1 ? 1 : j->nt <= 2 ? 2 : j->nt <= 4 ? 4 : 8;
    l.gated = j->w2 != NULL;
    if (l.gated && l.nt != 1)
        l.nt = 8;
    switch (j->type) {
    case T_F32: l.run_f<T_F32>(); break;
    case T_F16: l.run_f<T_F16>(); break;
    case T_BF16: l.run_f<T_BF16>(); break;
    default:
        if (j->ne0 % cq_block_elems(j->type) != 0 || !cq_dispatch(j->type, l))
            return cuda_fail(cb, EINVAL, "matrix-vector product: weight type %d with rows of %lld not supported",
                             j->type, (long long)j->ne0);
    }
    return CUDA_LAUNCHED(cb, "matrix-vector product");
}
