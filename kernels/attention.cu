/* attention.cu — KV store and causal attention over an f16/q8_0/q4_0 cache.
 *
 * Each token t sees cells 0..pos[t] of its sequence seq[t] (row seq*n_cells + cell %
 * n_cells: n_cells is n_ctx, or a sliding-window layer's ring, kv.h), or its window.
 * After non_causal the upper end is last[t], the last position of its sequence in the
 * batch (an image's tokens see each other); the window still starts from pos[t].
 * Cache types f32, f16, q8_0, q4_0 for K and V independently.
 * Two kernels, one answer:
 *  - split-K decode: a CTA takes one token, one KV head with the query heads sharing it,
 *    and one slice of the cells; its 4 warps stream 32-cell tiles with an online
 *    softmax; slices are merged by a second kernel. Launch sizes depend on the KV bucket
 *    (a power of two >= the longest context), not on the positions themselves, so a
 *    recorded decode step replays at any position within the bucket.
 *  - flash attention for batches: a CTA takes a tile of consecutive tokens of one
 *    sequence and one query head, walks the cells up to the tile's last position in
 *    tiles staged through shared memory, with per-row masks.
 * Softmax runs in f32 in the log2 domain; the cache is dequantized on load.
 */
#include <errno.h>
#include <math.h>

#include "cuda_common.cuh"
#include "kv_layout.cuh"

/* ---- store ---- */

__global__ void k_kv_store(const float *k, const float *v, uint8_t *kc, uint8_t *vc, int64_t k_row, int64_t v_row,
                           int type_k, int type_v, int d, const int32_t *pos, const int32_t *seq, int n_ctx,
                           int n_cells, int n_seq)
{
    const int t = blockIdx.y, which = blockIdx.z;
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= d / 32)
        return;
    const int p = pos[t], s = seq[t];
    if (p < 0 || p >= n_ctx || s < 0 || s >= n_seq)
        return;
    const float *src = (which ? v : k) + (int64_t)t * d + b * 32;
    uint8_t *row = (which ? vc : kc) + ((int64_t)s * n_cells + p % n_cells) * (which ? v_row : k_row);
    float x[32];
#pragma unroll
    for (int i = 0; i < 32; i++)
        x[i] = src[i];
    kvl_store_block(which ? type_v : type_k, row, d, b, x);
}

/* float rows whose length is not a multiple of 32 (tiny heads) */
__global__ void k_kv_store_float(const float *k, const float *v, uint8_t *kc, uint8_t *vc, int d, bool f32,
                                 const int32_t *pos, const int32_t *seq, int n_ctx, int n_cells, int n_seq)
{
    const int t = blockIdx.y, which = blockIdx.z;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= d)
        return;
    const int p = pos[t], s = seq[t];
    if (p < 0 || p >= n_ctx || s < 0 || s >= n_seq)
        return;
    const float x = (which ? v : k)[(int64_t)t * d + i];
    if (f32) {
        ((float *)(which ? vc : kc))[((int64_t)s * n_cells + p % n_cells) * d + i] = x;
    } else {
        __half *row = (__half *)((which ? vc : kc) + ((int64_t)s * n_cells + p % n_cells) * (int64_t)d * 2);
        row[i] = __float2half_rn(x);
    }
}

static bool kv_check(cuda_backend *cb, const kv_cache *kv, int il, int n, const char *op)
{
    if (il < 0 || il >= kv->n_layer)
        return cuda_fail(cb, EINVAL, "%s: layer %d of %d", op, il, kv->n_layer);
    if (n > cb->n || !cb->d_pos)
        return cuda_fail(cb, EINVAL, "%s: %d tokens, the batch has %d", op, n, cb->n);
    if (n > 65535) /* tokens are a grid dimension of at most 65535 */
        return cuda_fail(cb, EINVAL, "%s: %d tokens in one call", op, n);
    const struct kv_layer *L = &kv->layer[il];
    if (!L->k || !L->v)
        return cuda_fail(cb, EINVAL, "%s: layer %d has no cache of its own (shared KV)", op, il);
    if (kvl_row_bytes(kv->type_k, L->n_embd_kv) != (int64_t)L->k_row ||
        kvl_row_bytes(kv->type_v, L->n_embd_kv) != (int64_t)L->v_row)
        return cuda_fail(cb, EINVAL, "%s: KV types %d/%d with rows of %d not supported by the CUDA backend", op,
                         kv->type_k, kv->type_v, L->n_embd_kv);
    if (cb->capturing)
        return true; /* positions at replay are checked by the kernels */
    for (int i = 0; i < n; i++)
        if (cb->h_pos[i] >= kv->n_ctx || cb->h_seq[i] >= kv->n_seq)
            return cuda_fail(cb, ENOSPC, "%s: token %d at sequence %d position %d outside the cache (%d x %d)", op, i,
                             cb->h_seq[i], cb->h_pos[i], kv->n_seq, kv->n_ctx);
    return true;
}

void cuda_op_kv_store(backend *be, kv_cache *kv, int il, const float *k, const float *v, int n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0 || !kv_check(cb, kv, il, n, "kv_store"))
        return;
    const struct kv_layer *L = &kv->layer[il];
    const int d = L->n_embd_kv;
    if (d % 32 == 0) {
        dim3 grid(cdiv(d / 32, 64), n, 2);
        LAUNCH(grid, 64, 0, cb->stream, k_kv_store)(k, v, (uint8_t *)L->k, (uint8_t *)L->v, (int64_t)L->k_row,
                                                (int64_t)L->v_row, kv->type_k, kv->type_v, d, cb->d_pos, cb->d_seq,
                                                kv->n_ctx, L->n_cells, kv->n_seq);
    } else if ((kv->type_k == T_F16 || kv->type_k == T_F32) && kv->type_k == kv->type_v) {
        dim3 grid(cdiv(d, 128), n, 2);
        LAUNCH(grid, 128, 0, cb->stream, k_kv_store_float)(k, v, (uint8_t *)L->k, (uint8_t *)L->v, d,
                                                       kv->type_k == T_F32, cb->d_pos, cb->d_seq, kv->n_ctx,
                                                       L->n_cells, kv->n_seq);
    } else {
        cuda_fail(cb, EINVAL, "kv_store: quantized cache rows of %d elements", d);
        return;
    }
    CUDA_LAUNCHED(cb, "kv_store");
}

/* ---- shared argument block ---- */

struct attn_args {
    const float *q;
    float *out;
    const uint8_t *kc, *vc;
    int64_t k_row, v_row;
    int type_k, type_v;
    bool k_al8, v_al8;
    int d_kv;             /* n_embd_kv */
    int n_ctx, n_seq;
    int n_cells;          /* rows per sequence: n_ctx, or a sliding-window ring (cell % n_cells) */
    const int32_t *pos, *seq;
    const int32_t *last;  /* the last cell each token sees: pos, or non_causal's */
    int n_head, n_head_kv, hd, G;
    float scale_log2;     /* scale * log2(e) */
    int n_swa;            /* sliding window: cells p - n_swa < c <= p; 0 all */
    const float *sinks;   /* [n_head] logits in the denominator only (natural log), or NULL */
    /* decode */
    int gpk;              /* CTAs per KV head (query heads split into groups of DEC_GMAX) */
    int chunk, nsplit;
    float *part;          /* [n][n_head][nsplit][hd + 2] */
    /* flash */
    const int4 *tiles;    /* {t0, count, seq, max pos} */
};

/* ---- split-K decode ---- */

#define DEC_WARPS 4
#define DEC_GMAX 8

template <int HDMAX> __global__ void __launch_bounds__(DEC_WARPS * 32) k_attn_decode(const attn_args a)
{
    __shared__ float q_s[DEC_GMAX][HDMAX];
    __shared__ float sc[DEC_WARPS][DEC_GMAX][32];
    __shared__ float w_acc[DEC_WARPS][DEC_GMAX][HDMAX];
    __shared__ float w_m[DEC_WARPS][DEC_GMAX], w_l[DEC_WARPS][DEC_GMAX];

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kh = blockIdx.x / a.gpk, sg = blockIdx.x % a.gpk;
    const int h0 = kh * a.G + sg * DEC_GMAX;
    const int gcount = a.G - sg * DEC_GMAX < DEC_GMAX ? a.G - sg * DEC_GMAX : DEC_GMAX;
    const int t = blockIdx.y, z = blockIdx.z;
    const int hd = a.hd;
    const int p = a.pos[t], s = a.seq[t];
    const bool ok = p >= 0 && p < a.n_ctx && s >= 0 && s < a.n_seq;
    const int L = ok ? a.last[t] + 1 : 0;
    /* the window moves the first visible cell; splits past the last one stay empty */
    const int first = a.n_swa > 0 && p >= a.n_swa ? p - a.n_swa + 1 : 0;
    const int c0 = first + z * a.chunk, c1 = min(c0 + a.chunk, L);

    for (int i = threadIdx.x; i < DEC_GMAX * HDMAX; i += blockDim.x) {
        const int g = i / HDMAX, e = i % HDMAX;
        q_s[g][e] = g < gcount && e < hd ? a.q[(int64_t)t * a.n_head * hd + (int64_t)(h0 + g) * hd + e] * a.scale_log2
                                         : 0.0f;
    }
    __syncthreads();

    int gsz = 1;
    while (gsz * 8 < hd)
        gsz *= 2;
    const int cps = 32 / gsz, ci = lane % gsz, cs = lane / gsz;
    const bool active = ci * 8 < hd;
    const uint8_t *kbase = a.kc + (int64_t)s * a.n_cells * a.k_row;
    const uint8_t *vbase = a.vc + (int64_t)s * a.n_cells * a.v_row;
    const int e0 = kh * hd + ci * 8;

    float acc[DEC_GMAX][8], m[DEC_GMAX], l[DEC_GMAX];
#pragma unroll
    for (int g = 0; g < DEC_GMAX; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++)
            acc[g][i] = 0.0f;
    }

    for (int tile = c0 + warp * 32; tile < c1; tile += DEC_WARPS * 32) {
        for (int s0 = 0; s0 < 32; s0 += cps) {
            const int c = tile + s0 + cs;
            const bool valid = c < c1;
            float kf[8];
            if (valid && active)
                kvl_load8(a.type_k, kbase + (int64_t)(c % a.n_cells) * a.k_row, a.d_kv, e0, a.k_al8, kf);
#pragma unroll
            for (int g = 0; g < DEC_GMAX; g++) {
                float part = 0.0f;
                if (valid && active) {
#pragma unroll
                    for (int i = 0; i < 8; i++)
                        part += q_s[g][ci * 8 + i] * kf[i];
                }
                for (int o = gsz / 2; o > 0; o >>= 1)
                    part += __shfl_xor_sync(0xffffffffu, part, o);
                if (ci == 0)
                    sc[warp][g][s0 + cs] = valid ? part : -INFINITY;
            }
        }
        __syncwarp();
        float corr[DEC_GMAX];
#pragma unroll
        for (int g = 0; g < DEC_GMAX; g++) {
            const float v = sc[warp][g][lane];
            float mx = v;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float mn = fmaxf(m[g], mx); /* finite: every tile holds a valid cell */
            corr[g] = exp2f(m[g] - mn);
            const float pr = exp2f(v - mn);
            float sum = pr;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                sum += __shfl_xor_sync(0xffffffffu, sum, o);
            l[g] = l[g] * corr[g] + sum;
            m[g] = mn;
            sc[warp][g][lane] = pr;
        }
        __syncwarp();
#pragma unroll
        for (int g = 0; g < DEC_GMAX; g++)
#pragma unroll
            for (int i = 0; i < 8; i++)
                acc[g][i] *= corr[g];
        for (int s0 = 0; s0 < 32; s0 += cps) {
            const int c = tile + s0 + cs;
            if (c < c1 && active) {
                float vf[8];
                kvl_load8(a.type_v, vbase + (int64_t)(c % a.n_cells) * a.v_row, a.d_kv, e0, a.v_al8, vf);
#pragma unroll
                for (int g = 0; g < DEC_GMAX; g++) {
                    const float pr = sc[warp][g][s0 + cs];
#pragma unroll
                    for (int i = 0; i < 8; i++)
                        acc[g][i] += pr * vf[i];
                }
            }
        }
        __syncwarp();
    }

    /* lanes holding the same chunk for different cells */
    for (int o = gsz; o < 32; o <<= 1)
#pragma unroll
        for (int g = 0; g < DEC_GMAX; g++)
#pragma unroll
            for (int i = 0; i < 8; i++)
                acc[g][i] += __shfl_xor_sync(0xffffffffu, acc[g][i], o);
    if (cs == 0 && active)
#pragma unroll
        for (int g = 0; g < DEC_GMAX; g++)
#pragma unroll
            for (int i = 0; i < 8; i++)
                w_acc[warp][g][ci * 8 + i] = acc[g][i];
    if (lane == 0)
#pragma unroll
        for (int g = 0; g < DEC_GMAX; g++) {
            w_m[warp][g] = m[g];
            w_l[warp][g] = l[g];
        }
    __syncthreads();

    for (int i = threadIdx.x; i < gcount * hd; i += blockDim.x) {
        const int g = i / hd, e = i % hd;
        float M = -INFINITY;
        for (int w = 0; w < DEC_WARPS; w++)
            M = fmaxf(M, w_m[w][g]);
        float val = 0.0f, Ls = 0.0f;
        if (M != -INFINITY) {
            for (int w = 0; w < DEC_WARPS; w++) {
                if (w_m[w][g] == -INFINITY)
                    continue;
                const float f = exp2f(w_m[w][g] - M);
                val += w_acc[w][g][e] * f;
                Ls += w_l[w][g] * f;
            }
        }
        float *pp = a.part + (((int64_t)t * a.n_head + h0 + g) * a.nsplit + z) * (hd + 2);
        pp[e] = val;
        if (e == 0) {
            pp[hd] = M;
            pp[hd + 1] = Ls;
        }
    }
}

__global__ void k_attn_merge(const attn_args a)
{
    const int h = blockIdx.x, t = blockIdx.y, hd = a.hd;
    const float *pp = a.part + ((int64_t)t * a.n_head + h) * a.nsplit * (hd + 2);
    float M = -INFINITY;
    for (int z = 0; z < a.nsplit; z++)
        M = fmaxf(M, pp[z * (hd + 2) + hd]);
    /* a sink joins the denominator with no value; scores here are in log2 units */
    const float sink = a.sinks ? a.sinks[h] * 1.4426950408889634f : -INFINITY;
    M = fmaxf(M, sink);
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
        float val = 0.0f, Ls = a.sinks ? exp2f(sink - M) : 0.0f;
        if (M != -INFINITY) {
            for (int z = 0; z < a.nsplit; z++) {
                const float mz = pp[z * (hd + 2) + hd];
                if (mz == -INFINITY)
                    continue;
                const float f = exp2f(mz - M);
                val += pp[z * (hd + 2) + e] * f;
                Ls += pp[z * (hd + 2) + hd + 1] * f;
            }
        }
        a.out[(int64_t)t * a.n_head * hd + (int64_t)h * hd + e] = Ls > 0.0f ? val / Ls : 0.0f;
    }
}

/* ---- flash attention for batches ---- */

#define FA_THREADS 128
#define ATTN_STEP_MAX 16

template <int HDP> struct fa_cfg {
    enum { BQ = HDP == 256 ? 32 : 64, BK = BQ, LD = HDP + 4, LDP = BK + 1, RT = BQ / 16, CT = BK / 8, DT = HDP / 8 };
    static constexpr size_t smem = sizeof(float) * ((size_t)BQ * LD + (size_t)BK * LD + (size_t)BQ * LDP + 5 * BQ);
};

/* cells [kt, kt+BK) of a KV head into dst[BK][LD] as f32; past last: zeros */
template <int HDP>
__device__ __forceinline__ void fa_load_tile(float *dst, const uint8_t *base, int64_t row_bytes, int type, int d_kv,
                                             bool al8, int kh, int hd, int kt, int last, int n_cells)
{
    typedef fa_cfg<HDP> C;
    for (int i = threadIdx.x; i < C::BK * (HDP / 8); i += FA_THREADS) {
        const int c = i / (HDP / 8), ch = i % (HDP / 8);
        float v[8];
        if (kt + c <= last && ch * 8 < hd) {
            kvl_load8(type, base + (int64_t)((kt + c) % n_cells) * row_bytes, d_kv, kh * hd + ch * 8, al8, v);
        } else {
#pragma unroll
            for (int k = 0; k < 8; k++)
                v[k] = 0.0f;
        }
        float4 *o = (float4 *)(dst + c * C::LD + ch * 8);
        o[0] = make_float4(v[0], v[1], v[2], v[3]);
        o[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
}

template <int HDP> __global__ void __launch_bounds__(FA_THREADS) k_attn_flash(const attn_args a)
{
    typedef fa_cfg<HDP> C;
    DYN_SHARED(float4, fa_smem4);
    float *Qs = (float *)fa_smem4;
    float *KVs = Qs + C::BQ * C::LD;
    float *Ps = KVs + C::BK * C::LD;
    float *row_m = Ps + C::BQ * C::LDP, *row_l = row_m + C::BQ, *row_c = row_l + C::BQ;
    int *row_pos = (int *)(row_c + C::BQ), *row_last = row_pos + C::BQ;

    const int4 tile = a.tiles[blockIdx.x];
    const int t0 = tile.x, cnt = tile.y, s = tile.z, last = tile.w;
    const int h = blockIdx.y, kh = h / a.G, hd = a.hd;
    const int tid = threadIdx.x, ty = tid / 8, tx = tid % 8;

    for (int i = tid; i < C::BQ * HDP; i += FA_THREADS) {
        const int r = i / HDP, e = i % HDP;
        Qs[r * C::LD + e] =
            r < cnt && e < hd ? a.q[(int64_t)(t0 + r) * a.n_head * hd + (int64_t)h * hd + e] * a.scale_log2 : 0.0f;
    }
    for (int r = tid; r < C::BQ; r += FA_THREADS) {
        row_m[r] = -INFINITY;
        row_l[r] = 0.0f;
        row_pos[r] = r < cnt ? a.pos[t0 + r] : -1;
        row_last[r] = r < cnt ? a.last[t0 + r] : -1;
    }
    float o[C::RT][C::DT];
#pragma unroll
    for (int i = 0; i < C::RT; i++)
#pragma unroll
        for (int k = 0; k < C::DT; k++)
            o[i][k] = 0.0f;

    const uint8_t *kbase = a.kc + (int64_t)s * a.n_cells * a.k_row;
    const uint8_t *vbase = a.vc + (int64_t)s * a.n_cells * a.v_row;
    const int tpr = FA_THREADS / C::BQ; /* threads per row in the softmax */

    /* a window hides every cell before its first token's: start at that cell's tile
     * (in a ring, earlier cells hold later positions) */
    int kt0 = 0;
    if (a.n_swa > 0) {
        int p_min = last;
        for (int r = 0; r < cnt; r++)
            p_min = min(p_min, a.pos[t0 + r]);
        kt0 = max(0, p_min - a.n_swa + 1) / C::BK * C::BK;
    }
    for (int kt = kt0; kt <= last; kt += C::BK) {
        __syncthreads();
        fa_load_tile<HDP>(KVs, kbase, a.k_row, a.type_k, a.d_kv, a.k_al8, kh, hd, kt, last, a.n_cells);
        __syncthreads();
        {
            float sacc[C::RT][C::CT];
#pragma unroll
            for (int i = 0; i < C::RT; i++)
#pragma unroll
                for (int c = 0; c < C::CT; c++)
                    sacc[i][c] = 0.0f;
            for (int e = 0; e < HDP; e += 4) {
                float4 qv[C::RT], kv[C::CT];
#pragma unroll
                for (int i = 0; i < C::RT; i++)
                    qv[i] = *(const float4 *)(Qs + (ty * C::RT + i) * C::LD + e);
#pragma unroll
                for (int c = 0; c < C::CT; c++)
                    kv[c] = *(const float4 *)(KVs + (tx + 8 * c) * C::LD + e);
#pragma unroll
                for (int i = 0; i < C::RT; i++)
#pragma unroll
                    for (int c = 0; c < C::CT; c++)
                        sacc[i][c] += qv[i].x * kv[c].x + qv[i].y * kv[c].y + qv[i].z * kv[c].z + qv[i].w * kv[c].w;
            }
#pragma unroll
            for (int i = 0; i < C::RT; i++) {
                const int r = ty * C::RT + i;
#pragma unroll
                for (int c = 0; c < C::CT; c++) {
                    const int cell = kt + tx + 8 * c;
                    const bool vis = cell <= row_last[r] && (a.n_swa <= 0 || cell > row_pos[r] - a.n_swa);
                    Ps[r * C::LDP + tx + 8 * c] = vis ? sacc[i][c] : -INFINITY;
                }
            }
        }
        __syncthreads();
        fa_load_tile<HDP>(KVs, vbase, a.v_row, a.type_v, a.d_kv, a.v_al8, kh, hd, kt, last, a.n_cells);
        {
            const int r = tid / tpr, part = tid % tpr;
            float mx = -INFINITY;
            for (int c = part; c < C::BK; c += tpr)
                mx = fmaxf(mx, Ps[r * C::LDP + c]);
            for (int o2 = tpr / 2; o2 > 0; o2 >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o2));
            const float mold = row_m[r], mn = fmaxf(mold, mx);
            float sum = 0.0f;
            if (mn == -INFINITY) { /* nothing visible yet (padding rows) */
                for (int c = part; c < C::BK; c += tpr)
                    Ps[r * C::LDP + c] = 0.0f;
            } else {
                for (int c = part; c < C::BK; c += tpr) {
                    const float pr = exp2f(Ps[r * C::LDP + c] - mn);
                    Ps[r * C::LDP + c] = pr;
                    sum += pr;
                }
            }
            for (int o2 = tpr / 2; o2 > 0; o2 >>= 1)
                sum += __shfl_xor_sync(0xffffffffu, sum, o2);
            __syncwarp();
            if (part == 0) {
                const float corr = mn == -INFINITY ? 1.0f : exp2f(mold - mn);
                row_c[r] = corr;
                row_l[r] = row_l[r] * corr + sum;
                row_m[r] = mn;
            }
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < C::RT; i++) {
            const float corr = row_c[ty * C::RT + i];
#pragma unroll
            for (int k = 0; k < C::DT; k++)
                o[i][k] *= corr;
        }
        for (int c = 0; c < C::BK; c++) {
            float pr[C::RT];
#pragma unroll
            for (int i = 0; i < C::RT; i++)
                pr[i] = Ps[(ty * C::RT + i) * C::LDP + c];
#pragma unroll
            for (int k = 0; k < C::DT; k += 4) {
                const float4 v = *(const float4 *)(KVs + c * C::LD + tx * C::DT + k);
#pragma unroll
                for (int i = 0; i < C::RT; i++) {
                    o[i][k] += pr[i] * v.x;
                    o[i][k + 1] += pr[i] * v.y;
                    o[i][k + 2] += pr[i] * v.z;
                    o[i][k + 3] += pr[i] * v.w;
                }
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < C::RT; i++) {
        const int r = ty * C::RT + i;
        if (r >= cnt)
            continue;
        float lr = row_l[r], f = 1.0f;
        if (a.sinks) { /* the sink's share of the denominator, after the online softmax */
            const float sink = a.sinks[h] * 1.4426950408889634f, M = row_m[r];
            if (sink > M) {
                f = exp2f(M - sink);
                lr = lr * f + 1.0f;
            } else {
                lr += exp2f(sink - M);
            }
        }
        const float inv = lr > 0.0f ? f / lr : 0.0f;
        float *dst = a.out + (int64_t)(t0 + r) * a.n_head * hd + (int64_t)h * hd;
#pragma unroll
        for (int k = 0; k < C::DT; k++) {
            const int e = tx * C::DT + k;
            if (e < hd)
                dst[e] = o[i][k] * inv;
        }
    }
}

/* ---- the op ---- */

/* Each token of the batch then sees up to the last position of its sequence in the
 * batch: the host computes those and uploads them beside the positions. */
void cuda_op_non_causal(backend *be)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || cb->n <= 0)
        return;
    if (cb->capturing) {
        cuda_fail(cb, EINVAL, "non_causal: inside a recorded step");
        return;
    }
    const int n = cb->n;
    if (n > cb->h_last_cap) {
        int32_t *h = (int32_t *)realloc(cb->h_last, sizeof(int32_t) * (size_t)n);
        if (!h) {
            cuda_fail(cb, ENOMEM, "non_causal: out of memory for %d tokens", n);
            return;
        }
        cb->h_last = h;
        cb->h_last_cap = n;
    }
    /* tokens of one sequence usually lie together: one scan per run of a sequence */
    for (int i = 0; i < n; i++)
        cb->h_last[i] = cb->h_pos[i];
    for (int i = 0; i < n; i++) {
        if (i > 0 && cb->h_seq[i] == cb->h_seq[i - 1])
            continue;
        int mx = -1;
        for (int j = 0; j < n; j++)
            if (cb->h_seq[j] == cb->h_seq[i] && cb->h_pos[j] > mx)
                mx = cb->h_pos[j];
        for (int j = 0; j < n; j++)
            if (cb->h_seq[j] == cb->h_seq[i])
                cb->h_last[j] = mx;
    }
    void *d = cuda_ws(cb, WS_LAST, sizeof(int32_t) * (size_t)n);
    if (!d || !cuda_upload_small(cb, d, cb->h_last, sizeof(int32_t) * (size_t)n))
        return;
    cb->d_last = (const int32_t *)d;
    cb->nc = true;
    cb->tiles_bq = 0; /* the tiles' last cells change */
}

template <int HDP> static bool fa_ready(cuda_backend *cb)
{
    static int state[64]; /* per device: 0 unknown, 1 ready, -1 unavailable */
    int *st = &state[cb->device & 63];
    if (*st == 0) {
        const size_t need = fa_cfg<HDP>::smem;
        if (need > cb->smem_optin)
            *st = -1;
        else
            *st = cudaFuncSetAttribute(k_attn_flash<HDP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need) ==
                          cudaSuccess
                      ? 1
                      : (cudaGetLastError(), -1);
    }
    return *st == 1;
}

/* Query tiles of at most bq consecutive tokens of one sequence, uploaded once per batch;
 * each with the last cell any of its tokens sees. */
static bool fa_tiles(cuda_backend *cb, int n, int bq)
{
    if (cb->tiles_bq == bq)
        return true;
    int4 *h = (int4 *)malloc(sizeof(int4) * (size_t)n);
    if (!h)
        return cuda_fail(cb, ENOMEM, "attention: out of memory for %d tiles", n);
    int nt = 0;
    for (int i = 0; i < n;) {
        const int32_t *last = cb->nc ? cb->h_last : cb->h_pos;
        int j = i, mx = last[i];
        while (j < n && j - i < bq && cb->h_seq[j] == cb->h_seq[i]) {
            if (last[j] > mx)
                mx = last[j];
            j++;
        }
        h[nt++] = make_int4(i, j - i, cb->h_seq[i], mx);
        i = j;
    }
    void *d = cuda_ws(cb, WS_TILES, sizeof(int4) * (size_t)n);
    bool ok = d && cuda_upload_small(cb, d, h, sizeof(int4) * (size_t)nt);
    free(h);
    if (!ok)
        return false;
    cb->tiles_bq = bq;
    cb->n_tiles = nt;
    return true;
}

void cuda_op_attention(backend *be, float *out, const float *q, const kv_cache *kv, int il, int n,
                       const attn_params *p)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0 || !kv_check(cb, kv, il, n, "attention"))
        return;
    const int hd = p->head_dim;
    const struct kv_layer *L = &kv->layer[il];
    if (hd <= 0 || hd % 8 != 0 || hd > 256 || p->n_head_kv <= 0 || p->n_head % p->n_head_kv != 0 ||
        p->n_head_kv * hd != L->n_embd_kv) {
        cuda_fail(cb, EINVAL, "attention: head_dim %d with %d/%d heads (cache rows %d) not supported", hd, p->n_head,
                  p->n_head_kv, L->n_embd_kv);
        return;
    }
    attn_args a;
    memset(&a, 0, sizeof a);
    a.q = q;
    a.out = out;
    a.kc = (const uint8_t *)L->k;
    a.vc = (const uint8_t *)L->v;
    a.k_row = (int64_t)L->k_row;
    a.v_row = (int64_t)L->v_row;
    a.type_k = kv->type_k;
    a.type_v = kv->type_v;
    a.k_al8 = L->k_row % 8 == 0;
    a.v_al8 = L->v_row % 8 == 0;
    a.d_kv = L->n_embd_kv;
    a.n_ctx = kv->n_ctx;
    a.n_cells = L->n_cells;
    a.n_seq = kv->n_seq;
    a.pos = cb->d_pos;
    a.seq = cb->d_seq;
    a.last = cb->nc ? cb->d_last : cb->d_pos;
    a.n_head = p->n_head;
    a.n_head_kv = p->n_head_kv;
    a.hd = hd;
    a.G = p->n_head / p->n_head_kv;
    a.scale_log2 = p->scale * 1.4426950408889634f;
    a.n_swa = p->n_swa;
    a.sinks = p->sinks;

    /* flash for real batches: tiles of several tokens; otherwise one token per CTA row.
     * Batches the model may record as decode steps (up to 16 tokens) always take the
     * one-token kernel, so a step runs the same kernels recorded as not. */
    const int hdp = hd <= 64 ? 64 : hd <= 128 ? 128 : 256;
    const int bq = hdp == 256 ? (int)fa_cfg<256>::BQ : (int)fa_cfg<128>::BQ;
    bool flash = n > ATTN_STEP_MAX && !cb->capturing &&
                 (hdp == 64 ? fa_ready<64>(cb) : hdp == 128 ? fa_ready<128>(cb) : fa_ready<256>(cb));
    if (flash) {
        if (!fa_tiles(cb, n, bq))
            return;
        flash = cb->n_tiles * 4 <= n; /* tiles average at least 4 tokens */
    }
    if (flash) {
        a.tiles = (const int4 *)cb->ws[WS_TILES];
        dim3 grid(cb->n_tiles, p->n_head);
        if (hdp == 64)
            LAUNCH(grid, FA_THREADS, fa_cfg<64>::smem, cb->stream, k_attn_flash<64>)(a);
        else if (hdp == 128)
            LAUNCH(grid, FA_THREADS, fa_cfg<128>::smem, cb->stream, k_attn_flash<128>)(a);
        else
            LAUNCH(grid, FA_THREADS, fa_cfg<256>::smem, cb->stream, k_attn_flash<256>)(a);
        CUDA_LAUNCHED(cb, "flash attention");
        return;
    }

    a.gpk = (a.G + DEC_GMAX - 1) / DEC_GMAX;
    const int64_t base = (int64_t)n * p->n_head_kv * a.gpk;
    const int bucket = cb->kv_bucket;
    int nsplit = (int)((2 * (int64_t)cb->n_sm + base - 1) / base);
    const int max_split = (bucket + DEC_WARPS * 32 - 1) / (DEC_WARPS * 32);
    nsplit = nsplit < 1 ? 1 : nsplit > max_split ? max_split : nsplit;
    int chunk = (bucket + nsplit - 1) / nsplit;
    chunk = (chunk + DEC_WARPS * 32 - 1) / (DEC_WARPS * 32) * (DEC_WARPS * 32);
    nsplit = (bucket + chunk - 1) / chunk;
    a.chunk = chunk;
    a.nsplit = nsplit;
    a.part = (float *)cuda_ws(cb, WS_ATTN, sizeof(float) * (size_t)n * p->n_head * nsplit * (hd + 2));
    if (!a.part)
        return;
    dim3 grid(p->n_head_kv * a.gpk, n, nsplit);
    if (hd <= 64)
        LAUNCH(grid, DEC_WARPS * 32, 0, cb->stream, k_attn_decode<64>)(a);
    else if (hd <= 128)
        LAUNCH(grid, DEC_WARPS * 32, 0, cb->stream, k_attn_decode<128>)(a);
    else
        LAUNCH(grid, DEC_WARPS * 32, 0, cb->stream, k_attn_decode<256>)(a);
    if (!CUDA_LAUNCHED(cb, "attention (decode)"))
        return;
    LAUNCH(dim3(p->n_head, n), hd < 128 ? hd : 128, 0, cb->stream, k_attn_merge)(a);
    CUDA_LAUNCHED(cb, "attention (merge)");
}
