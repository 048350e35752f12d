/* gptoss.c — OpenAI's gpt-oss (general.architecture "gpt-oss"; llama.cpp's OPENAI_MOE).
 *
 * One layer:
 *   h = rmsnorm(x) * attn_norm
 *   q, k, v = W h + b;  NEOX rope with YaRN on q and k (every layer)
 *   att = softmax over the keys plus one learned sink logit per head; the even layers
 *         see only the last n_swa positions (a sliding window), the odd ones all
 *   x += Wo att + bo
 *   h = rmsnorm(x) * post_attention_norm
 *   top-k of the router's biased logits, softmax over those k
 *   x += sum_k w_k (down_e(swiglu_oai(gate_e h + bg_e, up_e h + bu_e)) + bd_e)
 * where swiglu_oai(g, u) = min(g, 7) * sigmoid(1.702 min(g, 7)) * (clamp(u, -7, 7) + 1).
 *
 * Shapes: n tokens, E n_embd, H n_head, Hk n_head_kv, D head_dim (H*D may exceed E),
 * X n_expert, K n_expert_used, Fe n_ff_exp.
 */
#include "model_impl.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static const char *const archs[] = {"gpt-oss", NULL};

static int read_hparams(model *m, llmfs_error *err)
{
    model_hparams *hp = &m->hp;
    int rc;
    hp->rope.neox = true;
    hp->qkv_bias = true;
    /* a window of 0 would mask every key, the query's own included */
    if ((rc = model_need_u32(m, "attention.sliding_window", &hp->n_swa, err)) ||
        (rc = model_opt_u32(m, "attention.sliding_window_pattern", 2, &hp->swa_period, err)))
        return rc;
    if (!hp->n_expert)
        return llmfs_errorf(err, EINVAL, "model: gpt-oss needs %s.expert_count", hp->arch);
    /* llama.cpp takes the softmax over the k selected logits; a softmax over all
     * experts renormalised over the selected ones is the same numbers */
    hp->expert_norm = true;
    /* hard-coded in the reference implementation, not in the file */
    hp->swiglu_alpha = 1.702f;
    hp->swiglu_limit = 7.0f;
    return 0;
}

static int bind_layer(model *m, int il, llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    const int E = hp->n_embd, H = hp->n_head, Hk = hp->n_head_kv, D = hp->head_dim;
    const int X = hp->n_expert, Fe = hp->n_ff_exp;
    model_layer *L = &m->layers[il];
    int rc;
    L->n_swa = model_layer_swa(hp, il) ? hp->n_swa : 0;
    if ((rc = model_bind_blk(m, il, "attn_norm.weight", E, 0, 0, false, false, &L->attn_norm, err)) ||  /* [E] */
        (rc = model_bind_blk(m, il, "attn_q.weight", E, H * D, 0, true, false, &L->wq, err)) ||         /* [H*D][E] */
        (rc = model_bind_blk(m, il, "attn_q.bias", H * D, 0, 0, false, true, &L->bq, err)) ||          /* [H*D] */
        (rc = model_bind_blk(m, il, "attn_k.weight", E, Hk * D, 0, true, false, &L->wk, err)) ||       /* [Hk*D][E] */
        (rc = model_bind_blk(m, il, "attn_k.bias", Hk * D, 0, 0, false, true, &L->bk, err)) ||         /* [Hk*D] */
        (rc = model_bind_blk(m, il, "attn_v.weight", E, Hk * D, 0, true, false, &L->wv, err)) ||       /* [Hk*D][E] */
        (rc = model_bind_blk(m, il, "attn_v.bias", Hk * D, 0, 0, false, true, &L->bv, err)) ||         /* [Hk*D] */
        (rc = model_bind_blk(m, il, "attn_output.weight", H * D, E, 0, true, false, &L->wo, err)) ||   /* [E][H*D] */
        (rc = model_bind_blk(m, il, "attn_output.bias", E, 0, 0, false, false, &L->bo, err)) ||        /* [E] */
        (rc = model_bind_blk(m, il, "attn_sinks.weight", H, 0, 0, false, false, &L->sinks, err)) ||    /* [H] */
        (rc = model_bind_blk(m, il, "post_attention_norm.weight", E, 0, 0, false, false, &L->ffn_norm, err)) || /* [E] */
        (rc = model_bind_blk(m, il, "ffn_gate_inp.weight", E, X, 0, true, false, &L->gate_inp, err)) || /* [X][E] */
        (rc = model_bind_blk(m, il, "ffn_gate_inp.bias", X, 0, 0, false, false, &L->gate_inp_b, err)) || /* [X] */
        (rc = model_bind_blk(m, il, "ffn_gate_exps.weight", E, Fe, X, true, false, &L->gate_exps, err)) || /* [X][Fe][E] */
        (rc = model_bind_blk(m, il, "ffn_gate_exps.bias", Fe, X, 0, false, false, &L->gate_exps_b, err)) || /* [X][Fe] */
        (rc = model_bind_blk(m, il, "ffn_up_exps.weight", E, Fe, X, true, false, &L->up_exps, err)) ||  /* [X][Fe][E] */
        (rc = model_bind_blk(m, il, "ffn_up_exps.bias", Fe, X, 0, false, false, &L->up_exps_b, err)) ||  /* [X][Fe] */
        (rc = model_bind_blk(m, il, "ffn_down_exps.weight", Fe, E, X, true, false, &L->down_exps, err)) || /* [X][E][Fe] */
        (rc = model_bind_blk(m, il, "ffn_down_exps.bias", E, X, 0, false, false, &L->down_exps_b, err)))  /* [X][E] */
        return rc;
    return 0;
}

/* x += Wo attn(norm(x)) + bo */
static void attention(model *m, kv_cache *kv, int il, fwd_bufs *B, int n, bool flash)
{
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->layers[il];
    const int E = hp->n_embd, H = hp->n_head, Hk = hp->n_head_kv, D = hp->head_dim;
    /* the sinks are logits as they are: not scaled like the scores, never masked */
    const attn_params ap = {.n_head = H, .n_head_kv = Hk, .head_dim = D, .scale = 1.0f / sqrtf((float)D),
                            .flash = flash, .n_swa = L->n_swa,
                            .sinks = L->sinks->data};
    backend *be = B->be;
    const struct backend_ops *o = be->ops;

    o->rmsnorm(be, B->xb, B->x, L->attn_norm->data, n, E, hp->rms_eps); /* xb [n][E] */
    model_matmul3(be, B->q, L->wq, B->k, L->wk, B->v, L->wv, B->xb, n); /* q [n][H*D], k v [n][Hk*D] */
    if (L->bq)
        o->add_bias(be, B->q, L->bq->data, n, H * D);
    if (L->bk)
        o->add_bias(be, B->k, L->bk->data, n, Hk * D);
    if (L->bv)
        o->add_bias(be, B->v, L->bv->data, n, Hk * D);
    o->rope(be, B->q, n, H, D, &hp->rope);                              /* YaRN, mscale included */
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
    o->add_bias(be, B->xb, L->bo->data, n, E);
    o->add(be, B->x, B->xb, (int64_t)n * E);                            /* x += xb */
}

/* x += the routed experts of norm(x) */
static void ffn(model *m, const model_layer *L, fwd_bufs *B, int n)
{
    const model_hparams *hp = &m->hp;
    const int E = hp->n_embd, X = hp->n_expert, K = hp->n_expert_used;
    backend *be = B->be;
    const struct backend_ops *o = be->ops;

    o->rmsnorm(be, B->xb, B->x, L->ffn_norm->data, n, E, hp->rms_eps);  /* xb [n][E] */
    o->matmul(be, B->router, L->gate_inp, B->xb, n);                    /* router [n][X] */
    o->add_bias(be, B->router, L->gate_inp_b->data, n, X);              /* selection on the biased logits */
    o->topk_softmax(be, B->ids, B->wts, B->router, n, X, K, true);      /* ids, wts [n][K] */
    model_moe_experts(m, L, B, n);                                      /* xb2 [n][E], biases and clamp */
    o->add(be, B->x, B->xb2, (int64_t)n * E);                           /* x += xb2 */
}

const model_family family_gptoss = {archs, read_hparams, bind_layer, attention, ffn, NULL};
