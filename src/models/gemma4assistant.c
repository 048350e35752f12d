/* gemma4assistant.c — Gemma 4's MTP drafter (gemma4-assistant): loading, the checks
 * against its target, and one draft row.
 *
 * The file is a small Gemma 4 without keys and values: every layer has only a query
 * projection and attends to the TARGET's cache. One row, input token t at position p,
 * input hidden row h (the target's final hidden state, or the previous row's output):
 *   x0 = target.token_embd[t] * sqrt(E_t)                     (the target's embedding, not its own)
 *   z  = pre_projection [x0; h]                               2*E_t -> E
 *   per layer (sliding-window ones, then a full one):
 *     q = rmsnorm_per_head((rmsnorm(z) * attn_norm) Wq) * q_norm, rope at p
 *     o = softmax(q . K^T) V over target cells 0..p-1 (a window's: p-n_swa+1..p-1),
 *         K, V the target's layer n_layer-2 (sliding) / n_layer-1 (full); scale 1
 *     a = z + rmsnorm(o Wo) * post_attention_norm
 *     z = (a + rmsnorm(GeGLU(rmsnorm(a) * ffn_norm)) * post_ffw_norm) * layer_output_scale
 *   y = rmsnorm(z) * output_norm
 *   logits = y token_embd^T      (its own tied head; no softcap although the file has one)
 *   h_next = post_projection y   E -> E_t, the next step's input row
 *
 * Shapes: E the drafter's n_embd, E_t its n_embd_out (= the target's n_embd), H n_head,
 * Hk the layer's KV heads, D the layer's head size, F n_ff, V n_vocab. One row at a time:
 * drafting is a chain.
 */
#include "gemma4assistant.h"
#include "model_impl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const archs[] = {"gemma4-assistant", NULL};

/* ================================================================ the family */

/* {arch}.key as a count that may be 0 (def when absent), or -EINVAL. */
static int count_key(const model *m, const char *key, int def, int *out, llmfs_error *err)
{
    char k[96];
    snprintf(k, sizeof k, "%s.%s", m->hp.arch, key);
    uint32_t v;
    if (gguf_find_key(m->file, k) < 0) {
        *out = def;
        return 0;
    }
    if (!gguf_get_u32(m->file, k, &v) || v > (1u << 24))
        return llmfs_errorf(err, EINVAL, "assistant: %s must be a count", k);
    *out = (int)v;
    return 0;
}

/* The layer kinds: one bool per layer, true = sliding window. */
static int read_pattern(model *m, bool *swa, llmfs_error *err)
{
    char key[96];
    snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", m->hp.arch);
    enum gguf_vtype t;
    uint64_t n;
    const void *d = gguf_get_arr_data(m->file, key, &t, &n);
    if (!d)
        return llmfs_errorf(err, EINVAL, "assistant: missing %s (one entry per layer)", key);
    if (n != (uint64_t)m->hp.n_layer)
        return llmfs_errorf(err, EINVAL, "assistant: %s has %llu entries for %d layers", key,
                            (unsigned long long)n, m->hp.n_layer);
    for (int il = 0; il < m->hp.n_layer; il++) {
        int64_t v;
        if (t == GGUF_T_BOOL || t == GGUF_T_U8 || t == GGUF_T_I8)
            v = ((const uint8_t *)d)[il];
        else if (!gguf_get_arr_i64(m->file, key, (uint64_t)il, &v))
            return llmfs_errorf(err, EINVAL, "assistant: %s must hold bools", key);
        swa[il] = v != 0;
    }
    return 0;
}

static int read_hparams(model *m, llmfs_error *err)
{
    model_hparams *hp = &m->hp;
    const int NL = hp->n_layer;
    int rc, n_out, nextn, n_swa = 0, d_swa, v_swa, rot_swa;
    hp->rope.neox = true;
    hp->qk_norm = true;
    hp->ffn_act = FFN_GELU;
    hp->logit_softcap = 0; /* the file carries the target's cap; the drafter's graph never applies it */
    for (int il = 0; il < NL; il++)
        m->layers[il].rope = hp->rope;

    /* the hidden rows it reads and writes are the target's: a width of their own */
    if ((rc = model_need_u32(m, "embedding_length_out", &n_out, err)))
        return rc;
    if (n_out == hp->n_embd)
        return llmfs_errorf(err, EINVAL, "assistant: embedding_length_out %d equals embedding_length", n_out);
    hp->n_embd_out = n_out;
    /* the input rows [x0; h] [2*E_t], then h_next [E_t] */
    hp->n_extra = 3 * n_out;
    if ((rc = count_key(m, "nextn_predict_layers", 0, &nextn, err)))
        return rc;
    if (nextn != NL)
        return llmfs_errorf(err, EINVAL, "assistant: nextn_predict_layers %d differs from block_count %d", nextn,
                            NL);

    bool swa[4096];
    if ((rc = read_pattern(m, swa, err)) || (rc = count_key(m, "attention.sliding_window", 0, &n_swa, err)) ||
        (rc = model_need_u32(m, "attention.key_length_swa", &d_swa, err)) ||
        (rc = model_opt_u32(m, "attention.value_length_swa", d_swa, &v_swa, err)) ||
        (rc = model_opt_u32(m, "rope.dimension_count_swa", d_swa, &rot_swa, err)))
        return rc;
    if (d_swa != v_swa)
        return llmfs_errorf(err, EINVAL, "assistant: sliding-window key length %d and value length %d differ", d_swa,
                            v_swa);
    if (rot_swa > d_swa || rot_swa % 2)
        return llmfs_errorf(err, EINVAL, "assistant: rope dimension %d for sliding-window head size %d", rot_swa,
                            d_swa);
    /* the sliding-window layers' rope: their own base and rotated dims, no divisors */
    rope_params rope_swa = hp->rope;
    rope_swa.n_rot = rot_swa;
    rope_swa.freq_base = 10000.0f;
    model_get_f32(m, "rope.freq_base_swa", &rope_swa.freq_base);
    rope_swa.freq_scale = 1.0f;
    rope_swa.l3_factor = 0;
    rope_swa.freq_factors = NULL;
    if (!(rope_swa.freq_base > 1))
        return llmfs_errorf(err, EINVAL, "assistant: rope base %g of the sliding-window layers is out of range",
                            rope_swa.freq_base);

    for (int il = 0; il < NL; il++) {
        model_layer *L = &m->layers[il];
        L->attn_scale = 1.0f; /* the q and k norms set the scale */
        if (!swa[il]) {
            if (!hp->rope.freq_factors)
                return llmfs_errorf(err, EINVAL, "assistant: its full-attention layer %d needs rope_freqs.weight",
                                    il);
            continue;
        }
        /* the window counts the query itself, which is not in the target's cache: a
         * window of 1 would see nothing */
        if (n_swa < 2)
            return llmfs_errorf(err, EINVAL, "assistant: sliding window of %d for layer %d", n_swa, il);
        L->n_swa = n_swa;
        L->head_dim = d_swa;
        L->rope = rope_swa;
    }
    return 0;
}

/* layer_output_scale [1], read once at load (1 when absent) */
static int bind_out_scale(model *m, int il, llmfs_error *err)
{
    tensor *t;
    int rc = model_bind_blk(m, il, "layer_output_scale.weight", 1, 0, 0, false, true, &t, err);
    if (rc)
        return rc;
    m->layers[il].out_scale = t ? *(const float *)t->data : 1.0f;
    if (!isfinite(m->layers[il].out_scale))
        return llmfs_errorf(err, EINVAL, "assistant: blk.%d.layer_output_scale is not finite", il);
    return 0;
}

static int bind_layer(model *m, int il, llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    model_layer *L = &m->layers[il];
    const int E = hp->n_embd, Et = hp->n_embd_out, H = hp->n_head, D = L->head_dim, F = L->n_ff;
    int rc;
    if (il == 0 &&
        /* pre_projection [2*E_t -> E], post_projection [E -> E_t] */
        ((rc = model_bind(m, "nextn.pre_projection.weight", 2 * Et, E, 0, true, false, &m->nextn_pre_proj, err)) ||
         (rc = model_bind(m, "nextn.post_projection.weight", E, Et, 0, true, false, &m->nextn_post_proj, err))))
        return rc;
    if (F <= 0)
        return llmfs_errorf(err, EINVAL, "assistant: layer %d has no feed-forward", il);
    /* attention without keys and values: q [E -> H*D], o [H*D -> E], norms [D] and [E];
     * feed-forward: gate up [E -> F], down [F -> E], norms [E] */
    if ((rc = model_bind_blk(m, il, "attn_norm.weight", E, 0, 0, false, false, &L->attn_norm, err)) ||
        (rc = model_bind_blk(m, il, "attn_q.weight", E, H * D, 0, true, false, &L->wq, err)) ||
        (rc = model_bind_blk(m, il, "attn_q_norm.weight", D, 0, 0, false, false, &L->q_norm, err)) ||
        (rc = model_bind_blk(m, il, "attn_output.weight", H * D, E, 0, true, false, &L->wo, err)) ||
        (rc = model_bind_blk(m, il, "post_attention_norm.weight", E, 0, 0, false, false, &L->post_attn_norm, err)) ||
        (rc = bind_out_scale(m, il, err)) ||
        (rc = model_bind_blk(m, il, "ffn_norm.weight", E, 0, 0, false, false, &L->ffn_norm, err)) ||
        (rc = model_bind_blk(m, il, "ffn_gate.weight", E, F, 0, true, false, &L->w_gate, err)) ||
        (rc = model_bind_blk(m, il, "ffn_up.weight", E, F, 0, true, false, &L->w_up, err)) ||
        (rc = model_bind_blk(m, il, "ffn_down.weight", F, E, 0, true, false, &L->w_down, err)) ||
        (rc = model_bind_blk(m, il, "post_ffw_norm.weight", E, 0, 0, false, false, &L->post_ffn_norm, err)))
        return rc;
    return 0;
}

/* Gemma 4's dense feed-forward block, the same in the drafter:
 * x = (x + rmsnorm(GeGLU(rmsnorm(x) * ffn_norm)) * post_ffw_norm) * layer_output_scale */
static void ffn(model *m, const model_layer *L, fwd_bufs *B, int n)
{
    family_gemma.ffn(m, L, B, n);
}

/* No attention hook: the layers attend to another model's cache and run only in
 * gemma4_assistant_step (model_forward refuses the drafter). */
const model_family family_gemma4_assistant = {archs, read_hparams, bind_layer, NULL, ffn, NULL};

/* ================================================================ the pair */

struct gemma4_assistant {
    model *m;
    backend *be;       /* where every weight of the drafter is */
    float *xh;         /* [2*E_t] host: the row's input [x0; h] before it moves to be */
    float *logits;     /* [V] host: a row's logits when the caller wants none */
};

/* The target layer whose cells drafter layer il reads: n_layer-2 for a sliding-window
 * layer, n_layer-1 for a full one (by index, as llama.cpp shares them), followed to the
 * layer that stores them when the target shares KV itself. */
static int target_layer(const model *t, const model_layer *L)
{
    return t->hp.n_layer - (L->n_swa > 0 ? 2 : 1);
}

static bool same_rope(const rope_params *a, const rope_params *b, int n_rot)
{
    if (a->n_rot != b->n_rot || a->neox != b->neox || a->freq_base != b->freq_base ||
        a->freq_scale != b->freq_scale || !a->freq_factors != !b->freq_factors || a->l3_factor != b->l3_factor ||
        a->yarn_ext_factor != b->yarn_ext_factor)
        return false;
    for (int i = 0; a->freq_factors && i < n_rot / 2; i++)
        if (a->freq_factors[i] != b->freq_factors[i])
            return false;
    return true;
}

int gemma4_assistant_check(const model *d, const model *t, llmfs_error *err)
{
    const model_hparams *dh = &d->hp, *th = &t->hp;
    if (strcmp(th->arch, "gemma4"))
        return llmfs_errorf(err, EINVAL, "assistant: the target is a %s model, not gemma4", th->arch);
    if (dh->n_vocab != th->n_vocab)
        return llmfs_errorf(err, EINVAL, "assistant: vocabulary of %d tokens, the target's has %d", dh->n_vocab,
                            th->n_vocab);
    if (dh->n_embd_out != th->n_embd)
        return llmfs_errorf(err, EINVAL, "assistant: embedding_length_out %d, the target's n_embd is %d",
                            dh->n_embd_out, th->n_embd);
    if (th->n_layer < 2)
        return llmfs_errorf(err, EINVAL, "assistant: the target has %d layer(s)", th->n_layer);
    for (int il = 0; il < dh->n_layer; il++) {
        const model_layer *L = &d->layers[il];
        const int tl = target_layer(t, L);
        const model_layer *T = &t->layers[tl];
        const char *kind = L->n_swa > 0 ? "sliding-window" : "full";
        if ((T->n_swa > 0) != (L->n_swa > 0))
            return llmfs_errorf(err, EINVAL, "assistant: its %s layer %d reads target layer %d, which is not %s", kind,
                                il, tl, kind);
        if (T->head_dim != L->head_dim || T->n_head_kv != L->n_head_kv)
            return llmfs_errorf(err, EINVAL,
                                "assistant: layer %d has %d KV heads of %d, target layer %d has %d of %d", il,
                                L->n_head_kv, L->head_dim, tl, T->n_head_kv, T->head_dim);
        if (!same_rope(&L->rope, &T->rope, L->rope.n_rot))
            return llmfs_errorf(err, EINVAL, "assistant: layer %d's rope differs from target layer %d's", il, tl);
        if (T->n_swa != L->n_swa)
            return llmfs_errorf(err, EINVAL, "assistant: layer %d's window of %d, target layer %d has %d", il,
                                L->n_swa, tl, T->n_swa);
    }
    return 0;
}

gemma4_assistant *gemma4_assistant_load(const char *path, const model *target, const model_opts *opts,
                                        llmfs_error *err)
{
    /* one row at a time, and the whole drafter on one device: it is small */
    model_opts o = {.n_ubatch = 1};
    if (opts) {
        o.no_mmap = opts->no_mmap;
        o.mlock = opts->mlock;
        o.n_threads = opts->n_threads;
        o.n_threads_batch = opts->n_threads;
        o.ngl = opts->ngl > 0 ? -1 : 0;
    }
    gemma4_assistant *a = calloc(1, sizeof *a);
    if (!a) {
        llmfs_errorf(err, ENOMEM, "assistant: out of memory");
        return NULL;
    }
    a->m = model_load_family(path, &o, &family_gemma4_assistant, err);
    if (!a->m || gemma4_assistant_check(a->m, target, err)) {
        gemma4_assistant_free(a);
        return NULL;
    }
    const model *m = a->m;
    a->be = m->output->be;
    for (int il = 0; il < m->hp.n_layer; il++)
        if (m->layers[il].be != a->be || m->layers[il].ffn_norm->be != a->be) {
            llmfs_errorf(err, EINVAL, "assistant: its layer %d is not on %s with its output", il, a->be->ops->name);
            gemma4_assistant_free(a);
            return NULL;
        }
    a->xh = malloc(sizeof(float) * 2 * (size_t)m->hp.n_embd_out);
    a->logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab);
    if (!a->xh || !a->logits) {
        llmfs_errorf(err, ENOMEM, "assistant: out of memory");
        gemma4_assistant_free(a);
        return NULL;
    }
    return a;
}

void gemma4_assistant_free(gemma4_assistant *a)
{
    if (!a)
        return;
    model_free(a->m);
    free(a->xh);
    free(a->logits);
    free(a);
}

const model *gemma4_assistant_model(const gemma4_assistant *a) { return a->m; }

uint64_t gemma4_assistant_weight_bytes(const gemma4_assistant *a)
{
    uint64_t b = 0;
    for (int i = 0; i < a->m->n_tensors; i++) /* a tied output copied to a GPU counts twice: it is there twice */
        b += a->m->tensors[i].nb2 * (uint64_t)a->m->tensors[i].ne[2];
    return b;
}

int gemma4_assistant_plan(const char *path, bool gpu, uint64_t *bytes, llmfs_error *err)
{
    gguf_open_opts go = {0};
    gguf_file *f = gguf_open(path, &go, err);
    if (!f)
        return err && err->code ? -err->code : -EINVAL;
    /* the weights: every tensor but rope_freqs, read once at load into host memory. On
     * the GPU the tied head is a copy of token_embd, which itself stays on the host:
     * the same bytes either way. */
    uint64_t w = 0, V = 0, E = 0, Et = 0, F = 0, QD = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (!strcmp(t->name, "rope_freqs.weight"))
            continue;
        w += t->size;
        if (!strcmp(t->name, "token_embd.weight"))
            E = (uint64_t)t->ne[0], V = (uint64_t)t->ne[1];
        else if (!strcmp(t->name, "nextn.post_projection.weight"))
            Et = (uint64_t)t->ne[1];
        else if (!strncmp(t->name, "blk.", 4) && strstr(t->name, ".ffn_gate.weight") && (uint64_t)t->ne[1] > F)
            F = (uint64_t)t->ne[1];
        else if (!strncmp(t->name, "blk.", 4) && strstr(t->name, ".attn_q.weight") && (uint64_t)t->ne[1] > QD)
            QD = (uint64_t)t->ne[1];
    }
    gguf_close(f);
    if (!V || !Et)
        return llmfs_errorf(err, EINVAL, "assistant: %s has no token_embd or nextn.post_projection", path);
    /* one row of scratch (model.c's buffers): x xb xb2 [E], q k v att [H*D], hb hb2 [F],
     * the row's input and output hidden rows [3*E_t], logits [V] off the host */
    const uint64_t scratch = sizeof(float) * (3 * E + 4 * QD + 2 * F + 3 * Et + (gpu ? V : 0));
    *bytes = w + scratch;
    return 0;
}

int gemma4_assistant_describe(const gemma4_assistant *a, const model *target, char *buf, size_t cap)
{
    const model *m = a->m;
    int swa = -1, full = -1;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const int tl = target->layers[target_layer(target, &m->layers[il])].kv_from;
        *(m->layers[il].n_swa > 0 ? &swa : &full) = tl;
    }
    char reads[96] = "";
    if (swa >= 0 && full >= 0)
        snprintf(reads, sizeof reads, "layers %d (sliding window) and %d (full)", swa, full);
    else
        snprintf(reads, sizeof reads, "layer %d (%s)", swa >= 0 ? swa : full, swa >= 0 ? "sliding window" : "full");
    return snprintf(buf, cap, "assistant %s: %d layers, %.1f MiB of weights on %s, no cache: reads the target's %s",
                    model_file_type_name(m), m->hp.n_layer, (double)gemma4_assistant_weight_bytes(a) / (1 << 20),
                    a->be->ops->name, reads);
}

/* ================================================================ one row */

/* The batch every op refers to: the row's token at position pos. The drafter's own
 * backends only (it never touches the target's). */
static int at(gemma4_assistant *a, int32_t token, int32_t pos, int32_t seq, llmfs_error *err)
{
    model *m = a->m;
    backend *bes[2] = {m->cpu, a->be != m->cpu ? a->be : NULL};
    const fwd_batch b = {1, &token, &pos, &seq, NULL};
    for (int i = 0; i < 2 && bes[i]; i++) {
        backend *be = bes[i];
        int rc;
        /* begin clears a backend's error record: collect it first */
        if (be->ops->check && (rc = be->ops->check(be, err)))
            return rc;
        if ((rc = be->ops->begin(be, &b)))
            return llmfs_errorf(err, -rc, "assistant: the %s backend refused the row (%s)", be->ops->name,
                                strerror(-rc));
    }
    return 0;
}

/* Whether kv (the target's cache) holds what a row at position pos of sequence seq
 * reads: cells 0..pos-1 in the layers the drafter reads, in their rings too. */
static int check_cache(const gemma4_assistant *a, const model *t, const kv_cache *kv, int seq, int pos,
                       llmfs_error *err)
{
    const model *m = a->m;
    if (kv->n_layer != t->hp.n_layer)
        return llmfs_errorf(err, EINVAL, "assistant: the KV cache is not the target's");
    if (seq < 0 || seq >= kv->n_seq)
        return llmfs_errorf(err, EINVAL, "assistant: sequence %d is outside the cache (%d slots)", seq, kv->n_seq);
    if (pos < 1 || pos > kv->seq_len[seq] || pos >= kv->n_ctx)
        return llmfs_errorf(err, EINVAL, "assistant: a draft at position %d of a sequence of %d cells", pos,
                            kv->seq_len[seq]);
    for (int il = 0; il < m->hp.n_layer; il++) {
        const model_layer *L = &m->layers[il];
        const int tl = t->layers[target_layer(t, L)].kv_from;
        const struct kv_layer *K = &kv->layer[tl];
        if (K->n_embd_kv != L->n_head_kv * L->head_dim || K->head_dim != L->head_dim)
            return llmfs_errorf(err, EINVAL, "assistant: the KV cache's layer %d is not the target's", tl);
        if (K->be->ops != a->be->ops)
            return llmfs_errorf(err, EINVAL, "assistant: on %s, but the target's cache of layer %d is on %s",
                                a->be->ops->name, tl, K->be->ops->name);
        /* a ring keeps the cells below the furthest position the sequence reached */
        const int first = L->n_swa > 0 && pos >= L->n_swa ? pos - L->n_swa + 1 : 0;
        if (kv->seq_top && kv->seq_top[seq] - first > K->n_cells)
            return llmfs_errorf(err, EINVAL, "assistant: target cells %d..%d of layer %d were overwritten", first,
                                pos - 1, tl);
    }
    return 0;
}

/* x += rmsnorm(attn(q of rmsnorm(x))) * post_attention_norm, the attention over the
 * target's cells 0..pos-1 of layer tl. The backend's batch is at pos on entry and exit. */
static int attention(gemma4_assistant *a, const kv_cache *kv, int tl, int il, int32_t token, int pos, int seq,
                     bool flash, fwd_bufs *B, llmfs_error *err)
{
    model *m = a->m;
    const model_layer *L = &m->layers[il];
    const int E = m->hp.n_embd, H = m->hp.n_head, D = L->head_dim;
    const float eps = m->hp.rms_eps;
    backend *be = B->be;
    const struct backend_ops *o = be->ops;
    int rc;

    o->rmsnorm(be, B->xb, B->x, L->attn_norm->data, 1, E, eps);            /* xb [1][E] */
    o->matmul(be, B->q, L->wq, B->xb, 1);                                   /* q [1][H*D] */
    o->rmsnorm(be, B->q, B->q, L->q_norm->data, H, D, eps);                 /* per head [H][D] */
    o->rope(be, B->q, 1, H, D, &L->rope);                                   /* at pos */
    if (kv->rot_k)                                                          /* q.k unchanged */
        o->hadamard(be, B->q, (int64_t)H * D, kv->rot_k);
    /* The query is not in the cache: the target holds cells 0..pos-1 only (cell pos is
     * whatever the target wrote there last). The attention op sees cells up to its
     * batch's position, so it runs as if the query sat at pos-1, the newest cached cell,
     * with a window one shorter: cells pos-n_swa+1..pos-1, the window counted from pos. */
    if ((rc = at(a, token, pos - 1, seq, err)))
        return rc;
    const attn_params ap = {.n_head = H, .n_head_kv = L->n_head_kv, .head_dim = D, .scale = L->attn_scale,
                            .flash = flash, .n_swa = L->n_swa > 0 ? L->n_swa - 1 : 0};
    o->attention(be, B->att, B->q, kv, tl, 1, &ap);                         /* att [1][H*D] */
    if ((rc = at(a, token, pos, seq, err)))
        return rc;
    if (kv->rot_v)                                                          /* back from rotated V */
        o->hadamard(be, B->att, (int64_t)H * D, kv->rot_v);
    o->matmul(be, B->xb, L->wo, B->att, 1);                                 /* xb [1][E] */
    o->rmsnorm(be, B->xb, B->xb, L->post_attn_norm->data, 1, E, eps);
    o->add(be, B->x, B->xb, E);                                             /* x += xb */
    return 0;
}

/* The greedy choice: the largest logit, the lowest id on ties (NaN never wins). */
static int32_t row_argmax(const float *x, int n)
{
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b] || x[b] != x[b])
            b = i;
    return b;
}

int gemma4_assistant_step(gemma4_assistant *a, const model *target, const kv_cache *kv, int seq, int32_t token,
                          int pos, const float *h, bool flash_attn, float *logits, int32_t *id, float *h_next,
                          llmfs_error *err)
{
    model *m = a->m;
    const model_hparams *hp = &m->hp;
    const int E = hp->n_embd, Et = hp->n_embd_out, V = hp->n_vocab;
    int rc;
    if (token < 0 || token >= V)
        return llmfs_errorf(err, EINVAL, "assistant: token %d is outside the vocabulary (%d)", token, V);
    if (target->tok_embd->be != target->cpu)
        return llmfs_errorf(err, EINVAL, "assistant: the target's token embeddings are not in host memory");
    if ((rc = check_cache(a, target, kv, seq, pos, err)) || (rc = at(a, token, pos, seq, err)))
        return rc;
    backend *cpu = m->cpu, *be = a->be;
    const struct backend_ops *o = be->ops;
    fwd_bufs *B = model_bufs_of(m, be);

    /* the input row [x0; h] on the host, then where the drafter computes: x0 is the
     * TARGET's embedding of the token (the drafter's own token_embd is only its output
     * head), scaled as the target scales it (f32 sqrt) */
    cpu->ops->get_rows(cpu, a->xh, target->tok_embd, 1);                    /* x0 [E_t] */
    cpu->ops->scale(cpu, a->xh, sqrtf((float)Et), Et);
    memcpy(a->xh + Et, h, sizeof(float) * (size_t)Et);                      /* xh [2*E_t] */
    float *xh = B->extra, *hn = B->extra + 2 * Et;
    o->upload(be, xh, a->xh, sizeof(float) * 2 * (size_t)Et);
    o->matmul(be, B->x, m->nextn_pre_proj, xh, 1);                          /* x [1][E] */

    for (int il = 0; il < hp->n_layer; il++) {
        const int tl = target->layers[target_layer(target, &m->layers[il])].kv_from;
        if ((rc = attention(a, kv, tl, il, token, pos, seq, flash_attn, B, err)))
            return rc;
        m->family->ffn(m, &m->layers[il], B, 1);                            /* x [1][E] */
    }

    o->rmsnorm(be, B->xb, B->x, m->output_norm->data, 1, E, hp->rms_eps);  /* y [1][E] */
    float *lg = be == cpu ? (logits ? logits : a->logits) : B->logits;
    o->matmul(be, lg, m->output, B->xb, 1);                                 /* logits [1][V], no cap */
    o->matmul(be, hn, m->nextn_post_proj, B->xb, 1);                        /* h_next [1][E_t] */
    if (be != cpu) {
        if (logits || !o->argmax)
            o->download(be, logits ? logits : a->logits, lg, sizeof(float) * (size_t)V);
        else
            o->argmax(be, id, lg, 1, V);
    }
    if (h_next)
        o->download(be, h_next, hn, sizeof(float) * (size_t)Et);
    for (int i = 0; i < 2; i++) {
        backend *b = i ? be : cpu;
        if (b->ops->sync)
            b->ops->sync(b);
        if (b->ops->check && (rc = b->ops->check(b, err)))
            return rc;
    }
    if (be == cpu || logits || !o->argmax)
        *id = row_argmax(logits ? logits : a->logits, V);
    return 0;
}

int gemma4_assistant_draft(gemma4_assistant *a, const model *target, const kv_cache *kv, int seq, int32_t id_last,
                           int n_past, const float *h_prev, int n_max, bool flash_attn, int32_t *out, float *logits,
                           float *h_next, llmfs_error *err)
{
    const model_hparams *hp = &a->m->hp;
    const size_t Et = (size_t)hp->n_embd_out, V = (size_t)hp->n_vocab;
    /* each step's output row feeds the next: the caller's rows, or two of ours in turn */
    float *own = NULL;
    if (!h_next && n_max > 0 && !(own = malloc(sizeof(float) * 2 * Et)))
        return llmfs_errorf(err, ENOMEM, "assistant: out of memory");
    int rc = 0;
    int32_t tok = id_last;
    const float *h = h_prev;
    for (int k = 0; k < n_max; k++) {
        float *hn = h_next ? h_next + (size_t)k * Et : own + (size_t)(k % 2) * Et;
        /* every step at the same position n_past, against the same target cells */
        rc = gemma4_assistant_step(a, target, kv, seq, tok, n_past, h, flash_attn, logits ? logits + (size_t)k * V : NULL,
                                   &out[k], hn, err);
        if (rc)
            break;
        tok = out[k];
        h = hn;
    }
    free(own);
    return rc ? rc : n_max;
}

/* ================================================================ hidden rows */

int gemma4_mtp_process(gemma4_mtp_rows *r, const float *h, int n)
{
    const size_t w = (size_t)r->width;
    if (n <= 0)
        return 0;
    if (!r->pending && !(r->pending = malloc(sizeof(float) * w)))
        return -ENOMEM;
    if (n > r->cap) {
        float *p = realloc(r->h, sizeof(float) * w * (size_t)n);
        if (!p)
            return -ENOMEM;
        r->h = p;
        r->cap = n;
    }
    memcpy(r->h, h, sizeof(float) * w * (size_t)n);
    r->n = n;
    memcpy(r->pending, r->h + (size_t)(n - 1) * w, sizeof(float) * w);
    r->has_pending = true;
    return 0;
}

void gemma4_mtp_accept(gemma4_mtp_rows *r, int n_accepted)
{
    if (!r->n)
        return;
    const int i = n_accepted < r->n - 1 ? n_accepted : r->n - 1;
    memcpy(r->pending, r->h + (size_t)(i < 0 ? 0 : i) * (size_t)r->width, sizeof(float) * (size_t)r->width);
    r->has_pending = true;
}

void gemma4_mtp_rows_free(gemma4_mtp_rows *r)
{
    free(r->h);
    free(r->pending);
    memset(r, 0, sizeof *r);
}
