/* cmd_bench_spec.c — `llmfs bench -md DRAFT` / `--spec ngram` / `--spec mtp`: generation
 * speed with and without speculative decoding.
 *
 * Unlike the pp/tg tests (random tokens straight through the forward pass), drafts are
 * only worth measuring on real generation: the model is loaded through the engine, as
 * the file server loads it, and one greedy reply of N tokens to a fixed prompt is
 * generated per repetition with speculation off and then on (interleaved, so that a
 * loaded machine slows both alike). Speeds are the session's tg_tps; the acceptance is
 * the session's drafted and accepted counts.
 */
#include "cmd.h"

#include "llmfs.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A prompt of ordinary text: the n-gram drafter finds its repetitions, a model its words. */
static const char bench_prompt[] =
    "The little town by the river had one bakery, one school and one old bridge. Every morning "
    "the baker opened the bakery, the children walked to the school, and the old bridge carried "
    "them all across the river. Every morning the baker";

typedef struct spec_sample {
    double tps;
    int drafted, accepted, steps, n_gen;
} spec_sample;

/* Writes the prompt, waits for the reply to end, returns its stats; -1 on failure. */
static int generate(llmfs_session *s, const char *prompt, size_t len, llmfs_session_stats *st, char *why,
                    size_t cap)
{
    llmfs_error err = {0};
    if (llmfs_session_prompt(s, prompt, len, &err) < 0) {
        snprintf(why, cap, "%s", err.msg);
        return -1;
    }
    llmfs_stream *out = llmfs_session_output(s);
    uint64_t off = 0;
    char buf[4096];
    for (;;) {
        if (!llmfs_stream_wait(out, off, 1000))
            continue;
        size_t n = llmfs_stream_read(out, buf, sizeof buf, off);
        off += n;
        bool done;
        if (n == 0 && llmfs_stream_size(out, &done) == off && done)
            break;
    }
    llmfs_stream_put(out);
    while (llmfs_session_busy(s)) /* the stats are final once the session is idle */
        usleep(1000);
    llmfs_session_stats_get(s, st);
    if (strcmp(st->stop_reason, "error") == 0) {
        llmfs_session_error(s, why, cap);
        return -1;
    }
    return 0;
}

static void mean_sd(const spec_sample *x, int n, double *mean, double *sd)
{
    double sum = 0, ss = 0;
    for (int i = 0; i < n; i++)
        sum += x[i].tps;
    *mean = sum / n;
    for (int i = 0; i < n; i++)
        ss += (x[i].tps - *mean) * (x[i].tps - *mean);
    *sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

int bench_spec(const char *path, const char *draft, const char *spec_type, const char *prompt_file, int n_max,
               double p_min, int n_gen, int reps,
               int threads, int ngl, const char *ctk, const char *ctv, bool fa)
{
    const char *C = "bench";
    char set[13][1100];
    int n = 0;
    snprintf(set[n++], sizeof set[0], "mode=raw");
    snprintf(set[n++], sizeof set[0], "temp=0");
    snprintf(set[n++], sizeof set[0], "n_predict=%d", n_gen);
    snprintf(set[n++], sizeof set[0], "ctx=%d", (n_gen + 256 + 255) / 256 * 256);
    snprintf(set[n++], sizeof set[0], "threads=%d", threads);
    snprintf(set[n++], sizeof set[0], "ngl=%d", ngl);
    snprintf(set[n++], sizeof set[0], "cache_type_k=%s", ctk);
    snprintf(set[n++], sizeof set[0], "cache_type_v=%s", ctv);
    snprintf(set[n++], sizeof set[0], "flash_attn=%s", fa ? "on" : "off");
    snprintf(set[n++], sizeof set[0], "spec_type=%s", spec_type);
    snprintf(set[n++], sizeof set[0], "spec_draft_n_max=%d", n_max);
    snprintf(set[n++], sizeof set[0], "spec_draft_p_min=%g", p_min);
    if (draft)
        snprintf(set[n++], sizeof set[0], "spec_draft_model=%.1060s", draft);
    const char *argv_set[13];
    for (int i = 0; i < n; i++)
        argv_set[i] = set[i];

    /* the prompt: a file's text (an MTP head fitted to some prompts drafts well on those
     * only), else the fixed paragraph */
    char *text = NULL;
    size_t len = sizeof bench_prompt - 1;
    if (prompt_file) {
        FILE *f = fopen(prompt_file, "rb");
        if (!f)
            return cmd_fail(C, "%s: %s", prompt_file, strerror(errno));
        text = malloc(1 << 20);
        len = text ? fread(text, 1, 1 << 20, f) : 0;
        fclose(f);
        if (!text || len == 0) {
            free(text);
            return cmd_fail(C, "%s: empty or unreadable", prompt_file);
        }
    }
    const char *prompt = text ? text : bench_prompt;
    llmfs_error err = {0};
    llmfs *lf = llmfs_new(&err);
    if (!lf) {
        free(text);
        return cmd_fail(C, "%s", err.msg);
    }
    int rc = CMD_FAIL;
    spec_sample *on = calloc((size_t)reps, sizeof *on), *off = calloc((size_t)reps, sizeof *off);
    llmfs_model *m = NULL;
    llmfs_session *s = NULL;
    if (!on || !off) {
        cmd_fail(C, "out of memory");
        goto done;
    }
    if (llmfs_model_load(lf, "bench", path, argv_set, n, &err) < 0) {
        cmd_fail(C, "%s", err.msg);
        goto done;
    }
    m = llmfs_model_get(lf, "bench");
    char why[256];
    llmfs_model_error(m, why, sizeof why);
    if (why[0]) { /* a refused draft: measuring the target alone twice would mislead */
        cmd_fail(C, "%s", why);
        goto done;
    }
    s = llmfs_session_default(m);
    llmfs_session_stats st;
    /* one warm-up reply (page cache, scratch buffers) */
    if (generate(s, prompt, len, &st, why, sizeof why) < 0) {
        cmd_fail(C, "%s", why);
        goto done;
    }
    for (int r = 0; r < reps; r++) {
        for (int side = 0; side < 2; side++) {
            if (llmfs_session_ctl(s, side ? "spec on" : "spec off", &err) < 0) {
                cmd_fail(C, "%s", err.msg);
                goto done;
            }
            if (generate(s, prompt, len, &st, why, sizeof why) < 0) {
                cmd_fail(C, "%s", why);
                goto done;
            }
            spec_sample *x = side ? &on[r] : &off[r];
            *x = (spec_sample){st.tg_tps, st.draft_n, st.draft_accepted, st.spec_steps, st.n_gen};
        }
    }
    const char *mname = strrchr(path, '/');
    mname = mname ? mname + 1 : path;
    double m_off, sd_off, m_on, sd_on;
    mean_sd(off, reps, &m_off, &sd_off);
    mean_sd(on, reps, &m_on, &sd_on);
    int drafted = 0, accepted = 0, steps = 0;
    for (int r = 0; r < reps; r++)
        drafted += on[r].drafted, accepted += on[r].accepted, steps += on[r].steps;
    const char *dname = draft ? strrchr(draft, '/') : NULL;
    dname = dname ? dname + 1 : draft ? draft : strcmp(spec_type, "mtp") ? "-" : "(its MTP head)";
    printf("| %-24s | %-24s | %-11s | %5s | %10s | %20s | %10s | %17s |\n", "model", "draft", "spec", "n_max",
           "test", "t/s", "acceptance", "accepted per step");
    printf("| ------------------------ | ------------------------ | ----------- | ----: | ---------: | "
           "-------------------: | ---------: | ----------------: |\n");
    char test[32], ts[48];
    snprintf(test, sizeof test, "tg%d", n_gen);
    snprintf(ts, sizeof ts, "%.2f ± %.2f", m_off, sd_off);
    printf("| %-24.24s | %-24s | %-11s | %5s | %10s | %21s | %10s | %17s |\n", mname, "-", "off", "-", test, ts,
           "-", "-");
    snprintf(ts, sizeof ts, "%.2f ± %.2f", m_on, sd_on);
    char acc[32], per[32];
    snprintf(acc, sizeof acc, "%.3f", drafted ? (double)accepted / drafted : 0.0);
    snprintf(per, sizeof per, "%.2f", steps ? (double)accepted / steps : 0.0);
    char nm[16];
    snprintf(nm, sizeof nm, "%d", n_max);
    printf("| %-24.24s | %-24.24s | %-11s | %5s | %10s | %21s | %10s | %17s |\n", mname, dname, spec_type, nm, test,
           ts, acc, per);
    printf("\nspeedup %.2fx (tg with speculation / without); drafted %d, accepted %d in %d steps",
           m_off > 0 ? m_on / m_off : 0.0, drafted, accepted, steps);
    if (p_min > 0)
        printf("; drafting stops below p %g", p_min);
    printf("\n");
    rc = fflush(stdout) ? cmd_fail(C, "cannot write: %s", strerror(errno)) : CMD_OK;
done:
    if (s)
        llmfs_session_put(s);
    if (m)
        llmfs_model_put(m);
    free(on);
    free(off);
    free(text);
    llmfs_free(lf);
    return rc;
}
