/* backend.h — the seam between the model code and a device's kernels.
 *
 * The forward pass (model.c) is written once against these ops. A backend owns memory
 * (weights placed on it, its layers' KV cache, scratch activations) and computes on
 * it. All activations are float32, row-major [tokens][dim], in the memory of the
 * backend doing the op; moving a hidden state between backends is an explicit copy
 * through the host (backend_copy). A new device is a new backend_*.c / kernels/NAME.cu
 * that fills struct backend_ops; nothing else changes.
 */
#ifndef LLMFS_BACKEND_H
#define LLMFS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct backend backend;
typedef struct kv_cache kv_cache;
struct llmfs_error;

/* A weight as the model sees it. 2D: ne[0] row length (contiguous), ne[1] rows.
 * 3D (MoE experts): ne[2] experts, each a [ne[1]][ne[0]] matrix nb2 bytes apart. */
typedef struct tensor {
    char name[64];
    int type;           /* enum ggml_type */
    int64_t ne[3];
    size_t nb1, nb2;    /* bytes per row, per expert matrix */
    void *data;         /* in the memory of be */
    backend *be;        /* where it lives */
} tensor;

/* The tokens of one forward call (host memory; the backend copies what it needs in begin). */
typedef struct fwd_batch {
    int n;
    const int32_t *token;   /* [n] */
    const int32_t *pos;     /* [n] position within its sequence */
    const int32_t *seq;     /* [n] sequence = KV slot */
    const int8_t *logits;   /* [n] 1: return this position's logits */
} fwd_batch;

typedef struct rope_params {
    int n_rot;            /* dims rotated per head (head_dim usually) */
    bool neox;            /* pairs (i, i + n_rot/2) instead of (2i, 2i+1) */
    float freq_base;
    float freq_scale;     /* 1 / linear scaling factor */
    /* llama3-style frequency scaling; factor 0 = off */
    float l3_factor, l3_low_freq_factor, l3_high_freq_factor;
    int l3_orig_ctx;
    /* Per-pair frequency divisors [n_rot/2] from the GGUF tensor rope_freqs (how
     * converted Llama 3.1+ files carry their scaling), host memory; NULL if none. When
     * set, l3_factor is 0. */
    const float *freq_factors;
    /* YaRN (llama.cpp's rope_yarn), on when yarn_ext_factor > 0: pairs below the
     * correction dim of yarn_beta_fast keep the original frequency, pairs above that of
     * yarn_beta_slow take freq_scale's interpolated one, a linear ramp between; cos and
     * sin are multiplied by yarn_attn_factor * (1 + 0.1 ln(1/freq_scale)). The correction
     * dim of b is n_rot ln(yarn_orig_ctx / (2 pi b)) / (2 ln freq_base), floored for
     * beta_fast and ceiled for beta_slow as ggml does. */
    float yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow;
    int yarn_orig_ctx;
} rope_params;

typedef struct attn_params {
    int n_head, n_head_kv, head_dim;
    float scale;          /* 1/sqrt(head_dim) */
    bool flash;           /* online-softmax kernel instead of materialised scores */
    /* Sliding window: a token at position p sees the cells p - n_swa < p' <= p (llama.cpp's
     * standard window); 0 sees every earlier cell. */
    int n_swa;
    /* Attention sinks [n_head] (in the backend's memory): one learned logit per head that
     * joins the softmax's denominator and contributes no value; NULL for none. */
    const float *sinks;
} attn_params;

/* Shape of a gated delta rule (backend op gated_delta). */
typedef struct delta_params {
    int n_k, n_v, d;      /* K heads, V heads (a multiple of n_k), head size (d_k = d_v) */
    bool tiled;           /* V head j reads K head j % n_k (Qwen3.5), else j / (n_v/n_k) (Qwen3-Next) */
    /* Tokens of one sequence in a row processed as one chunk of the parallel form (the
     * state crosses chunk boundaries only); 0 or 1: token by token. Both give the same
     * math; a backend may ignore it. */
    int chunk;
} delta_params;
/* The activation of a gated feed-forward: act(gate) * up. */
enum ffn_act {
    FFN_SILU, /* SwiGLU: silu(g) = g / (1 + e^-g) */
    FFN_GELU, /* GeGLU: the tanh approximation of GELU, 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) */
};
/* The activations of the vision towers (backend op gelu). */
enum gelu_kind {
    GELU_TANH,  /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    GELU_ERF,   /* 0.5 x (1 + erf(x / sqrt(2))) */
    GELU_QUICK, /* x sigmoid(1.702 x) */
};
/* What a family's routed experts add to the plain SwiGLU experts of moe_ffn (gpt-oss). */
typedef struct moe_extra {
    /* per-expert biases, F32 in the experts' backend: gate_b and up_b [n_expert][ff],
     * down_b [n_expert][n_embd] (added before the router weight); NULL: none */
    const tensor *gate_b, *up_b, *down_b;
    /* the clamped SwiGLU: g = min(gate, limit), u = clamp(up, -limit, limit),
     * act = g * sigmoid(alpha g) * (u + 1); limit 0: silu(gate) * up */
    float swiglu_alpha, swiglu_limit;
} moe_extra;

struct backend_ops {
    const char *name; /* "CPU", "CUDA" */

    /* memory */
    void *(*alloc)(backend *be, size_t bytes);   /* NULL: out of memory */
    void (*free)(backend *be, void *p);
    void (*upload)(backend *be, void *dst, const void *src, size_t n);   /* host -> be */
    void (*download)(backend *be, void *dst, const void *src, size_t n); /* be -> host */
    void (*sync)(backend *be);
    /* Bytes of device memory the backend holds now (tensors, caches, its own scratch);
     * NULL for host backends. */
    uint64_t (*mem_used)(backend *be);

    /* The batch every op of this forward call refers to (positions, sequences). */
    int (*begin)(backend *be, const fwd_batch *b);

    /* out[n][ne0] = rows b->token of w, as floats */
    void (*get_rows)(backend *be, float *out, const tensor *w, int n);
    /* out[r] = x[r] / rms(x[r]) * w, r < rows, rows of d; w may be NULL */
    void (*rmsnorm)(backend *be, float *out, const float *x, const float *w, int rows, int d, float eps);
    /* out[n][ne1] = x[n][ne0] · wᵀ (activations rounded to w's dot type first) */
    void (*matmul)(backend *be, float *out, const tensor *w, const float *x, int n);
    /* x[r] += bias, r < rows, rows of d */
    void (*add_bias)(backend *be, float *x, const float *bias, int rows, int d);
    /* x += y, n floats */
    void (*add)(backend *be, float *x, const float *y, int64_t n);
    /* out = silu(gate) * up, n floats */
    void (*swiglu)(backend *be, float *out, const float *gate, const float *up, int64_t n);
    /* out = gelu(gate) * up, n floats (tanh GELU, enum ffn_act) */
    void (*geglu)(backend *be, float *out, const float *gate, const float *up, int64_t n);
    /* x *= s, n floats */
    void (*scale)(backend *be, float *x, float s, int64_t n);
    /* x = cap * tanh(x / cap), n floats: soft-capped logits */
    void (*softcap)(backend *be, float *x, float cap, int64_t n);
    /* w[i] *= s[ids[i]], i < n; s in be's memory (per-expert output scales) */
    void (*scale_ids)(backend *be, float *w, const int32_t *ids, const float *s, int64_t n);
    /* dst[r][0..d) = src[r][0..d), r < rows, rows dst_stride and src_stride floats apart */
    void (*copy2d)(backend *be, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                   int rows, int d);
    /* rotates x[n][n_head][head_dim] in place at the batch's positions */
    void (*rope)(backend *be, float *x, int n, int n_head, int head_dim, const rope_params *p);
    /* stores k, v [n][n_head_kv*head_dim] at the batch's (seq, pos) cells of layer il */
    void (*kv_store)(backend *be, kv_cache *kv, int il, const float *k, const float *v, int n);
    /* out[n][n_head*head_dim]: causal attention of q over the layer's cache, each token
     * seeing its own sequence's cells 0..pos (after non_causal: up to the last position
     * of its sequence in the batch) */
    void (*attention)(backend *be, float *out, const float *q, const kv_cache *kv, int il, int n,
                      const attn_params *p);
    /* MoE: from router logits [n][n_expert] pick the top k after a softmax, renormalise
     * when norm is set; ids [n][k] int32 and weights [n][k] float in be's memory */
    void (*topk_softmax)(backend *be, int32_t *ids, float *weights, const float *logits, int n,
                         int n_expert, int k, bool norm);
    /* out[n][ne1 of down] = sum_j weights[i][j] * down_e(act(gate_e x) * up_e x), e = ids[i][j],
     * act an enum ffn_act. up NULL: gate holds both, each expert's gate rows then its up
     * rows ([n_expert][2*ff][ne0], Gemma 4's ffn_gate_up_exps). ex (NULL: none) adds the
     * experts' biases and the clamped SwiGLU (gpt-oss). */
    void (*moe_ffn)(backend *be, float *out, const float *x, const tensor *gate, const tensor *up,
                    const tensor *down, const int32_t *ids, const float *weights, int n, int k, int act,
                    const moe_extra *ex);

    /* ---- optional: NULL where a backend does without ---- */

    /* For the batch begun last: its tokens of a sequence see each other whatever their
     * order (an image's tokens; llama.cpp decodes an image with causal attention off);
     * earlier cells are seen as before, the sliding window included. NULL: the backend
     * only has causal attention (the model refuses such a batch on it). */
    void (*non_causal)(backend *be);

    /* out[i] = x · w[i]ᵀ for i < count (count <= 4): weights that share an input (q, k, v;
     * gate, up) in one pass, x converted once per dot type. NULL: matmul per weight. */
    void (*matmul_multi)(backend *be, float *const *out, const tensor *const *w, int count,
                         const float *x, int n);

    /* x <- H x for each consecutive block of `block` floats (n floats, a multiple; block a
     * power of two), H the Sylvester-Hadamard matrix scaled by 1/sqrt(block): orthonormal
     * and its own inverse. Rotating q, k and v before a quantized cache spreads outliers
     * over each block (kv_cache rot_k / rot_v, as llama.cpp does); attention scores are
     * unchanged and the attention output is rotated back with the same op. NULL: caches
     * on this backend are stored unrotated. */
    void (*hadamard)(backend *be, float *x, int64_t n, int block);

    /* ---- recurrent (Gated DeltaNet) layers: hybrid Qwen. NULL where a backend has no
     * recurrent layers (the model keeps such layers on the CPU). Each token's state is
     * its sequence's (the batch's seq); a token at position 0 starts from a zero state. */

    /* dst[r][0..d) = src[r][0..d), rows `rows`, row starts dst_stride / src_stride floats
     * apart: splitting and regrouping the columns of a projection. */
    void (*copy_rows)(backend *be, float *dst, int64_t dst_stride, const float *src,
                      int64_t src_stride, int rows, int d);
    /* out[t][c] = silu(sum_i w[c][i] * x_{t-K+1+i}[c]), i < K = d_conv, c < channels:
     * the causal depthwise conv over each sequence's earlier inputs; x rows x_stride
     * floats apart, out contiguous [n][channels]. Reads and advances layer il's conv
     * state (the last K-1 inputs of each sequence). */
    void (*ssm_conv)(backend *be, float *out, const float *x, int64_t x_stride, const float *w,
                     kv_cache *kv, int il, int n, int channels, int d_conv);
    /* Each of the `groups` slices of d floats of each row r < rows (rows row_stride
     * floats apart) divided by max(its L2 norm, eps), in place. */
    void (*l2norm)(backend *be, float *x, int rows, int groups, int d, int64_t row_stride, float eps);
    /* The DeltaNet gates, in place, [n][n_v]: g = softplus(g + dt_bias) * a (the log of
     * the decay; a = -exp(A) < 0) and beta = sigmoid(beta). */
    void (*delta_gates)(backend *be, float *g, float *beta, const float *dt_bias, const float *a,
                        int n, int n_v);
    /* The gated delta rule over layer il's state: per token t, V head j (K head kh(j)),
     * with S_j [d][d] of t's sequence: S = exp(g) S; S += k (beta (v - S^T k))^T;
     * out[t][j] = S^T q / sqrt(d). qkv rows (stride floats apart) hold q [n_k][d],
     * k [n_k][d], v [n_v][d]; g, beta [n][n_v]; out [n][n_v*d]. */
    void (*gated_delta)(backend *be, float *out, const float *qkv, int64_t stride, const float *g,
                        const float *beta, kv_cache *kv, int il, int n, const struct delta_params *p);
    /* ssm_conv and gated_delta also write per-token snapshots of the state (kv.h,
     * kv_snap_arm) */
    bool recurrent_snapshots;
    /* out[r] = x[r] / rms(x[r]) * w * silu(z[r]), rows of d (x, z, out [rows][d]) */
    void (*gated_rmsnorm)(backend *be, float *out, const float *x, const float *w, const float *z,
                          int rows, int d, float eps);
    /* x[r][i] *= sigmoid(g[r][i]) (g [rows][d]) or, per_row, sigmoid(g[r]) (g [rows]) */
    void (*sigmoid_mul)(backend *be, float *x, const float *g, int rows, int d, bool per_row);

    /* ---- the vision tower and projector (clip.c): NULL where a backend does without
     * (the tower then runs on the CPU) ---- */

    /* out[r] = (x[r] - mean) / sqrt(var + eps) * w + b, the mean and the (biased)
     * variance of x[r], r < rows, rows of d; b may be NULL */
    void (*layer_norm)(backend *be, float *out, const float *x, const float *w, const float *b, int rows,
                       int d, float eps);
    /* out = act(x) * up (up NULL: act(x)), n floats, act an enum gelu_kind; out may be x */
    void (*gelu)(backend *be, float *out, const float *x, const float *up, int64_t n, int kind);
    /* x = min(max(x, lo), hi), n floats */
    void (*clamp)(backend *be, float *x, int64_t n, float lo, float hi);
    /* out[(ty*(cols/k) + tx)][d] = the mean of the k x k block (tx, ty) of the grid x
     * [rows][cols][d] (cols, rows multiples of k): average pooling of patches */
    void (*avg_pool)(backend *be, float *out, const float *x, int cols, int rows, int k, int d);

    /* Releases everything the backend holds; backend_free calls it when set. */
    void (*destroy)(backend *be);

    /* Places weight t on be from its host bytes src (GGUF layout; t->type, ne, nb1, nb2
     * set): allocates, copies, sets t->data and t->be. The backend may store its own
     * layout, which only its ops read; t->data is freed with ops->free. 0, or -ENOMEM /
     * -EINVAL / -EIO with the reason in err. NULL: alloc + upload of the GGUF bytes. */
    int (*load_weight)(backend *be, tensor *t, const void *src, struct llmfs_error *err);
    /* out[r] (host memory) = index of the largest x[r][0..d) (lowest index on ties; NaN
     * counts as smallest), r < rows: only the ids cross to the host. */
    void (*argmax)(backend *be, int32_t *out, const float *x, int rows, int d);
    /* The k largest of each row, best first (ties: lower index first), into host memory
     * ids[rows][k] and vals[rows][k]; k <= d and k <= 256. */
    void (*topk)(backend *be, int32_t *ids, float *vals, const float *x, int rows, int d, int k);
    /* Ops return nothing, so a failing device records its first error. 0 when every op
     * since the last call succeeded; else a negative errno with the reason in err, and
     * the record is cleared. */
    int (*check)(backend *be, struct llmfs_error *err);

    /* Recorded decode steps (CUDA graphs). For a forward call whose op sequence on this
     * backend depends only on key and on what begin uploads (tokens, positions,
     * sequences), the model brackets those ops — after begin and any uploads, before any
     * download — with graph_begin / graph_end:
     *   1 = graph_begin(be, key): a recording was replayed; skip the ops and graph_end.
     *   0: run the ops, then call graph_end: 0 = their effects are done (run directly or
     *      recorded and replayed); negative = the recording failed and nothing ran: run
     *      the ops again (the backend no longer records this key).
     * The backend adds what its launches depend on (batch size, KV length bucket) to
     * key. Every pointer an op is given must stay the same across calls with one key;
     * after freeing or moving any buffer the ops use, call graph_reset. */
    int (*graph_begin)(backend *be, uint64_t key);
    int (*graph_end)(backend *be);
    void (*graph_reset)(backend *be);

    /* Weights streamed through be for one large batch (model.c: feed-forward weights that
     * live in host memory, when copying them costs less than computing on the host).
     * stage_copy copies the host tensors src[0..count) (GGUF layout) into staging slot
     * `slot` (0 or 1) and describes the copies as tensors of be in dst[0..count). The copy
     * starts once the ops issued before the call are done (the slot's previous readers)
     * and overlaps the ops issued after it; ops reading dst are issued after
     * stage_wait(be, slot). dst is valid until the slot's next stage_copy. 0, or -ENOMEM
     * (the slot cannot grow: compute where the weights are) / -EINVAL / -EIO with the
     * reason in err; a failed stage_copy leaves the backend usable. NULL: no streaming. */
    int (*stage_copy)(backend *be, int slot, tensor *dst, const tensor *const *src, int count,
                      struct llmfs_error *err);
    void (*stage_wait)(backend *be, int slot);
    /* Gives the slots' memory back (after the ops using them), for a batch that needs
     * the room; the next stage_copy grows them again. */
    void (*stage_release)(backend *be);
};

struct backend {
    const struct backend_ops *ops;
    void *impl;           /* the device's own state */
};

/* The host: threads for single-token steps and for prompt batches (<= 0: physical cores). */
backend *backend_cpu_new(int n_threads, int n_threads_batch);
/* A CPU backend's threads for single-token steps; 0 for another backend. */
int backend_cpu_threads(const backend *be);
/* The kernel thread ids of a CPU backend's helper threads (the thread that runs the
 * model is not among them), so the engine can pin them (cpu_affinity, priority).
 * Returns the count (0 for another backend), fills at most cap. */
int backend_cpu_tids(backend *be, int *tids, int cap);
void backend_free(backend *be); /* be->ops->destroy(be); NULL is fine */

/* ---- the accelerators (backend_registry.c): whatever devices this build has ---- */

typedef struct backend_gpu_info {
    char name[128];
    uint64_t vram_total, vram_free;   /* bytes */
} backend_gpu_info;

/* Usable accelerators: 0 in a build without any, or without a driver or a device. */
int backend_gpu_count(void);
/* Name and memory of accelerator dev: 0, or a negative errno with the reason in why. */
int backend_gpu_info_of(int dev, backend_gpu_info *out, char *why, size_t why_cap);
/* A backend on accelerator dev, or NULL with the reason in why ("llmfs was built
 * without CUDA", no device, no memory, ...). */
backend *backend_gpu_new(int dev, char *why, size_t why_cap);

#endif
