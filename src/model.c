/* model.c — a GGUF model: the machinery every family shares. The common
 * hyperparameters, binding and placing weights, scratch, micro-batches, the layer loop
 * and the output head; each architecture's own blocks are in src/models/ (the table
 * below), and streaming feed-forward weights to a GPU in model_stream.c.
 *
 * Shapes in comments are [tokens][dim], row-major float32: n tokens in the micro-batch,
 * E n_embd, V n_vocab.
 */
#include "model_impl.h"
#include "placement.h"
#include "quant.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>


/* ================================================================ loading */

/* Every family llmfs runs: one line each. */
static const model_family *const families[] = {
    &family_llama,
    &family_qwenhybrid,
    &family_gemma,
    &family_gptoss,
};

/* The families with MTP heads, and their MTP models' input steps. */
static const struct {
    const model_family *family;
    model_mtp_input_fn input;
} mtp_families[] = {
    {&family_qwenhybrid, qwenhybrid_mtp_input},
};

static model_mtp_input_fn mtp_input_of(const model_family *f)
{
    for (size_t i = 0; i < sizeof mtp_families / sizeof mtp_families[0]; i++)
        if (mtp_families[i].family == f)
            return mtp_families[i].input;
    return NULL;
}

static const model_family *family_of(const char *arch)
{
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        for (const char *const *a = families[i]->archs; *a; a++)
            if (!strcmp(*a, arch))
                return families[i];
    return NULL;
}

/* "llama, qwen2, ..." */
static void family_names(char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        for (const char *const *a = families[i]->archs; *a && at < cap; a++)
            at += (size_t)snprintf(buf + at, cap - at, "%s%s", at ? ", " : "", *a);
}

static bool arch_u32(const gguf_file *f, const char *arch, const char *key, uint32_t *out)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return gguf_get_u32(f, k, out);
}

static bool arch_f32(const gguf_file *f, const char *arch, const char *key, float *out)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return gguf_get_f32(f, k, out);
}

/* A required positive integer {arch}.key into *out, or -EINVAL. */
static int need_u32(const gguf_file *f, const char *arch, const char *key, int *out,
                    llmfs_error *err)
{
    uint32_t v;
    if (!arch_u32(f, arch, key, &v))
        return llmfs_errorf(err, EINVAL, "model: missing or non-integer %s.%s", arch, key);
    if (v == 0 || v > (1u << 24))
        return llmfs_errorf(err, EINVAL, "model: %s.%s = %u is out of range", arch, key, v);
    *out = (int)v;
    return 0;
}

static int opt_u32(const gguf_file *f, const char *arch, const char *key, int def, int *out,
                   llmfs_error *err)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (gguf_find_key(f, k) < 0) {
        *out = def;
        return 0;
    }
    return need_u32(f, arch, key, out, err);
}

/* {arch}.key as one positive integer for every layer, or an array of one per layer (Gemma
 * 4's head_count_kv, feed_forward_length), into out[n_layer]; def when absent (0: required).
 * Returns the largest, or -EINVAL with the reason. */
static int layer_u32s(const gguf_file *f, const char *arch, const char *key, int n_layer, int def,
                      int *out, llmfs_error *err)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int i = gguf_find_key(f, k);
    if (i >= 0 && gguf_kv_type(f, i) == GGUF_T_ARRAY) {
        if (gguf_kv_arr_n(f, i) != (uint64_t)n_layer)
            return llmfs_errorf(err, EINVAL, "model: %s has %llu entries for %d layers", k,
                                (unsigned long long)gguf_kv_arr_n(f, i), n_layer);
        int mx = 0;
        for (int il = 0; il < n_layer; il++) {
            int64_t v;
            if (!gguf_get_arr_i64(f, k, (uint64_t)il, &v) || v <= 0 || v > (1 << 24))
                return llmfs_errorf(err, EINVAL, "model: %s[%d] is not a positive integer", k, il);
            out[il] = (int)v;
            mx = out[il] > mx ? out[il] : mx;
        }
        return mx;
    }
    int v = 0, rc = def ? opt_u32(f, arch, key, def, &v, err) : need_u32(f, arch, key, &v, err);
    if (rc)
        return rc;
    for (int il = 0; il < n_layer; il++)
        out[il] = v;
    return v;
}

/* Drafters run beside a target only: model_load names them instead of listing them. */
static const model_family *const drafters[] = {
    &family_gemma4_assistant,
};

static bool family_has(const model_family *fam, const char *arch)
{
    for (const char *const *a = fam->archs; *a; a++)
        if (!strcmp(*a, arch))
            return true;
    return false;
}

/* fam: the family the caller expects (model_load_family), NULL: any of the table's. */
static int load_hparams(model *m, const model_family *fam, llmfs_error *err)
{
    const gguf_file *f = m->file;
    model_hparams *hp = &m->hp;
    size_t len;
    const char *arch = gguf_get_str(f, "general.architecture", &len);
    if (!arch)
        return llmfs_errorf(err, EINVAL, "model: no general.architecture");
    if (fam && !family_has(fam, arch))
        return llmfs_errorf(err, EINVAL, "model: architecture '%.40s' where %s was expected", arch, fam->archs[0]);
    m->family = fam ? fam : family_of(arch);
    for (size_t i = 0; !m->family && i < sizeof drafters / sizeof drafters[0]; i++)
        if (family_has(drafters[i], arch))
            return llmfs_errorf(err, EINVAL,
                                "model: '%.40s' is a draft model: it runs beside its target (spec_draft_model)",
                                arch);
    if (!m->family) {
        char known[256];
        family_names(known, sizeof known);
        return llmfs_errorf(err, EINVAL, "model: architecture '%.40s' is not supported (%s)", arch, known);
    }
    snprintf(hp->arch, sizeof hp->arch, "%s", arch);
    const char *name = gguf_get_str(f, "general.name", &len);
    snprintf(hp->name, sizeof hp->name, "%s", name ? name : "");

    int rc;
    if ((rc = need_u32(f, arch, "embedding_length", &hp->n_embd, err)) ||
        (rc = need_u32(f, arch, "block_count", &hp->n_layer, err)) ||
        (rc = need_u32(f, arch, "attention.head_count", &hp->n_head, err)) ||
        (rc = opt_u32(f, arch, "context_length", 2048, &hp->n_ctx_train, err)) ||
        (rc = opt_u32(f, arch, "expert_count", 0, &hp->n_expert, err)))
        return rc;
    if (hp->n_layer > 4096)
        return llmfs_errorf(err, EINVAL, "model: %s.block_count %d is out of range", arch, hp->n_layer);
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    int *per = malloc(sizeof(int) * (size_t)hp->n_layer);
    if (!m->layers || !per) {
        free(per);
        return llmfs_errorf(err, ENOMEM, "model: out of memory");
    }
    rc = layer_u32s(f, arch, "attention.head_count_kv", hp->n_layer, hp->n_head, per, err);
    for (int il = 0; rc > 0 && il < hp->n_layer; il++) {
        m->layers[il].n_head_kv = per[il];
        if (hp->n_head % per[il])
            rc = llmfs_errorf(err, EINVAL, "model: %d heads are not a multiple of %d KV heads",
                              hp->n_head, per[il]);
    }
    if (rc < 0) {
        free(per);
        return rc;
    }
    hp->n_head_kv = rc;
    int def_hd = hp->n_embd / hp->n_head;
    if ((rc = opt_u32(f, arch, "attention.key_length", def_hd, &hp->head_dim, err)))
        return rc;
    int vlen;
    if ((rc = opt_u32(f, arch, "attention.value_length", hp->head_dim, &vlen, err)))
        return rc;
    if (vlen != hp->head_dim)
        return llmfs_errorf(err, EINVAL, "model: key length %d and value length %d differ",
                            hp->head_dim, vlen);
    if (hp->head_dim <= 0 || hp->head_dim % 2)
        return llmfs_errorf(err, EINVAL, "model: head size %d must be even", hp->head_dim);

    bool moe = hp->n_expert > 0;
    if (moe) {
        if ((rc = need_u32(f, arch, "expert_used_count", &hp->n_expert_used, err)))
            return rc;
        if (hp->n_expert_used > hp->n_expert)
            return llmfs_errorf(err, EINVAL, "model: %d experts used of %d", hp->n_expert_used,
                                hp->n_expert);
        char k[128];
        snprintf(k, sizeof k, "%s.expert_feed_forward_length", arch);
        if (gguf_find_key(f, k) >= 0)
            rc = need_u32(f, arch, "expert_feed_forward_length", &hp->n_ff_exp, err);
        else
            rc = need_u32(f, arch, "feed_forward_length", &hp->n_ff_exp, err);
        if (rc)
            return rc;
        /* llama.cpp renormalises the top-k weights for llama (Mixtral) and Qwen3-MoE */
        hp->expert_norm = true;
        snprintf(k, sizeof k, "%s.expert_weights_norm", arch);
        bool b;
        if (gguf_get_bool(f, k, &b))
            hp->expert_norm = b;
        hp->n_ff = 0;
        /* a dense feed-forward beside the experts (Gemma 4) */
        snprintf(k, sizeof k, "%s.feed_forward_length", arch);
        if (gguf_find_key(f, k) >= 0 && (rc = layer_u32s(f, arch, "feed_forward_length", hp->n_layer, 0,
                                                          per, err)) > 0) {
            hp->n_ff = rc;
            rc = 0;
        }
        for (int il = 0; il < hp->n_layer; il++)
            m->layers[il].n_ff = hp->n_ff ? per[il] : 0;
    } else if ((rc = layer_u32s(f, arch, "feed_forward_length", hp->n_layer, 0, per, err)) > 0) {
        hp->n_ff = rc;
        for (int il = 0; il < hp->n_layer; il++)
            m->layers[il].n_ff = per[il];
        rc = 0;
    }
    free(per);
    if (rc < 0)
        return rc;

    if (!arch_f32(f, arch, "attention.layer_norm_rms_epsilon", &hp->rms_eps))
        return llmfs_errorf(err, EINVAL, "model: missing %s.attention.layer_norm_rms_epsilon", arch);
    if (!(hp->rms_eps > 0 && hp->rms_eps < 1))
        return llmfs_errorf(err, EINVAL, "model: RMS epsilon %g is out of range", hp->rms_eps);

    /* rope */
    rope_params *r = &hp->rope;
    if ((rc = opt_u32(f, arch, "rope.dimension_count", hp->head_dim, &r->n_rot, err)))
        return rc;
    if (r->n_rot > hp->head_dim || r->n_rot % 2)
        return llmfs_errorf(err, EINVAL, "model: rope dimension %d for head size %d", r->n_rot,
                            hp->head_dim);
    r->freq_base = 10000.0f;
    arch_f32(f, arch, "rope.freq_base", &r->freq_base);
    if (!(r->freq_base > 1))
        return llmfs_errorf(err, EINVAL, "model: rope base %g is out of range", r->freq_base);
    r->freq_scale = 1.0f;
    char k[128];
    snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
    const char *stype = gguf_get_str(f, k, &len);
    float factor = 0;
    if (!arch_f32(f, arch, "rope.scaling.factor", &factor))
        arch_f32(f, arch, "rope.scale_linear", &factor);
    if (stype && strcmp(stype, "none") && strcmp(stype, "linear") && strcmp(stype, "llama3") &&
        strcmp(stype, "yarn"))
        return llmfs_errorf(err, EINVAL, "model: rope scaling '%.20s' is not supported", stype);
    if (stype && !strcmp(stype, "llama3")) {
        r->l3_factor = factor;
        r->l3_low_freq_factor = 1.0f;
        r->l3_high_freq_factor = 4.0f;
        r->l3_orig_ctx = 8192;
        arch_f32(f, arch, "rope.scaling.low_freq_factor", &r->l3_low_freq_factor);
        arch_f32(f, arch, "rope.scaling.high_freq_factor", &r->l3_high_freq_factor);
        uint32_t oc;
        if (arch_u32(f, arch, "rope.scaling.original_context_length", &oc))
            r->l3_orig_ctx = (int)oc;
        if (!(factor >= 1) || !(r->l3_high_freq_factor > r->l3_low_freq_factor) || r->l3_orig_ctx <= 0)
            return llmfs_errorf(err, EINVAL, "model: bad llama3 rope scaling parameters");
    } else if (stype && !strcmp(stype, "yarn")) {
        /* as llama.cpp: ext_factor 1, beta_fast 32 and beta_slow 1 (its defaults), the
         * file's attn_factor (default 1); the rope op adds YaRN's 1 + 0.1 ln(factor) */
        if (!(factor >= 1))
            return llmfs_errorf(err, EINVAL, "model: YaRN rope scaling factor %g is out of range", factor);
        r->freq_scale = 1.0f / factor;
        r->yarn_ext_factor = 1.0f;
        r->yarn_attn_factor = 1.0f;
        arch_f32(f, arch, "rope.scaling.attn_factor", &r->yarn_attn_factor);
        r->yarn_beta_fast = 32.0f;
        r->yarn_beta_slow = 1.0f;
        if ((rc = opt_u32(f, arch, "rope.scaling.original_context_length", hp->n_ctx_train,
                          &r->yarn_orig_ctx, err)))
            return rc;
    } else if (factor > 0 && (!stype || !strcmp(stype, "linear"))) {
        r->freq_scale = 1.0f / factor;
    }

    /* the file's own per-pair rope divisors win over any llama3 metadata, as in llama.cpp */
    const gguf_tensor *rf = gguf_find_tensor(f, "rope_freqs.weight");
    if (rf) {
        int half = r->n_rot / 2;
        if (rf->type != T_F32 || rf->ne[0] != half || rf->n_dims != 1)
            return llmfs_errorf(err, EINVAL, "model: rope_freqs.weight must be F32 [%d]", half);
        model_priv *P = m->scratch;
        P->freq_factors = malloc(sizeof(float) * (size_t)half);
        if (!P->freq_factors)
            return llmfs_errorf(err, ENOMEM, "model: out of memory");
        for (int i = 0; i < half; i++) {
            P->freq_factors[i] = ((const float *)rf->data)[i];
            if (!(P->freq_factors[i] > 0))
                return llmfs_errorf(err, EINVAL, "model: rope_freqs.weight[%d] is not positive", i);
        }
        r->freq_factors = P->freq_factors;
        r->l3_factor = 0;
    }

    /* every layer alike unless the family says otherwise */
    for (int il = 0; il < hp->n_layer; il++) {
        model_layer *L = &m->layers[il];
        L->il = il;
        L->head_dim = hp->head_dim;
        L->kv_from = il;
        L->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
        L->out_scale = 1.0f;
        L->rope = *r;
    }

    uint32_t ft;
    hp->file_type = gguf_get_u32(f, "general.file_type", &ft) ? (int)ft : -1;
    if ((rc = m->family->read_hparams(m, err)))
        return rc;
    /* the scratch holds the largest layer */
    for (int il = 0; il < hp->n_layer; il++) {
        const model_layer *L = &m->layers[il];
        if (L->head_dim <= 0 || L->head_dim % 2 || L->rope.n_rot > L->head_dim || L->rope.n_rot % 2)
            return llmfs_errorf(err, EINVAL, "model: layer %d: head size %d with rope dimension %d", il,
                                L->head_dim, L->rope.n_rot);
        if (L->kv_from < 0 || L->kv_from > il || m->layers[L->kv_from].kv_from != L->kv_from ||
            m->layers[L->kv_from].head_dim != L->head_dim || m->layers[L->kv_from].n_head_kv != L->n_head_kv)
            return llmfs_errorf(err, EINVAL, "model: layer %d cannot share the KV cache of layer %d", il,
                                L->kv_from);
        hp->head_dim = L->head_dim > hp->head_dim ? L->head_dim : hp->head_dim;
    }
    return 0;
}

int model_need_u32(const model *m, const char *key, int *out, llmfs_error *err)
{
    return need_u32(m->file, m->hp.arch, key, out, err);
}

int model_opt_u32(const model *m, const char *key, int def, int *out, llmfs_error *err)
{
    return opt_u32(m->file, m->hp.arch, key, def, out, err);
}

bool model_get_f32(const model *m, const char *key, float *out)
{
    return arch_f32(m->file, m->hp.arch, key, out);
}

bool model_get_bool(const model *m, const char *key, bool *out)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", m->hp.arch, key);
    return gguf_get_bool(m->file, k, out);
}

/* Binds GGUF tensor `name` to the next model tensor after checking its type and shape
 * (ne2 = 0 for 2D, ne1 = ne2 = 0 for 1D). matmul: the weight is a matmul operand, so its
 * rows must be whole blocks of its own and its dot type. */
int model_bind(model *m, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, bool matmul,
               bool optional, tensor **out, llmfs_error *err)
{
    *out = NULL;
    const gguf_tensor *g = gguf_find_tensor(m->file, name);
    if (!g) {
        if (optional)
            return 0;
        return llmfs_errorf(err, EINVAL, "model: missing tensor %s", name);
    }
    int64_t want[4] = {ne0, ne1 ? ne1 : 1, ne2 ? ne2 : 1, 1};
    int dims = ne2 ? 3 : ne1 ? 2 : 1;
    for (int i = 0; i < 4; i++)
        if (g->ne[i] != want[i] || g->n_dims > dims)
            return llmfs_errorf(err, EINVAL,
                                "model: tensor %s has shape [%lld %lld %lld %lld], expected [%lld %lld %lld]",
                                name, (long long)g->ne[0], (long long)g->ne[1], (long long)g->ne[2],
                                (long long)g->ne[3], (long long)want[0], (long long)want[1],
                                (long long)want[2]);
    const type_traits *tt = type_info(g->type);
    if (!tt)
        return llmfs_errorf(err, EINVAL, "model: tensor %s has unsupported type %d", name, g->type);
    if (!matmul && g->type != T_F32)
        return llmfs_errorf(err, EINVAL, "model: tensor %s must be F32, is %s", name, tt->name);
    if (g->ne[0] % tt->block)
        return llmfs_errorf(err, EINVAL, "model: tensor %s rows of %lld are not whole %s blocks",
                            name, (long long)g->ne[0], tt->name);
    if (matmul) {
        const type_traits *dt = type_info(tt->dot_type);
        if (!dt || g->ne[0] % dt->block)
            return llmfs_errorf(err, EINVAL, "model: tensor %s: rows of %lld cannot be multiplied as %s",
                                name, (long long)g->ne[0], tt->name);
    }
    size_t row = type_row_bytes(g->type, g->ne[0]);
    if (g->size < row * (size_t)want[1] * (size_t)want[2])
        return llmfs_errorf(err, EINVAL, "model: tensor %s is truncated", name);
    tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = g->type;
    t->ne[0] = want[0];
    t->ne[1] = want[1];
    t->ne[2] = want[2];
    t->nb1 = row;
    t->nb2 = row * (size_t)want[1];
    t->data = (void *)g->data; /* the CPU reads weights in place, never copies them */
    t->be = m->cpu;
    *out = t;
    return 0;
}

int model_bind_blk(model *m, int il, const char *suffix, int64_t ne0, int64_t ne1, int64_t ne2,
                   bool matmul, bool optional, tensor **out, llmfs_error *err)
{
    char name[64];
    snprintf(name, sizeof name, "blk.%d.%s", il, suffix);
    return model_bind(m, name, ne0, ne1, ne2, matmul, optional, out, err);
}

static int load_tensors(model *m, llmfs_error *err)
{
    model_hparams *hp = &m->hp;
    const int E = hp->n_embd;
    int rc;
    const gguf_tensor *emb = gguf_find_tensor(m->file, "token_embd.weight");
    if (!emb)
        return llmfs_errorf(err, EINVAL, "model: missing tensor token_embd.weight");
    if (emb->ne[1] <= 0 || emb->ne[1] > (1 << 24))
        return llmfs_errorf(err, EINVAL, "model: token_embd.weight has %lld rows",
                            (long long)emb->ne[1]);
    hp->n_vocab = (int)emb->ne[1];
    int V = hp->n_vocab;
    if ((rc = model_bind(m, "token_embd.weight", E, V, 0, true, false, &m->tok_embd, err)) ||
        (rc = model_bind(m, "output_norm.weight", E, 0, 0, false, false, &m->output_norm, err)) ||
        (rc = model_bind(m, "output.weight", E, V, 0, true, true, &m->output, err)))
        return rc;
    hp->tied_output = m->output == NULL;
    if (hp->tied_output)
        m->output = m->tok_embd;

    for (int il = 0; il < hp->n_layer; il++) {
        model_layer *L = &m->layers[il];
        L->be = m->cpu;
        if ((rc = m->family->bind_layer(m, il, err)))
            return rc;
        /* moe_ffn converts the input once for gate and up */
        if (L->gate_exps && L->up_exps &&
            type_info(L->gate_exps->type)->dot_type != type_info(L->up_exps->type)->dot_type)
            return llmfs_errorf(err, EINVAL, "model: blk.%d.ffn_gate_exps and ffn_up_exps types differ", il);
    }
    return 0;
}

/* ---------------------------------------------------------------- placement */

/* Copies t to be (once, at load), in the backend's own layout where it has one. */
static int place(tensor *t, backend *be, llmfs_error *err)
{
    if (!t || t->be == be)
        return 0;
    if (be->ops->load_weight)
        return be->ops->load_weight(be, t, t->data, err);
    size_t bytes = t->nb2 * (size_t)t->ne[2];
    void *p = be->ops->alloc(be, bytes);
    if (!p)
        return llmfs_errorf(err, ENOMEM, "model: cannot place %s (%zu bytes) on %s", t->name, bytes,
                            be->ops->name);
    be->ops->upload(be, p, t->data, bytes);
    t->data = p;
    t->be = be;
    return 0;
}

static int place_all(tensor *const *ts, int n, backend *be, llmfs_error *err)
{
    for (int i = 0; i < n; i++) {
        int rc = place(ts[i], be, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* Where each weight goes (placement.h decides from ngl, n_cpu_moe and override_tensor),
 * then the weights moved there. The decision is applied per group so every op finds
 * its operands on one device: a layer's attention goes where attn_q goes, its
 * feed-forward (norm, router included) where ffn_gate or ffn_gate_inp goes, its experts
 * where ffn_gate_exps goes, and the output with output_norm. Without a usable GPU
 * everything stays on the CPU and m->note says why. */
static int place_weights(model *m, const model_opts *o, llmfs_error *err)
{
    model_priv *P = m->scratch;
    const model_hparams *hp = &m->hp;
    int rc = place_parse_overrides(o->override_tensor, err);
    if (rc)
        return rc;
    if (!o->ngl && !o->override_tensor)
        return 0;
    place_tensor *pt = calloc((size_t)m->n_tensors, sizeof *pt);
    if (!pt)
        return llmfs_errorf(err, ENOMEM, "model: out of memory");
    for (int i = 0; i < m->n_tensors; i++) {
        pt[i].name = m->tensors[i].name;
        pt[i].bytes = m->tensors[i].nb2 * (uint64_t)m->tensors[i].ne[2];
    }
    /* an MTP model's one layer is its file's block mtp_block: ngl counts it there */
    place_opts po = {.n_layer = hp->mtp_block >= 0 ? hp->mtp_block + 1 : hp->n_layer, .ngl = o->ngl, .n_cpu_moe = o->n_cpu_moe,
                     .override_tensor = o->override_tensor};
    place_result res;
    rc = place_decide(pt, m->n_tensors, &po, &res, err);
    bool any = false;
    for (int i = 0; rc == 0 && i < m->n_tensors; i++)
        any |= pt[i].device == PLACE_GPU;
    /* the device chosen for each tensor, looked up by pointer below */
    enum place_device *dev = malloc(sizeof *dev * (size_t)(m->n_tensors + 1));
    if (!dev) {
        free(pt);
        return llmfs_errorf(err, ENOMEM, "model: out of memory");
    }
    for (int i = 0; rc == 0 && i < m->n_tensors; i++)
        dev[i] = pt[i].device;
    free(pt);
    if (rc || !any) {
        free(dev);
        return rc;
    }

    char why[200] = "";
    m->gpu = backend_gpu_new(0, why, sizeof why);
    if (!m->gpu) {
        snprintf(m->note, sizeof m->note, "no GPU (%s): every layer on the CPU", why);
        free(dev);
        return 0;
    }
#define DEV(t) ((t) && dev[(t) - m->tensors] == PLACE_GPU ? m->gpu : m->cpu)
    int n_gpu_layers = 0;
    for (int il = 0; il < hp->n_layer && rc == 0; il++) {
        model_layer *L = &m->layers[il];
        backend *ab = DEV(L->wq ? L->wq : L->wqkv ? L->wqkv : L->ssm_in);
        backend *fb = DEV(L->gate_inp ? L->gate_inp : L->w_gate);
        backend *eb = DEV(L->gate_exps);
        if (hp->n_recurrent && !m->gpu->ops->gated_delta) {
            /* a device without the recurrent ops runs none of a hybrid model's layers */
            ab = fb = eb = m->cpu;
        }
        tensor *attn[] = {L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv, L->q_norm, L->k_norm,
                          L->post_attn_norm, L->ssm_in, L->wqkv, L->wz, L->ssm_ba, L->ssm_beta, L->ssm_alpha,
                          L->ssm_conv, L->ssm_dt, L->ssm_a, L->ssm_norm, L->ssm_out, L->bo, L->sinks,
                          L->eh_proj, L->enorm, L->hnorm};
        tensor **ffn[] = FFN_TENSORS(L);
        /* the routed experts and their biases: where ffn_gate_exps goes */
        tensor *exps[] = {L->gate_exps, L->up_exps, L->down_exps, L->gate_exps_b, L->up_exps_b, L->down_exps_b};
        const int n_exps = (int)(sizeof exps / sizeof exps[0]);
        L->be = ab;
        n_gpu_layers += ab == m->gpu;
        if ((rc = place_all(attn, (int)(sizeof attn / sizeof attn[0]), ab, err)) ||
            (rc = place_all(exps, n_exps, eb, err)))
            break;
        for (int i = 0; i < FFN_N_TENSORS && rc == 0; i++) {
            bool expert = false;
            for (int j = 0; j < n_exps; j++)
                expert |= *ffn[i] == exps[j];
            if (!expert)
                rc = place(*ffn[i], fb, err);
        }
    }
    if (rc == 0 && DEV(m->output_norm) == m->gpu) {
        if (hp->tied_output) {
            /* token_embd stays on the CPU for the lookup; the output needs its own copy */
            tensor *t = &m->tensors[m->n_tensors++];
            *t = *m->tok_embd;
            snprintf(t->name, sizeof t->name, "output.weight");
            m->output = t;
        }
        tensor *out[] = {m->output_norm, m->output, m->nextn_pre_proj, m->nextn_post_proj};
        rc = place_all(out, 4, m->gpu, err);
    }
#undef DEV
    free(dev);
    (void)P;
    if (rc == 0)
        snprintf(m->note, sizeof m->note, "%d of %d layers on %s%s", n_gpu_layers, hp->n_layer,
                 m->gpu->ops->name, m->output->be == m->gpu ? ", output too" : "");
    (void)P;
    return rc;
}

static void unplace(model *m)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].be && m->tensors[i].be != m->cpu)
            m->tensors[i].be->ops->free(m->tensors[i].be, m->tensors[i].data);
}

/* ---------------------------------------------------------------- scratch */

static void bufs_free(fwd_bufs *B)
{
    if (!B->be)
        return;
    float **fs[] = {&B->x, &B->xb, &B->xb2, &B->q, &B->k, &B->v, &B->att, &B->hb, &B->hb2,
                    &B->router, &B->wts, (float **)&B->ids, &B->logits, &B->extra, &B->pl};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        if (*fs[i])
            B->be->ops->free(B->be, *fs[i]);
}

static int bufs_alloc(model *m, fwd_bufs *B, backend *be, bool logits, llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    size_t n = (size_t)m->n_ubatch;
    size_t E = hp->n_embd, QD = (size_t)hp->n_head * hp->head_dim, KD = 1;
    for (int il = 0; il < hp->n_layer; il++) {
        size_t kd = (size_t)m->layers[il].n_head_kv * m->layers[il].head_dim;
        KD = kd > KD ? kd : KD;
    }
    /* per-layer inputs, and on the CPU room for their projection while they are made */
    size_t PL = (size_t)hp->n_embd_per_layer * hp->n_layer * (be == m->cpu ? 2 : 1);
    size_t F = hp->n_ff > hp->n_embd_per_layer ? hp->n_ff : hp->n_embd_per_layer;
    F = F > 0 ? F : 1;
    size_t X = hp->n_expert > 0 ? hp->n_expert : 1,
           K = hp->n_expert_used > 0 ? hp->n_expert_used : 1;
    B->be = be;
    struct {
        float **p;
        size_t n;
    } want[] = {
        {&B->x, n * E},   {&B->xb, n * E},    {&B->xb2, n * E},      {&B->q, n * QD},
        {&B->k, n * KD},  {&B->v, n * KD},    {&B->att, n * QD},     {&B->hb, n * F},
        {&B->hb2, n * F}, {&B->router, n * X}, {&B->wts, n * K},     {(float **)&B->ids, n * K},
        {&B->logits, logits ? (n < OUT_CHUNK ? n : OUT_CHUNK) * (size_t)hp->n_vocab : 0},
        {&B->extra, n * (size_t)hp->n_extra},
        {&B->pl, n * PL},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!want[i].n)
            continue;
        *want[i].p = be->ops->alloc(be, want[i].n * sizeof(float));
        if (!*want[i].p)
            return llmfs_errorf(err, ENOMEM, "model: cannot allocate %zu bytes of scratch on %s",
                                want[i].n * sizeof(float), be->ops->name);
    }
    return 0;
}

static int scratch_alloc(model *m, llmfs_error *err)
{
    model_priv *P = m->scratch;
    P->flags = malloc((size_t)m->n_ubatch);
    if (!P->flags)
        return llmfs_errorf(err, ENOMEM, "model: out of memory");
    int rc = bufs_alloc(m, &P->bufs[P->n_bufs++], m->cpu, false, err);
    if (rc)
        return rc;
    if (m->gpu && (rc = bufs_alloc(m, &P->bufs[P->n_bufs++], m->gpu, m->output->be == m->gpu, err)))
        return rc;
    /* the residual stream, or a MoE layer's expert ids and weights */
    size_t w = (size_t)(m->hp.n_embd > m->hp.n_expert_used ? m->hp.n_embd : m->hp.n_expert_used);
    P->host = malloc(sizeof(float) * (size_t)m->n_ubatch * w);
    if (!P->host)
        return llmfs_errorf(err, ENOMEM, "model: out of memory");
    return 0;
}

/* Frees what scratch_alloc made (the micro-batch-sized buffers only). */
static void scratch_free(model *m)
{
    model_priv *P = m->scratch;
    for (int i = 0; i < P->n_bufs; i++)
        bufs_free(&P->bufs[i]);
    memset(P->bufs, 0, sizeof P->bufs);
    P->n_bufs = 0;
    free(P->host);
    free(P->flags);
    P->host = NULL;
    P->flags = NULL;
}

/* The buffers are sized for n_ubatch when the model loads; a new size builds a new set
 * first, so that a failure keeps the old one (and its size) working. */
int model_set_ubatch(model *m, int n_ubatch, llmfs_error *err)
{
    model_priv *P = m->scratch;
    if (n_ubatch < 1)
        return llmfs_errorf(err, EINVAL, "model: micro-batch of %d tokens", n_ubatch);
    if (n_ubatch == m->n_ubatch)
        return 0;
    model_priv old = *P;
    int old_n = m->n_ubatch;
    memset(P->bufs, 0, sizeof P->bufs);
    P->n_bufs = 0;
    P->host = NULL;
    P->flags = NULL;
    m->n_ubatch = n_ubatch;
    int rc = scratch_alloc(m, err);
    if (rc) {
        scratch_free(m);
        memcpy(P->bufs, old.bufs, sizeof P->bufs);
        P->n_bufs = old.n_bufs;
        P->host = old.host;
        P->flags = old.flags;
        m->n_ubatch = old_n;
        return rc;
    }
    /* recorded decode steps point at the old buffers */
    if (m->gpu && m->gpu->ops->graph_reset)
        m->gpu->ops->graph_reset(m->gpu);
    for (int i = 0; i < old.n_bufs; i++)
        bufs_free(&old.bufs[i]);
    free(old.host);
    free(old.flags);
    return 0;
}

fwd_bufs *model_bufs_of(model *m, backend *be)
{
    model_priv *P = m->scratch;
    for (int i = 0; i < P->n_bufs; i++)
        if (P->bufs[i].be == be)
            return &P->bufs[i];
    return &P->bufs[0];
}

/* ---------------------------------------------------------------- load / free */

static model *load_model(const char *path, const model_opts *opts, const model_family *fam, llmfs_error *err);

model *model_load(const char *path, const model_opts *opts, llmfs_error *err)
{
    return load_model(path, opts, NULL, err);
}

model *model_load_family(const char *path, const model_opts *opts, const model_family *fam, llmfs_error *err)
{
    return load_model(path, opts, fam, err);
}

static model *load_model(const char *path, const model_opts *opts, const model_family *fam, llmfs_error *err)
{
    model_opts def = {0};
    const model_opts *o = opts ? opts : &def;
    gguf_open_opts go = {.no_mmap = o->no_mmap, .mlock = o->mlock};
    gguf_file *f = gguf_open(path, &go, err);
    if (!f)
        return NULL;
    model *m = calloc(1, sizeof *m);
    model_priv *P = calloc(1, sizeof *P);
    if (!m || !P) {
        free(m);
        free(P);
        gguf_close(f);
        llmfs_errorf(err, ENOMEM, "model: out of memory");
        return NULL;
    }
    m->file = f;
    m->scratch = P;
    m->n_ubatch = o->n_ubatch > 0 ? o->n_ubatch : 512;
    /* 0: asks the family for the MTP block, which it replaces by the block's index (the
     * trunk's layer count, >= 1); a family without MTP blocks leaves it */
    m->hp.mtp_block = o->mtp ? 0 : -1;
    int rc;
    if ((rc = load_hparams(m, fam, err)))
        goto fail;
    if (o->mtp && (m->hp.mtp_block < 1 || !mtp_input_of(m->family))) {
        rc = llmfs_errorf(err, EINVAL, "model: %s has no MTP (nextn) head", m->hp.arch);
        goto fail;
    }
    m->tensors = calloc((size_t)gguf_n_tensors(f) + 1, sizeof *m->tensors);
    m->cpu = backend_cpu_new(o->n_threads, o->n_threads_batch);
    if (!m->tensors || !m->cpu) {
        rc = llmfs_errorf(err, ENOMEM, "model: out of memory");
        goto fail;
    }
    if ((rc = load_tensors(m, err)))
        goto fail;
    if ((rc = place_weights(m, o, err)))
        goto fail;
    P->all_on_gpu = m->gpu && m->output->be == m->gpu;
    for (int il = 0; P->all_on_gpu && il < m->hp.n_layer; il++) {
        const model_layer *L = &m->layers[il];
        P->all_on_gpu = L->be == m->gpu && L->ffn_norm->be == m->gpu &&
                        (!L->gate_exps || L->gate_exps->be == m->gpu);
    }
    m->offload_batch = -1;
    if ((rc = model_stream_plan(m, err)))
        goto fail;
    for (int i = 0; i < gguf_n_tensors(f) && m->hp.mtp_block < 0; i++) {
        const gguf_tensor *g = gguf_tensor_at(f, i);
        m->n_params += (uint64_t)(g->ne[0] * g->ne[1] * g->ne[2] * g->ne[3]);
    }
    for (int i = 0; i < m->n_tensors && m->hp.mtp_block >= 0; i++) /* what it binds of the file */
        m->n_params += (uint64_t)(m->tensors[i].ne[0] * m->tensors[i].ne[1] * m->tensors[i].ne[2]);
    m->tok = tokenizer_load(f, err);
    if (!m->tok) {
        rc = err ? -err->code : -EINVAL;
        goto fail;
    }
    if (tokenizer_n_vocab(m->tok) > m->hp.n_vocab) {
        rc = llmfs_errorf(err, EINVAL, "model: vocabulary of %d tokens but token_embd has %d rows",
                          tokenizer_n_vocab(m->tok), m->hp.n_vocab);
        goto fail;
    }
    if ((rc = scratch_alloc(m, err)))
        goto fail;
    return m;
fail:
    (void)rc;
    model_free(m);
    return NULL;
}

uint64_t model_vram_bytes(const model *m)
{
    return m && m->gpu && m->gpu->ops->mem_used ? m->gpu->ops->mem_used(m->gpu) : 0;
}

void model_free(model *m)
{
    if (!m)
        return;
    model_priv *P = m->scratch;
    if (P) {
        scratch_free(m);
        free(P->freq_factors);
        free(P->id_logits);
        free(P->seq_len);
        free(P->stream_layers);
        free(P);
    }
    if (m->tensors)
        unplace(m);
    if (m->tok)
        tokenizer_free(m->tok);
    backend_free(m->gpu);
    backend_free(m->cpu);
    free(m->layers);
    free(m->tensors);
    gguf_close(m->file);
    free(m);
}

const char *model_ftype_name(int file_type)
{
    static const struct {
        int id;
        const char *name;
    } names[] = {
        {0, "F32"},     {1, "F16"},     {2, "Q4_0"},    {3, "Q4_1"},    {7, "Q8_0"},
        {8, "Q5_0"},    {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"}, {12, "Q3_K_M"},
        {13, "Q3_K_L"}, {14, "Q4_K_S"}, {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"},
        {18, "Q6_K"},   {19, "IQ2_XXS"}, {20, "IQ2_XS"}, {21, "Q2_K_S"}, {22, "IQ3_XS"},
        {23, "IQ3_XXS"}, {24, "IQ1_S"}, {25, "IQ4_NL"}, {26, "IQ3_S"},  {27, "IQ3_M"},
        {28, "IQ2_S"},  {29, "IQ2_M"},  {30, "IQ4_XS"}, {31, "IQ1_M"},  {32, "BF16"},
        {36, "TQ1_0"},  {37, "TQ2_0"},  {38, "MXFP4_MOE"},
    };
    int ft = file_type & ~1024; /* 1024: llama.cpp's "guessed" flag */
    if (file_type >= 0)
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (names[i].id == ft)
                return names[i].name;
    return NULL;
}

const char *model_file_type_name(const model *m)
{
    const char *known = model_ftype_name(m->hp.file_type);
    if (known)
        return known;
    /* no (known) file type: the type holding most weight bytes */
    model_priv *P = m->scratch;
    size_t bytes[T_COUNT] = {0};
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].ne[1] > 1 && m->tensors[i].type >= 0 && m->tensors[i].type < T_COUNT)
            bytes[m->tensors[i].type] += m->tensors[i].nb2 * (size_t)m->tensors[i].ne[2];
    int best = T_F32;
    for (int t = 0; t < T_COUNT; t++)
        if (bytes[t] > bytes[best])
            best = t;
    const type_traits *tt = type_info(best);
    snprintf(P->ftype_name, sizeof P->ftype_name, "%s", tt ? tt->name : "unknown");
    for (char *c = P->ftype_name; *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    return P->ftype_name;
}

/* ================================================================ forward pass */

/* bytes at src on backend `from` to dst on backend `to`, through the host staging buffer */
void model_copy_between(model *m, backend *from, const void *src, backend *to, void *dst, size_t bytes)
{
    model_priv *P = m->scratch;
    if (from == m->cpu && to == m->cpu) {
        memmove(dst, src, bytes);
        return;
    }
    from->ops->download(from, P->host, src, bytes);
    to->ops->upload(to, dst, P->host, bytes);
}

/* The residual stream [n][E] moved to backend `to`'s scratch (when it is elsewhere). */
fwd_bufs *model_move_to(model *m, fwd_bufs *from, backend *to, int n)
{
    if (from->be == to)
        return from;
    fwd_bufs *B = model_bufs_of(m, to);
    model_copy_between(m, from->be, from->x, to, B->x, sizeof(float) * (size_t)n * (size_t)m->hp.n_embd);
    return B;
}

/* Two or three matmuls of one input (o3 NULL for two), in one pass where the backend can. */
void model_matmul3(backend *be, float *o1, const tensor *w1, float *o2, const tensor *w2, float *o3,
                   const tensor *w3, const float *x, int n)
{
    if (be->ops->matmul_multi) {
        float *out[3] = {o1, o2, o3};
        const tensor *w[3] = {w1, w2, w3};
        be->ops->matmul_multi(be, out, w, o3 ? 3 : 2, x, n);
        return;
    }
    be->ops->matmul(be, o1, w1, x, n);
    be->ops->matmul(be, o2, w2, x, n);
    if (o3)
        be->ops->matmul(be, o3, w3, x, n);
}

void model_moe_experts(model *m, const model_layer *L, fwd_bufs *B, int n)
{
    const int E = m->hp.n_embd, K = m->hp.n_expert_used;
    fwd_bufs *M = model_bufs_of(m, L->gate_exps->be);
    if (M != B) {
        model_copy_between(m, B->be, B->xb, M->be, M->xb, sizeof(float) * (size_t)n * E);
        model_copy_between(m, B->be, B->ids, M->be, M->ids, sizeof(int32_t) * (size_t)n * K);
        model_copy_between(m, B->be, B->wts, M->be, M->wts, sizeof(float) * (size_t)n * K);
    }
    const moe_extra ex = {L->gate_exps_b, L->up_exps_b, L->down_exps_b, m->hp.swiglu_alpha,
                          m->hp.swiglu_limit};
    bool plain = !L->gate_exps_b && !L->up_exps_b && !L->down_exps_b && !(m->hp.swiglu_limit > 0);
    M->be->ops->moe_ffn(M->be, M->xb2, M->xb, L->gate_exps, L->up_exps, /* xb2 [n][E] */
                        L->down_exps, M->ids, M->wts, n, K, m->hp.ffn_act, plain ? NULL : &ex);
    if (M != B)
        model_copy_between(m, M->be, M->xb2, B->be, B->xb2, sizeof(float) * (size_t)n * E);
}

/* The final norm of just the rows asked for (gathered into xb) and the output
 * projection: logits [n_out][V] to `logits` (host) when the output is on the CPU, else to
 * the output backend's B->logits (the caller downloads), or chunk by chunk to the host
 * (*delivered). rows: rows of x computed (n, or n_out when the last block was pruned).
 * Returns the bufs the output ran on. */
static fwd_bufs *output_head(model *m, const fwd_batch *ub, fwd_bufs *B, int rows, int n_out,
                             float *logits, int32_t *ids, float *hidden, bool *delivered)
{
    const model_hparams *hp = &m->hp;
    const int n = ub->n, E = hp->n_embd;
    B = model_move_to(m, B, m->output->be, rows);
    backend *be = B->be;
    const struct backend_ops *o = be->ops;
    *delivered = false;
    if (hidden) {
        /* every row normalised (none was pruned), to the host; then the rows with
         * logits move up to the front, in order */
        o->rmsnorm(be, B->xb, B->x, m->output_norm->data, n, E, hp->rms_eps); /* xb [n][E] */
        o->download(be, hidden, B->xb, sizeof(float) * (size_t)n * E);
        for (int i = 0, j = 0; i < n && n_out < n; i++)
            if (ub->logits[i]) {
                if (i != j) /* row i to row j < i */
                    model_copy_between(m, be, B->xb + (size_t)i * E, be, B->xb + (size_t)j * E,
                                       sizeof(float) * (size_t)E);
                j++;
            }
        if (!n_out)
            return B;
    } else if (rows == n_out) {
        o->rmsnorm(be, B->xb, B->x, m->output_norm->data, n_out, E, hp->rms_eps); /* xb [n_out][E] */
    } else {
        for (int i = 0, j = 0; i < n;) {
            if (!ub->logits[i]) {
                i++;
                continue;
            }
            int run = 1;
            while (i + run < n && ub->logits[i + run])
                run++;
            o->rmsnorm(be, B->xb + (size_t)j * E, B->x + (size_t)i * E, /* xb [n_out][E] */
                       m->output_norm->data, run, E, hp->rms_eps);
            i += run;
            j += run;
        }
    }
    const float cap = hp->logit_softcap;
    if (be == m->cpu || n_out <= OUT_CHUNK) {
        float *lg = be == m->cpu ? logits : B->logits;
        o->matmul(be, lg, m->output, B->xb, n_out);                            /* [n_out][V] */
        if (cap > 0)
            o->softcap(be, lg, cap, (int64_t)n_out * hp->n_vocab);
        return B;
    }
    /* off the CPU, more rows than the device buffer: chunk by chunk to the host */
    const int V = hp->n_vocab;
    for (int r = 0; r < n_out; r += OUT_CHUNK) {
        int nr = n_out - r < OUT_CHUNK ? n_out - r : OUT_CHUNK;
        o->matmul(be, B->logits, m->output, B->xb + (size_t)r * E, nr);          /* [nr][V] */
        if (cap > 0)
            o->softcap(be, B->logits, cap, (int64_t)nr * V);
        if (ids && o->argmax)
            o->argmax(be, ids + r, B->logits, nr, V);
        else
            o->download(be, logits + (size_t)r * V, B->logits, sizeof(float) * (size_t)nr * V);
    }
    *delivered = true;
    return B;
}

/* Every layer, then the output head (when any row asks for logits). prune: the last
 * layer's feed-forward runs on the rows with logits only (as llama.cpp does); not in a
 * recorded step, whose ops must not copy through the host. Returns the bufs the output
 * ran on. */
static fwd_bufs *run_blocks(model *m, kv_cache *kv, const fwd_batch *ub, fwd_bufs *B, bool flash,
                            int n_out, float *logits, int32_t *ids, float *hidden, bool prune,
                            stream_pass *sp, bool *delivered)
{
    const model_hparams *hp = &m->hp;
    const int n = ub->n, E = hp->n_embd;
    int rows = n; /* rows of x still computed */
    sp->k = 0;
    for (int il = 0; il < hp->n_layer; il++) {
        B = model_move_to(m, B, m->layers[il].be, rows);
        m->family->attention(m, kv, il, B, n, flash);
        if (prune && !hidden && il == hp->n_layer - 1 && n_out < n) {
            /* the last feed-forward block only matters for rows with logits: they move
             * up to the front of x (in order, so no row is overwritten before it moves) */
            const size_t PL = (size_t)hp->n_embd_per_layer * hp->n_layer; /* its inputs move too */
            for (int i = 0, j = 0; i < n; i++)
                if (ub->logits[i]) {
                    if (i != j)
                        model_copy_between(m, B->be, B->x + (size_t)i * E, B->be, B->x + (size_t)j * E,
                                           sizeof(float) * (size_t)E);
                    if (i != j && PL)
                        model_copy_between(m, B->be, B->pl + i * PL, B->be, B->pl + j * PL,
                                           sizeof(float) * PL);
                    j++;
                }
            rows = n_out;
        }
        if (!rows)
            break;
        B = model_stream_ffn(m, sp, il, B, rows); /* where its weights are, or streamed */
    }
    return n_out || hidden ? output_head(m, ub, B, rows, n_out, logits, ids, hidden, delivered) : B;
}


/* What a recorded decode step depends on besides the uploaded batch: its shape, the
 * rows with logits, the attention path and the cache (FNV-1a). */
static uint64_t graph_key(const kv_cache *kv, const fwd_batch *ub, bool flash)
{
    uint64_t h = 1469598103934665603ull;
    int64_t v[] = {ub->n, flash, (int64_t)(uintptr_t)kv, kv->n_ctx, kv->n_seq, kv->type_k,
                   kv->type_v, kv->rot_k, kv->rot_v, kv->swa_slack};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        for (int b = 0; b < 8; b++)
            h = (h ^ (uint8_t)(v[i] >> (8 * b))) * 1099511628211ull;
    for (int i = 0; i < ub->n; i++)
        h = (h ^ (uint8_t)(ub->logits[i] != 0)) * 1099511628211ull;
    return h;
}

/* The greedy choice: the largest logit, the lowest id on ties (NaN never wins). */
static int32_t logits_argmax(const float *x, int n)
{
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b] || x[b] != x[b])
            b = i;
    return b;
}

/* What a batch may add to its token ids (model_forward_embd). */
typedef struct fwd_input {
    const float *embd;      /* [n][n_embd] rows for the tokens -1, or NULL */
    const float *hidden;    /* an MTP model's [n][n_embd] hidden input rows, else NULL */
    const int32_t *orig;    /* the micro-batch's tokens as given (ub->token then has 0 in
                             * place of each -1, so that the lookup reads a real row
                             * before the input row replaces it) */
    bool non_causal;
} fwd_input;

/* One micro-batch (n <= n_ubatch tokens): embeddings on the CPU, the layers wherever
 * they were placed, then the logits of the positions that asked for them, written to
 * logits [n_out][V] (host memory) — or, with ids set, their argmax to ids [n_out]
 * (picked by the output's backend when it can, so only the ids cross to the host;
 * logits is then host scratch, needed only when it cannot). stream: the host-resident
 * feed-forward weights go to the GPU for this batch. Returns n_out. */
static int forward_ubatch(model *m, kv_cache *kv, const fwd_batch *ub, const fwd_input *in, float *logits,
                          int32_t *ids, float *hidden, bool flash, bool stream, llmfs_error *err)
{
    model_priv *P = m->scratch;
    const model_hparams *hp = &m->hp;
    const int n = ub->n;
    int rc;
    backend *refused = NULL;
    if ((rc = m->cpu->ops->begin(m->cpu, ub)))
        refused = m->cpu;
    else if (m->gpu && (rc = m->gpu->ops->begin(m->gpu, ub)))
        refused = m->gpu;
    if (!refused && in->non_causal) { /* forward() checked that the layers' backends can */
        m->cpu->ops->non_causal(m->cpu);
        if (m->gpu && m->gpu->ops->non_causal)
            m->gpu->ops->non_causal(m->gpu);
    }
    if (refused) {
        /* the backend's own account (which also clears it, so the next batch is tried
         * afresh: memory may have come back) */
        llmfs_error why = {0};
        if (refused->ops->check && refused->ops->check(refused, &why) < 0 && why.msg[0])
            return llmfs_errorf(err, -rc, "forward: %s", why.msg);
        return llmfs_errorf(err, -rc, "forward: backend refused the batch (%s)", strerror(-rc));
    }
    int n_out = 0;
    for (int i = 0; i < n; i++)
        n_out += ub->logits[i] != 0;

    stream_pass sp;
    model_stream_begin(m, &sp, n, stream);

    fwd_bufs *B = model_bufs_of(m, m->tok_embd->be);
    B->be->ops->get_rows(B->be, B->x, m->tok_embd, n);                  /* x [n][E] */
    if (m->family->embed)
        m->family->embed(m, B, n);
    for (int i = 0; in->embd && i < n; i++) /* input rows as they are: no scale */
        if (in->orig[i] < 0)
            B->be->ops->upload(B->be, B->x + (size_t)i * hp->n_embd, in->embd + (size_t)i * hp->n_embd,
                               sizeof(float) * (size_t)hp->n_embd);
    if (in->hidden) {
        /* an MTP model's input step, where its layer computes: x [n][E] from the token
         * embeddings and the hidden rows (xb [n][E], free until the layer) */
        B = model_move_to(m, B, m->layers[0].be, n);
        B->be->ops->upload(B->be, B->xb, in->hidden, sizeof(float) * (size_t)n * hp->n_embd);
        mtp_input_of(m->family)(m, B, n);
    }
    if (hp->n_embd_per_layer) /* per-layer inputs [n][n_layer][P], for layers on any backend */
        for (int i = 0; i < P->n_bufs; i++)
            if (&P->bufs[i] != B)
                model_copy_between(m, B->be, B->pl, P->bufs[i].be, P->bufs[i].pl,
                                   sizeof(float) * (size_t)n * hp->n_layer * hp->n_embd_per_layer);

    backend *gpu = m->gpu;
    bool delivered = false;
    if (P->all_on_gpu && gpu->ops->graph_begin && n <= 16 && !hidden && !in->hidden) {
        /* everything after the lookup runs on the GPU: a decode step can be a recorded
         * graph, replayed when the same shape comes again */
        B = model_move_to(m, B, gpu, n);
        int g = gpu->ops->graph_begin(gpu, graph_key(kv, ub, flash));
        if (g != 1) {
            run_blocks(m, kv, ub, B, flash, n_out, logits, ids, NULL, false, &sp, &delivered);
            if (gpu->ops->graph_end(gpu) < 0)
                run_blocks(m, kv, ub, B, flash, n_out, logits, ids, NULL, false, &sp, &delivered);
        }
    } else {
        B = run_blocks(m, kv, ub, B, flash, n_out, logits, ids, hidden, true, &sp, &delivered);
    }
    backend *ob = m->output->be;
    const bool device_ids = ids && ob != m->cpu && ob->ops->argmax;
    if (delivered)
        ; /* the chunks went to the host already */
    else if (n_out && device_ids)
        ob->ops->argmax(ob, ids, model_bufs_of(m, ob)->logits, n_out, hp->n_vocab);
    else if (n_out && ob != m->cpu)
        ob->ops->download(ob, logits, model_bufs_of(m, ob)->logits, sizeof(float) * (size_t)n_out * hp->n_vocab);
    if (ids && !device_ids && (!delivered || !ob->ops->argmax))
        for (int r = 0; r < n_out; r++)
            ids[r] = logits_argmax(logits + (size_t)r * hp->n_vocab, hp->n_vocab);
    for (int i = 0; i < (gpu ? 2 : 1); i++) {
        backend *b = i ? gpu : m->cpu;
        if (b->ops->sync)
            b->ops->sync(b);
        if (b->ops->check && (rc = b->ops->check(b, err)))
            return rc;
    }
    model_stream_end(m, &sp);
    return n_out;
}

/* Checks the whole batch before anything runs, so a refused batch leaves the cache as
 * it was: tokens in the vocabulary, sequences in the cache, positions inside the
 * context and without gaps (cell p of a sequence can only be written once 0..p-1 are). */
static int check_batch(model *m, kv_cache *kv, const fwd_batch *b, const float *embd, llmfs_error *err)
{
    model_priv *P = m->scratch;
    bool same = kv->n_layer == m->hp.n_layer;
    for (int il = 0; same && il < kv->n_layer; il++) {
        const model_layer *L = &m->layers[il];
        same = kv->layer[il].n_embd_kv == (L->kv_from == il && !L->recurrent ? L->n_head_kv * L->head_dim : 0) &&
               (kv->state && kv->state[il].be) == L->recurrent;
    }
    if (!same)
        return llmfs_errorf(err, EINVAL, "forward: the KV cache belongs to another model");
    if (kv->n_seq > P->seq_len_cap) {
        int *p = realloc(P->seq_len, sizeof(int) * (size_t)kv->n_seq);
        if (!p)
            return llmfs_errorf(err, ENOMEM, "forward: out of memory");
        P->seq_len = p;
        P->seq_len_cap = kv->n_seq;
    }
    memcpy(P->seq_len, kv->seq_len, sizeof(int) * (size_t)kv->n_seq);
    for (int i = 0; i < b->n; i++) {
        int t = b->token[i], s = b->seq[i], p = b->pos[i];
        if (t == -1 && embd)
            ; /* an input row */
        else if (t < 0 || t >= m->hp.n_vocab)
            return llmfs_errorf(err, EINVAL, "forward: token %d is outside the vocabulary (%d)", t,
                                m->hp.n_vocab);
        if (s < 0 || s >= kv->n_seq)
            return llmfs_errorf(err, EINVAL, "forward: sequence %d is outside the cache (%d slots)",
                                s, kv->n_seq);
        if (p < 0)
            return llmfs_errorf(err, EINVAL, "forward: negative position %d", p);
        if (p >= kv->n_ctx)
            return llmfs_errorf(err, ENOSPC,
                                "forward: position %d of sequence %d is past the context size %d",
                                p, s, kv->n_ctx);
        if (p > P->seq_len[s])
            return llmfs_errorf(err, EINVAL,
                                "forward: position %d of sequence %d leaves a gap (cache holds %d)",
                                p, s, P->seq_len[s]);
        if (kv->swa_slack && kv->seq_top[s] - p > kv->swa_slack)
            return llmfs_errorf(err, EINVAL,
                                "forward: position %d of sequence %d is behind its sliding window's cells "
                                "(it reached %d; cut it back with kv_seq_keep first)",
                                p, s, kv->seq_top[s]);
        if (p + 1 > P->seq_len[s])
            P->seq_len[s] = p + 1;
    }
    return 0;
}

static int forward_batches(model *m, kv_cache *kv, const fwd_batch *b, const int32_t *tok0, const float *embd,
                           const float *h_in, bool non_causal, float *logits_out, int32_t *ids_out,
                           float *hidden_out, bool flash_attn, llmfs_error *err);

static int forward(model *m, kv_cache *kv, const fwd_batch *b, const float *embd, const float *h_in,
                   bool non_causal, float *logits_out, int32_t *ids_out, float *hidden_out, bool flash_attn,
                   llmfs_error *err)
{
    if (b->n < 0 || !b->token || !b->pos || !b->seq)
        return llmfs_errorf(err, EINVAL, "forward: malformed batch");
    if (!m->family->attention)
        return llmfs_errorf(err, EINVAL, "forward: %s is a draft model, run only beside its target", m->hp.arch);
    if ((m->hp.mtp_block >= 0) != (h_in != NULL))
        return llmfs_errorf(err, EINVAL, m->hp.mtp_block >= 0 ? "forward: an MTP model needs hidden input rows"
                                                               : "forward: hidden input rows need an MTP model");
    if (h_in && embd)
        return llmfs_errorf(err, EINVAL, "forward: an MTP model takes no input embeddings");
    if (b->n == 0)
        return 0;
    int rc = check_batch(m, kv, b, embd, err);
    if (rc)
        return rc;
    if (non_causal && b->n > m->n_ubatch)
        return llmfs_errorf(err, E2BIG, "forward: %d non-causal tokens do not fit the micro-batch of %d",
                            b->n, m->n_ubatch);
    const char *missing = non_causal ? model_non_causal_missing(m) : NULL;
    if (missing)
        return llmfs_errorf(err, ENOTSUP, "forward: the %s backend has no non-causal attention (image tokens)",
                            missing);
    int32_t *tok0 = NULL; /* the tokens with 0 for each input row, for the lookup */
    if (embd) {
        tok0 = malloc(sizeof(int32_t) * (size_t)b->n);
        if (!tok0)
            return llmfs_errorf(err, ENOMEM, "forward: out of memory");
        for (int i = 0; i < b->n; i++)
            tok0[i] = b->token[i] < 0 ? 0 : b->token[i];
    }
    rc = forward_batches(m, kv, b, tok0, embd, h_in, non_causal, logits_out, ids_out, hidden_out, flash_attn, err);
    free(tok0);
    return rc;
}

static int forward_batches(model *m, kv_cache *kv, const fwd_batch *b, const int32_t *tok0, const float *embd,
                           const float *h_in, bool non_causal, float *logits_out, int32_t *ids_out,
                           float *hidden_out, bool flash_attn, llmfs_error *err)
{
    model_priv *P = m->scratch;
    int rc;
    if (!logits_out && !ids_out) {
        bool any = false;
        for (int i = 0; b->logits && i < b->n; i++)
            any |= b->logits[i] != 0;
        if (any)
            return llmfs_errorf(err, EINVAL, "forward: logits requested without an output buffer");
    }
    size_t out_row = 0;
    /* a ring of sliding-window cells takes at most its slack in one micro-batch; an
     * image (non-causal) must stay in one */
    const int n_ub = kv->swa_slack && kv->swa_slack < m->n_ubatch ? kv->swa_slack : m->n_ubatch;
    if (non_causal && b->n > n_ub)
        return llmfs_errorf(err, E2BIG, "forward: an image of %d tokens is larger than a micro-batch (%d)", b->n,
                            n_ub);
    for (int i0 = 0; i0 < b->n; i0 += n_ub) {
        int n = b->n - i0 < n_ub ? b->n - i0 : n_ub;
        fwd_batch ub = {n, (tok0 ? tok0 : b->token) + i0, b->pos + i0, b->seq + i0, NULL};
        fwd_input in = {embd ? embd + (size_t)i0 * m->hp.n_embd : NULL, h_in ? h_in + (size_t)i0 * m->hp.n_embd : NULL,
                        b->token + i0, non_causal};
        if (b->logits) {
            ub.logits = b->logits + i0;
        } else {
            /* no flags: the logits of the batch's last position only (none without a
             * buffer for them) */
            memset(P->flags, 0, (size_t)n);
            if (i0 + n == b->n && (logits_out || ids_out))
                P->flags[n - 1] = 1;
            ub.logits = P->flags;
        }
        float *lg = logits_out ? logits_out + out_row * (size_t)m->hp.n_vocab : NULL;
        const backend *ob = m->output->be;
        if (ids_out && (ob == m->cpu || !ob->ops->argmax)) { /* host logits, as scratch */
            int want = 0;
            for (int i = 0; i < n; i++)
                want += ub.logits[i] != 0;
            if ((size_t)want > P->id_logits_rows) {
                float *t = realloc(P->id_logits, sizeof(float) * (size_t)want * (size_t)m->hp.n_vocab);
                if (!t)
                    return llmfs_errorf(err, ENOMEM, "forward: out of memory");
                P->id_logits = t;
                P->id_logits_rows = (size_t)want;
            }
            lg = P->id_logits;
        } else if (ids_out) {
            lg = NULL; /* the output's backend picks the ids itself */
        }
        const bool stream = model_streams(m, n);
        float *hid = hidden_out ? hidden_out + (size_t)i0 * m->hp.n_embd : NULL;
        rc = forward_ubatch(m, kv, &ub, &in, lg, ids_out ? ids_out + out_row : NULL, hid, flash_attn, stream, err);
        if (rc == -ENOMEM && stream) { /* the batch gets the room back, without streaming */
            model_stream_give_up(m, err);
            rc = forward_ubatch(m, kv, &ub, &in, lg, ids_out ? ids_out + out_row : NULL, hid, flash_attn, false, err);
        }
        if (rc < 0)
            return rc;
        out_row += (size_t)rc;
        /* the cache now holds this micro-batch's cells */
        for (int i = 0; i < n; i++)
            kv_seq_wrote(kv, ub.seq[i], ub.pos[i]);
    }
    return 0;
}

int model_forward(model *m, kv_cache *kv, const fwd_batch *b, float *logits_out, bool flash_attn,
                  llmfs_error *err)
{
    return forward(m, kv, b, NULL, NULL, false, logits_out, NULL, NULL, flash_attn, err);
}

int model_forward_mtp(model *m, kv_cache *kv, const fwd_batch *b, const float *hidden_in, float *logits_out,
                      float *hidden_out, bool flash_attn, llmfs_error *err)
{
    if (m->hp.mtp_block < 0 || !hidden_in)
        return llmfs_errorf(err, EINVAL, "forward: not an MTP model, or no hidden input rows");
    return forward(m, kv, b, NULL, hidden_in, false, logits_out, NULL, hidden_out, flash_attn, err);
}

int model_forward_hidden(model *m, kv_cache *kv, const fwd_batch *b, float *logits_out, float *hidden_out,
                         bool flash_attn, llmfs_error *err)
{
    if (!hidden_out)
        return llmfs_errorf(err, EINVAL, "forward: no buffer for the hidden states");
    return forward(m, kv, b, NULL, NULL, false, logits_out, NULL, hidden_out, flash_attn, err);
}

int model_forward_ids(model *m, kv_cache *kv, const fwd_batch *b, int32_t *ids_out, bool flash_attn,
                      llmfs_error *err)
{
    if (!ids_out)
        return llmfs_errorf(err, EINVAL, "forward: no buffer for the chosen ids");
    return forward(m, kv, b, NULL, NULL, false, NULL, ids_out, NULL, flash_attn, err);
}

int model_forward_embd(model *m, kv_cache *kv, const fwd_batch *b, const float *embd, bool non_causal,
                       float *logits_out, bool flash_attn, llmfs_error *err)
{
    return forward(m, kv, b, embd, NULL, non_causal, logits_out, NULL, NULL, flash_attn, err);
}

const char *model_non_causal_missing(const model *m)
{
    for (int il = 0; il < m->hp.n_layer; il++)
        if (!m->layers[il].be->ops->non_causal)
            return m->layers[il].be->ops->name;
    return NULL;
}
