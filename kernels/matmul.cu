/* matmul.cu — out = x · wᵀ for every weight type, and get_rows.
 *
 * Up to 16 rows of x go through the matrix-vector kernels (mmv.cu), which read each
 * weight once for up to 8 of them. Larger batches are compute-bound: weights are
 * dequantized to f16 a slab of rows at a time and multiplied by cuBLAS on tensor cores
 * with f32 accumulation (x rounded to f16 first; bf16 weights use bf16, f32 weights
 * plain f32 GEMM on the tensor as stored).
 */
#include <errno.h>

#include "cuda_common.cuh"
#include "quant_layout.cuh"

#define MMV_MAX_TOKENS 8
#define MMV_CHUNKS 2 /* up to 16 tokens (decode steps of several sequences) stay off cuBLAS */
#define DEQUANT_SLAB_BYTES (64u << 20)

template <typename O> __device__ __forceinline__ O to_out(float v);
template <> __device__ __forceinline__ float to_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __half to_out<__half>(float v) { return __float2half_rn(v); }

/* One thread per unit: rows row0.. (or ids[rr]) of the tensor, out[rr * ldo + col].
 * Rows whose id is out of range come out as zeros. */
template <int T, typename O>
__global__ void k_dequant(const cq_seg L, int64_t ne0, int64_t nrows_tensor, int64_t row0, int64_t nrows,
                          const int32_t *ids, O *out, int64_t ldo)
{
    typedef cq<T> Q;
    const int64_t nb = ne0 / Q::QK, upr = nb * Q::UPB;
    const int64_t ug = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (ug >= nrows * upr)
        return;
    const int64_t rr = ug / upr, ui = ug % upr;
    const int64_t row = ids ? (int64_t)ids[rr] : row0 + rr;
    const int64_t b = ui / Q::UPB;
    const int unit = (int)(ui % Q::UPB);
    O *o = out + rr * ldo + b * Q::QK;
    if (row < 0 || row >= nrows_tensor) {
        for (int u = 0; u < Q::U; u++)
            for (int i = 0; i < 32; i++)
                o[Q::group(unit, u) * 32 + i] = to_out<O>(0.0f);
        return;
    }
    typename Q::R r;
    Q::load(r, L, row * nb + b, unit);
#pragma unroll
    for (int u = 0; u < Q::U; u++) {
        cq_group g;
        Q::decode(r, unit, u, g);
        O *og = o + Q::group(unit, u) * 32;
        if (((uintptr_t)og & 15) == 0) { /* 32 values as 16-byte stores */
            constexpr int PER = 16 / sizeof(O);
#pragma unroll
            for (int k = 0; k < 32 / PER; k++) {
                union {
                    int4 q;
                    O v[PER];
                } u4;
#pragma unroll
                for (int i = 0; i < PER; i++)
                    u4.v[i] = to_out<O>(cq_group_value(g, k * PER + i));
                ((int4 *)og)[k] = u4.q;
            }
        } else {
#pragma unroll
            for (int i = 0; i < 32; i++)
                og[i] = to_out<O>(cq_group_value(g, i));
        }
    }
}

template <typename O>
__global__ void k_dequant_float(int type, const uint8_t *w, int64_t ne0, int64_t nrows_tensor, int64_t row0,
                                int64_t nrows, const int32_t *ids, O *out, int64_t ldo)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nrows * ne0)
        return;
    const int64_t rr = i / ne0, c = i % ne0;
    const int64_t row = ids ? (int64_t)ids[rr] : row0 + rr;
    const float v = row < 0 || row >= nrows_tensor ? 0.0f : cq_float_at(type, w, row * ne0 + c);
    out[rr * ldo + c] = to_out<O>(v);
}

template <typename O> struct dequant_launch {
    cuda_backend *cb;
    const tensor *w;
    int64_t row0, nrows;
    const int32_t *ids;
    O *out;
    int64_t ldo;
    template <int T> void run()
    {
        const int64_t ne0 = w->ne[0], rows_t = w->ne[1] * (w->ne[2] > 0 ? w->ne[2] : 1);
        const cq_seg L = cq_seg_of(T, w->data, ne0 / cq<T>::QK * rows_t);
        const int64_t units = nrows * (ne0 / cq<T>::QK) * cq<T>::UPB;
        LAUNCH(cdiv(units, 128), 128, 0, cb->stream, k_dequant<T, O>)(L, ne0, rows_t, row0, nrows, ids, out, ldo);
    }
};

/* rows [row0, row0+nrows) of w, or rows ids[0..nrows) when ids is set, as O */
template <typename O>
static bool dequant_rows(cuda_backend *cb, const tensor *w, int64_t row0, int64_t nrows, const int32_t *ids, O *out,
                         int64_t ldo)
{
    const int64_t ne0 = w->ne[0], rows_t = w->ne[1] * (w->ne[2] > 0 ? w->ne[2] : 1);
    if (nrows <= 0)
        return true;
    if (cq_is_float(w->type)) {
        LAUNCH(cdiv(nrows * ne0, 256), 256, 0, cb->stream, k_dequant_float<O>)(w->type, (const uint8_t *)w->data, ne0,
                                                                            rows_t, row0, nrows, ids, out, ldo);
    } else {
        dequant_launch<O> l = {cb, w, row0, nrows, ids, out, ldo};
        const int qk = cq_block_elems(w->type);
        if (qk == 0 || ne0 % qk != 0 || !cq_dispatch(w->type, l))
            return cuda_fail(cb, EINVAL, "%s: weight type %d not supported by the CUDA backend", w->name, w->type);
    }
    return CUDA_LAUNCHED(cb, "dequantize");
}

void cuda_op_get_rows(backend *be, float *out, const tensor *w, int n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    if (n > cb->n || !cb->d_tok) {
        cuda_fail(cb, EINVAL, "get_rows: %d rows asked, the batch has %d", n, cb->n);
        return;
    }
    dequant_rows<float>(cb, w, 0, n, cb->d_tok, out, w->ne[0]);
}

__global__ void k_f32_to_f16(const float *x, __half *y, int64_t n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = __float2half_rn(x[i]);
}

__global__ void k_f32_to_bf16(const float *x, __nv_bfloat16 *y, int64_t n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = __float2bfloat16_rn(x[i]);
}

static bool gemm(cuda_backend *cb, int64_t m, int64_t n, int64_t k, const void *a, cudaDataType at, const void *b,
                 cudaDataType bt, float *c, int64_t ldc)
{
    const float one = 1.0f, zero = 0.0f;
    return CUBLAS_OK(cb, cublasGemmEx(cb->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)m, (int)n, (int)k, &one, a, at, (int)k,
                                      b, bt, (int)k, &zero, c, CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
}

/* The activations of one matmul call in each input format, converted on first use and
 * shared by every weight of the call (matmul_multi: q, k, v or gate, up). */
struct act_forms {
    const float *x;
    int n;
    int64_t ne0;
    const int8_t *q; /* 8-bit blocks for the matrix-vector kernels */
    const float4 *qm;
    const __half *h; /* f16 and bf16 for cuBLAS */
    const __nv_bfloat16 *b;
};

static bool act_q8(cuda_backend *cb, act_forms *a)
{
    if (a->q)
        return true;
    const size_t qb = ((size_t)a->n * a->ne0 + 255) & ~(size_t)255;
    int8_t *q = (int8_t *)cuda_ws(cb, WS_ACT_Q, qb + (size_t)a->n * (a->ne0 / 32) * sizeof(float4));
    if (!q || !cuda_quantize_act(cb, a->x, a->n, a->ne0, q, (float4 *)(q + qb)))
        return false;
    a->q = q;
    a->qm = (const float4 *)(q + qb);
    return true;
}

static bool act_half(cuda_backend *cb, act_forms *a, bool bf)
{
    if (bf ? a->b != NULL : a->h != NULL)
        return true;
    const int64_t nx = (int64_t)a->n * a->ne0;
    void *p = cuda_ws(cb, bf ? WS_ACT_B : WS_ACT_H, (size_t)nx * 2);
    if (!p)
        return false;
    if (bf)
        LAUNCH(cdiv(nx, 256), 256, 0, cb->stream, k_f32_to_bf16)(a->x, (__nv_bfloat16 *)p, nx);
    else
        LAUNCH(cdiv(nx, 256), 256, 0, cb->stream, k_f32_to_f16)(a->x, (__half *)p, nx);
    if (!CUDA_LAUNCHED(cb, "convert activations"))
        return false;
    if (bf)
        a->b = (const __nv_bfloat16 *)p;
    else
        a->h = (const __half *)p;
    return true;
}

static void matmul_one(cuda_backend *cb, float *out, const tensor *w, act_forms *a)
{
    const int type = w->type, n = a->n;
    const int64_t ne0 = w->ne[0], ne1 = w->ne[1];
    const int qk = cq_block_elems(type);
    if (qk == 0 || ne0 % qk != 0 || ne0 != a->ne0) {
        cuda_fail(cb, EINVAL, "matmul %s: weight type %d with rows of %lld not supported", w->name, type,
                  (long long)ne0);
        return;
    }
    if (n <= MMV_CHUNKS * MMV_MAX_TOKENS) {
        /* a few tokens: the weights are read once per MMV_MAX_TOKENS of them */
        if (!cq_is_float(type) && !act_q8(cb, a))
            return;
        for (int t0 = 0; t0 < n; t0 += MMV_MAX_TOKENS) {
            const int c = n - t0 < MMV_MAX_TOKENS ? n - t0 : MMV_MAX_TOKENS;
            mmv_job j;
            memset(&j, 0, sizeof j);
            j.w = w->data;
            j.type = type;
            j.ne0 = ne0;
            j.ne1 = ne1;
            j.ne2 = w->ne[2] > 0 ? w->ne[2] : 1;
            if (cq_is_float(type)) {
                j.xf = a->x + (int64_t)t0 * ne0;
            } else {
                j.xq = a->q + (int64_t)t0 * ne0;
                j.xm = a->qm + (int64_t)t0 * (ne0 / 32);
            }
            j.act_div = 1;
            j.out = out + (int64_t)t0 * ne1;
            j.ldo = ne1;
            j.n = c;
            j.grid_rows = 1;
            j.nt = c;
            if (!cuda_mmv(cb, &j))
                return;
        }
        return;
    }
    /* batch: activations in the GEMM input type, weights as stored or dequantized */
    if (type == T_F32) {
        gemm(cb, ne1, n, ne0, w->data, CUDA_R_32F, a->x, CUDA_R_32F, out, ne1);
        return;
    }
    if (type == T_BF16) {
        if (act_half(cb, a, true))
            gemm(cb, ne1, n, ne0, w->data, CUDA_R_16BF, a->b, CUDA_R_16BF, out, ne1);
        return;
    }
    if (!act_half(cb, a, false))
        return;
    if (type == T_F16) {
        gemm(cb, ne1, n, ne0, w->data, CUDA_R_16F, a->h, CUDA_R_16F, out, ne1);
        return;
    }
    int64_t slab = DEQUANT_SLAB_BYTES / (ne0 * 2);
    if (slab >= 64)
        slab -= slab % 64;
    if (slab < 1)
        slab = 1;
    if (slab > ne1)
        slab = ne1;
    __half *wh = (__half *)cuda_ws(cb, WS_W_H, (size_t)slab * ne0 * 2);
    if (!wh)
        return;
    for (int64_t r0 = 0; r0 < ne1; r0 += slab) {
        const int64_t rc = ne1 - r0 < slab ? ne1 - r0 : slab;
        if (!dequant_rows<__half>(cb, w, r0, rc, NULL, wh, ne0) ||
            !gemm(cb, rc, n, ne0, wh, CUDA_R_16F, a->h, CUDA_R_16F, out + r0, ne1))
            return;
    }
}

void cuda_op_matmul(backend *be, float *out, const tensor *w, const float *x, int n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0)
        return;
    act_forms a = {x, n, w->ne[0], NULL, NULL, NULL, NULL};
    matmul_one(cb, out, w, &a);
}

void cuda_op_matmul_multi(backend *be, float *const *out, const tensor *const *w, int count, const float *x, int n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n <= 0 || count <= 0)
        return;
    act_forms a = {x, n, w[0]->ne[0], NULL, NULL, NULL, NULL};
    for (int i = 0; i < count && !cuda_dead(cb); i++) {
        if (w[i]->ne[0] != a.ne0) {
            cuda_fail(cb, EINVAL, "matmul_multi: %s has rows of %lld, %s of %lld", w[i]->name,
                      (long long)w[i]->ne[0], w[0]->name, (long long)a.ne0);
            return;
        }
        matmul_one(cb, out[i], w[i], &a);
    }
}
