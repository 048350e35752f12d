/* test_mtp_pmin.c — spec_draft_p_min with the nextn MTP head (the p_min of mtp_draft): drafting
 * stops before a draft whose probability, among the head's 10 best candidates (llama.cpp's
 * draft-mtp sampler), is below p_min.
 *
 * The calibrated head (qwen35moe-mtp-tiny-q8_0) on its fox prompt: the first draft of
 * the first step is the head's argmax at the prompt's end (notes/qwenmtp.md B3), whose
 * probability the test computes from a teacher-forced head pass; p_min just above it
 * must leave no draft, just below it the same drafts as without p_min. */
#include <check.h>

#include "fixture.h"
#include "kv.h"
#include "model.h"
#include "mtp.h"
#include "quant.h"
#include "spec.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_CTX 64

/* The softmax probability of x's argmax over its k largest entries (k >= n: all). */
static double top_p(const float *x, int n, int k)
{
    float *s = malloc(sizeof(float) * (size_t)n);
    ck_assert(s);
    memcpy(s, x, sizeof(float) * (size_t)n);
    /* selection of the k largest to the front, largest first */
    int lim = k < n ? k : n;
    for (int i = 0; i < lim; i++) {
        int b = i;
        for (int j = i + 1; j < n; j++)
            if (s[j] > s[b])
                b = j;
        float t = s[i];
        s[i] = s[b];
        s[b] = t;
    }
    double z = 0;
    for (int i = 0; i < lim; i++)
        z += exp((double)s[i] - (double)s[0]);
    free(s);
    return 1.0 / z;
}

START_TEST(p_min_stops_drafting)
{
    char mp[1024], tp[1024], gp[1024];
    test_shared_path("models/qwen35moe-mtp-tiny-q8_0.gguf", mp, sizeof mp);
    test_shared_path("fixtures/qwen35moe-mtp-tiny-q8_0/mtp-fox/tokens.txt", tp, sizeof tp);
    test_shared_path("fixtures/qwen35moe-mtp-tiny-q8_0/mtp-fox/greedy.txt", gp, sizeof gp);
    int32_t *tok = NULL, *gr = NULL;
    const int N = test_read_ints(tp, &tok);
    ck_assert(N > 0 && test_read_ints(gp, &gr) > 0);

    llmfs_error err = {0};
    model_opts o = {.n_threads = 2};
    model *m = model_load(mp, &o, &err);
    ck_assert_msg(m, "%s", err.msg);
    const int E = m->hp.n_embd, V = m->hp.n_vocab;

    /* the target's hidden rows of the prompt */
    kv_cache *kv = test_kv_cache(m, N_CTX, 1, T_F16, T_F16);
    int32_t pos[N_CTX], seq[N_CTX] = {0};
    int8_t lg[N_CTX] = {0};
    for (int i = 0; i < N_CTX; i++)
        pos[i] = i;
    float *H = malloc(sizeof(float) * (size_t)(N + 1) * E);
    ck_assert(H);
    fwd_batch b = {N, tok, pos, seq, lg};
    ck_assert_msg(model_forward_hidden(m, kv, &b, NULL, H, false, &err) == 0, "%s", err.msg);

    /* the head's logits for the first draft: rows (S[p], h[p-1]) for p = 0..N, S[N] the
     * first generated token, row 0 with a zero state */
    model_opts ho = {.n_threads = 2, .mtp = true};
    model *hm = model_load(mp, &ho, &err);
    ck_assert_msg(hm, "%s", err.msg);
    kv_cache *hkv = test_kv_cache(hm, N_CTX, 1, T_F16, T_F16);
    int32_t S[N_CTX];
    memcpy(S, tok, sizeof(int32_t) * (size_t)N);
    S[N] = gr[0];
    float *hin = calloc((size_t)(N + 1) * E, sizeof(float));
    float *row = malloc(sizeof(float) * (size_t)V);
    ck_assert(hin && row);
    memcpy(hin + E, H, sizeof(float) * (size_t)N * E);
    lg[N] = 1;
    fwd_batch hb = {N + 1, S, pos, seq, lg};
    ck_assert_msg(model_forward_mtp(hm, hkv, &hb, hin, row, NULL, false, &err) == 0, "%s", err.msg);
    const double p10 = top_p(row, V, 10), pall = top_p(row, V, V);
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (row[i] > row[best])
            best = i;
    fprintf(stderr, "first draft %d: p among the 10 best %.4f, over the vocabulary %.4f\n", best, p10, pall);
    ck_assert(p10 > 0.02 && p10 < 0.98);

    spec_drafter_opts so = {.n_threads = 2, .type_k = T_F16, .type_v = T_F16, .n_ctx = N_CTX, .n_seq = 1,
                            .n_ubatch = 512};
    mtp_drafter *dr = mtp_load(NULL, mp, m, &so, &err);
    ck_assert_msg(dr, "%s", err.msg);
    ck_assert_msg(mtp_process(dr, 0, tok, 0, N, H, false, &err) == 0, "%s", err.msg);

    /* each call drafts from the same point: the chain leaves no trace */
    int32_t ref[3], out[3];
    int n_ref = mtp_draft(dr, 0, gr[0], N, 3, 0, ref, NULL, false, &err);
    ck_assert_int_eq(n_ref, 3);
    ck_assert_int_eq(ref[0], best);

    ck_assert_int_eq(mtp_draft(dr, 0, gr[0], N, 3, (float)(p10 + 0.01), out, NULL, false, &err), 0);
    ck_assert_int_eq(mtp_draft(dr, 0, gr[0], N, 3, 1, out, NULL, false, &err), 0);

    int n = mtp_draft(dr, 0, gr[0], N, 3, (float)(p10 - 0.01), out, NULL, false, &err);
    ck_assert(n >= 1 && n <= 3);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(out[i], ref[i]);

    /* between the whole vocabulary's probability and the top 10's: drafting goes on (the
     * rule is the sampler's, not the softmax of every logit) */
    if (p10 - pall > 0.004) {
        n = mtp_draft(dr, 0, gr[0], N, 3, (float)((p10 + pall) / 2), out, NULL, false, &err);
        ck_assert_int_ge(n, 1);
        ck_assert_int_eq(out[0], ref[0]);
    }

    mtp_free(dr);
    kv_cache_free(hkv);
    kv_cache_free(kv);
    model_free(hm);
    model_free(m);
    free(H), free(hin), free(row), free(tok), free(gr);
}
END_TEST

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("test_mtp_pmin");
    Suite *s = suite_create("mtp_pmin");
    TCase *t = tcase_create("p_min");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, p_min_stops_drafting);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
