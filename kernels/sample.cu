/* sample.cu — greedy argmax and top-k over logits on the GPU, so that only the chosen
 * ids (and k values) cross to the host instead of a vocabulary of floats per token.
 * Order: larger value first, lower index on ties; NaN ranks below everything. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "cuda_common.cuh"

#define SAMPLE_THREADS 1024
#define TOPK_MAX 256

__device__ __forceinline__ bool ranks_before(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

/* the best (value, index) over the block, into every thread */
__device__ __forceinline__ void block_best(float &bv, int &bi, float *sv, int *si)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ranks_before(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads(); /* sv/si may still be read from the previous round */
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    bv = lane < nw ? sv[lane] : -INFINITY;
    bi = lane < nw ? si[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ranks_before(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
}

__device__ __forceinline__ float clean(float v) { return v != v ? -INFINITY : v; }

/* Round j finds the best element ranked after the previous winner (lv, li). */
__global__ void __launch_bounds__(SAMPLE_THREADS) k_topk(const float *x, int d, int k, int32_t *ids, float *vals)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *row = x + (int64_t)blockIdx.x * d;
    float lv = INFINITY;
    int li = -1;
    for (int j = 0; j < k; j++) {
        float bv = -INFINITY;
        int bi = 0x7fffffff;
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            const float v = clean(row[i]);
            if (ranks_before(lv, li, v, i) && ranks_before(v, i, bv, bi)) {
                bv = v;
                bi = i;
            }
        }
        block_best(bv, bi, sv, si);
        if (bi == 0x7fffffff) /* fewer than k left: cannot happen with k <= d */
            bi = 0;
        if (threadIdx.x == 0) {
            ids[(int64_t)blockIdx.x * k + j] = bi;
            vals[(int64_t)blockIdx.x * k + j] = bv;
        }
        lv = bv;
        li = bi;
    }
}

/* Copies n bytes of device results to host memory through pinned staging. */
static bool fetch(cuda_backend *cb, void *dst, const void *src, size_t n)
{
    void *pin = cuda_pin_small(cb, n);
    if (!pin || !CUDA_OK(cb, cudaMemcpyAsync(pin, src, n, cudaMemcpyDeviceToHost, cb->stream)) ||
        !CUDA_OK(cb, cudaStreamSynchronize(cb->stream)))
        return false;
    memcpy(dst, pin, n);
    return true;
}

void cuda_op_topk(backend *be, int32_t *ids, float *vals, const float *x, int rows, int d, int k)
{
    cuda_backend *cb = CB(be);
    if (rows <= 0)
        return;
    const size_t nb = sizeof(int32_t) * (size_t)rows * k, vb = sizeof(float) * (size_t)rows * k;
    if (k <= 0 || k > d || k > TOPK_MAX) {
        cuda_fail(cb, EINVAL, "topk: k %d of %d not supported", k, d);
    } else if (!cuda_dead(cb)) {
        char *w = (char *)cuda_ws(cb, WS_SAMPLE, nb + vb + 256);
        if (w) {
            int32_t *di = (int32_t *)w;
            float *dv = (float *)(w + ((nb + 255) & ~(size_t)255));
            LAUNCH(rows, SAMPLE_THREADS, 0, cb->stream, k_topk)(x, d, k, di, dv);
            if (CUDA_LAUNCHED(cb, "topk") && fetch(cb, ids, di, nb) && fetch(cb, vals, dv, vb))
                return;
        }
    }
    memset(ids, 0, nb);
    memset(vals, 0, vb);
}

void cuda_op_argmax(backend *be, int32_t *out, const float *x, int rows, int d)
{
    cuda_backend *cb = CB(be);
    if (rows <= 0)
        return;
    const size_t nb = sizeof(int32_t) * (size_t)rows;
    if (d <= 0) {
        cuda_fail(cb, EINVAL, "argmax: rows of %d", d);
    } else if (!cuda_dead(cb)) {
        char *w = (char *)cuda_ws(cb, WS_SAMPLE, 2 * nb + 256);
        if (w) {
            int32_t *di = (int32_t *)w;
            float *dv = (float *)(w + ((nb + 255) & ~(size_t)255));
            LAUNCH(rows, SAMPLE_THREADS, 0, cb->stream, k_topk)(x, d, 1, di, dv);
            if (CUDA_LAUNCHED(cb, "argmax") && fetch(cb, out, di, nb))
                return;
        }
    }
    memset(out, 0, nb);
}
