/* Speculative decoding with the models on a GPU (a real one, or the simulated device of
 * tests/cudasim): the verification batch, the rollback of rejected drafts (K/V cells and
 * a hybrid model's recurrent state) and the draft model all run there. Greedy replies
 * with speculation equal those without it on the same device. Exits 77 (skip) without a
 * usable GPU. */
#include "llmfs.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static llmfs *lf;

static char *read_stream(llmfs_stream *st)
{
    size_t cap = 1024, off = 0;
    char *buf = malloc(cap);
    for (int spins = 0;; spins++) {
        ck_assert_msg(spins < 6000, "stream did not end");
        if (!llmfs_stream_wait(st, off, 100))
            continue;
        if (off + 512 > cap)
            buf = realloc(buf, cap *= 2);
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
    return buf;
}

/* The reply to a fixture prompt from models/<file> on the GPU, with extra settings
 * (NULL-terminated); *drafted gets the session's draft count. */
static char *reply(const char *file, const char *stem, const char *cas, const char *const *extra, int *drafted)
{
    const char *opts[16] = {"mode=raw", "temp=0", "n_predict=16", "ctx=256", "threads=2", "ngl=99", "fit=off"};
    int n = 7;
    for (int i = 0; extra[i]; i++)
        opts[n++] = extra[i];
    char path[4096], rel[512];
    snprintf(rel, sizeof rel, "models/%s", file);
    llmfs_error e = {0};
    ck_assert_msg(llmfs_model_load(lf, "g", test_shared_path(rel, path, sizeof path), opts, n, &e) == 0, "%s: %s",
                  file, e.msg);
    llmfs_model *m = llmfs_model_get(lf, "g");
    char err[256];
    llmfs_model_error(m, err, sizeof err);
    ck_assert_msg(err[0] == 0, "%s: %s", file, err);
    llmfs_session *s = llmfs_session_default(m);
    snprintf(rel, sizeof rel, "fixtures/%s/%s/prompt.txt", stem, cas);
    char *prompt = test_read_file(test_shared_path(rel, path, sizeof path), NULL);
    ck_assert_ptr_nonnull(prompt);
    ck_assert_int_eq(llmfs_session_prompt(s, prompt, strlen(prompt), &e), 0);
    llmfs_stream *st = llmfs_session_output(s);
    char *out = read_stream(st);
    llmfs_stream_put(st);
    test_wait_idle(s, 600);
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    ck_assert_str_ne(ss.stop_reason, "error");
    *drafted = ss.draft_n;
    free(prompt);
    llmfs_session_put(s);
    llmfs_model_put(m);
    ck_assert_int_eq(llmfs_model_unload(lf, "g", NULL), 0);
    return out;
}

START_TEST(gpu_replies_identical)
{
    static const struct {
        const char *file, *stem, *cas, *draft;
    } runs[] = {
        {"llama-tiny-f16.gguf", "llama-tiny-f16", "story", "llama-tiny-q4_0.gguf"},
        {"qwen35-tiny-q8_0.gguf", "qwen35-tiny-q8_0", "price", "qwen35-tiny-q8_0.gguf"},
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        static const char *none[] = {NULL};
        int d0, d1, d2;
        char *plain = reply(runs[r].file, runs[r].stem, runs[r].cas, none, &d0);
        char draft[4200], dp[4096], rel[256];
        snprintf(rel, sizeof rel, "models/%s", runs[r].draft);
        snprintf(draft, sizeof draft, "spec_draft_model=%s", test_shared_path(rel, dp, sizeof dp));
        const char *with_draft[] = {"spec_type=draft", draft, "spec_draft_ngl=99", NULL};
        const char *with_ngram[] = {"spec_type=ngram", "spec_ngram_n=2", NULL};
        char *a = reply(runs[r].file, runs[r].stem, runs[r].cas, with_draft, &d1);
        char *b = reply(runs[r].file, runs[r].stem, runs[r].cas, with_ngram, &d2);
        ck_assert_msg(strcmp(a, plain) == 0, "%s, draft model: '%s' vs '%s'", runs[r].file, a, plain);
        ck_assert_msg(strcmp(b, plain) == 0, "%s, n-gram: '%s' vs '%s'", runs[r].file, b, plain);
        ck_assert_int_eq(d0, 0);
        ck_assert_int_gt(d1, 0);
        printf("%s: drafted %d (draft model), %d (n-gram)\n", runs[r].file, d1, d2);
        free(plain);
        free(a);
        free(b);
    }
}
END_TEST

/* fit keeps room for the draft model's weights and KV cache and says so: 1.0 MiB of
 * weights, 2 layers x 4096 cells x 1 KiB of f16 K and V */
START_TEST(fit_counts_the_draft)
{
    char path[4096], dp[4096], draft[4200];
    snprintf(draft, sizeof draft, "spec_draft_model=%s",
             test_shared_path("models/llama-tiny-q4_0.gguf", dp, sizeof dp));
    const char *opts[] = {"threads=2", "spec_type=draft", draft};
    llmfs_error e = {0};
    ck_assert_msg(llmfs_model_load(lf, "g", test_shared_path("models/llama-tiny-f16.gguf", path, sizeof path), opts, 3,
                                   &e) == 0, "%s", e.msg);
    llmfs_model *m = llmfs_model_get(lf, "g");
    char fit[1024];
    llmfs_model_fit_text(m, fit, sizeof fit);
    ck_assert_msg(strstr(fit, "draft model GPU 5.0 MiB (weights 1.0, KV 4.0)"), "fit: %s", fit);
    llmfs_model_put(m);
    ck_assert_int_eq(llmfs_model_unload(lf, "g", NULL), 0);
}
END_TEST

static void setup(void)
{
    llmfs_error e = {0};
    lf = llmfs_new(&e);
    ck_assert_ptr_nonnull(lf);
}

static void teardown(void)
{
    llmfs_free(lf);
    lf = NULL;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("gpu spec");
    llmfs_gpu_info g;
    if (llmfs_gpus(&g, 1) < 1) {
        fprintf(stderr, "\n*** SKIPPED gpu_spec: no usable GPU ***\n\n");
        return test_skip_code();
    }
    /* CUDA state does not survive fork: run the tests in this process */
    setenv("CK_FORK", "no", 1);
    Suite *s = suite_create("gpu_spec");
    TCase *tc = tcase_create("gpu_spec");
    tcase_set_timeout(tc, 900);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, fit_counts_the_draft);
    tcase_add_test(tc, gpu_replies_identical);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
