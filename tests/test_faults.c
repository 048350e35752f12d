/* Fault injection: every allocation (and every file read) of loading a model, submitting
 * a prompt, a generation step, cloning a session and rendering each text file is made
 * to fail in turn (tests/fault.h). Each failure must come back as ENOMEM or EIO with a
 * message (or be absorbed without harm), leave nothing behind, and the next request,
 * and the other sessions, must still be served. */
#include "fault.h"
#include "llmfs.h"
#include "testutil.h"

#ifdef LLMFS_HAVE_FS
#include "ctl.h"
#include "render.h"
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static llmfs *lf;

static void setup(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("fault injection tests");
    llmfs_error e = {0};
    lf = llmfs_new(&e);
    ck_assert_ptr_nonnull(lf);
}

static void teardown(void)
{
    fault_disarm();
    llmfs_free(lf);
    lf = NULL;
}

static const char *model_path(const char *file)
{
    static char path[4096];
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s", file);
    return test_shared_path(rel, path, sizeof path);
}

static int load(const char *name, const char *file, const char *const *opts, int n, llmfs_error *e)
{
    return llmfs_model_load(lf, name, model_path(file), opts, n, e);
}

/* Replies are read into fixed buffers: the test's own calls to malloc are wrapped too,
 * and must not take the failure meant for the core. */
#define REPLY_MAX 65536

/* The whole stream into buf: 0, or -1 after 60 s or when it does not fit. No check
 * assertion here: Check allocates for each, and this runs while a failure is armed. */
static int read_all(llmfs_stream *st, char *buf, size_t cap)
{
    size_t off = 0;
    for (int spins = 0;; spins++) {
        if (spins >= 600 || off + 1 >= cap)
            return -1;
        if (!llmfs_stream_wait(st, off, 100))
            continue;
        size_t n = llmfs_stream_read(st, buf + off, cap - off - 1, off);
        if (n == 0) {
            bool done;
            if (llmfs_stream_size(st, &done) == off && done)
                break;
            continue;
        }
        off += n;
        spins = 0;
    }
    buf[off] = 0;
    return 0;
}

/* Until the session is idle: 0, or -1 after 60 s (no Check call, as above). */
static int wait_idle(llmfs_session *s)
{
    for (int i = 0; i < 6000; i++) {
        llmfs_session_stats st;
        llmfs_session_stats_get(s, &st);
        if (strcmp(st.state, "idle") == 0)
            return 0;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return -1;
}

/* A prompt and its whole reply into out; the prompt's return code, or -ETIMEDOUT when
 * the reply does not end. */
static int ask(llmfs_session *s, const char *text, char *out, llmfs_error *e)
{
    out[0] = 0;
    int rc = llmfs_session_prompt(s, text, strlen(text), e);
    if (rc < 0)
        return rc;
    llmfs_stream *st = llmfs_session_output(s);
    rc = read_all(st, out, REPLY_MAX);
    llmfs_stream_put(st);
    if (rc < 0 || wait_idle(s) < 0)
        return -ETIMEDOUT;
    return 0;
}

static void assert_errno(int rc, const llmfs_error *e, const char *what, long n)
{
    ck_assert_msg(rc == -ENOMEM || rc == -EIO, "%s, failure %ld: %d (%s)", what, n, rc, e->msg);
    ck_assert_msg(e->msg[0], "%s, failure %ld: no message", what, n);
}

/* The other session keeps its greedy reply. */
static void assert_serves(llmfs_session *s, const char *prompt, const char *want, const char *what, long n)
{
    llmfs_error e = {0};
    static char got[REPLY_MAX];
    llmfs_session_ctl(s, "reset", NULL);
    int rc = ask(s, prompt, got, &e);
    ck_assert_msg(rc == 0, "%s, failure %ld: the next prompt: %d %s", what, n, rc, e.msg);
    ck_assert_msg(strcmp(got, want) == 0, "%s, failure %ld: '%s' instead of '%s'", what, n, got, want);
}

static const char *const raw_opts[] = {"threads=2", "mode=raw", "temp=0", "n_predict=3", "ctx=128",
                                       "parallel=2"};

/* Every allocation and every file read of loading a model (read into memory, then
 * mapped), while another model serves. */
START_TEST(load_fails_cleanly)
{
    llmfs_error e = {0};
    ck_assert_int_eq(load("keep", "stories260K.gguf", raw_opts, 6, &e), 0);
    llmfs_model *keep = llmfs_model_get(lf, "keep");
    llmfs_session *ks = llmfs_session_default(keep);
    static char want[REPLY_MAX], got[REPLY_MAX];
    ck_assert_int_eq(ask(ks, "Once upon", want, &e), 0);
    int rc;
    static const char *const variants[2][4] = {
        {"threads=2", "mmap=off", "ctx=64", "mode=raw"},
        {"threads=2", "mmap=on", "ctx=64", "mode=raw"},
    };
    for (int v = 0; v < 2; v++) {
        fault_arm(0, 0);
        ck_assert_int_eq(load("w", "stories260K.gguf", variants[v], 4, &e), 0);
        fault_disarm();
        long allocs = fault_allocs(), reads = fault_reads();
        ck_assert_int_gt(allocs, 10);
        ck_assert_int_gt(reads, 0);
        ck_assert_int_eq(llmfs_model_unload(lf, "w", &e), 0);
        fprintf(stderr, "load (%s): %ld allocations, %ld reads\n", variants[v][1], allocs, reads);
        for (long k = 1; k <= allocs + reads; k++) {
            bool is_read = k > allocs;
            long n = is_read ? k - allocs : k;
            e = (llmfs_error){0};
            fault_arm(is_read ? 0 : n, is_read ? n : 0);
            rc = load("w", "stories260K.gguf", variants[v], 4, &e);
            fault_disarm();
            const char *what = is_read ? "load, read" : "load, allocation";
            if (rc == 0) {
                /* absorbed (a cache it can do without): the model must work */
                llmfs_model *w = llmfs_model_get(lf, "w");
                ck_assert_ptr_nonnull(w);
                llmfs_session *ws = llmfs_session_default(w);
                ck_assert_int_eq(llmfs_session_ctl(ws, "temp 0", NULL), 0);
                ck_assert_int_eq(llmfs_session_ctl(ws, "n_predict 3", NULL), 0);
                rc = ask(ws, "Once upon", got, &e);
                ck_assert_msg(rc == 0 && strcmp(got, want) == 0, "%s %ld absorbed, then: %d %s", what, n,
                              rc, e.msg);
                llmfs_session_put(ws);
                llmfs_model_put(w);
                ck_assert_int_eq(llmfs_model_unload(lf, "w", &e), 0);
            } else {
                ck_assert_msg(fault_fired(), "%s %ld: %d (%s) without a failure", what, n, rc, e.msg);
                assert_errno(rc, &e, what, n);
                ck_assert_ptr_null(llmfs_model_get(lf, "w"));
            }
            if (k % 64 == 0 || k == allocs + reads)
                assert_serves(ks, "Once upon", want, what, n);
        }
    }
    llmfs_session_put(ks);
    llmfs_model_put(keep);
}
END_TEST

/* Every allocation of submitting a prompt and of the steps that evaluate it and
 * generate (raw and chat mode), while another session of the model waits. */
static void prompt_walk(const char *file, const char *const *opts, int n_opts, const char *prompt)
{
    llmfs_error e = {0};
    ck_assert_int_eq(load("m", file, opts, n_opts, &e), 0);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_session *other = llmfs_session_default(m);
    llmfs_session *s = llmfs_session_new(m, &e);
    ck_assert_ptr_nonnull(s);
    static char want[REPLY_MAX], got[REPLY_MAX];
    ck_assert_int_eq(ask(other, prompt, want, &e), 0);
    llmfs_session_ctl(s, "reset", NULL);
    fault_arm(0, 0);
    int rc = ask(s, prompt, got, &e);
    fault_disarm();
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(got, want);
    long allocs = fault_allocs();
    ck_assert_int_gt(allocs, 5);
    fprintf(stderr, "prompt and steps (%s): %ld allocations\n", file, allocs);
    for (long n = 1; n <= allocs; n++) {
        llmfs_session_ctl(s, "reset", NULL);
        e = (llmfs_error){0};
        fault_arm(n, 0);
        rc = ask(s, prompt, got, &e);
        fault_disarm();
        ck_assert_msg(rc != -ETIMEDOUT, "prompt, failure %ld: the reply did not end", n);
        /* a turn in the transcript always has its end line, however it ended */
        llmfs_stream *tr = llmfs_session_transcript(s);
        static char log[REPLY_MAX];
        bool done;
        uint64_t size = llmfs_stream_size(tr, &done);
        size_t from = size > sizeof log - 1 ? (size_t)size - (sizeof log - 1) : 0;
        size_t got_n = llmfs_stream_read(tr, log, (size_t)size - from, from);
        log[got_n] = 0;
        llmfs_stream_put(tr);
        char *last_turn = NULL, *last_end = NULL;
        for (char *p = strstr(log, "### turn"); p; p = strstr(p + 1, "### turn"))
            last_turn = p;
        for (char *p = strstr(log, "### end"); p; p = strstr(p + 1, "### end"))
            last_end = p;
        ck_assert_msg(!last_turn || (last_end && last_end > last_turn),
                      "prompt, failure %ld: the transcript's last turn has no end line", n);
        if (rc < 0) {
            assert_errno(rc, &e, "prompt", n);
        } else {
            llmfs_session_stats ss;
            llmfs_session_stats_get(s, &ss);
            if (strcmp(ss.stop_reason, "error") == 0) {
                char msg[256];
                llmfs_session_error(s, msg, sizeof msg);
                ck_assert_msg(msg[0], "prompt, failure %ld: reply ended in error without a reason", n);
            } else {
                ck_assert_msg(strcmp(got, want) == 0, "prompt, failure %ld absorbed: '%s' not '%s' (%s)", n,
                              got, want, ss.stop_reason);
            }
        }
        /* the same session and the other one are served */
        assert_serves(s, prompt, want, "prompt", n);
        if (n % 16 == 0)
            assert_serves(other, prompt, want, "prompt", n);
    }
    llmfs_session_put(s);
    llmfs_session_put(other);
    llmfs_model_put(m);
    ck_assert_int_eq(llmfs_model_unload(lf, "m", &e), 0);
}

START_TEST(prompt_and_steps_fail_cleanly)
{
    prompt_walk("stories260K.gguf", raw_opts, 6, "Once upon a time");
    static const char *const chat_opts[] = {"threads=2", "mode=chat", "temp=0", "n_predict=3", "ctx=256",
                                            "parallel=2", "system Be brief."};
    prompt_walk("qwen2-tiny-q8_0.gguf", chat_opts, 7, "Hello there");
}
END_TEST

START_TEST(clone_fails_cleanly)
{
    llmfs_error e = {0};
    ck_assert_int_eq(load("m", "stories260K.gguf", raw_opts, 6, &e), 0);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_session *def = llmfs_session_default(m);
    static char want[REPLY_MAX];
    ck_assert_int_eq(ask(def, "Once upon", want, &e), 0);
    fault_arm(0, 0);
    llmfs_session *c = llmfs_session_new(m, &e);
    fault_disarm();
    ck_assert_ptr_nonnull(c);
    llmfs_session_ctl(c, "close", NULL);
    llmfs_session_put(c);
    long allocs = fault_allocs();
    ck_assert_int_gt(allocs, 2);
    fprintf(stderr, "clone: %ld allocations\n", allocs);
    int ids[64];
    for (long n = 1; n <= allocs; n++) {
        int before = llmfs_session_ids(m, ids, 64);
        e = (llmfs_error){0};
        fault_arm(n, 0);
        c = llmfs_session_new(m, &e);
        fault_disarm();
        if (c) {
            ck_assert_int_eq(llmfs_session_ids(m, ids, 64), before + 1);
            ck_assert_int_eq(llmfs_session_ctl(c, "close", &e), 0);
            llmfs_session_put(c);
        } else {
            ck_assert_msg(e.code == ENOMEM && e.msg[0], "clone, failure %ld: %d %s", n, e.code, e.msg);
            ck_assert_int_eq(llmfs_session_ids(m, ids, 64), before);
        }
        /* the next clone works and answers */
        llmfs_session *next = llmfs_session_new(m, &e);
        ck_assert_msg(next, "clone after failure %ld: %s", n, e.msg);
        llmfs_session_ctl(next, "temp 0", NULL);
        assert_serves(next, "Once upon", want, "clone", n);
        ck_assert_int_eq(llmfs_session_ctl(next, "close", &e), 0);
        llmfs_session_put(next);
    }
    llmfs_session_put(def);
    llmfs_model_put(m);
}
END_TEST

#ifdef LLMFS_HAVE_FS
typedef int (*render_fn)(void *arg, fs_text *out);

static llmfs_model *rm;
static llmfs_session *rs;
static int r_models(void *a, fs_text *o) { return render_models(a, o); }
static int r_daemon(void *a, fs_text *o) { return render_daemon_stats(a, o); }
static int r_metrics(void *a, fs_text *o) { return render_metrics(a, o); }
static int r_root_ctl(void *a, fs_text *o) { return ctl_root_text(a, o); }
static int r_model_stats(void *a, fs_text *o) { (void)a; return render_model_stats(rm, rs, o); }
static int r_session_stats(void *a, fs_text *o) { (void)a; return render_session_stats(rs, o); }
static int r_placement(void *a, fs_text *o) { (void)a; return render_placement(rm, o); }
static int r_kv(void *a, fs_text *o) { (void)a; return render_kv(rm, o); }
static int r_info(void *a, fs_text *o) { (void)a; return render_info(rm, o); }

START_TEST(rendering_fails_cleanly)
{
    llmfs_error e = {0};
    ck_assert_int_eq(load("m", "stories260K.gguf", raw_opts, 6, &e), 0);
    rm = llmfs_model_get(lf, "m");
    rs = llmfs_session_default(rm);
    static char reply[REPLY_MAX];
    ck_assert_int_eq(ask(rs, "Once upon", reply, &e), 0);
    int rc;
    static const struct {
        const char *name;
        render_fn fn;
    } files[] = {
        {"models", r_models},         {"stats", r_daemon},    {"metrics", r_metrics},
        {"ctl", r_root_ctl},          {"NAME/stats", r_model_stats}, {"NAME/N/stats", r_session_stats},
        {"NAME/placement", r_placement}, {"NAME/kv", r_kv},   {"NAME/info", r_info},
    };
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        fs_text t = {0};
        fault_arm(0, 0);
        rc = files[f].fn(lf, &t);
        fault_disarm();
        ck_assert_msg(rc == 0 && t.len > 0, "%s: %d", files[f].name, rc);
        size_t full = t.len;
        text_free(&t);
        long allocs = fault_allocs();
        fprintf(stderr, "render %s: %ld allocations\n", files[f].name, allocs);
        for (long n = 1; n <= allocs; n++) {
            fs_text u = {0};
            fault_arm(n, 0);
            rc = files[f].fn(lf, &u);
            fault_disarm();
            if (rc == 0)
                /* absorbed: the text is whole (sizes of numbers may change between renders) */
                ck_assert_msg(u.len + 16 > full, "%s, failure %ld: %zu of %zu bytes", files[f].name, n, u.len, full);
            else
                ck_assert_msg(rc == -ENOMEM, "%s, failure %ld: %d", files[f].name, n, rc);
            text_free(&u);
            fs_text again = {0};
            ck_assert_int_eq(files[f].fn(lf, &again), 0);
            ck_assert_uint_gt(again.len, 0);
            text_free(&again);
        }
    }
    llmfs_session_put(rs);
    llmfs_model_put(rm);
}
END_TEST
#endif

static Suite *make_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 1200);
    tcase_add_test(tc, load_fails_cleanly);
    tcase_add_test(tc, prompt_and_steps_fail_cleanly);
    tcase_add_test(tc, clone_fails_cleanly);
#ifdef LLMFS_HAVE_FS
    tcase_add_test(tc, rendering_fails_cleanly);
#endif
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
