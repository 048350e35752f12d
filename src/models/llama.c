/* llama.c — the llama family: Llama 2/3 (Mistral, TinyLlama, SmolLM), Qwen2 (q/k/v
 * biases), Qwen3 (q/k RMS norms) and Qwen3-MoE (routed experts).
 *
 * One layer: x += wo · attention(rope(q), rope(k), v) of rmsnorm(x), then x += the
 * SwiGLU feed-forward of rmsnorm(x), dense or routed to the top-k experts. Llama rotates
 * interleaved pairs (2i, 2i+1); the Qwen models NEOX pairs (i, i + D/2).
 *
 * Shapes: n tokens, E n_embd, H n_head, Hk n_head_kv, D head_dim, F n_ff, X n_expert,
 * K n_expert_used, Fe n_ff_exp.
 */
#include "model_impl.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static const char *const archs[] = {"llama", "qwen2", "qwen3", "qwen3moe", NULL};

static int read_hparams(model *m, llmfs_error *err)
{
    model_hparams *hp = &m->hp;
    (void)err;
    hp->rope.neox = strcmp(hp->arch, "llama") != 0;
    hp->qkv_bias = !strcmp(hp->arch, "qwen2");
    hp->qk_norm = !strcmp(hp->arch, "qwen3") || !strcmp(hp->arch, "qwen3moe");
    for (int il = 0; il < hp->n_layer; il++) /* every layer alike */
        m->layers[il].rope = hp->rope;
    return 0;
}

static int bind_layer(model *m, int il, llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    const int E = hp->n_embd, H = hp->n_head, Hk = hp->n_head_kv, D = hp->head_dim;
    model_layer *L = &m->layers[il];
    int rc;
    if ((rc = model_bind_blk(m, il, "attn_norm.weight", E, 0, 0, false, false, &L->attn_norm, err)) ||
        (rc = model_bind_blk(m, il, "attn_q.weight", E, H * D, 0, true, false, &L->wq, err)) ||
        (rc = model_bind_blk(m, il, "attn_k.weight", E, Hk * D, 0, true, false, &L->wk, err)) ||
        (rc = model_bind_blk(m, il, "attn_v.weight", E, Hk * D, 0, true, false, &L->wv, err)) ||
        (rc = model_bind_blk(m, il, "attn_output.weight", H * D, E, 0, true, false, &L->wo, err)) ||
        (rc = model_bind_blk(m, il, "ffn_norm.weight", E, 0, 0, false, false, &L->ffn_norm, err)))
        return rc;
    if (hp->qkv_bias &&
        ((rc = model_bind_blk(m, il, "attn_q.bias", H * D, 0, 0, false, false, &L->bq, err)) ||
         (rc = model_bind_blk(m, il, "attn_k.bias", Hk * D, 0, 0, false, false, &L->bk, err)) ||
         (rc = model_bind_blk(m, il, "attn_v.bias", Hk * D, 0, 0, false, false, &L->bv, err))))
        return rc;
    if (hp->qk_norm &&
        ((rc = model_bind_blk(m, il, "attn_q_norm.weight", D, 0, 0, false, false, &L->q_norm, err)) ||
         (rc = model_bind_blk(m, il, "attn_k_norm.weight", D, 0, 0, false, false, &L->k_norm, err))))
        return rc;
    if (hp->n_expert) {
        const int X = hp->n_expert, Fe = hp->n_ff_exp;
        if ((rc = model_bind_blk(m, il, "ffn_gate_inp.weight", E, X, 0, true, false, &L->gate_inp, err)) ||
            (rc = model_bind_blk(m, il, "ffn_gate_exps.weight", E, Fe, X, true, false, &L->gate_exps, err)) ||
            (rc = model_bind_blk(m, il, "ffn_up_exps.weight", E, Fe, X, true, false, &L->up_exps, err)) ||
            (rc = model_bind_blk(m, il, "ffn_down_exps.weight", Fe, E, X, true, false, &L->down_exps, err)))
            return rc;
        return 0;
    }
    const int F = hp->n_ff;
    if ((rc = model_bind_blk(m, il, "ffn_gate.weight", E, F, 0, true, false, &L->w_gate, err)) ||
        (rc = model_bind_blk(m, il, "ffn_up.weight", E, F, 0, true, false, &L->w_up, err)) ||
        (rc = model_bind_blk(m, il, "ffn_down.weight", F, E, 0, true, false, &L->w_down, err)))
        return rc;
    return 0;
}

/* x += attn(norm(x)) */
static void attention(model *m, kv_cache *kv, int il, fwd_bufs *B, int n, bool flash)
{
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->layers[il];
    const int E = hp->n_embd, H = hp->n_head, Hk = hp->n_head_kv, D = hp->head_dim;
    const float eps = hp->rms_eps;
    const attn_params ap = {.n_head = H, .n_head_kv = Hk, .head_dim = D, .scale = 1.0f / sqrtf((float)D), .flash = flash};
    backend *be = B->be;
    const struct backend_ops *o = be->ops;

    o->rmsnorm(be, B->xb, B->x, L->attn_norm->data, n, E, eps);         /* xb [n][E] */
    model_matmul3(be, B->q, L->wq, B->k, L->wk, B->v, L->wv, B->xb, n); /* q [n][H*D], k v [n][Hk*D] */
    if (L->bq) {
        o->add_bias(be, B->q, L->bq->data, n, H * D);
        o->add_bias(be, B->k, L->bk->data, n, Hk * D);
        o->add_bias(be, B->v, L->bv->data, n, Hk * D);
    }
    if (L->q_norm) {                                                    /* per head, before rope */
        o->rmsnorm(be, B->q, B->q, L->q_norm->data, n * H, D, eps);     /* q [n*H][D] */
        o->rmsnorm(be, B->k, B->k, L->k_norm->data, n * Hk, D, eps);    /* k [n*Hk][D] */
    }
    o->rope(be, B->q, n, H, D, &hp->rope);
    o->rope(be, B->k, n, Hk, D, &hp->rope);
    if (kv->rot_k) {                                                    /* q.k unchanged */
        o->hadamard(be, B->q, (int64_t)n * H * D, kv->rot_k);
        o->hadamard(be, B->k, (int64_t)n * Hk * D, kv->rot_k);
    }
    if (kv->rot_v)
        o->hadamard(be, B->v, (int64_t)n * Hk * D, kv->rot_v);
    o->kv_store(be, kv, il, B->k, B->v, n);
    o->attention(be, B->att, B->q, kv, il, n, &ap);                     /* att [n][H*D] */
    if (kv->rot_v)                                                      /* back from rotated V */
        o->hadamard(be, B->att, (int64_t)n * H * D, kv->rot_v);
    o->matmul(be, B->xb, L->wo, B->att, n);                             /* xb [n][E] */
    o->add(be, B->x, B->xb, (int64_t)n * E);                            /* x += xb */
}

/* x += ffn(norm(x)), dense or routed */
static void ffn(model *m, const model_layer *L, fwd_bufs *B, int n)
{
    const model_hparams *hp = &m->hp;
    const int E = hp->n_embd;
    backend *be = B->be;
    const struct backend_ops *o = be->ops;

    o->rmsnorm(be, B->xb, B->x, L->ffn_norm->data, n, E, hp->rms_eps);  /* xb [n][E] */
    if (!L->gate_inp) {
        model_matmul3(be, B->hb, L->w_gate, B->hb2, L->w_up, NULL, NULL, B->xb, n); /* hb, hb2 [n][F] */
        o->swiglu(be, B->hb, B->hb, B->hb2, (int64_t)n * hp->n_ff);     /* hb = silu(hb) * hb2 */
        o->matmul(be, B->xb, L->w_down, B->hb, n);                      /* xb [n][E] */
        o->add(be, B->x, B->xb, (int64_t)n * E);                        /* x += xb */
        return;
    }
    const int X = hp->n_expert, K = hp->n_expert_used;
    o->matmul(be, B->router, L->gate_inp, B->xb, n);                    /* router [n][X] */
    o->topk_softmax(be, B->ids, B->wts, B->router, n, X, K,             /* ids, wts [n][K] */
                    hp->expert_norm);
    model_moe_experts(m, L, B, n);                                      /* xb2 [n][E] */
    o->add(be, B->x, B->xb2, (int64_t)n * E);                           /* x += xb2 */
}

const model_family family_llama = {archs, read_hparams, bind_layer, attention, ffn, NULL};
