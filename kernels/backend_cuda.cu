/* backend_cuda.cu — the CUDA backend: device memory, transfers, the batch, errors,
 * recorded decode steps; the ops table. The kernels live in the other files of kernels/. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "quant_layout.cuh"

extern "C" {
#include "backend_cuda.h"
#include "llmfs.h"
}

#define PIN_BIG (16u << 20) /* bytes per large staging buffer (two of them) */
#define CUBLAS_WS (32u << 20)

/* ---- errors ---- */

bool cuda_fail(cuda_backend *cb, int code, const char *fmt, ...)
{
    if (!cb->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cb->err_msg, sizeof cb->err_msg, fmt, ap);
        va_end(ap);
        cb->err_code = code;
        cb->failed = true;
    }
    return false;
}

bool cuda_ok_(cuda_backend *cb, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return true;
    cudaGetLastError(); /* clears a non-sticky error so later calls are not blamed */
    return cuda_fail(cb, e == cudaErrorMemoryAllocation ? ENOMEM : EIO, "CUDA: %s: %s", what,
                     cudaGetErrorString(e));
}

static const char *cublas_status_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
    }
}

bool cublas_ok_(cuda_backend *cb, cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return true;
    return cuda_fail(cb, s == CUBLAS_STATUS_ALLOC_FAILED ? ENOMEM : EIO, "cuBLAS: %s: %s (%d)", what,
                     cublas_status_name(s), (int)s);
}

static int op_check(backend *be, struct llmfs_error *err)
{
    cuda_backend *cb = CB(be);
    if (!cb->failed)
        return 0;
    int code = cb->err_code ? cb->err_code : EIO;
    llmfs_errorf(err, code, "%s", cb->err_msg);
    cb->failed = false;
    cb->err_code = 0;
    cb->err_msg[0] = 0;
    return -code;
}

/* ---- scratch ---- */

void *cuda_ws(cuda_backend *cb, enum cuda_ws w, size_t bytes)
{
    if (bytes == 0)
        bytes = 256;
    if (cb->ws_cap[w] >= bytes)
        return cb->ws[w];
    if (cb->capturing) {
        cuda_fail(cb, EIO, "CUDA: scratch buffer %d grew while a decode step was being recorded", (int)w);
        return NULL;
    }
    /* everything queued may still use the old buffer, and recorded graphs point at it */
    if (!CUDA_OK(cb, cudaStreamSynchronize(cb->stream)))
        return NULL;
    cuda_graphs_clear(cb);
    if (cb->ws[w] && !CUDA_OK(cb, cudaFree(cb->ws[w])))
        return NULL;
    cb->own_bytes -= cb->ws_cap[w];
    cb->ws[w] = NULL;
    cb->ws_cap[w] = 0;
    size_t cap = bytes + bytes / 4;
    cap = (cap + 4095) & ~(size_t)4095;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, cap);
    if (e != cudaSuccess) {
        cudaGetLastError();
        cuda_fail(cb, ENOMEM, "CUDA: out of device memory for %zu bytes of scratch", cap);
        return NULL;
    }
    cb->ws[w] = p;
    cb->ws_cap[w] = cap;
    cb->own_bytes += cap;
    return p;
}

/* ---- pinned staging ---- */

/* The small staging buffer, once the copy that last used it has finished. */
void *cuda_pin_small(cuda_backend *cb, size_t bytes)
{
    if (!CUDA_OK(cb, cudaEventSynchronize(cb->pin_small_ev)))
        return NULL;
    if (cb->pin_small_cap < bytes) {
        if (cb->pin_small && !CUDA_OK(cb, cudaFreeHost(cb->pin_small)))
            return NULL;
        cb->pin_small = NULL;
        cb->pin_small_cap = 0;
        size_t cap = bytes < (64u << 10) ? (64u << 10) : bytes * 2;
        if (!CUDA_OK(cb, cudaHostAlloc(&cb->pin_small, cap, cudaHostAllocDefault)))
            return NULL;
        cb->pin_small_cap = cap;
    }
    return cb->pin_small;
}

bool cuda_upload_small(cuda_backend *cb, void *dst, const void *src, size_t n)
{
    void *pin = cuda_pin_small(cb, n);
    if (!pin)
        return false;
    memcpy(pin, src, n);
    return CUDA_OK(cb, cudaMemcpyAsync(dst, pin, n, cudaMemcpyHostToDevice, cb->stream)) &&
           CUDA_OK(cb, cudaEventRecord(cb->pin_small_ev, cb->stream));
}

/* Host -> device through the two large staging buffers, in pieces that are whole
 * multiples of gran bytes; fill(buf, off, len) writes the destination's bytes
 * [off, off+len). */
template <typename F> static bool staged_upload(cuda_backend *cb, char *dst, size_t n, size_t gran, F fill)
{
    const size_t chunk = PIN_BIG - PIN_BIG % gran;
    int k = 0;
    for (size_t off = 0; off < n; off += chunk, k ^= 1) {
        const size_t len = n - off < chunk ? n - off : chunk;
        if (!CUDA_OK(cb, cudaEventSynchronize(cb->pin_big_ev[k])))
            return false;
        fill((char *)cb->pin_big[k], off, len);
        if (!CUDA_OK(cb, cudaMemcpyAsync(dst + off, cb->pin_big[k], len, cudaMemcpyHostToDevice, cb->stream)) ||
            !CUDA_OK(cb, cudaEventRecord(cb->pin_big_ev[k], cb->stream)))
            return false;
    }
    return true;
}

/* ---- memory ops ---- */

static void *op_alloc(backend *be, size_t bytes)
{
    cuda_backend *cb = CB(be);
    if (!CUDA_OK(cb, cudaSetDevice(cb->device)))
        return NULL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* out of memory is an answer, not a failure of the backend */
        return NULL;
    }
    /* zeroed: KV cells never written read as 0, not as NaN garbage */
    if (!CUDA_OK(cb, cudaMemsetAsync(p, 0, bytes ? bytes : 1, cb->stream))) {
        CUDA_OK(cb, cudaFree(p));
        return NULL;
    }
    if (cb->n_held == cb->cap_held) {
        const int cap = cb->cap_held ? 2 * cb->cap_held : 256;
        cuda_backend::cuda_held *h = (cuda_backend::cuda_held *)realloc(cb->held, sizeof *h * (size_t)cap);
        if (!h) {
            CUDA_OK(cb, cudaFree(p));
            return NULL;
        }
        cb->held = h;
        cb->cap_held = cap;
    }
    cb->held[cb->n_held++] = {p, bytes};
    cb->alloc_bytes += bytes;
    return p;
}

static uint64_t op_mem_used(backend *be)
{
    cuda_backend *cb = CB(be);
    return cb->own_bytes + cb->alloc_bytes + (uint64_t)cb->d_big_cap * 3 * sizeof(int32_t);
}

static void op_free(backend *be, void *p)
{
    cuda_backend *cb = CB(be);
    if (!p)
        return;
    CUDA_OK(cb, cudaSetDevice(cb->device));
    CUDA_OK(cb, cudaStreamSynchronize(cb->stream));
    CUDA_OK(cb, cudaFree(p));
    for (int i = cb->n_held - 1; i >= 0; i--) /* recent ones go first */
        if (cb->held[i].p == p) {
            cb->alloc_bytes -= cb->held[i].n;
            cb->held[i] = cb->held[--cb->n_held];
            break;
        }
}

static void op_upload(backend *be, void *dst, const void *src, size_t n)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb) || n == 0 || !CUDA_OK(cb, cudaSetDevice(cb->device)))
        return;
    /* through the large buffers even when small: the small one may still be feeding the
     * batch that begin just queued, and waiting for that would stall every step */
    staged_upload(cb, (char *)dst, n, 1, [&](char *buf, size_t off, size_t len) { memcpy(buf, (const char *)src + off, len); });
}

static void op_download(backend *be, void *dst, const void *src, size_t n)
{
    cuda_backend *cb = CB(be);
    if (n == 0)
        return;
    if (cuda_dead(cb) || !CUDA_OK(cb, cudaSetDevice(cb->device))) {
        memset(dst, 0, n); /* never hand back stale bytes as if they were results */
        return;
    }
    for (size_t off = 0; off < n; off += PIN_BIG) {
        const size_t len = n - off < PIN_BIG ? n - off : PIN_BIG;
        if (!CUDA_OK(cb, cudaEventSynchronize(cb->pin_big_ev[0])) ||
            !CUDA_OK(cb, cudaMemcpyAsync(cb->pin_big[0], (const char *)src + off, len, cudaMemcpyDeviceToHost,
                                         cb->stream)) ||
            !CUDA_OK(cb, cudaStreamSynchronize(cb->stream))) {
            memset(dst, 0, n);
            return;
        }
        memcpy((char *)dst + off, cb->pin_big[0], len);
    }
}

static void op_sync(backend *be)
{
    cuda_backend *cb = CB(be);
    CUDA_OK(cb, cudaSetDevice(cb->device));
    CUDA_OK(cb, cudaStreamSynchronize(cb->stream));
}

size_t cuda_weight_bytes(int type, int64_t ne0, int64_t rows)
{
    const int qk = cq_block_elems(type);
    if (qk == 0 || ne0 % qk != 0)
        return 0;
    int64_t off[3];
    return (size_t)cq_regions(type, ne0 / qk * rows, off);
}

int cuda_op_load_weight(backend *be, tensor *t, const void *src, struct llmfs_error *err)
{
    cuda_backend *cb = CB(be);
    const int qk = cq_block_elems(t->type);
    const int64_t ne0 = t->ne[0], rows = t->ne[1] * (t->ne[2] > 0 ? t->ne[2] : 1);
    if (qk == 0)
        return llmfs_errorf(err, EINVAL, "%s: tensor type %d is not supported by the CUDA backend", t->name, t->type);
    if (ne0 <= 0 || rows <= 0 || ne0 % qk != 0)
        return llmfs_errorf(err, EINVAL, "%s: row length %lld is not a multiple of the block size %d", t->name,
                            (long long)ne0, qk);
    if (cuda_dead(cb))
        return op_check(be, err);
    const int64_t nblk = ne0 / qk * rows;
    int64_t off[3];
    const int64_t total = cq_regions(t->type, nblk, off);
    void *p = op_alloc(be, (size_t)total);
    if (!p) {
        if (cb->failed)
            return op_check(be, err);
        return llmfs_errorf(err, ENOMEM, "%s: out of GPU memory for %lld bytes", t->name, (long long)total);
    }
    const cq_seg_def d = cq_segments(t->type);
    const int bb = cq_block_bytes(t->type);
    bool ok = true;
    for (int s = 0; s < d.nseg && ok; s++) {
        /* segment s of every block, in block order, staged a buffer at a time */
        const int sb = d.bytes[s];
        ok = staged_upload(cb, (char *)p + off[s], (size_t)(nblk * sb), (size_t)sb,
                           [&](char *buf, size_t o, size_t len) {
                               cq_pack_segment(d, bb, src, s, (int64_t)(o / (size_t)sb),
                                               (int64_t)((o + len) / (size_t)sb), buf);
                           });
    }
    if (!ok || !CUDA_OK(cb, cudaStreamSynchronize(cb->stream))) {
        CUDA_OK(cb, cudaFree(p));
        return op_check(be, err);
    }
    t->data = p;
    t->be = be;
    return 0;
}

/* ---- the batch ---- */

static int op_begin(backend *be, const fwd_batch *b)
{
    cuda_backend *cb = CB(be);
    if (cuda_dead(cb))
        return -(cb->err_code ? cb->err_code : EIO);
    if (!CUDA_OK(cb, cudaSetDevice(cb->device)))
        return -EIO;
    const int n = b->n;
    if (n <= 0 || !b->token || !b->pos)
        return -EINVAL;
    if (n > cb->h_cap) {
        int cap = n < 512 ? 512 : n;
        int32_t *a = (int32_t *)realloc(cb->h_tok, sizeof(int32_t) * 3 * (size_t)cap);
        if (!a)
            return -ENOMEM;
        cb->h_tok = a;
        cb->h_pos = a + cap;
        cb->h_seq = a + 2 * cap;
        cb->h_cap = cap;
    }
    int max_pos = 0;
    for (int i = 0; i < n; i++) {
        const int32_t p = b->pos[i], s = b->seq ? b->seq[i] : 0;
        if (p < 0 || s < 0)
            return -EINVAL;
        cb->h_tok[i] = b->token[i];
        cb->h_pos[i] = p;
        cb->h_seq[i] = s;
        if (p > max_pos)
            max_pos = p;
    }
    cb->n = n;
    cb->max_pos = max_pos;
    int bucket = 256;
    while (bucket < max_pos + 1)
        bucket *= 2;
    cb->kv_bucket = bucket;
    cb->tiles_bq = 0;
    cb->n_tiles = 0;
    cb->nc = false;
    cb->d_last = NULL;

    int32_t *d;
    int cap;
    if (n <= CUDA_SMALL_BATCH) {
        d = cb->d_small;
        cap = CUDA_SMALL_BATCH;
    } else {
        if (n > cb->d_big_cap) {
            if (!CUDA_OK(cb, cudaStreamSynchronize(cb->stream)))
                return -EIO;
            if (cb->d_big && !CUDA_OK(cb, cudaFree(cb->d_big)))
                return -EIO;
            cb->d_big = NULL;
            cb->d_big_cap = 0;
            if (cudaMalloc((void **)&cb->d_big, sizeof(int32_t) * 3 * (size_t)n) != cudaSuccess) {
                cudaGetLastError();
                cb->d_big = NULL;
                cuda_fail(cb, ENOMEM, "CUDA: out of device memory for a batch of %d", n);
                return -ENOMEM;
            }
            cb->d_big_cap = n;
        }
        d = cb->d_big;
        cap = cb->d_big_cap;
    }
    int32_t *pin = (int32_t *)cuda_pin_small(cb, sizeof(int32_t) * 3 * (size_t)cap);
    if (!pin)
        return -EIO;
    memcpy(pin, cb->h_tok, sizeof(int32_t) * (size_t)n);
    memcpy(pin + cap, cb->h_pos, sizeof(int32_t) * (size_t)n);
    memcpy(pin + 2 * cap, cb->h_seq, sizeof(int32_t) * (size_t)n);
    /* one copy: the three arrays lie cap apart in both buffers */
    const size_t bytes = sizeof(int32_t) * (2 * (size_t)cap + (size_t)n);
    if (!CUDA_OK(cb, cudaMemcpyAsync(d, pin, bytes, cudaMemcpyHostToDevice, cb->stream)) ||
        !CUDA_OK(cb, cudaEventRecord(cb->pin_small_ev, cb->stream)))
        return -EIO;
    cb->d_tok = d;
    cb->d_pos = d + cap;
    cb->d_seq = d + 2 * cap;
    return 0;
}

/* ---- recorded decode steps ---- */

/* Destroys every recorded graph. forget: the keys go too (the model moved its buffers);
 * otherwise each key stays "seen once", so its next call records again at once. Scratch
 * grows during the first, direct run of a key: forgetting that key there would cost
 * every new shape one more direct run. */
static void graphs_drop(cuda_backend *cb, bool forget)
{
    bool any = false;
    for (int i = 0; i < CUDA_MAX_GRAPHS; i++)
        any |= cb->graphs[i].state == 2;
    if (any)
        CUDA_OK(cb, cudaStreamSynchronize(cb->stream));
    for (int i = 0; i < CUDA_MAX_GRAPHS; i++) {
        cuda_graph_rec *g = &cb->graphs[i];
        if (g->state == 2)
            CUDA_OK(cb, cudaGraphExecDestroy(g->exec));
        g->exec = NULL;
        if (forget)
            memset(g, 0, sizeof *g);
        else if (g->state)
            g->state = 1; /* a failed recording may have failed on the old buffers */
    }
}

void cuda_graphs_clear(cuda_backend *cb) { graphs_drop(cb, false); }

static void op_graph_reset(backend *be) { graphs_drop(CB(be), true); }

static uint64_t mix64(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdull;
}

static int op_graph_begin(backend *be, uint64_t key)
{
    cuda_backend *cb = CB(be);
    /* a non-causal batch (an image) runs directly: its visibility is not in the key */
    if (cuda_dead(cb) || cb->capturing || cb->graphs_off || cb->nc)
        return 0;
    /* launch sizes depend on the batch size and the KV bucket: part of the key */
    const uint64_t full = mix64(mix64(mix64(key, (uint64_t)cb->n), (uint64_t)cb->kv_bucket), 1);
    cb->graph_clock++;
    int free_i = -1, lru = 0;
    for (int i = 0; i < CUDA_MAX_GRAPHS; i++) {
        cuda_graph_rec *g = &cb->graphs[i];
        if (g->state && g->key == full) {
            g->last_use = cb->graph_clock;
            if (g->state == 2) {
                if (!CUDA_OK(cb, cudaGraphLaunch(g->exec, cb->stream)))
                    return 0; /* the failure is recorded; the ops will do nothing */
                return 1;
            }
            if (g->state == 3)
                return 0;
            /* seen once with these sizes: scratch has grown to fit, so record now */
            cb->failed_before_capture = cb->failed;
            if (!CUDA_OK(cb, cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeRelaxed))) {
                g->state = 3;
                return 0;
            }
            cb->capturing = i + 1;
            return 0;
        }
        if (!g->state && free_i < 0)
            free_i = i;
        if (g->state && g->last_use < cb->graphs[lru].last_use)
            lru = i;
    }
    int i = free_i;
    if (i < 0) {
        i = lru;
        if (cb->graphs[i].state == 2) {
            CUDA_OK(cb, cudaStreamSynchronize(cb->stream));
            CUDA_OK(cb, cudaGraphExecDestroy(cb->graphs[i].exec));
        }
    }
    memset(&cb->graphs[i], 0, sizeof cb->graphs[i]);
    cb->graphs[i].key = full;
    cb->graphs[i].state = 1;
    cb->graphs[i].last_use = cb->graph_clock;
    return 0;
}

static int op_graph_end(backend *be)
{
    cuda_backend *cb = CB(be);
    if (!cb->capturing)
        return 0;
    cuda_graph_rec *g = &cb->graphs[cb->capturing - 1];
    cb->capturing = 0;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(cb->stream, &graph);
    cudaGraphExec_t exec = NULL;
    bool ok = e == cudaSuccess && graph && !cb->failed;
    if (ok && cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess)
        ok = false;
    if (!ok) {
        /* nothing ran: forget the errors the recording caused, never record this key again */
        cudaGetLastError();
        if (!cb->failed_before_capture) {
            cb->failed = false;
            cb->err_code = 0;
            cb->err_msg[0] = 0;
        }
        g->state = 3;
        if (graph)
            CUDA_OK(cb, cudaGraphDestroy(graph));
        if (exec)
            CUDA_OK(cb, cudaGraphExecDestroy(exec));
        return -EAGAIN;
    }
    if (!CUDA_OK(cb, cudaGraphDestroy(graph))) {
        CUDA_OK(cb, cudaGraphExecDestroy(exec));
        g->state = 3;
        return 0; /* the ops did not run; the failure is recorded for check() */
    }
    g->exec = exec;
    g->state = 2;
    if (!CUDA_OK(cb, cudaGraphLaunch(exec, cb->stream)))
        return 0; /* recorded as a failure; check() reports it */
    return 0;
}

/* ---- devices ---- */

extern "C" int cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int cuda_device_info(int dev, char *name, size_t name_cap, uint64_t *vram_total,
                                uint64_t *vram_free, char *err, size_t err_cap)
{
    int n = cuda_device_count();
    if (dev < 0 || dev >= n) {
        if (err)
            snprintf(err, err_cap, "no CUDA device %d (%d found)", dev, n);
        return -ENODEV;
    }
    cudaDeviceProp prop;
    int prev = 0;
    size_t fr = 0, tot = 0;
    cudaError_t e = cudaGetDevice(&prev);
    if (e == cudaSuccess)
        e = cudaGetDeviceProperties(&prop, dev);
    if (e == cudaSuccess)
        e = cudaSetDevice(dev);
    if (e == cudaSuccess) {
        e = cudaMemGetInfo(&fr, &tot);
        /* the calling thread's device as it was (the first failure is the one reported) */
        const cudaError_t e2 = cudaSetDevice(prev);
        if (e == cudaSuccess)
            e = e2;
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (err)
            snprintf(err, err_cap, "CUDA device %d: %s", dev, cudaGetErrorString(e));
        return -ENODEV;
    }
    if (name)
        snprintf(name, name_cap, "%s", prop.name);
    if (vram_total)
        *vram_total = tot;
    if (vram_free)
        *vram_free = fr;
    return 0;
}

/* ---- creation ---- */

/* A backend being destroyed has nobody left to report a failure to: teardown calls
 * are made for their effect and their results dropped on purpose. */
#define TEARDOWN(call) ((void)(call))

static void op_destroy(backend *be)
{
    cuda_backend *cb = CB(be);
    if (!cb)
        return;
    TEARDOWN(cudaSetDevice(cb->device));
    if (cb->capturing) {
        cudaGraph_t g = NULL;
        TEARDOWN(cudaStreamEndCapture(cb->stream, &g));
        if (g)
            TEARDOWN(cudaGraphDestroy(g));
        cb->capturing = 0;
    }
    if (cb->stream)
        TEARDOWN(cudaStreamSynchronize(cb->stream));
    cuda_stage_destroy(cb);
    for (int i = 0; i < CUDA_MAX_GRAPHS; i++)
        if (cb->graphs[i].state == 2)
            TEARDOWN(cudaGraphExecDestroy(cb->graphs[i].exec));
    for (int w = 0; w < WS_COUNT; w++)
        if (cb->ws[w])
            TEARDOWN(cudaFree(cb->ws[w]));
    void *dev[] = {cb->d_small, cb->d_big, cb->d_rope};
    for (int i = 0; i < 3; i++)
        if (dev[i])
            TEARDOWN(cudaFree(dev[i]));
    if (cb->pin_small)
        TEARDOWN(cudaFreeHost(cb->pin_small));
    for (int k = 0; k < 2; k++) {
        if (cb->pin_big[k])
            TEARDOWN(cudaFreeHost(cb->pin_big[k]));
        if (cb->pin_big_ev[k])
            TEARDOWN(cudaEventDestroy(cb->pin_big_ev[k]));
    }
    if (cb->pin_small_ev)
        TEARDOWN(cudaEventDestroy(cb->pin_small_ev));
    if (cb->cublas)
        TEARDOWN(cublasDestroy(cb->cublas));
    if (cb->stream)
        TEARDOWN(cudaStreamDestroy(cb->stream));
    TEARDOWN(cudaGetLastError());
    free(cb->h_tok);
    free(cb->h_last);
    free(cb->held);
    free(cb);
}

static struct backend_ops cuda_ops;

static void cuda_ops_init(void)
{
    struct backend_ops o;
    memset(&o, 0, sizeof o);
    o.name = "CUDA";
    o.alloc = op_alloc;
    o.free = op_free;
    o.upload = op_upload;
    o.download = op_download;
    o.sync = op_sync;
    o.mem_used = op_mem_used;
    o.begin = op_begin;
    o.get_rows = cuda_op_get_rows;
    o.rmsnorm = cuda_op_rmsnorm;
    o.matmul = cuda_op_matmul;
    o.add_bias = cuda_op_add_bias;
    o.add = cuda_op_add;
    o.swiglu = cuda_op_swiglu;
    o.geglu = cuda_op_geglu;
    o.scale = cuda_op_scale;
    o.softcap = cuda_op_softcap;
    o.scale_ids = cuda_op_scale_ids;
    o.copy2d = cuda_op_copy2d;
    o.rope = cuda_op_rope;
    o.kv_store = cuda_op_kv_store;
    o.attention = cuda_op_attention;
    o.non_causal = cuda_op_non_causal;
    o.topk_softmax = cuda_op_topk_softmax;
    o.moe_ffn = cuda_op_moe_ffn;
    o.matmul_multi = cuda_op_matmul_multi;
    o.hadamard = cuda_op_hadamard;
    /* copy_rows is copy2d under the name the recurrent layers use */
    o.copy_rows = cuda_op_copy2d;
    o.ssm_conv = cuda_op_ssm_conv;
    o.l2norm = cuda_op_l2norm;
    o.delta_gates = cuda_op_delta_gates;
    o.gated_delta = cuda_op_gated_delta;
    o.recurrent_snapshots = true;
    o.gated_rmsnorm = cuda_op_gated_rmsnorm;
    o.sigmoid_mul = cuda_op_sigmoid_mul;
    o.layer_norm = cuda_op_layer_norm;
    o.gelu = cuda_op_gelu;
    o.clamp = cuda_op_clamp;
    o.avg_pool = cuda_op_avg_pool;
    o.destroy = op_destroy;
    o.load_weight = cuda_op_load_weight;
    o.stage_copy = cuda_op_stage_copy;
    o.stage_wait = cuda_op_stage_wait;
    o.stage_release = cuda_op_stage_release;
    o.argmax = cuda_op_argmax;
    o.topk = cuda_op_topk;
    o.check = op_check;
    o.graph_begin = op_graph_begin;
    o.graph_end = op_graph_end;
    o.graph_reset = op_graph_reset;
    cuda_ops = o;
}

__global__ void k_probe(int *x)
{
    if (x)
        *x = 1;
}

extern "C" backend *backend_cuda_new(int device, char *err, size_t err_cap)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        err_cap = sizeof dummy;
    }
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        snprintf(err, err_cap, "no usable CUDA device: %s",
                 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        return NULL;
    }
    if (device < 0 || device >= n) {
        snprintf(err, err_cap, "no CUDA device %d (%d found)", device, n);
        return NULL;
    }
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
        cudaGetLastError();
        snprintf(err, err_cap, "CUDA device %d: %s", device, cudaGetErrorString(e));
        return NULL;
    }
    cudaFuncAttributes fa;
    if ((e = cudaFuncGetAttributes(&fa, k_probe)) != cudaSuccess) {
        cudaGetLastError();
        snprintf(err, err_cap, "CUDA device %d (%s, compute %d.%d): %s; rebuild llmfs with CMAKE_CUDA_ARCHITECTURES=%d%d",
                 device, prop.name, prop.major, prop.minor, cudaGetErrorString(e), prop.major, prop.minor);
        return NULL;
    }
    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
    if (!cb) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    static bool ops_ready;
    if (!ops_ready) {
        cuda_ops_init();
        ops_ready = true;
    }
    cb->base.ops = &cuda_ops;
    cb->base.impl = cb;
    cb->device = device;
    cb->n_sm = prop.multiProcessorCount;
    /* LLMFS_CUDA_GRAPHS=0 runs every step op by op (for comparisons and debugging) */
    const char *gr = getenv("LLMFS_CUDA_GRAPHS");
    cb->graphs_off = gr && strcmp(gr, "0") == 0;
    cb->smem_optin = prop.sharedMemPerBlockOptin;
    const char *what = "";
#define TRY(call)                         \
    do {                                  \
        if ((e = (call)) != cudaSuccess) { \
            what = #call;                 \
            goto fail;                    \
        }                                 \
    } while (0)
    TRY(cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking));
    TRY(cudaEventCreateWithFlags(&cb->pin_small_ev, cudaEventDisableTiming));
    TRY(cudaEventRecord(cb->pin_small_ev, cb->stream));
    for (int k = 0; k < 2; k++) {
        TRY(cudaHostAlloc(&cb->pin_big[k], PIN_BIG, cudaHostAllocDefault));
        TRY(cudaEventCreateWithFlags(&cb->pin_big_ev[k], cudaEventDisableTiming));
        TRY(cudaEventRecord(cb->pin_big_ev[k], cb->stream));
    }
    cb->pin_big_cap = PIN_BIG;
    TRY(cudaMalloc((void **)&cb->d_small, sizeof(int32_t) * 3 * CUDA_SMALL_BATCH));
    TRY(cudaMemset(cb->d_small, 0, sizeof(int32_t) * 3 * CUDA_SMALL_BATCH));
    TRY(cudaMalloc((void **)&cb->d_rope, sizeof(double) * CUDA_ROPE_SLOTS * (CUDA_ROPE_MAX / 2)));
    cb->own_bytes = sizeof(int32_t) * 3 * CUDA_SMALL_BATCH + sizeof(double) * CUDA_ROPE_SLOTS * (CUDA_ROPE_MAX / 2);
#undef TRY
    {
        cublasStatus_t s = cublasCreate(&cb->cublas);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasSetStream(cb->cublas, cb->stream);
        void *ws = s == CUBLAS_STATUS_SUCCESS ? cuda_ws(cb, WS_CUBLAS, CUBLAS_WS) : NULL;
        if (s == CUBLAS_STATUS_SUCCESS && ws)
            s = cublasSetWorkspace(cb->cublas, ws, cb->ws_cap[WS_CUBLAS]);
        if (s != CUBLAS_STATUS_SUCCESS || !ws) {
            snprintf(err, err_cap, "CUDA device %d: cuBLAS: %s", device,
                     ws ? cublas_status_name(s) : cb->err_msg);
            op_destroy(&cb->base);
            return NULL;
        }
    }
    return &cb->base;
fail:
    cudaGetLastError();
    snprintf(err, err_cap, "CUDA device %d (%s): %s: %s", device, prop.name, what, cudaGetErrorString(e));
    op_destroy(&cb->base);
    return NULL;
}
