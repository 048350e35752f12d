/* soak.c — many sessions of two models generating at once, for minutes.
 *
 * Each round clones SESSIONS sessions (half on each model), gives each a prompt from a
 * small set, most of them with greedy settings (temp 0 and random top_k/top_p/min_p/
 * seed, which cannot change a greedy choice) and some with random sampling; stops some
 * and closes some while they generate; reader threads meanwhile come and go on outputs,
 * transcripts, stats and metrics. Then every session is closed.
 *
 * Checked: every greedy reply equals (or, when stopped or closed early, is a prefix of)
 * what that prompt gives a session of that model alone; every reply ends with a known
 * stop reason; outputs are well-formed UTF-8; the resident memory after the last round
 * is within 5% of what it was after the first.
 *
 * Usage: soak SECONDS [SESSIONS]   (scripts/soak.sh MINUTES runs it for minutes)
 * Prints one line per round and a summary; exits 1 on any failure, 77 without the
 * test models.
 */
#include "llmfs.h"
#ifdef LLMFS_HAVE_FS
#include "render.h"
#endif

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N_MODELS 2
#define N_PROMPTS 6
#define MAX_SESSIONS 256
#define N_PREDICT 24
#define REPLY_MAX 8192

static const char *const files[N_MODELS] = {"stories260K.gguf", "llama-tiny-q8_0.gguf"};
static const char *const names[N_MODELS] = {"s", "l"};
static const char *const prompts[N_PROMPTS] = {
    "Once upon a time", "The little dog", "Lily wanted to", "One day, a big", "Tom and Sue went",
    "There was a cat"};

static llmfs *lf;
static llmfs_model *models[N_MODELS];
static char reference[N_MODELS][N_PROMPTS][REPLY_MAX];
static atomic_int failures;
static atomic_long n_replies, n_checked, n_stopped, n_closed, n_reads;
static atomic_bool readers_run;

#define FAIL(...)                                        \
    do {                                                 \
        fprintf(stderr, "soak: FAIL: " __VA_ARGS__);     \
        fputc('\n', stderr);                             \
        atomic_fetch_add(&failures, 1);                  \
    } while (0)

static uint64_t rng_state;
static pthread_mutex_t rng_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t rnd(void)
{
    pthread_mutex_lock(&rng_mu);
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    pthread_mutex_unlock(&rng_mu);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

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

/* A whole stream into buf (at most cap - 1 bytes); -1 when it does not end in 120 s. */
static int read_stream(llmfs_stream *st, char *buf, size_t cap, size_t *len)
{
    size_t off = 0;
    double t0 = now_s();
    for (;;) {
        if (now_s() - t0 > 120)
            return -1;
        if (!llmfs_stream_wait(st, off, 100))
            continue;
        size_t n = llmfs_stream_read(st, buf + off, cap - 1 - off, off);
        if (n == 0) {
            bool done;
            uint64_t size = llmfs_stream_size(st, &done);
            if (done && size == off)
                break;
            if (off + 1 >= cap)
                return -1;
            continue;
        }
        off += n;
    }
    buf[off] = 0;
    *len = off;
    return 0;
}

static void ctl(llmfs_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctl(llmfs_session *s, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    llmfs_error e = {0};
    if (llmfs_session_ctl(s, line, &e) != 0)
        FAIL("ctl '%s': %s", line, e.msg);
}

/* ---- one session of a round ---- */

enum fate { RUN_OUT, STOP_EARLY, CLOSE_EARLY };

typedef struct job {
    int model, prompt, n_predict;
    bool greedy;
    enum fate fate;
    int delay_ms;
    llmfs_session *s;
    llmfs_stream *out;
} job;

static void check_reply(const job *j, const char *text, size_t len)
{
    atomic_fetch_add(&n_replies, 1);
    if (!utf8_ok(text, len))
        FAIL("%s prompt %d: reply is not UTF-8", names[j->model], j->prompt);
    if (!j->greedy)
        return;
    const char *want = reference[j->model][j->prompt];
    bool whole = j->fate == RUN_OUT && j->n_predict == N_PREDICT;
    /* a reply cut short ends with U+FFFD for each character it held half of, where the
     * longer reply went on with the rest of those bytes */
    size_t cut = len;
    while (!whole && cut >= 3 && memcmp(text + cut - 3, "\xef\xbf\xbd", 3) == 0)
        cut -= 3;
    if (whole ? strcmp(text, want) != 0 : strncmp(text, want, cut) != 0)
        FAIL("%s prompt %d (%s, n_predict %d): reply '%s' is not %s '%s'", names[j->model], j->prompt,
             j->fate == RUN_OUT ? "ran out" : j->fate == STOP_EARLY ? "stopped" : "closed", j->n_predict,
             text, whole ? "" : "a prefix of", want);
    else
        atomic_fetch_add(&n_checked, 1);
}

static void *job_main(void *arg)
{
    job *j = arg;
    static _Thread_local char text[REPLY_MAX];
    size_t len;
    if (j->fate != RUN_OUT) {
        sleep_ms(j->delay_ms);
        llmfs_error e = {0};
        if (llmfs_session_ctl(j->s, j->fate == STOP_EARLY ? "stop" : "close", &e) != 0)
            FAIL("%s: %s", j->fate == STOP_EARLY ? "stop" : "close", e.msg);
        atomic_fetch_add(j->fate == STOP_EARLY ? &n_stopped : &n_closed, 1);
    }
    if (read_stream(j->out, text, sizeof text, &len) < 0) {
        FAIL("%s prompt %d: the output did not end", names[j->model], j->prompt);
        return NULL;
    }
    check_reply(j, text, len);
    llmfs_session_stats ss;
    for (int i = 0; i < 12000; i++) { /* idle soon after the output ends */
        llmfs_session_stats_get(j->s, &ss);
        if (strcmp(ss.state, "idle") == 0)
            break;
        sleep_ms(10);
    }
    if (strcmp(ss.state, "idle") != 0)
        FAIL("a session stays %s after its output ended", ss.state);
    static const char *const reasons[] = {"eos", "length", "stopped", "context"};
    bool known = false;
    for (int i = 0; i < 4; i++)
        known |= strcmp(ss.stop_reason, reasons[i]) == 0;
    if (!known && j->fate != CLOSE_EARLY)
        FAIL("stop reason '%s'", ss.stop_reason);
    if (j->fate == RUN_OUT && j->greedy && strcmp(ss.stop_reason, "stopped") == 0)
        FAIL("a reply nobody stopped ended 'stopped'");
    return NULL;
}

/* ---- readers that come and go ---- */

static job *round_jobs;
static int round_n;
static pthread_mutex_t round_mu = PTHREAD_MUTEX_INITIALIZER;

static void *reader_main(void *arg)
{
    (void)arg;
    static _Thread_local char buf[1 << 16];
    while (atomic_load(&readers_run)) {
        pthread_mutex_lock(&round_mu);
        llmfs_session *ref = NULL;
        if (round_n > 0) {
            /* a reference of its own, found by id as the file server finds it (NULL once
             * the session is closed) */
            const job *j = &round_jobs[rnd() % (uint64_t)round_n];
            if (j->s)
                ref = llmfs_session_get(models[j->model], llmfs_session_id(j->s));
        }
        pthread_mutex_unlock(&round_mu);
        unsigned what = (unsigned)(rnd() % 4);
        if (ref && what == 0) {
            llmfs_stream *st = llmfs_session_output(ref);
            size_t off = 0;
            for (int i = 0; i < (int)(rnd() % 20) && off + 1 < sizeof buf; i++) {
                llmfs_stream_wait(st, off, 20);
                off += llmfs_stream_read(st, buf + off, sizeof buf - 1 - off, off);
            }
            llmfs_stream_put(st);
        } else if (ref && what == 1) {
            llmfs_stream *st = llmfs_session_transcript(ref);
            bool done;
            uint64_t size = llmfs_stream_size(st, &done);
            size_t n = size < sizeof buf ? (size_t)size : sizeof buf;
            if (llmfs_stream_read(st, buf, n, 0) != n)
                FAIL("a transcript read came back short");
            llmfs_stream_put(st);
        } else if (ref && what == 2) {
#ifdef LLMFS_HAVE_FS
            fs_text t = {0};
            if (render_session_stats(ref, &t) != 0 || !t.len || t.buf[t.len - 1] != '\n')
                FAIL("session stats do not render");
            text_free(&t);
#else
            llmfs_session_stats ss;
            llmfs_session_stats_get(ref, &ss);
#endif
        } else {
#ifdef LLMFS_HAVE_FS
            fs_text t = {0};
            if (render_metrics(lf, &t) != 0 || !t.len)
                FAIL("metrics do not render");
            text_free(&t);
#else
            llmfs_daemon_stats ds;
            llmfs_daemon_stats_get(lf, &ds);
#endif
        }
        if (ref)
            llmfs_session_put(ref);
        atomic_fetch_add(&n_reads, 1);
        sleep_ms((int)(rnd() % 5));
    }
    return NULL;
}

/* ---- setup ---- */

static int load_models(const char *shared)
{
    for (int k = 0; k < N_MODELS; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/models/%s", shared, files[k]);
        if (access(path, R_OK) != 0) {
            fprintf(stderr, "soak: %s is missing: skipped\n", path);
            return 77;
        }
        /* fewer slots than sessions: sessions wait for one, and evict idle ones' caches */
        const char *set[] = {"threads=2", "mode=raw", "ctx=128", "parallel=12", "batch=256"};
        llmfs_error e = {0};
        if (llmfs_model_load(lf, names[k], path, set, 5, &e) != 0) {
            fprintf(stderr, "soak: loading %s: %s\n", files[k], e.msg);
            return 1;
        }
        models[k] = llmfs_model_get(lf, names[k]);
    }
    return 0;
}

/* What each prompt gives a session of each model alone. */
static void make_references(void)
{
    for (int k = 0; k < N_MODELS; k++) {
        llmfs_session *s = llmfs_session_new(models[k], NULL);
        ctl(s, "temp 0");
        ctl(s, "repeat_penalty 1");
        ctl(s, "n_predict %d", N_PREDICT);
        for (int p = 0; p < N_PROMPTS; p++) {
            ctl(s, "reset");
            llmfs_error e = {0};
            if (llmfs_session_prompt(s, prompts[p], strlen(prompts[p]), &e) != 0)
                FAIL("reference prompt: %s", e.msg);
            llmfs_stream *st = llmfs_session_output(s);
            size_t len;
            if (read_stream(st, reference[k][p], REPLY_MAX, &len) < 0)
                FAIL("reference reply did not end");
            llmfs_stream_put(st);
            for (int i = 0; i < 1000; i++) {
                llmfs_session_stats ss;
                llmfs_session_stats_get(s, &ss);
                if (strcmp(ss.state, "idle") == 0)
                    break;
                sleep_ms(5);
            }
        }
        ctl(s, "close");
        llmfs_session_put(s);
    }
}

/* ---- a round ---- */

static void run_round(int n_sessions)
{
    job *jobs = calloc((size_t)n_sessions, sizeof *jobs);
    pthread_t *th = calloc((size_t)n_sessions, sizeof *th);
    if (!jobs || !th) {
        FAIL("out of memory");
        free(jobs);
        free(th);
        return;
    }
    for (int i = 0; i < n_sessions; i++) {
        job *j = &jobs[i];
        j->model = i % N_MODELS;
        j->prompt = (int)(rnd() % N_PROMPTS);
        j->greedy = rnd() % 4 != 0;
        unsigned f = (unsigned)(rnd() % 10);
        j->fate = f < 7 ? RUN_OUT : f < 9 ? STOP_EARLY : CLOSE_EARLY;
        j->delay_ms = (int)(rnd() % 300);
        j->n_predict = rnd() % 2 ? N_PREDICT : 1 + (int)(rnd() % N_PREDICT);
        llmfs_error e = {0};
        j->s = llmfs_session_new(models[j->model], &e);
        if (!j->s) {
            FAIL("clone: %s", e.msg);
            continue;
        }
        ctl(j->s, "n_predict %d", j->n_predict);
        ctl(j->s, "seed %d", (int)(rnd() % 100000));
        if (j->greedy) {
            ctl(j->s, "temp 0");
            ctl(j->s, "repeat_penalty 1");
            ctl(j->s, "top_k %d", (int)(rnd() % 50));
            ctl(j->s, "top_p %.2f", 0.5 + (double)(rnd() % 50) / 100);
            ctl(j->s, "min_p %.2f", (double)(rnd() % 20) / 100);
        } else {
            ctl(j->s, "temp %.2f", 0.3 + (double)(rnd() % 120) / 100);
            ctl(j->s, "repeat_penalty %.2f", 1 + (double)(rnd() % 30) / 100);
        }
    }
    pthread_mutex_lock(&round_mu);
    round_jobs = jobs;
    round_n = n_sessions;
    pthread_mutex_unlock(&round_mu);
    /* every prompt goes in at once, then each reply is followed by a thread of its own */
    for (int i = 0; i < n_sessions; i++) {
        job *j = &jobs[i];
        if (!j->s)
            continue;
        llmfs_error e = {0};
        if (llmfs_session_prompt(j->s, prompts[j->prompt], strlen(prompts[j->prompt]), &e) != 0) {
            FAIL("prompt: %s", e.msg);
            continue;
        }
        j->out = llmfs_session_output(j->s);
    }
    for (int i = 0; i < n_sessions; i++)
        if (jobs[i].out && pthread_create(&th[i], NULL, job_main, &jobs[i]) != 0)
            FAIL("thread");
    for (int i = 0; i < n_sessions; i++)
        if (jobs[i].out)
            pthread_join(th[i], NULL);
    pthread_mutex_lock(&round_mu);
    round_n = 0;
    round_jobs = NULL;
    pthread_mutex_unlock(&round_mu);
    for (int i = 0; i < n_sessions; i++) {
        if (!jobs[i].s)
            continue;
        llmfs_error e = {0};
        if (llmfs_session_ctl(jobs[i].s, "close", &e) != 0)
            FAIL("close: %s", e.msg);
        if (jobs[i].out)
            llmfs_stream_put(jobs[i].out);
        llmfs_session_put(jobs[i].s);
    }
    int ids[MAX_SESSIONS + 1];
    for (int k = 0; k < N_MODELS; k++)
        if (llmfs_session_ids(models[k], ids, MAX_SESSIONS + 1) != 0)
            FAIL("clones left after a round");
    free(jobs);
    free(th);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 120;
    int n_sessions = argc > 2 ? atoi(argv[2]) : 64;
    if (n_sessions < 2 || n_sessions > MAX_SESSIONS) {
        fprintf(stderr, "usage: soak SECONDS [SESSIONS (2..%d)]\n", MAX_SESSIONS);
        return 2;
    }
    const char *shared = getenv("LLMFS_SHARED");
    if (!shared)
        shared = LLMFS_SOURCE_DIR "/../shared";
    rng_state = getenv("SOAK_SEED") ? strtoull(getenv("SOAK_SEED"), NULL, 10) : (uint64_t)time(NULL);
    printf("soak: %.0f s, %d sessions of %s and %s, seed %llu\n", seconds, n_sessions, files[0], files[1],
           (unsigned long long)rng_state);
    llmfs_error e = {0};
    lf = llmfs_new(&e);
    char v[16];
    snprintf(v, sizeof v, "%d", n_sessions);
    llmfs_set(lf, "max_sessions", v, &e);
    int rc = load_models(shared);
    if (rc)
        return rc;
    make_references();
    atomic_store(&readers_run, true);
    pthread_t readers[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&readers[i], NULL, reader_main, NULL);
    double t0 = now_s();
    long rss_first = 0, rss_max = 0, rss = 0;
    int rounds = 0;
    while (rounds == 0 || now_s() - t0 < seconds) {
        run_round(n_sessions);
        rounds++;
        rss = rss_kb();
        if (rounds == 1)
            rss_first = rss;
        rss_max = rss > rss_max ? rss : rss_max;
        printf("round %d: %.0f s, rss %ld KiB, replies %ld (%ld greedy checked), stopped %ld, closed %ld, "
               "reads %ld, failures %d\n",
               rounds, now_s() - t0, rss, atomic_load(&n_replies), atomic_load(&n_checked),
               atomic_load(&n_stopped), atomic_load(&n_closed), atomic_load(&n_reads), atomic_load(&failures));
        fflush(stdout);
    }
    atomic_store(&readers_run, false);
    for (int i = 0; i < 4; i++)
        pthread_join(readers[i], NULL);
    double growth = rss_first ? 100.0 * (double)(rss - rss_first) / (double)rss_first : 0;
    printf("soak: %d rounds in %.0f s; %ld replies, %ld greedy replies equal to the reference, %ld stopped, "
           "%ld closed early, %ld reads; rss after round 1 %ld KiB, at the end %ld KiB (%+.1f%%), max %ld KiB; "
           "%d failures\n",
           rounds, now_s() - t0, atomic_load(&n_replies), atomic_load(&n_checked), atomic_load(&n_stopped),
           atomic_load(&n_closed), atomic_load(&n_reads), rss_first, rss, growth, rss_max,
           atomic_load(&failures));
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* the sanitizers' allocators keep freed memory (quarantine, history): RSS says
     * nothing about leaks there, LeakSanitizer does */
    bool check_rss = false;
#else
    bool check_rss = true;
#endif
    if (check_rss && rounds > 1 && growth > 5.0)
        FAIL("resident memory grew %.1f%% between the first round and the last", growth);
    for (int k = 0; k < N_MODELS; k++)
        llmfs_model_put(models[k]);
    llmfs_free(lf);
    return atomic_load(&failures) ? 1 : 0;
}
