/* fuzz_runtime.c — libFuzzer target for the whole engine through llmfs.h.
 *
 * The input is a program: each operation is one byte (which operation) and the bytes
 * it needs. Operations: load or unload one of two model names (a tiny fixture model,
 * with settings), ctl lines on the root, a model and a session (every setting of the
 * table with a valid or an invalid value, and the commands), clones, prompts of random
 * length (up to past the context, some not UTF-8), waiting for and reading replies and
 * transcripts, and reading every text the file server would render. References to
 * models and sessions are kept across unloads and closes and used on, as an open file
 * of the file server would be.
 *
 * After each operation: the call returned 0 or an errno the man page lists, with a
 * one-line reason; a reply that ended has a known stop reason; output and transcript
 * are well-formed UTF-8; stats are consistent. A session told to stop becomes idle. At
 * the end everything is unloaded and freed, so LeakSanitizer sees every leak.
 *
 * Also built without libFuzzer (replay_main.c) to replay the seed corpus in the normal
 * test suite.
 */
#include "llmfs.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(c)                                                                      \
    do {                                                                              \
        if (!(c)) {                                                                   \
            fprintf(stderr, "fuzz_runtime: check failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

/* Huge but valid settings (ctx 16777216 with parallel 256) ask for terabytes: the
 * allocator must answer NULL, which the engine turns into ENOMEM. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

static const char *const model_files[] = {
    "stories260K.gguf", "llama-tiny-q8_0.gguf", "qwen2-tiny-q8_0.gguf", "qwen3-tiny-q4_k.gguf",
    "qwen3moe-tiny-q8_0.gguf",
};
#define N_FILES (int)(sizeof model_files / sizeof model_files[0])
static char model_paths[N_FILES][4096];
static bool have_models;

static const char *const words[] = {"Once", "upon", "a", "time", "there", "was", "little", "girl",
                                    "named", "Lily", ".", ",", "the", "park", "\xc3\xa9t\xc3\xa9",
                                    "\xe4\xbd\xa0\xe5\xa5\xbd", "\xf0\x9f\x98\x80", "\n", "  ", "<|im_end|>"};
#define N_WORDS (int)(sizeof words / sizeof words[0])

/* ---- the input ---- */

typedef struct input {
    const uint8_t *p;
    size_t n, i;
} input;

static unsigned next(input *in)
{
    return in->i < in->n ? in->p[in->i++] : 0;
}

static bool more(const input *in)
{
    return in->i < in->n;
}

/* ---- checks ---- */

static bool utf8_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!k || i + k > n)
            return false;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] >> 6) != 2)
                return false;
        i += k;
    }
    return true;
}

/* Every errno the man page's DIAGNOSTICS table gives a ctl write, a prompt or a load
 * (ENODEV: the model behind a kept reference was unloaded). */
static void check_rc(int rc, const llmfs_error *e)
{
    if (rc == 0)
        return;
    static const int known[] = {ENOENT, EINVAL, EACCES, EPERM,  EEXIST, EBUSY, E2BIG,
                                EFBIG,  EMFILE, ENOMEM, EAGAIN, ENODEV, EIO};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        ok |= rc == -known[i];
    if (!ok || e->code != -rc || !e->msg[0] || strchr(e->msg, '\n')) {
        fprintf(stderr, "fuzz_runtime: rc %d, code %d, message '%s'\n", rc, e->code, e->msg);
        abort();
    }
}

static bool known_reason(const char *r)
{
    static const char *const reasons[] = {"", "eos", "length", "stopped", "context", "error"};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (strcmp(r, reasons[i]) == 0)
            return true;
    return false;
}

static bool known_state(const char *s)
{
    return strcmp(s, "idle") == 0 || strcmp(s, "queued") == 0 || strcmp(s, "prefill") == 0 ||
           strcmp(s, "generating") == 0;
}

static void check_session_stats(llmfs_session *s)
{
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    CHECK(known_state(ss.state));
    CHECK(known_reason(ss.stop_reason));
    CHECK(ss.n_prompt >= 0 && ss.n_cached >= 0 && ss.n_gen >= 0 && ss.turns >= 0);
    CHECK(ss.kv_used >= 0 && ss.kv_used <= ss.kv_size);
}

/* ---- the world ---- */

#define N_SLOTS 2
#define N_SESS 8
static llmfs *lf;
static llmfs_model *models[N_SLOTS];     /* kept references (the model may be unloaded) */
static llmfs_session *sessions[N_SESS];  /* kept references (may be closed) */
static const char *const names[N_SLOTS] = {"a", "b"};

static void keep_session(llmfs_session *s, unsigned where)
{
    int k = (int)(where % N_SESS);
    if (sessions[k])
        llmfs_session_put(sessions[k]);
    sessions[k] = s;
}

/* A value for setting `in`: valid (its default, ends of range, a small value, each
 * choice) or not (out of range, garbage, empty). */
static void gen_value(input *in, const llmfs_setting_info *si, char *buf, size_t cap)
{
    unsigned kind = next(in) % 9;
    long long lo = 0, hi = 0;
    bool ranged = sscanf(si->range, "%lld..%lld", &lo, &hi) == 2;
    switch (kind) {
    case 0:
        snprintf(buf, cap, "%s", si->def);
        return;
    case 1:
        if (ranged) {
            snprintf(buf, cap, "%lld", lo);
            return;
        }
        break;
    case 2:
        if (ranged) {
            snprintf(buf, cap, "%lld", hi);
            return;
        }
        break;
    case 3:
        if (ranged) {
            long long span = hi - lo < 2048 ? hi - lo : 2048;
            snprintf(buf, cap, "%lld", lo + (long long)(next(in) * 256 + next(in)) % (span + 1));
            return;
        }
        break;
    case 4:
        if (ranged) {
            snprintf(buf, cap, "%lld", next(in) & 1 ? hi + 1 : lo - 1);
            return;
        }
        break;
    case 5: { /* raw bytes, NUL and newline excluded (a ctl line ends there) */
        size_t n = next(in) % 12, o = 0;
        for (size_t i = 0; i < n && o + 1 < cap; i++) {
            char c = (char)next(in);
            if (c && c != '\n')
                buf[o++] = c;
        }
        buf[o] = 0;
        return;
    }
    case 6:
        buf[0] = 0;
        return;
    default:
        break;
    }
    /* one of the '|' choices (bools: on/off), or a float */
    if (strchr(si->range, '|')) {
        int want = (int)(next(in) % 8), i = 0;
        const char *p = si->range;
        while (i < want && strchr(p, '|')) {
            p = strchr(p, '|') + 1;
            i++;
        }
        size_t n = strcspn(p, "|");
        snprintf(buf, cap, "%.*s", (int)n, p);
    } else if (strcmp(si->type, "float") == 0) {
        snprintf(buf, cap, "%g", (double)(next(in) % 200) / 100.0);
    } else if (strcmp(si->name, "system") == 0) {
        snprintf(buf, cap, "Be brief.\\nVery brief.");
    } else {
        snprintf(buf, cap, "%s", si->def);
    }
}

/* A ctl line: a setting of the table with a value, a command, or an unknown word. */
static void gen_line(input *in, char *buf, size_t cap)
{
    const llmfs_setting_info *t;
    int n = llmfs_settings_table(&t);
    unsigned pick = next(in);
    if (pick >= 250) {
        static const char *const cmds[] = {"stop", "reset", "close", "stop now", "frobnicate 3", "#"};
        snprintf(buf, cap, "%s", cmds[pick - 250]);
        return;
    }
    const llmfs_setting_info *si = &t[pick % (unsigned)n];
    char value[256];
    gen_value(in, si, value, sizeof value);
    snprintf(buf, cap, next(in) & 1 ? "%s=%s" : "%s %s", si->name, value);
}

/* A prompt of about `words` words (some lengths past any context), or raw bytes. */
static char *gen_prompt(input *in, size_t *len)
{
    unsigned kind = next(in);
    size_t n_words = kind & 0x80 ? (size_t)next(in) * 8 : (size_t)(kind % 24);
    if ((kind & 0x60) == 0x60) { /* raw bytes: NUL, bad UTF-8 */
        size_t n = next(in) % 32;
        char *p = malloc(n + 1);
        CHECK(p);
        for (size_t i = 0; i < n; i++)
            p[i] = (char)next(in);
        p[n] = 0;
        *len = n;
        return p;
    }
    size_t cap = n_words * 16 + 16, o = 0;
    char *p = malloc(cap);
    CHECK(p);
    for (size_t i = 0; i < n_words; i++) {
        const char *w = words[(next(in) + i) % N_WORDS];
        o += (size_t)snprintf(p + o, cap - o, "%s%s", i ? " " : "", w);
    }
    p[o] = 0;
    *len = o;
    return p;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to ms for s to be idle. */
static bool wait_idle(llmfs_session *s, int ms)
{
    for (int waited = 0;; waited += 2) {
        llmfs_session_stats ss;
        llmfs_session_stats_get(s, &ss);
        if (strcmp(ss.state, "idle") == 0)
            return true;
        if (waited >= ms)
            return false;
        sleep_ms(2);
    }
}

/* Reads what a stream holds now (up to 1 MiB) and checks it is well-formed UTF-8 where
 * it is complete (done), or up to its last whole character. */
static void check_stream(llmfs_stream *st)
{
    if (!st)
        return;
    bool done;
    uint64_t size = llmfs_stream_size(st, &done);
    size_t n = size < (1u << 20) ? (size_t)size : (1u << 20);
    char *buf = malloc(n + 1);
    CHECK(buf);
    size_t got = llmfs_stream_read(st, buf, n, 0);
    CHECK(got == n);
    if (done && size == n) {
        if (!utf8_ok(buf, n)) {
            fprintf(stderr, "fuzz_runtime: a finished stream is not UTF-8 (%zu bytes)\n", n);
            abort();
        }
    }
    free(buf);
}

/* Ends the reply, if any: a session told to stop must become idle, with a known reason;
 * its output then ends. */
static void settle(llmfs_session *s, int ms)
{
    if (wait_idle(s, ms))
        goto idle;
    llmfs_error e = {0};
    int rc = llmfs_session_ctl(s, "stop", &e);
    check_rc(rc, &e);
    /* stop takes effect between steps: one step of a long prompt at a large ubatch may
     * take many seconds under the sanitizers on a busy machine */
    if (!wait_idle(s, 120000)) {
        fprintf(stderr, "fuzz_runtime: a stopped session stays busy\n");
        abort();
    }
idle:
    check_session_stats(s);
    llmfs_stream *st = llmfs_session_output(s);
    if (st) {
        bool done;
        llmfs_stream_size(st, &done);
        check_stream(st);
        llmfs_stream_put(st);
    }
}

static void render_all(void)
{
    static char buf[1 << 16];
    llmfs_daemon_stats ds;
    llmfs_daemon_stats_get(lf, &ds);
    CHECK(ds.n_models >= 0 && ds.n_sessions >= 0);
    CHECK(llmfs_settings_text(lf, 7, buf, sizeof buf) >= 0);
    char *nm[8];
    int n = llmfs_model_names(lf, nm, 8);
    CHECK(n >= 0 && n <= N_SLOTS);
    for (int i = 0; i < n; i++)
        free(nm[i]);
    for (int k = 0; k < N_SLOTS; k++) {
        llmfs_model *m = models[k];
        if (!m)
            continue;
        llmfs_model_info info;
        llmfs_model_info_get(m, &info);
        llmfs_model_stats ms;
        llmfs_model_stats_get(m, &ms);
        llmfs_kv_info kv;
        llmfs_model_kv_info(m, &kv);
        llmfs_stream_info si;
        llmfs_model_stream_info(m, &si);
        llmfs_placement_row rows[64];
        CHECK(llmfs_model_placement(m, rows, 64) >= 0);
        CHECK(llmfs_model_settings_text(m, buf, sizeof buf) >= 0);
        llmfs_model_fit_text(m, buf, sizeof buf);
        llmfs_model_error(m, buf, sizeof buf);
        CHECK(!strchr(buf, '\n'));
        int ids[64];
        CHECK(llmfs_session_ids(m, ids, 64) >= 0);
    }
    for (int k = 0; k < N_SESS; k++) {
        if (!sessions[k])
            continue;
        check_session_stats(sessions[k]);
        CHECK(llmfs_session_settings_text(sessions[k], buf, sizeof buf) >= 0);
        llmfs_session_error(sessions[k], buf, sizeof buf);
        CHECK(!strchr(buf, '\n'));
        free(llmfs_session_last_prompt(sessions[k]));
        llmfs_stream *tr = llmfs_session_transcript(sessions[k]);
        check_stream(tr);
        llmfs_stream_put(tr);
    }
}

static void op(input *in)
{
    unsigned code = next(in) % 11;
    llmfs_error e = {0};
    int rc = 0;
    char line[512];
    switch (code) {
    case 0: { /* load */
        unsigned k = next(in) % N_SLOTS, f = next(in) % N_FILES, n = next(in) % 4;
        char extra[4][300];
        /* short replies by default, so that an input runs in a fraction of a second (a
         * ctl line may still ask for long ones) */
        const char *set[7] = {"threads=1", "ctx=256", "n_predict=12"};
        for (unsigned i = 0; i < n; i++) {
            gen_line(in, extra[i], sizeof extra[i]);
            set[3 + i] = extra[i];
        }
        if (next(in) & 1) {
            rc = llmfs_model_load(lf, names[k], model_paths[f], set, 3 + (int)n, &e);
        } else {
            /* through the root ctl: the words are split there */
            int o = snprintf(line, sizeof line, "load %s %s", names[k], model_paths[f]);
            for (unsigned i = 0; i < 3 + n && o < (int)sizeof line; i++)
                o += snprintf(line + o, sizeof line - (size_t)o, " %s", set[i]);
            rc = llmfs_ctl(lf, line, &e);
        }
        check_rc(rc, &e);
        if (rc == 0) {
            llmfs_model *m = llmfs_model_get(lf, names[k]);
            CHECK(m);
            if (models[k])
                llmfs_model_put(models[k]);
            models[k] = m;
            keep_session(llmfs_session_default(m), next(in));
        }
        break;
    }
    case 1: { /* unload */
        unsigned k = next(in) % N_SLOTS;
        snprintf(line, sizeof line, "unload %s", names[k]);
        rc = next(in) & 1 ? llmfs_model_unload(lf, names[k], &e) : llmfs_ctl(lf, line, &e);
        check_rc(rc, &e);
        break;
    }
    case 2: { /* model ctl */
        llmfs_model *m = models[next(in) % N_SLOTS];
        gen_line(in, line, sizeof line);
        if (m) {
            rc = llmfs_model_ctl(m, line, &e);
            check_rc(rc, &e);
        }
        break;
    }
    case 3: { /* session ctl */
        llmfs_session *s = sessions[next(in) % N_SESS];
        gen_line(in, line, sizeof line);
        if (s) {
            rc = llmfs_session_ctl(s, line, &e);
            check_rc(rc, &e);
        }
        break;
    }
    case 4: { /* clone */
        llmfs_model *m = models[next(in) % N_SLOTS];
        unsigned where = next(in);
        if (m) {
            llmfs_session *s = llmfs_session_new(m, &e);
            if (s)
                keep_session(s, where);
            else
                check_rc(-e.code, &e);
        }
        break;
    }
    case 5:
    case 6: { /* prompt */
        llmfs_session *s = sessions[next(in) % N_SESS];
        size_t len;
        char *p = gen_prompt(in, &len);
        if (s) {
            rc = llmfs_session_prompt(s, p, len, &e);
            check_rc(rc, &e);
        }
        free(p);
        break;
    }
    case 7: { /* wait for a reply (stopping it after a while) */
        llmfs_session *s = sessions[next(in) % N_SESS];
        if (s)
            settle(s, (int)(next(in) % 8) * 25);
        break;
    }
    case 8: /* root ctl */
        gen_line(in, line, sizeof line);
        rc = llmfs_ctl(lf, line, &e);
        check_rc(rc, &e);
        break;
    case 9:
        render_all();
        break;
    case 10: /* the reference of a session by id, as the file server finds it */
    {
        llmfs_model *m = models[next(in) % N_SLOTS];
        int id = (int)(next(in) % 6);
        unsigned where = next(in);
        if (m) {
            llmfs_session *s = llmfs_session_get(m, id);
            if (s)
                keep_session(s, where);
        }
        break;
    }
    }
}

static void find_models(void)
{
    const char *dir = getenv("LLMFS_SHARED");
#ifdef LLMFS_SOURCE_DIR
    if (!dir)
        dir = LLMFS_SOURCE_DIR "/../shared";
#endif
    if (!dir)
        dir = "../shared";
    have_models = true;
    for (int i = 0; i < N_FILES; i++) {
        snprintf(model_paths[i], sizeof model_paths[i], "%s/models/%s", dir, model_files[i]);
        FILE *f = fopen(model_paths[i], "rb");
        if (f)
            fclose(f);
        else
            have_models = false;
    }
    if (!have_models)
        fprintf(stderr, "fuzz_runtime: the fixture models are not in %s/models: nothing to run\n", dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    find_models();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!have_models)
        return 0;
    input in = {data, size, 0};
    llmfs_error e = {0};
    lf = llmfs_new(&e);
    CHECK(lf);
    for (int ops = 0; ops < 40 && more(&in); ops++)
        op(&in);
    /* every running reply ends; a session told to stop becomes idle */
    for (int k = 0; k < N_SESS; k++)
        if (sessions[k])
            settle(sessions[k], 0);
    render_all();
    for (int k = 0; k < N_SLOTS; k++) {
        int rc = llmfs_model_unload(lf, names[k], &e);
        CHECK(rc == 0 || rc == -ENOENT);
    }
    for (int k = 0; k < N_SESS; k++) {
        if (sessions[k]) {
            /* after the unload: closed, its output ended */
            llmfs_stream *st = llmfs_session_output(sessions[k]);
            if (st) {
                bool done;
                llmfs_stream_size(st, &done);
                CHECK(done);
                llmfs_stream_put(st);
            }
            llmfs_session_put(sessions[k]);
            sessions[k] = NULL;
        }
    }
    for (int k = 0; k < N_SLOTS; k++) {
        if (models[k])
            llmfs_model_put(models[k]);
        models[k] = NULL;
    }
    llmfs_free(lf);
    lf = NULL;
    return 0;
}
