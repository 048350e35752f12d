/* mtp.c — MTP drafters (mtp.h): the dispatch, and the nextn head of the hybrid Qwen
 * files.
 *
 * The nextn head is an MTP model (model_opts.mtp: one attention block and FFN whose
 * input pairs a token with the target's final hidden state of the position before) with
 * a KV cache of its own. Its cache holds, at every position p of a sequence, the row
 * computed from (token p, target hidden p-1), position 0 with a zero hidden state — the
 * target's verified states, never its own drafts: a draft chain's rows are removed once
 * the chain is drafted, and the verification batch's rows past the accepted ones when
 * the target has decided.
 *
 * A batch given to process is not decoded at once: its rows wait (up to PEND_ROWS per
 * sequence) until the next draft, which decodes the ones the target kept together with
 * the chain's first row in one forward pass — llama.cpp's process decode and first draft
 * decode as one, and the rejected rows never decoded. The cache holds the same rows.
 */
#include "mtp.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Target hidden rows kept per sequence, by position (ring): the row of the position
 * before the next batch or draft is always among the last few written. */
#define HIST_ROWS 64
/* Rows kept per sequence beyond the ring: those of the positions where the target's
 * recurrent state can resume (a checkpoint at the end of a prompt, mtp_pin), which a long
 * reply pushes out of the ring before the next prompt returns there. */
#define PIN_ROWS 4
/* Rows a sequence may hold back for its next draft; a longer batch (a prompt) is decoded
 * when it comes. */
#define PEND_ROWS 32

typedef struct nextn {
    mtp_drafter base;
    model *mdl;
    kv_cache *kv;
    int type_k, type_v;
    int n_vocab_target;
    int E;
    float *hist;          /* [n_seq][HIST_ROWS][E] target hidden rows */
    int *hist_pos;        /* [n_seq][HIST_ROWS] the position of each, -1 none */
    float *pin;           /* [n_seq][PIN_ROWS][E] pinned rows (mtp_pin) */
    int *pin_pos;         /* [n_seq][PIN_ROWS] their positions, -1 none */
    int *pin_next;        /* [n_seq] the slot the next pin takes (oldest first) */
    /* rows waiting for the next draft: positions pend_pos0[s] .. + pend_n[s] - 1, right
     * after the cache's rows (pend_pos0 = the cache's length) */
    int32_t *pend_tok;    /* [n_seq][PEND_ROWS] */
    float *pend_h;        /* [n_seq][PEND_ROWS][E] their hidden inputs (the state before) */
    int *pend_pos0, *pend_n;
    /* scratch */
    float *h_in;          /* [cap][E] input hidden rows of a batch */
    float *h_all;         /* [cap][E] output hidden rows of a batch */
    int32_t *tok, *pos, *seq;
    int8_t *lg;
    int cap;
    float *logits;        /* [V] */
    float *h_out;         /* [E] */
} nextn;

static nextn *impl(mtp_drafter *d) { return (nextn *)d; }
static const nextn *cimpl(const mtp_drafter *d) { return (const nextn *)d; }

/* ---- the hidden rows by position ---- */

static float *hist_row(nextn *x, int seq, int pos)
{
    return x->hist + ((size_t)seq * HIST_ROWS + (size_t)(pos % HIST_ROWS)) * (size_t)x->E;
}

static void hist_put(nextn *x, int seq, int pos, const float *h)
{
    memcpy(hist_row(x, seq, pos), h, sizeof(float) * (size_t)x->E);
    x->hist_pos[(size_t)seq * HIST_ROWS + (size_t)(pos % HIST_ROWS)] = pos;
}

/* The target's hidden row of position pos of seq into out; zeros at position -1 (the
 * MTP's row 0 has no state before it) or when it is no longer held. */
static bool hist_get(nextn *x, int seq, int pos, float *out)
{
    if (pos >= 0 && x->hist_pos[(size_t)seq * HIST_ROWS + (size_t)(pos % HIST_ROWS)] == pos) {
        memcpy(out, hist_row(x, seq, pos), sizeof(float) * (size_t)x->E);
        return true;
    }
    for (int k = 0; pos >= 0 && k < PIN_ROWS; k++)
        if (x->pin_pos[seq * PIN_ROWS + k] == pos) {
            memcpy(out, x->pin + ((size_t)seq * PIN_ROWS + (size_t)k) * (size_t)x->E, sizeof(float) * (size_t)x->E);
            return true;
        }
    memset(out, 0, sizeof(float) * (size_t)x->E);
    return pos < 0;
}

/* ---- nextn ---- */

static int room(nextn *x, int n)
{
    if (n <= x->cap)
        return 0;
    int c = x->cap ? x->cap : 16;
    while (c < n)
        c *= 2;
    float *h = realloc(x->h_in, sizeof(float) * (size_t)c * (size_t)x->E);
    if (h)
        x->h_in = h;
    float *ha = realloc(x->h_all, sizeof(float) * (size_t)c * (size_t)x->E);
    if (ha)
        x->h_all = ha;
    int32_t *tk = realloc(x->tok, sizeof(int32_t) * (size_t)c);
    if (tk)
        x->tok = tk;
    int32_t *p = realloc(x->pos, sizeof(int32_t) * (size_t)c);
    if (p)
        x->pos = p;
    int32_t *s = realloc(x->seq, sizeof(int32_t) * (size_t)c);
    if (s)
        x->seq = s;
    int8_t *l = realloc(x->lg, (size_t)c);
    if (l)
        x->lg = l;
    if (!h || !ha || !tk || !p || !s || !l)
        return -ENOMEM;
    x->cap = c;
    return 0;
}

static void nextn_free(mtp_drafter *d)
{
    nextn *x = impl(d);
    if (x->kv)
        kv_cache_free(x->kv);
    if (x->mdl)
        model_free(x->mdl);
    free(x->hist);
    free(x->hist_pos);
    free(x->pin), free(x->pin_pos), free(x->pin_next);
    free(x->pend_tok);
    free(x->pend_h);
    free(x->pend_pos0);
    free(x->pend_n);
    free(x->h_in);
    free(x->h_all);
    free(x->tok);
    free(x->pos);
    free(x->seq);
    free(x->lg);
    free(x->logits);
    free(x->h_out);
    free(x);
}

static int nextn_resize(mtp_drafter *d, int n_ctx, int n_seq, llmfs_error *err)
{
    nextn *x = impl(d);
    kv_cache *kv = kv_cache_alloc(x->mdl, n_ctx, n_seq, x->type_k, x->type_v, err);
    if (!kv)
        return err && err->code ? -err->code : -ENOMEM;
    float *hist = malloc(sizeof(float) * (size_t)n_seq * HIST_ROWS * (size_t)x->E);
    int *hp = malloc(sizeof(int) * (size_t)n_seq * HIST_ROWS);
    int32_t *pt = malloc(sizeof(int32_t) * (size_t)n_seq * PEND_ROWS);
    float *ph = malloc(sizeof(float) * (size_t)n_seq * PEND_ROWS * (size_t)x->E);
    int *p0 = calloc((size_t)n_seq, sizeof(int)), *pn = calloc((size_t)n_seq, sizeof(int));
    float *pin = malloc(sizeof(float) * (size_t)n_seq * PIN_ROWS * (size_t)x->E);
    int *pin_pos = malloc(sizeof(int) * (size_t)n_seq * PIN_ROWS), *pin_next = calloc((size_t)n_seq, sizeof(int));
    if (!hist || !hp || !pt || !ph || !p0 || !pn || !pin || !pin_pos || !pin_next) {
        free(hist), free(hp), free(pt), free(ph), free(p0), free(pn), free(pin), free(pin_pos), free(pin_next);
        kv_cache_free(kv);
        return llmfs_errorf(err, ENOMEM, "MTP: out of memory");
    }
    for (size_t i = 0; i < (size_t)n_seq * HIST_ROWS; i++)
        hp[i] = -1;
    for (size_t i = 0; i < (size_t)n_seq * PIN_ROWS; i++)
        pin_pos[i] = -1;
    free(x->pin), free(x->pin_pos), free(x->pin_next);
    x->pin = pin;
    x->pin_pos = pin_pos;
    x->pin_next = pin_next;
    if (x->kv)
        kv_cache_free(x->kv);
    free(x->hist), free(x->hist_pos), free(x->pend_tok), free(x->pend_h), free(x->pend_pos0), free(x->pend_n);
    x->kv = kv;
    x->hist = hist;
    x->hist_pos = hp;
    x->pend_tok = pt;
    x->pend_h = ph;
    x->pend_pos0 = p0;
    x->pend_n = pn;
    return 0;
}

/* Forgets positions >= n of seq: the waiting rows, the pinned rows and the cache. */
static void cut(nextn *x, int seq, int n)
{
    for (int k = 0; k < PIN_ROWS; k++)
        if (x->pin_pos[seq * PIN_ROWS + k] >= n)
            x->pin_pos[seq * PIN_ROWS + k] = -1;
    if (x->pend_n[seq] && n < x->pend_pos0[seq] + x->pend_n[seq])
        x->pend_n[seq] = n > x->pend_pos0[seq] ? n - x->pend_pos0[seq] : 0;
    if (x->kv->seq_len[seq] > n)
        kv_seq_keep(x->kv, seq, n);
    if (!x->pend_n[seq])
        x->pend_pos0[seq] = x->kv->seq_len[seq];
}

/* Decodes rows of seq at pos0..pos0+n-1 (tokens tok, hidden inputs h [n][E]); logits and
 * h_out of the last row when logits is set. */
static int decode(nextn *x, int seq, const int32_t *tok, int pos0, int n, const float *h, float *logits,
                  float *h_out, bool flash, llmfs_error *err)
{
    if (room(x, n) < 0)
        return llmfs_errorf(err, ENOMEM, "MTP: out of memory for a batch of %d", n);
    for (int i = 0; i < n; i++) {
        x->pos[i] = pos0 + i;
        x->seq[i] = seq;
        x->lg[i] = logits && i == n - 1;
    }
    fwd_batch b = {.n = n, .token = tok, .pos = x->pos, .seq = x->seq, .logits = x->lg};
    float *hid = h_out && n > 1 ? x->h_all : h_out; /* every row's: the last one is wanted */
    int rc = model_forward_mtp(x->mdl, x->kv, &b, h, logits, hid, flash, err);
    if (rc == 0 && hid != h_out)
        memcpy(h_out, hid + (size_t)(n - 1) * x->E, sizeof(float) * (size_t)x->E);
    if (rc < 0)
        kv_seq_keep(x->kv, seq, pos0);
    return rc;
}

/* The waiting rows of seq into the cache. */
static int flush(nextn *x, int seq, bool flash, llmfs_error *err)
{
    const int n = x->pend_n[seq];
    if (!n)
        return 0;
    x->pend_n[seq] = 0;
    int rc = decode(x, seq, x->pend_tok + (size_t)seq * PEND_ROWS, x->pend_pos0[seq], n,
                    x->pend_h + (size_t)seq * PEND_ROWS * x->E, NULL, NULL, flash, err);
    x->pend_pos0[seq] = x->kv->seq_len[seq];
    return rc;
}

static int nextn_process(mtp_drafter *d, int seq, const int32_t *tok, int pos0, int n, const float *hidden,
                         bool flash, llmfs_error *err)
{
    nextn *x = impl(d);
    const size_t E = (size_t)x->E;
    if (seq < 0 || seq >= x->kv->n_seq || pos0 < 0 || n < 0)
        return llmfs_errorf(err, EINVAL, "MTP: sequence %d, position %d", seq, pos0);
    if (n == 0)
        return 0;
    if (room(x, n) < 0)
        return llmfs_errorf(err, ENOMEM, "MTP: out of memory for a batch of %d", n);
    /* row i pairs token pos0 + i with the target's state of the position before it */
    bool have = hist_get(x, seq, pos0 - 1, x->h_in);
    memcpy(x->h_in + E, hidden, sizeof(float) * E * (size_t)(n - 1));
    for (int i = 0; i < n; i++)
        hist_put(x, seq, pos0 + i, hidden + (size_t)i * E);
    cut(x, seq, pos0);
    if (x->pend_pos0[seq] + x->pend_n[seq] < pos0 || !have)
        return 0; /* a gap before pos0: this sequence drafts nothing until it restarts */
    if (x->pend_n[seq] + n > PEND_ROWS) {
        int rc = flush(x, seq, flash, err);
        if (rc < 0)
            return rc;
        if (n > PEND_ROWS) {
            rc = decode(x, seq, tok, pos0, n, x->h_in, NULL, NULL, flash, err);
            x->pend_pos0[seq] = x->kv->seq_len[seq];
            return rc;
        }
    }
    const int k = x->pend_n[seq];
    memcpy(x->pend_tok + (size_t)seq * PEND_ROWS + k, tok, sizeof(int32_t) * (size_t)n);
    memcpy(x->pend_h + ((size_t)seq * PEND_ROWS + k) * E, x->h_in, sizeof(float) * E * (size_t)n);
    x->pend_n[seq] += n;
    return 0;
}

/* The largest logit's id (the lowest on ties) and, when margin is set, its lead over
 * the second (a second pass over the vocabulary, skipped when nobody asks). */
static int32_t top1(const float *l, int n, float *margin)
{
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b])
            b = i;
    if (!margin)
        return b;
    float second = -3.4e38f;
    for (int i = 0; i < n; i++)
        if (i != b && l[i] > second)
            second = l[i];
    *margin = l[b] - second;
    return b;
}

/* The probability of the best of l's n logits (best: its id) among the 10 largest:
 * llama.cpp's draft sampler keeps the top 10 candidates and takes their softmax. */
static double top10_p(const float *l, int n, int32_t best)
{
    float top[10];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (k == 10 && l[i] <= top[9])
            continue;
        int j = k < 10 ? k++ : 9; /* insertion into the descending list */
        while (j > 0 && top[j - 1] < l[i]) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = l[i];
    }
    double z = 0;
    for (int j = 0; j < k; j++)
        z += exp((double)top[j] - (double)l[best]);
    return 1.0 / z;
}

static int nextn_draft(mtp_drafter *d, int seq, int32_t last, int pos, int n_max, float p_min, int32_t *out,
                       float *margin, bool flash, llmfs_error *err)
{
    nextn *x = impl(d);
    const size_t E = (size_t)x->E;
    if (seq < 0 || seq >= x->kv->n_seq || n_max < 1 || pos < 0)
        return 0;
    cut(x, seq, pos);
    if (x->pend_pos0[seq] + x->pend_n[seq] < pos || pos + n_max > x->kv->n_ctx)
        return 0;
    /* the first row reads the target's state of pos - 1; each chained row the MTP's own
     * final state of the row before (after its output norm), at the next position. The
     * rows waiting since the last batch go in the first row's pass. */
    const int w = x->pend_n[seq];
    if (room(x, w + 1) < 0)
        return llmfs_errorf(err, ENOMEM, "MTP: out of memory");
    if (!hist_get(x, seq, pos - 1, x->h_in + (size_t)w * E))
        return 0;
    memcpy(x->h_in, x->pend_h + (size_t)seq * PEND_ROWS * E, sizeof(float) * E * (size_t)w);
    memcpy(x->tok, x->pend_tok + (size_t)seq * PEND_ROWS, sizeof(int32_t) * (size_t)w);
    x->tok[w] = last;
    const int p0 = pos - w;
    x->pend_n[seq] = 0;
    const int V = x->mdl->hp.n_vocab;
    int made = 0, rc = 0;
    int32_t t = last;
    for (int i = 0; i < n_max; i++) {
        /* logits [V], h_out [E] of the last row */
        if (i == 0)
            rc = decode(x, seq, x->tok, p0, w + 1, x->h_in, x->logits, x->h_out, flash, err);
        else
            rc = decode(x, seq, &t, pos + i, 1, x->h_in, x->logits, x->h_out, flash, err);
        if (rc < 0)
            break;
        float mg = 0;
        t = top1(x->logits, V, margin ? &mg : NULL);
        if (t >= x->n_vocab_target || tokenizer_is_eog(x->mdl->tok, t) ||
            (p_min > 0 && top10_p(x->logits, V, t) < p_min))
            break;
        out[made] = t;
        if (margin)
            margin[made] = mg;
        made++;
        memcpy(x->h_in, x->h_out, sizeof(float) * (size_t)x->E);
    }
    kv_seq_keep(x->kv, seq, pos); /* the chain's rows go: the verified ones replace them */
    x->pend_pos0[seq] = x->kv->seq_len[seq];
    return rc < 0 ? rc : made;
}

static void nextn_accept(mtp_drafter *d, int seq, int pos0, int n_accepted)
{
    nextn *x = impl(d);
    if (seq >= 0 && seq < x->kv->n_seq)
        cut(x, seq, pos0 + n_accepted + 1);
}

static void nextn_keep(mtp_drafter *d, int seq, int n)
{
    nextn *x = impl(d);
    if (seq >= 0 && seq < x->kv->n_seq)
        cut(x, seq, n);
}

static void nextn_pin(mtp_drafter *d, int seq, int pos)
{
    nextn *x = impl(d);
    if (seq < 0 || seq >= x->kv->n_seq || pos < 0 ||
        x->hist_pos[(size_t)seq * HIST_ROWS + (size_t)(pos % HIST_ROWS)] != pos)
        return;
    int k = 0;
    while (k < PIN_ROWS && x->pin_pos[seq * PIN_ROWS + k] != pos)
        k++;
    if (k == PIN_ROWS) /* not pinned yet: the oldest pin's slot */
        k = x->pin_next[seq], x->pin_next[seq] = (k + 1) % PIN_ROWS;
    memcpy(x->pin + ((size_t)seq * PIN_ROWS + (size_t)k) * (size_t)x->E, hist_row(x, seq, pos),
           sizeof(float) * (size_t)x->E);
    x->pin_pos[seq * PIN_ROWS + k] = pos;
}

static const model *nextn_model(const mtp_drafter *d) { return cimpl(d)->mdl; }
static const kv_cache *nextn_kv(const mtp_drafter *d) { return cimpl(d)->kv; }

static const mtp_ops nextn_ops = {
    .kind = "nextn",
    .free = nextn_free,
    .resize = nextn_resize,
    .process = nextn_process,
    .draft = nextn_draft,
    .accept = nextn_accept,
    .keep = nextn_keep,
    .pin = nextn_pin,
    .model = nextn_model,
    .kv = nextn_kv,
};

/* Whether an MTP file fits the target: same architecture, hidden size and vocabulary. */
static int check_match(const model *mtp, const model *target, llmfs_error *err)
{
    if (strcmp(mtp->hp.arch, target->hp.arch) != 0)
        return llmfs_errorf(err, EINVAL, "MTP file is %s, the target %s", mtp->hp.arch, target->hp.arch);
    if (mtp->hp.n_embd != target->hp.n_embd)
        return llmfs_errorf(err, EINVAL, "MTP hidden size %d differs from the target's %d", mtp->hp.n_embd,
                            target->hp.n_embd);
    if (mtp->hp.n_vocab != target->hp.n_vocab)
        return llmfs_errorf(err, EINVAL, "MTP vocabulary of %d differs from the target's %d", mtp->hp.n_vocab,
                            target->hp.n_vocab);
    return spec_vocab_check(target->tok, mtp->tok, err);
}

static mtp_drafter *nextn_load(const char *path, const char *target_path, const model *target,
                               const spec_drafter_opts *o, llmfs_error *err)
{
    nextn *x = calloc(1, sizeof *x);
    if (!x) {
        llmfs_errorf(err, ENOMEM, "out of memory");
        return NULL;
    }
    x->base.ops = &nextn_ops;
    const bool own = !path || !*path;
    model_opts mo = {
        .n_threads = o->n_threads,
        .n_threads_batch = o->n_threads,
        .n_ubatch = o->n_ubatch > 0 ? o->n_ubatch : 512,
        .ngl = o->ngl,
        .mtp = true,
    };
    x->mdl = model_load(own ? target_path : path, &mo, err);
    if (!x->mdl) {
        free(x);
        return NULL;
    }
    x->E = x->mdl->hp.n_embd;
    x->type_k = o->type_k;
    x->type_v = o->type_v;
    x->n_vocab_target = target->hp.n_vocab;
    x->logits = malloc(sizeof(float) * (size_t)x->mdl->hp.n_vocab);
    x->h_out = malloc(sizeof(float) * (size_t)x->E);
    if (!x->logits || !x->h_out) {
        llmfs_errorf(err, ENOMEM, "out of memory");
        nextn_free(&x->base);
        return NULL;
    }
    if ((!own && check_match(x->mdl, target, err) < 0) || nextn_resize(&x->base, o->n_ctx, o->n_seq, err) < 0) {
        nextn_free(&x->base);
        return NULL;
    }
    return &x->base;
}

/* The kinds of MTP drafter that work from the target model alone: the first that takes
 * the target (and the MTP file, when one is named) loads. Gemma 4's assistant, which
 * reads the target's cache, loads through mtp_assistant_load (mtp_gemma.c). */
static const struct {
    const char *kind;
    bool (*takes)(const char *path, const model *target);
    mtp_drafter *(*load)(const char *path, const char *target_path, const model *target, const spec_drafter_opts *o,
                         llmfs_error *err);
} kinds[] = {
    {"nextn", NULL, nextn_load}, /* the hybrid Qwen heads; it refuses any other model with its reason */
};

mtp_drafter *mtp_load(const char *path, const char *target_path, const model *target, const spec_drafter_opts *o,
                      llmfs_error *err)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!kinds[i].takes || kinds[i].takes(path, target))
            return kinds[i].load(path, target_path, target, o, err);
    llmfs_errorf(err, EINVAL, "no MTP drafter for %s", target->hp.arch);
    return NULL;
}

void mtp_free(mtp_drafter *d)
{
    if (d)
        d->ops->free(d);
}

int mtp_resize(mtp_drafter *d, int n_ctx, int n_seq, llmfs_error *err)
{
    return d->ops->resize(d, n_ctx, n_seq, err);
}

int mtp_process(mtp_drafter *d, int seq, const int32_t *tok, int pos0, int n, const float *hidden, bool flash,
                llmfs_error *err)
{
    return d->ops->process(d, seq, tok, pos0, n, hidden, flash, err);
}

int mtp_draft(mtp_drafter *d, int seq, int32_t last, int pos, int n_max, float p_min, int32_t *out, float *margin,
              bool flash, llmfs_error *err)
{
    return d->ops->draft(d, seq, last, pos, n_max, p_min, out, margin, flash, err);
}

void mtp_accept(mtp_drafter *d, int seq, int pos0, int n_accepted)
{
    d->ops->accept(d, seq, pos0, n_accepted);
}

void mtp_keep(mtp_drafter *d, int seq, int n)
{
    d->ops->keep(d, seq, n);
}

void mtp_pin(mtp_drafter *d, int seq, int pos)
{
    if (d->ops->pin)
        d->ops->pin(d, seq, pos);
}

const model *mtp_model(const mtp_drafter *d)
{
    return d ? d->ops->model(d) : NULL;
}

const kv_cache *mtp_kv(const mtp_drafter *d)
{
    return d ? d->ops->kv(d) : NULL;
}

const char *mtp_kind(const mtp_drafter *d)
{
    return d ? d->ops->kind : NULL;
}
