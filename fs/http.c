/* http.c — the OpenAI-compatible HTTP endpoint (see http.h).
 *
 * libmicrohttpd runs one thread per connection, so a request may wait for its reply in
 * its own thread: a completion waits on its session's streams (woken by stream
 * watchers), and between wake-ups checks that the client is still connected, so a
 * client that goes away stops its generation within a tenth of a second. Requests reach
 * the core only through llmfs.h, like the file tree.
 */
#include "http.h"

#include "render.h"
#include "text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* A request body larger than this is refused (413) before it is parsed. */
#define HTTP_MAX_BODY (64u << 20)
/* How often a waiting request looks whether its client is still there, in ms. */
#define HTTP_POLL_MS 100

static struct MHD_Daemon *http_daemon;
static llmfs *http_lf;
static char *http_key;           /* the bearer token; NULL: none required */
static atomic_bool http_stopping;
static atomic_uint_fast64_t http_counter;

/* ---- replies ---- */

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *type,
                                 const char *text, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Sends j (taking the reference) as the reply. */
static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s)
        return send_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n", 14);
    enum MHD_Result ret = send_text(c, status, "application/json", s, strlen(s));
    free(s);
    return ret;
}

/* OpenAI's error shape: {"error": {"message", "type", "param", "code"}}. */
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *type,
                                  const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *type,
                                  const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *err = json_pack("{s:s, s:s, s:n, s:s?}", "message", msg, "type", type, "param", "code", code);
    return send_json(c, status, json_pack("{s:o}", "error", err));
}

/* The HTTP status, type and code for a core error. */
static enum MHD_Result send_core_error(struct MHD_Connection *c, int rc, const llmfs_error *e)
{
    const char *msg = e->msg[0] ? e->msg : strerror(-rc);
    switch (-rc) {
    case E2BIG:
        return send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", "context_length_exceeded", "%s", msg);
    case EMFILE:
    case EBUSY:
        return send_error(c, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limit_error", "too_many_sessions", "%s", msg);
    case EAGAIN:
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "server_error", "model_loading", "%s", msg);
    case ENODEV:
    case ENOENT:
        return send_error(c, MHD_HTTP_NOT_FOUND, "invalid_request_error", "model_not_found", "%s", msg);
    case ENOMEM:
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "server_error", "out_of_memory", "%s", msg);
    default:
        return send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", NULL, "%s", msg);
    }
}

/* ---- one completion ---- */

typedef struct gen {
    llmfs_model *m;
    llmfs_session *s;
    llmfs_stream *out, *reason;
    int watch_out, watch_reason;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t ticks, seen; /* watcher wake-ups, and those already looked at */
    int fd;               /* the client's socket, to notice it going away */
    bool chat, stream, include_usage;
    char id[96];
    char model[64];
    long long created;
    fs_text acc_out, acc_reason; /* the reply so far */
    size_t sent_out, sent_reason; /* bytes of it already sent (streaming) */
    bool done;
    /* streaming: the event text not yet handed to the server, and where it stands */
    fs_text pend;
    size_t pend_off;
    bool role_sent, finished;
} gen;

static void on_stream(void *arg)
{
    gen *g = arg;
    pthread_mutex_lock(&g->mu);
    g->ticks++;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* The stream the prompt fills may be a fresh one: watch now (a reference) instead of *st
 * when they differ. */
static void rewatch(gen *g, llmfs_stream **st, int *watch, llmfs_stream *now)
{
    if (now == *st) {
        llmfs_stream_put(now);
        return;
    }
    llmfs_stream_unwatch(*st, *watch);
    llmfs_stream_put(*st);
    *st = now;
    *watch = llmfs_stream_watch(now, on_stream, g);
}

/* Waits for the streams to grow, at most HTTP_POLL_MS. */
static void gen_wait(gen *g)
{
    pthread_mutex_lock(&g->mu);
    if (g->ticks == g->seen) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += HTTP_POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    g->seen = g->ticks;
    pthread_mutex_unlock(&g->mu);
}

/* Whether the client closed its side (a reset or hang-up counts too). */
static bool client_gone(const gen *g)
{
    if (g->fd < 0)
        return false;
    struct pollfd p = {.fd = g->fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* Appends what the stream has past acc's length. */
static void pull_stream(llmfs_stream *st, fs_text *acc)
{
    char buf[4096];
    size_t n;
    while ((n = llmfs_stream_read(st, buf, sizeof buf, acc->len)) > 0)
        text_put(acc, buf, n);
}

/* Reads what the streams have; sets g->done once the reply has ended. */
static void gen_pull(gen *g)
{
    bool done = false;
    llmfs_stream_size(g->out, &done);
    if (g->reason)
        pull_stream(g->reason, &g->acc_reason);
    pull_stream(g->out, &g->acc_out);
    if (done && g->reason) /* the reasoning comes before the end of the answer */
        pull_stream(g->reason, &g->acc_reason);
    g->done = done;
}

/* Length of the longest prefix of t[0, n) that does not end inside a UTF-8 sequence. */
static size_t utf8_whole(const char *t, size_t n)
{
    size_t i = n, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)t[i - 1] & 0xc0) == 0x80)
        i--, back++;
    if (i == 0 || back == 4)
        return n;
    unsigned char lead = (unsigned char)t[i - 1];
    size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    return back + 1 >= need ? n : i - 1;
}

static void gen_stop(gen *g)
{
    if (g->s && llmfs_session_busy(g->s))
        llmfs_session_ctl(g->s, "stop", NULL);
}

static void gen_free(gen *g)
{
    if (!g)
        return;
    if (g->watch_out > 0)
        llmfs_stream_unwatch(g->out, g->watch_out);
    if (g->watch_reason > 0)
        llmfs_stream_unwatch(g->reason, g->watch_reason);
    if (g->s) {
        gen_stop(g);
        llmfs_session_ctl(g->s, "close", NULL);
        llmfs_session_put(g->s);
    }
    if (g->out)
        llmfs_stream_put(g->out);
    if (g->reason)
        llmfs_stream_put(g->reason);
    if (g->m)
        llmfs_model_put(g->m);
    text_free(&g->acc_out);
    text_free(&g->acc_reason);
    text_free(&g->pend);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

static const char *finish_reason(const char *stop_reason)
{
    return strcmp(stop_reason, "length") == 0 || strcmp(stop_reason, "context") == 0 ? "length" : "stop";
}

static json_t *usage_json(gen *g)
{
    llmfs_session_stats st;
    llmfs_session_stats_get(g->s, &st);
    int prompt = st.n_prompt + st.n_cached;
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", prompt, "completion_tokens", st.n_gen,
                     "total_tokens", prompt + st.n_gen);
}

/* One stop string as an element of the stop_strings setting: '|' separates elements, and
 * a backslash escapes (\n \t \r \| \\, and \s a space at either end, which the value's
 * trimming would drop), so any string fits the one-line value. Returns
 * the length like snprintf. */
static int escape_stop(const char *s, size_t n, char *buf, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        char esc = c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : c == '|' || c == '\\' ? c : 0;
        if (c == ' ' && (i == 0 || i == n - 1)) /* the setting's value is trimmed */
            esc = 's';
        if (esc && o + 2 < cap) {
            buf[o] = '\\';
            buf[o + 1] = esc;
        } else if (!esc && o + 1 < cap) {
            buf[o] = c;
        }
        o += esc ? 2 : 1;
    }
    if (cap)
        buf[o < cap ? o : cap - 1] = 0;
    return (int)o;
}

/* ---- request parsing ---- */

/* The bytes of a base64 text (padding optional, no whitespace); NULL when it is not
 * base64 or memory runs out. */
static unsigned char *base64_decode(const char *s, size_t n, size_t *out_len)
{
    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return NULL;
    unsigned char *out = malloc(n / 4 * 3 + 3);
    if (!out)
        return NULL;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
              : c == '+' || c == '-' ? 62 : c == '/' || c == '_' ? 63 : -1;
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *out_len = o;
    return out;
}

/* An image of a request (image_url content parts: data: URLs only — the daemon fetches
 * nothing on a client's behalf). */
typedef struct http_image {
    unsigned char *buf;
    size_t len;
} http_image;

/* The conversation of a chat request: system messages joined, then user/assistant turns
 * (consecutive messages of one role joined), ending with the user message to answer.
 * Images may come with that last message only: earlier turns are history text, and the
 * images of a prompt are what the session's next prompt takes. */
typedef struct convo {
    fs_text system;
    fs_text *user, *assistant;
    int n;         /* turns; the last has no assistant part */
    bool has_system;
    http_image *images;
    int n_images, image_turn; /* the turn (0-based) of the first image's user message */
    const char *marker;       /* the session's media marker: where each image goes */
} convo;

static void convo_free(convo *cv)
{
    text_free(&cv->system);
    for (int i = 0; i < cv->n; i++) {
        text_free(&cv->user[i]);
        text_free(&cv->assistant[i]);
    }
    free(cv->user);
    free(cv->assistant);
    for (int i = 0; i < cv->n_images; i++)
        free(cv->images[i].buf);
    free(cv->images);
}

/* One image_url part: its image kept, the media marker in the text where it was. 0, or
 * -1 with the reason in why. */
static int image_part(convo *cv, json_t *part, fs_text *out, char *why, size_t cap)
{
    json_t *iu = json_object_get(part, "image_url");
    const char *url = json_string_value(json_is_object(iu) ? json_object_get(iu, "url") : iu);
    if (!url)
        return snprintf(why, cap, "an image_url part needs image_url.url"), -1;
    const char *comma = strchr(url, ',');
    if (strncmp(url, "data:", 5) != 0 || !comma)
        return snprintf(why, cap, "image_url: only data: URLs are accepted (data:image/png;base64,...)"), -1;
    if (comma - url < 7 || strncmp(comma - 7, ";base64", 7) != 0)
        return snprintf(why, cap, "image_url: the data: URL is not base64"), -1;
    http_image im = {0};
    im.buf = base64_decode(comma + 1, strlen(comma + 1), &im.len);
    if (!im.buf)
        return snprintf(why, cap, "image_url: the data: URL's base64 is malformed"), -1;
    http_image *grown = realloc(cv->images, sizeof *grown * (size_t)(cv->n_images + 1));
    if (!grown) {
        free(im.buf);
        return snprintf(why, cap, "out of memory"), -1;
    }
    cv->images = grown;
    if (cv->n_images == 0)
        cv->image_turn = cv->n - 1;
    cv->images[cv->n_images++] = im;
    text_puts(out, cv->marker);
    return 0;
}

/* A message's content: a string, or an array of parts: {"type":"text","text":...} and,
 * in a user message, {"type":"image_url","image_url":{"url":"data:..."}}. 0, or -1 with
 * the reason in why. */
static int content_text(convo *cv, json_t *content, fs_text *out, bool user, char *why, size_t cap)
{
    if (json_is_string(content)) {
        text_put(out, json_string_value(content), json_string_length(content));
        return 0;
    }
    if (json_is_null(content))
        return 0;
    if (!json_is_array(content))
        return snprintf(why, cap, "content must be a string or an array of parts"), -1;
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part) {
        json_t *t = json_object_get(part, "text");
        const char *type = json_string_value(json_object_get(part, "type"));
        if (user && type && strcmp(type, "image_url") == 0) {
            if (image_part(cv, part, out, why, cap) < 0)
                return -1;
            continue;
        }
        if (!type || strcmp(type, "text") != 0 || !json_is_string(t))
            return snprintf(why, cap, "content parts must be text%s parts", user ? " or image_url" : ""), -1;
        text_put(out, json_string_value(t), json_string_length(t));
    }
    return 0;
}

static int join(convo *cv, fs_text *t, json_t *content, bool user, char *why, size_t cap)
{
    if (t->len)
        text_puts(t, "\n\n");
    return content_text(cv, content, t, user, why, cap);
}

/* 0, or -1 with the reason in why. */
static int convo_parse(json_t *messages, convo *cv, const char *marker, char *why, size_t cap)
{
    memset(cv, 0, sizeof *cv);
    cv->marker = marker;
    size_t n_msgs = json_array_size(messages);
    if (!json_is_array(messages) || n_msgs == 0) {
        snprintf(why, cap, "messages must be a non-empty array");
        return -1;
    }
    cv->user = calloc(n_msgs, sizeof *cv->user);
    cv->assistant = calloc(n_msgs, sizeof *cv->assistant);
    if (!cv->user || !cv->assistant) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    size_t i;
    json_t *msg;
    char part_why[256];
    json_array_foreach(messages, i, msg) {
        const char *role = json_string_value(json_object_get(msg, "role"));
        json_t *content = json_object_get(msg, "content");
        int rc = 0;
        if (!role) {
            snprintf(why, cap, "messages[%zu] has no role", i);
            return -1;
        }
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            rc = join(cv, &cv->system, content, false, part_why, sizeof part_why);
            cv->has_system = true;
        } else if (strcmp(role, "user") == 0) {
            if (cv->n == 0 || cv->assistant[cv->n - 1].len)
                cv->n++;
            rc = join(cv, &cv->user[cv->n - 1], content, true, part_why, sizeof part_why);
        } else if (strcmp(role, "assistant") == 0) {
            if (cv->n == 0) {
                snprintf(why, cap, "messages[%zu]: an assistant message before any user message", i);
                return -1;
            }
            rc = join(cv, &cv->assistant[cv->n - 1], content, false, part_why, sizeof part_why);
        } else {
            snprintf(why, cap, "messages[%zu]: role '%s' is not supported (system, user, assistant)", i, role);
            return -1;
        }
        if (rc < 0) {
            snprintf(why, cap, "messages[%zu]: %s", i, part_why);
            return -1;
        }
    }
    if (cv->n == 0 || cv->assistant[cv->n - 1].len) {
        snprintf(why, cap, "the last message must be a user message");
        return -1;
    }
    if (cv->n_images && cv->image_turn != cv->n - 1) {
        snprintf(why, cap, "images are accepted in the last user message only");
        return -1;
    }
    if (cv->system.oom)
        return snprintf(why, cap, "out of memory"), -1;
    for (int t = 0; t < cv->n; t++)
        if (cv->user[t].oom || cv->assistant[t].oom)
            return snprintf(why, cap, "out of memory"), -1;
    return 0;
}

/* Applies one "key value" line to the session; on failure fills why. */
static int session_set(gen *g, const char *line, char *why, size_t cap)
{
    llmfs_error e = {0};
    if (llmfs_session_ctl(g->s, line, &e) < 0) {
        snprintf(why, cap, "%s", e.msg);
        return -1;
    }
    return 0;
}

/* The sampling fields of the request as session settings. 0, or -1 with why. */
static int apply_params(gen *g, json_t *req, char *why, size_t cap)
{
    static const struct {
        const char *field, *setting;
        bool integer;
    } nums[] = {
        {"temperature", "temp", false}, {"top_p", "top_p", false}, {"min_p", "min_p", false},
        {"top_k", "top_k", true},       {"seed", "seed", true},    {"max_tokens", "n_predict", true},
        {"max_completion_tokens", "n_predict", true},
        {"repeat_penalty", "repeat_penalty", false},
    };
    char line[256];
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        json_t *v = json_object_get(req, nums[i].field);
        if (!v || json_is_null(v))
            continue;
        if (nums[i].integer ? !json_is_integer(v) : !json_is_number(v)) {
            snprintf(why, cap, "%s must be %s", nums[i].field, nums[i].integer ? "an integer" : "a number");
            return -1;
        }
        if (nums[i].integer)
            snprintf(line, sizeof line, "%s %lld", nums[i].setting, (long long)json_integer_value(v));
        else
            snprintf(line, sizeof line, "%s %.9g", nums[i].setting, json_number_value(v));
        llmfs_error e = {0};
        if (llmfs_session_ctl(g->s, line, &e) < 0) {
            snprintf(why, cap, "%s: %s", nums[i].field, e.msg);
            return -1;
        }
    }
    json_t *n = json_object_get(req, "n");
    if (n && !json_is_null(n) && (!json_is_integer(n) || json_integer_value(n) != 1)) {
        snprintf(why, cap, "n: only 1 choice per request is supported");
        return -1;
    }
    json_t *stop = json_object_get(req, "stop");
    if (stop && !json_is_null(stop)) {
        fs_text list = {0};
        if (json_is_string(stop)) {
            char esc[1024];
            int k = escape_stop(json_string_value(stop), json_string_length(stop), esc, sizeof esc);
            if (k >= (int)sizeof esc)
                return snprintf(why, cap, "stop: a stop string is too long"), -1;
            text_put(&list, esc, (size_t)k);
        } else if (json_is_array(stop)) {
            size_t i;
            json_t *v;
            json_array_foreach(stop, i, v) {
                char esc[1024];
                if (!json_is_string(v)) {
                    text_free(&list);
                    return snprintf(why, cap, "stop must be a string or an array of strings"), -1;
                }
                int k = escape_stop(json_string_value(v), json_string_length(v), esc, sizeof esc);
                if (k >= (int)sizeof esc) {
                    text_free(&list);
                    return snprintf(why, cap, "stop: a stop string is too long"), -1;
                }
                if (i)
                    text_puts(&list, "|");
                text_put(&list, esc, (size_t)k);
            }
        } else {
            return snprintf(why, cap, "stop must be a string or an array of strings"), -1;
        }
        fs_text l2 = {0};
        text_puts(&l2, "stop_strings ");
        text_put(&l2, list.buf ? list.buf : "", list.len);
        text_put(&l2, "", 1);
        text_free(&list);
        if (l2.oom) {
            text_free(&l2);
            return snprintf(why, cap, "out of memory"), -1;
        }
        int rc = session_set(g, l2.buf, why, cap);
        text_free(&l2);
        if (rc < 0)
            return -1;
    }
    json_t *st = json_object_get(req, "stream");
    if (st && !json_is_null(st) && !json_is_boolean(st))
        return snprintf(why, cap, "stream must be a boolean"), -1;
    g->stream = json_is_true(st);
    json_t *so = json_object_get(req, "stream_options");
    g->include_usage = json_is_true(json_object_get(so, "include_usage"));
    return 0;
}

/* ---- streaming ---- */

static void pend_event(gen *g, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        g->pend.oom = true;
        return;
    }
    text_puts(&g->pend, "data: ");
    text_puts(&g->pend, s);
    text_puts(&g->pend, "\n\n");
    free(s);
}

/* One chunk: choices[0] with the delta (chat) or text (completions). */
static json_t *chunk(gen *g, const char *content, size_t n, const char *reasoning, size_t rn,
                     const char *finish)
{
    json_t *choice;
    if (g->chat) {
        json_t *delta = json_object();
        if (!g->role_sent) {
            json_object_set_new(delta, "role", json_string("assistant"));
            g->role_sent = true;
        }
        if (content)
            json_object_set_new(delta, "content", json_stringn(content, n));
        if (reasoning)
            json_object_set_new(delta, "reasoning_content", json_stringn(reasoning, rn));
        choice = json_pack("{s:i, s:o, s:s?}", "index", 0, "delta", delta, "finish_reason", finish);
    } else {
        choice = json_pack("{s:i, s:s%, s:s?}", "index", 0, "text", content ? content : "",
                           content ? n : 0, "finish_reason", finish);
    }
    if (choice && !finish)
        json_object_set_new(choice, "finish_reason", json_null());
    return json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", g->id, "object",
                     g->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)g->created,
                     "model", g->model, "choices", choice);
}

/* Turns what came since the last call into events; at the end, the closing events. */
static void sse_fill(gen *g)
{
    gen_pull(g);
    size_t r_end = g->done ? g->acc_reason.len : utf8_whole(g->acc_reason.buf, g->acc_reason.len);
    size_t o_end = g->done ? g->acc_out.len : utf8_whole(g->acc_out.buf, g->acc_out.len);
    if (r_end > g->sent_reason) {
        pend_event(g, chunk(g, NULL, 0, g->acc_reason.buf + g->sent_reason, r_end - g->sent_reason, NULL));
        g->sent_reason = r_end;
    }
    if (o_end > g->sent_out || (g->chat && !g->role_sent)) {
        pend_event(g, chunk(g, g->acc_out.buf ? g->acc_out.buf + g->sent_out : "", o_end - g->sent_out, NULL, 0,
                            NULL));
        g->sent_out = o_end;
    }
    if (!g->done)
        return;
    llmfs_session_stats st;
    llmfs_session_stats_get(g->s, &st);
    if (strcmp(st.stop_reason, "error") == 0) {
        char msg[256];
        llmfs_session_error(g->s, msg, sizeof msg);
        json_t *err = json_pack("{s:s, s:s, s:n, s:n}", "message", msg[0] ? msg : "generation failed", "type",
                                "server_error", "param", "code");
        pend_event(g, json_pack("{s:o}", "error", err));
    } else {
        pend_event(g, chunk(g, g->chat ? NULL : "", 0, NULL, 0, finish_reason(st.stop_reason)));
    }
    if (g->include_usage)
        pend_event(g, json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", g->id, "object",
                                g->chat ? "chat.completion.chunk" : "text_completion", "created",
                                (json_int_t)g->created, "model", g->model, "choices", "usage", usage_json(g)));
    text_puts(&g->pend, "data: [DONE]\n\n");
    g->finished = true;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    gen *g = cls;
    for (;;) {
        if (g->pend_off < g->pend.len) {
            size_t n = g->pend.len - g->pend_off;
            if (n > max)
                n = max;
            memcpy(buf, g->pend.buf + g->pend_off, n);
            g->pend_off += n;
            return (ssize_t)n;
        }
        g->pend.len = g->pend_off = 0;
        if (g->finished || g->pend.oom)
            return g->pend.oom ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
        if (atomic_load(&http_stopping) || client_gone(g)) {
            gen_stop(g);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        sse_fill(g);
        if (g->pend.len == 0)
            gen_wait(g);
    }
}

static void sse_free(void *cls)
{
    gen_free(cls);
}

/* ---- completions ---- */

static enum MHD_Result reply_whole(struct MHD_Connection *c, gen *g)
{
    while (!g->done) {
        gen_pull(g);
        if (g->done)
            break;
        if (atomic_load(&http_stopping) || client_gone(g)) {
            gen_stop(g);
            return MHD_NO; /* nobody to answer: the connection is closed */
        }
        gen_wait(g);
    }
    if (g->acc_out.oom || g->acc_reason.oom)
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "server_error", "out_of_memory", "out of memory");
    llmfs_session_stats st;
    llmfs_session_stats_get(g->s, &st);
    if (strcmp(st.stop_reason, "error") == 0) {
        char msg[256];
        llmfs_session_error(g->s, msg, sizeof msg);
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "server_error", NULL, "%s",
                          msg[0] ? msg : "generation failed");
    }
    json_t *choice;
    const char *out = g->acc_out.buf ? g->acc_out.buf : "";
    if (g->chat) {
        json_t *message = json_pack("{s:s, s:s%}", "role", "assistant", "content", out, g->acc_out.len);
        if (message && g->acc_reason.len)
            json_object_set_new(message, "reasoning_content", json_stringn(g->acc_reason.buf, g->acc_reason.len));
        choice = json_pack("{s:i, s:o, s:s}", "index", 0, "message", message, "finish_reason",
                           finish_reason(st.stop_reason));
    } else {
        choice = json_pack("{s:i, s:s%, s:s}", "index", 0, "text", out, g->acc_out.len, "finish_reason",
                           finish_reason(st.stop_reason));
    }
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", g->id, "object",
                          g->chat ? "chat.completion" : "text_completion", "created", (json_int_t)g->created,
                          "model", g->model, "choices", choice, "usage", usage_json(g));
    return send_json(c, MHD_HTTP_OK, j);
}

static enum MHD_Result completion(struct MHD_Connection *c, const fs_text *body, bool chat)
{
    json_error_t jerr;
    json_t *req = json_loadb(body->buf ? body->buf : "", body->len, 0, &jerr);
    if (!json_is_object(req)) {
        json_decref(req);
        return send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", NULL,
                          "the body is not a JSON object: %s", req ? "another JSON value" : jerr.text);
    }
    enum MHD_Result ret;
    char why[512];
    convo cv = {0};
    fs_text prompt = {0};
    const char *name = json_string_value(json_object_get(req, "model"));
    if (!name) {
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", NULL, "model must be a string");
        goto out;
    }
    if (chat) {
        if (!json_is_array(json_object_get(req, "messages"))) {
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", NULL, "messages must be a non-empty array");
            goto out;
        }
    } else {
        json_t *p = json_object_get(req, "prompt");
        if (json_is_array(p) && json_array_size(p) == 1)
            p = json_array_get(p, 0);
        if (!json_is_string(p)) {
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", NULL,
                             "prompt must be a string (or an array of one string)");
            goto out;
        }
        text_put(&prompt, json_string_value(p), json_string_length(p));
    }
    gen *g = calloc(1, sizeof *g);
    if (!g) {
        ret = send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "server_error", "out_of_memory", "out of memory");
        goto out;
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->chat = chat;
    g->created = (long long)time(NULL);
    snprintf(g->model, sizeof g->model, "%s", name);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    g->fd = ci ? ci->connect_fd : -1;
    g->m = llmfs_model_get(http_lf, name);
    if (!g->m) {
        gen_free(g);
        ret = send_error(c, MHD_HTTP_NOT_FOUND, "invalid_request_error", "model_not_found",
                         "The model '%s' does not exist", name);
        goto out;
    }
    llmfs_error e = {0};
    g->s = llmfs_session_new(g->m, &e);
    if (!g->s) {
        ret = send_core_error(c, -(e.code ? e.code : ENOMEM), &e);
        gen_free(g);
        goto out;
    }
    int sid = llmfs_session_id(g->s);
    snprintf(g->id, sizeof g->id, "%s-%d-%llu", chat ? "chatcmpl" : "cmpl", sid,
             (unsigned long long)atomic_fetch_add(&http_counter, 1));
    if (session_set(g, chat ? "mode chat" : "mode raw", why, sizeof why) < 0 ||
        apply_params(g, req, why, sizeof why) < 0) {
        gen_free(g);
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", NULL, "%s", why);
        goto out;
    }
    int rc = 0;
    /* the messages once the session can say what its media marker is */
    char marker[128] = "";
    if (chat && (llmfs_session_setting(g->s, "media_marker", marker, sizeof marker) < 0 ||
                 convo_parse(json_object_get(req, "messages"), &cv, marker, why, sizeof why) < 0)) {
        gen_free(g);
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", NULL, "%s",
                         marker[0] ? why : "the session has no media_marker setting");
        goto out;
    }
    if (chat) {
        const char **users = calloc((size_t)cv.n, sizeof *users);
        const char **assistants = calloc((size_t)cv.n, sizeof *assistants);
        text_put(&cv.system, "", 1);
        for (int i = 0; users && assistants && i < cv.n; i++) {
            text_put(&cv.user[i], "", 1);
            text_put(&cv.assistant[i], "", 1);
            users[i] = cv.user[i].buf;
            assistants[i] = cv.assistant[i].buf;
        }
        if (!users || !assistants)
            rc = llmfs_errorf(&e, ENOMEM, "out of memory");
        else
            rc = llmfs_session_set_history(g->s, cv.has_system ? cv.system.buf : NULL, users, assistants,
                                           cv.n - 1, &e);
        free(users);
        free(assistants);
        /* the last message's images, for the prompt that follows (its markers take them) */
        for (int i = 0; rc == 0 && i < cv.n_images; i++)
            rc = llmfs_session_image(g->s, cv.images[i].buf, cv.images[i].len, &e);
    }
    /* the streams this prompt fills: taken before it is written, so no byte is missed */
    g->out = llmfs_session_output(g->s);
    g->reason = chat ? llmfs_session_reasoning(g->s) : NULL;
    g->watch_out = llmfs_stream_watch(g->out, on_stream, g);
    if (g->reason)
        g->watch_reason = llmfs_stream_watch(g->reason, on_stream, g);
    if (rc == 0) {
        const fs_text *p = chat ? &cv.user[cv.n - 1] : &prompt;
        size_t len = chat ? p->len - 1 : p->len; /* chat texts carry their NUL */
        rc = llmfs_session_prompt(g->s, p->buf ? p->buf : "", len, &e);
    }
    if (rc < 0) {
        ret = send_core_error(c, rc, &e);
        gen_free(g);
        goto out;
    }
    /* the stream the prompt fills may be a fresh one: look again */
    rewatch(g, &g->out, &g->watch_out, llmfs_session_output(g->s));
    if (g->reason) /* each reply has its own reasoning too */
        rewatch(g, &g->reason, &g->watch_reason, llmfs_session_reasoning(g->s));
    if (!g->stream) {
        ret = reply_whole(c, g);
        gen_free(g);
        goto out;
    }
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, g, sse_free);
    if (!r) {
        gen_free(g);
        ret = MHD_NO;
        goto out;
    }
    char sid_text[16];
    snprintf(sid_text, sizeof sid_text, "%d", sid);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Llmfs-Session", sid_text);
    ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
out:
    convo_free(&cv);
    text_free(&prompt);
    json_decref(req);
    return ret;
}

/* ---- the other routes ---- */

static enum MHD_Result list_models(struct MHD_Connection *c)
{
    char *names[256];
    int n = llmfs_model_names(http_lf, names, 256);
    json_t *data = json_array();
    for (int i = 0; i < n; i++) {
        json_array_append_new(data, json_pack("{s:s, s:s, s:i, s:s}", "id", names[i], "object", "model",
                                              "created", 0, "owned_by", "llmfs"));
        free(names[i]);
    }
    return send_json(c, MHD_HTTP_OK, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static enum MHD_Result metrics(struct MHD_Connection *c)
{
    fs_text t = {0};
    if (render_metrics(http_lf, &t) < 0 || text_finish(&t) < 0) {
        text_free(&t);
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "server_error", "out_of_memory", "out of memory");
    }
    enum MHD_Result ret = send_text(c, MHD_HTTP_OK, "text/plain; version=0.0.4", t.buf ? t.buf : "", t.len);
    text_free(&t);
    return ret;
}

/* Compares without leaking the key's length or content through the time taken. */
static bool key_matches(const char *got)
{
    size_t kl = strlen(http_key), gl = strlen(got);
    unsigned diff = kl != gl;
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned char)http_key[i] ^ (unsigned char)(i < gl ? got[i] : 0);
    return diff == 0;
}

static bool authorized(struct MHD_Connection *c)
{
    if (!http_key)
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    return h && strncmp(h, "Bearer ", 7) == 0 && key_matches(h + 7);
}

/* The body collected for one request (libmicrohttpd's per-request pointer). */
typedef struct http_req {
    fs_text body;
    bool too_big;
} http_req;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state)
{
    (void)cls;
    (void)version;
    http_req *rq = *state;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *state = rq;
        return MHD_YES;
    }
    if (*upload_size) {
        if (rq->body.len + *upload_size > HTTP_MAX_BODY)
            rq->too_big = true;
        else
            text_put(&rq->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (atomic_load(&http_stopping))
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "server_error", NULL, "the daemon is shutting down");
    if (!authorized(c))
        return send_error(c, MHD_HTTP_UNAUTHORIZED, "invalid_request_error", "invalid_api_key",
                          "a valid API key is required (Authorization: Bearer KEY)");
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    bool is_chat = strcmp(url, "/v1/chat/completions") == 0, is_cmpl = strcmp(url, "/v1/completions") == 0;
    if (is_chat || is_cmpl) {
        if (!post)
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "invalid_request_error", NULL, "%s takes POST", url);
        if (rq->too_big)
            return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request_error", NULL,
                              "the body is larger than %u bytes", HTTP_MAX_BODY);
        if (rq->body.oom)
            return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "server_error", "out_of_memory", "out of memory");
        return completion(c, &rq->body, is_chat);
    }
    bool known = strcmp(url, "/health") == 0 || strcmp(url, "/metrics") == 0 || strcmp(url, "/v1/models") == 0;
    if (known && !get)
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "invalid_request_error", NULL, "%s takes GET", url);
    if (strcmp(url, "/health") == 0)
        return send_text(c, MHD_HTTP_OK, "application/json", "{\"status\":\"ok\"}", 15);
    if (strcmp(url, "/metrics") == 0)
        return metrics(c);
    if (strcmp(url, "/v1/models") == 0)
        return list_models(c);
    return send_error(c, MHD_HTTP_NOT_FOUND, "invalid_request_error", "unknown_url", "no route %s %s", method, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)c;
    (void)why;
    http_req *rq = *state;
    if (rq) {
        text_free(&rq->body);
        free(rq);
        *state = NULL;
    }
}

/* ---- start and stop ---- */

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

static int read_key(const char *path, char *msg, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(msg, cap, "http_api_key_file %s: %s", path, strerror(e));
        return -e;
    }
    char line[1024];
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (got)
        line[strcspn(line, "\r\n")] = 0;
    if (!got || !line[0]) {
        snprintf(msg, cap, "http_api_key_file %s: the first line (the key) is empty", path);
        return -EINVAL;
    }
    http_key = strdup(line);
    if (!http_key) {
        snprintf(msg, cap, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

int http_start(llmfs *lf, char *msg, size_t cap)
{
    char listen[256], keyfile[4096];
    if (llmfs_get(lf, "http_listen", listen, sizeof listen) < 0 || !listen[0])
        return 0;
    if (llmfs_get(lf, "http_api_key_file", keyfile, sizeof keyfile) < 0)
        keyfile[0] = 0;
    /* ADDR:PORT, [V6ADDR]:PORT */
    char host[256], *port = strrchr(listen, ':');
    if (!port || port == listen || !port[1]) {
        snprintf(msg, cap, "http_listen %s: want ADDR:PORT (127.0.0.1:8080)", listen);
        return -EINVAL;
    }
    snprintf(host, sizeof host, "%.*s", (int)(port - listen), listen);
    port++;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(msg, cap, "http_listen %s: %s", listen, gai_strerror(gai));
        return -EINVAL;
    }
    int rc = 0;
    if (!is_loopback(ai->ai_addr) && !keyfile[0]) {
        snprintf(msg, cap, "http_listen %s is not a loopback address: set http_api_key_file (a bearer token) "
                           "to serve it", listen);
        rc = -EACCES;
    } else if (keyfile[0]) {
        rc = read_key(keyfile, msg, cap);
    }
    if (rc == 0) {
        http_lf = lf;
        atomic_store(&http_stopping, false);
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
        if (ai->ai_family == AF_INET6)
            flags |= MHD_USE_IPv6;
        http_daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                       MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
        if (!http_daemon) {
            snprintf(msg, cap, "http_listen %s: cannot listen there (in use, or not an address of this machine)",
                     listen);
            rc = -EADDRINUSE;
            free(http_key);
            http_key = NULL;
        }
    }
    freeaddrinfo(ai);
    return rc;
}

void http_stop(void)
{
    if (!http_daemon)
        return;
    atomic_store(&http_stopping, true);
    MHD_stop_daemon(http_daemon);
    http_daemon = NULL;
    free(http_key);
    http_key = NULL;
}
