/* qwenhybrid.c — hybrid Qwen: Qwen3.5 / Qwen3.6 (qwen35 dense, qwen35moe) and
 * Qwen3-Next / Qwen3-Coder-Next (qwen3next).
 *
 * Most layers are Gated DeltaNet layers: instead of attending over a KV cache they keep
 * a fixed-size recurrent state per sequence (a short causal conv over the projected
 * inputs, and per value head a [d][d] matrix updated by the gated delta rule). Every
 * full_attention_interval-th layer is full attention with an output gate. The
 * feed-forward is SwiGLU (qwen35) or routed experts plus a sigmoid-gated shared expert.
 *
 * One layer: x += mixer(rmsnorm(x) * attn_norm); x += ffn(rmsnorm(x) * post_attention_norm).
 *
 * Shapes: n tokens, E n_embd, H n_head, Hk n_head_kv, D head_dim (attention);
 * DeltaNet: Nk K heads (ssm.group_count), Nv V heads (ssm.time_step_rank), d head size
 * (ssm.state_size, for keys and values), kd = Nk*d, vd = Nv*d, C = 2*kd + vd conv
 * channels, Kc conv taps; X experts, K used, Fe expert ff, Fs shared-expert ff.
 *
 * The MTP (nextn) block that Qwen3.5 files append after the trunk is bound (checked and
 * kept with the model's tensors) but a plain forward pass never runs it. Loaded as an
 * MTP model (model_opts.mtp) the file is that block alone: one gated attention layer
 * with the block's FFN, fed u = eh_proj [rmsnorm(e) * enorm ; rmsnorm(h) * hnorm] of
 * the token's embedding e and the target's final hidden state h of the position before
 * (mtp_input), its output norm nextn.shared_head_norm. A separate MTP file (mtp-*.gguf:
 * the full model's keys, only token_embd, output_norm, output and the MTP block's
 * tensors) loads the same way.
 */
#include "model_impl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const archs[] = {"qwen35", "qwen35moe", "qwen3next", NULL};

/* qwen35*: V head j reads K head j % Nk (the converter stores V heads tiled);
 * qwen3next: j / (Nv/Nk) (grouped). */
static bool tiled(const model *m) { return strcmp(m->hp.arch, "qwen3next") != 0; }

/* Per-token widths of the scratch regions (fwd_bufs.extra is [n_ubatch][n_extra]; each
 * region below is [n_ubatch][width] of it). */
typedef struct regions {
    float *raw;   /* [n][C + vd] qwen3next's fused ssm_in output, grouped per K head */
    float *qkv;   /* [n][C] conv input: q | k | v */
    float *z;     /* [n][vd] output gate */
    float *ba;    /* [n][2*Nv] qwen3next's fused ssm_ba output */
    float *g;     /* [n][Nv] log decay */
    float *beta;  /* [n][Nv] */
    float *conv;  /* [n][C] silu(conv(qkv)), then q and k L2-normalised */
    float *o;     /* [n][vd] delta rule output, then gated-normed */
} regions;

static size_t deltanet_width(const model_hparams *hp)
{
    size_t C = (size_t)hp->ssm_conv_dim, vd = (size_t)hp->ssm_n_v * hp->ssm_d_state, nv = (size_t)hp->ssm_n_v;
    return (C + vd) + C + vd + 2 * nv + nv + nv + C + vd;
}

static regions deltanet_regions(const model *m, fwd_bufs *B)
{
    const model_hparams *hp = &m->hp;
    size_t n = (size_t)m->n_ubatch, C = (size_t)hp->ssm_conv_dim,
           vd = (size_t)hp->ssm_n_v * hp->ssm_d_state, nv = (size_t)hp->ssm_n_v;
    regions r;
    float *p = B->extra;
    r.raw = p, p += n * (C + vd);
    r.qkv = p, p += n * C;
    r.z = p, p += n * vd;
    r.ba = p, p += n * 2 * nv;
    r.g = p, p += n * nv;
    r.beta = p, p += n * nv;
    r.conv = p, p += n * C;
    r.o = p;
    return r;
}

/* Which trunk layers are Gated DeltaNet layers: the per-layer array
 * <arch>.attention.recurrent_layers (bool or integer, one entry per trunk layer) when the
 * file has one, else every layer but each full_attention_interval-th. 1 recurrent, 0 not,
 * -1 the array is there but has no entry for il. */
static int layer_recurrent(const model *m, int il, int interval)
{
    char key[96];
    snprintf(key, sizeof key, "%s.attention.recurrent_layers", m->hp.arch);
    enum gguf_vtype ty;
    uint64_t n = 0;
    const void *a = gguf_get_arr_data(m->file, key, &ty, &n);
    if (!a)
        return (il + 1) % interval != 0;
    if ((uint64_t)il >= n)
        return -1;
    if (ty == GGUF_T_BOOL)
        return ((const uint8_t *)a)[il] != 0;
    int64_t v = 0;
    if (!gguf_get_arr_i64(m->file, key, (uint64_t)il, &v))
        return -1;
    return v != 0;
}

static int read_hparams(model *m, llmfs_error *err)
{
    model_hparams *hp = &m->hp;
    int rc, inner, interval, nextn;
    hp->rope.neox = true;
    hp->qk_norm = true;
    char key[96];
    uint32_t u = 0;
    snprintf(key, sizeof key, "%s.nextn_predict_layers", hp->arch);
    gguf_get_u32(m->file, key, &u); /* absent or 0: no MTP block */
    nextn = (int)(u > 64 ? 64 : u);
    if (nextn >= hp->n_layer)
        return llmfs_errorf(err, EINVAL, "model: %d nextn layers of %d blocks", nextn, hp->n_layer);
    hp->n_layer_mtp = nextn;
    hp->n_layer -= nextn; /* block_count counts the MTP blocks after the trunk */
    if (hp->mtp_block >= 0) {
        /* an MTP model: the first MTP block as layer 0 (llama.cpp runs exactly one) */
        if (!nextn)
            return llmfs_errorf(err, EINVAL, "model: %s has no MTP (nextn) head (%s.nextn_predict_layers is 0)",
                                hp->name[0] ? hp->name : hp->arch, hp->arch);
        hp->mtp_block = hp->n_layer;
        model_layer L0 = m->layers[hp->mtp_block];
        L0.il = 0;
        L0.kv_from = 0;
        m->layers[0] = L0;
        hp->n_layer = 1;
    }
    if ((rc = model_need_u32(m, "ssm.conv_kernel", &hp->ssm_d_conv, err)) ||
        (rc = model_need_u32(m, "ssm.state_size", &hp->ssm_d_state, err)) ||
        (rc = model_need_u32(m, "ssm.group_count", &hp->ssm_n_k, err)) ||
        (rc = model_need_u32(m, "ssm.time_step_rank", &hp->ssm_n_v, err)) ||
        (rc = model_need_u32(m, "ssm.inner_size", &inner, err)) ||
        (rc = model_opt_u32(m, "full_attention_interval", 4, &interval, err)) ||
        (rc = model_opt_u32(m, "expert_shared_feed_forward_length", 0, &hp->n_ff_shexp, err)))
        return rc;
    if (hp->ssm_n_v % hp->ssm_n_k)
        return llmfs_errorf(err, EINVAL, "model: %d V heads are not a multiple of %d K heads",
                            hp->ssm_n_v, hp->ssm_n_k);
    /* the state of a V head is d x d: values are as long as keys */
    if (inner != hp->ssm_d_state * hp->ssm_n_v)
        return llmfs_errorf(err, EINVAL, "model: ssm.inner_size %d is not state size %d x %d V heads",
                            inner, hp->ssm_d_state, hp->ssm_n_v);
    if (hp->ssm_d_conv < 2 || hp->ssm_d_conv > 16)
        return llmfs_errorf(err, EINVAL, "model: ssm.conv_kernel %d is out of range", hp->ssm_d_conv);
    if (tiled(m)) {
        /* Qwen3.5 rotates with M-RoPE sections; for text (t = h = w = position) every
         * rotary pair that falls in a t/h/w section turns as plain NEOX, which is what
         * runs here. Pairs in the fourth section would stay unrotated: refused. */
        snprintf(key, sizeof key, "%s.rope.dimension_sections", hp->arch);
        enum gguf_vtype ty;
        uint64_t ns = 0;
        if (!gguf_get_arr_data(m->file, key, &ty, &ns) || ns < 3)
            return llmfs_errorf(err, EINVAL, "model: missing %s", key);
        int64_t sec[4] = {0, 0, 0, 0};
        for (uint64_t i = 0; i < ns && i < 4; i++)
            gguf_get_arr_i64(m->file, key, i, &sec[i]);
        if (sec[0] + sec[1] + sec[2] < hp->rope.n_rot / 2)
            return llmfs_errorf(err, EINVAL, "model: M-RoPE sections [%lld %lld %lld %lld] leave rotary pairs to the extra section",
                                (long long)sec[0], (long long)sec[1], (long long)sec[2], (long long)sec[3]);
    }
    hp->ssm_conv_dim = 2 * hp->ssm_n_k * hp->ssm_d_state + hp->ssm_n_v * hp->ssm_d_state;
    if (interval < 1)
        return llmfs_errorf(err, EINVAL, "model: full_attention_interval %d", interval);
    hp->n_recurrent = 0;
    for (int il = 0; il < hp->n_layer && hp->mtp_block < 0; il++) {
        int r = layer_recurrent(m, il, interval);
        if (r < 0)
            return llmfs_errorf(err, EINVAL, "model: %s.attention.recurrent_layers has no entry for layer %d",
                                hp->arch, il);
        hp->n_recurrent += r;
    }

    /* scratch: the largest of a DeltaNet mixer, a gated attention mixer, a shared expert */
    size_t w = deltanet_width(hp);
    size_t wa = 3 * (size_t)hp->n_head * hp->head_dim;          /* q|gate [2*H*D], gate [H*D] */
    size_t wf = 2 * (size_t)hp->n_ff_shexp + hp->n_embd + 1;    /* hs, hs2, sh, gate logit */
    w = w > wa ? w : wa;
    w = w > wf ? w : wf;
    if (hp->mtp_block >= 0) /* the input step's [e ; h] */
        w = w > 2 * (size_t)hp->n_embd ? w : 2 * (size_t)hp->n_embd;
    hp->n_extra = (int)w;
    return 0;
}

/* The gated attention block's tensors (trunk attention layers and the MTP block). */
static int bind_attention(model *m, int il, model_layer *L, llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    const int E = hp->n_embd, H = hp->n_head, Hk = hp->n_head_kv, D = hp->head_dim;
    int rc;
    if ((rc = model_bind_blk(m, il, "attn_q.weight", E, 2 * H * D, 0, true, false, &L->wq, err)) ||
        (rc = model_bind_blk(m, il, "attn_k.weight", E, Hk * D, 0, true, false, &L->wk, err)) ||
        (rc = model_bind_blk(m, il, "attn_v.weight", E, Hk * D, 0, true, false, &L->wv, err)) ||
        (rc = model_bind_blk(m, il, "attn_output.weight", H * D, E, 0, true, false, &L->wo, err)) ||
        (rc = model_bind_blk(m, il, "attn_q_norm.weight", D, 0, 0, false, false, &L->q_norm, err)) ||
        (rc = model_bind_blk(m, il, "attn_k_norm.weight", D, 0, 0, false, false, &L->k_norm, err)))
        return rc;
    return 0;
}

static int bind_ffn(model *m, int il, model_layer *L, llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    const int E = hp->n_embd;
    int rc;
    if ((rc = model_bind_blk(m, il, "post_attention_norm.weight", E, 0, 0, false, false, &L->ffn_norm, err)))
        return rc;
    if (!hp->n_expert) {
        const int F = hp->n_ff;
        if ((rc = model_bind_blk(m, il, "ffn_gate.weight", E, F, 0, true, false, &L->w_gate, err)) ||
            (rc = model_bind_blk(m, il, "ffn_up.weight", E, F, 0, true, false, &L->w_up, err)) ||
            (rc = model_bind_blk(m, il, "ffn_down.weight", F, E, 0, true, false, &L->w_down, err)))
            return rc;
        return 0;
    }
    const int X = hp->n_expert, Fe = hp->n_ff_exp, Fs = hp->n_ff_shexp;
    if ((rc = model_bind_blk(m, il, "ffn_gate_inp.weight", E, X, 0, true, false, &L->gate_inp, err)) ||
        (rc = model_bind_blk(m, il, "ffn_gate_exps.weight", E, Fe, X, true, false, &L->gate_exps, err)) ||
        (rc = model_bind_blk(m, il, "ffn_up_exps.weight", E, Fe, X, true, false, &L->up_exps, err)) ||
        (rc = model_bind_blk(m, il, "ffn_down_exps.weight", Fe, E, X, true, false, &L->down_exps, err)))
        return rc;
    if (!Fs)
        return 0;
    /* the shared expert sits where a dense FFN would (w_gate/up/down), so it is placed
     * and streamed with the layer's feed-forward block; its gate is one logit per token */
    if ((rc = model_bind_blk(m, il, "ffn_gate_inp_shexp.weight", E, 1, 0, true, false, &L->gate_inp_shexp, err)) ||
        (rc = model_bind_blk(m, il, "ffn_gate_shexp.weight", E, Fs, 0, true, false, &L->w_gate, err)) ||
        (rc = model_bind_blk(m, il, "ffn_up_shexp.weight", E, Fs, 0, true, false, &L->w_up, err)) ||
        (rc = model_bind_blk(m, il, "ffn_down_shexp.weight", Fs, E, 0, true, false, &L->w_down, err)))
        return rc;
    return 0;
}

/* The MTP blocks: an attention block and FFN plus the nextn projections. Bound so a
 * malformed one is refused and the weights stay with the model (for drafting later). */
static int bind_mtp(model *m, llmfs_error *err)
{
    const int E = m->hp.n_embd;
    for (int b = m->hp.n_layer; b < m->hp.n_layer + m->hp.n_layer_mtp; b++) {
        model_layer L = {0};
        tensor *t;
        int rc;
        if ((rc = model_bind_blk(m, b, "attn_norm.weight", E, 0, 0, false, false, &L.attn_norm, err)) ||
            (rc = bind_attention(m, b, &L, err)) || (rc = bind_ffn(m, b, &L, err)) ||
            (rc = model_bind_blk(m, b, "nextn.eh_proj.weight", 2 * E, E, 0, true, false, &t, err)) ||
            (rc = model_bind_blk(m, b, "nextn.enorm.weight", E, 0, 0, false, false, &t, err)) ||
            (rc = model_bind_blk(m, b, "nextn.hnorm.weight", E, 0, 0, false, false, &t, err)) ||
            (rc = model_bind_blk(m, b, "nextn.shared_head_norm.weight", E, 0, 0, false, true, &t, err)))
            return rc;
    }
    return 0;
}

/* An MTP model's layer 0: the MTP block blk.<mtp_block> with its input step; its final
 * norm and, where the file has them, its own embeddings and output head replace the
 * trunk's. */
static int bind_mtp_model(model *m, llmfs_error *err)
{
    const int E = m->hp.n_embd, V = m->hp.n_vocab, b = m->hp.mtp_block;
    model_layer *L = &m->layers[0];
    tensor *shn, *emb, *head;
    int rc;
    L->recurrent = false;
    if ((rc = model_bind_blk(m, b, "attn_norm.weight", E, 0, 0, false, false, &L->attn_norm, err)) ||
        (rc = bind_attention(m, b, L, err)) || (rc = bind_ffn(m, b, L, err)) ||
        (rc = model_bind_blk(m, b, "nextn.eh_proj.weight", 2 * E, E, 0, true, false, &L->eh_proj, err)) ||
        (rc = model_bind_blk(m, b, "nextn.enorm.weight", E, 0, 0, false, false, &L->enorm, err)) ||
        (rc = model_bind_blk(m, b, "nextn.hnorm.weight", E, 0, 0, false, false, &L->hnorm, err)) ||
        (rc = model_bind_blk(m, b, "nextn.shared_head_norm.weight", E, 0, 0, false, true, &shn, err)) ||
        (rc = model_bind_blk(m, b, "nextn.embed_tokens.weight", E, V, 0, true, true, &emb, err)) ||
        (rc = model_bind_blk(m, b, "nextn.shared_head_head.weight", E, V, 0, true, true, &head, err)))
        return rc;
    if (shn)
        m->output_norm = shn;
    if (emb)
        m->tok_embd = emb;
    if (head)
        m->output = head;
    return 0;
}

static int bind_layer(model *m, int il, llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    const int E = hp->n_embd, d = hp->ssm_d_state, Nk = hp->ssm_n_k, Nv = hp->ssm_n_v;
    const int kd = Nk * d, vd = Nv * d, C = hp->ssm_conv_dim;
    model_layer *L = &m->layers[il];
    int interval = 4, rc;
    if (hp->mtp_block >= 0)
        return bind_mtp_model(m, err);
    model_opt_u32(m, "full_attention_interval", 4, &interval, NULL);
    L->recurrent = layer_recurrent(m, il, interval) > 0;
    if ((rc = model_bind_blk(m, il, "attn_norm.weight", E, 0, 0, false, false, &L->attn_norm, err)))
        return rc;
    if (!L->recurrent) {
        if ((rc = bind_attention(m, il, L, err)))
            return rc;
    } else {
        /* qwen3next may carry the fused legacy projection instead of attn_qkv + attn_gate */
        if ((rc = model_bind_blk(m, il, "attn_qkv.weight", E, C, 0, true, true, &L->wqkv, err)))
            return rc;
        if (L->wqkv)
            rc = model_bind_blk(m, il, "attn_gate.weight", E, vd, 0, true, false, &L->wz, err);
        else
            rc = model_bind_blk(m, il, "ssm_in.weight", E, 2 * kd + 2 * vd, 0, true, false, &L->ssm_in, err);
        if (rc)
            return rc;
        if ((rc = model_bind_blk(m, il, "ssm_ba.weight", E, 2 * Nv, 0, true, true, &L->ssm_ba, err)))
            return rc;
        if (!L->ssm_ba &&
            ((rc = model_bind_blk(m, il, "ssm_beta.weight", E, Nv, 0, true, false, &L->ssm_beta, err)) ||
             (rc = model_bind_blk(m, il, "ssm_alpha.weight", E, Nv, 0, true, false, &L->ssm_alpha, err))))
            return rc;
        if ((rc = model_bind_blk(m, il, "ssm_conv1d.weight", hp->ssm_d_conv, C, 0, false, false, &L->ssm_conv, err)) ||
            (rc = model_bind_blk(m, il, "ssm_dt.bias", Nv, 0, 0, false, false, &L->ssm_dt, err)) ||
            (rc = model_bind_blk(m, il, "ssm_a", Nv, 0, 0, false, false, &L->ssm_a, err)) ||
            (rc = model_bind_blk(m, il, "ssm_norm.weight", d, 0, 0, false, false, &L->ssm_norm, err)) ||
            (rc = model_bind_blk(m, il, "ssm_out.weight", vd, E, 0, true, false, &L->ssm_out, err)))
            return rc;
    }
    if ((rc = bind_ffn(m, il, L, err)))
        return rc;
    if (il == hp->n_layer - 1 && hp->n_layer_mtp)
        return bind_mtp(m, err);
    return 0;
}

/* x += W_o (attention(rope(q), rope(k), v) * sigmoid(gate)) of rmsnorm(x) */
static void attention_layer(model *m, kv_cache *kv, int il, fwd_bufs *B, int n, bool flash)
{
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->layers[il];
    const int E = hp->n_embd, H = hp->n_head, Hk = hp->n_head_kv, D = hp->head_dim;
    const float eps = hp->rms_eps;
    const attn_params ap = {.n_head = H, .n_head_kv = Hk, .head_dim = D, .scale = 1.0f / sqrtf((float)D), .flash = flash};
    backend *be = B->be;
    const struct backend_ops *o = be->ops;
    float *qg = B->extra;                                               /* [n][H][2][D] */
    float *gate = B->extra + (size_t)m->n_ubatch * 2 * H * D;           /* [n][H*D] */

    o->rmsnorm(be, B->xb, B->x, L->attn_norm->data, n, E, eps);         /* xb [n][E] */
    model_matmul3(be, qg, L->wq, B->k, L->wk, B->v, L->wv, B->xb, n);   /* qg [n][2*H*D], k v [n][Hk*D] */
    /* each head's D query rows are followed by its D gate rows */
    o->copy_rows(be, B->q, D, qg, 2 * D, n * H, D);                     /* q [n*H][D] */
    o->copy_rows(be, gate, D, qg + D, 2 * D, n * H, D);                 /* gate [n*H][D] */
    o->rmsnorm(be, B->q, B->q, L->q_norm->data, n * H, D, eps);
    o->rmsnorm(be, B->k, B->k, L->k_norm->data, n * Hk, D, eps);
    o->rope(be, B->q, n, H, D, &hp->rope);                              /* the first n_rot dims of each head */
    o->rope(be, B->k, n, Hk, D, &hp->rope);
    if (kv->rot_k) {
        o->hadamard(be, B->q, (int64_t)n * H * D, kv->rot_k);
        o->hadamard(be, B->k, (int64_t)n * Hk * D, kv->rot_k);
    }
    if (kv->rot_v)
        o->hadamard(be, B->v, (int64_t)n * Hk * D, kv->rot_v);
    o->kv_store(be, kv, il, B->k, B->v, n);
    o->attention(be, B->att, B->q, kv, il, n, &ap);                     /* att [n][H*D] */
    if (kv->rot_v)
        o->hadamard(be, B->att, (int64_t)n * H * D, kv->rot_v);
    o->sigmoid_mul(be, B->att, gate, n, H * D, false);                  /* att *= sigmoid(gate) */
    o->matmul(be, B->xb, L->wo, B->att, n);                             /* xb [n][E] */
    o->add(be, B->x, B->xb, (int64_t)n * E);
}

/* x += W_out gated_norm(delta_rule(l2(silu(conv(W_qkv h))))) of h = rmsnorm(x) */
static void deltanet_layer(model *m, kv_cache *kv, int il, fwd_bufs *B, int n)
{
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->layers[il];
    const int E = hp->n_embd, d = hp->ssm_d_state, Nk = hp->ssm_n_k, Nv = hp->ssm_n_v;
    const int kd = Nk * d, vd = Nv * d, C = hp->ssm_conv_dim, r = Nv / Nk;
    const float eps = hp->rms_eps;
    backend *be = B->be;
    const struct backend_ops *o = be->ops;
    regions R = deltanet_regions(m, B);

    o->rmsnorm(be, B->xb, B->x, L->attn_norm->data, n, E, eps);         /* xb [n][E] */
    if (L->wqkv) {
        model_matmul3(be, R.qkv, L->wqkv, R.z, L->wz, NULL, NULL, B->xb, n); /* qkv [n][C], z [n][vd] */
    } else {
        /* legacy fused projection, grouped per K head g: q_g [d] | k_g [d] | v_g [r*d] | z_g [r*d] */
        const int gw = 2 * d + 2 * r * d;
        o->matmul(be, R.raw, L->ssm_in, B->xb, n);                      /* raw [n][C + vd] */
        for (int g = 0; g < Nk; g++) {
            const float *src = R.raw + (size_t)g * gw;
            o->copy_rows(be, R.qkv + (size_t)g * d, C, src, C + vd, n, d);
            o->copy_rows(be, R.qkv + kd + (size_t)g * d, C, src + d, C + vd, n, d);
            o->copy_rows(be, R.qkv + 2 * kd + (size_t)g * r * d, C, src + 2 * d, C + vd, n, r * d);
            o->copy_rows(be, R.z + (size_t)g * r * d, vd, src + 2 * d + r * d, C + vd, n, r * d);
        }
    }
    if (L->ssm_ba) {
        /* fused, grouped per K head g: beta_g [r] | alpha_g [r] */
        o->matmul(be, R.ba, L->ssm_ba, B->xb, n);                       /* ba [n][2*Nv] */
        for (int g = 0; g < Nk; g++) {
            o->copy_rows(be, R.beta + (size_t)g * r, Nv, R.ba + (size_t)g * 2 * r, 2 * Nv, n, r);
            o->copy_rows(be, R.g + (size_t)g * r, Nv, R.ba + (size_t)g * 2 * r + r, 2 * Nv, n, r);
        }
    } else {
        o->matmul(be, R.beta, L->ssm_beta, B->xb, n);                   /* beta [n][Nv] */
        o->matmul(be, R.g, L->ssm_alpha, B->xb, n);                     /* g [n][Nv] */
    }
    o->delta_gates(be, R.g, R.beta, L->ssm_dt->data, L->ssm_a->data, n, Nv); /* g = log decay, beta in (0,1) */
    o->ssm_conv(be, R.conv, R.qkv, C, L->ssm_conv->data, kv, il, n, C, hp->ssm_d_conv); /* conv [n][C] */
    o->l2norm(be, R.conv, n, 2 * Nk, d, C, eps);                        /* q, k heads to unit length */
    /* token by token: the same float operations whatever the batch, so a prompt split
     * into other micro-batches, decoded token by token or batched with other sequences
     * gives the same bits (llama.cpp's CPU path is sequential as well). The chunked form
     * (chunk > 1) computes the same math in another order. */
    const delta_params dp = {.n_k = Nk, .n_v = Nv, .d = d, .tiled = tiled(m), .chunk = 0};
    o->gated_delta(be, R.o, R.conv, C, R.g, R.beta, kv, il, n, &dp);    /* o [n][vd] */
    o->gated_rmsnorm(be, R.o, R.o, L->ssm_norm->data, R.z, n * Nv, d, eps); /* per V head */
    o->matmul(be, B->xb, L->ssm_out, R.o, n);                           /* xb [n][E] */
    o->add(be, B->x, B->xb, (int64_t)n * E);
}

static void attention(model *m, kv_cache *kv, int il, fwd_bufs *B, int n, bool flash)
{
    if (m->layers[il].recurrent)
        deltanet_layer(m, kv, il, B, n);
    else
        attention_layer(m, kv, il, B, n, flash);
}

/* x += ffn(norm(x)): SwiGLU, or routed experts + sigmoid(w_sg . h) * shared expert */
static void ffn(model *m, const model_layer *L, fwd_bufs *B, int n)
{
    const model_hparams *hp = &m->hp;
    const int E = hp->n_embd;
    backend *be = B->be;
    const struct backend_ops *o = be->ops;

    o->rmsnorm(be, B->xb, B->x, L->ffn_norm->data, n, E, hp->rms_eps);  /* xb [n][E] */
    if (!L->gate_inp) {
        model_matmul3(be, B->hb, L->w_gate, B->hb2, L->w_up, NULL, NULL, B->xb, n); /* hb, hb2 [n][F] */
        o->swiglu(be, B->hb, B->hb, B->hb2, (int64_t)n * hp->n_ff);
        o->matmul(be, B->xb, L->w_down, B->hb, n);                      /* xb [n][E] */
        o->add(be, B->x, B->xb, (int64_t)n * E);
        return;
    }
    const int X = hp->n_expert, K = hp->n_expert_used, Fs = hp->n_ff_shexp;
    o->matmul(be, B->router, L->gate_inp, B->xb, n);                    /* router [n][X] */
    o->topk_softmax(be, B->ids, B->wts, B->router, n, X, K, hp->expert_norm); /* ids, wts [n][K] */
    model_moe_experts(m, L, B, n);                                      /* xb2 [n][E] */
    if (L->w_gate) {
        size_t N = (size_t)m->n_ubatch;
        float *hs = B->extra, *hs2 = hs + N * Fs, *sh = hs2 + N * Fs, *sg = sh + N * E;
        model_matmul3(be, hs, L->w_gate, hs2, L->w_up, NULL, NULL, B->xb, n); /* hs, hs2 [n][Fs] */
        o->swiglu(be, hs, hs, hs2, (int64_t)n * Fs);
        o->matmul(be, sh, L->w_down, hs, n);                            /* sh [n][E] */
        o->matmul(be, sg, L->gate_inp_shexp, B->xb, n);                 /* sg [n][1] */
        o->sigmoid_mul(be, sh, sg, n, E, true);
        o->add(be, B->xb2, sh, (int64_t)n * E);
    }
    o->add(be, B->x, B->xb2, (int64_t)n * E);                           /* x += xb2 */
}

/* x = eh_proj [rmsnorm(x) * enorm ; rmsnorm(xb) * hnorm]: the token's embedding and the
 * target's hidden state, e first (llama.cpp's concat order); a zero hidden row (position
 * 0) stays zero through its norm. */
void qwenhybrid_mtp_input(model *m, fwd_bufs *B, int n)
{
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->layers[0];
    const int E = hp->n_embd;
    backend *be = B->be;
    const struct backend_ops *o = be->ops;
    float *eh = B->extra;                                               /* [n][2E] */
    o->rmsnorm(be, B->x, B->x, L->enorm->data, n, E, hp->rms_eps);     /* e [n][E] */
    o->rmsnorm(be, B->xb, B->xb, L->hnorm->data, n, E, hp->rms_eps);   /* g [n][E] */
    o->copy_rows(be, eh, 2 * E, B->x, E, n, E);
    o->copy_rows(be, eh + E, 2 * E, B->xb, E, n, E);
    o->matmul(be, B->x, L->eh_proj, eh, n);                             /* x [n][E] */
}

const model_family family_qwenhybrid = {archs, read_hparams, bind_layer, attention, ffn, NULL};
