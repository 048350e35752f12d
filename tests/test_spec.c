/* test_spec.c — speculative decoding (src/spec.c and the scheduler's verification).
 *
 * (1) The drafters and acceptance rules on hand-made inputs, and the sampled acceptance
 * rule's output distribution against the target's (chi-square).
 * (2) On every fixture case: verifying k tokens in one batch gives bit-identical logits
 * to decoding them one at a time, and greedy speculative decoding (n-gram drafts, a
 * draft model, drafts that are always wrong) gives exactly the ids of plain greedy
 * decoding, which match llama.cpp's where its top-2 margin is clear.
 * (3) Through the engine (llmfs.h): byte-identical replies with and without speculation,
 * 8 sessions at once, stats, refused drafts, and the distribution of sampled replies.
 */
#include "testutil.h"

#include "fixture.h"
#include "kv.h"
#include "llmfs.h"
#include "model.h"
#include "quant.h"
#include "sampler.h"
#include "spec.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- (1) units */

START_TEST(ngram_lookup)
{
    int32_t out[8];
    /* the key 1 2 3 occurred at 0: what followed it, then the drafts themselves */
    static const int32_t a[] = {1, 2, 3, 4, 5, 1, 2, 3};
    ck_assert_int_eq(spec_ngram_draft(a, 8, 3, 1, 4, out), 4);
    ck_assert_int_eq(out[0], 4);
    ck_assert_int_eq(out[1], 5);
    ck_assert_int_eq(out[2], 1);
    ck_assert_int_eq(out[3], 2);
    ck_assert_int_eq(spec_ngram_draft(a, 8, 3, 1, 7, out), 7);
    static const int32_t cycle[] = {4, 5, 1, 2, 3, 4, 5};
    for (int i = 0; i < 7; i++)
        ck_assert_int_eq(out[i], cycle[i]);
    ck_assert_int_eq(spec_ngram_draft(a, 8, 3, 2, 4, out), 0); /* one hit only */
    /* the most recent of two occurrences */
    static const int32_t b[] = {1, 2, 3, 9, 1, 2, 3, 7, 1, 2, 3};
    ck_assert_int_eq(spec_ngram_draft(b, 11, 3, 2, 2, out), 2);
    ck_assert_int_eq(out[0], 7);
    ck_assert_int_eq(out[1], 1);
    ck_assert_int_eq(spec_ngram_draft(b, 11, 3, 3, 2, out), 0);
    /* no occurrence, too short, nothing wanted */
    static const int32_t c[] = {1, 2, 3, 4, 5, 6};
    ck_assert_int_eq(spec_ngram_draft(c, 6, 2, 1, 3, out), 0);
    ck_assert_int_eq(spec_ngram_draft(c, 2, 2, 1, 3, out), 0);
    ck_assert_int_eq(spec_ngram_draft(a, 8, 3, 1, 0, out), 0);
    /* a 1-gram: the last token 3 followed by 4 at position 2 */
    ck_assert_int_eq(spec_ngram_draft(a, 8, 1, 1, 1, out), 1);
    ck_assert_int_eq(out[0], 4);
}
END_TEST

START_TEST(greedy_and_draw_rules)
{
    static const int32_t d[] = {5, 6, 7};
    static const int32_t t1[] = {5, 6, 7, 8}, t2[] = {5, 9, 7, 8}, t3[] = {1, 6, 7, 8};
    ck_assert_int_eq(spec_accept_greedy(d, 3, t1), 3);
    ck_assert_int_eq(spec_accept_greedy(d, 3, t2), 1);
    ck_assert_int_eq(spec_accept_greedy(d, 3, t3), 0);
    ck_assert_int_eq(spec_accept_greedy(d, 0, t3), 0);
    static const float w[] = {0, 1, 0, 3};
    ck_assert_int_eq(spec_draw(w, 4, 0.0), 1);
    ck_assert_int_eq(spec_draw(w, 4, 0.24), 1);
    ck_assert_int_eq(spec_draw(w, 4, 0.26), 3);
    ck_assert_int_eq(spec_draw(w, 4, 0.999999), 3);
    float p[] = {0.25f, 0.75f};
    ck_assert_int_eq(spec_accept_sampled(p, 2, 0, 0.2, 0.9), 0);  /* u < p(x): taken */
    ck_assert_int_eq(spec_accept_sampled(p, 2, 0, 0.3, 0.0), 1);  /* rejected: the rest */
    ck_assert(p[0] == 0);
}
END_TEST

/* Pearson's statistic of counts against probabilities p (bins with p = 0 must be
 * empty: returns INFINITY otherwise). */
static double chi_square(const int *count, const float *p, int n, int total)
{
    double x2 = 0;
    for (int i = 0; i < n; i++) {
        double e = (double)p[i] * total;
        if (e == 0) {
            if (count[i])
                return INFINITY;
            continue;
        }
        x2 += (count[i] - e) * (count[i] - e) / e;
    }
    return x2;
}

/* The token that accept-or-resample gives, for any draft, is distributed as p. */
START_TEST(sampled_rule_keeps_the_distribution)
{
    static const float p[6] = {0.05f, 0.4f, 0.2f, 0.0f, 0.25f, 0.1f};
    test_rand_seed(12345);
    for (int x = 0; x < 6; x++) {
        int count[6] = {0};
        const int N = 60000;
        for (int i = 0; i < N; i++) {
            float w[6];
            memcpy(w, p, sizeof w);
            int32_t t = spec_accept_sampled(w, 6, x, test_uniform(), test_uniform());
            ck_assert(t >= 0 && t < 6);
            count[t]++;
        }
        /* 4 degrees of freedom (5 bins with mass): 40 is far out in the tail (p < 1e-7) */
        double x2 = chi_square(count, p, 6, N);
        ck_assert_msg(x2 < 40, "draft %d: chi-square %.1f", x2 < 1e9 ? x : -1, x2);
    }
}
END_TEST

/* ---------------------------------------------------------------- (2) fixture cases */

static fixture *cases;
static int n_cases;

static model *load_model(const char *path)
{
    model_opts o = {.n_threads = 2, .n_threads_batch = 2};
    llmfs_error err = {0};
    model *m = model_load(path, &o, &err);
    ck_assert_msg(m, "loading %s: %s", path, err.msg);
    return m;
}

/* Verifying k tokens in one batch computes exactly what decoding them one at a time
 * computes: after the prompt, the greedy continuation evaluated in calls of 4 tokens
 * (all rows of logits) equals the one-token calls bit for bit. */
START_TEST(verify_batch_bit_identical)
{
    const fixture *f = &cases[_i];
    int n;
    int32_t *t = fixture_full_sequence(f, &n);
    float *one = fixture_logits_buf(f, n), *four = fixture_logits_buf(f, n);
    model *m = load_model(f->model);
    kv_cache *kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
    fixture_eval(m, kv, t, f->n_tok, 0, 0, f->n_tok, f->flash, one);
    if (kv->n_recurrent)
        kv_checkpoint_save(kv, 0);
    fixture_eval(m, kv, t + f->n_tok, n - f->n_tok, 0, f->n_tok, 1, f->flash, one + (size_t)f->n_tok * f->n_vocab);
    ck_assert_int_eq(kv_seq_keep(kv, 0, f->n_tok), f->n_tok); /* a checkpoint there for a recurrent state */
    fixture_eval(m, kv, t + f->n_tok, n - f->n_tok, 0, f->n_tok, 4, f->flash, four + (size_t)f->n_tok * f->n_vocab);
    for (int i = f->n_tok; i < n; i++)
        ck_assert_msg(memcmp(one + (size_t)i * f->n_vocab, four + (size_t)i * f->n_vocab,
                             sizeof *one * (size_t)f->n_vocab) == 0,
                      "%s: position %d: logits verified in a batch of 4 differ from one-token decoding", f->name,
                      i);
    kv_cache_free(kv);
    model_free(m);
    free(one);
    free(four);
    free(t);
}
END_TEST

enum drafter_kind { D_NGRAM, D_MODEL, D_WRONG };

typedef struct spec_run {
    int n_drafted, n_accepted, n_steps;
} spec_run;

/* Plain greedy decoding: n ids after the prompt, one token per call. */
static void greedy_plain(model *m, const fixture *f, int n, int32_t *ids)
{
    kv_cache *kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
    int cap = f->n_tok + n;
    int32_t *seq = malloc(sizeof *seq * (size_t)cap), *pos = malloc(sizeof *pos * (size_t)cap);
    int32_t *sq = calloc((size_t)cap, sizeof *sq);
    int8_t *lg = calloc((size_t)cap, 1);
    memcpy(seq, f->tok, sizeof *seq * (size_t)f->n_tok);
    int len = f->n_tok, from = 0;
    llmfs_error err = {0};
    for (int i = 0; i < n; i++) {
        int cnt = len - from;
        for (int j = 0; j < cnt; j++)
            pos[j] = from + j, lg[j] = j == cnt - 1;
        fwd_batch b = {.n = cnt, .token = seq + from, .pos = pos, .seq = sq, .logits = lg};
        ck_assert_msg(model_forward_ids(m, kv, &b, &ids[i], f->flash, &err) == 0, "%s", err.msg);
        from = len;
        seq[len++] = ids[i];
    }
    kv_cache_free(kv);
    free(seq);
    free(pos);
    free(sq);
    free(lg);
}

/* Greedy speculative decoding the way the scheduler does it: [last token, drafts] in one
 * call, drafts taken while they equal the target's argmax, then the target's own token;
 * rejected cells removed (a recurrent state back to the checkpoint taken before). */
static void greedy_spec(model *m, const fixture *f, int n, enum drafter_kind kind, spec_drafter *dm,
                        const int32_t *plain, int32_t *ids, spec_run *run)
{
    const int k_max = 3;
    kv_cache *kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
    int cap = f->n_tok + n + k_max + 1;
    int32_t *seq = malloc(sizeof *seq * (size_t)cap), *tok = malloc(sizeof *tok * (size_t)cap);
    int32_t *pos = malloc(sizeof *pos * (size_t)cap), *sq = calloc((size_t)cap, sizeof *sq);
    int8_t *lg = calloc((size_t)cap, 1);
    int32_t target[4], draft[3];
    memcpy(seq, f->tok, sizeof *seq * (size_t)f->n_tok);
    int len = f->n_tok, held = 0, got = 0;
    llmfs_error err = {0};
    memset(run, 0, sizeof *run);
    while (got < n) {
        int k = n - got - 1 < k_max ? n - got - 1 : k_max;
        int nd = 0;
        if (k > 0 && kind == D_NGRAM)
            nd = spec_ngram_draft(seq, len, 2, 1, k, draft);
        if (k > 0 && kind == D_MODEL) {
            spec_draft_req r = {.seq = 0, .toks = seq, .n_toks = len, .n_max = k, .out = draft};
            ck_assert_msg(spec_drafter_run(dm, &r, 1, 0, f->flash, &err) == 0, "%s", err.msg);
            nd = r.n_out;
        }
        if (k > 0 && kind == D_WRONG) {
            /* one more than what plain decoding chose: never the target's token */
            for (int j = 0; j < k; j++)
                draft[j] = (plain[got + j] + 1) % f->n_vocab;
            nd = k;
        }
        if (kv->n_recurrent)
            kv_checkpoint_save(kv, 0);
        int cnt = 0;
        for (int p = held; p < len; p++, cnt++)
            tok[cnt] = seq[p], pos[cnt] = p, lg[cnt] = p == len - 1;
        for (int j = 0; j < nd; j++, cnt++)
            tok[cnt] = draft[j], pos[cnt] = len + j, lg[cnt] = 1;
        fwd_batch b = {.n = cnt, .token = tok, .pos = pos, .seq = sq, .logits = lg};
        ck_assert_msg(model_forward_ids(m, kv, &b, target, f->flash, &err) == 0, "%s", err.msg);
        int a = spec_accept_greedy(draft, nd, target);
        for (int j = 0; j < a && got < n; j++)
            ids[got++] = seq[len++] = draft[j];
        if (got < n)
            ids[got++] = seq[len++] = target[a];
        /* the cache holds the old sequence and the accepted drafts */
        held = len - 1;
        if (a < nd)
            held = kv_seq_keep(kv, 0, held);
        ck_assert_int_le(held, len - 1);
        run->n_steps += nd > 0;
        run->n_drafted += nd;
        run->n_accepted += a;
    }
    kv_cache_free(kv);
    free(seq);
    free(tok);
    free(pos);
    free(sq);
    free(lg);
}

/* The draft model of a case: the same float weights at a lower precision where the
 * fixture set has them (llama-tiny-*: q4_0, gemma3: q4_0, gpt-oss: mxfp4), else the
 * target itself (so every family's drafter runs, recurrent states included). */
static void draft_path_of(const fixture *f, char *buf, size_t cap)
{
    static const struct {
        const char *prefix, *draft;
    } lower[] = {
        {"llama-tiny-", "models/llama-tiny-q4_0.gguf"},
        {"gemma3-tiny-", "models/gemma3-tiny-q4_0.gguf"},
        {"gptoss-tiny-", "models/gptoss-tiny-mxfp4.gguf"},
    };
    for (size_t i = 0; i < sizeof lower / sizeof lower[0]; i++)
        if (strncmp(f->name, lower[i].prefix, strlen(lower[i].prefix)) == 0) {
            test_shared_path(lower[i].draft, buf, cap);
            return;
        }
    snprintf(buf, cap, "%s", f->model);
}

START_TEST(greedy_identical)
{
    const fixture *f = &cases[_i];
    int n = f->n_greedy;
    int32_t *plain = malloc(sizeof *plain * (size_t)n), *ids = malloc(sizeof *ids * (size_t)n);
    model *m = load_model(f->model);
    greedy_plain(m, f, n, plain);
    /* plain decoding is llama.cpp's greedy continuation up to its first unclear step */
    for (int j = 0; j < n && f->margin[j] >= 0.5f; j++)
        ck_assert_msg(plain[j] == f->greedy[j], "%s: step %d: %d, llama.cpp %d (margin %.2f)", f->name, j,
                      plain[j], f->greedy[j], f->margin[j]);

    char dpath[4096];
    draft_path_of(f, dpath, sizeof dpath);
    /* the case's cache types, so that a model drafting for itself computes what it verifies */
    spec_drafter_opts o = {.n_threads = 2, .type_k = f->ctk, .type_v = f->ctv, .n_ctx = 512, .n_seq = 1};
    llmfs_error err = {0};
    spec_drafter *dm = spec_drafter_load(dpath, m->tok, m->hp.n_vocab, &o, &err);
    ck_assert_msg(dm, "%s: draft %s: %s", f->name, dpath, err.msg);

    static const char *names[] = {"n-gram", "draft model", "always wrong"};
    for (int kind = D_NGRAM; kind <= D_WRONG; kind++) {
        spec_run r;
        greedy_spec(m, f, n, kind, dm, plain, ids, &r);
        for (int j = 0; j < n; j++)
            ck_assert_msg(ids[j] == plain[j], "%s, %s drafts: step %d: %d, without speculation %d", f->name,
                          names[kind], j, ids[j], plain[j]);
        if (kind == D_WRONG)
            ck_assert_msg(r.n_accepted == 0 && r.n_drafted > 0, "%s: wrong drafts accepted %d of %d", f->name,
                          r.n_accepted, r.n_drafted);
        if (kind == D_MODEL && strcmp(dpath, f->model) == 0)
            ck_assert_msg(r.n_accepted * 10 >= r.n_drafted * 9, "%s: drafting with itself accepted %d of %d",
                          f->name, r.n_accepted, r.n_drafted);
        printf("%-36s %-12s drafted %3d accepted %3d in %2d steps\n", f->name, names[kind], r.n_drafted,
               r.n_accepted, r.n_steps);
    }
    spec_drafter_free(dm);
    model_free(m);
    free(plain);
    free(ids);
}
END_TEST

/* Vocabularies: the same SPM vocab at another precision passes, a different one is
 * refused with the first difference. */
START_TEST(vocab_check)
{
    char a[4096], b[4096];
    model *t = load_model(test_shared_path("models/llama-tiny-f16.gguf", a, sizeof a));
    model *same = load_model(test_shared_path("models/stories260K.gguf", b, sizeof b));
    llmfs_error err = {0};
    ck_assert_int_eq(spec_vocab_check(t->tok, same->tok, &err), 0);
    model *other = load_model(test_shared_path("models/qwen2-tiny-q8_0.gguf", b, sizeof b));
    ck_assert_int_eq(spec_vocab_check(t->tok, other->tok, &err), -EINVAL);
    ck_assert_msg(strstr(err.msg, "differs") && !strchr(err.msg, '\n'), "%s", err.msg);
    spec_drafter_opts o = {.n_threads = 1, .type_k = T_F16, .type_v = T_F16, .n_ctx = 64, .n_seq = 1};
    ck_assert_ptr_null(spec_drafter_load(b, t->tok, t->hp.n_vocab, &o, &err));
    ck_assert_int_eq(err.code, EINVAL);
    model_free(t);
    model_free(same);
    model_free(other);
}
END_TEST

/* ---------------------------------------------------------------- (3) the engine */

static llmfs *lf;

static void engine_setup(void)
{
    llmfs_error e = {0};
    lf = llmfs_new(&e);
    ck_assert_ptr_nonnull(lf);
}

static void engine_teardown(void)
{
    llmfs_free(lf);
    lf = NULL;
}

/* Loads models/<file> as name with settings (a NULL-terminated list). */
static llmfs_model *load(const char *name, const char *file, const char *const *settings)
{
    char path[4096], rel[256];
    snprintf(rel, sizeof rel, "models/%s", file);
    test_shared_path(rel, path, sizeof path);
    int n = 0;
    while (settings[n])
        n++;
    llmfs_error e = {0};
    int rc = llmfs_model_load(lf, name, path, settings, n, &e);
    ck_assert_msg(rc == 0, "loading %s: %d %s", file, rc, e.msg);
    return llmfs_model_get(lf, name);
}

static void unload(llmfs_model *m, const char *name)
{
    llmfs_model_put(m);
    ck_assert_int_eq(llmfs_model_unload(lf, name, NULL), 0);
}

static void start(llmfs_session *s, const char *text)
{
    llmfs_error e = {0};
    int rc = llmfs_session_prompt(s, text, strlen(text), &e);
    ck_assert_msg(rc == 0, "prompt: %d %s", rc, e.msg);
}

static char *finish(llmfs_session *s)
{
    llmfs_stream *st = llmfs_session_output(s);
    char *out = test_stream_text(st, NULL);
    llmfs_stream_put(st);
    test_wait_idle(s, 120);
    return out;
}

static char *ask(llmfs_session *s, const char *text)
{
    start(s, text);
    return finish(s);
}

static void sctl(llmfs_session *s, const char *line)
{
    llmfs_error e = {0};
    int rc = llmfs_session_ctl(s, line, &e);
    ck_assert_msg(rc == 0, "ctl '%s': %d %s", line, rc, e.msg);
}

static char *fixture_prompt(const char *stem, const char *cas)
{
    char rel[512], path[4096];
    snprintf(rel, sizeof rel, "fixtures/%s/%s/prompt.txt", stem, cas);
    char *p = test_read_file(test_shared_path(rel, path, sizeof path), NULL);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Reply to a fixture prompt from models/<file> loaded with spec settings extra
 * (NULL-terminated, may be empty): raw mode, greedy, 32 tokens. Fills *st. */
static char *reply(const char *file, const char *stem, const char *cas, const char *const *extra,
                   llmfs_session_stats *st, llmfs_model_stats *ms)
{
    const char *opts[16] = {"mode=raw", "temp=0", "n_predict=32", "ctx=512", "threads=2"};
    int n = 5;
    for (int i = 0; extra[i]; i++)
        opts[n++] = extra[i];
    opts[n] = NULL;
    llmfs_model *m = load("t", file, opts);
    char err[256];
    llmfs_model_error(m, err, sizeof err);
    ck_assert_msg(err[0] == 0, "%s: %s", file, err);
    llmfs_session *s = llmfs_session_default(m);
    char *p = fixture_prompt(stem, cas);
    char *out = ask(s, p);
    llmfs_session_stats_get(s, st);
    if (ms)
        llmfs_model_stats_get(m, ms);
    free(p);
    llmfs_session_put(s);
    unload(m, "t");
    return out;
}

/* With a draft model and with n-gram drafting the reply is byte for byte the one
 * without speculation, and the stats count what was drafted and accepted. */
START_TEST(engine_replies_identical)
{
    static const struct {
        const char *file, *stem, *cas, *draft;
    } runs[] = {
        {"llama-tiny-f16.gguf", "llama-tiny-f16", "story", "llama-tiny-q4_0.gguf"},
        {"llama-tiny-q8_0.gguf", "llama-tiny-q8_0", "cat", "llama-tiny-q4_0.gguf"},
        {"stories260K.gguf", "stories260K", "once-upon-a-time", "stories260K.gguf"},
        {"qwen3-tiny-q4_k.gguf", "qwen3-tiny-q4_k", "price", "qwen3-tiny-q4_k.gguf"},
        {"qwen35-tiny-q8_0.gguf", "qwen35-tiny-q8_0", "price", "qwen35-tiny-q8_0.gguf"},
        {"gemma3-tiny-q8_0.gguf", "gemma3-tiny-q8_0", "story", "gemma3-tiny-q4_0.gguf"},
        /* other weights of the same vocabulary: most drafts rejected, so a hybrid
         * target's recurrent state and a hybrid draft's go back to their checkpoints */
        {"qwen35-tiny-q8_0.gguf", "qwen35-tiny-q8_0", "fox", "qwen3-tiny-q4_k.gguf"},
        {"qwen3-tiny-q4_k.gguf", "qwen3-tiny-q4_k", "fox", "qwen3next-tiny-q8_0.gguf"},
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        static const char *none[] = {NULL};
        llmfs_session_stats st0, st;
        llmfs_model_stats ms;
        char *plain = reply(runs[r].file, runs[r].stem, runs[r].cas, none, &st0, NULL);
        ck_assert_int_eq(st0.draft_n, 0);
        char draft[4200], dp[4096], rel[256];
        snprintf(rel, sizeof rel, "models/%s", runs[r].draft);
        snprintf(draft, sizeof draft, "spec_draft_model=%s", test_shared_path(rel, dp, sizeof dp));
        const char *with_draft[] = {"spec_type=draft", draft, "spec_draft_n_max=4", NULL};
        const char *with_ngram[] = {"spec_type=ngram", "spec_ngram_n=2", NULL};
        const char *both[] = {"spec_type=draft+ngram", draft, NULL};
        /* the draft's probabilities decide how far it drafts; short drafts are dropped */
        const char *unsure[] = {"spec_type=draft", draft, "spec_draft_p_min=0.3", "spec_draft_n_min=2", NULL};
        const char *const *variants[] = {with_draft, with_ngram, both, unsure};
        for (int v = 0; v < 4; v++) {
            char *out = reply(runs[r].file, runs[r].stem, runs[r].cas, variants[v], &st, &ms);
            ck_assert_msg(strcmp(out, plain) == 0, "%s, %s: with speculation\n  '%s'\nwithout\n  '%s'",
                          runs[r].file, variants[v][0], out, plain);
            ck_assert_int_eq(st.n_gen, st0.n_gen);
            ck_assert_str_eq(st.stop_reason, st0.stop_reason);
            ck_assert_int_le(st.draft_accepted, st.draft_n);
            ck_assert_uint_eq(ms.spec_drafted, (uint64_t)st.draft_n);
            ck_assert_uint_eq(ms.spec_accepted, (uint64_t)st.draft_accepted);
            ck_assert_uint_eq(ms.spec_steps, (uint64_t)st.spec_steps);
            ck_assert_uint_eq(ms.n_gen_tokens, (uint64_t)st.n_gen);
            if (v == 0 || v == 2) /* a draft model always drafts */
                ck_assert_int_gt(st.draft_n, 0);
            if (v == 3) /* every verified step had 2 drafts or more */
                ck_assert_int_ge(st.draft_n, 2 * st.spec_steps);
            if ((v == 0 || v == 2) && strcmp(runs[r].file, runs[r].draft) != 0 && strstr(runs[r].file, "qwen"))
                ck_assert_msg(st.draft_accepted < st.draft_n, "%s: the rollback path was not taken", runs[r].file);
            printf("%-22s %-22s drafted %3d accepted %3d steps %3d\n", runs[r].file, variants[v][0], st.draft_n,
                   st.draft_accepted, st.spec_steps);
            free(out);
        }
        free(plain);
    }
}
END_TEST

/* Eight sessions generating at once, each verifying its drafts in the same step as the
 * others' tokens, give the replies of one session without speculation; `spec off` in
 * one session turns its drafting off. */
START_TEST(engine_eight_sessions)
{
    static const char *none[] = {NULL};
    llmfs_session_stats st;
    char *want[2] = {reply("llama-tiny-f16.gguf", "llama-tiny-f16", "story", none, &st, NULL),
                     reply("llama-tiny-f16.gguf", "llama-tiny-f16", "cat", none, &st, NULL)};
    char *prompts[2] = {fixture_prompt("llama-tiny-f16", "story"), fixture_prompt("llama-tiny-f16", "cat")};
    char draft[4200], dp[4096];
    snprintf(draft, sizeof draft, "spec_draft_model=%s", test_shared_path("models/llama-tiny-q4_0.gguf", dp, sizeof dp));
    const char *opts[] = {"mode=raw", "temp=0", "n_predict=32", "ctx=512", "threads=2", "parallel=8",
                          "spec_type=draft+ngram", draft, NULL};
    llmfs_model *m = load("t", "llama-tiny-f16.gguf", opts);
    llmfs_session *s[8];
    for (int i = 0; i < 8; i++) {
        llmfs_error e = {0};
        s[i] = llmfs_session_new(m, &e);
        ck_assert_msg(s[i], "%s", e.msg);
    }
    sctl(s[7], "spec off");
    for (int i = 0; i < 8; i++)
        start(s[i], prompts[i % 2]);
    uint64_t drafted = 0;
    for (int i = 0; i < 8; i++) {
        char *out = finish(s[i]);
        ck_assert_msg(strcmp(out, want[i % 2]) == 0, "session %d: '%s' vs '%s'", i, out, want[i % 2]);
        llmfs_session_stats_get(s[i], &st);
        if (i == 7)
            ck_assert_int_eq(st.draft_n, 0);
        else
            ck_assert_int_gt(st.draft_n, 0);
        drafted += (uint64_t)st.draft_n;
        free(out);
    }
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    ck_assert_uint_eq(ms.spec_drafted, drafted);
    ck_assert_str_eq(ms.spec, "ngram draft llama-tiny-q4_0.gguf");
    /* the draft shows in placement (its weights) and kv (its cache, as large as the
     * target's: the same shape, context and sequences) */
    llmfs_placement_row rows[64];
    int nr = llmfs_model_placement(m, rows, 64);
    uint64_t draft_weights = 0;
    for (int i = 0; i < nr && i < 64; i++)
        if (strcmp(rows[i].group, "draft") == 0)
            draft_weights += rows[i].bytes;
    ck_assert_uint_gt(draft_weights, 500000);
    llmfs_kv_info kv;
    llmfs_model_kv_info(m, &kv);
    ck_assert_uint_eq(kv.draft_bytes, kv.bytes);
    for (int i = 0; i < 8; i++)
        llmfs_session_put(s[i]);
    unload(m, "t");
    for (int i = 0; i < 2; i++)
        free(want[i]), free(prompts[i]);
}
END_TEST

/* A draft that cannot be used (another vocabulary, no file, no path) is refused with a
 * one-line reason in the model's error; the target serves without speculation. */
START_TEST(engine_refused_drafts)
{
    char dp[4096], draft[4200];
    static const char *const bad[] = {"models/qwen2-tiny-q8_0.gguf", "models/no-such-model.gguf", NULL};
    static const char *const why[] = {"vocabulary differs", "", "needs spec_draft_model"};
    for (int i = 0; i < 3; i++) {
        if (bad[i])
            snprintf(draft, sizeof draft, "spec_draft_model=%s", test_shared_path(bad[i], dp, sizeof dp));
        else
            snprintf(draft, sizeof draft, "spec_draft_model=");
        const char *opts[] = {"mode=raw", "temp=0", "n_predict=8", "ctx=256", "threads=2", "spec_type=draft", draft, NULL};
        llmfs_model *m = load("t", "llama-tiny-q8_0.gguf", opts);
        char err[256];
        llmfs_model_error(m, err, sizeof err);
        ck_assert_msg(strncmp(err, "draft model refused: ", 21) == 0 && strstr(err, why[i]) && !strchr(err, '\n'),
                      "error '%s'", err);
        llmfs_model_stats ms;
        llmfs_model_stats_get(m, &ms);
        ck_assert_str_eq(ms.spec, "none");
        llmfs_session *s = llmfs_session_default(m);
        char *out = ask(s, "Once upon a time");
        llmfs_session_stats st;
        llmfs_session_stats_get(s, &st);
        ck_assert_int_eq(st.n_gen, 8);
        ck_assert_int_eq(st.draft_n, 0);
        free(out);
        llmfs_session_put(s);
        unload(m, "t");
    }
}
END_TEST

/* Sampling: the replies (two tokens, each drawn through the acceptance test) with
 * speculation are distributed as those without it: a chi-square test of homogeneity over
 * many seeds. */
#define SEEDS 300
static int replies_by_seed(const char *const *extra, char **texts)
{
    const char *opts[16] = {"mode=raw", "temp=1", "top_k=3", "top_p=1", "min_p=0", "n_predict=2",
                            "ctx=256", "threads=2"};
    int n = 8;
    for (int i = 0; extra[i]; i++)
        opts[n++] = extra[i];
    opts[n] = NULL;
    llmfs_model *m = load("t", "llama-tiny-f16.gguf", opts);
    llmfs_session *s = llmfs_session_default(m);
    int drafted = 0;
    for (int i = 0; i < SEEDS; i++) {
        char line[64];
        snprintf(line, sizeof line, "seed %d", 1000 + i);
        sctl(s, line);
        texts[i] = ask(s, "Once upon a time there was a");
        llmfs_session_stats st;
        llmfs_session_stats_get(s, &st);
        drafted += st.draft_n;
    }
    llmfs_session_put(s);
    unload(m, "t");
    return drafted;
}

START_TEST(engine_sampling_distribution)
{
    static char *plain[SEEDS], *spec[SEEDS];
    static const char *none[] = {NULL};
    char dp[4096], draft[4200];
    snprintf(draft, sizeof draft, "spec_draft_model=%s", test_shared_path("models/llama-tiny-q4_0.gguf", dp, sizeof dp));
    const char *with[] = {"spec_type=draft", draft, NULL};
    ck_assert_int_eq(replies_by_seed(none, plain), 0);
    ck_assert_int_ge(replies_by_seed(with, spec), SEEDS); /* one draft per reply at least */
    /* categories: the distinct replies; rare ones pooled */
    char *cat[2 * SEEDS];
    int a[2 * SEEDS] = {0}, b[2 * SEEDS] = {0}, nc = 0;
    for (int side = 0; side < 2; side++)
        for (int i = 0; i < SEEDS; i++) {
            char *t = side ? spec[i] : plain[i];
            int c = 0;
            while (c < nc && strcmp(cat[c], t) != 0)
                c++;
            if (c == nc)
                cat[nc++] = t;
            (side ? b : a)[c]++;
        }
    int pa = 0, pb = 0, k = 0;
    double x2 = 0;
    for (int c = 0; c < nc; c++) {
        if (a[c] + b[c] < 10) {
            pa += a[c], pb += b[c];
            continue;
        }
        double e = (a[c] + b[c]) / 2.0;
        x2 += (a[c] - e) * (a[c] - e) / e + (b[c] - e) * (b[c] - e) / e;
        k++;
    }
    if (pa + pb > 0) {
        double e = (pa + pb) / 2.0;
        x2 += (pa - e) * (pa - e) / e + (pb - e) * (pb - e) / e;
        k++;
    }
    ck_assert_int_ge(k, 3); /* the replies vary: the test sees a distribution */
    /* k - 1 degrees of freedom; 3 per degree plus 20 is far in the tail (p < 1e-5 for k <= 10) */
    ck_assert_msg(x2 < 3.0 * (k - 1) + 20, "chi-square %.1f over %d categories", x2, k);
    printf("sampled replies: %d categories, chi-square %.2f\n", k, x2);
    for (int i = 0; i < SEEDS; i++)
        free(plain[i]), free(spec[i]);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("spec");
    TCase *u = tcase_create("units");
    tcase_set_timeout(u, 120);
    tcase_add_test(u, ngram_lookup);
    tcase_add_test(u, greedy_and_draw_rules);
    tcase_add_test(u, sampled_rule_keeps_the_distribution);
    suite_add_tcase(s, u);
    if (!test_shared_dir())
        return s;
    n_cases = fixtures_load(&cases);
    TCase *f = tcase_create("fixtures");
    tcase_set_timeout(f, 600);
    tcase_add_loop_test(f, verify_batch_bit_identical, 0, n_cases);
    tcase_add_loop_test(f, greedy_identical, 0, n_cases);
    tcase_add_test(f, vocab_check);
    suite_add_tcase(s, f);
    TCase *e = tcase_create("engine");
    tcase_set_timeout(e, 600);
    tcase_add_checked_fixture(e, engine_setup, engine_teardown);
    tcase_add_test(e, engine_replies_identical);
    tcase_add_test(e, engine_eight_sessions);
    tcase_add_test(e, engine_refused_drafts);
    tcase_add_test(e, engine_sampling_distribution);
    suite_add_tcase(s, e);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
