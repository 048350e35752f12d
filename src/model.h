/* model.h — a GGUF model: hyperparameters, weights bound to backends, the forward pass.
 *
 * The architectures are the families of src/models/ (model.c's table). Weights stay in the file mapping on the CPU path (never copied);
 * tensors placed on a GPU are uploaded once at load.
 */
#ifndef LLMFS_MODEL_H
#define LLMFS_MODEL_H

#include "backend.h"
#include "gguf.h"
#include "kv.h"
#include "tokenizer.h"

typedef struct model_hparams {
    char arch[32];
    char name[128];          /* general.name, "" if none */
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int n_expert, n_expert_used, n_ff_exp;
    bool expert_norm;        /* renormalise the top-k router weights */
    float rms_eps;
    rope_params rope;
    bool tied_output;        /* output projection is token_embd */
    bool qkv_bias, qk_norm;
    /* Sliding-window attention: n_swa cells (0 = none) on the layers il with
     * il % swa_period < swa_period - 1 (llama.cpp's pattern: period 2 = even layers). */
    int n_swa, swa_period;
    /* routed experts' clamped SwiGLU (gpt-oss; moe_extra), limit 0 = plain SwiGLU */
    float swiglu_alpha, swiglu_limit;
    int file_type;           /* general.file_type (llama_ftype) */
    /* Recurrent (Gated DeltaNet) layers, hybrid Qwen: 0 when the model has none. Per
     * sequence each such layer keeps a conv state of ssm_d_conv - 1 rows of
     * ssm_conv_dim channels and n_v heads of a [d_state][d_state] delta state. */
    int n_recurrent;         /* layers with model_layer.recurrent set */
    int ssm_d_conv, ssm_d_state, ssm_n_k, ssm_n_v, ssm_conv_dim;
    int n_layer_mtp;         /* nextn blocks after the trunk (bound, not run) */
    /* An MTP model (model_opts.mtp): the file's block (blk.<mtp_block>) that runs as its
     * one layer; -1 for a trunk model. */
    int mtp_block;
    int n_ff_shexp;          /* shared expert's ff size, 0 none */
    int n_extra;             /* floats per token of family scratch (fwd_bufs.extra) */
    /* n_head_kv, head_dim and n_ff above are the largest over the layers (scratch sizes);
     * each layer's own are in model_layer. */
    int ffn_act;             /* enum ffn_act of the feed-forward (and experts) */
    float embd_scale;        /* token embeddings are multiplied by this (Gemma: sqrt(n_embd)); 0 = 1 */
    float logit_softcap;     /* logits = c * tanh(logits / c) (Gemma); 0 = none */
    int n_embd_per_layer;    /* Gemma 4 E models: per-layer input embedding width, 0 none */
    int n_embd_out;          /* an MTP drafter (gemma4-assistant): the width of the hidden rows it
                              * reads and writes, its target's n_embd; 0 for a model of its own */
} model_hparams;

typedef struct model_layer {
    tensor *attn_norm;                  /* [n_embd] */
    tensor *wq, *wk, *wv, *wo;          /* [n_head*hd][n_embd], [n_kv*hd][n_embd] x2, [n_embd][n_head*hd] */
    tensor *bq, *bk, *bv;               /* qwen2 biases, else NULL */
    tensor *bo;                         /* attn_output bias [n_embd] (gpt-oss), else NULL */
    tensor *sinks;                      /* attention sinks [n_head] (gpt-oss), else NULL */
    tensor *q_norm, *k_norm;            /* qwen3 [head_dim], else NULL */
    tensor *ffn_norm;                   /* [n_embd] */
    tensor *w_gate, *w_up, *w_down;     /* dense FFN: [n_ff][n_embd] x2, [n_embd][n_ff] */
    tensor *gate_inp;                   /* MoE router [n_expert][n_embd] */
    tensor *gate_exps, *up_exps, *down_exps; /* [n_expert][n_ff_exp][n_embd], ..., [n_expert][n_embd][n_ff_exp];
                                         * up_exps NULL: gate_exps holds gate then up rows, [n_expert][2*n_ff_exp][n_embd] */
    /* hybrid Qwen */
    bool recurrent;                     /* a Gated DeltaNet layer (state, no K/V) */
    tensor *ssm_in;                     /* qwen3next legacy fused [2*n_k*ds + 2*n_v*ds][n_embd] */
    tensor *wqkv, *wz;                  /* [conv_dim][n_embd], [n_v*ds][n_embd] */
    tensor *ssm_ba;                     /* qwen3next [2*n_v][n_embd] */
    tensor *ssm_beta, *ssm_alpha;       /* [n_v][n_embd] each */
    tensor *ssm_conv;                   /* [conv_dim][d_conv] F32 */
    tensor *ssm_dt, *ssm_a;             /* [n_v] F32 */
    tensor *ssm_norm;                   /* [ds] F32 */
    tensor *ssm_out;                    /* [n_embd][n_v*ds] */
    tensor *gate_inp_shexp;             /* [1][n_embd] shared-expert gate (w_gate/up/down hold the shared expert) */
    /* Gemma: norms after the blocks, the MoE's extra norms and scales, per-layer inputs */
    tensor *post_attn_norm, *post_ffn_norm;        /* [n_embd] */
    tensor *ffn_norm_exps, *post_ffn_norm_dense, *post_ffn_norm_exps; /* [n_embd]: pre_ffw_norm_2, post_ffw_norm_1, _2 */
    tensor *gate_inp_scale;             /* [n_embd] router input scale */
    tensor *down_exps_scale;            /* [n_expert] per-expert output scale */
    tensor *pl_gate, *pl_proj, *pl_norm;/* [P][n_embd], [n_embd][P], [n_embd]: per-layer input block */
    /* This layer's shape; model.c sets them from the file's scalar-or-per-layer keys, a
     * family with layer kinds refines them in read_hparams. */
    int il;                             /* its index (a streamed copy keeps it) */
    int n_head_kv, head_dim, n_ff;
    int n_swa;                          /* sliding window of its attention, 0 = none */
    int kv_from;                        /* layer whose KV cache it uses: itself, or an earlier
                                         * one (shared KV: it stores nothing) */
    float attn_scale;                   /* softmax scale of q.k */
    float out_scale;                    /* the layer's output is multiplied by this (1: none) */
    rope_params rope;
    tensor *gate_inp_b;                 /* router bias [n_expert] (gpt-oss), else NULL */
    tensor *gate_exps_b, *up_exps_b, *down_exps_b; /* [n_expert][n_ff_exp] x2, [n_expert][n_embd], else NULL */
    backend *be;                        /* where this layer computes */
    /* an MTP model's input step (nextn): [n_embd][2*n_embd], [n_embd], [n_embd] */
    tensor *eh_proj, *enorm, *hnorm;
} model_layer;

/* Whether layer il attends over a sliding window of hp->n_swa cells. */
static inline bool model_layer_swa(const model_hparams *hp, int il)
{
    return hp->n_swa > 0 && (hp->swa_period <= 1 || il % hp->swa_period < hp->swa_period - 1);
}

typedef struct model_opts {
    bool no_mmap, mlock;
    int n_threads, n_threads_batch;     /* <= 0: physical cores */
    int n_ubatch;                       /* micro-batch for prompt processing (default 512) */
    int ngl;                            /* layers on the GPU (0: CPU only) */
    const char *override_tensor;        /* "REGEX=DEVICE,..." or NULL */
    int n_cpu_moe;                      /* first N layers keep their experts on the CPU */
    /* Load only the file's MTP (nextn) block, as a one-layer model whose input rows pair
     * a token with the target's final hidden state (model_forward_mtp). Its output norm
     * is the block's shared_head_norm, its output head the file's output. */
    bool mtp;
} model_opts;

/* Feed-forward weights in host memory streamed to the GPU for large micro-batches: a
 * prompt of hundreds of tokens computes them faster there, copy included, than the CPU
 * does. What was decided and measured (model.c keeps it; readers take a snapshot). */
typedef struct model_stream_stats {
    int layers;              /* layers whose feed-forward weights are (partly) in host memory */
    uint64_t bytes;          /* those weights: what one streamed micro-batch copies */
    int threshold;           /* smallest micro-batch that streams when offload_batch is -1 */
    uint64_t batches;        /* micro-batches streamed so far */
    double gpu_bytes_per_s;  /* measured: bytes over the wall time of streamed micro-batches (0 not yet) */
    double cpu_s_per_token;  /* measured: seconds per token of those layers' feed-forward on the CPU, over micro-batches of 8+ tokens (0 not yet) */
    char error[128];         /* why the last attempt to stream fell back to the CPU, "" none */
    bool off;                /* a streamed batch ran out of device memory: no more streaming */
} model_stream_stats;

/* The smallest micro-batch that streams under offload_batch (-1: the measured threshold);
 * 0 none. */
static inline int model_stream_threshold(const model_stream_stats *s, int offload_batch)
{
    if (!s->layers || s->off)
        return 0;
    return offload_batch >= 0 ? offload_batch : s->threshold;
}

typedef struct model model;
struct model {
    model_hparams hp;
    gguf_file *file;
    tokenizer *tok;
    tensor *tensors; int n_tensors;    /* every weight */
    tensor *tok_embd, *output_norm, *output;
    /* Gemma 4 E models' per-layer inputs (on the CPU, with tok_embd), else NULL:
     * [n_vocab][n_layer*P], [n_layer*P][n_embd], [P] */
    tensor *pl_embd, *pl_model_proj, *pl_proj_norm;
    /* An MTP drafter's projections (gemma4-assistant), else NULL: [E][2*n_embd_out] from
     * [target embedding; target hidden] into its layers, [n_embd_out][E] from its output
     * back to a hidden row. Placed with the output. */
    tensor *nextn_pre_proj, *nextn_post_proj;
    model_layer *layers;
    backend *cpu;                       /* always present */
    backend *gpu;                       /* NULL without CUDA or with ngl 0 */
    int n_ubatch;                       /* what the scratch is sized for: change with model_set_ubatch */
    uint64_t n_params;
    char note[160];                     /* placement in words ("" when all on the CPU) */
    /* Smallest micro-batch whose host-resident feed-forward weights stream to the GPU:
     * -1 chosen from measured speeds (the default), 0 never; the caller may change it
     * between forward calls. */
    int offload_batch;
    model_stream_stats stream;
    void *scratch;                      /* forward-pass buffers (model.c) */
    const struct model_family *family;  /* the architecture's blocks (src/models/) */
};

/* -ENOENT no such file, -EINVAL malformed or unsupported (reason in err), -ENOMEM.
 * Drafter-only architectures (gemma4-assistant) are refused here: they load through
 * their own module (src/models/gemma4assistant.h) beside a target. */
model *model_load(const char *path, const model_opts *opts, llmfs_error *err);
void model_free(model *m);
/* Sizes the forward pass's micro-batch buffers for n_ubatch tokens (a forward call never
 * evaluates more at once). Not while a forward call runs. -ENOMEM (the old size stays in
 * use) or -EINVAL for n_ubatch < 1. */
int model_set_ubatch(model *m, int n_ubatch, llmfs_error *err);
/* Bytes of GPU memory the model's GPU backend holds (weights, caches, scratch); 0 without one. */
uint64_t model_vram_bytes(const model *m);

/* Evaluates b (any size; split into micro-batches internally), storing K/V in kv and
 * writing the logits of every position with b->logits[i] set, in batch order, to
 * logits_out [n_out][n_vocab] (host memory); b->logits NULL means the last position
 * only, or none when logits_out is NULL too. Positions must be < kv->n_ctx (-ENOSPC
 * otherwise) and follow on from what the sequence holds (kv->seq_len, or earlier tokens
 * of the batch) without gaps (-EINVAL). The whole batch is checked before anything
 * runs. One call at a time per model (the scratch is shared). Returns 0 or a negative
 * errno. */
int model_forward(model *m, kv_cache *kv, const fwd_batch *b, float *logits_out, bool flash_attn,
                  llmfs_error *err);

/* As model_forward, and also writes every position's final hidden state — after
 * output_norm, the output head's input — to hidden_out [b->n][n_embd] (host memory), in
 * batch order (MTP drafters read it). */
int model_forward_hidden(model *m, kv_cache *kv, const fwd_batch *b, float *logits_out, float *hidden_out,
                         bool flash_attn, llmfs_error *err);

/* An MTP model's forward pass: input row i is token b->token[i] with the target's final
 * hidden state hidden_in [b->n][n_embd] (host memory) of the position before it (zeros
 * at position 0); logits as model_forward, and hidden_out (NULL: none) every row's
 * final hidden state, after the block's output norm, which a chained draft takes as its
 * next hidden input. -EINVAL on a model that is not an MTP model (and model_forward
 * refuses an MTP model). */
int model_forward_mtp(model *m, kv_cache *kv, const fwd_batch *b, const float *hidden_in, float *logits_out,
                      float *hidden_out, bool flash_attn, llmfs_error *err);

/* As model_forward, but writes the greedy choice (the largest logit's id, the lowest on
 * ties) of each position that asks for logits to ids_out [n_out] instead of its logits.
 * With the output on a GPU only these ids cross to the host. */
int model_forward_ids(model *m, kv_cache *kv, const fwd_batch *b, int32_t *ids_out, bool flash_attn,
                      llmfs_error *err);

/* As model_forward, with input rows: each token -1 of b takes its row of embd
 * [b->n][n_embd] (host memory) as it is, without the family's embedding scale (image
 * embeddings). non_causal: the batch's tokens of a sequence see each other whatever
 * their order (an image: llama.cpp decodes it with causal attention off); such a batch
 * must fit one micro-batch (-E2BIG) and every layer's backend must have non-causal
 * attention (-ENOTSUP). */
int model_forward_embd(model *m, kv_cache *kv, const fwd_batch *b, const float *embd, bool non_causal,
                       float *logits_out, bool flash_attn, llmfs_error *err);

/* Whether every layer's backend has non-causal attention (model_forward_embd's
 * non_causal); NULL: the backend that lacks it, by name. */
const char *model_non_causal_missing(const model *m);

/* "Q4_K_M", "Q8_0", ... from general.file_type, or the dominant tensor type. */
const char *model_file_type_name(const model *m);
/* The name of a general.file_type value, NULL when it is not one llmfs knows. */
const char *model_ftype_name(int file_type);

#endif
