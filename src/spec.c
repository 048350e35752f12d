/* spec.c — drafting (n-gram, draft model) and the acceptance rules of speculative
 * decoding (spec.h). */
#include "spec.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- n-gram drafting ---- */

int spec_ngram_draft(const int32_t *toks, int n, int ngram_n, int min_hits, int n_max, int32_t *out)
{
    if (ngram_n < 1 || n_max < 1 || n <= ngram_n)
        return 0;
    const int32_t *key = toks + n - ngram_n;
    int hits = 0, found = -1;
    /* earlier occurrences start at i <= n - ngram_n - 1 (the key itself is not one);
     * scanning backwards finds the most recent first */
    for (int i = n - ngram_n - 1; i >= 0; i--) {
        if (memcmp(toks + i, key, sizeof *toks * (size_t)ngram_n) != 0)
            continue;
        if (found < 0)
            found = i;
        hits++;
    }
    if (found < 0 || hits < (min_hits > 1 ? min_hits : 1))
        return 0;
    int from = found + ngram_n; /* first token after the occurrence, < n */
    for (int j = 0; j < n_max; j++) {
        int k = from + j;
        /* past the end of toks the continuation is the drafts themselves: toks + out is
         * one sequence, so a cycle shorter than n_max repeats */
        out[j] = k < n ? toks[k] : out[k - n];
    }
    return n_max;
}

/* ---- acceptance ---- */

int spec_accept_greedy(const int32_t *drafts, int k, const int32_t *target_ids)
{
    int a = 0;
    while (a < k && drafts[a] == target_ids[a])
        a++;
    return a;
}

int32_t spec_draw(const float *w, int n, double u)
{
    double total = 0;
    for (int i = 0; i < n; i++)
        if (w[i] > 0)
            total += w[i];
    double x = u * total, acc = 0;
    int32_t last = -1;
    for (int i = 0; i < n; i++) {
        if (!(w[i] > 0))
            continue;
        acc += w[i];
        last = i;
        if (x < acc)
            return i;
    }
    return last >= 0 ? last : 0;
}

int32_t spec_accept_sampled(float *p, int n_vocab, int32_t x, double u, double v)
{
    if (x >= 0 && x < n_vocab) {
        if (u < (double)p[x])
            return x;
        /* the residual max(0, p - q) with q one-hot at x: p without x */
        p[x] = 0;
    }
    return spec_draw(p, n_vocab, v);
}

/* ---- vocabulary ---- */

int spec_vocab_check(const tokenizer *target, const tokenizer *draft, llmfs_error *err)
{
    int nt = tokenizer_n_vocab(target), nd = tokenizer_n_vocab(draft);
    int n = nt < nd ? nt : nd;
    if (n <= 0)
        return llmfs_errorf(err, EINVAL, "draft model has no vocabulary");
    for (int i = 0; i < n; i++) {
        const char *a = tokenizer_text(target, i), *b = tokenizer_text(draft, i);
        if (!a || !b || strcmp(a, b) != 0)
            return llmfs_errorf(err, EINVAL,
                                "draft vocabulary differs from the target's at token %d ('%.40s' vs '%.40s')",
                                i, a ? a : "", b ? b : "");
    }
    return 0;
}

/* ---- the draft model ---- */

/* What one sequence of the draft's cache holds: the tokens at positions 0..n. */
typedef struct held_seq {
    int32_t *tokens;
    int n, cap;
} held_seq;

struct spec_drafter {
    model *mdl;
    kv_cache *kv;
    int type_k, type_v;
    int n_vocab_target;
    held_seq *held;        /* [kv->n_seq] */
    /* batch arrays */
    int32_t *tok, *pos, *seq;
    int8_t *lg;
    int cap_b;
    float *logits;         /* [rows][n_vocab] when p_min is used */
    int32_t *ids;          /* [rows] */
    int cap_rows;
    int *row_of;           /* [n req]: the logits row of each request this round, -1 none */
    int cap_req;
};

static int reserve(void **p, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return 0;
    int c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, elem * (size_t)c);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int batch_room(spec_drafter *d, int n)
{
    if (n <= d->cap_b)
        return 0;
    int c = n > 2 * d->cap_b ? n : 2 * d->cap_b;
    int32_t *t = realloc(d->tok, sizeof *t * (size_t)c);
    if (t)
        d->tok = t;
    int32_t *p = realloc(d->pos, sizeof *p * (size_t)c);
    if (p)
        d->pos = p;
    int32_t *q = realloc(d->seq, sizeof *q * (size_t)c);
    if (q)
        d->seq = q;
    int8_t *g = realloc(d->lg, (size_t)c);
    if (g)
        d->lg = g;
    if (!t || !p || !q || !g)
        return -ENOMEM;
    d->cap_b = c;
    return 0;
}

static int rows_room(spec_drafter *d, int rows, bool want_logits)
{
    if (rows <= d->cap_rows && (!want_logits || d->logits))
        return 0;
    int c = rows > d->cap_rows ? rows : d->cap_rows;
    int32_t *ids = realloc(d->ids, sizeof *ids * (size_t)c);
    if (!ids)
        return -ENOMEM;
    d->ids = ids;
    if (want_logits || d->logits) {
        float *l = realloc(d->logits, sizeof *l * (size_t)c * (size_t)d->mdl->hp.n_vocab);
        if (!l)
            return -ENOMEM;
        d->logits = l;
    }
    d->cap_rows = c;
    return 0;
}

static void held_free(spec_drafter *d)
{
    for (int i = 0; d->held && d->kv && i < d->kv->n_seq; i++)
        free(d->held[i].tokens);
    free(d->held);
    d->held = NULL;
}

spec_drafter *spec_drafter_load(const char *path, const tokenizer *target_tok, int target_n_vocab,
                                const spec_drafter_opts *o, llmfs_error *err)
{
    spec_drafter *d = calloc(1, sizeof *d);
    if (!d) {
        llmfs_errorf(err, ENOMEM, "out of memory");
        return NULL;
    }
    model_opts mo = {
        .n_threads = o->n_threads,
        .n_threads_batch = o->n_threads,
        .n_ubatch = o->n_ubatch > 0 ? o->n_ubatch : 512,
        .ngl = o->ngl,
    };
    d->mdl = model_load(path, &mo, err);
    if (!d->mdl) {
        free(d);
        return NULL;
    }
    d->n_vocab_target = target_n_vocab;
    d->type_k = o->type_k;
    d->type_v = o->type_v;
    if (spec_vocab_check(target_tok, d->mdl->tok, err) < 0 ||
        spec_drafter_resize(d, o->n_ctx, o->n_seq, err) < 0) {
        spec_drafter_free(d);
        return NULL;
    }
    return d;
}

void spec_drafter_free(spec_drafter *d)
{
    if (!d)
        return;
    held_free(d);
    if (d->kv)
        kv_cache_free(d->kv);
    if (d->mdl)
        model_free(d->mdl);
    free(d->tok);
    free(d->pos);
    free(d->seq);
    free(d->lg);
    free(d->logits);
    free(d->ids);
    free(d->row_of);
    free(d);
}

int spec_drafter_resize(spec_drafter *d, int n_ctx, int n_seq, llmfs_error *err)
{
    kv_cache *kv = kv_cache_alloc(d->mdl, n_ctx, n_seq, d->type_k, d->type_v, err);
    if (!kv)
        return err && err->code ? -err->code : -ENOMEM;
    held_seq *held = calloc((size_t)n_seq, sizeof *held);
    if (!held) {
        kv_cache_free(kv);
        return llmfs_errorf(err, ENOMEM, "out of memory");
    }
    held_free(d);
    if (d->kv)
        kv_cache_free(d->kv);
    d->kv = kv;
    d->held = held;
    return 0;
}

const model *spec_drafter_model(const spec_drafter *d)
{
    return d ? d->mdl : NULL;
}

const kv_cache *spec_drafter_kv(const spec_drafter *d)
{
    return d ? d->kv : NULL;
}

/* The draft's choice from row r: its argmax, and whether its probability reaches
 * p_min (softmax of the row; only computed when p_min > 0). */
static int32_t pick(spec_drafter *d, int r, float p_min, bool *confident)
{
    *confident = true;
    if (p_min <= 0)
        return d->ids[r];
    int nv = d->mdl->hp.n_vocab;
    const float *l = d->logits + (size_t)r * (size_t)nv;
    int32_t best = 0;
    for (int i = 1; i < nv; i++)
        if (l[i] > l[best])
            best = i;
    double z = 0;
    for (int i = 0; i < nv; i++)
        z += exp((double)l[i] - l[best]);
    *confident = 1.0 / z >= p_min;
    return best;
}

/* Runs the batch built in d->tok..lg (n tokens, rows with logits). */
static int forward(spec_drafter *d, int n, int rows, float p_min, bool flash_attn, llmfs_error *err)
{
    if (rows_room(d, rows, p_min > 0) < 0)
        return llmfs_errorf(err, ENOMEM, "out of memory for draft logits");
    fwd_batch b = {.n = n, .token = d->tok, .pos = d->pos, .seq = d->seq, .logits = d->lg};
    if (p_min > 0)
        return model_forward(d->mdl, d->kv, &b, d->logits, flash_attn, err);
    return model_forward_ids(d->mdl, d->kv, &b, d->ids, flash_attn, err);
}

/* Whether a drafted id can be proposed to the target. */
static bool usable(const spec_drafter *d, int32_t t)
{
    return t >= 0 && t < d->n_vocab_target && !tokenizer_is_eog(d->mdl->tok, t);
}

int spec_drafter_run(spec_drafter *d, spec_draft_req *reqs, int n, float p_min, bool flash_attn,
                     llmfs_error *err)
{
    if (reserve((void **)&d->row_of, &d->cap_req, n, sizeof *d->row_of) < 0)
        return llmfs_errorf(err, ENOMEM, "out of memory");
    /* 1. bring each sequence up to its tokens: keep the prefix the cache holds, evaluate
     * the rest (the last token always, for its logits) */
    int nb = 0, rows = 0;
    for (int i = 0; i < n; i++) {
        spec_draft_req *r = &reqs[i];
        r->n_out = 0;
        d->row_of[i] = -1;
        if (r->n_max < 1 || r->n_toks < 1 || r->seq < 0 || r->seq >= d->kv->n_seq ||
            r->n_toks + r->n_max - 1 > d->kv->n_ctx)
            continue;
        held_seq *h = &d->held[r->seq];
        int keep = 0, lim = h->n < r->n_toks - 1 ? h->n : r->n_toks - 1;
        while (keep < lim && h->tokens[keep] == r->toks[keep])
            keep++;
        h->n = kv_seq_keep(d->kv, r->seq, keep); /* less where a recurrent state cannot be cut back */
        if (batch_room(d, nb + r->n_toks - h->n) < 0)
            return llmfs_errorf(err, ENOMEM, "out of memory for a draft batch");
        for (int p = h->n; p < r->n_toks; p++, nb++) {
            d->tok[nb] = r->toks[p];
            d->pos[nb] = p;
            d->seq[nb] = r->seq;
            d->lg[nb] = p == r->n_toks - 1;
        }
        d->row_of[i] = rows++;
    }
    if (rows == 0)
        return 0;
    int rc = forward(d, nb, rows, p_min, flash_attn, err);
    for (int i = 0; i < n; i++) {
        spec_draft_req *r = &reqs[i];
        if (d->row_of[i] < 0)
            continue;
        held_seq *h = &d->held[r->seq];
        if (rc < 0) {
            h->n = kv_seq_keep(d->kv, r->seq, 0);
            d->row_of[i] = -1;
            continue;
        }
        if (reserve((void **)&h->tokens, &h->cap, r->n_toks + r->n_max, sizeof *h->tokens) < 0) {
            h->n = kv_seq_keep(d->kv, r->seq, 0);
            d->row_of[i] = -1;
            continue;
        }
        memcpy(h->tokens + h->n, r->toks + h->n, sizeof *h->tokens * (size_t)(r->n_toks - h->n));
        h->n = r->n_toks;
        /* a hybrid draft resumes from here when the target rejects its drafts */
        kv_checkpoint_save(d->kv, r->seq);
        bool confident;
        int32_t t = pick(d, d->row_of[i], p_min, &confident);
        if (!confident || !usable(d, t)) {
            d->row_of[i] = -1;
            continue;
        }
        r->out[r->n_out++] = t;
    }
    if (rc < 0)
        return rc;
    /* 2. one draft token per round for every sequence still going */
    for (;;) {
        nb = rows = 0;
        for (int i = 0; i < n; i++) {
            spec_draft_req *r = &reqs[i];
            if (d->row_of[i] < 0 || r->n_out >= r->n_max) {
                d->row_of[i] = -1;
                continue;
            }
            if (batch_room(d, nb + 1) < 0)
                return llmfs_errorf(err, ENOMEM, "out of memory for a draft batch");
            d->tok[nb] = r->out[r->n_out - 1];
            d->pos[nb] = r->n_toks + r->n_out - 1;
            d->seq[nb] = r->seq;
            d->lg[nb] = 1;
            nb++;
            d->row_of[i] = rows++;
        }
        if (rows == 0)
            return 0;
        rc = forward(d, nb, rows, p_min, flash_attn, err);
        for (int i = 0; i < n; i++) {
            spec_draft_req *r = &reqs[i];
            if (d->row_of[i] < 0)
                continue;
            held_seq *h = &d->held[r->seq];
            if (rc < 0) {
                h->n = kv_seq_keep(d->kv, r->seq, 0);
                continue;
            }
            h->tokens[h->n++] = r->out[r->n_out - 1];
            bool confident;
            int32_t t = pick(d, d->row_of[i], p_min, &confident);
            if (!confident || !usable(d, t)) {
                d->row_of[i] = -1;
                continue;
            }
            r->out[r->n_out++] = t;
        }
        if (rc < 0)
            return rc;
    }
}
