/* mtp_gemma.c — Gemma 4's assistant model as an MTP drafter (mtp.h, kind "assistant").
 *
 * The assistant (src/models/gemma4assistant.h) keeps no cache: a chain of drafts at
 * position p reads the target's own cache, cells 0..p-1, and the target's final hidden
 * state of position p-1. So this kind only remembers the target's hidden rows by
 * position (process), forgets those past what the target kept (accept, keep), and drafts
 * from the row before the last token's position. The target's cache is reached through
 * the engine's pointer to it, since a resize replaces the cache.
 */
#include "mtp.h"

#include "gemma4assistant.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Target rows kept per sequence (ring by position): a draft reads the row of the
 * position just before the last token, always among the last batch's. */
#define HIST_ROWS 64

typedef struct assistant {
    mtp_drafter base;
    gemma4_assistant *a;
    const model *target;
    kv_cache *const *target_kv; /* the engine's pointer to the target's current cache */
    int E, V, n_seq;
    float *hist;   /* [n_seq][HIST_ROWS][E] */
    int *hist_pos; /* [n_seq][HIST_ROWS] position of each row, -1 none */
    float *logits; /* [n_max cap][V] scratch for margins */
    int logits_rows;
} assistant;

static assistant *impl(mtp_drafter *d) { return (assistant *)d; }
static const assistant *cimpl(const mtp_drafter *d) { return (const assistant *)d; }

static void as_free(mtp_drafter *d)
{
    assistant *x = impl(d);
    gemma4_assistant_free(x->a);
    free(x->hist);
    free(x->hist_pos);
    free(x->logits);
    free(x);
}

static int as_resize(mtp_drafter *d, int n_ctx, int n_seq, llmfs_error *err)
{
    (void)n_ctx;
    assistant *x = impl(d);
    float *h = malloc(sizeof(float) * (size_t)n_seq * HIST_ROWS * (size_t)x->E);
    int *p = malloc(sizeof(int) * (size_t)n_seq * HIST_ROWS);
    if (!h || !p) {
        free(h);
        free(p);
        return llmfs_errorf(err, ENOMEM, "out of memory for the MTP drafter's hidden rows");
    }
    for (int i = 0; i < n_seq * HIST_ROWS; i++)
        p[i] = -1;
    free(x->hist);
    free(x->hist_pos);
    x->hist = h;
    x->hist_pos = p;
    x->n_seq = n_seq;
    return 0;
}

static int as_process(mtp_drafter *d, int seq, const int32_t *tok, int pos0, int n, const float *hidden,
                      bool flash, llmfs_error *err)
{
    (void)tok, (void)flash, (void)err;
    assistant *x = impl(d);
    if (seq < 0 || seq >= x->n_seq)
        return 0;
    /* rows at pos0 and after are replaced: forget the old ones first */
    for (int k = 0; k < HIST_ROWS; k++)
        if (x->hist_pos[seq * HIST_ROWS + k] >= pos0)
            x->hist_pos[seq * HIST_ROWS + k] = -1;
    for (int i = n > HIST_ROWS ? n - HIST_ROWS : 0; i < n; i++) {
        const int k = seq * HIST_ROWS + (pos0 + i) % HIST_ROWS;
        x->hist_pos[k] = pos0 + i;
        memcpy(x->hist + (size_t)k * x->E, hidden + (size_t)i * x->E, sizeof(float) * (size_t)x->E);
    }
    return 0;
}

static void forget_from(assistant *x, int seq, int pos)
{
    if (seq < 0 || seq >= x->n_seq)
        return;
    for (int k = 0; k < HIST_ROWS; k++)
        if (x->hist_pos[seq * HIST_ROWS + k] >= pos)
            x->hist_pos[seq * HIST_ROWS + k] = -1;
}

static int as_draft(mtp_drafter *d, int seq, int32_t last, int pos, int n_max, float p_min, int32_t *out,
                    float *margin, bool flash, llmfs_error *err)
{
    (void)p_min; /* the assistant's drafts carry no probability to cut on (mtp.h) */
    assistant *x = impl(d);
    const kv_cache *kv = *x->target_kv;
    if (seq < 0 || seq >= x->n_seq || pos < 1 || n_max <= 0 || !kv || kv->seq_len[seq] != pos)
        return 0;
    const int k = seq * HIST_ROWS + (pos - 1) % HIST_ROWS;
    if (x->hist_pos[k] != pos - 1)
        return 0; /* the state before the last token is not known: no drafts */
    if (margin && n_max > x->logits_rows) {
        float *l = realloc(x->logits, sizeof(float) * (size_t)n_max * (size_t)x->V);
        if (!l)
            return llmfs_errorf(err, ENOMEM, "out of memory for draft logits");
        x->logits = l;
        x->logits_rows = n_max;
    }
    int rc = gemma4_assistant_draft(x->a, x->target, kv, seq, last, pos, x->hist + (size_t)k * x->E, n_max, flash,
                                    out, margin ? x->logits : NULL, NULL, err);
    if (rc < 0)
        return rc;
    for (int i = 0; margin && i < rc; i++) {
        const float *l = x->logits + (size_t)i * x->V;
        float a = l[out[i]], b = -INFINITY;
        for (int v = 0; v < x->V; v++)
            if (v != out[i] && l[v] > b)
                b = l[v];
        margin[i] = a - b;
    }
    /* a draft the target cannot take ends the chain there */
    for (int i = 0; i < rc; i++)
        if (out[i] < 0 || out[i] >= x->target->hp.n_vocab)
            return i;
    return rc;
}

static void as_accept(mtp_drafter *d, int seq, int pos0, int n_accepted)
{
    forget_from(impl(d), seq, pos0 + n_accepted + 1);
}

static void as_keep(mtp_drafter *d, int seq, int n)
{
    forget_from(impl(d), seq, n);
}

static const model *as_model(const mtp_drafter *d) { return gemma4_assistant_model(cimpl(d)->a); }
static const kv_cache *as_kv(const mtp_drafter *d)
{
    (void)d;
    return NULL; /* it reads the target's */
}

static const mtp_ops assistant_ops = {
    .kind = "assistant",
    .free = as_free,
    .resize = as_resize,
    .process = as_process,
    .draft = as_draft,
    .accept = as_accept,
    .keep = as_keep,
    .model = as_model,
    .kv = as_kv,
};

mtp_drafter *mtp_assistant_load(const char *path, const model *target, kv_cache *const *target_kv,
                                const spec_drafter_opts *o, llmfs_error *err)
{
    if (!path || !*path) {
        llmfs_errorf(err, EINVAL, "%s has no MTP head in its file: spec_draft_model names its assistant model",
                     target->hp.arch);
        return NULL;
    }
    assistant *x = calloc(1, sizeof *x);
    if (!x) {
        llmfs_errorf(err, ENOMEM, "out of memory");
        return NULL;
    }
    x->base.ops = &assistant_ops;
    x->target = target;
    x->target_kv = target_kv;
    x->E = target->hp.n_embd;
    x->V = target->hp.n_vocab;
    model_opts mo = {.n_threads = o->n_threads, .n_threads_batch = o->n_threads, .ngl = o->ngl};
    x->a = gemma4_assistant_load(path, target, &mo, err);
    if (!x->a || as_resize(&x->base, o->n_ctx, o->n_seq, err) < 0) {
        as_free(&x->base);
        return NULL;
    }
    return &x->base;
}
