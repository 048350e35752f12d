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

/* The recurrent layers' state: per sequence a conv state and the delta state, F32
 * whatever the cache types (as llama.cpp keeps them). */
static int state_alloc(kv_cache *kv, const model *m, llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    kv->state = calloc((size_t)hp->n_layer, sizeof *kv->state);
    if (!kv->state)
        return llmfs_errorf(err, ENOMEM, "KV cache: out of memory");
    kv->n_recurrent = hp->n_recurrent;
    kv->conv_floats = (size_t)(hp->ssm_d_conv - 1) * (size_t)hp->ssm_conv_dim;
    kv->ssm_floats = (size_t)hp->ssm_n_v * (size_t)hp->ssm_d_state * (size_t)hp->ssm_d_state;
    for (int il = 0; il < hp->n_layer; il++) {
        if (!m->layers[il].recurrent)
            continue;
        struct kv_state_layer *S = &kv->state[il];
        S->be = m->layers[il].be;
        size_t cb = sizeof(float) * kv->conv_floats * (size_t)kv->n_seq;
        size_t sb = sizeof(float) * kv->ssm_floats * (size_t)kv->n_seq;
        S->conv = S->be->ops->alloc(S->be, cb);
        S->ssm = S->be->ops->alloc(S->be, sb);
        if (!S->conv || !S->ssm)
            return llmfs_errorf(err, ENOMEM, "KV cache: cannot allocate %zu bytes of state for layer %d on %s",
                                cb + sb, il, S->be->ops->name);
    }
    /* a few turn boundaries per sequence */
    kv->max_ckpt = 4 * kv->n_seq;
    kv->ckpt = calloc((size_t)kv->max_ckpt, sizeof *kv->ckpt);
    if (!kv->ckpt)
        return llmfs_errorf(err, ENOMEM, "KV cache: out of memory");
    return 0;
}

kv_cache *kv_cache_alloc(const model *m, int n_ctx, int n_seq, int type_k, int type_v,
                         llmfs_error *err)
{
    return kv_cache_alloc_swa(m, n_ctx, n_seq, type_k, type_v, 0, err);
}

kv_cache *kv_cache_alloc_swa(const model *m, int n_ctx, int n_seq, int type_k, int type_v, int swa_slack,
                             llmfs_error *err)
{
    const model_hparams *hp = &m->hp;
    if (n_ctx <= 0 || n_seq <= 0 || swa_slack < 0) {
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
    kv->seq_top = calloc((size_t)n_seq, sizeof *kv->seq_top);
    if (!kv->layer || !kv->seq_len || !kv->seq_top)
        goto oom;
    if (hp->n_recurrent && state_alloc(kv, m, err)) {
        kv_cache_free(kv);
        return NULL;
    }
    for (int il = 0; il < hp->n_layer; il++) {
        struct kv_layer *L = &kv->layer[il];
        const model_layer *ml = &m->layers[il];
        L->be = ml->be;
        if (ml->recurrent || ml->kv_from != il)
            continue; /* state only (kv->state), or reads an earlier layer's cache: no K/V rows */
        L->n_embd_kv = ml->n_head_kv * ml->head_dim;
        L->head_dim = ml->head_dim;
        L->k_row = type_row_bytes(type_k, L->n_embd_kv);
        L->v_row = type_row_bytes(type_v, L->n_embd_kv);
        /* a window plus a micro-batch: the oldest cell a token of the micro-batch needs
         * is still there when its last token is written */
        L->n_cells = n_ctx;
        if (swa_slack > 0 && ml->n_swa > 0 && (int64_t)ml->n_swa + swa_slack < n_ctx) {
            L->n_cells = ml->n_swa + swa_slack;
            kv->swa_slack = swa_slack;
        }
        size_t cells = (size_t)L->n_cells * (size_t)n_seq;
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
    if (kv->state)
        for (int il = 0; il < kv->n_layer; il++) {
            struct kv_state_layer *S = &kv->state[il];
            if (S->conv)
                S->be->ops->free(S->be, S->conv);
            if (S->ssm)
                S->be->ops->free(S->be, S->ssm);
            if (S->conv_snap)
                S->be->ops->free(S->be, S->conv_snap);
            if (S->ssm_snap)
                S->be->ops->free(S->be, S->ssm_snap);
        }
    for (int i = 0; i < kv->n_snap_dev; i++)
        kv->snap_dev[i].be->ops->free(kv->snap_dev[i].be, kv->snap_dev[i].p);
    free(kv->snap_from);
    free(kv->snap_top);
    for (int i = 0; kv->ckpt && i < kv->max_ckpt; i++)
        free(kv->ckpt[i].data);
    free(kv->ckpt);
    free(kv->state);
    free(kv->layer);
    free(kv->seq_len);
    free(kv->seq_top);
    free(kv);
}

size_t kv_cache_bytes(const kv_cache *kv)
{
    size_t n = 0;
    for (int il = 0; il < kv->n_layer; il++)
        n += kv_layer_bytes(kv, il);
    return n + (kv_state_bytes(kv) + kv_snap_bytes(kv)) * (size_t)kv->n_seq;
}

size_t kv_layer_bytes(const kv_cache *kv, int il)
{
    if (il < 0 || il >= kv->n_layer)
        return 0;
    const struct kv_layer *L = &kv->layer[il];
    return L->k ? (L->k_row + L->v_row) * (size_t)L->n_cells * (size_t)kv->n_seq : 0;
}

size_t kv_state_bytes(const kv_cache *kv)
{
    return sizeof(float) * (kv->conv_floats + kv->ssm_floats) * (size_t)kv->n_recurrent;
}

size_t kv_snap_bytes(const kv_cache *kv)
{
    return kv_state_bytes(kv) * (size_t)kv->n_snap;
}

/* Copies sequence seq's state between the layers' memory and host buffer h. */
static void state_copy(kv_cache *kv, int seq, float *h, bool save)
{
    for (int il = 0; il < kv->n_layer; il++) {
        struct kv_state_layer *S = &kv->state[il];
        if (!S->be)
            continue;
        float *parts[2] = {S->conv + kv->conv_floats * (size_t)seq, S->ssm + kv->ssm_floats * (size_t)seq};
        size_t sizes[2] = {kv->conv_floats, kv->ssm_floats};
        for (int p = 0; p < 2; p++) {
            if (save)
                S->be->ops->download(S->be, h, parts[p], sizeof(float) * sizes[p]);
            else
                S->be->ops->upload(S->be, parts[p], h, sizeof(float) * sizes[p]);
            h += sizes[p];
        }
    }
}

/* The newest checkpoint of seq at or below n cells, or NULL. */
static const kv_checkpoint *best_checkpoint(const kv_cache *kv, int seq, int n)
{
    const kv_checkpoint *best = NULL;
    for (int i = 0; i < kv->max_ckpt; i++) {
        const kv_checkpoint *c = &kv->ckpt[i];
        if (c->n_tokens > 0 && c->seq == seq && c->n_tokens <= n && (!best || c->n_tokens > best->n_tokens))
            best = c;
    }
    return best;
}

int kv_seq_can_keep(const kv_cache *kv, int seq, int n)
{
    if (seq < 0 || seq >= kv->n_seq)
        return 0;
    int len = kv->seq_len[seq];
    if (n < 0)
        n = 0;
    if (n >= len)
        return len;
    if (kv->swa_slack && kv->seq_top[seq] - n > kv->swa_slack)
        return 0; /* the ring has overwritten the window before n */
    if (!kv->n_recurrent || n == 0)
        return n;
    const kv_checkpoint *c = best_checkpoint(kv, seq, n);
    return c ? c->n_tokens : 0;
}

/* snap_from to the backends' copies (after it changed). */
static void snap_sync(kv_cache *kv)
{
    for (int i = 0; i < kv->n_snap_dev; i++)
        kv->snap_dev[i].be->ops->upload(kv->snap_dev[i].be, kv->snap_dev[i].p, kv->snap_from,
                                        sizeof(int32_t) * (size_t)kv->n_seq);
}

/* Disarms seq (its snapshots are no longer of its lineage). */
static void snap_disarm(kv_cache *kv, int seq)
{
    if (kv->n_snap && kv->snap_from[seq] >= 0) {
        kv->snap_from[seq] = -1;
        snap_sync(kv);
    }
}

/* Whether a snapshot holds the state after position n - 1 of seq. */
static bool snap_holds(const kv_cache *kv, int seq, int n)
{
    return n > 0 && n < kv->seq_len[seq] && kv_snap_slot(kv, seq, n - 1) >= 0 && n <= kv->snap_top[seq];
}

/* n floats from src to dst in be's memory: copy_rows of a row length that divides n, so
 * a device splits the copy over many rows. */
static void copy_floats(backend *be, float *dst, const float *src, size_t n)
{
    int d = 4096;
    while (d > 1 && n % (size_t)d)
        d /= 2;
    be->ops->copy_rows(be, dst, d, src, d, (int)(n / (size_t)d), d);
}

/* The state after position n - 1 back from its snapshot (on the layers' own memory). */
static void snap_restore(kv_cache *kv, int seq, int n)
{
    const size_t slot = (size_t)seq * (size_t)kv->n_snap + (size_t)kv_snap_slot(kv, seq, n - 1);
    for (int il = 0; il < kv->n_layer; il++) {
        struct kv_state_layer *S = &kv->state[il];
        if (!S->be)
            continue;
        copy_floats(S->be, S->conv + kv->conv_floats * (size_t)seq, S->conv_snap + kv->conv_floats * slot,
                    kv->conv_floats);
        copy_floats(S->be, S->ssm + kv->ssm_floats * (size_t)seq, S->ssm_snap + kv->ssm_floats * slot,
                    kv->ssm_floats);
    }
}

int kv_seq_keep(kv_cache *kv, int seq, int n)
{
    if (seq < 0 || seq >= kv->n_seq)
        return 0;
    if (kv->n_recurrent && snap_holds(kv, seq, n)) {
        snap_restore(kv, seq, n);
        kv->seq_len[seq] = n;
        snap_disarm(kv, seq);
        for (int i = 0; i < kv->max_ckpt; i++)
            if (kv->ckpt[i].seq == seq && kv->ckpt[i].n_tokens > n)
                kv->ckpt[i].n_tokens = 0;
        return n;
    }
    snap_disarm(kv, seq);
    int keep = kv_seq_can_keep(kv, seq, n);
    if (kv->n_recurrent && keep > 0 && keep < kv->seq_len[seq]) {
        kv_checkpoint *c = (kv_checkpoint *)best_checkpoint(kv, seq, keep);
        state_copy(kv, seq, c->data, false);
        c->used = ++kv->ckpt_clock;
    }
    kv->seq_len[seq] = keep;
    if (keep == 0)
        kv->seq_top[seq] = 0;
    /* checkpoints past what is kept describe cells about to be overwritten */
    for (int i = 0; kv->n_recurrent && i < kv->max_ckpt; i++)
        if (kv->ckpt[i].seq == seq && kv->ckpt[i].n_tokens > keep)
            kv->ckpt[i].n_tokens = 0;
    return keep;
}

void kv_seq_wrote(kv_cache *kv, int seq, int pos)
{
    if (kv_snap_slot(kv, seq, pos) >= 0 && pos + 1 > kv->snap_top[seq])
        kv->snap_top[seq] = pos + 1;
    if (pos + 1 > kv->seq_len[seq])
        kv->seq_len[seq] = pos + 1;
    if (pos + 1 > kv->seq_top[seq])
        kv->seq_top[seq] = pos + 1;
}

int kv_checkpoint_save(kv_cache *kv, int seq)
{
    if (!kv->n_recurrent || seq < 0 || seq >= kv->n_seq || kv->seq_len[seq] == 0)
        return 0;
    int n = kv->seq_len[seq];
    kv_checkpoint *slot = NULL;
    for (int i = 0; i < kv->max_ckpt && !slot; i++)
        if (kv->ckpt[i].n_tokens > 0 && kv->ckpt[i].seq == seq && kv->ckpt[i].n_tokens == n)
            slot = &kv->ckpt[i];
    for (int i = 0; i < kv->max_ckpt && !slot; i++)
        if (kv->ckpt[i].n_tokens == 0)
            slot = &kv->ckpt[i];
    if (!slot) { /* every slot taken: the least recently used goes */
        slot = &kv->ckpt[0];
        for (int i = 1; i < kv->max_ckpt; i++)
            if (kv->ckpt[i].used < slot->used)
                slot = &kv->ckpt[i];
    }
    if (!slot->data) {
        slot->data = malloc(kv_state_bytes(kv));
        if (!slot->data)
            return -ENOMEM;
    }
    state_copy(kv, seq, slot->data, true);
    slot->seq = seq;
    slot->n_tokens = n;
    slot->used = ++kv->ckpt_clock;
    return 0;
}

int kv_snapshots_alloc(kv_cache *kv, int n_snap, llmfs_error *err)
{
    if (!kv->n_recurrent || n_snap < 0)
        return 0;
    for (int il = 0; il < kv->n_layer; il++)
        if (kv->state[il].be && !kv->state[il].be->ops->recurrent_snapshots)
            return llmfs_errorf(err, ENOTSUP, "KV cache: the %s backend keeps no per-token recurrent states",
                                kv->state[il].be->ops->name);
    if (!kv->snap_from) {
        kv->snap_from = malloc(sizeof(int) * (size_t)kv->n_seq);
        kv->snap_top = malloc(sizeof(int) * (size_t)kv->n_seq);
        if (!kv->snap_from || !kv->snap_top)
            return llmfs_errorf(err, ENOMEM, "KV cache: out of memory");
    }
    for (int s = 0; s < kv->n_seq; s++)
        kv->snap_from[s] = -1, kv->snap_top[s] = 0;
    for (int il = 0; il < kv->n_layer; il++) {
        struct kv_state_layer *S = &kv->state[il];
        if (!S->be)
            continue;
        /* recorded decode steps point at the old buffers */
        if (S->be->ops->graph_reset)
            S->be->ops->graph_reset(S->be);
        if (S->conv_snap)
            S->be->ops->free(S->be, S->conv_snap);
        if (S->ssm_snap)
            S->be->ops->free(S->be, S->ssm_snap);
        S->conv_snap = S->ssm_snap = NULL;
        S->snap_from_be = NULL;
    }
    for (int i = 0; i < kv->n_snap_dev; i++)
        kv->snap_dev[i].be->ops->free(kv->snap_dev[i].be, kv->snap_dev[i].p);
    kv->n_snap_dev = 0;
    kv->n_snap = 0;
    if (n_snap == 0)
        return 0;
    for (int il = 0; il < kv->n_layer; il++) {
        struct kv_state_layer *S = &kv->state[il];
        if (!S->be)
            continue;
        int d = 0;
        while (d < kv->n_snap_dev && kv->snap_dev[d].be != S->be)
            d++;
        if (d == kv->n_snap_dev) {
            if (d == (int)(sizeof kv->snap_dev / sizeof kv->snap_dev[0]))
                return llmfs_errorf(err, ENOTSUP, "KV cache: recurrent layers on too many devices");
            kv->snap_dev[d].be = S->be;
            kv->snap_dev[d].p = S->be->ops->alloc(S->be, sizeof(int32_t) * (size_t)kv->n_seq);
            if (!kv->snap_dev[d].p)
                return llmfs_errorf(err, ENOMEM, "KV cache: out of memory on %s", S->be->ops->name);
            kv->n_snap_dev++;
        }
        S->snap_from_be = kv->snap_dev[d].p;
        size_t cb = sizeof(float) * kv->conv_floats * (size_t)kv->n_seq * (size_t)n_snap;
        size_t sb = sizeof(float) * kv->ssm_floats * (size_t)kv->n_seq * (size_t)n_snap;
        S->conv_snap = S->be->ops->alloc(S->be, cb);
        S->ssm_snap = S->be->ops->alloc(S->be, sb);
        if (!S->conv_snap || !S->ssm_snap)
            return llmfs_errorf(err, ENOMEM, "KV cache: cannot allocate %zu bytes of state snapshots for layer %d on %s",
                                cb + sb, il, S->be->ops->name);
    }
    kv->n_snap = n_snap;
    snap_sync(kv);
    return 0;
}

bool kv_snap_arm(kv_cache *kv, int seq, int pos)
{
    if (!kv->n_snap || seq < 0 || seq >= kv->n_seq)
        return false;
    kv->snap_from[seq] = pos;
    kv->snap_top[seq] = pos;
    snap_sync(kv);
    return true;
}

int kv_checkpoint_count(const kv_cache *kv, int seq)
{
    int c = 0;
    for (int i = 0; kv->ckpt && i < kv->max_ckpt; i++)
        c += kv->ckpt[i].n_tokens > 0 && (seq < 0 || kv->ckpt[i].seq == seq);
    return c;
}

void kv_checkpoint_drop(kv_cache *kv, int seq)
{
    for (int i = 0; kv->ckpt && i < kv->max_ckpt; i++)
        if (seq < 0 || kv->ckpt[i].seq == seq)
            kv->ckpt[i].n_tokens = 0;
}
