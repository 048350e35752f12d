/* model_impl.h — what model.c shares with the model families (src/models/) and the
 * weight streaming (model_stream.c); not a public header.
 *
 * A family is one file that reads like a forward pass: it names its architectures,
 * reads the hyperparameters only it has, binds each layer's weights and computes one
 * layer's blocks. Everything else — the file, the weights' placement on devices, the
 * scratch buffers, micro-batching, the output head, the KV cache, streaming — lives in
 * model.c and knows no architecture by name. Adding a family: a file in src/models/ and
 * one line in the table of model.c.
 */
#ifndef LLMFS_MODEL_IMPL_H
#define LLMFS_MODEL_IMPL_H

#include "model.h"

#include <stdbool.h>

/* Rows of logits a device holds at once: a micro-batch's worth for a large vocabulary
 * would cost hundreds of MB of device memory. */
#define OUT_CHUNK 32

/* A layer's feed-forward tensors, as pointers into L (NULL entries: absent): what moves
 * with its feed-forward block (placement groups, streaming). */
#define FFN_TENSORS(L) {&(L)->ffn_norm, &(L)->w_gate, &(L)->w_up, &(L)->w_down, &(L)->gate_inp, \
                        &(L)->gate_exps, &(L)->up_exps, &(L)->down_exps, &(L)->post_ffn_norm, \
                        &(L)->ffn_norm_exps, &(L)->post_ffn_norm_dense, &(L)->post_ffn_norm_exps, \
                        &(L)->gate_inp_scale, &(L)->down_exps_scale, &(L)->pl_gate, &(L)->pl_proj, \
                        &(L)->pl_norm, &(L)->gate_inp_b, &(L)->gate_exps_b, &(L)->up_exps_b,     \
                        &(L)->down_exps_b, &(L)->gate_inp_shexp}
#define FFN_N_TENSORS 22

/* Activations of one micro-batch, in the memory of the backend computing them. Shapes
 * as in the families' comments: n tokens, E n_embd, H n_head, Hk n_head_kv, D head_dim,
 * F n_ff, X n_expert, K n_expert_used, V n_vocab. */
typedef struct fwd_bufs {
    backend *be;
    float *x;       /* [n][E] the residual stream */
    float *xb;      /* [n][E] normalised input of a block, then its output */
    float *xb2;     /* [n][E] MoE output */
    float *q;       /* [n][H*D] */
    float *k, *v;   /* [n][Hk*D] */
    float *att;     /* [n][H*D] */
    float *hb, *hb2;/* [n][F] */
    float *router;  /* [n][X] */
    float *wts;     /* [n][K] */
    int32_t *ids;   /* [n][K] */
    float *logits;  /* [OUT_CHUNK][V] only off the CPU: logits before the copy to the host */
    float *extra;   /* [n][hp.n_extra] the family's own scratch, NULL when n_extra is 0 */
    float *pl;      /* [n][n_layer][P] per-layer inputs (Gemma 4 E models), else NULL */
} fwd_bufs;

/* model.c's private state (m->scratch). */
typedef struct model_priv {
    fwd_bufs bufs[2];
    int n_bufs;
    float *host;          /* [n_ubatch][E] staging between backends */
    bool all_on_gpu;      /* every layer and the output on m->gpu */
    float *freq_factors;  /* [n_rot/2] or NULL */
    float *id_logits;     /* model_forward_ids: host logits where the output cannot argmax */
    size_t id_logits_rows;
    int *seq_len;         /* per-sequence lengths while a batch is checked */
    int seq_len_cap;
    int8_t *flags;        /* [n_ubatch] logits flags when the caller gives none */
    /* streamed feed-forward weights (m->stream) */
    int *stream_layers;   /* layers whose feed-forward weights are (partly) on the CPU */
    model_layer staged[2];/* such a layer with its copies on the GPU, per staging slot */
    tensor staged_t[2][FFN_N_TENSORS];
    bool staged_ok[2];    /* the slot's copy was made (else its layer runs where it is) */
    double cpu_ffn_s;     /* this micro-batch: seconds in those layers' feed-forward on the CPU */
    int cpu_ffn_layers;   /* how many of them were timed (not the pruned last one) */
    char ftype_name[32];
} model_priv;

/* One model family: the architectures it reads and the blocks of one layer. */
typedef struct model_family {
    const char *const *archs;   /* general.architecture values, NULL-terminated */
    /* The family's own hyperparameters and checks, after model.c has read the common
     * ones (sizes, heads, norms, rope, experts). 0 or -EINVAL with the reason. */
    int (*read_hparams)(model *m, llmfs_error *err);
    /* Binds layer il's weights (model_bind_blk) into m->layers[il]. */
    int (*bind_layer)(model *m, int il, llmfs_error *err);
    /* x += mixer(norm(x)) of layer il (attention), on B's backend, storing K/V in kv.
     * NULL for a drafter whose layers run only inside its own step (model_forward
     * refuses it). */
    void (*attention)(model *m, kv_cache *kv, int il, fwd_bufs *B, int n, bool flash);
    /* x += ffn(norm(x)) of layer L (m->layers[il], or a copy whose feed-forward weights
     * were streamed to the GPU), on B's backend, where L->ffn_norm is. */
    void (*ffn)(model *m, const model_layer *L, fwd_bufs *B, int n);
    /* Optional: after the token embeddings B->x [n][E] are looked up, on the CPU: their
     * scale, and the per-layer inputs B->pl (when hp.n_embd_per_layer). */
    void (*embed)(model *m, fwd_bufs *B, int n);
} model_family;

/* The families with MTP (nextn) blocks also have an MTP model's input step (model.c's
 * table of them): on B's backend (layer 0's), B->x [n][E] the token embeddings, B->xb
 * [n][E] the target's hidden rows; leaves the block's input in B->x. A family without
 * one refuses model_opts.mtp. */
typedef void (*model_mtp_input_fn)(model *m, fwd_bufs *B, int n);
void qwenhybrid_mtp_input(model *m, fwd_bufs *B, int n);

extern const model_family family_llama;
extern const model_family family_qwenhybrid;
extern const model_family family_gemma;
extern const model_family family_gptoss;
/* Drafters: not in model.c's table (model_load refuses them), loaded with model_load_family. */
extern const model_family family_gemma4_assistant;

/* model_load for a file of one of fam's architectures (-EINVAL for any other). */
model *model_load_family(const char *path, const model_opts *opts, const model_family *fam, llmfs_error *err);

/* ---- reading hyperparameters: {arch}.key of the model's file ---- */

/* A required positive integer, or -EINVAL with the reason. */
int model_need_u32(const model *m, const char *key, int *out, llmfs_error *err);
/* An optional positive integer (def when absent), or -EINVAL when present but bad. */
int model_opt_u32(const model *m, const char *key, int def, int *out, llmfs_error *err);
/* An optional float or bool; false (out untouched) when absent. */
bool model_get_f32(const model *m, const char *key, float *out);
bool model_get_bool(const model *m, const char *key, bool *out);

/* ---- binding weights ---- */

/* Binds GGUF tensor `name` after checking its type and shape (ne2 = 0 for 2D, ne1 = ne2
 * = 0 for 1D). matmul: a matmul operand, so its rows must be whole blocks of its own and
 * its dot type; otherwise it must be F32. optional: absent gives NULL, not an error. */
int model_bind(model *m, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, bool matmul,
               bool optional, tensor **out, llmfs_error *err);
/* The same for "blk.{il}.{suffix}". */
int model_bind_blk(model *m, int il, const char *suffix, int64_t ne0, int64_t ne1, int64_t ne2,
                   bool matmul, bool optional, tensor **out, llmfs_error *err);

/* ---- the forward pass's shared steps ---- */

/* The scratch of backend be. */
fwd_bufs *model_bufs_of(model *m, backend *be);
/* bytes at src on backend `from` to dst on backend `to`, through the host. */
void model_copy_between(model *m, backend *from, const void *src, backend *to, void *dst, size_t bytes);
/* Two or three matmuls of one input x [n][ne0] (o3 NULL for two), in one pass where the
 * backend can. */
void model_matmul3(backend *be, float *o1, const tensor *w1, float *o2, const tensor *w2, float *o3,
                   const tensor *w3, const float *x, int n);
/* The routed experts of layer L: B->xb2 [n][E] = sum over the K chosen experts of
 * weight * expert(B->xb), given B->ids and B->wts [n][K], all on B's backend. The experts
 * may live on another backend (n_cpu_moe); inputs and result cross as needed. */
void model_moe_experts(model *m, const model_layer *L, fwd_bufs *B, int n);

/* The residual stream [n][E] moved to backend `to`'s scratch (when it is elsewhere). */
fwd_bufs *model_move_to(model *m, fwd_bufs *from, backend *to, int n);

/* ---- streaming host-resident feed-forward weights to the GPU (model_stream.c) ---- */

/* One micro-batch's walk through the layers. */
typedef struct stream_pass {
    bool stream;   /* this batch copies host-resident feed-forward weights to the GPU */
    bool timed;    /* this batch times those layers on the CPU (for the threshold) */
    int n;         /* tokens in the batch */
    int k;         /* layers with host-resident feed-forward weights run so far */
    double t0;     /* when the batch began */
} stream_pass;

/* At load: which layers have feed-forward weights in host memory. */
int model_stream_plan(model *m, llmfs_error *err);
/* Whether a micro-batch of n tokens streams. */
bool model_streams(const model *m, int n);
/* Before a micro-batch's layers: starts the first copies when it streams. */
void model_stream_begin(model *m, stream_pass *sp, int n, bool stream);
/* Layer il's feed-forward block, x += ffn(norm(x)) for `rows` rows, where its weights
 * are or on the GPU with the streamed copies; returns the scratch x is now in. */
fwd_bufs *model_stream_ffn(model *m, stream_pass *sp, int il, fwd_bufs *B, int rows);
/* After a micro-batch: the measured rates, and the threshold from them. */
void model_stream_end(model *m, stream_pass *sp);
/* A streamed batch ran out of device memory: the slots' memory goes back, and streaming
 * stays off until the model is loaded again (the reason in m->stream.error); err is
 * cleared for the retry. */
void model_stream_give_up(model *m, llmfs_error *err);

#endif
