/* gemma.c — the Gemma family: Gemma 3 (gemma3) and Gemma 4 (gemma4: dense, the E models
 * with per-layer inputs and shared KV, and the MoE).
 *
 * One layer, both generations:
 *   h = rmsnorm(x) * attn_norm
 *   q, k, v = h Wq, h Wk, h Wv;  q, k RMS-normed per head with q_norm / k_norm, then
 *   rope (NEOX pairs); Gemma 4 also RMS-normalises v per head, without a weight
 *   x += rmsnorm(attention(q, k, v) Wo) * post_attention_norm
 *   x += rmsnorm(GeGLU(rmsnorm(x) * ffn_norm)) * post_ffw_norm
 * Norm weights are used as stored (Gemma 3's converter already added the 1).
 *
 * Layers come in two kinds: sliding-window (SWA) layers attend to the last n_swa
 * positions with their own rope base (and, in Gemma 4, their own head size, KV head
 * count and rotated dimensions); full layers see the whole context. Gemma 3 makes every
 * sixth layer full; Gemma 4 lists the kinds per layer.
 *
 * Gemma 4 also: attention scale 1 (the q/k norms set the scale); full layers without
 * attn_v use the raw K projection as V; full layers rotate with per-pair divisors
 * (rope_freqs, 1e30 = not rotated: "proportional" rope); the last shared_kv_layers
 * layers reuse the cache of the last KV layer of their kind; each layer's output is
 * scaled by layer_output_scale; the final logits are soft-capped. MoE layers run the
 * dense GeGLU and routed GeGLU experts side by side. E models add per-layer input
 * embeddings.
 *
 * Shapes: n tokens, E n_embd, H n_head, Hk the layer's n_head_kv, D the layer's head
 * size, F the layer's n_ff, X n_expert, K n_expert_used, Fe n_ff_exp, P the per-layer
 * input width, NL n_layer.
 */
#include "model_impl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const archs[] = {"gemma3", "gemma4", NULL};

static bool is_gemma4(const model *m) { return !strcmp(m->hp.arch, "gemma4"); }

/* A layer's kind from the file: one bool (or integer) per layer, true = sliding window. */
static int read_pattern(model *m, bool *swa, llmfs_error *err)
{
    char key[96];
    snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", m->hp.arch);
    enum gguf_vtype t;
    uint64_t n;
    const void *d = gguf_get_arr_data(m->file, key, &t, &n);
    if (!d)
        return llmfs_errorf(err, EINVAL, "model: missing %s (one entry per layer)", key);
    if (n != (uint64_t)m->hp.n_layer)
        return llmfs_errorf(err, EINVAL, "model: %s has %llu entries for %d layers", key,
                            (unsigned long long)n, m->hp.n_layer);
    for (int il = 0; il < m->hp.n_layer; il++) {
        if (t == GGUF_T_BOOL || t == GGUF_T_U8 || t == GGUF_T_I8) {
            swa[il] = ((const uint8_t *)d)[il] != 0;
        } else {
            int64_t v;
            if (!gguf_get_arr_i64(m->file, key, (uint64_t)il, &v))
                return llmfs_errorf(err, EINVAL, "model: %s must hold bools", key);
            swa[il] = v != 0;
        }
    }
    return 0;
}

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
        return llmfs_errorf(err, EINVAL, "model: %s must be a count", k);
    *out = (int)v;
    return 0;
}

static int read_hparams(model *m, llmfs_error *err)
{
    model_hparams *hp = &m->hp;
    const int NL = hp->n_layer;
    int rc;
    hp->rope.neox = true;
    hp->qk_norm = true;
    hp->ffn_act = FFN_GELU;
    hp->embd_scale = sqrtf((float)hp->n_embd); /* f32, as llama.cpp computes it */
    for (int il = 0; il < NL; il++)
        m->layers[il].rope = hp->rope;

    int n_swa = 0;
    if ((rc = count_key(m, "attention.sliding_window", 0, &n_swa, err)))
        return rc;
    float base_swa = 10000.0f;
    model_get_f32(m, "rope.freq_base_swa", &base_swa);
    if (!(base_swa > 1))
        return llmfs_errorf(err, EINVAL, "model: rope base %g of the sliding-window layers is out of range",
                            base_swa);
    /* the sliding-window layers' rope: their own base, no scaling, no divisors */
    rope_params rope_swa = hp->rope;
    rope_swa.freq_base = base_swa;
    rope_swa.freq_scale = 1.0f;
    rope_swa.l3_factor = 0;
    rope_swa.freq_factors = NULL;

    bool swa[4096];
    if (!is_gemma4(m)) {
        /* Gemma 3: converted files carry no pattern key; every period-th layer is full */
        int period = 6;
        if ((rc = model_opt_u32(m, "attention.sliding_window_pattern", 6, &period, err)))
            return rc;
        /* the 27B (62 layers) scales by 1/sqrt(n_embd/n_head), the others by 1/sqrt(D):
         * llama.cpp's rule, the file has no key for it */
        float scale = NL == 62 ? 1.0f / sqrtf((float)hp->n_embd / hp->n_head) : 1.0f / sqrtf((float)hp->head_dim);
        hp->logit_softcap = 0;
        model_get_f32(m, "final_logit_softcapping", &hp->logit_softcap);
        for (int il = 0; il < NL; il++) {
            model_layer *L = &m->layers[il];
            swa[il] = n_swa > 0 && il % period < period - 1;
            L->attn_scale = scale;
            if (swa[il]) {
                L->n_swa = n_swa;
                L->rope = rope_swa;
            }
        }
        return 0;
    }

    /* Gemma 4 */
    if ((rc = read_pattern(m, swa, err)))
        return rc;
    if (n_swa <= 0)
        return llmfs_errorf(err, EINVAL, "model: missing gemma4.attention.sliding_window");
    int d_swa, v_swa, rot_swa, shared = 0;
    if ((rc = model_need_u32(m, "attention.key_length_swa", &d_swa, err)) ||
        (rc = model_opt_u32(m, "attention.value_length_swa", d_swa, &v_swa, err)) ||
        (rc = model_opt_u32(m, "rope.dimension_count_swa", d_swa, &rot_swa, err)) ||
        (rc = count_key(m, "attention.shared_kv_layers", 0, &shared, err)) ||
        (rc = count_key(m, "embedding_length_per_layer_input", 0, &hp->n_embd_per_layer, err)))
        return rc;
    if (d_swa != v_swa)
        return llmfs_errorf(err, EINVAL, "model: sliding-window key length %d and value length %d differ",
                            d_swa, v_swa);
    if (rot_swa > d_swa)
        return llmfs_errorf(err, EINVAL, "model: rope dimension %d for sliding-window head size %d", rot_swa,
                            d_swa);
    rope_swa.n_rot = rot_swa;
    /* llama.cpp's default when the key is absent */
    hp->logit_softcap = 30.0f;
    model_get_f32(m, "final_logit_softcapping", &hp->logit_softcap);
    if (!(hp->logit_softcap >= 0))
        return llmfs_errorf(err, EINVAL, "model: final_logit_softcapping %g is negative", hp->logit_softcap);

    /* the last `shared` layers reuse the cache of the last KV layer of their kind: the
     * two layers before them, SWA then full */
    const int n_kv = NL - shared;
    if (shared >= NL)
        return llmfs_errorf(err, EINVAL, "model: %d shared-KV layers of %d", shared, NL);
    if (shared && (n_kv < 2 || !swa[n_kv - 2] || swa[n_kv - 1]))
        return llmfs_errorf(err, EINVAL,
                            "model: %d shared-KV layers need a sliding-window then a full layer before them",
                            shared);
    bool any_full = false;
    for (int il = 0; il < NL; il++) {
        model_layer *L = &m->layers[il];
        L->attn_scale = 1.0f;
        if (swa[il]) {
            L->n_swa = n_swa;
            L->head_dim = d_swa;
            L->rope = rope_swa;
        } else {
            any_full = true;
        }
        if (il >= n_kv)
            L->kv_from = swa[il] ? n_kv - 2 : n_kv - 1;
    }
    if (any_full && !hp->rope.freq_factors)
        return llmfs_errorf(err, EINVAL, "model: gemma4 full-attention layers need rope_freqs.weight");
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
        return llmfs_errorf(err, EINVAL, "model: blk.%d.layer_output_scale is not finite", il);
    return 0;
}

static int bind_layer(model *m, int il, llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    model_layer *L = &m->layers[il];
    const int E = hp->n_embd, H = hp->n_head, Hk = L->n_head_kv, D = L->head_dim, F = L->n_ff;
    const bool g4 = is_gemma4(m), own_kv = L->kv_from == il;
    int rc;

    if (il == 0 && hp->n_embd_per_layer) {
        const int PL = hp->n_embd_per_layer * hp->n_layer;
        if ((rc = model_bind(m, "per_layer_token_embd.weight", PL, hp->n_vocab, 0, true, false, &m->pl_embd, err)) ||
            (rc = model_bind(m, "per_layer_model_proj.weight", E, PL, 0, true, false, &m->pl_model_proj, err)) ||
            (rc = model_bind(m, "per_layer_proj_norm.weight", hp->n_embd_per_layer, 0, 0, false, false,
                             &m->pl_proj_norm, err)))
            return rc;
    }

    /* attention: q [E -> H*D], k v [E -> Hk*D], o [H*D -> E], norms [D] and [E] */
    if ((rc = model_bind_blk(m, il, "attn_norm.weight", E, 0, 0, false, false, &L->attn_norm, err)) ||
        (rc = model_bind_blk(m, il, "attn_q.weight", E, H * D, 0, true, false, &L->wq, err)) ||
        (rc = model_bind_blk(m, il, "attn_q_norm.weight", D, 0, 0, false, false, &L->q_norm, err)) ||
        (rc = model_bind_blk(m, il, "attn_output.weight", H * D, E, 0, true, false, &L->wo, err)) ||
        (rc = model_bind_blk(m, il, "post_attention_norm.weight", E, 0, 0, false, false, &L->post_attn_norm, err)))
        return rc;
    if (own_kv &&
        ((rc = model_bind_blk(m, il, "attn_k.weight", E, Hk * D, 0, true, false, &L->wk, err)) ||
         (rc = model_bind_blk(m, il, "attn_k_norm.weight", D, 0, 0, false, false, &L->k_norm, err)) ||
         /* Gemma 4's full layers may have none: V is then K's projection */
         (rc = model_bind_blk(m, il, "attn_v.weight", E, Hk * D, 0, true, g4, &L->wv, err))))
        return rc;
    if (g4 && (rc = bind_out_scale(m, il, err)))
        return rc;

    /* feed-forward: gate up [E -> F], down [F -> E], norms [E] */
    if ((rc = model_bind_blk(m, il, "ffn_norm.weight", E, 0, 0, false, false, &L->ffn_norm, err)) ||
        (rc = model_bind_blk(m, il, "post_ffw_norm.weight", E, 0, 0, false, false, &L->post_ffn_norm, err)))
        return rc;
    if (F > 0 &&
        ((rc = model_bind_blk(m, il, "ffn_gate.weight", E, F, 0, true, false, &L->w_gate, err)) ||
         (rc = model_bind_blk(m, il, "ffn_up.weight", E, F, 0, true, false, &L->w_up, err)) ||
         (rc = model_bind_blk(m, il, "ffn_down.weight", F, E, 0, true, false, &L->w_down, err))))
        return rc;
    if (hp->n_expert) {
        /* router [E -> X] with its input scale [E]; experts: gate and up fused
         * [X][2*Fe][E] (gate rows first), down [X][E][Fe] with a scale per expert [X] */
        const int X = hp->n_expert, Fe = hp->n_ff_exp;
        if (F <= 0)
            return llmfs_errorf(err, EINVAL, "model: gemma4 MoE layer %d without the dense feed-forward", il);
        if ((rc = model_bind_blk(m, il, "ffn_gate_inp.weight", E, X, 0, true, false, &L->gate_inp, err)) ||
            (rc = model_bind_blk(m, il, "ffn_gate_inp.scale", E, 0, 0, false, false, &L->gate_inp_scale, err)) ||
            (rc = model_bind_blk(m, il, "pre_ffw_norm_2.weight", E, 0, 0, false, false, &L->ffn_norm_exps, err)) ||
            (rc = model_bind_blk(m, il, "post_ffw_norm_1.weight", E, 0, 0, false, false, &L->post_ffn_norm_dense, err)) ||
            (rc = model_bind_blk(m, il, "post_ffw_norm_2.weight", E, 0, 0, false, false, &L->post_ffn_norm_exps, err)) ||
            (rc = model_bind_blk(m, il, "ffn_gate_up_exps.weight", E, 2 * Fe, X, true, false, &L->gate_exps, err)) ||
            (rc = model_bind_blk(m, il, "ffn_down_exps.weight", Fe, E, X, true, false, &L->down_exps, err)) ||
            (rc = model_bind_blk(m, il, "ffn_down_exps.scale", X, 0, 0, false, false, &L->down_exps_scale, err)))
            return rc;
    } else if (F <= 0) {
        return llmfs_errorf(err, EINVAL, "model: layer %d has no feed-forward", il);
    }

    /* per-layer input block: gate [E -> P], proj [P -> E], norm [E] */
    if (hp->n_embd_per_layer) {
        const int P = hp->n_embd_per_layer;
        if ((rc = model_bind_blk(m, il, "inp_gate.weight", E, P, 0, true, false, &L->pl_gate, err)) ||
            (rc = model_bind_blk(m, il, "proj.weight", P, E, 0, true, false, &L->pl_proj, err)) ||
            (rc = model_bind_blk(m, il, "post_norm.weight", E, 0, 0, false, false, &L->pl_norm, err)))
            return rc;
    }
    return 0;
}

/* x = tok_embd[t] * sqrt(E); E models: the per-layer inputs
 *   pl[t][l] = (rmsnorm((x W_plproj)[l] / sqrt(E)) * per_layer_proj_norm
 *               + per_layer_token_embd[t][l] * sqrt(P)) / sqrt(2) */
static void embed(model *m, fwd_bufs *B, int n)
{
    const model_hparams *hp = &m->hp;
    backend *be = B->be;
    const struct backend_ops *o = be->ops;
    o->scale(be, B->x, hp->embd_scale, (int64_t)n * hp->n_embd);           /* x [n][E] */
    if (!hp->n_embd_per_layer)
        return;
    const int P = hp->n_embd_per_layer, PL = P * hp->n_layer;
    float *proj = B->pl + (size_t)n * PL;                                    /* second half: scratch */
    o->get_rows(be, B->pl, m->pl_embd, n);                                   /* pl [n][NL*P] */
    o->scale(be, B->pl, sqrtf((float)P), (int64_t)n * PL);
    o->matmul(be, proj, m->pl_model_proj, B->x, n);                          /* proj [n][NL*P] */
    o->scale(be, proj, 1.0f / sqrtf((float)hp->n_embd), (int64_t)n * PL);
    o->rmsnorm(be, proj, proj, m->pl_proj_norm->data, n * hp->n_layer, P, hp->rms_eps);
    o->add(be, B->pl, proj, (int64_t)n * PL);
    o->scale(be, B->pl, 1.0f / sqrtf(2.0f), (int64_t)n * PL);
}

/* x += rmsnorm(attn(norm(x))) * post_attention_norm */
static void attention(model *m, kv_cache *kv, int il, fwd_bufs *B, int n, bool flash)
{
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->layers[il];
    const int E = hp->n_embd, H = hp->n_head, Hk = L->n_head_kv, D = L->head_dim;
    const bool own_kv = L->kv_from == il;
    const float eps = hp->rms_eps;
    const attn_params ap = {.n_head = H, .n_head_kv = Hk, .head_dim = D, .scale = L->attn_scale,
                            .flash = flash, .n_swa = L->n_swa};
    backend *be = B->be;
    const struct backend_ops *o = be->ops;

    o->rmsnorm(be, B->xb, B->x, L->attn_norm->data, n, E, eps);            /* xb [n][E] */
    if (!own_kv)
        o->matmul(be, B->q, L->wq, B->xb, n);                               /* q [n][H*D] */
    else if (L->wv)
        model_matmul3(be, B->q, L->wq, B->k, L->wk, B->v, L->wv, B->xb, n); /* k v [n][Hk*D] */
    else {
        model_matmul3(be, B->q, L->wq, B->k, L->wk, NULL, NULL, B->xb, n);
        o->copy2d(be, B->v, Hk * D, B->k, Hk * D, n, Hk * D);              /* V = K's projection */
    }
    o->rmsnorm(be, B->q, B->q, L->q_norm->data, n * H, D, eps);            /* per head [n*H][D] */
    o->rope(be, B->q, n, H, D, &L->rope);
    if (kv->rot_k)                                                          /* q.k unchanged */
        o->hadamard(be, B->q, (int64_t)n * H * D, kv->rot_k);
    if (own_kv) {
        o->rmsnorm(be, B->k, B->k, L->k_norm->data, n * Hk, D, eps);       /* [n*Hk][D] */
        if (is_gemma4(m))
            o->rmsnorm(be, B->v, B->v, NULL, n * Hk, D, eps);               /* no weight */
        o->rope(be, B->k, n, Hk, D, &L->rope);
        if (kv->rot_k)
            o->hadamard(be, B->k, (int64_t)n * Hk * D, kv->rot_k);
        if (kv->rot_v)
            o->hadamard(be, B->v, (int64_t)n * Hk * D, kv->rot_v);
        o->kv_store(be, kv, il, B->k, B->v, n);
    }
    o->attention(be, B->att, B->q, kv, L->kv_from, n, &ap);                 /* att [n][H*D] */
    if (kv->rot_v)                                                          /* back from rotated V */
        o->hadamard(be, B->att, (int64_t)n * H * D, kv->rot_v);
    o->matmul(be, B->xb, L->wo, B->att, n);                                 /* xb [n][E] */
    o->rmsnorm(be, B->xb, B->xb, L->post_attn_norm->data, n, E, eps);
    o->add(be, B->x, B->xb, (int64_t)n * E);                                /* x += xb */
}

/* out [n][E] = down(gelu(gate h) * up h), h = rmsnorm(x) * ffn_norm */
static void dense_geglu(const model_hparams *hp, const model_layer *L, fwd_bufs *B, float *out, int n)
{
    backend *be = B->be;
    const struct backend_ops *o = be->ops;
    o->rmsnorm(be, B->xb, B->x, L->ffn_norm->data, n, hp->n_embd, hp->rms_eps); /* xb [n][E] */
    model_matmul3(be, B->hb, L->w_gate, B->hb2, L->w_up, NULL, NULL, B->xb, n); /* hb, hb2 [n][F] */
    o->geglu(be, B->hb, B->hb, B->hb2, (int64_t)n * L->n_ff);
    o->matmul(be, out, L->w_down, B->hb, n);                                     /* out [n][E] */
}

/* x += rmsnorm(ffn(x)) * post_ffw_norm, then the per-layer input block, then the
 * layer's output scale */
static void ffn(model *m, const model_layer *L, fwd_bufs *B, int n)
{
    const model_hparams *hp = &m->hp;
    const int E = hp->n_embd;
    const float eps = hp->rms_eps;
    backend *be = B->be;
    const struct backend_ops *o = be->ops;

    if (L->gate_inp) {
        /* the routed experts first (their output stays in xb2 while the dense block
         * uses xb): router on rmsnorm(x) / sqrt(E) * gate_inp_scale, softmax over all
         * experts, top K renormalised, each expert's output times its scale */
        const int X = hp->n_expert, K = hp->n_expert_used;
        o->rmsnorm(be, B->xb, B->x, L->gate_inp_scale->data, n, E, eps);          /* xb [n][E] */
        o->scale(be, B->xb, 1.0f / sqrtf((float)E), (int64_t)n * E);
        o->matmul(be, B->router, L->gate_inp, B->xb, n);                          /* router [n][X] */
        o->topk_softmax(be, B->ids, B->wts, B->router, n, X, K, true);           /* ids, wts [n][K] */
        o->scale_ids(be, B->wts, B->ids, L->down_exps_scale->data, (int64_t)n * K);
        o->rmsnorm(be, B->xb, B->x, L->ffn_norm_exps->data, n, E, eps);           /* xb [n][E] */
        model_moe_experts(m, L, B, n);                                            /* xb2 [n][E] */
        o->rmsnorm(be, B->xb2, B->xb2, L->post_ffn_norm_exps->data, n, E, eps);
        dense_geglu(hp, L, B, B->xb, n);                                          /* xb [n][E] */
        o->rmsnorm(be, B->xb, B->xb, L->post_ffn_norm_dense->data, n, E, eps);
        o->add(be, B->xb, B->xb2, (int64_t)n * E);                                /* both branches */
    } else {
        dense_geglu(hp, L, B, B->xb, n);                                          /* xb [n][E] */
    }
    o->rmsnorm(be, B->xb, B->xb, L->post_ffn_norm->data, n, E, eps);
    o->add(be, B->x, B->xb, (int64_t)n * E);                                      /* x += xb */

    if (L->pl_gate) {
        /* x += rmsnorm((gelu(x W_gate) * pl[t][il]) W_proj) * post_norm */
        const int P = hp->n_embd_per_layer;
        o->matmul(be, B->hb, L->pl_gate, B->x, n);                                /* hb [n][P] */
        o->copy2d(be, B->hb2, P, B->pl + (size_t)L->il * P, (int64_t)P * hp->n_layer, n, P); /* hb2 [n][P] */
        o->geglu(be, B->hb, B->hb, B->hb2, (int64_t)n * P);
        o->matmul(be, B->xb, L->pl_proj, B->hb, n);                               /* xb [n][E] */
        o->rmsnorm(be, B->xb, B->xb, L->pl_norm->data, n, E, eps);
        o->add(be, B->x, B->xb, (int64_t)n * E);
    }
    if (L->out_scale != 1.0f)
        o->scale(be, B->x, L->out_scale, (int64_t)n * E);
}

const model_family family_gemma = {archs, read_hparams, bind_layer, attention, ffn, embed};
