/* scheduler.c — one thread per model that turns queued prompts into tokens.
 *
 * Each step: (1) under the model lock, give queued sessions a KV slot and plan a batch:
 * one token for every generating session, then prompt chunks for the ones in prefill,
 * up to `batch` tokens in all; (2) without the lock, run the whole batch as one
 * model_forward call (every session is its own sequence), sample each session's next
 * token and append its text to the output stream and transcript; (3) under the lock,
 * record what the slots now hold and end the turns that stopped; (4) without the lock,
 * send EOF to the outputs of those turns. A turn's state is idle before its output ends,
 * so a reader that sees EOF can write the next prompt at once.
 */
#include "engine.h"
#include "cpuset.h"
#include "stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct plan_entry {
    llmfs_session *s;
    int start, count;   /* tokens toks[start..start+count) at positions start.. */
    bool logits;        /* the last of them ends the known sequence: sample after it */
    bool was_prefill;
    const vision_span *image; /* the range is this image's rows: evaluated alone, non-causal */
    int row;            /* logits row (the first of 1 + n_draft when speculating) */
    int n_new;          /* tokens sampled and kept this step */
    /* speculative decoding (spec.h): up to spec_max drafts verified after the last
     * token; n_accepted of them taken, n_kept of those appended to toks (a draft that is
     * the end of generation is taken but not kept) */
    int spec_max, n_draft, n_accepted, n_kept;
    int draft_off;      /* the drafts: sc->drafts + draft_off */
    int b_off;          /* where its tokens start in the batch (its hidden rows with MTP) */
    const char *reason; /* set when the turn ends this step */
    char why[256];
    turn_streams ended; /* the ended turn's streams (session_end_turn_locked) */
    int end_flags;
} plan_entry;

typedef struct sched {
    llmfs_model *m;
    plan_entry *e;
    int n_e, cap_e;
    int32_t *tok, *pos, *seq;
    int8_t *lg;
    int cap_b;
    float *logits;
    int32_t *ids;      /* the greedy choices, when every row is argmax-sampled */
    int cap_rows;
    int32_t *drafts;   /* every entry's drafts */
    int cap_drafts;
    spec_draft_req *reqs; /* sequences the draft model drafts for */
    int cap_reqs;
    float *probs;      /* [n_vocab] a row's distribution (speculative sampling) */
    float *hidden;     /* [n][n_embd] the batch's final hidden states, for the MTP head */
    int cap_hidden;
    double t_draft;    /* seconds spent drafting this step */
} sched;

static int grow(void **p, int *cap, int need, size_t elem)
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

/* Image positions (-1) never match: two images are not compared. */
static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb)
{
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i] && a[i] >= 0)
        i++;
    return i;
}

/* The session's first image span that ends after position p, NULL none. */
static const vision_span *span_from(const llmfs_session *s, int p)
{
    for (int i = 0; i < s->n_spans; i++)
        if (s->spans[i].start + s->spans[i].n > p)
            return &s->spans[i];
    return NULL;
}

static bool busy(const llmfs_session *s)
{
    return s->state != SS_IDLE;
}

/* Gives a slot to queued sessions, oldest first: their own, else a free one (the one
 * sharing the longest prefix), else the least recently used slot of an idle session. */
static void assign_slots(llmfs_model *m)
{
    for (;;) {
        llmfs_session *s = NULL;
        for (int i = 0; i < m->n_sessions; i++) {
            llmfs_session *c = m->sessions[i];
            if (c->state == SS_QUEUED && !atomic_load(&c->stop_req) && !c->closed &&
                (!s || c->queue_seq < s->queue_seq))
                s = c;
        }
        if (!s)
            return;
        int best = -1;
        if (s->slot >= 0 && m->slots[s->slot].owner == s) {
            best = s->slot;
        } else {
            int best_lcp = -1;
            for (int k = 0; k < m->n_slots; k++) {
                if (m->slots[k].owner)
                    continue;
                int l = common_prefix(m->slots[k].tokens, m->slots[k].n, s->toks, s->n_toks);
                if (l > best_lcp)
                    best_lcp = l, best = k;
            }
            if (best < 0) {
                double oldest = 0;
                for (int k = 0; k < m->n_slots; k++) {
                    llmfs_session *o = m->slots[k].owner;
                    if (o && !busy(o) && (best < 0 || m->slots[k].last_used < oldest))
                        best = k, oldest = m->slots[k].last_used;
                }
                if (best < 0)
                    return; /* every slot is generating: wait */
                m->slots[best].owner->slot = -1;
            }
        }
        kv_slot *sl = &m->slots[best];
        sl->owner = s;
        s->slot = best;
        int keep = common_prefix(sl->tokens, sl->n, s->toks, s->n_toks);
        if (keep > s->n_toks - 1)
            keep = s->n_toks - 1; /* the last token is evaluated again for its logits */
        keep = kv_seq_keep(m->kv, best, keep); /* less where a recurrent state cannot be cut back */
        if (m->mtp)
            mtp_keep(m->mtp, best, keep);
        sl->n = keep;
        sl->last_used = engine_now();
        s->n_cached = keep;
        s->n_prompt = s->n_toks - keep;
        s->state = SS_PREFILL;
        s->t_prefill = engine_now();
    }
}

static plan_entry *add_entry(sched *sc, llmfs_session *s)
{
    if (grow((void **)&sc->e, &sc->cap_e, sc->n_e + 1, sizeof *sc->e) < 0)
        return NULL;
    plan_entry *e = &sc->e[sc->n_e++];
    memset(e, 0, sizeof *e);
    e->s = s;
    session_ref(s);
    return e;
}

/* How many drafts a generating session may have verified this step (m->mu held): the
 * model's n_max, less where the context or n_predict ends sooner (the last draft sits at
 * position n_toks - 1 + k and every accepted one is a generated token). An MTP head
 * drafts from the target's hidden state of the token before, so not with the prompt's
 * last chunk (prefill): its first drafts follow the first generated token, as in
 * llama.cpp's server. */
static int spec_room(llmfs_model *m, const llmfs_session *s, bool prefill)
{
    if (!m->spec_mask || !s->settings.spec || !m->kv || (prefill && (m->spec_mask & SPEC_MTP)))
        return 0;
    int k = m->settings.spec_draft_n_max;
    if (k > m->kv->n_ctx - s->n_toks)
        k = m->kv->n_ctx - s->n_toks;
    if (s->n_predict >= 0 && k > s->n_predict - s->n_gen - 1)
        k = s->n_predict - s->n_gen - 1;
    return k > 0 ? k : 0;
}

/* Phase 1, m->mu held. Returns the number of tokens to evaluate. */
static int plan(sched *sc)
{
    llmfs_model *m = sc->m;
    sc->n_e = 0;
    /* turns stopped or closed before they got a slot end without evaluating anything */
    for (int i = 0; i < m->n_sessions; i++) {
        llmfs_session *s = m->sessions[i];
        if (s->state == SS_QUEUED && (atomic_load(&s->stop_req) || s->closed)) {
            plan_entry *e = add_entry(sc, s);
            if (e)
                e->reason = "stopped";
        }
    }
    assign_slots(m);
    int budget = m->settings.batch, total = 0;
    for (int i = 0; i < m->n_sessions; i++) {
        llmfs_session *s = m->sessions[i];
        if (s->state != SS_GEN)
            continue;
        plan_entry *e = add_entry(sc, s);
        if (!e)
            break;
        e->start = m->slots[s->slot].n;
        e->count = s->n_toks - e->start;
        e->logits = true;
        e->spec_max = spec_room(m, s, false);
        total += e->count + e->spec_max;
    }
    budget -= total;
    for (;;) {
        llmfs_session *s = NULL;
        for (int i = 0; i < m->n_sessions; i++) {
            llmfs_session *c = m->sessions[i];
            bool planned = false;
            for (int k = 0; k < sc->n_e && !planned; k++)
                planned = sc->e[k].s == c;
            if (c->state == SS_PREFILL && !planned && (!s || c->queue_seq < s->queue_seq))
                s = c;
        }
        if (!s || budget <= 0)
            break;
        int start = m->slots[s->slot].n, pending = s->n_toks - start;
        int take = pending < budget ? pending : budget;
        /* a recurrent state cannot be cut back: the prompt stops one token short of its
         * end for a checkpoint (commit), from which the same prompt again, a reset that
         * keeps it or a follow-up whose reply differs resumes */
        if (m->kv->n_recurrent && start < s->n_toks - 1 && take > s->n_toks - 1 - start)
            take = s->n_toks - 1 - start;
        /* an image is evaluated whole and on its own (the prompt checked that it fits a
         * micro-batch); text stops where one begins */
        const vision_span *img = span_from(s, start);
        if (img && img->start <= start)
            take = img->start + img->n - start;
        else if (img && img->start < start + take)
            take = img->start - start;
        plan_entry *e = add_entry(sc, s);
        if (!e)
            break;
        e->image = img && img->start <= start ? img : NULL;
        e->start = start;
        e->count = take;
        e->logits = take == pending;
        e->was_prefill = true;
        /* the prompt's last chunk verifies drafts too: the first token is speculated */
        if (e->logits) {
            e->spec_max = spec_room(m, s, true);
            total += e->spec_max;
        }
        budget -= take;
        total += take;
    }
    return total;
}

/* Where a reply's text goes: the answer to output and into the conversation, the
 * reasoning to its own stream; failed is set when any of them could not take its part. */
typedef struct reply_sink {
    llmfs_session *s;
    bool failed;
} reply_sink;

static void answer_part(void *arg, const char *text, size_t n)
{
    reply_sink *k = arg;
    if (stream_append(k->s->out, text, n) == -ENOMEM || session_reply_append(k->s, text, n) < 0)
        k->failed = true;
}

/* The answer passes the stop strings on its way to output. */
static void reply_part(void *arg, bool reasoning, const char *text, size_t n)
{
    reply_sink *k = arg;
    if (reasoning) {
        if (stream_append(k->s->reasoning, text, n) == -ENOMEM)
            k->failed = true;
        return;
    }
    if (stop_filter_push(&k->s->stops, text, n, answer_part, k) < 0)
        k->failed = true;
}

/* Appends generated text: the transcript keeps the reply as the model wrote it, markers
 * included, the rest is split (reply_part). flush: the end of the reply, text held back
 * by an unfinished marker goes out too. -ENOMEM when any part could not be taken: the
 * turn must then end as an error, since a reply with a hole in it would pass for a whole
 * one. */
int sched_reply_text(llmfs_session *s, const char *text, int n, bool flush)
{
    reply_sink k = {s, false};
    if (n > 0) {
        if (stream_append(s->transcript, text, (size_t)n) == -ENOMEM)
            k.failed = true;
        reason_split_push(&s->rsplit, text, (size_t)n, reply_part, &k);
    }
    if (flush) {
        reason_split_flush(&s->rsplit, reply_part, &k);
        stop_filter_flush(&s->stops, answer_part, &k);
    }
    return k.failed ? -ENOMEM : 0;
}

/* Writes the end line of a turn to the transcript (before the session becomes idle, so
 * the next turn's lines come after it). */
void sched_transcript_end(llmfs_session *s, const char *reason, const char *why, double now, double t_first,
                          int n_gen, int draft_n, int draft_accepted)
{
    if (stream_last_byte(s->transcript) != '\n')
        stream_append(s->transcript, "\n", 1);
    double ttft = t_first > 0 ? (t_first - s->t_prompt) * 1e3 : 0;
    double tg = n_gen > 1 && now > t_first ? (n_gen - 1) / (now - t_first) : 0;
    char spec[96] = "";
    if (draft_n > 0)
        snprintf(spec, sizeof spec, ", drafted %d, accepted %d (%.1f%%)", draft_n, draft_accepted,
                 100.0 * draft_accepted / draft_n);
    stream_printf(s->transcript, "### end %s%s%s%s: prompt %d tokens (%d cached), %d generated, ttft %.1f ms, %.1f tokens/s%s\n",
                  reason, why && *why ? " (" : "", why && *why ? why : "", why && *why ? ")" : "",
                  s->n_prompt, s->n_cached, n_gen, ttft, tg, spec);
}

/* Room for n tokens in the batch arrays. */
static int batch_reserve(sched *sc, int n)
{
    if (n <= sc->cap_b)
        return 0;
    int c = sc->cap_b * 2 > n ? sc->cap_b * 2 : n;
    int32_t *t = realloc(sc->tok, sizeof *t * (size_t)c);
    if (t)
        sc->tok = t;
    int32_t *p = realloc(sc->pos, sizeof *p * (size_t)c);
    if (p)
        sc->pos = p;
    int32_t *q = realloc(sc->seq, sizeof *q * (size_t)c);
    if (q)
        sc->seq = q;
    int8_t *g = realloc(sc->lg, (size_t)c);
    if (g)
        sc->lg = g;
    if (!t || !p || !q || !g)
        return -ENOMEM;
    sc->cap_b = c;
    return 0;
}

/* Drafts for every entry that may speculate (without the lock; the session's tokens
 * belong to this thread while it generates): n-gram first, the draft model for the rest,
 * all its sequences in one batch per drafted position. Fewer than spec_draft_n_min drafts
 * are dropped. A draft model that fails only costs this step's drafts. */
static void draft_step(sched *sc)
{
    llmfs_model *m = sc->m;
    const llmfs_settings *ms = &m->settings;
    int need = 0, n_req = 0;
    for (int i = 0; i < sc->n_e; i++)
        if (!sc->e[i].reason && sc->e[i].spec_max > 0)
            sc->e[i].draft_off = need, need += sc->e[i].spec_max, n_req++;
    if (need == 0)
        return;
    double t0 = engine_now();
    if (grow((void **)&sc->drafts, &sc->cap_drafts, need, sizeof *sc->drafts) < 0 ||
        grow((void **)&sc->reqs, &sc->cap_reqs, n_req, sizeof *sc->reqs) < 0) {
        for (int i = 0; i < sc->n_e; i++)
            sc->e[i].spec_max = 0;
        return;
    }
    n_req = 0;
    for (int i = 0; i < sc->n_e; i++) {
        plan_entry *e = &sc->e[i];
        if (e->reason || e->spec_max == 0)
            continue;
        llmfs_session *s = e->s;
        int32_t *out = sc->drafts + e->draft_off;
        if ((m->spec_mask & SPEC_MTP) && m->mtp) {
            /* the chain from the last token, at its position (the MTP cache holds the
             * ones before it); a failure only costs this step's drafts */
            llmfs_error err = {0};
            int k = mtp_draft(m->mtp, s->slot, s->toks[s->n_toks - 1], s->n_toks - 1, e->spec_max,
                              ms->spec_draft_p_min, out, NULL, ms->flash_attn, &err);
            e->n_draft = k > 0 ? k : 0;
            continue;
        }
        if (m->spec_mask & SPEC_NGRAM)
            e->n_draft = spec_ngram_draft(s->toks, s->n_toks, ms->spec_ngram_n, ms->spec_ngram_min_hits,
                                          e->spec_max, out);
        if (e->n_draft == 0 && (m->spec_mask & SPEC_DRAFT) && m->drafter)
            sc->reqs[n_req++] = (spec_draft_req){.seq = s->slot, .toks = s->toks, .n_toks = s->n_toks,
                                                 .n_max = e->spec_max, .out = out};
    }
    if (n_req > 0) {
        llmfs_error err = {0};
        int rc = spec_drafter_run(m->drafter, sc->reqs, n_req, ms->spec_draft_p_min, ms->flash_attn, &err);
        for (int r = 0, i = 0; r < n_req; r++) {
            while (sc->e[i].reason || sc->e[i].spec_max == 0 || sc->drafts + sc->e[i].draft_off != sc->reqs[r].out)
                i++;
            sc->e[i].n_draft = rc < 0 ? 0 : sc->reqs[r].n_out;
        }
    }
    for (int i = 0; i < sc->n_e; i++)
        if (sc->e[i].n_draft < ms->spec_draft_n_min)
            sc->e[i].n_draft = 0;
    sc->t_draft = engine_now() - t0;
}

/* After the target's forward pass: the MTP head gets every text entry's tokens (drafts
 * included) with their hidden rows, so its cache follows the target's. A failure only
 * costs that sequence's drafts. Counts as drafting time. */
static void mtp_step(sched *sc, int n)
{
    llmfs_model *m = sc->m;
    const int E = m->mdl->hp.n_embd;
    double t0 = engine_now();
    for (int i = 0; i < sc->n_e; i++) {
        plan_entry *e = &sc->e[i];
        if (e->reason || e->image || e->b_off + e->count + e->n_draft > n)
            continue;
        llmfs_error err = {0};
        if (mtp_process(m->mtp, e->s->slot, sc->tok + e->b_off, e->start, e->count + e->n_draft,
                        sc->hidden + (size_t)e->b_off * E, m->settings.flash_attn, &err) < 0)
            mtp_keep(m->mtp, e->s->slot, 0);
    }
    sc->t_draft += engine_now() - t0;
}

/* Appends a sampled token to the session (its text to the reply); sets e->reason when
 * the turn ends with it. Returns true when the token was appended. */
static bool take_token(sched *sc, plan_entry *e, int32_t t, int n_ctx)
{
    llmfs_model *m = sc->m;
    llmfs_session *s = e->s;
    if (tokenizer_is_eog(m->mdl->tok, t)) {
        e->reason = "eos";
        return false;
    }
    if (grow((void **)&s->toks, &s->cap_toks, s->n_toks + 1, sizeof *s->toks) < 0) {
        e->reason = "error";
        snprintf(e->why, sizeof e->why, "out of memory");
        return false;
    }
    s->toks[s->n_toks++] = t;
    e->n_new++;
    char text[1024];
    int k = detok_push(m->mdl->tok, &s->detok, t, text, sizeof text);
    int gen = s->n_gen + e->n_new;
    if (sched_reply_text(s, text, k < (int)sizeof text ? k : (int)sizeof text, false) < 0) {
        e->reason = "error";
        snprintf(e->why, sizeof e->why, "out of memory for the reply");
    } else if (s->stops.hit)
        e->reason = "stop_string";
    else if (s->n_predict >= 0 && gen >= s->n_predict)
        e->reason = "length";
    else if (s->n_toks > n_ctx) /* no position left to evaluate it at */
        e->reason = "context";
    return true;
}

/* The target's token at logits row j of entry e, given the draft d there (-1: none, the
 * row after the last draft). Greedy rows take the argmax; sampled rows with a draft apply
 * the speculative-sampling test (spec.h), so the token is distributed as the target's
 * sampler would draw it either way. */
static int32_t target_token(sched *sc, plan_entry *e, int j, int32_t d, bool ids_only)
{
    llmfs_model *m = sc->m;
    llmfs_session *s = e->s;
    if (ids_only)
        return sc->ids[e->row + j];
    const float *row = sc->logits + (size_t)(e->row + j) * (size_t)m->n_vocab;
    if (d < 0 || !sc->probs)
        return sampler_sample(s->smp, row, s->toks, s->n_toks);
    sampler_probs(s->smp, row, s->toks, s->n_toks, sc->probs);
    double u = sampler_uniform(s->smp), v = sampler_uniform(s->smp);
    return spec_accept_sampled(sc->probs, m->n_vocab, d, u, v);
}

/* Phase 2, without the lock: drafting, the forward pass and sampling. Returns the
 * forward pass's result (every entry then ends with "error"). */
static int run_step(sched *sc, int total, double *t_fwd)
{
    llmfs_model *m = sc->m;
    int rows = 0, n = 0;
    int rc = 0;
    bool ids_only = false;
    llmfs_error err = {0};
    sc->t_draft = 0;
    if (total > 0)
        draft_step(sc);
    bool sampled_drafts = false;
    if (total > 0) {
        if (batch_reserve(sc, total) < 0)
            rc = llmfs_errorf(&err, ENOMEM, "out of memory for a batch of %d tokens", total);
        /* images first, each in a forward call of its own: its tokens see each other */
        for (int i = 0; i < sc->n_e && !rc; i++) {
            plan_entry *e = &sc->e[i];
            if (e->reason || !e->image)
                continue;
            const int skip = e->start - e->image->start; /* rows already in the cache */
            for (int j = 0; j < e->count; j++) {
                sc->tok[j] = -1;
                sc->pos[j] = e->start + j;
                sc->seq[j] = e->s->slot;
                sc->lg[j] = 0;
            }
            fwd_batch b = {.n = e->count, .token = sc->tok, .pos = sc->pos, .seq = sc->seq, .logits = sc->lg};
            double t0 = engine_now();
            rc = model_forward_embd(m->mdl, m->kv, &b, e->image->rows + (size_t)skip * m->mdl->hp.n_embd, true,
                                    NULL, m->settings.flash_attn, &err);
            *t_fwd += engine_now() - t0;
        }
        for (int i = 0; i < sc->n_e && !rc; i++) {
            plan_entry *e = &sc->e[i];
            if (e->reason || e->image)
                continue;
            e->b_off = n;
            for (int j = 0; j < e->count; j++, n++) {
                sc->tok[n] = e->s->toks[e->start + j];
                sc->pos[n] = e->start + j;
                sc->seq[n] = e->s->slot;
                sc->lg[n] = e->logits && j == e->count - 1;
            }
            /* the drafts follow the last token; each gets its row of logits */
            for (int j = 0; j < e->n_draft; j++, n++) {
                sc->tok[n] = sc->drafts[e->draft_off + j];
                sc->pos[n] = e->start + e->count + j;
                sc->seq[n] = e->s->slot;
                sc->lg[n] = 1;
            }
            if (e->logits)
                e->row = rows, rows += 1 + e->n_draft;
            if (e->n_draft > 0) {
                sampled_drafts |= !sampler_is_argmax(e->s->smp);
                /* a recurrent state cannot be cut back: the state after each token of
                 * the batch is kept (snapshots, kv.h) so commit returns to the last kept
                 * one; without room for them, the state as it is before the drafts
                 * (a checkpoint), from which the kept tokens are decoded again */
                if (m->kv->n_recurrent && !(m->kv->n_snap >= e->count + e->n_draft &&
                                            kv_snap_arm(m->kv, e->s->slot, e->start)))
                    kv_checkpoint_save(m->kv, e->s->slot);
            }
        }
        if (!rc && rows > sc->cap_rows) {
            float *l = realloc(sc->logits, sizeof *l * (size_t)rows * (size_t)m->n_vocab);
            int32_t *ids = l ? realloc(sc->ids, sizeof *ids * (size_t)rows) : NULL;
            if (l)
                sc->logits = l;
            if (!ids)
                rc = llmfs_errorf(&err, ENOMEM, "out of memory for logits");
            else
                sc->ids = ids, sc->cap_rows = rows;
        }
        if (!rc && sampled_drafts && !sc->probs) {
            sc->probs = malloc(sizeof *sc->probs * (size_t)m->n_vocab);
            if (!sc->probs)
                rc = llmfs_errorf(&err, ENOMEM, "out of memory for a distribution");
        }
        /* the MTP head reads every row's final hidden state */
        const bool mtp = m->mtp && n > 0;
        if (!rc && mtp && grow((void **)&sc->hidden, &sc->cap_hidden, n * m->mdl->hp.n_embd, sizeof *sc->hidden) < 0)
            rc = llmfs_errorf(&err, ENOMEM, "out of memory for hidden states");
        /* greedy rows only: the choice is made where the logits are (on a GPU only the
         * ids cross to the host) */
        ids_only = rows > 0 && !mtp;
        for (int i = 0; i < sc->n_e && ids_only; i++)
            if (!sc->e[i].reason && sc->e[i].logits && !sampler_is_argmax(sc->e[i].s->smp))
                ids_only = false;
        if (!rc) {
            fwd_batch b = {.n = n, .token = sc->tok, .pos = sc->pos, .seq = sc->seq, .logits = sc->lg};
            double t0 = engine_now();
            if (ids_only)
                rc = model_forward_ids(m->mdl, m->kv, &b, sc->ids, m->settings.flash_attn, &err);
            else if (mtp)
                rc = model_forward_hidden(m->mdl, m->kv, &b, sc->logits, sc->hidden, m->settings.flash_attn, &err);
            else
                rc = model_forward(m->mdl, m->kv, &b, sc->logits, m->settings.flash_attn, &err);
            *t_fwd += engine_now() - t0;
        }
        if (!rc && mtp)
            mtp_step(sc, n);
    }
    double now = engine_now();
    int n_ctx = m->kv ? m->kv->n_ctx : 0;
    for (int i = 0; i < sc->n_e; i++) {
        plan_entry *e = &sc->e[i];
        llmfs_session *s = e->s;
        if (e->reason) {
            /* stopped before it started */
        } else if (rc < 0) {
            e->reason = "error";
            snprintf(e->why, sizeof e->why, "%s", err.msg[0] ? err.msg : "forward pass failed");
        } else if (atomic_load(&s->stop_req)) {
            e->reason = "stopped";
        } else if (e->logits) {
            if (s->n_predict >= 0 && s->n_gen >= s->n_predict) {
                e->reason = "length";
            } else {
                /* row j follows draft j-1: take drafts while the target agrees, then
                 * the target's own token of the first row that disagrees (or the last) */
                for (int j = 0; j <= e->n_draft && !e->reason; j++) {
                    int32_t d = j < e->n_draft ? sc->drafts[e->draft_off + j] : -1;
                    int32_t t = target_token(sc, e, j, d, ids_only);
                    bool kept = take_token(sc, e, t, n_ctx);
                    if (d < 0 || t != d)
                        break;
                    e->n_accepted++;
                    e->n_kept += kept;
                }
                /* the MTP head forgets the rejected drafts and reads the last kept row next */
                if (m->mtp && e->n_draft > 0)
                    mtp_accept(m->mtp, s->slot, e->start + e->count - 1, e->n_accepted);
            }
        }
        if (e->reason) {
            char text[64];
            int k = detok_flush(&s->detok, text, sizeof text);
            if (sched_reply_text(s, text, k < (int)sizeof text ? k : (int)sizeof text, true) < 0 &&
                strcmp(e->reason, "error") != 0) {
                e->reason = "error";
                snprintf(e->why, sizeof e->why, "out of memory for the reply");
            }
            double t_first = e->logits && e->was_prefill ? now : s->t_first;
            sched_transcript_end(s, e->reason, e->why, now, t_first, s->n_gen + e->n_new,
                           s->draft_n + e->n_draft, s->draft_accepted + e->n_accepted);
        }
    }
    return rc;
}

/* Phase 3, m->mu held. */
static void commit(sched *sc, int total, double t_fwd, double t_end, bool failed)
{
    llmfs_model *m = sc->m;
    double now = engine_now();
    int n_pp = 0, n_tg = 0;
    for (int i = 0; i < sc->n_e; i++) {
        plan_entry *e = &sc->e[i];
        llmfs_session *s = e->s;
        if (e->count > 0 && s->slot >= 0) {
            kv_slot *sl = &m->slots[s->slot];
            if (failed) {
                kv_seq_keep(m->kv, s->slot, 0);
                if (m->mtp)
                    mtp_keep(m->mtp, s->slot, 0);
                sl->n = 0;
            } else if (grow((void **)&sl->tokens, &sl->cap, e->start + e->count + e->n_kept, sizeof *sl->tokens) == 0) {
                /* the cache holds the evaluated tokens and the drafts that were kept;
                 * rejected drafts' cells go (a recurrent state returns to its snapshot
                 * after the last kept token, or to the checkpoint taken before the
                 * drafts, which may be fewer cells) */
                int end = e->start + e->count + e->n_kept;
                if (e->n_draft > e->n_kept)
                    end = kv_seq_keep(m->kv, s->slot, end);
                if (end > e->start)
                    memcpy(sl->tokens + e->start, s->toks + e->start, sizeof *sl->tokens * (size_t)(end - e->start));
                sl->n = end;
                if (e->was_prefill && sl->n == s->n_toks - 1) {
                    kv_checkpoint_save(m->kv, s->slot); /* a failure only costs reuse */
                    if (m->mtp)
                        mtp_pin(m->mtp, s->slot, sl->n - 1);
                }
            } else {
                /* cannot record what the slot holds: forget it rather than trust it */
                kv_seq_keep(m->kv, s->slot, 0);
                sl->n = 0;
            }
            sl->last_used = now;
        }
        if (e->was_prefill)
            n_pp += e->count;
        else
            n_tg += e->count;
        if (e->logits && e->was_prefill && !failed) {
            s->state = SS_GEN;
            s->t_first = t_end;
            s->n_gen_first = e->n_new; /* more than one when the first step took drafts */
            s->ttft_ms = (s->t_first - s->t_prompt) * 1e3;
            double dt = s->t_first - s->t_prefill;
            s->pp_tps = dt > 0 ? s->n_prompt / dt : 0;
        }
        if (e->n_draft > 0) {
            s->draft_n += e->n_draft;
            s->draft_accepted += e->n_accepted;
            s->spec_steps++;
            m->spec_drafted += (uint64_t)e->n_draft;
            m->spec_accepted += (uint64_t)e->n_accepted;
            m->spec_steps++;
        }
        if (e->n_new > 0) {
            s->n_gen += e->n_new;
            s->t_last = now;
            m->n_gen_tokens += (uint64_t)e->n_new;
            if (s->n_gen > s->n_gen_first && s->t_last > s->t_first)
                s->tg_tps = (s->n_gen - s->n_gen_first) / (s->t_last - s->t_first);
        }
        if (e->reason) {
            if (strcmp(e->reason, "error") == 0) {
                m->errors++;
                snprintf(s->error, sizeof s->error, "%s", e->why);
                model_set_error(m, e->why);
            }
            e->end_flags = session_end_turn_locked(s, e->reason, &e->ended);
        }
    }
    m->n_prompt_tokens += (uint64_t)n_pp;
    if (total > 0) {
        m->prompt_seconds += t_fwd * n_pp / total;
        m->gen_seconds += t_fwd * n_tg / total;
    }
    m->gen_seconds += sc->t_draft;
    /* scratch grows with the batches (the draft model's too) */
    m->vram_now = model_vram_bytes(m->mdl) + model_vram_bytes_or0(spec_drafter_model(m->drafter)) +
                  model_vram_bytes_or0(mtp_model(m->mtp));
    m->stream = m->mdl->stream;
}

/* Ends every running turn: the model is going away. */
static void stop_all(sched *sc)
{
    llmfs_model *m = sc->m;
    sc->n_e = 0;
    for (int i = 0; i < m->n_sessions; i++) {
        llmfs_session *s = m->sessions[i];
        if (busy(s)) {
            plan_entry *e = add_entry(sc, s);
            if (e) {
                e->reason = "error";
                snprintf(e->why, sizeof e->why, "model unloaded");
            }
        }
    }
    pthread_mutex_unlock(&m->mu);
    double now = engine_now();
    for (int i = 0; i < sc->n_e; i++) {
        llmfs_session *s = sc->e[i].s;
        char text[64];
        int k = detok_flush(&s->detok, text, sizeof text);
        sched_reply_text(s, text, k < (int)sizeof text ? k : (int)sizeof text, true);
        sched_transcript_end(s, "error", "model unloaded", now, s->t_first, s->n_gen, s->draft_n, s->draft_accepted);
    }
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < sc->n_e; i++) {
        plan_entry *e = &sc->e[i];
        snprintf(e->s->error, sizeof e->s->error, "model unloaded");
        e->end_flags = session_end_turn_locked(e->s, "error", &e->ended);
    }
}

static void finish_entries(sched *sc)
{
    for (int i = 0; i < sc->n_e; i++) {
        plan_entry *e = &sc->e[i];
        if (e->ended.out)
            session_end_turn_streams(e->s, &e->ended, e->end_flags);
        llmfs_session_put(e->s);
    }
    sc->n_e = 0;
}

void *scheduler_main(void *arg)
{
    sched sc = {.m = arg};
    llmfs_model *m = sc.m;
    /* this thread runs a share of every split, so it goes where the helpers went; the
     * load already checked the same placement on them */
    cpu_place_thread(0, &m->cpus, m->priority, NULL);
    pthread_mutex_lock(&m->mu);
    while (!m->stopping) {
        /* with the projector on the model's GPU, the device is this thread's from planning
         * (slots may move cache state there) to the commit, and an image encode on it
         * waits in between (engine.h: dev_mu before mu); without, no step pays for it */
        const bool share_dev = clip_on_device(m->clip);
        if (share_dev) {
            pthread_mutex_unlock(&m->mu);
            pthread_mutex_lock(&m->dev_mu);
            pthread_mutex_lock(&m->mu);
            if (m->stopping) {
                pthread_mutex_unlock(&m->dev_mu);
                break;
            }
        }
        int total = plan(&sc);
        if (sc.n_e == 0) {
            if (share_dev)
                pthread_mutex_unlock(&m->dev_mu);
            pthread_cond_wait(&m->work_cv, &m->mu);
            continue;
        }
        /* ubatch is not copied here: the model's buffers are sized for its own n_ubatch,
         * which changes only through model_set_ubatch (engine.c, between steps) */
        if (m->mdl)
            m->mdl->offload_batch = m->settings.offload_batch;
        pthread_mutex_unlock(&m->mu);
        double t_fwd = 0;
        int rc = run_step(&sc, total, &t_fwd);
        double t_end = engine_now();
        pthread_mutex_lock(&m->mu);
        commit(&sc, total, t_fwd, t_end, rc < 0);
        if (share_dev)
            pthread_mutex_unlock(&m->dev_mu);
        pthread_mutex_unlock(&m->mu);
        finish_entries(&sc);
        pthread_mutex_lock(&m->mu);
    }
    stop_all(&sc);
    pthread_mutex_unlock(&m->mu);
    finish_entries(&sc);
    free(sc.e);
    free(sc.tok);
    free(sc.pos);
    free(sc.seq);
    free(sc.lg);
    free(sc.logits);
    free(sc.ids);
    free(sc.drafts);
    free(sc.reqs);
    free(sc.probs);
    free(sc.hidden);
    return NULL;
}
