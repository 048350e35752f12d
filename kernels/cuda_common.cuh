/* cuda_common.cuh — the CUDA backend's state and the helpers every kernel file shares.
 *
 * One cuda_backend per device. All work goes to one non-blocking stream, so ops are
 * ordered without host waits; the host waits only in download, sync, argmax/topk and
 * where a MoE or attention decision needs nothing from the device (never in decode).
 * No CUDA call's result is ignored: failures are recorded (the first one wins) and
 * later ops do nothing until the model reads the record through ops->check.
 */
#ifndef LLMFS_CUDA_COMMON_CUH
#define LLMFS_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <errno.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
#include "kv.h"
}

/* Scratch buffers, one per purpose: an op may hold several at once. Growing one
 * frees the old memory, which invalidates recorded graphs (they are dropped). */
enum cuda_ws {
    WS_ACT_Q,      /* activations quantized to 8-bit blocks */
    WS_ACT_H,      /* activations as f16 for cuBLAS */
    WS_ACT_B,      /* ... as bf16 */
    WS_W_H,        /* weights dequantized to f16 for cuBLAS */
    WS_CUBLAS,     /* cuBLAS workspace */
    WS_ATTN,       /* split-K partial results */
    WS_TILES,      /* flash-attention query tiles */
    WS_MOE_GROUPS, /* expert groups, sorted pairs */
    WS_MOE_H,      /* expert hidden activations (f32) */
    WS_MOE_HQ,     /* ... quantized */
    WS_MOE_Y,      /* per-pair expert outputs */
    WS_MOE_U,      /* expert up products when the activation is not fused (moe_extra) */
    WS_SAMPLE,     /* argmax/top-k results */
    WS_LAST,       /* non-causal batches: the last position each token sees */
    WS_COUNT
};

struct cuda_graph_rec {
    uint64_t key;
    int state; /* 1 seen once, 2 recorded, 3 failed (not again until scratch moves) */
    cudaGraphExec_t exec;
    uint64_t last_use;
};
#define CUDA_MAX_GRAPHS 32
#define CUDA_SMALL_BATCH 64 /* batches up to this size use fixed device buffers */

/* device tables of rope frequencies, keyed by content */
#define CUDA_ROPE_MAX 1024 /* n_rot */
#define CUDA_ROPE_SLOTS 4
struct cuda_rope_slot {
    int half;
    uint64_t last_use;
    double inv[CUDA_ROPE_MAX / 2];
};

struct cuda_backend {
    backend base; /* first: a backend* is a cuda_backend* */
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    int n_sm;
    size_t smem_optin;

    /* the first failure since the last check */
    bool failed;
    int err_code; /* an errno */
    char err_msg[256];

    /* pinned staging: small (batch info, ids) and large (tensors, logits) */
    void *pin_small;
    size_t pin_small_cap;
    cudaEvent_t pin_small_ev;
    void *pin_big[2];
    size_t pin_big_cap;
    cudaEvent_t pin_big_ev[2];

    /* the current batch: host copies and device arrays tok|pos|seq */
    int n;
    int32_t *h_tok, *h_pos, *h_seq;
    int h_cap;
    int32_t *d_small;    /* 3*CUDA_SMALL_BATCH, never moves */
    int32_t *d_big;      /* 3*d_big_cap */
    int d_big_cap;
    const int32_t *d_tok, *d_pos, *d_seq;
    int max_pos;
    int kv_bucket;       /* decode launch sizes depend on this, not on max_pos */
    int tiles_bq;        /* query tile size the uploaded tile list was built for (0: none) */
    /* non_causal since begin: each token sees up to h_last/d_last (the last position of
     * its sequence in the batch) instead of its own position */
    bool nc;
    int32_t *h_last;
    int h_last_cap;
    const int32_t *d_last;
    int n_tiles;

    void *ws[WS_COUNT];
    size_t ws_cap[WS_COUNT];

    /* device memory held: the backend's own buffers, and what alloc handed out (freed by
     * pointer alone, so the sizes are kept) */
    uint64_t own_bytes, alloc_bytes;
    struct cuda_held { void *p; size_t n; } *held;
    int n_held, cap_held;

    double *d_rope; /* CUDA_ROPE_SLOTS tables of CUDA_ROPE_MAX/2 */
    cuda_rope_slot rope[CUDA_ROPE_SLOTS];
    uint64_t rope_clock;

    /* recorded decode steps */
    struct cuda_graph_rec graphs[CUDA_MAX_GRAPHS];
    int capturing; /* index+1 of the graph being recorded, 0 if none */
    bool graphs_off;
    bool failed_before_capture;
    uint64_t graph_clock;

    /* weights streamed for large batches (stage.cu): a copy stream, two slots, the GGUF
     * blocks of a piece in raw on their way to the device layout, and the host ranges
     * registered (pinned in place) so the copies read them without a host bounce */
    cudaStream_t copy_stream;
    cudaEvent_t stage_go;        /* on stream: the ops before a stage_copy are done */
    cudaEvent_t stage_ready[2];  /* on copy_stream: a slot's copies are done */
    void *slot[2];
    size_t slot_cap[2];
    void *raw;
    size_t raw_cap;
    struct cuda_host_range {
        const void *p; size_t n;  /* a tensor's host bytes */
        const char *a, *b;        /* the pages of it registered (a == b: none) */
    } *ranges;
    int n_ranges, cap_ranges;
};

/* kernel<<<grid, block, smem, stream>>>(args), and a kernel's dynamic shared memory,
 * spelled so that the simulated device (tests/cudasim) runs the same source. */
#ifndef CUDASIM
#define LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define DYN_SHARED(type, name) extern __shared__ type name[]
#endif

static inline cuda_backend *CB(backend *be) { return (cuda_backend *)be; }

/* Records the first failure (errno code, printf-style reason). Returns false. */
bool cuda_fail(cuda_backend *cb, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* True when e is cudaSuccess; otherwise records "what: error string" and returns false. */
bool cuda_ok_(cuda_backend *cb, cudaError_t e, const char *what);
bool cublas_ok_(cuda_backend *cb, cublasStatus_t s, const char *what);
#define CUDA_OK(cb, call) cuda_ok_((cb), (call), #call)
#define CUBLAS_OK(cb, call) cublas_ok_((cb), (call), #call)
/* After a kernel launch: records a launch failure under the kernel's name. */
#define CUDA_LAUNCHED(cb, name) cuda_ok_((cb), cudaGetLastError(), name)

/* True when ops should do nothing (an earlier failure is pending) */
static inline bool cuda_dead(cuda_backend *cb) { return cb->failed; }

/* Scratch of at least bytes for purpose w, or NULL (failure recorded). */
void *cuda_ws(cuda_backend *cb, enum cuda_ws w, size_t bytes);

/* Drops every recorded graph (buffers they refer to moved); their keys record again on
 * their next call. */
void cuda_graphs_clear(cuda_backend *cb);

/* Copies n bytes from host memory into device memory on the stream through pinned
 * staging; the host buffer may be reused as soon as this returns. */
bool cuda_upload_small(cuda_backend *cb, void *dst, const void *src, size_t n);
/* The small pinned staging buffer (at least bytes), once the copy that last used it
 * has finished; NULL on failure (recorded). */
void *cuda_pin_small(cuda_backend *cb, size_t bytes);

static inline unsigned cdiv(long long a, long long b) { return (unsigned)((a + b - 1) / b); }

/* ---- ops implemented in the kernel files ---- */
void cuda_op_get_rows(backend *be, float *out, const tensor *w, int n);
void cuda_op_rmsnorm(backend *be, float *out, const float *x, const float *w, int rows, int d, float eps);
void cuda_op_matmul(backend *be, float *out, const tensor *w, const float *x, int n);
void cuda_op_matmul_multi(backend *be, float *const *out, const tensor *const *w, int count, const float *x, int n);
void cuda_op_add_bias(backend *be, float *x, const float *bias, int rows, int d);
void cuda_op_add(backend *be, float *x, const float *y, int64_t n);
void cuda_op_swiglu(backend *be, float *out, const float *gate, const float *up, int64_t n);
void cuda_op_geglu(backend *be, float *out, const float *gate, const float *up, int64_t n);
void cuda_op_scale(backend *be, float *x, float s, int64_t n);
void cuda_op_softcap(backend *be, float *x, float cap, int64_t n);
void cuda_op_scale_ids(backend *be, float *w, const int32_t *ids, const float *s, int64_t n);
void cuda_op_copy2d(backend *be, float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int rows,
                    int d);
void cuda_op_rope(backend *be, float *x, int n, int n_head, int head_dim, const rope_params *p);
void cuda_op_hadamard(backend *be, float *x, int64_t n, int block);
void cuda_op_kv_store(backend *be, kv_cache *kv, int il, const float *k, const float *v, int n);
void cuda_op_non_causal(backend *be);
void cuda_op_attention(backend *be, float *out, const float *q, const kv_cache *kv, int il, int n,
                       const attn_params *p);
void cuda_op_topk_softmax(backend *be, int32_t *ids, float *weights, const float *logits, int n,
                          int n_expert, int k, bool norm);
void cuda_op_moe_ffn(backend *be, float *out, const float *x, const tensor *gate, const tensor *up,
                     const tensor *down, const int32_t *ids, const float *weights, int n, int k, int act,
                     const moe_extra *ex);
/* recurrent (Gated DeltaNet) layers: recurrent.cu */
void cuda_op_ssm_conv(backend *be, float *out, const float *x, int64_t x_stride, const float *w, kv_cache *kv,
                      int il, int n, int channels, int d_conv);
void cuda_op_l2norm(backend *be, float *x, int rows, int groups, int d, int64_t row_stride, float eps);
void cuda_op_delta_gates(backend *be, float *g, float *beta, const float *dt_bias, const float *a, int n, int n_v);
void cuda_op_gated_delta(backend *be, float *out, const float *qkv, int64_t stride, const float *g,
                         const float *beta, kv_cache *kv, int il, int n, const delta_params *p);
void cuda_op_gated_rmsnorm(backend *be, float *out, const float *x, const float *w, const float *z, int rows, int d,
                           float eps);
void cuda_op_sigmoid_mul(backend *be, float *x, const float *g, int rows, int d, bool per_row);
void cuda_op_layer_norm(backend *be, float *out, const float *x, const float *w, const float *b, int rows, int d,
                        float eps);
void cuda_op_gelu(backend *be, float *out, const float *x, const float *up, int64_t n, int kind);
void cuda_op_clamp(backend *be, float *x, int64_t n, float lo, float hi);
void cuda_op_avg_pool(backend *be, float *out, const float *x, int cols, int rows, int k, int d);
void cuda_op_argmax(backend *be, int32_t *out, const float *x, int rows, int d);
void cuda_op_topk(backend *be, int32_t *ids, float *vals, const float *x, int rows, int d, int k);
int cuda_op_load_weight(backend *be, tensor *t, const void *src, struct llmfs_error *err);
int cuda_op_stage_copy(backend *be, int slot, tensor *dst, const tensor *const *src, int count,
                       struct llmfs_error *err);
void cuda_op_stage_wait(backend *be, int slot);
void cuda_op_stage_release(backend *be);
void cuda_stage_destroy(cuda_backend *cb);

/* Bytes the device layout of a weight takes (0: type not handled). */
size_t cuda_weight_bytes(int type, int64_t ne0, int64_t rows);

/* Matrix-vector products used by matmul and moe_ffn (mmv.cu). */
struct mmv_job {
    const void *w;         /* device layout of the whole tensor (every expert) */
    const void *w2;        /* gated: the up matrix (w is the gate), same type and shape */
    int type;
    int64_t ne0, ne1, ne2; /* row length, rows per expert, experts */
    /* activations: pair p reads activation row p / act_div */
    const float *xf;       /* f32 rows (float weights), row stride ne0 */
    const int8_t *xq;      /* 8-bit rows (quantized weights), row stride ne0 */
    const float4 *xm;      /* per 32-block {d, d*sum(first 16), d*sum(last 16), 0} */
    int act_div;
    float *out;            /* out[pair * ldo + row] */
    int64_t ldo;
    /* which expert and pairs each grid row handles: one of
     *  - dense: groups == NULL, ids == NULL: pairs 0..n-1, expert 0
     *  - direct: ids != NULL: grid row p = pair p, expert ids[p]
     *  - grouped: groups != NULL: grid row g < *n_groups handles groups[g] */
    int n;
    const int32_t *ids;
    const int4 *groups;    /* {expert, count, first, 0} */
    const int32_t *sorted; /* pair indices grouped by expert */
    const int32_t *n_groups;
    int grid_rows;         /* launch rows: 1 (dense), pairs (direct), bound (grouped) */
    int nt;                /* pairs per grid row at most (1, 2, 4, 8) */
};
bool cuda_mmv(cuda_backend *cb, const struct mmv_job *j);
/* x[rows][ne0] f32 -> 8-bit blocks of 32 into q (rows*ne0 bytes) and m (rows*ne0/32). */
bool cuda_quantize_act(cuda_backend *cb, const float *x, int64_t rows, int64_t ne0, int8_t *q, float4 *m);

#endif
