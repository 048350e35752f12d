/* kv.c — the key/value cache: per layer, n_seq*n_ctx rows of keys and of values. */
#include "kv.h"
#include "model.h"
#include "quant.h"

#include <errno.h>
#include <stdlib.h>

static bool kv_type_ok(int type)
{
    return type == T_F16 || type == T_F32 || type == T_Q8_0 || type == T_Q4_0;
}

kv_cache *kv_cache_alloc(const model *m, int n_ctx, int n_seq, int type_k, int type_v,
                         llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    if (n_ctx <= 0 || n_seq <= 0) {
        llmfs_errorf(err, EINVAL, "KV cache: bad size (%d cells x %d sequences)", n_ctx, n_seq);
        return NULL;
    }
    const int types[2] = {type_k, type_v};
    for (int i = 0; i < 2; i++) {
        const type_traits *tt = type_info(types[i]);
        if (!tt || !kv_type_ok(types[i])) {
            llmfs_errorf(err, EINVAL, "KV cache: unsupported %s type %s (f16, f32, q8_0, q4_0)",
                         i ? "value" : "key", tt ? tt->name : "?");
            return NULL;
        }
        /* each head's slice of a row must be whole blocks: attention reads heads apart */
        for (int il = 0; il < hp->n_layer; il++)
            if (m->layers[il].head_dim % tt->block) {
                llmfs_errorf(err, EINVAL, "KV cache: head size %d is not a multiple of %s's block (%d)",
                             m->layers[il].head_dim, tt->name, tt->block);
                return NULL;
            }
    }
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv)
        goto oom;
    kv->n_layer = hp->n_layer;
    kv->n_ctx = n_ctx;
    kv->n_seq = n_seq;
    kv->type_k = type_k;
    kv->type_v = type_v;
    /* one rotation for every layer: the largest power of two dividing every head size */
    int hd_min = hp->head_dim;
    bool can_rotate = true;
    for (int il = 0; il < hp->n_layer; il++) {
        const model_layer *ml = &m->layers[il];
        can_rotate &= ml->be->ops->hadamard != NULL;
        hd_min = ml->head_dim < hd_min ? ml->head_dim : hd_min;
        int e = ml->n_head_kv * ml->head_dim;
        kv->n_embd_kv = e > kv->n_embd_kv ? e : kv->n_embd_kv;
        kv->head_dim = ml->head_dim > kv->head_dim ? ml->head_dim : kv->head_dim;
    }
    can_rotate &= hd_min % 64 == 0;
    for (int il = 0; il < hp->n_layer; il++)
        can_rotate &= m->layers[il].head_dim % hd_min == 0;
    if (can_rotate && type_k != T_F16 && type_k != T_F32) {
        kv->rot_k = 64;
        bool all = true;
        while (all) {
            for (int il = 0; il < hp->n_layer; il++)
                all &= m->layers[il].head_dim % (2 * kv->rot_k) == 0;
            if (all)
                kv->rot_k *= 2;
        }
    }
    if (can_rotate && type_v != T_F16 && type_v != T_F32)
        kv->rot_v = 64;
    kv->layer = calloc((size_t)hp->n_layer, sizeof *kv->layer);
    kv->seq_len = calloc((size_t)n_seq, sizeof *kv->seq_len);
    if (!kv->layer || !kv->seq_len)
        goto oom;
    size_t cells = (size_t)n_ctx * (size_t)n_seq;
    for (int il = 0; il < hp->n_layer; il++) {
        struct kv_layer *L = &kv->layer[il];
        const model_layer *ml = &m->layers[il];
        L->be = ml->be;
        if (ml->kv_from != il) /* reads an earlier layer's cache */
            continue;
        L->n_embd_kv = ml->n_head_kv * ml->head_dim;
        L->head_dim = ml->head_dim;
        L->k_row = type_row_bytes(type_k, L->n_embd_kv);
        L->v_row = type_row_bytes(type_v, L->n_embd_kv);
        L->k = L->be->ops->alloc(L->be, L->k_row * cells);
        L->v = L->be->ops->alloc(L->be, L->v_row * cells);
        if (!L->k || !L->v) {
            llmfs_errorf(err, ENOMEM, "KV cache: cannot allocate %zu bytes for layer %d on %s",
                         (L->k_row + L->v_row) * cells, il, L->be->ops->name);
            kv_cache_free(kv);
            return NULL;
        }
    }
    return kv;
oom:
    llmfs_errorf(err, ENOMEM, "KV cache: out of memory");
    kv_cache_free(kv);
    return NULL;
}

void kv_cache_free(kv_cache *kv)
{
    if (!kv)
        return;
    if (kv->layer)
        for (int il = 0; il < kv->n_layer; il++) {
            struct kv_layer *L = &kv->layer[il];
            if (!L->be)
                continue;
            /* recorded decode steps point into this cache */
            if (L->be->ops->graph_reset && (il == 0 || kv->layer[il - 1].be != L->be))
                L->be->ops->graph_reset(L->be);
            if (L->k)
                L->be->ops->free(L->be, L->k);
            if (L->v)
                L->be->ops->free(L->be, L->v);
        }
    free(kv->layer);
    free(kv->seq_len);
    free(kv);
}

size_t kv_cache_bytes(const kv_cache *kv)
{
    size_t n = 0, cells = (size_t)kv->n_ctx * (size_t)kv->n_seq;
    for (int il = 0; il < kv->n_layer; il++)
        n += (kv->layer[il].k_row + kv->layer[il].v_row) * cells;
    return n;
}

size_t kv_layer_bytes(const kv_cache *kv, int il)
{
    if (il < 0 || il >= kv->n_layer)
        return 0;
    return (kv->layer[il].k_row + kv->layer[il].v_row) * (size_t)kv->n_ctx * (size_t)kv->n_seq;
}

void kv_seq_keep(kv_cache *kv, int seq, int n)
{
    if (seq < 0 || seq >= kv->n_seq)
        return;
    if (n < 0)
        n = 0;
    if (kv->seq_len[seq] > n)
        kv->seq_len[seq] = n;
}
