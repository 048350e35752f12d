/* session.c — sessions: settings, prompts, conversations, streams, stats.
 *
 * A prompt is validated and tokenized on the caller's thread (outside the model lock,
 * guarded by `preparing` so a second writer gets EBUSY), then queued for the
 * scheduler. The caller never runs the model.
 *
 * Prompt text: one trailing newline (as `echo` adds) is dropped. Chat mode sends it as
 * a user turn: the whole conversation (system message, earlier turns, this one) is
 * rendered with the model's chat template and tokenized every turn; the scheduler then
 * reuses whatever prefix of those tokens the session's KV slot already holds, so a
 * follow-up turn evaluates only its new part. Raw mode completes the text as given, with
 * the tokenizer's default BOS, and keeps no history.
 *
 * Transcript format (one per session, append-only, ends when the session closes):
 *
 *   ### turn 3 chat 2025-01-31T12:00:00Z    a turn begins: number, mode, UTC time
 *   >>> system                              chat mode, when the system message is new
 *   You are terse.
 *   >>> user                                ">>> prompt" in raw mode
 *   How far is the moon?
 *   <<< assistant                           "<<< completion" in raw mode
 *   About 384,000 km.                       the reply, as it is generated
 *   ### end eos: prompt 25 tokens (18 cached), 9 generated, ttft 12.3 ms, 45.1 tokens/s
 *   ### reset                               a reset took effect
 *   ### closed                              the session was closed (last line)
 *
 * Each text block ends with a newline (one is added if the text lacks it). The end line
 * names the stop reason: eos (the model ended its reply), length (n_predict reached),
 * stopped (the stop command, reset or close), stop_string (the reply reached one of
 * stop_strings), context (the context is full), error (with
 * the reason in parentheses, e.g. "error (model unloaded)"); "prompt N tokens" counts
 * the tokens evaluated for the prompt and "cached" those reused from the KV cache.
 */
#include "engine.h"
#include "chat.h"
#include "stream.h"
#include "sysroot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *state_names[] = {
    [SS_IDLE] = "idle", [SS_QUEUED] = "queued", [SS_PREFILL] = "prefill", [SS_GEN] = "generating"};

llmfs_session *session_create(llmfs_model *m, int id, llmfs_error *err)
{
    llmfs_session *s = calloc(1, sizeof *s);
    if (!s) {
        llmfs_errorf(err, ENOMEM, "out of memory for a session");
        return NULL;
    }
    s->out = stream_new();
    s->transcript = stream_new();
    s->reasoning = stream_new();
    if (!s->out || !s->transcript || !s->reasoning) {
        if (s->out)
            llmfs_stream_put(s->out);
        if (s->transcript)
            llmfs_stream_put(s->transcript);
        if (s->reasoning)
            llmfs_stream_put(s->reasoning);
        free(s);
        llmfs_errorf(err, ENOMEM, "out of memory for a session");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    atomic_init(&s->stop_req, false);
    settings_copy(&s->settings, &m->settings);
    s->m = m;
    atomic_fetch_add(&m->refs, 1);
    s->id = id;
    s->slot = -1;
    s->last_active = engine_now();
    return s;
}

void session_ref(llmfs_session *s)
{
    atomic_fetch_add(&s->refs, 1);
}

static void free_images(vision_embd *v, int n)
{
    for (int i = 0; i < n; i++)
        vision_embd_free(&v[i]);
    free(v);
}

static void free_pending(llmfs_session *s)
{
    for (int i = 0; i < s->n_pending; i++)
        image_free(&s->pending[i]);
    free(s->pending);
    s->pending = NULL;
    s->n_pending = 0;
}

static void clear_turns(llmfs_session *s)
{
    for (int i = 0; i < s->n_conv; i++) {
        free(s->conv[i].user);
        free(s->conv[i].assistant);
        free_images(s->conv[i].imgs, s->conv[i].n_imgs);
    }
    s->n_conv = 0;
}

void llmfs_session_put(llmfs_session *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    llmfs_model *m = s->m;
    clear_turns(s);
    free(s->conv);
    free(s->toks);
    free(s->spans);
    free_images(s->raw_imgs, s->n_raw_imgs);
    free_pending(s);
    free(s->reply);
    free(s->last_prompt);
    free(s->system_logged);
    stop_filter_free(&s->stops);
    sampler_free(s->smp);
    llmfs_stream_put(s->out);
    llmfs_stream_put(s->transcript);
    llmfs_stream_put(s->reasoning);
    settings_clear(&s->settings);
    free(s);
    llmfs_model_put(m);
}

int llmfs_session_id(const llmfs_session *s)
{
    return s->id;
}

void session_release_slot(llmfs_session *s)
{
    llmfs_model *m = s->m;
    if (s->slot >= 0 && s->slot < m->n_slots && m->slots[s->slot].owner == s)
        m->slots[s->slot].owner = NULL;
    s->slot = -1;
}

/* Removes s from the model's list (m->mu held); the caller drops the list's reference. */
static bool unlist(llmfs_session *s)
{
    llmfs_model *m = s->m;
    for (int i = 0; i < m->n_sessions; i++)
        if (m->sessions[i] == s) {
            memmove(&m->sessions[i], &m->sessions[i + 1], sizeof *m->sessions * (size_t)(m->n_sessions - i - 1));
            m->n_sessions--;
            if (m->def == s)
                m->def = NULL;
            return true;
        }
    return false;
}

/* ---- lookups ---- */

llmfs_session *llmfs_session_default(llmfs_model *m)
{
    pthread_mutex_lock(&m->mu);
    llmfs_session *s = m->def;
    if (s)
        session_ref(s);
    pthread_mutex_unlock(&m->mu);
    return s;
}

llmfs_session *llmfs_session_get(llmfs_model *m, int id)
{
    llmfs_session *s = NULL;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n_sessions; i++)
        if (m->sessions[i]->id == id && !m->sessions[i]->closed) {
            s = m->sessions[i];
            session_ref(s);
            break;
        }
    pthread_mutex_unlock(&m->mu);
    return s;
}

int llmfs_session_ids(llmfs_model *m, int *ids, int cap)
{
    int n = 0;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n_sessions; i++) {
        llmfs_session *s = m->sessions[i];
        if (s->id == 0 || s->closed)
            continue;
        if (n < cap)
            ids[n] = s->id;
        n++;
    }
    pthread_mutex_unlock(&m->mu);
    return n < cap ? n : cap;
}

static int add_to_list(llmfs_model *m, llmfs_session *s)
{
    if (m->n_sessions == m->cap_sessions) {
        int cap = m->cap_sessions ? m->cap_sessions * 2 : 8;
        llmfs_session **p = realloc(m->sessions, sizeof *p * (size_t)cap);
        if (!p)
            return -ENOMEM;
        m->sessions = p;
        m->cap_sessions = cap;
    }
    m->sessions[m->n_sessions++] = s;
    return 0;
}

llmfs_session *llmfs_session_new(llmfs_model *m, llmfs_error *err)
{
    pthread_mutex_lock(&m->lf->mu);
    int max = m->lf->settings.max_sessions;
    pthread_mutex_unlock(&m->lf->mu);
    pthread_mutex_lock(&m->mu);
    if (m->state == MS_UNLOADED || m->state == MS_FAILED) {
        pthread_mutex_unlock(&m->mu);
        llmfs_errorf(err, ENODEV, "model %s is unloaded", m->name);
        return NULL;
    }
    int clones = 0;
    for (int i = 0; i < m->n_sessions; i++)
        clones += m->sessions[i]->id != 0 && !m->sessions[i]->closed;
    if (clones >= max) {
        pthread_mutex_unlock(&m->mu);
        llmfs_errorf(err, EMFILE, "model %s has %d sessions, the limit (max_sessions)", m->name, clones);
        return NULL;
    }
    llmfs_session *s = session_create(m, ++m->next_id, err);
    if (s && add_to_list(m, s) < 0) {
        pthread_mutex_unlock(&m->mu);
        llmfs_session_put(s);
        llmfs_errorf(err, ENOMEM, "out of memory for a session");
        return NULL;
    }
    if (s)
        session_ref(s); /* the caller's; the list keeps the first */
    pthread_mutex_unlock(&m->mu);
    return s;
}

/* ---- ends of turns ---- */

int session_reply_append(llmfs_session *s, const char *text, size_t n)
{
    if (s->reply_len + n + 1 > s->reply_cap) {
        size_t cap = s->reply_cap ? s->reply_cap : 256;
        while (cap < s->reply_len + n + 1)
            cap *= 2;
        char *r = realloc(s->reply, cap);
        if (!r)
            return -ENOMEM;
        s->reply = r;
        s->reply_cap = cap;
    }
    memcpy(s->reply + s->reply_len, text, n);
    s->reply_len += n;
    s->reply[s->reply_len] = 0;
    return 0;
}

/* Flags for session_end_turn_streams. */
enum { END_LOG_RESET = 1, END_CLOSED = 2, END_DROP_LIST_REF = 4 };

static void reset_conversation(llmfs_session *s)
{
    clear_turns(s);
    free_pending(s);
    free(s->system_logged);
    s->system_logged = NULL;
}

int session_end_turn_locked(llmfs_session *s, const char *reason, turn_streams *ended)
{
    llmfs_model *m = s->m;
    double now = engine_now();
    int flags = 0;
    s->state = SS_IDLE;
    snprintf(s->stop_reason, sizeof s->stop_reason, "%s", reason);
    s->turns++;
    if (!s->raw_turn && s->n_conv > 0 && !s->conv[s->n_conv - 1].assistant) {
        chat_turn *t = &s->conv[s->n_conv - 1];
        t->assistant = strndup(s->reply ? s->reply : "", s->reply_len);
        if (!t->assistant) { /* cannot keep the turn whole: drop it */
            free(t->user);
            free_images(t->imgs, t->n_imgs);
            s->n_conv--;
        }
    }
    sampler_free(s->smp);
    s->smp = NULL;
    atomic_store(&s->stop_req, false);
    s->last_active = now;
    m->last_activity = now;
    int64_t swap = sysroot_swap_pages();
    if (swap >= 0 && m->swap_gen_start >= 0)
        m->swap_gen_delta = swap - m->swap_gen_start;
    if (s->reset_after) {
        reset_conversation(s);
        s->reset_after = false;
        flags |= END_LOG_RESET;
    }
    if (s->closed) {
        session_release_slot(s);
        flags |= END_CLOSED;
        if (unlist(s))
            flags |= END_DROP_LIST_REF;
    }
    ended->out = stream_ref(s->out);
    ended->reasoning = stream_ref(s->reasoning);
    return flags;
}

void session_end_turn_streams(llmfs_session *s, turn_streams *ended, int flags)
{
    if (flags & END_LOG_RESET)
        stream_printf(s->transcript, "### reset\n");
    stream_finish(ended->reasoning);
    llmfs_stream_put(ended->reasoning);
    stream_finish(ended->out);
    llmfs_stream_put(ended->out);
    ended->out = ended->reasoning = NULL;
    if (flags & END_CLOSED) {
        stream_printf(s->transcript, "### closed\n");
        stream_finish(s->transcript);
    }
    if (flags & END_DROP_LIST_REF)
        llmfs_session_put(s);
}

/* ---- ctl ---- */

static int session_fail(llmfs_session *s, int rc, const llmfs_error *e)
{
    pthread_mutex_lock(&s->m->mu);
    snprintf(s->error, sizeof s->error, "%s", e && e->msg[0] ? e->msg : "error");
    pthread_mutex_unlock(&s->m->mu);
    return rc;
}

/* Closes s (not the default session). */
static int session_close(llmfs_session *s, llmfs_error *err)
{
    llmfs_model *m = s->m;
    if (s->id == 0)
        return llmfs_errorf(err, EINVAL, "the default session cannot be closed (write reset instead)");
    pthread_mutex_lock(&m->mu);
    if (s->closed) {
        pthread_mutex_unlock(&m->mu);
        return 0;
    }
    s->closed = true;
    if (s->state != SS_IDLE || s->preparing) {
        /* the scheduler (or the prompt being prepared) ends the turn and unlists it */
        atomic_store(&s->stop_req, true);
        pthread_cond_signal(&m->work_cv);
        pthread_mutex_unlock(&m->mu);
        return 0;
    }
    session_release_slot(s);
    bool listed = unlist(s);
    pthread_mutex_unlock(&m->mu);
    stream_printf(s->transcript, "### closed\n");
    stream_finish(s->transcript);
    stream_finish(s->reasoning);
    stream_finish(s->out);
    if (listed)
        llmfs_session_put(s);
    return 0;
}

int llmfs_session_ctl(llmfs_session *s, const char *line, llmfs_error *err)
{
    llmfs_model *m = s->m;
    llmfs_error e = {0};
    char key[64];
    size_t vl;
    const char *v = settings_split_line(line ? line : "", key, sizeof key, &vl);
    if (!v)
        return 0;
    bool has_arg = vl > 0;
    int rc = 0;
    if (strcmp(key, "stop") == 0 || strcmp(key, "reset") == 0 || strcmp(key, "close") == 0) {
        if (has_arg) {
            rc = llmfs_errorf(&e, EINVAL, "%s takes no argument", key);
        } else if (key[0] == 's') {
            pthread_mutex_lock(&m->mu);
            if (s->state != SS_IDLE || s->preparing) {
                atomic_store(&s->stop_req, true);
                pthread_cond_signal(&m->work_cv);
            }
            pthread_mutex_unlock(&m->mu);
        } else if (key[0] == 'r') {
            pthread_mutex_lock(&m->mu);
            bool now = s->state == SS_IDLE && !s->preparing;
            if (now) {
                reset_conversation(s);
            } else {
                s->reset_after = true;
                atomic_store(&s->stop_req, true);
                pthread_cond_signal(&m->work_cv);
            }
            pthread_mutex_unlock(&m->mu);
            if (now)
                stream_printf(s->transcript, "### reset\n");
        } else {
            rc = session_close(s, &e);
        }
    } else {
        pthread_mutex_lock(&m->mu);
        llmfs_settings tmp;
        settings_copy(&tmp, &s->settings);
        rc = settings_set_line(&tmp, LLMFS_SCOPE_SESSION, line, &e);
        if (rc == 0 && tmp.mode == MODE_CHAT && m->state == MS_READY && !m->chat_template && !m->remote)
            rc = llmfs_errorf(&e, EINVAL, "model %s has no chat template: only mode raw works", m->name);
        if (rc == 0) {
            settings_clear(&s->settings);
            s->settings = tmp;
        } else {
            settings_clear(&tmp);
        }
        pthread_mutex_unlock(&m->mu);
    }
    if (rc < 0) {
        if (err)
            *err = e;
        return session_fail(s, rc, &e);
    }
    return 0;
}

int llmfs_session_settings_text(llmfs_session *s, char *buf, size_t cap)
{
    pthread_mutex_lock(&s->m->mu);
    int n = settings_text(&s->settings, LLMFS_SCOPE_SESSION, buf, cap);
    pthread_mutex_unlock(&s->m->mu);
    return n;
}

int llmfs_session_setting(llmfs_session *s, const char *key, char *buf, size_t cap)
{
    pthread_mutex_lock(&s->m->mu);
    int n = settings_get(&s->settings, key, buf, cap);
    pthread_mutex_unlock(&s->m->mu);
    return n;
}

/* ---- prompts ---- */

static bool valid_utf8(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + (size_t)len > n)
            return false;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
        for (int k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += (size_t)len;
    }
    return true;
}

/* What a prompt needs from the session, copied under the lock. */
typedef struct prompt_snapshot {
    int mode;
    char *system;
    chat_turn *turns;
    int n_turns;
    sampler_params sp;
    int64_t seed;
    int n_predict;
    int n_ctx;
    int turn_no;
    bool log_system;
    char effort[8];
    char *stop_strings;
    /* images: those written for this prompt (moved out of the session), the projector's
     * limits and the marker; the turns' images are borrowed (they stay while the session
     * prepares a prompt) */
    image_rgb *pending;
    int n_pending;
    int min_tokens, max_tokens, n_ubatch;
    char *marker;
} prompt_snapshot;

static void snapshot_free(prompt_snapshot *ps)
{
    free(ps->system);
    free(ps->stop_strings);
    free(ps->marker);
    for (int i = 0; i < ps->n_pending; i++)
        image_free(&ps->pending[i]);
    free(ps->pending);
    for (int i = 0; i < ps->n_turns; i++) {
        free(ps->turns[i].user);
        free(ps->turns[i].assistant);
    }
    free(ps->turns);
}

static int snapshot_take(llmfs_session *s, prompt_snapshot *ps)
{
    const llmfs_settings *st = &s->settings;
    memset(ps, 0, sizeof *ps);
    ps->mode = st->mode;
    ps->system = strdup(st->system ? st->system : "");
    ps->sp = (sampler_params){.temp = st->temp, .top_k = st->top_k, .top_p = st->top_p, .min_p = st->min_p,
                              .repeat_penalty = st->repeat_penalty, .repeat_last_n = st->repeat_last_n};
    ps->seed = st->seed;
    ps->n_predict = st->n_predict;
    snprintf(ps->effort, sizeof ps->effort, "%s",
             st->reasoning_effort == 0 ? "low" : st->reasoning_effort == 2 ? "high" : "medium");
    ps->n_ctx = s->m->kv ? s->m->kv->n_ctx : 0;
    ps->turn_no = s->turns + 1;
    ps->log_system = ps->system && ps->system[0] &&
                     (!s->system_logged || strcmp(s->system_logged, ps->system) != 0);
    ps->stop_strings = strdup(st->stop_strings ? st->stop_strings : "");
    ps->marker = strdup(st->media_marker ? st->media_marker : "");
    ps->min_tokens = s->m->settings.image_min_tokens;
    ps->max_tokens = s->m->settings.image_max_tokens;
    ps->n_ubatch = s->m->mdl ? s->m->mdl->n_ubatch : 0;
    ps->pending = s->pending;
    ps->n_pending = s->n_pending;
    s->pending = NULL;
    s->n_pending = 0;
    if (!ps->system || !ps->stop_strings || !ps->marker)
        return -ENOMEM;
    if (ps->mode == MODE_CHAT && s->n_conv > 0) {
        ps->turns = calloc((size_t)s->n_conv, sizeof *ps->turns);
        if (!ps->turns)
            return -ENOMEM;
        for (int i = 0; i < s->n_conv; i++, ps->n_turns++) {
            ps->turns[i].user = strdup(s->conv[i].user);
            ps->turns[i].assistant = strdup(s->conv[i].assistant ? s->conv[i].assistant : "");
            ps->turns[i].imgs = s->conv[i].imgs; /* borrowed */
            ps->turns[i].n_imgs = s->conv[i].n_imgs;
            if (!ps->turns[i].user || !ps->turns[i].assistant) {
                ps->n_turns++;
                return -ENOMEM;
            }
        }
    }
    return 0;
}

/* Tokens of the whole sequence to evaluate for this prompt. With images (imgs: those of
 * the conversation's turns, then this prompt's), each marker of the rendered text takes
 * the next one: its positions are -1 in *out and *spans says where. */
static int build_tokens(llmfs_model *m, const prompt_snapshot *ps, const char *text,
                        const vision_embd *const *imgs, int n_imgs, int32_t **out, vision_span **spans,
                        llmfs_error *err)
{
    const tokenizer *tok = m->mdl->tok;
    char *rendered = NULL;
    const char *src = text;
    bool add_special = true;
    if (ps->mode == MODE_CHAT) {
        int n = 0;
        chat_msg *msgs = calloc((size_t)(2 * ps->n_turns + 2), sizeof *msgs);
        if (!msgs)
            return llmfs_errorf(err, ENOMEM, "out of memory");
        if (ps->system[0])
            msgs[n++] = (chat_msg){"system", ps->system};
        for (int i = 0; i < ps->n_turns; i++) {
            msgs[n++] = (chat_msg){"user", ps->turns[i].user};
            msgs[n++] = (chat_msg){"assistant", ps->turns[i].assistant};
        }
        msgs[n++] = (chat_msg){"user", text};
        const chat_opts co = {ps->effort, NULL};
        rendered = chat_render_opts(m->chat_template, msgs, n, true, m->bos_text, m->eos_text, &co, err);
        free(msgs);
        if (!rendered)
            return err && err->code ? -err->code : -EINVAL;
        src = rendered;
        /* templates usually write the BOS text themselves; it is added below only if not */
        add_special = false;
    }
    if (n_imgs > 0) {
        const char *beg, *end;
        vision_markers(m->clip, &beg, &end);
        int n = vision_tokenize(tok, src, ps->marker, beg, end, imgs, n_imgs, tokenizer_add_bos(tok), out, spans,
                                err);
        free(rendered);
        return n;
    }
    size_t len = strlen(src);
    int cap = (int)(len < 1000000 ? len : 1000000) + 8;
    int32_t *t = malloc(sizeof *t * (size_t)(cap + 1));
    if (!t) {
        free(rendered);
        return llmfs_errorf(err, ENOMEM, "out of memory");
    }
    /* room for a BOS in front */
    int n = tokenizer_encode(tok, src, len, add_special, true, t + 1, cap);
    if (n > cap) {
        int32_t *t2 = realloc(t, sizeof *t * (size_t)(n + 1));
        if (!t2) {
            free(t);
            free(rendered);
            return llmfs_errorf(err, ENOMEM, "out of memory");
        }
        t = t2;
        n = tokenizer_encode(tok, src, len, add_special, true, t + 1, n);
    }
    free(rendered);
    if (n < 0) {
        free(t);
        return llmfs_errorf(err, -n, "the prompt could not be tokenized");
    }
    int32_t bos = tokenizer_bos(tok);
    if (!add_special && tokenizer_add_bos(tok) && bos >= 0 && (n == 0 || t[1] != bos)) {
        t[0] = bos;
        n++;
    } else {
        memmove(t, t + 1, sizeof *t * (size_t)n);
    }
    if (n == 0) {
        free(t);
        return llmfs_errorf(err, EINVAL, "the prompt has no tokens");
    }
    *out = t;
    return n;
}

static uint64_t random_seed(void)
{
    static atomic_uint_fast64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
           (atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15ULL);
}

static void transcript_begin(llmfs_session *s, const prompt_snapshot *ps, const char *text, size_t len)
{
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    bool chat = ps->mode == MODE_CHAT;
    stream_printf(s->transcript, "### turn %d %s %s\n", ps->turn_no, chat ? "chat" : "raw", when);
    if (chat && ps->log_system)
        stream_printf(s->transcript, ">>> system\n%s\n", ps->system);
    stream_printf(s->transcript, ">>> %s\n", chat ? "user" : "prompt");
    stream_append(s->transcript, text, len);
    stream_printf(s->transcript, "\n<<< %s\n", chat ? "assistant" : "completion");
}

int llmfs_session_prompt(llmfs_session *s, const char *text, size_t len, llmfs_error *err)
{
    llmfs_model *m = s->m;
    llmfs_error e = {0};
    int rc;
    if (text && len > 0 && text[len - 1] == '\n')
        len -= len > 1 && text[len - 2] == '\r' ? 2 : 1;
    pthread_mutex_lock(&m->lf->mu);
    size_t max = (size_t)m->lf->settings.max_prompt_bytes;
    pthread_mutex_unlock(&m->lf->mu);
    if (!text || len == 0)
        rc = llmfs_errorf(&e, EINVAL, "empty prompt");
    else if (len > max)
        rc = llmfs_errorf(&e, E2BIG, "prompt is %zu bytes, the limit is %zu (max_prompt_bytes)", len, max);
    else if (memchr(text, 0, len))
        rc = llmfs_errorf(&e, EINVAL, "prompt contains a NUL byte");
    else if (!valid_utf8((const unsigned char *)text, len))
        rc = llmfs_errorf(&e, EINVAL, "prompt is not valid UTF-8");
    else
        rc = 0;
    if (rc < 0)
        goto fail;

    prompt_snapshot ps = {0};
    pthread_mutex_lock(&m->mu);
    if (m->state != MS_READY) {
        rc = m->state == MS_LOADING ? llmfs_errorf(&e, EAGAIN, "model %s is still loading", m->name)
                                    : llmfs_errorf(&e, ENODEV, "model %s is unloaded", m->name);
    } else if (s->closed) {
        rc = llmfs_errorf(&e, ENOENT, "session %d is closed", s->id);
    } else if (s->state != SS_IDLE || s->preparing) {
        rc = llmfs_errorf(&e, EBUSY, "session %d is busy with a reply (write stop to its ctl to end it)", s->id);
    } else if (s->settings.mode == MODE_CHAT && !m->chat_template && !m->remote) {
        rc = llmfs_errorf(&e, EINVAL, "model %s has no chat template: set mode raw", m->name);
    } else {
        s->preparing = true;
        atomic_store(&s->stop_req, false);
        rc = snapshot_take(s, &ps);
        if (rc < 0)
            llmfs_errorf(&e, ENOMEM, "out of memory");
    }
    if (rc < 0 && s->preparing) {
        s->preparing = false;
        snapshot_free(&ps);
    }
    pthread_mutex_unlock(&m->mu);
    if (rc < 0)
        goto fail;

    /* images: markers for those the text does not place (they go first), then each
     * through the projector */
    char *user = NULL;
    vision_embd *new_imgs = NULL;
    const vision_embd **all_imgs = NULL;
    vision_span *spans = NULL;
    int n_all = 0, n = 0;
    const int n_marks = m->clip ? vision_count_markers(text, ps.marker) : 0;
    const char *no_nc = ps.n_pending ? model_non_causal_missing(m->mdl) : NULL;
    if (ps.n_pending && !m->clip) {
        n = llmfs_errorf(&e, EINVAL, "model %s has no vision projector (set mmproj)", m->name);
    } else if (no_nc) {
        n = llmfs_errorf(&e, EINVAL, "images need the text model's layers on the CPU (ngl 0): the %s backend has no non-causal attention yet",
                         no_nc);
    } else if (n_marks > ps.n_pending && (ps.mode == MODE_RAW || ps.n_pending)) {
        n = llmfs_errorf(&e, EINVAL, "the prompt has %d image markers (%s) for %d image%s", n_marks, ps.marker,
                         ps.n_pending, ps.n_pending == 1 ? "" : "s");
    } else {
        const int missing = ps.n_pending > n_marks ? ps.n_pending - n_marks : 0;
        size_t ml = strlen(ps.marker), extra = (size_t)missing * ml;
        user = malloc(len + extra + 1);
        if (user) {
            for (int i = 0; i < missing; i++)
                memcpy(user + (size_t)i * ml, ps.marker, ml);
            memcpy(user + extra, text, len);
            user[len + extra] = 0;
        }
        int n_old = 0;
        for (int i = 0; i < ps.n_turns; i++)
            n_old += ps.turns[i].n_imgs;
        new_imgs = ps.n_pending ? calloc((size_t)ps.n_pending, sizeof *new_imgs) : NULL;
        all_imgs = n_old + ps.n_pending ? calloc((size_t)(n_old + ps.n_pending), sizeof *all_imgs) : NULL;
        if (!user || (ps.n_pending && !new_imgs) || (n_old + ps.n_pending && !all_imgs))
            n = llmfs_errorf(&e, ENOMEM, "out of memory");
        for (int i = 0; i < ps.n_turns && n == 0; i++)
            for (int k = 0; k < ps.turns[i].n_imgs; k++)
                all_imgs[n_all++] = &ps.turns[i].imgs[k];
        for (int i = 0; i < ps.n_pending && n == 0; i++) {
            /* a projector on the text model's GPU shares its backend with the scheduler's
             * steps: the encode waits for the step in flight (engine.h, dev_mu) */
            const bool on_dev = clip_on_device(m->clip);
            pthread_mutex_lock(&m->clip_mu);
            if (on_dev)
                pthread_mutex_lock(&m->dev_mu);
            n = vision_encode(m->clip, &ps.pending[i], ps.min_tokens, ps.max_tokens, &new_imgs[i], &e);
            if (on_dev)
                pthread_mutex_unlock(&m->dev_mu);
            pthread_mutex_unlock(&m->clip_mu);
            if (n == 0 && new_imgs[i].n_tok > ps.n_ubatch)
                n = llmfs_errorf(&e, E2BIG, "image %d becomes %d tokens, more than the micro-batch of %d (raise ubatch, or lower image_max_tokens)",
                                 i + 1, new_imgs[i].n_tok, ps.n_ubatch);
            if (n == 0)
                all_imgs[n_all++] = &new_imgs[i];
        }
    }
    int32_t *toks = NULL;
    if (n == 0 && !m->remote) /* a remote model's server tokenizes and samples */
        n = build_tokens(m, &ps, user, all_imgs, n_all, &toks, &spans, &e);
    free(all_imgs);
    sampler *smp = NULL;
    if (m->remote) {
        rc = n;
    } else if (n > ps.n_ctx) {
        rc = llmfs_errorf(&e, E2BIG, "%s is %d tokens, the context holds %d%s",
                          ps.mode == MODE_CHAT ? "the conversation" : "the prompt", n, ps.n_ctx,
                          ps.mode == MODE_CHAT ? " (write reset to start over, or raise ctx)" : " (raise ctx)");
    } else if (n < 0) {
        rc = n;
    } else {
        ps.sp.seed = ps.seed >= 0 ? (uint64_t)ps.seed : random_seed();
        smp = sampler_new(&ps.sp, m->n_vocab);
        if (!smp)
            rc = llmfs_errorf(&e, ENOMEM, "out of memory for the sampler");
    }
    stop_filter stops = {0};
    if (rc == 0 && stop_filter_init(&stops, ps.stop_strings) < 0)
        rc = llmfs_errorf(&e, ENOMEM, "out of memory for the stop strings");
    bool begun = rc == 0;
    if (begun)
        transcript_begin(s, &ps, user, strlen(user));

    /* swap counters before the generation, for the swap warning (read outside the lock) */
    int64_t swap_now = rc == 0 ? sysroot_swap_pages() : -1;
    llmfs_stream *old_out = NULL, *old_reasoning = NULL;
    pthread_mutex_lock(&m->mu);
    s->preparing = false;
    if (rc == 0 && (s->closed || m->state != MS_READY))
        rc = s->closed ? llmfs_errorf(&e, ENOENT, "session %d is closed", s->id)
                       : llmfs_errorf(&e, ENODEV, "model %s is unloaded", m->name);
    if (rc == 0 && ps.mode == MODE_CHAT && s->n_conv == s->cap_conv) {
        int cap = s->cap_conv ? s->cap_conv * 2 : 8;
        chat_turn *p = realloc(s->conv, sizeof *p * (size_t)cap);
        if (p)
            s->conv = p, s->cap_conv = cap;
        else
            rc = llmfs_errorf(&e, ENOMEM, "out of memory");
    }
    /* each reply has its own output and reasoning: readers of the last reply keep theirs */
    llmfs_stream *fresh = NULL, *fresh_reasoning = NULL;
    if (rc == 0 && s->out_used) {
        fresh = stream_new();
        fresh_reasoning = stream_new();
        if (!fresh || !fresh_reasoning)
            rc = llmfs_errorf(&e, ENOMEM, "out of memory");
    }
    if (rc == 0) {
        /* the turn joins the conversation only once nothing can fail any more */
        if (ps.mode == MODE_CHAT) {
            chat_turn *t = &s->conv[s->n_conv++];
            t->user = user;
            t->assistant = NULL;
            t->imgs = new_imgs;
            t->n_imgs = ps.n_pending;
            user = NULL;
        } else {
            free_images(s->raw_imgs, s->n_raw_imgs);
            s->raw_imgs = new_imgs;
            s->n_raw_imgs = ps.n_pending;
        }
        new_imgs = NULL;
        free(s->spans);
        s->spans = spans;
        s->n_spans = n_all;
        spans = NULL;
        if (fresh) {
            old_out = s->out;
            s->out = fresh;
            old_reasoning = s->reasoning;
            s->reasoning = fresh_reasoning;
            fresh = fresh_reasoning = NULL;
        }
        s->out_used = true;
        free(s->toks);
        s->toks = toks;
        s->n_toks = s->cap_toks = n;
        toks = NULL;
        sampler_free(s->smp);
        s->smp = smp;
        smp = NULL;
        s->n_predict = ps.n_predict;
        s->raw_turn = ps.mode == MODE_RAW;
        memset(&s->detok, 0, sizeof s->detok);
        reason_split_init(&s->rsplit, ps.mode == MODE_CHAT && m->chat_template ? reason_mode_of(m->chat_template)
                                                                               : REASON_NONE);
        stop_filter_free(&s->stops);
        s->stops = stops;
        memset(&stops, 0, sizeof stops);
        s->reply_len = 0;
        s->n_prompt = n;
        s->n_cached = 0;
        s->n_gen = 0;
        s->t_prompt = engine_now();
        m->swap_gen_start = swap_now;
        s->t_prefill = s->t_first = s->t_last = 0;
        s->ttft_ms = s->pp_tps = s->tg_tps = 0;
        s->draft_n = s->draft_accepted = s->spec_steps = 0;
        s->stop_reason[0] = 0;
        s->error[0] = 0;
        free(s->last_prompt);
        s->last_prompt = strndup(text, len);
        if (ps.log_system) {
            free(s->system_logged);
            s->system_logged = strdup(ps.system);
        }
        s->state = SS_QUEUED;
        s->queue_seq = ++m->queue_seq;
        s->last_active = s->t_prompt;
        m->last_activity = s->t_prompt;
        m->requests++;
        pthread_cond_signal(&m->work_cv);
    }
    bool closed_meanwhile = rc < 0 && s->closed;
    pthread_mutex_unlock(&m->mu);
    if (begun && rc < 0) /* the turn's header is in the transcript: so must be its end */
        stream_printf(s->transcript, "### end error (%s): prompt %d tokens (0 cached), 0 generated, ttft 0.0 ms, "
                                     "0.0 tokens/s\n", e.msg, n);
    if (old_out)
        llmfs_stream_put(old_out);
    if (old_reasoning)
        llmfs_stream_put(old_reasoning);
    if (fresh)
        llmfs_stream_put(fresh);
    if (fresh_reasoning)
        llmfs_stream_put(fresh_reasoning);
    free(user);
    free(toks);
    free(spans);
    free_images(new_imgs, ps.n_pending);
    sampler_free(smp);
    stop_filter_free(&stops);
    snapshot_free(&ps);
    if (closed_meanwhile) {
        /* close came while this prompt was being prepared and left the rest to it */
        pthread_mutex_lock(&m->mu);
        session_release_slot(s);
        bool listed = unlist(s);
        pthread_mutex_unlock(&m->mu);
        stream_printf(s->transcript, "### closed\n");
        stream_finish(s->transcript);
        stream_finish(s->reasoning);
        stream_finish(s->out);
        if (listed)
            llmfs_session_put(s);
    }
    if (rc < 0)
        goto fail;
    return 0;
fail:
    if (err)
        *err = e;
    return session_fail(s, rc, &e);
}

int llmfs_session_set_history(llmfs_session *s, const char *system, const char *const *user,
                              const char *const *assistant, int n_turns, llmfs_error *err)
{
    llmfs_model *m = s->m;
    chat_turn *turns = n_turns > 0 ? calloc((size_t)n_turns, sizeof *turns) : NULL;
    char *sys = system ? strdup(system) : NULL;
    bool oom = (n_turns > 0 && !turns) || (system && !sys);
    for (int i = 0; i < n_turns && !oom; i++) {
        turns[i].user = strdup(user[i] ? user[i] : "");
        turns[i].assistant = strdup(assistant[i] ? assistant[i] : "");
        oom = !turns[i].user || !turns[i].assistant;
    }
    int rc = 0;
    pthread_mutex_lock(&m->mu);
    if (oom)
        rc = llmfs_errorf(err, ENOMEM, "out of memory for the conversation");
    else if (s->closed)
        rc = llmfs_errorf(err, ENOENT, "session %d is closed", s->id);
    else if (s->state != SS_IDLE || s->preparing)
        rc = llmfs_errorf(err, EBUSY, "session %d is busy with a reply", s->id);
    if (rc == 0) {
        reset_conversation(s);
        free(s->conv);
        s->conv = turns;
        s->n_conv = s->cap_conv = n_turns;
        turns = NULL;
        if (sys) {
            free(s->settings.system);
            s->settings.system = sys;
            sys = NULL;
        }
    }
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; turns && i < n_turns; i++) {
        free(turns[i].user);
        free(turns[i].assistant);
    }
    free(turns);
    free(sys);
    return rc;
}

int llmfs_session_image(llmfs_session *s, const void *buf, size_t len, llmfs_error *err)
{
    llmfs_model *m = s->m;
    llmfs_error e = {0};
    pthread_mutex_lock(&m->lf->mu);
    size_t max = (size_t)m->lf->settings.max_image_bytes;
    pthread_mutex_unlock(&m->lf->mu);
    int rc = 0;
    pthread_mutex_lock(&m->mu);
    if (m->state != MS_READY)
        rc = llmfs_errorf(&e, m->state == MS_LOADING ? EAGAIN : ENODEV, "model %s is not ready", m->name);
    else if (!m->clip)
        rc = llmfs_errorf(&e, EINVAL, "model %s has no vision projector (set mmproj)", m->name);
    else if (s->state != SS_IDLE || s->preparing)
        rc = llmfs_errorf(&e, EBUSY, "session %d is busy with a reply (write stop to its ctl to end it)", s->id);
    pthread_mutex_unlock(&m->mu);
    if (rc == 0 && len > max)
        rc = llmfs_errorf(&e, EFBIG, "image is %zu bytes, the limit is %zu (max_image_bytes)", len, max);
    image_rgb img = {0};
    if (rc == 0)
        rc = image_decode(buf, len, &img, &e); /* outside the lock: a large picture takes a while */
    if (rc == 0) {
        pthread_mutex_lock(&m->mu);
        image_rgb *p = realloc(s->pending, sizeof *p * (size_t)(s->n_pending + 1));
        if (p) {
            s->pending = p;
            s->pending[s->n_pending++] = img;
        } else {
            image_free(&img);
            rc = llmfs_errorf(&e, ENOMEM, "out of memory");
        }
        pthread_mutex_unlock(&m->mu);
    }
    if (rc < 0) {
        if (err)
            *err = e;
        return session_fail(s, rc, &e);
    }
    return 0;
}

int llmfs_session_images_text(llmfs_session *s, char *buf, size_t cap)
{
    size_t o = 0;
    pthread_mutex_lock(&s->m->mu);
    for (int i = 0; i < s->n_pending; i++) {
        int k = o < cap ? snprintf(buf + o, cap - o, "%dx%d\n", s->pending[i].nx, s->pending[i].ny)
                        : snprintf(NULL, 0, "%dx%d\n", s->pending[i].nx, s->pending[i].ny);
        o += k > 0 ? (size_t)k : 0;
    }
    pthread_mutex_unlock(&s->m->mu);
    return (int)o;
}

char *llmfs_session_last_prompt(llmfs_session *s)
{
    pthread_mutex_lock(&s->m->mu);
    char *p = s->last_prompt ? strdup(s->last_prompt) : NULL;
    pthread_mutex_unlock(&s->m->mu);
    return p;
}

void llmfs_session_error(llmfs_session *s, char *buf, size_t cap)
{
    pthread_mutex_lock(&s->m->mu);
    snprintf(buf, cap, "%s", s->error);
    pthread_mutex_unlock(&s->m->mu);
}

void llmfs_session_stats_get(llmfs_session *s, llmfs_session_stats *out)
{
    llmfs_model *m = s->m;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&m->mu);
    out->id = s->id;
    snprintf(out->state, sizeof out->state, "%s", state_names[s->state]);
    snprintf(out->stop_reason, sizeof out->stop_reason, "%s", s->stop_reason);
    out->n_prompt = s->n_prompt;
    out->n_cached = s->n_cached;
    out->n_gen = s->n_gen;
    out->ttft_ms = s->ttft_ms;
    out->pp_tps = s->pp_tps;
    out->tg_tps = s->tg_tps;
    out->draft_n = s->draft_n;
    out->draft_accepted = s->draft_accepted;
    out->spec_steps = s->spec_steps;
    out->kv_used = s->slot >= 0 && s->slot < m->n_slots ? m->slots[s->slot].n : 0;
    out->kv_size = m->kv ? m->kv->n_ctx : 0;
    out->turns = s->turns;
    out->checkpoints = m->kv && s->slot >= 0 && s->slot < m->n_slots ? kv_checkpoint_count(m->kv, s->slot) : 0;
    pthread_mutex_unlock(&m->mu);
}

llmfs_stream *llmfs_session_output(llmfs_session *s)
{
    pthread_mutex_lock(&s->m->mu);
    llmfs_stream *st = stream_ref(s->out);
    pthread_mutex_unlock(&s->m->mu);
    return st;
}

llmfs_stream *llmfs_session_reasoning(llmfs_session *s)
{
    return stream_ref(s->reasoning);
}

llmfs_stream *llmfs_session_transcript(llmfs_session *s)
{
    return stream_ref(s->transcript);
}

double llmfs_session_idle_seconds(llmfs_session *s)
{
    pthread_mutex_lock(&s->m->mu);
    double idle = s->state != SS_IDLE || s->preparing ? 0 : engine_now() - s->last_active;
    pthread_mutex_unlock(&s->m->mu);
    return idle;
}

bool llmfs_session_busy(llmfs_session *s)
{
    pthread_mutex_lock(&s->m->mu);
    bool busy = s->state != SS_IDLE || s->preparing;
    pthread_mutex_unlock(&s->m->mu);
    return busy;
}
