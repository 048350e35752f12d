/* stage.cu — weights in host memory streamed to the device for one large batch.
 *
 * With the experts (or whole feed-forward blocks) in RAM, a prompt batch of hundreds of
 * tokens computes faster on the GPU even counting the copy of the weights over PCIe
 * (model.c decides per batch). The copies run on their own stream into two slots, so the
 * copy of the next layer's weights overlaps this layer's compute:
 *
 *   stream:       ... ffn(l-1) [go] attn(l) wait(ready l) ffn(l) [go] ...
 *   copy_stream:  wait(go) copy l+1 -> slot (l+1)%2 [ready l+1] wait(go) copy l+2 ...
 *
 * Each copy waits for the compute ops issued before it (the previous readers of its
 * slot); compute waits for the copy only where it reads it. The host ranges of streamed
 * tensors are registered with the driver once, so the copy engine reads them in place;
 * where registering fails the copy reads pageable memory (correct, slower: the driver
 * then bounces it through its own buffers). Types stored in several segments on the
 * device (quant_layout.cuh) arrive as GGUF blocks and are split by k_repack.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cuda_common.cuh"
#include "quant_layout.cuh"

extern "C" {
#include "llmfs.h"
}

#define RAW_PIECE ((size_t)32 << 20) /* GGUF bytes in flight through raw at a time */
#define STAGE_MAX 16                  /* tensors per stage_copy */
#define HOST_PAGE ((uintptr_t)4096)

/* GGUF blocks [g0, g0 + nb) of a tensor, at raw, into the tensor's device layout at dst
 * (segments at off0..2). A thread per block; its pieces are at most 210 bytes. */
__global__ void k_repack(const uint8_t *__restrict__ raw, int64_t g0, int64_t nb, cq_seg_def d, int bb,
                         uint8_t *__restrict__ dst, int64_t off0, int64_t off1, int64_t off2)
{
    const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= nb)
        return;
    const uint8_t *blk = raw + g * bb;
    const int64_t off[3] = {off0, off1, off2};
    for (int s = 0; s < d.nseg; s++) {
        uint8_t *o = dst + off[s] + (g0 + g) * d.bytes[s];
        for (int p = 0; p < 2; p++)
            for (int j = 0; j < d.piece[s][p].len; j++)
                *o++ = blk[d.piece[s][p].src + j];
    }
}

/* The copy stream and its events, made on first use: a model that never streams pays
 * nothing. */
static bool stage_init(cuda_backend *cb)
{
    if (cb->copy_stream)
        return true;
    if (!CUDA_OK(cb, cudaStreamCreateWithFlags(&cb->copy_stream, cudaStreamNonBlocking)) ||
        !CUDA_OK(cb, cudaEventCreateWithFlags(&cb->stage_go, cudaEventDisableTiming)))
        return false;
    for (int k = 0; k < 2; k++)
        if (!CUDA_OK(cb, cudaEventCreateWithFlags(&cb->stage_ready[k], cudaEventDisableTiming)))
            return false;
    return true;
}

/* A device buffer of at least `need` bytes at *p (capacity *cap), its old contents
 * dropped. Out of memory is an answer here, not a failure of the backend. */
static int stage_grow(cuda_backend *cb, void **p, size_t *cap, size_t need, const char *what,
                      struct llmfs_error *err)
{
    if (*cap >= need)
        return 0;
    /* both streams may still read or write the old buffer */
    if (!CUDA_OK(cb, cudaStreamSynchronize(cb->stream)) || !CUDA_OK(cb, cudaStreamSynchronize(cb->copy_stream)))
        return llmfs_errorf(err, EIO, "%s", cb->err_msg);
    if (*p && !CUDA_OK(cb, cudaFree(*p)))
        return llmfs_errorf(err, EIO, "%s", cb->err_msg);
    cb->own_bytes -= *cap;
    *p = NULL;
    *cap = 0;
    need = (need + 4095) & ~(size_t)4095;
    if (cudaMalloc(p, need) != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        return llmfs_errorf(err, ENOMEM, "CUDA: out of device memory for %zu MiB of %s", need >> 20, what);
    }
    *cap = need;
    cb->own_bytes += need;
    return 0;
}

/* The part of [p, p + n) registered with the driver, registering it the first time:
 * whole pages only, since a tensor's first and last pages hold its neighbours too.
 * Returns the range record; a == b when nothing could be registered. */
static const cuda_backend::cuda_host_range *host_range(cuda_backend *cb, const void *p, size_t n)
{
    for (int i = 0; i < cb->n_ranges; i++)
        if (cb->ranges[i].p == p && cb->ranges[i].n == n)
            return &cb->ranges[i];
    if (cb->n_ranges == cb->cap_ranges) {
        const int cap = cb->cap_ranges ? 2 * cb->cap_ranges : 64;
        void *r = realloc(cb->ranges, sizeof *cb->ranges * (size_t)cap);
        if (!r)
            return NULL;
        cb->ranges = (cuda_backend::cuda_host_range *)r;
        cb->cap_ranges = cap;
    }
    cuda_backend::cuda_host_range *r = &cb->ranges[cb->n_ranges++];
    const uintptr_t a = ((uintptr_t)p + HOST_PAGE - 1) & ~(HOST_PAGE - 1),
                    b = ((uintptr_t)p + n) & ~(HOST_PAGE - 1);
    r->p = p;
    r->n = n;
    r->a = (const char *)a;
    r->b = (const char *)a;
    if (b > a) {
        /* read-only: a mapped model file is; failing (an old driver, a locked-memory
         * limit) only costs speed */
        if (cudaHostRegister((void *)a, b - a, cudaHostRegisterReadOnly | cudaHostRegisterPortable) == cudaSuccess) {
            r->b = (const char *)b;
        } else {
            cudaGetLastError();
        }
    }
    return r;
}

/* Host bytes [src, src + n) of a tensor whose registered range is r, to dst on the copy
 * stream: the registered middle in place, the edges from pageable memory. */
static bool stage_h2d(cuda_backend *cb, char *dst, const char *src, size_t n,
                      const cuda_backend::cuda_host_range *r)
{
    const char *end = src + n;
    const char *cut[4] = {src, r && r->a > src ? (r->a < end ? r->a : end) : src, NULL, end};
    cut[2] = r && r->b > cut[1] ? (r->b < end ? r->b : end) : cut[1];
    for (int k = 0; k < 3; k++)
        if (cut[k + 1] > cut[k] &&
            !CUDA_OK(cb, cudaMemcpyAsync(dst + (cut[k] - src), cut[k], (size_t)(cut[k + 1] - cut[k]),
                                         cudaMemcpyHostToDevice, cb->copy_stream)))
            return false;
    return true;
}

int cuda_op_stage_copy(backend *be, int slot, tensor *dst, const tensor *const *src, int count,
                       struct llmfs_error *err)
{
    cuda_backend *cb = CB(be);
    if (slot < 0 || slot > 1 || count < 0 || count > STAGE_MAX)
        return llmfs_errorf(err, EINVAL, "CUDA: stage_copy: slot %d with %d tensors", slot, count);
    if (cuda_dead(cb))
        return llmfs_errorf(err, EIO, "%s", cb->err_msg);
    size_t off[STAGE_MAX], need = 0, raw_need = 0;
    for (int i = 0; i < count; i++) {
        const tensor *t = src[i];
        const int64_t rows = t->ne[1] * (t->ne[2] > 0 ? t->ne[2] : 1);
        const size_t bytes = cuda_weight_bytes(t->type, t->ne[0], rows);
        if (bytes == 0)
            return llmfs_errorf(err, EINVAL, "%s: type %d or row length %lld cannot be streamed to CUDA", t->name,
                                t->type, (long long)t->ne[0]);
        off[i] = need;
        need += (bytes + 255) & ~(size_t)255;
        const cq_seg_def d = cq_segments(t->type);
        const size_t gguf = t->nb2 * (size_t)(t->ne[2] > 0 ? t->ne[2] : 1);
        if (!(d.nseg == 1 && d.bytes[0] == cq_block_bytes(t->type)) && gguf > raw_need)
            raw_need = gguf < RAW_PIECE ? gguf : RAW_PIECE;
    }
    int rc;
    if (!CUDA_OK(cb, cudaSetDevice(cb->device)) || !stage_init(cb))
        return llmfs_errorf(err, EIO, "%s", cb->err_msg);
    if ((rc = stage_grow(cb, &cb->slot[slot], &cb->slot_cap[slot], need, "weight staging", err)) ||
        (rc = stage_grow(cb, &cb->raw, &cb->raw_cap, raw_need, "weight staging", err)))
        return rc;
    /* the slot's previous readers were issued before this call */
    if (!CUDA_OK(cb, cudaEventRecord(cb->stage_go, cb->stream)) ||
        !CUDA_OK(cb, cudaStreamWaitEvent(cb->copy_stream, cb->stage_go, 0)))
        return llmfs_errorf(err, EIO, "%s", cb->err_msg);
    for (int i = 0; i < count; i++) {
        const tensor *t = src[i];
        char *to = (char *)cb->slot[slot] + off[i];
        const int qk = cq_block_elems(t->type), bb = cq_block_bytes(t->type);
        const int64_t nblk = t->ne[0] / qk * t->ne[1] * (t->ne[2] > 0 ? t->ne[2] : 1);
        const char *from = (const char *)t->data;
        const cuda_backend::cuda_host_range *r = host_range(cb, from, (size_t)(nblk * bb));
        const cq_seg_def d = cq_segments(t->type);
        if (d.nseg == 1 && d.bytes[0] == bb) { /* the device layout is the GGUF one */
            if (!stage_h2d(cb, to, from, (size_t)(nblk * bb), r))
                return llmfs_errorf(err, EIO, "%s", cb->err_msg);
        } else {
            int64_t seg[3] = {0, 0, 0}; /* regions past nseg are not used */
            cq_regions(t->type, nblk, seg);
            const int64_t piece = (int64_t)(cb->raw_cap / (size_t)bb);
            for (int64_t g0 = 0; g0 < nblk; g0 += piece) {
                const int64_t nb = nblk - g0 < piece ? nblk - g0 : piece;
                if (!stage_h2d(cb, (char *)cb->raw, from + g0 * bb, (size_t)(nb * bb), r))
                    return llmfs_errorf(err, EIO, "%s", cb->err_msg);
                LAUNCH((unsigned)((nb + 255) / 256), 256, 0, cb->copy_stream, k_repack)(
                    (const uint8_t *)cb->raw, g0, nb, d, bb, (uint8_t *)to, seg[0], seg[1], seg[2]);
                if (!CUDA_OK(cb, cudaGetLastError()))
                    return llmfs_errorf(err, EIO, "%s", cb->err_msg);
            }
        }
        dst[i] = *t;
        dst[i].data = to;
        dst[i].be = be;
    }
    if (!CUDA_OK(cb, cudaEventRecord(cb->stage_ready[slot], cb->copy_stream)))
        return llmfs_errorf(err, EIO, "%s", cb->err_msg);
    return 0;
}

void cuda_op_stage_wait(backend *be, int slot)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || !cb->copy_stream || slot < 0 || slot > 1)
        return;
    CUDA_OK(cb, cudaStreamWaitEvent(cb->stream, cb->stage_ready[slot], 0));
}

/* The slots and raw freed (no stream may use them any more); a failure is recorded. */
static void free_stage_buffers(cuda_backend *cb)
{
    void **p[3] = {&cb->slot[0], &cb->slot[1], &cb->raw};
    size_t *cap[3] = {&cb->slot_cap[0], &cb->slot_cap[1], &cb->raw_cap};
    for (int k = 0; k < 3; k++) {
        if (*p[k])
            CUDA_OK(cb, cudaFree(*p[k]));
        cb->own_bytes -= *cap[k];
        *p[k] = NULL;
        *cap[k] = 0;
    }
}

void cuda_op_stage_release(backend *be)
{
    cuda_backend *cb = CB(be);
    /* both streams may still use them */
    if (cb->copy_stream && CUDA_OK(cb, cudaSetDevice(cb->device)) && CUDA_OK(cb, cudaStreamSynchronize(cb->stream)) &&
        CUDA_OK(cb, cudaStreamSynchronize(cb->copy_stream)))
        free_stage_buffers(cb);
}

/* Teardown: nobody is left to hear of a failure, so results are dropped on purpose. */
void cuda_stage_destroy(cuda_backend *cb)
{
    if (!cb->copy_stream) /* never streamed: nothing was made */
        return;
    (void)cudaStreamSynchronize(cb->copy_stream);
    free_stage_buffers(cb);
    for (int k = 0; k < 2; k++)
        if (cb->stage_ready[k])
            (void)cudaEventDestroy(cb->stage_ready[k]);
    for (int i = 0; i < cb->n_ranges; i++)
        if (cb->ranges[i].b > cb->ranges[i].a)
            (void)cudaHostUnregister((void *)cb->ranges[i].a);
    free(cb->ranges);
    if (cb->stage_go)
        (void)cudaEventDestroy(cb->stage_go);
    (void)cudaStreamDestroy(cb->copy_stream);
}
