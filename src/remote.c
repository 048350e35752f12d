/* remote.c — remote models over the OpenAI API (see remote.h). */
#include "remote.h"

#include "engine.h"
#include "stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool remote_is_url(const char *path)
{
    return path && (strncmp(path, "http://", 7) == 0 || strncmp(path, "https://", 8) == 0);
}

/* HOST[:PORT] of a URL into buf. */
static bool url_authority(const char *url, char *buf, size_t cap)
{
    const char *p = strstr(url, "://");
    if (!p)
        return false;
    p += 3;
    const char *at = NULL, *end = p + strcspn(p, "/?#");
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at)
        p = at + 1;
    if (end == p || (size_t)(end - p) >= cap)
        return false;
    snprintf(buf, cap, "%.*s", (int)(end - p), p);
    return true;
}

bool remote_host_allowed(const char *url, const char *hosts)
{
    char auth[256];
    if (!hosts || !*hosts || !url_authority(url, auth, sizeof auth))
        return false;
    /* the host without its port ([v6]:port keeps its brackets) */
    char host[256];
    snprintf(host, sizeof host, "%s", auth);
    char *colon = strrchr(host, ':');
    if (colon && (host[0] != '[' || colon > strchr(host, ']')))
        *colon = 0;
    const char *p = hosts;
    while (*p) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        if (n && ((strlen(auth) == n && strncasecmp(auth, p, n) == 0) ||
                  (strlen(host) == n && strncasecmp(host, p, n) == 0)))
            return true;
        p += n;
    }
    return false;
}

#ifndef LLMFS_HAVE_REMOTE

int remote_open(remote_model **out, const char *url, const char *model_id, const char *key_file,
                llmfs_error *err)
{
    (void)url, (void)model_id, (void)key_file;
    *out = NULL;
    return llmfs_errorf(err, ENOTSUP, "this llmfs was built without remote models (libcurl and jansson)");
}
void remote_free(remote_model *r)
{
    (void)r;
}
void *remote_main(void *arg)
{
    (void)arg;
    return NULL;
}
const char *remote_model_id(const remote_model *r)
{
    (void)r;
    return "";
}
int remote_ctx_train(const remote_model *r)
{
    (void)r;
    return 0;
}
const char *remote_owned_by(const remote_model *r)
{
    (void)r;
    return "";
}

#else

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>

/* Connecting may take this long; a reply that sends nothing for STALL_S seconds is cut. */
#define CONNECT_TIMEOUT_S 10
#define STALL_S 60
#define MODELS_TIMEOUT_S 30

struct remote_model {
    char *url;       /* the base, without a trailing slash: https://host/v1 */
    char *model_id;
    char *api_key;   /* NULL: none */
    char *owned_by;
    int ctx_train;
    /* the replies running, so the model's thread can wait for them when it stops */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

const char *remote_model_id(const remote_model *r)
{
    return r->model_id;
}
int remote_ctx_train(const remote_model *r)
{
    return r->ctx_train;
}
const char *remote_owned_by(const remote_model *r)
{
    return r->owned_by ? r->owned_by : "";
}

void remote_free(remote_model *r)
{
    if (!r)
        return;
    free(r->url);
    free(r->model_id);
    free(r->api_key);
    free(r->owned_by);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

typedef struct growbuf {
    char *buf;
    size_t len, cap;
    bool oom;
} growbuf;

static void gb_put(growbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->buf, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->buf = p;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}

static size_t collect_body(char *p, size_t size, size_t n, void *arg)
{
    growbuf *b = arg;
    if (b->len + size * n > (8u << 20)) /* a /models answer is small */
        return 0;
    gb_put(b, p, size * n);
    return b->oom ? 0 : size * n;
}

/* The errno and reason of a failed transfer. */
static int curl_failure(CURLcode rc, const char *what, const char *detail, llmfs_error *err)
{
    int code = rc == CURLE_OPERATION_TIMEDOUT ? ETIMEDOUT
               : rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ? EHOSTUNREACH
                                                                                  : EIO;
    return llmfs_errorf(err, code, "remote %s: %s%s%s", what, curl_easy_strerror(rc), detail && *detail ? ": " : "",
                        detail ? detail : "");
}

static struct curl_slist *auth_headers(const remote_model *r, bool json)
{
    struct curl_slist *h = NULL;
    if (json)
        h = curl_slist_append(h, "Content-Type: application/json");
    if (r->api_key) {
        size_t n = strlen(r->api_key) + 32;
        char *line = malloc(n);
        if (line) {
            snprintf(line, n, "Authorization: Bearer %s", r->api_key);
            struct curl_slist *h2 = curl_slist_append(h, line);
            if (h2)
                h = h2;
            free(line);
        }
    }
    return h;
}

/* The message of an OpenAI-shaped error body, or the body's start. */
static void error_message(const char *body, char *buf, size_t cap)
{
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    if (!msg)
        msg = json_string_value(json_object_get(j, "error"));
    snprintf(buf, cap, "%s", msg ? msg : body ? body : "");
    buf[strcspn(buf, "\r\n")] = 0;
    json_decref(j);
}

static int read_key(const char *path, char **out, llmfs_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return llmfs_errorf(err, errno == ENOENT ? ENOENT : EACCES, "api_key_file %s: %s", path, strerror(errno));
    char line[1024];
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (got)
        line[strcspn(line, "\r\n")] = 0;
    if (!got || !line[0])
        return llmfs_errorf(err, EINVAL, "api_key_file %s: the first line (the key) is empty", path);
    *out = strdup(line);
    return *out ? 0 : llmfs_errorf(err, ENOMEM, "out of memory");
}

int remote_open(remote_model **out, const char *url, const char *model_id, const char *key_file,
                llmfs_error *err)
{
    *out = NULL;
    if (!model_id || !*model_id)
        return llmfs_errorf(err, EINVAL, "a remote model needs model=ID (the id the server lists in /models)");
    pthread_once(&curl_once, curl_init_once);
    remote_model *r = calloc(1, sizeof *r);
    if (!r)
        return llmfs_errorf(err, ENOMEM, "out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->url = strdup(url);
    r->model_id = strdup(model_id);
    if (!r->url || !r->model_id) {
        remote_free(r);
        return llmfs_errorf(err, ENOMEM, "out of memory");
    }
    size_t ul = strlen(r->url);
    while (ul > 0 && r->url[ul - 1] == '/')
        r->url[--ul] = 0;
    int rc = key_file && *key_file ? read_key(key_file, &r->api_key, err) : 0;
    if (rc < 0) {
        remote_free(r);
        return rc;
    }
    CURL *c = curl_easy_init();
    growbuf body = {0};
    char models_url[1200];
    snprintf(models_url, sizeof models_url, "%s/models", r->url);
    struct curl_slist *h = auth_headers(r, false);
    char cerr[CURL_ERROR_SIZE] = "";
    if (!c) {
        rc = llmfs_errorf(err, ENOMEM, "out of memory for a connection");
    } else {
        curl_easy_setopt(c, CURLOPT_URL, models_url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)MODELS_TIMEOUT_S);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        CURLcode cc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (cc != CURLE_OK) {
            rc = curl_failure(cc, models_url, cerr, err);
        } else if (status >= 400) {
            char msg[160];
            error_message(body.buf, msg, sizeof msg);
            rc = llmfs_errorf(err, status == 401 || status == 403 ? EACCES : EIO, "remote %s: HTTP %ld %s",
                              models_url, status, msg);
        }
    }
    if (rc == 0) {
        json_t *j = json_loads(body.buf ? body.buf : "", 0, NULL);
        json_t *data = json_object_get(j, "data"), *entry;
        size_t i;
        bool found = false;
        json_array_foreach(data, i, entry) {
            const char *id = json_string_value(json_object_get(entry, "id"));
            if (!id || strcmp(id, model_id) != 0)
                continue;
            found = true;
            const char *owner = json_string_value(json_object_get(entry, "owned_by"));
            r->owned_by = strdup(owner ? owner : "");
            /* vLLM says max_model_len, llama-server meta.n_ctx_train */
            json_t *ctx = json_object_get(entry, "max_model_len");
            if (!json_is_integer(ctx))
                ctx = json_object_get(json_object_get(entry, "meta"), "n_ctx_train");
            if (!json_is_integer(ctx))
                ctx = json_object_get(entry, "context_length");
            r->ctx_train = json_is_integer(ctx) ? (int)json_integer_value(ctx) : 0;
        }
        if (!json_is_array(data))
            rc = llmfs_errorf(err, EIO, "remote %s: the answer is not a model list", models_url);
        else if (!found)
            rc = llmfs_errorf(err, ENOENT, "remote %s: no model %s there", models_url, model_id);
        json_decref(j);
    }
    curl_slist_free_all(h);
    if (c)
        curl_easy_cleanup(c);
    free(body.buf);
    if (rc < 0) {
        remote_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* ---- one reply ---- */

typedef struct reply_job {
    llmfs_session *s;     /* a reference */
    remote_model *r;
    /* from the session, taken under the lock when the job starts */
    bool raw;
    char *body;           /* the request */
    /* as the reply streams */
    growbuf line;         /* an unfinished SSE line */
    growbuf errbody;      /* the body of an error status */
    long status;
    bool done, stopped, unloading, stop_hit, failed_text;
    char finish[16];
    int usage_prompt, usage_gen, pieces;
    char why[256];
} reply_job;

/* The request body for the session's running turn (m->mu held). */
static char *request_body(llmfs_session *s, remote_model *r, bool raw)
{
    const llmfs_settings *st = &s->settings;
    json_t *req = json_object();
    json_object_set_new(req, "model", json_string(r->model_id));
    json_object_set_new(req, "stream", json_true());
    json_object_set_new(req, "stream_options", json_pack("{s:b}", "include_usage", 1));
    json_object_set_new(req, "temperature", json_real(st->temp));
    json_object_set_new(req, "top_p", json_real(st->top_p));
    json_object_set_new(req, "top_k", json_integer(st->top_k));
    json_object_set_new(req, "min_p", json_real(st->min_p));
    if (st->seed >= 0)
        json_object_set_new(req, "seed", json_integer(st->seed));
    if (s->n_predict >= 0)
        json_object_set_new(req, "max_tokens", json_integer(s->n_predict));
    if (raw) {
        json_object_set_new(req, "prompt", json_string(s->last_prompt ? s->last_prompt : ""));
    } else {
        json_t *msgs = json_array();
        if (st->system && *st->system)
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", st->system));
        for (int i = 0; i < s->n_conv; i++) {
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", s->conv[i].user));
            if (s->conv[i].assistant)
                json_array_append_new(msgs,
                                      json_pack("{s:s, s:s}", "role", "assistant", "content", s->conv[i].assistant));
        }
        json_object_set_new(req, "messages", msgs);
    }
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return text;
}

/* The first piece of the reply: the turn is generating from here. */
static void first_piece(reply_job *j)
{
    llmfs_session *s = j->s;
    pthread_mutex_lock(&s->m->mu);
    if (s->state != SS_GEN) {
        s->state = SS_GEN;
        s->t_first = engine_now();
        s->ttft_ms = (s->t_first - s->t_prompt) * 1e3;
    }
    pthread_mutex_unlock(&s->m->mu);
}

static void piece(reply_job *j, const char *text, size_t n, bool reasoning)
{
    llmfs_session *s = j->s;
    if (!n)
        return;
    first_piece(j);
    if (reasoning) {
        stream_append(s->reasoning, text, n);
        return;
    }
    j->pieces++;
    if (sched_reply_text(s, text, (int)n, false) < 0)
        j->failed_text = true;
    pthread_mutex_lock(&s->m->mu);
    s->n_gen = j->usage_gen > j->pieces ? j->usage_gen : j->pieces;
    s->t_last = engine_now();
    if (s->n_gen > 1 && s->t_last > s->t_first)
        s->tg_tps = (s->n_gen - 1) / (s->t_last - s->t_first);
    pthread_mutex_unlock(&s->m->mu);
    if (s->stops.hit)
        j->stop_hit = true;
}

/* One "data: ..." line of the event stream. */
static void sse_line(reply_job *j, const char *line)
{
    if (strncmp(line, "data:", 5) != 0)
        return; /* comments, event names, ids */
    line += 5;
    while (*line == ' ')
        line++;
    if (strcmp(line, "[DONE]") == 0) {
        j->done = true;
        return;
    }
    json_t *ev = json_loads(line, 0, NULL);
    if (!ev)
        return;
    json_t *err = json_object_get(ev, "error");
    if (err) {
        const char *m = json_string_value(json_object_get(err, "message"));
        snprintf(j->why, sizeof j->why, "remote: %.200s", m ? m : "error event");
    }
    json_t *usage = json_object_get(ev, "usage");
    if (json_is_object(usage)) {
        j->usage_prompt = (int)json_integer_value(json_object_get(usage, "prompt_tokens"));
        j->usage_gen = (int)json_integer_value(json_object_get(usage, "completion_tokens"));
    }
    json_t *ch = json_array_get(json_object_get(ev, "choices"), 0);
    if (ch) {
        json_t *delta = json_object_get(ch, "delta");
        json_t *rc = json_object_get(delta, "reasoning_content");
        if (json_is_string(rc))
            piece(j, json_string_value(rc), json_string_length(rc), true);
        json_t *t = delta ? json_object_get(delta, "content") : json_object_get(ch, "text");
        if (json_is_string(t))
            piece(j, json_string_value(t), json_string_length(t), false);
        const char *fr = json_string_value(json_object_get(ch, "finish_reason"));
        if (fr)
            snprintf(j->finish, sizeof j->finish, "%s", fr);
    }
    json_decref(ev);
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    reply_job *j = arg;
    size_t len = size * n;
    if (j->status >= 400) {
        if (j->errbody.len < 4096)
            gb_put(&j->errbody, p, len);
        return len;
    }
    for (size_t i = 0; i < len && !j->stop_hit; i++) {
        if (p[i] == '\n') {
            if (j->line.len && j->line.buf[j->line.len - 1] == '\r')
                j->line.buf[--j->line.len] = 0;
            if (j->line.len)
                sse_line(j, j->line.buf);
            j->line.len = 0;
        } else {
            gb_put(&j->line, p + i, 1);
        }
    }
    /* a stop string reached here ends the transfer: the rest is not wanted */
    return j->stop_hit || j->line.oom ? 0 : len;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    reply_job *j = arg;
    llmfs_session *s = j->s;
    if (atomic_load(&s->stop_req)) {
        j->stopped = true;
        return 1;
    }
    pthread_mutex_lock(&s->m->mu);
    bool stopping = s->m->stopping;
    pthread_mutex_unlock(&s->m->mu);
    if (stopping) {
        j->unloading = true;
        return 1;
    }
    return 0;
}

/* The status line comes before the body: note it so an error body is kept whole. */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    reply_job *j = arg;
    size_t len = size * n;
    if (len > 9 && strncmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', len);
        if (sp)
            j->status = strtol(sp + 1, NULL, 10);
    }
    return len;
}

static void *reply_main(void *arg)
{
    reply_job *j = arg;
    llmfs_session *s = j->s;
    llmfs_model *m = s->m;
    remote_model *r = j->r;
    char url[1200];
    snprintf(url, sizeof url, "%s/%s", r->url, j->raw ? "completions" : "chat/completions");
    CURL *c = curl_easy_init();
    struct curl_slist *h = auth_headers(r, true);
    char cerr[CURL_ERROR_SIZE] = "";
    CURLcode cc = CURLE_OUT_OF_MEMORY;
    if (c && j->body) {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, j->body);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, j);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, j);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, j);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)STALL_S);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        cc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (status)
            j->status = status;
    }
    /* the rest of a last line without its newline */
    if (j->line.len && j->status < 400 && !j->stop_hit)
        sse_line(j, j->line.buf);

    const char *reason;
    if (j->stop_hit) {
        reason = "stop_string";
    } else if (j->stopped) {
        reason = "stopped";
    } else if (j->unloading) {
        reason = "error";
        snprintf(j->why, sizeof j->why, "model unloaded");
    } else if (cc != CURLE_OK) {
        reason = "error";
        llmfs_error e = {0};
        curl_failure(cc, url, cerr, &e);
        snprintf(j->why, sizeof j->why, "%s", e.msg);
    } else if (j->status >= 400) {
        reason = "error";
        char msg[160];
        error_message(j->errbody.buf, msg, sizeof msg);
        snprintf(j->why, sizeof j->why, "remote %.90s: HTTP %ld %.120s", url, j->status, msg);
    } else if (j->why[0]) {
        reason = "error";
    } else if (j->failed_text) {
        reason = "error";
        snprintf(j->why, sizeof j->why, "out of memory for the reply");
    } else if (!j->done && !j->finish[0]) {
        reason = "error";
        snprintf(j->why, sizeof j->why, "remote %.90s: the reply ended before its end", url);
    } else {
        reason = strcmp(j->finish, "length") == 0 ? "length" : "eos";
    }
    bool error = strcmp(reason, "error") == 0;
    sched_reply_text(s, NULL, 0, true);
    double now = engine_now();
    pthread_mutex_lock(&m->mu);
    if (j->usage_prompt > 0)
        s->n_prompt = j->usage_prompt;
    if (j->usage_gen > s->n_gen && !error)
        s->n_gen = j->usage_gen;
    int n_gen = s->n_gen;
    double t_first = s->t_first;
    pthread_mutex_unlock(&m->mu);
    sched_transcript_end(s, reason, error ? j->why : NULL, now, t_first, n_gen, 0, 0);
    pthread_mutex_lock(&m->mu);
    m->n_prompt_tokens += (uint64_t)(s->n_prompt > 0 ? s->n_prompt : 0);
    m->n_gen_tokens += (uint64_t)n_gen;
    if (t_first > 0) {
        m->prompt_seconds += t_first - s->t_prompt;
        m->gen_seconds += now - t_first;
    }
    if (error) {
        m->errors++;
        snprintf(s->error, sizeof s->error, "%s", j->why);
        model_set_error(m, j->why);
    }
    turn_streams ended = {0};
    int flags = session_end_turn_locked(s, reason, &ended);
    pthread_mutex_unlock(&m->mu);
    if (error)
        stream_fail(ended.out);
    session_end_turn_streams(s, &ended, flags);

    curl_slist_free_all(h);
    if (c)
        curl_easy_cleanup(c);
    free(j->body);
    free(j->line.buf);
    free(j->errbody.buf);
    free(j);
    llmfs_session_put(s);
    pthread_mutex_lock(&r->mu);
    r->active--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Starts the reply of a queued session (m->mu held); false when no thread could start
 * (the turn then ends as an error by the caller). */
static bool start_reply(llmfs_model *m, llmfs_session *s)
{
    reply_job *j = calloc(1, sizeof *j);
    if (!j)
        return false;
    j->s = s;
    j->r = m->remote;
    j->raw = s->raw_turn;
    j->body = request_body(s, m->remote, j->raw);
    session_ref(s);
    pthread_mutex_lock(&j->r->mu);
    j->r->active++;
    pthread_mutex_unlock(&j->r->mu);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    bool ok = pthread_create(&t, &at, reply_main, j) == 0;
    pthread_attr_destroy(&at);
    if (!ok) {
        pthread_mutex_lock(&j->r->mu);
        j->r->active--;
        pthread_mutex_unlock(&j->r->mu);
        free(j->body);
        free(j);
        llmfs_session_put(s);
    }
    return ok;
}

void *remote_main(void *arg)
{
    llmfs_model *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stopping) {
        bool started = false;
        for (int i = 0; i < m->n_sessions; i++) {
            llmfs_session *s = m->sessions[i];
            if (s->state != SS_QUEUED)
                continue;
            s->state = SS_PREFILL;
            s->t_prefill = engine_now();
            if (!start_reply(m, s)) {
                /* cannot start it: the turn ends as an error now */
                snprintf(s->error, sizeof s->error, "cannot start a thread for the reply");
                turn_streams ended = {0};
                int flags = session_end_turn_locked(s, "error", &ended);
                pthread_mutex_unlock(&m->mu);
                stream_fail(ended.out);
                session_end_turn_streams(s, &ended, flags);
                pthread_mutex_lock(&m->mu);
            }
            started = true;
            break; /* the list may have changed */
        }
        if (!started)
            pthread_cond_wait(&m->work_cv, &m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    /* the replies see stopping and end; the model's memory must outlive them */
    remote_model *r = m->remote;
    pthread_mutex_lock(&r->mu);
    while (r->active > 0)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

#endif
