/* elementwise.cu — RMSNorm, residual and bias adds, SwiGLU, rotary embeddings; the vision
 * tower's LayerNorm, GELUs, clamp and average pooling. */
#include <errno.h>
#include <math.h>

#include "cuda_common.cuh"
#include "rope_theta.cuh"

__device__ __forceinline__ float block_sum(float v, float *red)
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
    return v;
}

__global__ void k_rmsnorm(float *out, const float *x, const float *w, int d, float eps)
{
    __shared__ float red[32];
    const float *xr = x + (int64_t)blockIdx.x * d;
    float *o = out + (int64_t)blockIdx.x * d;
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        s += xr[i] * xr[i];
    s = block_sum(s, red);
    const float scale = rsqrtf(s / (float)d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        o[i] = w ? xr[i] * scale * w[i] : xr[i] * scale;
}

void cuda_op_rmsnorm(backend *be, float *out, const float *x, const float *w, int rows, int d, float eps)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || rows <= 0 || d <= 0)
        return;
    const int threads = d >= 1024 ? 1024 : d >= 256 ? 256 : 64;
    LAUNCH(rows, threads, 0, cb->stream, k_rmsnorm)(out, x, w, d, eps);
    CUDA_LAUNCHED(cb, "rmsnorm");
}

/* two passes over the row: the mean, then the variance around it */
__global__ void k_layer_norm(float *out, const float *x, const float *w, const float *b, int d, float eps)
{
    __shared__ float red[32];
    const float *xr = x + (int64_t)blockIdx.x * d;
    float *o = out + (int64_t)blockIdx.x * d;
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        s += xr[i];
    s = block_sum(s, red);
    const float mean = s / (float)d;
    __syncthreads(); /* red is reused */
    float q = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        q += (xr[i] - mean) * (xr[i] - mean);
    q = block_sum(q, red);
    const float scale = rsqrtf(q / (float)d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        o[i] = (xr[i] - mean) * scale * w[i] + (b ? b[i] : 0.0f);
}

void cuda_op_layer_norm(backend *be, float *out, const float *x, const float *w, const float *b, int rows, int d,
                        float eps)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || rows <= 0 || d <= 0)
        return;
    const int threads = d >= 1024 ? 1024 : d >= 256 ? 256 : 64;
    LAUNCH(rows, threads, 0, cb->stream, k_layer_norm)(out, x, w, b, d, eps);
    CUDA_LAUNCHED(cb, "layer_norm");
}

__global__ void k_add(float *x, const float *y, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

static unsigned grid_for(int64_t n) { return n / 256 + 1 < 65536 ? (unsigned)(n / 256 + 1) : 65535u; }

void cuda_op_add(backend *be, float *x, const float *y, int64_t n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    LAUNCH(grid_for(n), 256, 0, cb->stream, k_add)(x, y, n);
    CUDA_LAUNCHED(cb, "add");
}

__global__ void k_add_bias(float *x, const float *bias, int64_t n, int d)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] += bias[i % d];
}

void cuda_op_add_bias(backend *be, float *x, const float *bias, int rows, int d)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || rows <= 0 || d <= 0)
        return;
    const int64_t n = (int64_t)rows * d;
    LAUNCH(grid_for(n), 256, 0, cb->stream, k_add_bias)(x, bias, n, d);
    CUDA_LAUNCHED(cb, "add_bias");
}

__global__ void k_swiglu(float *out, const float *g, const float *u, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float a = g[i];
        out[i] = a / (1.0f + __expf(-a)) * u[i];
    }
}

void cuda_op_swiglu(backend *be, float *out, const float *gate, const float *up, int64_t n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    LAUNCH(grid_for(n), 256, 0, cb->stream, k_swiglu)(out, gate, up, n);
    CUDA_LAUNCHED(cb, "swiglu");
}

/* the tanh approximation of GELU, as the CPU backend computes it */
__global__ void k_geglu(float *out, const float *g, const float *u, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float a = g[i];
        out[i] = 0.5f * a * (1.0f + tanhf(0.7978845608f * (a + 0.044715f * a * a * a))) * u[i];
    }
}

void cuda_op_geglu(backend *be, float *out, const float *gate, const float *up, int64_t n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    LAUNCH(grid_for(n), 256, 0, cb->stream, k_geglu)(out, gate, up, n);
    CUDA_LAUNCHED(cb, "geglu");
}

/* out = act(x) * up, act an enum gelu_kind */
__global__ void k_gelu(float *out, const float *x, const float *up, int64_t n, int kind)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        float a;
        if (kind == GELU_ERF)
            a = 0.5f * v * (1.0f + erff(v * 0.7071067811865475f));
        else if (kind == GELU_QUICK)
            a = v / (1.0f + expf(-1.702f * v));
        else
            a = 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
        out[i] = up ? a * up[i] : a;
    }
}

void cuda_op_gelu(backend *be, float *out, const float *x, const float *up, int64_t n, int kind)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    if (kind != GELU_TANH && kind != GELU_ERF && kind != GELU_QUICK) {
        cuda_fail(cb, EINVAL, "gelu: unknown kind %d", kind);
        return;
    }
    LAUNCH(grid_for(n), 256, 0, cb->stream, k_gelu)(out, x, up, n, kind);
    CUDA_LAUNCHED(cb, "gelu");
}

__global__ void k_clamp(float *x, int64_t n, float lo, float hi)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = fminf(fmaxf(x[i], lo), hi);
}

void cuda_op_clamp(backend *be, float *x, int64_t n, float lo, float hi)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    LAUNCH(grid_for(n), 256, 0, cb->stream, k_clamp)(x, n, lo, hi);
    CUDA_LAUNCHED(cb, "clamp");
}

/* one thread per output element (token, column): its k x k inputs summed in order */
__global__ void k_avg_pool(float *out, const float *x, int cols, int rows, int k, int d)
{
    const int tc = cols / k, tr = rows / k;
    const int64_t n = (int64_t)tc * tr * d;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / d;
        const int e = (int)(i % d), tx = (int)(t % tc), ty = (int)(t / tc);
        float s = 0.0f;
        for (int dy = 0; dy < k; dy++)
            for (int dx = 0; dx < k; dx++)
                s += x[((int64_t)(ty * k + dy) * cols + tx * k + dx) * d + e];
        out[i] = s / (float)(k * k);
    }
}

void cuda_op_avg_pool(backend *be, float *out, const float *x, int cols, int rows, int k, int d)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || cols <= 0 || rows <= 0 || d <= 0)
        return;
    if (k <= 0 || cols % k || rows % k) {
        cuda_fail(cb, EINVAL, "avg_pool: a %dx%d grid in blocks of %d", cols, rows, k);
        return;
    }
    const int64_t n = (int64_t)(cols / k) * (rows / k) * d;
    LAUNCH(grid_for(n), 256, 0, cb->stream, k_avg_pool)(out, x, cols, rows, k, d);
    CUDA_LAUNCHED(cb, "avg_pool");
}

/* x *= s, or x = s * tanh(x / s) (cap) */
__global__ void k_scale(float *x, float s, int64_t n, bool cap)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = cap ? s * tanhf(x[i] / s) : x[i] * s;
}

void cuda_op_scale(backend *be, float *x, float s, int64_t n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    LAUNCH(grid_for(n), 256, 0, cb->stream, k_scale)(x, s, n, false);
    CUDA_LAUNCHED(cb, "scale");
}

void cuda_op_softcap(backend *be, float *x, float cap, int64_t n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    LAUNCH(grid_for(n), 256, 0, cb->stream, k_scale)(x, cap, n, true);
    CUDA_LAUNCHED(cb, "softcap");
}

__global__ void k_scale_ids(float *w, const int32_t *ids, const float *s, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        w[i] *= s[ids[i]];
}

void cuda_op_scale_ids(backend *be, float *w, const int32_t *ids, const float *s, int64_t n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    LAUNCH(grid_for(n), 256, 0, cb->stream, k_scale_ids)(w, ids, s, n);
    CUDA_LAUNCHED(cb, "scale_ids");
}

__global__ void k_copy2d(float *dst, int64_t ds, const float *src, int64_t ss, int rows, int d)
{
    const int64_t n = (int64_t)rows * d;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i / d * ds + i % d] = src[i / d * ss + i % d];
}

void cuda_op_copy2d(backend *be, float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int rows,
                    int d)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || rows <= 0 || d <= 0)
        return;
    LAUNCH(grid_for((int64_t)rows * d), 256, 0, cb->stream, k_copy2d)(dst, dst_stride, src, src_stride, rows, d);
    CUDA_LAUNCHED(cb, "copy2d");
}

/* One thread per (token, rotated pair): the angle once (pos times the pair's frequency,
 * in double like the CPU backend), then every head. */
__global__ void k_rope(float *x, const int32_t *pos, const double *inv_freq, int n, int n_head, int head_dim,
                       int n_rot, bool neox, float mscale)
{
    const int half = n_rot / 2;
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)n * half)
        return;
    const int i = (int)(t / half), j = (int)(t % half);
    double sd, cd;
    sincos((double)pos[i] * inv_freq[j], &sd, &cd);
    const float s = (float)(sd * mscale), c = (float)(cd * mscale);
    const int d0 = neox ? j : 2 * j, d1 = neox ? j + half : 2 * j + 1;
    float *row = x + (int64_t)i * n_head * head_dim;
    for (int h = 0; h < n_head; h++) {
        float *v = row + (int64_t)h * head_dim;
        const float a = v[d0], b = v[d1];
        v[d0] = a * c - b * s;
        v[d1] = a * s + b * c;
    }
}

/* The device table of per-pair frequencies for p: a small cache of tables keyed by
 * their contents. Filling a slot that recorded graphs may use drops the graphs. */
static const double *rope_table(cuda_backend *cb, const rope_params *p)
{
    const int half = p->n_rot / 2;
    double inv[CUDA_ROPE_MAX / 2];
    for (int i = 0; i < half; i++)
        inv[i] = rope_inv_freq(p, i);
    const size_t bytes = sizeof(double) * (size_t)half;
    int slot = -1, lru = 0;
    for (int k = 0; k < CUDA_ROPE_SLOTS; k++) {
        cuda_rope_slot *r = &cb->rope[k];
        if (r->half == half && memcmp(r->inv, inv, bytes) == 0) {
            r->last_use = ++cb->rope_clock;
            return cb->d_rope + (size_t)k * (CUDA_ROPE_MAX / 2);
        }
        if (r->last_use < cb->rope[lru].last_use)
            lru = k;
    }
    slot = lru;
    if (cb->capturing) {
        cuda_fail(cb, EIO, "rope: new frequencies while a decode step was being recorded");
        return NULL;
    }
    cuda_rope_slot *r = &cb->rope[slot];
    if (r->half)
        cuda_graphs_clear(cb);
    double *d = cb->d_rope + (size_t)slot * (CUDA_ROPE_MAX / 2);
    if (!cuda_upload_small(cb, d, inv, bytes))
        return NULL;
    memcpy(r->inv, inv, bytes);
    r->half = half;
    r->last_use = ++cb->rope_clock;
    return d;
}

void cuda_op_rope(backend *be, float *x, int n, int n_head, int head_dim, const rope_params *p)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    if (n > cb->n || !cb->d_pos) {
        cuda_fail(cb, EINVAL, "rope: %d tokens, the batch has %d", n, cb->n);
        return;
    }
    if (p->n_rot <= 0 || p->n_rot > head_dim || p->n_rot % 2 || p->n_rot > CUDA_ROPE_MAX) {
        cuda_fail(cb, EINVAL, "rope: n_rot %d with head_dim %d", p->n_rot, head_dim);
        return;
    }
    const double *inv = rope_table(cb, p);
    if (!inv)
        return;
    const int64_t threads = (int64_t)n * (p->n_rot / 2);
    LAUNCH(cdiv(threads, 128), 128, 0, cb->stream, k_rope)(x, cb->d_pos, inv, n, n_head, head_dim, p->n_rot, p->neox,
                                                                      rope_mscale(p));
    CUDA_LAUNCHED(cb, "rope");
}

/* One CTA per block of `block` floats (a power of two up to 1024) in shared memory: the
 * fast Walsh-Hadamard transform in natural (Sylvester) order, pairs (k, k+len) for
 * len = 1, 2, ..., block/2, then scaled by 1/sqrt(block) — the CPU backend's order of
 * additions, so both round alike. */
__global__ void k_hadamard(float *x, int block, float scale)
{
    DYN_SHARED(float, hs);
    float *p = x + (int64_t)blockIdx.x * block;
    for (int i = threadIdx.x; i < block; i += blockDim.x)
        hs[i] = p[i];
    __syncthreads();
    for (int len = 1; len < block; len *= 2) {
        for (int q = threadIdx.x; q < block / 2; q += blockDim.x) {
            const int j = q / len * 2 * len + q % len;
            const float u = hs[j], w = hs[j + len];
            hs[j] = u + w;
            hs[j + len] = u - w;
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < block; i += blockDim.x)
        p[i] = hs[i] * scale;
}

void cuda_op_hadamard(backend *be, float *x, int64_t n, int block)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    if (block < 2 || block > 1024 || (block & (block - 1)) || n % block) {
        cuda_fail(cb, EINVAL, "hadamard: %lld floats in blocks of %d", (long long)n, block);
        return;
    }
    if (n / block > 0x7fffffff) {
        cuda_fail(cb, EINVAL, "hadamard: %lld blocks", (long long)(n / block));
        return;
    }
    const float scale = (float)(1.0 / sqrt((double)block));
    LAUNCH((unsigned)(n / block), block / 2 < 256 ? block / 2 : 256, sizeof(float) * block, cb->stream, k_hadamard)(
        x, block, scale);
    CUDA_LAUNCHED(cb, "hadamard");
}
