/* moe.cu — mixture-of-experts: router top-k and the expert feed-forward.
 *
 * Only the selected experts are read. A (token, slot) is a "pair". For one token the
 * k pairs go straight to the matrix-vector kernels, each reading its expert from the
 * router ids on the device (nothing comes back to the host, so decode steps can be
 * recorded). For batches one small kernel groups the pairs by expert, up to 8 per
 * group, so each expert's weights are read once per 8 pairs; the group table has a
 * fixed upper size and the kernels skip rows past the real count. gate and up are
 * computed by one fused kernel that writes silu(gate)·up; down writes each pair's
 * output, and a last pass sums the pairs of a token with their router weights (fixed
 * order: deterministic).
 */
#include <errno.h>
#include <math.h>

#include "cuda_common.cuh"
#include "quant_layout.cuh"

#define TOPK_MAX_E_PER_LANE 16
#define MOE_GROUP_MAX_E 2048

__global__ void k_topk_softmax(const float *logits, int n, int E, int k, bool norm, int32_t *ids, float *w)
{
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (t >= n)
        return;
    float v[TOPK_MAX_E_PER_LANE];
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < TOPK_MAX_E_PER_LANE; i++) {
        const int e = lane + 32 * i;
        float x = e < E ? logits[(int64_t)t * E + e] : -INFINITY;
        if (x != x)
            x = -INFINITY;
        v[i] = x;
        mx = fmaxf(mx, x);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < TOPK_MAX_E_PER_LANE; i++) {
        v[i] = lane + 32 * i < E && mx != -INFINITY ? __expf(v[i] - mx) : (lane + 32 * i < E ? 1.0f : -1.0f);
        if (lane + 32 * i < E)
            sum += v[i];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float inv = 1.0f / sum;
#pragma unroll
    for (int i = 0; i < TOPK_MAX_E_PER_LANE; i++)
        if (lane + 32 * i < E)
            v[i] *= inv;
    /* v: probabilities, -1 for padding; selected ones become -2. After the butterfly
     * every lane holds the same winner (the order is total: value, then lower id). */
    float picked = 0.0f;
    for (int j = 0; j < k; j++) {
        float bv = -1.5f;
        int bi = 0x7fffffff;
#pragma unroll
        for (int i = 0; i < TOPK_MAX_E_PER_LANE; i++) {
            const int e = lane + 32 * i;
            if (v[i] > bv || (v[i] == bv && e < bi)) {
                bv = v[i];
                bi = e;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) {
                bv = ov;
                bi = oi;
            }
        }
#pragma unroll
        for (int i = 0; i < TOPK_MAX_E_PER_LANE; i++)
            if (lane + 32 * i == bi)
                v[i] = -2.0f;
        picked += bv;
        if (lane == 0) {
            ids[(int64_t)t * k + j] = bi;
            w[(int64_t)t * k + j] = bv;
        }
    }
    if (norm && lane == 0) {
        const float invp = picked > 0.0f ? 1.0f / picked : 0.0f;
        for (int j = 0; j < k; j++)
            w[(int64_t)t * k + j] *= invp;
    }
}

void cuda_op_topk_softmax(backend *be, int32_t *ids, float *weights, const float *logits, int n, int n_expert, int k,
                          bool norm)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    if (n_expert <= 0 || n_expert > 32 * TOPK_MAX_E_PER_LANE || k <= 0 || k > n_expert) {
        cuda_fail(cb, EINVAL, "topk_softmax: %d of %d experts not supported", k, n_expert);
        return;
    }
    LAUNCH(cdiv(n, 4), 128, 0, cb->stream, k_topk_softmax)(logits, n, n_expert, k, norm, ids, weights);
    CUDA_LAUNCHED(cb, "topk_softmax");
}

/* Pairs grouped by expert: groups[g] = {expert, count <= nt, first index into sorted}. */
__global__ void k_moe_group(const int32_t *ids, int P, int E, int nt, int4 *groups, int32_t *sorted, int32_t *n_groups)
{
    DYN_SHARED(int, sm);
    int *cnt = sm, *off = sm + E, *gof = sm + 2 * E, *fill = sm + 3 * E;
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        cnt[e] = fill[e] = 0;
    __syncthreads();
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
        int e = ids[p];
        e = e < 0 || e >= E ? 0 : e;
        atomicAdd(&cnt[e], 1);
    }
    __syncthreads();
    if (threadIdx.x < 32) { /* exclusive scans of counts and group counts, one warp */
        const int lane = threadIdx.x;
        int carry_o = 0, carry_g = 0;
        for (int b = 0; b < E; b += 32) {
            const int e = b + lane;
            const int c = e < E ? cnt[e] : 0, gc = (c + nt - 1) / nt;
            int so = c, sg = gc;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int a = __shfl_up_sync(0xffffffffu, so, o), g = __shfl_up_sync(0xffffffffu, sg, o);
                if (lane >= o) {
                    so += a;
                    sg += g;
                }
            }
            if (e < E) {
                off[e] = carry_o + so - c;
                gof[e] = carry_g + sg - gc;
            }
            carry_o += __shfl_sync(0xffffffffu, so, 31);
            carry_g += __shfl_sync(0xffffffffu, sg, 31);
        }
        if (lane == 0)
            *n_groups = carry_g;
    }
    __syncthreads();
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
        int e = ids[p];
        e = e < 0 || e >= E ? 0 : e;
        const int slot = atomicAdd(&fill[e], 1);
        sorted[off[e] + slot] = p;
    }
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        const int c = cnt[e];
        for (int g = 0; g * nt < c; g++)
            groups[gof[e] + g] = make_int4(e, c - g * nt < nt ? c - g * nt : nt, off[e] + g * nt, 0);
    }
}

__global__ void k_moe_sum(float *out, const float *y, const float *w, int n, int k, int d)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * d)
        return;
    const int64_t t = i / d, r = i % d;
    float s = 0.0f;
    for (int j = 0; j < k; j++)
        s += w[t * k + j] * y[(t * k + j) * d + r];
    out[i] = s;
}

/* h[p][i] = act(gu[p][i]) * gu[p][ff + i]: the gate and up products of pair p side by
 * side (a fused gate_up tensor's rows, or the two products written there) */
__global__ void k_moe_act(float *h, const float *gu, int64_t P, int64_t ff, bool gelu)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P * ff)
        return;
    const int64_t p = i / ff, r = i % ff;
    const float g = gu[p * 2 * ff + r], u = gu[p * 2 * ff + ff + r];
    const float a = gelu ? 0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g)))
                         : g / (1.0f + __expf(-g));
    h[i] = a * u;
}

/* h[p] = act(h[p] + bg[e], u[p] + bu[e]), e = ids[p]: the experts' gate and up biases and
 * the clamped SwiGLU (gpt-oss; limit 0: silu(g) * u) */
__global__ void k_moe_act_biased(float *h, const float *u, const int32_t *ids, const float *bg, const float *bu, int P,
                          int ff, float alpha, float limit)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)P * ff)
        return;
    const int64_t p = i / ff, r = i % ff, e = ids[p];
    float g = h[i] + (bg ? bg[e * ff + r] : 0.0f), v = u[i] + (bu ? bu[e * ff + r] : 0.0f);
    if (limit > 0.0f) {
        g = fminf(g, limit);
        v = fminf(fmaxf(v, -limit), limit);
        h[i] = g / (1.0f + expf(-alpha * g)) * (v + 1.0f);
    } else {
        h[i] = g / (1.0f + expf(-g)) * v;
    }
}

/* y[p] += bd[ids[p]]: the down bias, before the router weight */
__global__ void k_moe_down_bias(float *y, const int32_t *ids, const float *bd, int P, int d)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)P * d)
        return;
    y[i] += bd[(int64_t)ids[i / d] * d + i % d];
}

void cuda_op_moe_ffn(backend *be, float *out, const float *x, const tensor *gate, const tensor *up, const tensor *down,
                     const int32_t *ids, const float *weights, int n, int k, int act, const moe_extra *ex)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0 || k <= 0)
        return;
    const bool fused = up == NULL;
    const int64_t d = gate->ne[0], ff = fused ? gate->ne[1] / 2 : gate->ne[1], E = gate->ne[2] > 0 ? gate->ne[2] : 1;
    if ((fused && gate->ne[1] != 2 * ff) || (act != FFN_SILU && act != FFN_GELU) || (ex && (fused || act != FFN_SILU)) ||
        (!fused && (up->type != gate->type || up->ne[0] != d || up->ne[1] != ff || (up->ne[2] > 0 ? up->ne[2] : 1) != E)) ||
        down->ne[0] != ff || down->ne[1] != d || (down->ne[2] > 0 ? down->ne[2] : 1) != E) {
        cuda_fail(cb, EINVAL, "moe_ffn: expert tensors of mismatched types or shapes");
        return;
    }
    const int qk_gate = cq_block_elems(gate->type), qk_down = cq_block_elems(down->type);
    if (E > MOE_GROUP_MAX_E || qk_gate == 0 || qk_down == 0 || d % qk_gate || ff % qk_down) {
        cuda_fail(cb, EINVAL, "moe_ffn: %lld experts of %lld x %lld not supported", (long long)E, (long long)ff,
                  (long long)d);
        return;
    }
    const int P = n * k;
    mmv_job j;
    memset(&j, 0, sizeof j);
    j.ne2 = E;
    if (n == 1) {
        j.ids = ids;
        j.grid_rows = P;
        j.nt = 1;
    } else {
        const int gmax = (P + 7) / 8 + (P < E ? P : (int)E);
        char *g = (char *)cuda_ws(cb, WS_MOE_GROUPS, sizeof(int4) * (size_t)gmax + sizeof(int32_t) * ((size_t)P + 4));
        if (!g)
            return;
        j.groups = (const int4 *)g;
        j.sorted = (const int32_t *)(g + sizeof(int4) * (size_t)gmax);
        j.n_groups = j.sorted + P;
        j.grid_rows = gmax;
        j.nt = 8;
        LAUNCH(1, 1024, 4 * sizeof(int) * (size_t)E, cb->stream, k_moe_group)(ids, P, (int)E, 8, (int4 *)j.groups,
                                                                          (int32_t *)j.sorted, (int32_t *)j.n_groups);
        if (!CUDA_LAUNCHED(cb, "moe grouping"))
            return;
    }
    /* y first holds the gate and up products side by side when they are not fused
     * into one gated product ([P][2*ff]), then the down products */
    const bool gated = !fused && act == FFN_SILU;
    float *h = (float *)cuda_ws(cb, WS_MOE_H, sizeof(float) * (size_t)P * ff);
    float *y = (float *)cuda_ws(cb, WS_MOE_Y, sizeof(float) * (size_t)P * (gated || d > 2 * ff ? d : 2 * ff));
    if (!h || !y)
        return;

    /* h[p] = act(gate_e x) * up_e x */
    j.w = gate->data;
    j.w2 = gated ? up->data : NULL;
    j.type = gate->type;
    j.ne0 = d;
    j.ne1 = fused ? 2 * ff : ff;
    j.act_div = k;
    j.out = gated ? h : y;
    j.ldo = gated ? ff : 2 * ff;
    if (cq_is_float(gate->type)) {
        j.xf = x;
    } else {
        int8_t *q = (int8_t *)cuda_ws(cb, WS_ACT_Q, (size_t)n * d + (size_t)n * (d / 32) * sizeof(float4) + 256);
        if (!q)
            return;
        float4 *m = (float4 *)(q + (((size_t)n * d + 255) & ~(size_t)255));
        if (!cuda_quantize_act(cb, x, n, d, q, m))
            return;
        j.xq = q;
        j.xm = m;
    }
    if (ex) { /* gate and up apart, then biases and the activation */
        float *u = (float *)cuda_ws(cb, WS_MOE_U, sizeof(float) * (size_t)P * ff);
        if (!u)
            return;
        j.w2 = NULL;
        if (!cuda_mmv(cb, &j))
            return;
        j.w = up->data;
        j.out = u;
        if (!cuda_mmv(cb, &j))
            return;
        LAUNCH(cdiv((int64_t)P * ff, 256), 256, 0, cb->stream, k_moe_act_biased)(
            h, u, ids, ex->gate_b ? (const float *)ex->gate_b->data : NULL,
            ex->up_b ? (const float *)ex->up_b->data : NULL, P, (int)ff, ex->swiglu_alpha, ex->swiglu_limit);
        if (!CUDA_LAUNCHED(cb, "moe activation"))
            return;
    } else {
        if (!cuda_mmv(cb, &j))
            return;
        if (!gated) {
            if (!fused) { /* the up products beside the gate products */
                j.w = up->data;
                j.out = y + ff;
                if (!cuda_mmv(cb, &j))
                    return;
            }
            LAUNCH(cdiv((int64_t)P * ff, 256), 256, 0, cb->stream, k_moe_act)(h, y, P, ff, act == FFN_GELU);
            if (!CUDA_LAUNCHED(cb, "moe activation"))
                return;
        }
    }

    /* y[p] = down_e h[p] */
    j.w = down->data;
    j.w2 = NULL;
    j.type = down->type;
    j.ne0 = ff;
    j.ne1 = d;
    j.act_div = 1;
    j.out = y;
    j.ldo = d;
    j.xf = NULL;
    j.xq = NULL;
    j.xm = NULL;
    if (cq_is_float(down->type)) {
        j.xf = h;
    } else {
        int8_t *q = (int8_t *)cuda_ws(cb, WS_MOE_HQ, (size_t)P * ff + (size_t)P * (ff / 32) * sizeof(float4) + 256);
        if (!q)
            return;
        float4 *m = (float4 *)(q + (((size_t)P * ff + 255) & ~(size_t)255));
        if (!cuda_quantize_act(cb, h, P, ff, q, m))
            return;
        j.xq = q;
        j.xm = m;
    }
    if (!cuda_mmv(cb, &j))
        return;
    if (ex && ex->down_b) {
        LAUNCH(cdiv((int64_t)P * d, 256), 256, 0, cb->stream, k_moe_down_bias)(y, ids, (const float *)ex->down_b->data,
                                                                            P, (int)d);
        if (!CUDA_LAUNCHED(cb, "moe down bias"))
            return;
    }
    LAUNCH(cdiv((int64_t)n * d, 256), 256, 0, cb->stream, k_moe_sum)(out, y, weights, n, k, (int)d);
    CUDA_LAUNCHED(cb, "moe sum");
}
