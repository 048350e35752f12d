/* recurrent.cu — the ops of Gated DeltaNet layers (hybrid Qwen): the causal depthwise
 * conv with its state, the per-head L2 norm, the decay and beta gates, the gated delta
 * rule over each sequence's state, the gated RMS norm and the sigmoid gates.
 *
 * Shapes (as backend.h states them): n tokens of the current batch, C conv channels,
 * K conv taps, n_k key heads, n_v value heads, d head size (keys and values alike).
 * The state lives in the layer's cache (kv->state[il]), in device memory:
 *   conv [n_seq][K-1][C]       the last K-1 inputs of each sequence, oldest first
 *   ssm  [n_seq][n_v][d][d]    S_j stored transposed: row jv (a value dim) holds the
 *                              d key-dim entries S[.][jv]
 * Both kernels that touch state walk the batch in order, so a batch may interleave any
 * number of sequences; a token at position 0 starts its sequence from zeros (a cleared
 * sequence needs no reset call). With per-token snapshots (kv.h, kv_snap_arm) they also
 * write the state after each token of an armed sequence's window to its slot
 *   snap [n_seq][n_snap][...]  slot pos - snap_from[seq], snap_from read on the device
 * so that a rejected draft is taken back without decoding again. Every kernel here has a plain reference: the CPU
 * backend's op of the same name, against which tests/gpu_ops.c checks it.
 */
#include <errno.h>
#include <math.h>

#include "cuda_common.cuh"

#define CONV_MAX_TAPS 16 /* model.c refuses ssm.conv_kernel above this */

static unsigned grid_of(int64_t n, int threads)
{
    const int64_t g = (n + threads - 1) / threads;
    return g < 65535 ? (unsigned)(g > 0 ? g : 1) : 65535u;
}

__device__ __forceinline__ float silu_d(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float sigmoid_d(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
 * red: 32 floats of shared memory, free again when this returns. */
__device__ __forceinline__ float rec_block_sum(float v, float *red)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads(); /* red is read by every warp before anyone reuses it */
    return v;
}

/* ---------------------------------------------------------------- causal conv */

/* One thread per channel c, walking the batch in order with its sequence's last K-1
 * inputs at hand (hist[0] oldest); switching sequence stores them back and loads the
 * other's. out[t][c] = silu(w[c][K-1] x_t[c] + sum_{i<K-1} w[c][i] hist[i]), then the
 * window moves on by x_t[c]: the CPU's order of additions. KT > 0: K = KT known here, so
 * the loops unroll and taps and window stay in registers (the models' 4 taps); KT == 0:
 * any K up to CONV_MAX_TAPS, the arrays indexed at run time. */
/* The snapshot slot of token (s, p): -1 none. */
__device__ __forceinline__ int snap_slot_d(const int32_t *snap_from, int n_snap, int s, int p)
{
    const int f = snap_from[s];
    return f >= 0 && p >= f && p - f < n_snap ? p - f : -1;
}

template <int KT>
__global__ void k_ssm_conv(float *out, const float *x, int64_t xs, const float *w, float *state,
                           int64_t seq_floats, const int32_t *pos, const int32_t *seq, int n, int C, int K_,
                           float *snap, const int32_t *snap_from, int n_snap)
{
    const int K = KT > 0 ? KT : K_;
    constexpr int KA = KT > 0 ? KT : CONV_MAX_TAPS;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C)
        return;
    float wc[KA], hist[KA];
#pragma unroll
    for (int i = 0; i < KA; i++)
        wc[i] = i < K ? w[(int64_t)c * K + i] : 0.0f;
    int cur = -1;
    for (int t = 0; t < n; t++) {
        const int s = seq[t];
        if (s != cur) {
            if (cur >= 0) {
#pragma unroll
                for (int r = 0; r < KA - 1; r++)
                    if (r < K - 1)
                        state[cur * seq_floats + (int64_t)r * C + c] = hist[r];
            }
#pragma unroll
            for (int r = 0; r < KA - 1; r++)
                if (r < K - 1)
                    hist[r] = state[s * seq_floats + (int64_t)r * C + c];
            cur = s;
        }
        if (pos[t] == 0) {
#pragma unroll
            for (int r = 0; r < KA - 1; r++)
                hist[r] = 0.0f;
        }
        const float xv = x[(int64_t)t * xs + c];
        float acc = wc[K - 1] * xv;
#pragma unroll
        for (int r = 0; r < KA - 1; r++)
            if (r < K - 1)
                acc += wc[r] * hist[r];
#pragma unroll
        for (int r = 0; r + 1 < KA - 1; r++)
            if (r + 1 < K - 1)
                hist[r] = hist[r + 1];
        if (K > 1)
            hist[K - 2] = xv;
        out[(int64_t)t * C + c] = silu_d(acc);
        const int sl = snap ? snap_slot_d(snap_from, n_snap, s, pos[t]) : -1;
        if (sl >= 0) { /* the window after this token */
            float *dst = snap + ((int64_t)s * n_snap + sl) * seq_floats;
#pragma unroll
            for (int r = 0; r < KA - 1; r++)
                if (r < K - 1)
                    dst[(int64_t)r * C + c] = hist[r];
        }
    }
    if (cur >= 0) {
#pragma unroll
        for (int r = 0; r < KA - 1; r++)
            if (r < K - 1)
                state[cur * seq_floats + (int64_t)r * C + c] = hist[r];
    }
}

/* A batch op needs the batch it runs on: n of its tokens, positions and sequences. */
static bool batch_ok(cuda_backend *cb, int n, const char *op)
{
    if (n > cb->n || !cb->d_pos || !cb->d_seq)
        return cuda_fail(cb, EINVAL, "%s: %d tokens, the batch has %d", op, n, cb->n);
    return true;
}

void cuda_op_ssm_conv(backend *be, float *out, const float *x, int64_t x_stride, const float *w, kv_cache *kv,
                      int il, int n, int channels, int d_conv)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    if (!batch_ok(cb, n, "ssm_conv"))
        return;
    if (!kv->state || il < 0 || il >= kv->n_layer || !kv->state[il].conv || kv->state[il].be != be ||
        d_conv < 1 || d_conv > CONV_MAX_TAPS || (size_t)(d_conv - 1) * channels != kv->conv_floats) {
        cuda_fail(cb, EINVAL, "ssm_conv: layer %d has no conv state of %d x %d on this device", il, d_conv - 1,
                  channels);
        return;
    }
    float *snap = kv->n_snap ? kv->state[il].conv_snap : NULL;
#define CONV_ARGS out, x, x_stride, w, kv->state[il].conv, (int64_t)kv->conv_floats, cb->d_pos, cb->d_seq, n, channels, \
                  d_conv, snap, kv->state[il].snap_from_be, kv->n_snap
    if (d_conv == 4)
        LAUNCH(grid_of(channels, 128), 128, 0, cb->stream, k_ssm_conv<4>)(CONV_ARGS);
    else
        LAUNCH(grid_of(channels, 128), 128, 0, cb->stream, k_ssm_conv<0>)(CONV_ARGS);
#undef CONV_ARGS
    CUDA_LAUNCHED(cb, "ssm_conv");
}

/* ---------------------------------------------------------------- L2 norm */

/* One warp per slice of d floats (slice i: row i / groups, group i % groups). */
__global__ void k_l2norm(float *x, int64_t slices, int groups, int d, int64_t stride, float eps)
{
    const int64_t i = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (i >= slices) /* uniform over the warp: the shuffles below see whole warps */
        return;
    float *p = x + (i / groups) * stride + (i % groups) * d;
    float ss = 0.0f;
    for (int j = lane; j < d; j += 32)
        ss += p[j] * p[j];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float nrm = sqrtf(ss);
    const float sc = 1.0f / (nrm > eps ? nrm : eps);
    for (int j = lane; j < d; j += 32)
        p[j] *= sc;
}

void cuda_op_l2norm(backend *be, float *x, int rows, int groups, int d, int64_t row_stride, float eps)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || rows <= 0 || groups <= 0 || d <= 0)
        return;
    const int64_t slices = (int64_t)rows * groups;
    if (slices / 4 + 1 > 0x7fffffff) {
        cuda_fail(cb, EINVAL, "l2norm: %lld slices", (long long)slices);
        return;
    }
    LAUNCH(cdiv(slices, 4), 128, 0, cb->stream, k_l2norm)(x, slices, groups, d, row_stride, eps);
    CUDA_LAUNCHED(cb, "l2norm");
}

/* ---------------------------------------------------------------- gates */

/* g = softplus(g + dt_bias) * a (a = -exp(A): g is the log of the decay), beta =
 * sigmoid(beta); [n][n_v], one thread per entry. */
__global__ void k_delta_gates(float *g, float *beta, const float *dt_bias, const float *a, int64_t total, int n_v)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int j = (int)(i % n_v);
        const float x = g[i] + dt_bias[j];
        const float sp = x > 20.0f ? x : log1pf(expf(x)); /* softplus, linear where exp would overflow */
        g[i] = sp * a[j];
        beta[i] = sigmoid_d(beta[i]);
    }
}

void cuda_op_delta_gates(backend *be, float *g, float *beta, const float *dt_bias, const float *a, int n, int n_v)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0 || n_v <= 0)
        return;
    const int64_t total = (int64_t)n * n_v;
    LAUNCH(grid_of(total, 256), 256, 0, cb->stream, k_delta_gates)(g, beta, dt_bias, a, total, n_v);
    CUDA_LAUNCHED(cb, "delta_gates");
}

/* ---------------------------------------------------------------- gated delta rule */

/* One block per value head j, P threads per row jv of S_j (blockDim.x = P d). Each row
 * evolves on its own:
 *   s = exp(g) s;  u = s.k;  s += beta (v[jv] - u) k;  o[jv] = (s.q) / sqrt(d)
 * so the block walks the batch in order and only shares each token's k and q (of the
 * head's K head kh), staged in shared memory: two buffers, so one barrier per token
 * keeps a token's loads from overwriting what slow threads still read of the previous
 * one. D > 0: the row lives in registers between tokens of one sequence (stored back
 * when the sequence changes and at the end), each of its P threads holding D/P entries
 * and the two dot products summed over the pair by a shuffle (P = 2 for d = 128: a
 * whole row of 128 would not fit in one thread's registers); D == 0: any d, P = 1, the
 * row stays in device memory. With P = 1 the CPU's delta_row adds in the same order. */
template <int D, int P>
__global__ void k_gated_delta(float *out, const float *qkv, int64_t stride, const float *g, const float *beta,
                              float *ssm, int64_t seq_floats, const int32_t *pos, const int32_t *seq, int n, int n_k,
                              int n_v, int d, bool tiled, float scale, float *snap, const int32_t *snap_from,
                              int n_snap)
{
    static_assert(P == 1 || (P == 2 && D > 0 && D % 2 == 0), "a row is split over two threads at most");
    constexpr int R = D > 0 ? D / P : 1; /* entries of the row this thread holds */
    DYN_SHARED(float, kq);                /* [2][2][d]: per buffer k then q */
    const int j = blockIdx.x, jv = threadIdx.x / P, part = threadIdx.x % P;
    const int kh = tiled ? j % n_k : j / (n_v / n_k);
    const int64_t row_off = ((int64_t)j * d + jv) * d + part * R;
    float reg[R];
    float *s = NULL; /* D == 0: the row in device memory */
    int cur = -1;
    for (int t = 0; t < n; t++) {
        float *sh = kq + (t & 1) * 2 * d;
        const float *row = qkv + (int64_t)t * stride;
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            sh[i] = row[(int64_t)(n_k + kh) * d + i];
            sh[d + i] = row[(int64_t)kh * d + i];
        }
        __syncthreads();
        const int sq = seq[t];
        if (sq != cur) {
            float *src = ssm + sq * seq_floats + row_off;
            if (D > 0) {
                if (cur >= 0) {
                    float *dst = ssm + cur * seq_floats + row_off;
#pragma unroll
                    for (int x = 0; x < R; x++)
                        dst[x] = reg[x];
                }
#pragma unroll
                for (int x = 0; x < R; x++)
                    reg[x] = src[x];
            } else {
                s = src;
            }
            cur = sq;
        }
        if (pos[t] == 0) {
            if (D > 0) {
#pragma unroll
                for (int x = 0; x < R; x++)
                    reg[x] = 0.0f;
            } else {
                for (int x = 0; x < d; x++)
                    s[x] = 0.0f;
            }
        }
        const float eg = expf(g[(int64_t)t * n_v + j]), bt = beta[(int64_t)t * n_v + j];
        const float vv = row[(int64_t)2 * n_k * d + (int64_t)j * d + jv];
        const float *k = sh + part * R, *q = sh + d + part * R;
        float u = 0.0f, acc = 0.0f;
        if (D > 0) {
#pragma unroll
            for (int x = 0; x < R; x++) {
                reg[x] *= eg;
                u += reg[x] * k[x];
            }
            if (P == 2) /* the pair are neighbouring lanes of one warp, every lane active */
                u += __shfl_xor_sync(0xffffffffu, u, 1);
            const float delta = bt * (vv - u);
#pragma unroll
            for (int x = 0; x < R; x++) {
                reg[x] += k[x] * delta;
                acc += reg[x] * q[x];
            }
            if (P == 2)
                acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        } else {
            for (int x = 0; x < d; x++) {
                s[x] *= eg;
                u += s[x] * k[x];
            }
            const float delta = bt * (vv - u);
            for (int x = 0; x < d; x++) {
                s[x] += k[x] * delta;
                acc += s[x] * q[x];
            }
        }
        if (part == 0)
            out[(int64_t)t * n_v * d + (int64_t)j * d + jv] = acc * scale;
        const int sl = snap ? snap_slot_d(snap_from, n_snap, sq, pos[t]) : -1;
        if (sl >= 0) { /* this thread's part of the row after this token */
            float *dst = snap + ((int64_t)sq * n_snap + sl) * seq_floats + row_off;
            if (D > 0) {
#pragma unroll
                for (int x = 0; x < R; x++)
                    dst[x] = reg[x];
            } else {
                for (int x = 0; x < d; x++)
                    dst[x] = s[x];
            }
        }
    }
    if (D > 0 && cur >= 0) {
        float *dst = ssm + cur * seq_floats + row_off;
#pragma unroll
        for (int x = 0; x < R; x++)
            dst[x] = reg[x];
    }
}

void cuda_op_gated_delta(backend *be, float *out, const float *qkv, int64_t stride, const float *g,
                         const float *beta, kv_cache *kv, int il, int n, const delta_params *p)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    if (!batch_ok(cb, n, "gated_delta"))
        return;
    if (!kv->state || il < 0 || il >= kv->n_layer || !kv->state[il].ssm || kv->state[il].be != be || p->n_k <= 0 ||
        p->n_v % p->n_k || p->d <= 0 || p->d > 1024 || (size_t)p->n_v * p->d * p->d != kv->ssm_floats) {
        cuda_fail(cb, EINVAL, "gated_delta: layer %d has no state of %d heads of %d x %d on this device", il,
                  p->n_v, p->d, p->d);
        return;
    }
    /* p->chunk (the chunked form) is a choice of the CPU backend's; here the token by
     * token form runs for prompts as well: its steps are short and every head runs at
     * once, and a prompt gives the bits one token per call would. */
    const float scale = 1.0f / sqrtf((float)p->d);
    const size_t smem = sizeof(float) * 4 * (size_t)p->d;
    float *ssm = kv->state[il].ssm;
    const int64_t sf = (int64_t)kv->ssm_floats;
    float *snap = kv->n_snap ? kv->state[il].ssm_snap : NULL;
#define GD_ARGS out, qkv, stride, g, beta, ssm, sf, cb->d_pos, cb->d_seq, n, p->n_k, p->n_v, p->d, p->tiled, scale, \
                snap, kv->state[il].snap_from_be, kv->n_snap
    switch (p->d) {
    case 64:
        LAUNCH(p->n_v, 64, smem, cb->stream, k_gated_delta<64, 1>)(GD_ARGS);
        break;
    case 128:
        LAUNCH(p->n_v, 256, smem, cb->stream, k_gated_delta<128, 2>)(GD_ARGS);
        break;
    default:
        LAUNCH(p->n_v, p->d, smem, cb->stream, k_gated_delta<0, 1>)(GD_ARGS);
        break;
    }
#undef GD_ARGS
    CUDA_LAUNCHED(cb, "gated_delta");
}

/* ---------------------------------------------------------------- norms and gates */

/* One block per row of d: out = x / rms(x) * w * silu(z). */
__global__ void k_gated_rmsnorm(float *out, const float *x, const float *w, const float *z, int d, float eps)
{
    __shared__ float red[32];
    const int64_t r = blockIdx.x;
    const float *xr = x + r * d, *zr = z + r * d;
    float *o = out + r * d;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        ss += xr[i] * xr[i];
    ss = rec_block_sum(ss, red);
    const float sc = rsqrtf(ss / (float)d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        o[i] = xr[i] * sc * w[i] * silu_d(zr[i]);
}

void cuda_op_gated_rmsnorm(backend *be, float *out, const float *x, const float *w, const float *z, int rows, int d,
                           float eps)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || rows <= 0 || d <= 0)
        return;
    const int threads = d >= 256 ? 256 : d > 64 ? 128 : 64;
    LAUNCH(rows, threads, 0, cb->stream, k_gated_rmsnorm)(out, x, w, z, d, eps);
    CUDA_LAUNCHED(cb, "gated_rmsnorm");
}

/* x[r][i] *= sigmoid(g[r][i]), or sigmoid(g[r]) for the whole row (per_row). */
__global__ void k_sigmoid_mul(float *x, const float *g, int64_t total, int d, bool per_row)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= sigmoid_d(per_row ? g[i / d] : g[i]);
}

void cuda_op_sigmoid_mul(backend *be, float *x, const float *g, int rows, int d, bool per_row)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || rows <= 0 || d <= 0)
        return;
    const int64_t total = (int64_t)rows * d;
    LAUNCH(grid_of(total, 256), 256, 0, cb->stream, k_sigmoid_mul)(x, g, total, d, per_row);
    CUDA_LAUNCHED(cb, "sigmoid_mul");
}
