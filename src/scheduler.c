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
    int row;            /* logits row */
    bool new_token;     /* a token was sampled and kept */
    const char *reason; /* set when the turn ends this step */
    char why[256];
    llmfs_stream *out;  /* the ended turn's output (session_end_turn_locked) */
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
        total += e->count;
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

static void reply_part(void *arg, bool reasoning, const char *text, size_t n)
{
    reply_sink *k = arg;
    if (reasoning) {
        if (stream_append(k->s->reasoning, text, n) == -ENOMEM)
            k->failed = true;
        return;
    }
    if (stream_append(k->s->out, text, n) == -ENOMEM || session_reply_append(k->s, text, n) < 0)
        k->failed = true;
}

/* Appends generated text: the transcript keeps the reply as the model wrote it, markers
 * included, the rest is split (reply_part). flush: the end of the reply, text held back
 * by an unfinished marker goes out too. -ENOMEM when any part could not be taken: the
 * turn must then end as an error, since a reply with a hole in it would pass for a whole
 * one. */
static int reply_text(llmfs_session *s, const char *text, int n, bool flush)
{
    reply_sink k = {s, false};
    if (n > 0) {
        if (stream_append(s->transcript, text, (size_t)n) == -ENOMEM)
            k.failed = true;
        reason_split_push(&s->rsplit, text, (size_t)n, reply_part, &k);
    }
    if (flush)
        reason_split_flush(&s->rsplit, reply_part, &k);
    return k.failed ? -ENOMEM : 0;
}

/* Writes the end line of a turn to the transcript (before the session becomes idle, so
 * the next turn's lines come after it). */
static void transcript_end(llmfs_session *s, const char *reason, const char *why, double now,
                           double t_first, int n_gen)
{
    if (stream_last_byte(s->transcript) != '\n')
        stream_append(s->transcript, "\n", 1);
    double ttft = t_first > 0 ? (t_first - s->t_prompt) * 1e3 : 0;
    double tg = n_gen > 1 && now > t_first ? (n_gen - 1) / (now - t_first) : 0;
    stream_printf(s->transcript, "### end %s%s%s%s: prompt %d tokens (%d cached), %d generated, ttft %.1f ms, %.1f tokens/s\n",
                  reason, why && *why ? " (" : "", why && *why ? why : "", why && *why ? ")" : "",
                  s->n_prompt, s->n_cached, n_gen, ttft, tg);
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

/* Phase 2, without the lock: the forward pass and sampling. Returns the forward pass's
 * result (every entry then ends with "error"). */
static int run_step(sched *sc, int total, double *t_fwd)
{
    llmfs_model *m = sc->m;
    int rows = 0, n = 0;
    int rc = 0;
    bool ids_only = false;
    llmfs_error err = {0};
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
            for (int j = 0; j < e->count; j++, n++) {
                sc->tok[n] = e->s->toks[e->start + j];
                sc->pos[n] = e->start + j;
                sc->seq[n] = e->s->slot;
                sc->lg[n] = e->logits && j == e->count - 1;
            }
            if (e->logits)
                e->row = rows++;
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
        /* greedy rows only: the choice is made where the logits are (on a GPU only the
         * ids cross to the host) */
        ids_only = rows > 0;
        for (int i = 0; i < sc->n_e && ids_only; i++)
            if (!sc->e[i].reason && sc->e[i].logits && !sampler_is_argmax(sc->e[i].s->smp))
                ids_only = false;
        if (!rc) {
            fwd_batch b = {.n = n, .token = sc->tok, .pos = sc->pos, .seq = sc->seq, .logits = sc->lg};
            double t0 = engine_now();
            if (ids_only)
                rc = model_forward_ids(m->mdl, m->kv, &b, sc->ids, m->settings.flash_attn, &err);
            else
                rc = model_forward(m->mdl, m->kv, &b, sc->logits, m->settings.flash_attn, &err);
            *t_fwd += engine_now() - t0;
        }
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
                int32_t t;
                if (ids_only)
                    t = sc->ids[e->row];
                else
                    t = sampler_sample(s->smp, sc->logits + (size_t)e->row * (size_t)m->n_vocab,
                                       s->toks, s->n_toks);
                if (tokenizer_is_eog(m->mdl->tok, t)) {
                    e->reason = "eos";
                } else if (grow((void **)&s->toks, &s->cap_toks, s->n_toks + 1, sizeof *s->toks) < 0) {
                    e->reason = "error";
                    snprintf(e->why, sizeof e->why, "out of memory");
                } else {
                    s->toks[s->n_toks++] = t;
                    e->new_token = true;
                    char text[1024];
                    int k = detok_push(m->mdl->tok, &s->detok, t, text, sizeof text);
                    int gen = s->n_gen + 1;
                    if (reply_text(s, text, k < (int)sizeof text ? k : (int)sizeof text, false) < 0) {
                        e->reason = "error";
                        snprintf(e->why, sizeof e->why, "out of memory for the reply");
                    } else if (s->n_predict >= 0 && gen >= s->n_predict)
                        e->reason = "length";
                    else if (s->n_toks > n_ctx) /* no position left to evaluate it at */
                        e->reason = "context";
                }
            }
        }
        if (e->reason) {
            char text[64];
            int k = detok_flush(&s->detok, text, sizeof text);
            if (reply_text(s, text, k < (int)sizeof text ? k : (int)sizeof text, true) < 0 &&
                strcmp(e->reason, "error") != 0) {
                e->reason = "error";
                snprintf(e->why, sizeof e->why, "out of memory for the reply");
            }
            double t_first = e->logits && e->was_prefill ? now : s->t_first;
            transcript_end(s, e->reason, e->why, now, t_first, s->n_gen + (e->new_token ? 1 : 0));
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
                sl->n = 0;
            } else if (grow((void **)&sl->tokens, &sl->cap, e->start + e->count, sizeof *sl->tokens) == 0) {
                memcpy(sl->tokens + e->start, s->toks + e->start, sizeof *sl->tokens * (size_t)e->count);
                sl->n = e->start + e->count;
                if (e->was_prefill && sl->n == s->n_toks - 1)
                    kv_checkpoint_save(m->kv, s->slot); /* a failure only costs reuse */
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
            s->ttft_ms = (s->t_first - s->t_prompt) * 1e3;
            double dt = s->t_first - s->t_prefill;
            s->pp_tps = dt > 0 ? s->n_prompt / dt : 0;
        }
        if (e->new_token) {
            s->n_gen++;
            s->t_last = now;
            m->n_gen_tokens++;
            if (s->n_gen > 1 && s->t_last > s->t_first)
                s->tg_tps = (s->n_gen - 1) / (s->t_last - s->t_first);
        }
        if (e->reason) {
            if (strcmp(e->reason, "error") == 0) {
                m->errors++;
                snprintf(s->error, sizeof s->error, "%s", e->why);
                model_set_error(m, e->why);
            }
            e->end_flags = session_end_turn_locked(s, e->reason, &e->out);
        }
    }
    m->n_prompt_tokens += (uint64_t)n_pp;
    if (total > 0) {
        m->prompt_seconds += t_fwd * n_pp / total;
        m->gen_seconds += t_fwd * n_tg / total;
    }
    m->vram_now = model_vram_bytes(m->mdl); /* scratch grows with the batches */
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
        reply_text(s, text, k < (int)sizeof text ? k : (int)sizeof text, true);
        transcript_end(s, "error", "model unloaded", now, s->t_first, s->n_gen);
    }
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < sc->n_e; i++) {
        plan_entry *e = &sc->e[i];
        snprintf(e->s->error, sizeof e->s->error, "model unloaded");
        e->end_flags = session_end_turn_locked(e->s, "error", &e->out);
    }
}

static void finish_entries(sched *sc)
{
    for (int i = 0; i < sc->n_e; i++) {
        plan_entry *e = &sc->e[i];
        if (e->out)
            session_end_turn_streams(e->s, e->out, e->end_flags);
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
        int total = plan(&sc);
        if (sc.n_e == 0) {
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
    return NULL;
}
