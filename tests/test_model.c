/* test_model.c — the forward pass against llama.cpp's reference logits.
 *
 * Every case under fixtures/ is run: teacher-forced logits of the prompt (relative RMS
 * error per position within the weight type's tolerance, argmax equal where the
 * reference's top-2 margin exceeds 0.5), the greedy continuation evaluated in one pass,
 * the same one token per call and in small micro-batches, two sequences sharing a
 * batch, a q4_0 cache, and both attention paths. Then the error paths: context
 * overflow, malformed models, and the memory a loaded model costs (mapped, not read).
 */
#include "testutil.h"

#include "backend_test.h"
#include "gguf.h"
#include "kv.h"
#include "mkmodel.h"
#include "model.h"
#include "quant.h"
#include "sampler.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fixtures */

#include "fixture.h"

static fixture *cases;
static int n_cases;

static void load_fixtures(void)
{
    n_cases = fixtures_load(&cases);
}

/* ---------------------------------------------------------------- helpers */

static model *load(const char *path, int n_ubatch)
{
    model_opts o = {.n_threads = 2, .n_threads_batch = 2, .n_ubatch = n_ubatch};
    llmfs_error err = {0};
    model *m = model_load(path, &o, &err);
    ck_assert_msg(m, "loading %s: %s", path, err.msg);
    return m;
}

/* ---------------------------------------------------------------- fixture tests */

/* (1) the prompt in one batch; _i odd: the other attention path */
START_TEST(teacher_forced)
{
    const fixture *f = &cases[_i / 2];
    bool flash = _i % 2 ? !f->flash : f->flash;
    model *m = load(f->model, 0);
    ck_assert_int_eq(m->hp.n_vocab, f->n_vocab);
    kv_cache *kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
    float *out = fixture_logits_buf(f, f->n_tok);
    fixture_eval(m, kv, f->tok, f->n_tok, 0, 0, f->n_tok, flash, out);
    double e = fixture_check_prompt(f, out, f->tol, flash ? "flash" : "plain");
    printf("%-34s %-5s K %-4s V %-4s teacher-forced max rel err %.3e (tol %.0e)\n", f->name,
           flash ? "flash" : "plain", type_info(f->ctk)->name, type_info(f->ctv)->name, e, f->tol);
    free(out);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* (2) prompt + greedy[:-1] in one pass */
START_TEST(greedy_one_pass)
{
    const fixture *f = &cases[_i];
    model *m = load(f->model, 0);
    kv_cache *kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
    int n;
    int32_t *t = fixture_full_sequence(f, &n);
    float *out = fixture_logits_buf(f, n);
    fixture_eval(m, kv, t, n, 0, 0, n, f->flash, out);
    fixture_check_prompt(f, out, f->tol, "greedy pass");
    int c = fixture_check_greedy(f, out, 0, "one pass");
    printf("%-34s greedy: %d of %d steps clear of ties, all matched\n", f->name, c, f->n_greedy);
    free(out);
    free(t);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* Evaluations that differ only in batching agree to this (relative RMS): activations are
 * rounded per row either way, so only the kernels' summation order differs. */
#define SAME_MATH 1e-3

/* Logits of some positions only: the same rows as with all of them (the last layer's
 * feed-forward then runs on those rows alone). */
static void check_sparse_logits(const fixture *f, model *m, kv_cache *kv, const int32_t *t, int n,
                            const float *one, float *ch)
{
    kv_seq_keep(kv, 0, 0);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n), *sq = calloc((size_t)n, sizeof(int32_t));
    int8_t *lg = malloc((size_t)n);
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        lg[i] = i % 5 == 4 || i == n - 1; /* micro-batches of 3 with no logits too */
    }
    fwd_batch b = {n, t, pos, sq, lg};
    llmfs_error err = {0};
    ck_assert_int_eq(model_forward(m, kv, &b, ch, f->flash, &err), 0);
    for (int i = 0, j = 0; i < n; i++)
        if (lg[i]) {
            double e = logits_rel_rms(ch + (size_t)j++ * f->n_vocab, one + (size_t)i * f->n_vocab, f->n_vocab);
            ck_assert_msg(e < SAME_MATH, "%s: logits of position %d alone differ by %.3g", f->name, i, e);
        }
    ck_assert_int_eq(kv->seq_len[0], n);
    free(pos);
    free(sq);
    free(lg);
}

/* (3) one token per call, and micro-batches smaller than the prompt; the results also
 * agree with the single batch within SAME_MATH. */
START_TEST(decode_and_ubatch)
{
    const fixture *f = &cases[_i];
    int n;
    int32_t *t = fixture_full_sequence(f, &n);
    float *one = fixture_logits_buf(f, n), *dec = fixture_logits_buf(f, n), *ub = fixture_logits_buf(f, n), *ch = fixture_logits_buf(f, n);

    model *m = load(f->model, 0);
    kv_cache *kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
    fixture_eval(m, kv, t, n, 0, 0, n, f->flash, one);
    kv_seq_keep(kv, 0, 0);
    fixture_eval(m, kv, t, n, 0, 0, 1, f->flash, dec);
    double ed = fixture_check_prompt(f, dec, f->tol, "decode");
    fixture_check_greedy(f, dec, 0, "decode");
    check_sparse_logits(f, m, kv, t, n, one, ch);
    /* calls of 5 tokens through the default micro-batch */
    kv_seq_keep(kv, 0, 0);
    fixture_eval(m, kv, t, n, 0, 0, 5, f->flash, ch);
    fixture_check_prompt(f, ch, f->tol, "calls of 5");
    fixture_check_greedy(f, ch, 0, "calls of 5");
    kv_cache_free(kv);
    model_free(m);

    /* one call, micro-batches of 3 */
    m = load(f->model, 3);
    kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
    check_sparse_logits(f, m, kv, t, n, one, ub);
    kv_seq_keep(kv, 0, 0);
    fixture_eval(m, kv, t, n, 0, 0, n, f->flash, ub);
    double eu = fixture_check_prompt(f, ub, f->tol, "ubatch 3");
    fixture_check_greedy(f, ub, 0, "ubatch 3");

    double worst = 0;
    for (int i = 0; i < n; i++) {
        const float *r = one + (size_t)i * f->n_vocab;
        double a = logits_rel_rms(dec + (size_t)i * f->n_vocab, r, f->n_vocab);
        double b = logits_rel_rms(ub + (size_t)i * f->n_vocab, r, f->n_vocab);
        double c = logits_rel_rms(ch + (size_t)i * f->n_vocab, r, f->n_vocab);
        a = a > b ? a : b;
        a = a > c ? a : c;
        worst = a > worst ? a : worst;
    }
    ck_assert_msg(worst < SAME_MATH, "%s: per-token / micro-batch evaluation differs from one batch by %.3g",
                  f->name, worst);
    printf("%-34s decode max rel err %.3e, ubatch-3 %.3e, vs one batch %.1e\n", f->name, ed, eu,
           worst);
    free(one);
    free(dec);
    free(ub);
    free(ch);
    free(t);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* (4) two sequences interleaved in one batch (then decoded together) give each one's
 * logits alone; a truncated sequence re-evaluated gives the same again. */
START_TEST(two_sequences)
{
    const fixture *f = &cases[_i];
    int na;
    int32_t *a = fixture_full_sequence(f, &na);
    /* the second sequence: the same tokens reversed after the first, a different context */
    int nb = na - 3;
    int32_t *bt = malloc(sizeof(int32_t) * (size_t)nb);
    bt[0] = a[0];
    for (int i = 1; i < nb; i++)
        bt[i] = a[na - i];
    model *m = load(f->model, 0);
    int V = f->n_vocab;
    float *ra = fixture_logits_buf(f, na), *rb = fixture_logits_buf(f, nb);
    kv_cache *kv1 = test_kv_cache(m, na > 120 ? na + 8 : 128, 1, f->ctk, f->ctv);
    fixture_eval(m, kv1, a, na, 0, 0, na, f->flash, ra);
    kv_seq_keep(kv1, 0, 0);
    fixture_eval(m, kv1, bt, nb, 0, 0, nb, f->flash, rb);
    kv_cache_free(kv1);

    /* prompts together: a's first 10 and b's first 7 interleaved; then one token each per
     * call, both sequences in each batch */
    kv_cache *kv = test_kv_cache(m, na > 120 ? na + 8 : 128, 3, f->ctk, f->ctv);
    int pa = na < 10 ? na : 10, pb = nb < 7 ? nb : 7;
    int cap = na + nb;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)cap), *pos = malloc(sizeof(int32_t) * (size_t)cap),
            *seq = malloc(sizeof(int32_t) * (size_t)cap);
    int8_t *lg = malloc((size_t)cap);
    float *out = fixture_logits_buf(f, cap);
    int n = 0;
    for (int i = 0; i < pa || i < pb; i++) {
        if (i < pa) {
            tok[n] = a[i], pos[n] = i, seq[n] = 2, lg[n] = 1;
            n++;
        }
        if (i < pb) {
            tok[n] = bt[i], pos[n] = i, seq[n] = 0, lg[n] = 1;
            n++;
        }
    }
    llmfs_error err = {0};
    fwd_batch b = {n, tok, pos, seq, lg};
    ck_assert_int_eq(model_forward(m, kv, &b, out, f->flash, &err), 0);
    double worst = 0;
    for (int k = 0, ia = 0, ib = 0; k < n; k++) {
        const float *r = seq[k] == 2 ? ra + (size_t)ia++ * V : rb + (size_t)ib++ * V;
        double e = logits_rel_rms(out + (size_t)k * V, r, V);
        worst = e > worst ? e : worst;
    }
    for (int ia = pa, ib = pb; ia < na || ib < nb;) {
        n = 0;
        if (ib < nb) {
            tok[n] = bt[ib], pos[n] = ib, seq[n] = 0, lg[n] = 1;
            n++;
        }
        if (ia < na) {
            tok[n] = a[ia], pos[n] = ia, seq[n] = 2, lg[n] = 1;
            n++;
        }
        fwd_batch d = {n, tok, pos, seq, lg};
        ck_assert_int_eq(model_forward(m, kv, &d, out, f->flash, &err), 0);
        int k = 0;
        if (ib < nb) {
            double e = logits_rel_rms(out + (size_t)k++ * V, rb + (size_t)ib * V, V);
            worst = e > worst ? e : worst;
            ib++;
        }
        if (ia < na) {
            double e = logits_rel_rms(out + (size_t)k * V, ra + (size_t)ia * V, V);
            worst = e > worst ? e : worst;
            ia++;
        }
    }
    ck_assert_int_eq(kv->seq_len[2], na);
    ck_assert_int_eq(kv->seq_len[0], nb);
    ck_assert_int_eq(kv->seq_len[1], 0);
    ck_assert_msg(worst < SAME_MATH, "%s: batched sequences differ from separate ones by %.3g", f->name,
                  worst);

    /* keep 5 cells of sequence 2 and evaluate the rest again. A recurrent state cannot
     * be cut back: without a checkpoint the sequence is cleared, so it is rebuilt in
     * sequence 1 with a checkpoint after 5 cells, which kv_seq_keep then restores. */
    int ts = 2;
    if (kv->n_recurrent) {
        ck_assert_int_eq(kv_seq_keep(kv, 2, 5), 0);
        ck_assert_int_eq(kv->seq_len[2], 0);
        float *tmp = fixture_logits_buf(f, na);
        ts = 1;
        fixture_eval(m, kv, a, 5, ts, 0, na, f->flash, tmp);
        ck_assert_int_eq(kv_checkpoint_save(kv, ts), 0);
        ck_assert_int_eq(kv_checkpoint_count(kv, ts), 1);
        fixture_eval(m, kv, a + 5, na - 5, ts, 5, na, f->flash, tmp);
        ck_assert_int_eq(kv_seq_can_keep(kv, ts, 4), 0);
        free(tmp);
    }
    ck_assert_int_eq(kv_seq_keep(kv, ts, 5), 5);
    ck_assert_int_eq(kv->seq_len[ts], 5);
    float *again = fixture_logits_buf(f, na);
    fixture_eval(m, kv, a + 5, na - 5, ts, 5, na, f->flash, again);
    double e2 = 0;
    for (int i = 5; i < na; i++) {
        double e = logits_rel_rms(again + (size_t)(i - 5) * V, ra + (size_t)i * V, V);
        e2 = e > e2 ? e : e2;
    }
    ck_assert_msg(e2 < SAME_MATH, "%s: re-evaluation after kv_seq_keep differs by %.3g", f->name, e2);
    printf("%-34s two sequences: max diff vs separate %.1e, after truncation %.1e\n", f->name, worst, e2);
    free(again);
    free(tok);
    free(pos);
    free(seq);
    free(lg);
    free(out);
    free(ra);
    free(rb);
    free(a);
    free(bt);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* (7) a q4_0 cache (K and V, where the head size allows it) stays close. Its rounding
 * noise is large on these random models (relative errors of 0.15 to 0.26 per position),
 * so the bound is looser: 0.3 per position, against 0.4 to 0.9 for the bugs the README
 * lists; for the MoE model the median position, because the noise can flip a router
 * choice at some positions (see README). The noise moves even clear argmaxes at some
 * positions, so they are not compared. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

START_TEST(kv_q4_0)
{
    const fixture *f = &cases[_i];
    model *m = load(f->model, 0);
    if (m->hp.head_dim % 32) {
        llmfs_error err = {0};
        kv_cache *kv = kv_cache_alloc(m, 64, 1, T_Q4_0, T_Q4_0, &err);
        ck_assert_ptr_null(kv);
        ck_assert_int_eq(err.code, EINVAL);
        printf("%-34s q4_0 cache refused: %s\n", f->name, err.msg);
        model_free(m);
        return;
    }
    kv_cache *kv = test_kv_cache(m, 512, 1, T_Q4_0, T_Q4_0);
    float *out = fixture_logits_buf(f, f->n_tok);
    double *errs = malloc(sizeof(double) * (size_t)f->n_tok);
    /* Ternary weights (TQ1_0/TQ2_0: 86% zeros, the rest ±d) make the tiny model more
     * sensitive to cache noise: one position of their cat case reaches 0.307 while the
     * weights match llama.cpp to 1e-7 with an f16 cache. */
    const double tol = f->wtype[0] == 't' && f->wtype[1] == 'q' ? 0.35 : 0.3;
    /* MoE routing flips, and Gemma's sharp attention (q/k norms, embeddings scaled by
     * sqrt(n_embd)) over 4-bit keys of head size 32 (too small to rotate): a few positions
     * may go far while the typical one stays close */
    bool moe = m->hp.n_expert > 0 || !strncmp(m->hp.arch, "gemma", 5);
    double worst = 0, worst_median = 0;
    for (int fl = 0; fl < 2; fl++) {
        kv_seq_keep(kv, 0, 0);
        fixture_eval(m, kv, f->tok, f->n_tok, 0, 0, f->n_tok, fl, out);
        for (int i = 0; i < f->n_tok; i++) {
            const float *a = out + (size_t)i * f->n_vocab, *r = f->ref + (size_t)i * f->n_vocab;
            errs[i] = logits_rel_rms(a, r, f->n_vocab);
            worst = errs[i] > worst ? errs[i] : worst;
        }
        qsort(errs, (size_t)f->n_tok, sizeof *errs, cmp_double);
        double med = errs[f->n_tok / 2];
        worst_median = med > worst_median ? med : worst_median;
    }
    if (moe)
        ck_assert_msg(worst_median <= tol, "%s: q4_0 cache median relative RMS error %.3g > %.3g",
                      f->name, worst_median, tol);
    else
        ck_assert_msg(worst <= tol, "%s: q4_0 cache relative RMS error %.3g > %.3g", f->name, worst, tol);
    printf("%-34s q4_0 cache (rotation K %d V %d) max rel err %.3e, median %.3e\n", f->name,
           kv->rot_k, kv->rot_v, worst, worst_median);
    free(errs);
    free(out);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* Layers, feed-forward blocks, experts and the output placed on a second device (a second
 * CPU backend stands in for the GPU) give the logits of the all-CPU model: hidden states,
 * expert inputs and the KV cache move between devices correctly. */
START_TEST(split_placement)
{
    static const char *const which[] = {"stories260K/once-upon-a-time", "llama-tiny-q8_0/story",
                                        "qwen2-tiny-q8_0/chat", "qwen3moe-tiny-q8_0/fox",
                                        "qwen3-tiny-q4_k/fox-kvq8"};
    const fixture *f = NULL;
    for (int i = 0; i < n_cases; i++)
        if (!strcmp(cases[i].name, which[_i]))
            f = &cases[i];
    ck_assert_msg(f, "fixture %s missing", which[_i]);
    static const struct {
        int ngl, n_cpu_moe;
        const char *override;
    } setups[] = {
        {1, 0, NULL},                       /* the last layer elsewhere, output on the CPU */
        {-1, 0, NULL},                      /* every layer and the output */
        {-1, 1, NULL},                      /* and layer 0's experts back on the CPU */
        {0, 0, "blk\\.0\\.ffn_=GPU"},        /* only layer 0's feed-forward */
        {-1, 0, "ffn_.*_exps=CPU,output=CPU"}, /* experts and output on the CPU */
    };
    int n;
    int32_t *t = fixture_full_sequence(f, &n);
    float *ref = fixture_logits_buf(f, n), *out = fixture_logits_buf(f, n);
    model *m = load(f->model, 0);
    kv_cache *kv = test_kv_cache(m, 128, 1, f->ctk, f->ctv);
    fixture_eval(m, kv, t, n, 0, 0, n, f->flash, ref);
    kv_cache_free(kv);
    model_free(m);
    for (size_t k = 0; k < sizeof setups / sizeof setups[0]; k++) {
        model_opts o = {.n_threads = 2, .n_threads_batch = 2, .ngl = setups[k].ngl,
                        .n_cpu_moe = setups[k].n_cpu_moe, .override_tensor = setups[k].override};
        llmfs_error err = {0};
        backend_test_second_cpu(2);
        m = model_load(f->model, &o, &err);
        backend_test_second_cpu(0);
        ck_assert_msg(m, "%s: %s", f->name, err.msg);
        ck_assert_ptr_nonnull(m->gpu);
        int on_gpu = 0;
        for (int il = 0; il < m->hp.n_layer; il++)
            on_gpu += m->layers[il].be == m->gpu;
        int want = setups[k].ngl < 0 ? m->hp.n_layer : setups[k].ngl;
        ck_assert_int_eq(on_gpu, want);
        if (setups[k].ngl < 0 && !setups[k].override)
            ck_assert_ptr_eq(m->output->be, m->gpu);
        else
            ck_assert_ptr_eq(m->output->be, m->cpu);
        ck_assert_ptr_eq(m->tok_embd->be, m->cpu);
        if (setups[k].override && setups[k].ngl == 0)
            ck_assert_ptr_eq(m->layers[0].ffn_norm->be, m->gpu);
        if (m->layers[0].gate_exps && (setups[k].n_cpu_moe || (setups[k].override && setups[k].ngl)))
            ck_assert_ptr_eq(m->layers[0].gate_exps->be, m->cpu);
        kv = test_kv_cache(m, 128, 1, f->ctk, f->ctv);
        /* one batch of more rows than the device's logits buffer holds */
        fixture_eval(m, kv, t, n, 0, 0, n, f->flash, out);
        for (int i = 0; i < n; i++) {
            double e = logits_rel_rms(out + (size_t)i * f->n_vocab, ref + (size_t)i * f->n_vocab, f->n_vocab);
            ck_assert_msg(e < SAME_MATH, "%s split %zu: one batch, position %d differs by %.3g", f->name, k, i, e);
        }
        /* the same, greedy ids only */
        {
            static int32_t pos[1024], sq[1024], ids[1024];
            static int8_t lg[1024];
            ck_assert_int_le(n, 1024);
            for (int i = 0; i < n; i++)
                pos[i] = i, sq[i] = 0, lg[i] = 1;
            kv_seq_keep(kv, 0, 0);
            fwd_batch b = {n, t, pos, sq, lg};
            llmfs_error err = {0};
            ck_assert_int_eq(model_forward_ids(m, kv, &b, ids, f->flash, &err), 0);
            for (int i = 0; i < n; i++)
                ck_assert_int_eq(ids[i], sampler_argmax(ref + (size_t)i * f->n_vocab, f->n_vocab));
        }
        kv_seq_keep(kv, 0, 0);
        /* a batch, then decode steps */
        fixture_eval(m, kv, t, n / 2, 0, 0, n / 2, f->flash, out);
        fixture_eval(m, kv, t + n / 2, n - n / 2, 0, n / 2, 1, f->flash, out + (size_t)(n / 2) * f->n_vocab);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            double e = logits_rel_rms(out + (size_t)i * f->n_vocab, ref + (size_t)i * f->n_vocab, f->n_vocab);
            worst = e > worst ? e : worst;
        }
        ck_assert_msg(worst < SAME_MATH, "%s split %zu (%s): logits differ by %.3g", f->name, k, m->note, worst);
        printf("%-34s split %zu: %s, max diff %.1e\n", f->name, k, m->note, worst);
        /* host-resident feed-forward weights streamed to the stand-in for the prompt:
         * never (0), always (2), then as the measured speeds decide (-1) */
        if (m->stream.layers) {
            const int modes[] = {0, 2, -1};
            for (int j = 0; j < 3; j++) {
                m->offload_batch = modes[j];
                const uint64_t before = m->stream.batches;
                const int threshold = modes[j] < 0 ? m->stream.threshold : modes[j];
                kv_seq_keep(kv, 0, 0);
                fixture_eval(m, kv, t, n, 0, 0, n, f->flash, out);
                const bool want = threshold > 0 && n >= threshold;
                ck_assert_msg(m->stream.batches == before + want, "%s split %zu, offload_batch %d (threshold %d): %llu streamed",
                              f->name, k, modes[j], threshold, (unsigned long long)(m->stream.batches - before));
                ck_assert_msg(!m->stream.error[0], "%s: %s", f->name, m->stream.error);
                for (int i = 0; i < n; i++) {
                    double e = logits_rel_rms(out + (size_t)i * f->n_vocab, ref + (size_t)i * f->n_vocab, f->n_vocab);
                    ck_assert_msg(e < SAME_MATH, "%s split %zu, offload_batch %d: position %d differs by %.3g", f->name,
                                  k, modes[j], i, e);
                }
                if (modes[j] == 0) /* timed on the CPU: the choice follows from the speeds */
                    ck_assert_msg(m->stream.cpu_s_per_token > 0, "%s split %zu: the CPU feed-forward of %d tokens was not timed", f->name, k, n);
                else if (modes[j] == 2)
                    ck_assert(m->stream.gpu_bytes_per_s > 0);
            }
            ck_assert_int_ge(m->stream.threshold, 2);
            printf("%-34s split %zu: %d layers stream (%llu bytes), measured threshold %d\n", f->name, k,
                   m->stream.layers, (unsigned long long)m->stream.bytes, m->stream.threshold);
        }
        kv_cache_free(kv);
        model_free(m);
    }
    /* without a GPU and without the stand-in, ngl is a wish: everything stays on the CPU */
    model_opts o = {.n_threads = 2, .ngl = 99};
    llmfs_error err = {0};
    m = model_load(f->model, &o, &err);
    ck_assert_msg(m, "%s", err.msg);
    if (!m->gpu) {
        ck_assert_msg(strstr(m->note, "CPU"), "note: %s", m->note);
        ck_assert_ptr_eq(m->layers[0].be, m->cpu);
    }
    model_free(m);
    free(t);
    free(ref);
    free(out);
}
END_TEST

/* ---------------------------------------------------------------- errors */

static const char *shared_model(const char *file, char *buf, size_t cap)
{
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s", file);
    return test_shared_path(rel, buf, cap);
}

/* (5) positions past the context are refused with -ENOSPC, whole batch untouched */
START_TEST(context_overflow)
{
    char p[1024];
    model *m = load(shared_model("stories260K.gguf", p, sizeof p), 0);
    kv_cache *kv = test_kv_cache(m, 8, 2, T_F16, T_F16);
    int32_t tok[9] = {1, 403, 407, 261, 378, 300, 400, 350, 290}, pos[9], seq[9] = {0};
    for (int i = 0; i < 9; i++)
        pos[i] = i;
    float *out = malloc(sizeof(float) * 9 * 512);
    llmfs_error err = {0};
    fwd_batch b = {9, tok, pos, seq, NULL};
    ck_assert_int_eq(model_forward(m, kv, &b, out, false, &err), -ENOSPC);
    ck_assert_int_eq(err.code, ENOSPC);
    ck_assert_msg(strstr(err.msg, "context"), "message: %s", err.msg);
    ck_assert_int_eq(kv->seq_len[0], 0);
    /* fill exactly, then one more step */
    b.n = 8;
    ck_assert_int_eq(model_forward(m, kv, &b, out, false, &err), 0);
    ck_assert_int_eq(kv->seq_len[0], 8);
    fwd_batch d = {1, tok + 8, pos + 8, seq, NULL};
    err = (llmfs_error){0};
    ck_assert_int_eq(model_forward(m, kv, &d, out, false, &err), -ENOSPC);
    ck_assert_msg(strstr(err.msg, "position 8"), "message: %s", err.msg);
    /* other malformed batches */
    int32_t bad_tok = 512, p0 = 0, s1 = 1, s9 = 9, p3 = 3;
    fwd_batch e1 = {1, &bad_tok, &p0, &s1, NULL};
    ck_assert_int_eq(model_forward(m, kv, &e1, out, false, &err), -EINVAL);
    fwd_batch e2 = {1, tok, &p0, &s9, NULL};
    ck_assert_int_eq(model_forward(m, kv, &e2, out, false, &err), -EINVAL);
    /* no buffer: a prompt chunk without logits is fine, asking for some is not */
    int32_t p01[2] = {0, 1}, s11[2] = {1, 1};
    int8_t want[2] = {0, 1};
    fwd_batch quiet = {2, tok, p01, s11, NULL};
    ck_assert_int_eq(model_forward(m, kv, &quiet, NULL, false, &err), 0);
    ck_assert_int_eq(kv->seq_len[1], 2);
    fwd_batch loud = {2, tok, p01, s11, want};
    ck_assert_int_eq(model_forward(m, kv, &loud, NULL, false, &err), -EINVAL);
    kv_seq_keep(kv, 1, 0);
    fwd_batch e3 = {1, tok, &p3, &s1, NULL}; /* a gap: sequence 1 is empty */
    ck_assert_int_eq(model_forward(m, kv, &e3, out, false, &err), -EINVAL);
    ck_assert_msg(strstr(err.msg, "gap"), "message: %s", err.msg);
    free(out);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* A copy of a model with one tensor changed: dropped, reshaped or retyped. */
typedef struct edit {
    const char *name;   /* tensor to change */
    int mode;           /* 0 drop, 1 shape ne[1] - 1 row, 2 norm as F16, 3 shape transposed,
                           4 name is a key, set to the u32 val */
    uint32_t val;
} edit;

typedef struct src_tensor {
    const void *data;
} src_tensor;

static int fill_copy(void *ctx, const gguf_tensor *t, gguf_emit_fn emit, void *sink)
{
    const src_tensor *s = ctx;
    return emit(sink, s->data, t->size);
}

static int fill_zero(void *ctx, const gguf_tensor *t, gguf_emit_fn emit, void *sink)
{
    (void)ctx;
    static const char z[4096];
    for (size_t done = 0; done < t->size;) {
        size_t n = t->size - done < sizeof z ? t->size - done : sizeof z;
        int rc = emit(sink, z, n);
        if (rc)
            return rc;
        done += n;
    }
    return 0;
}

/* A key replaced by a u32 value (key NULL: none), for write_edited_kv. */
static const char *edit_key;
static uint32_t edit_value;

/* A bool array key added (key NULL: none), for write_edited. */
static const char *add_bools_key;
static const bool *add_bools;
static int add_bools_n;

static void write_edited(const char *src, const char *dst, const edit *e)
{
    llmfs_error err = {0};
    gguf_file *f = gguf_open(src, NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    gguf_writer *w = gguf_writer_new();
    for (int i = 0; i < gguf_n_kv(f); i++) {
        const char *k = gguf_kv_key(f, i);
        if (edit_key && !strcmp(k, edit_key))
            gguf_w_u32(w, k, edit_value);
        else if (e->mode == 4 && !strcmp(k, e->name))
            gguf_w_u32(w, e->name, e->val);
        else if (strcmp(k, "general.alignment"))
            gguf_w_copy_kv(w, f, i);
    }
    if (add_bools_key)
        gguf_w_arr(w, add_bools_key, GGUF_T_BOOL, add_bools, (uint64_t)add_bools_n);
    int nt = gguf_n_tensors(f);
    src_tensor *st = calloc((size_t)nt, sizeof *st);
    for (int i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        st[i].data = t->data;
        int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        int type = t->type;
        gguf_fill_fn fill = fill_copy;
        if (!strcmp(t->name, e->name)) {
            if (e->mode == 0)
                continue;
            fill = fill_zero;
            if (e->mode == 1)
                ne[1] -= 1;

            else if (e->mode == 2)
                type = T_F16;
            else {
                int64_t x = ne[0];
                ne[0] = ne[1];
                ne[1] = x;
            }
        }
        gguf_w_tensor(w, t->name, type, t->n_dims, ne, fill, &st[i]);
    }
    ck_assert_msg(gguf_writer_write(w, dst, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    free(st);
    gguf_close(f);
}

/* A Gemma 4 file with one thing wrong: 0 the layer-kind pattern one entry short, 1 the
 * sliding-window head size disagreeing with the tensors, 2 rope_freqs missing, 3 the
 * shared-KV layers after a layer of the wrong kind; 4 nothing (loads). */
static void write_gemma_variant(const char *src, const char *dst, int variant)
{
    llmfs_error err = {0};
    gguf_file *f = gguf_open(src, NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    gguf_writer *w = gguf_writer_new();
    for (int i = 0; i < gguf_n_kv(f); i++) {
        const char *k = gguf_kv_key(f, i);
        if (!strcmp(k, "general.alignment"))
            continue;
        if (variant == 0 && !strcmp(k, "gemma4.attention.sliding_window_pattern")) {
            const bool pat[5] = {true, true, true, false, true};
            gguf_w_arr(w, k, GGUF_T_BOOL, pat, 5);
        } else if (variant == 1 && !strcmp(k, "gemma4.attention.key_length_swa")) {
            gguf_w_u32(w, k, 16);
        } else if (variant == 1 && !strcmp(k, "gemma4.attention.value_length_swa")) {
            gguf_w_u32(w, k, 16);
        } else if (variant == 1 && !strcmp(k, "gemma4.rope.dimension_count_swa")) {
            gguf_w_u32(w, k, 16);
        } else if (variant == 3 && !strcmp(k, "gemma4.attention.shared_kv_layers")) {
            gguf_w_u32(w, k, 1); /* layer 5 would read layer 3's SWA cache, but 4 is SWA */
        } else {
            gguf_w_copy_kv(w, f, i);
        }
    }
    int nt = gguf_n_tensors(f);
    src_tensor *st = calloc((size_t)nt, sizeof *st);
    for (int i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        st[i].data = t->data;
        if (variant == 2 && !strcmp(t->name, "rope_freqs.weight"))
            continue;
        int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        gguf_w_tensor(w, t->name, t->type, t->n_dims, ne, fill_copy, &st[i]);
    }
    ck_assert_msg(gguf_writer_write(w, dst, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    free(st);
    gguf_close(f);
}

/* The KV cache of Gemma 4 E (per-layer head sizes, shared KV): each layer's bytes are
 * what its metadata says, n_kv_heads x head size x 2 bytes (f16) x (K + V) x cells, and
 * the shared layers have none. */
START_TEST(kv_per_layer_gemma)
{
    char src[1024];
    model *m = load(shared_model("gemma4e-tiny-q8_0.gguf", src, sizeof src), 0);
    kv_cache *kv = test_kv_cache(m, 64, 2, T_F16, T_F16);
    /* layers S S S F S F; 4 and 5 share the caches of 2 (S, 1 x 32) and 3 (F, 1 x 64) */
    const size_t cells = 64 * 2, want[6] = {32 * 4 * cells, 32 * 4 * cells, 32 * 4 * cells, 64 * 4 * cells, 0, 0};
    size_t total = 0;
    for (int il = 0; il < 6; il++) {
        ck_assert_msg(kv_layer_bytes(kv, il) == want[il], "layer %d: %zu bytes, want %zu", il,
                      kv_layer_bytes(kv, il), want[il]);
        total += want[il];
    }
    ck_assert_uint_eq(kv_cache_bytes(kv), total);
    ck_assert_int_eq(m->layers[4].kv_from, 2);
    ck_assert_int_eq(m->layers[5].kv_from, 3);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* The final hidden states (model_forward_hidden, what MTP drafters read): the output
 * head applied to them gives the logits of the same pass; every row is there whichever
 * rows ask for logits (the last layer is not pruned), and a pass without logits gives
 * them too. */
START_TEST(hidden_states)
{
    static const char *const files[] = {"llama-tiny-f16.gguf", "qwen35moe-tiny-q8_0.gguf"};
    char src[1024];
    model *m = load(shared_model(files[_i], src, sizeof src), 0);
    const int n = 12, E = m->hp.n_embd, V = m->hp.n_vocab;
    int32_t tok[12], pos[12], seq[12];
    int8_t all[12], last[12];
    for (int i = 0; i < n; i++)
        tok[i] = (i * 37 + 11) % V, pos[i] = i, seq[i] = 0, all[i] = 1, last[i] = i == n - 1;
    float *lg = malloc(sizeof(float) * (size_t)n * V), *lg2 = malloc(sizeof(float) * (size_t)n * V);
    float *h = malloc(sizeof(float) * (size_t)n * E), *h2 = malloc(sizeof(float) * (size_t)n * E);
    kv_cache *kv = test_kv_cache(m, 64, 1, T_F16, T_F16);
    llmfs_error err = {0};
    const int8_t *flags[3] = {all, last, NULL};
    for (int k = 0; k < 3; k++) {
        kv_seq_keep(kv, 0, 0);
        fwd_batch b = {n, tok, pos, seq, flags[k]};
        float *hk = k ? h2 : h;
        memset(hk, 0, sizeof(float) * (size_t)n * E);
        ck_assert_msg(model_forward_hidden(m, kv, &b, k == 0 ? lg : k == 1 ? lg2 : NULL, hk, false, &err) == 0, "%s",
                      err.msg);
        /* the last row's logits alone are the all-rows pass's last row */
        if (k == 1)
            ck_assert_msg(logits_rel_rms(lg2, lg + (size_t)(n - 1) * V, V) < 1e-6, "%s: last-row logits", files[_i]);
        if (k > 0)
            for (size_t i = 0; i < (size_t)n * E; i++)
                ck_assert_msg(fabsf(h2[i] - h[i]) <= 1e-5f * (1 + fabsf(h[i])), "%s: flags %d: hidden %zu: %g vs %g",
                              files[_i], k, i, h2[i], h[i]);
    }
    /* the output head over the hidden rows: the logits of the all-rows pass */
    kv_seq_keep(kv, 0, 0);
    fwd_batch b = {n, tok, pos, seq, all};
    ck_assert_int_eq(model_forward(m, kv, &b, lg, false, &err), 0);
    ck_assert_ptr_eq(m->output->be, m->cpu);
    m->cpu->ops->matmul(m->cpu, lg2, m->output, h, n);
    for (int i = 0; i < n; i++) {
        const double d = logits_rel_rms(lg2 + (size_t)i * V, lg + (size_t)i * V, V);
        ck_assert_msg(d < 1e-5, "%s: row %d: output(hidden) off the logits by %.3g", files[_i], i, d);
    }
    /* and they are not something else: row 0's hidden against row 1's logits */
    ck_assert(logits_rel_rms(lg2, lg + V, V) > 0.1);
    free(lg), free(lg2), free(h), free(h2);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* (6) Sliding-window rings (families with windows): a cache whose window layers keep
 * window + 4 cells, so micro-batches are 4 tokens and the rings wrap many times over a
 * case, gives the logits of a full cache evaluated in the same micro-batches, on both
 * attention paths; the fixture's tolerance holds; it costs the ring's bytes; a sequence
 * can be cut back by up to 4 cells (and evaluated again to the same logits), not more. */
#define RING_SLACK 4
START_TEST(sliding_window_ring)
{
    const fixture *f = &cases[_i / 2];
    bool flash = _i % 2;
    if (strcmp(f->arch, "gemma3") && strcmp(f->arch, "gemma4") && strcmp(f->arch, "gpt-oss"))
        return; /* no sliding-window layers */
    model *m = load(f->model, 0);
    int n;
    int32_t *t = fixture_full_sequence(f, &n);
    llmfs_error err = {0};
    kv_cache *full = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
    kv_cache *ring = kv_cache_alloc_swa(m, 512, 1, f->ctk, f->ctv, RING_SLACK, &err);
    ck_assert_msg(ring, "%s", err.msg);
    size_t want_bytes = 0;
    int rings = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const model_layer *L = &m->layers[il];
        int cells = L->n_swa > 0 && L->n_swa + RING_SLACK < 512 ? L->n_swa + RING_SLACK : 512;
        if (ring->layer[il].k) {
            ck_assert_int_eq(ring->layer[il].n_cells, cells);
            rings += cells < 512 && cells < n; /* it wraps in this case */
        }
        want_bytes += ring->layer[il].k ? (ring->layer[il].k_row + ring->layer[il].v_row) * (size_t)cells : 0;
    }
    ck_assert_uint_eq(kv_cache_bytes(ring), want_bytes);
    ck_assert_uint_lt(kv_cache_bytes(ring), kv_cache_bytes(full));
    float *a = fixture_logits_buf(f, n), *b = fixture_logits_buf(f, n);
    fixture_eval(m, full, t, n, 0, 0, RING_SLACK, flash, a);
    fixture_eval(m, ring, t, n, 0, 0, n, flash, b); /* the forward pass splits it by the slack */
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double e = logits_rel_rms(b + (size_t)i * f->n_vocab, a + (size_t)i * f->n_vocab, f->n_vocab);
        worst = e > worst ? e : worst;
        ck_assert_msg(e < 1e-5, "%s: position %d with rings differs by %.3g", f->name, i, e);
    }
    fixture_check_prompt(f, b, f->tol, flash ? "ring flash" : "ring plain");
    /* cut back within the slack and evaluate again: the same logits */
    ck_assert_int_eq(kv_seq_can_keep(ring, 0, n - RING_SLACK), n - RING_SLACK);
    ck_assert_int_eq(kv_seq_can_keep(ring, 0, n - RING_SLACK - 1), rings ? 0 : n - RING_SLACK - 1);
    ck_assert_int_eq(kv_seq_keep(ring, 0, n - 3), n - 3);
    float *c = fixture_logits_buf(f, 3);
    fixture_eval(m, ring, t + n - 3, 3, 0, n - 3, 3, flash, c);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(logits_rel_rms(c + (size_t)i * f->n_vocab, b + (size_t)(n - 3 + i) * f->n_vocab, f->n_vocab) < 1e-5,
                      "%s: position %d again after a cut differs", f->name, n - 3 + i);
    if (rings) { /* further back than the slack: refused, the cache unchanged */
        int32_t p0 = n - RING_SLACK - 2, s0 = 0, tk = t[p0];
        int8_t lg = 1;
        fwd_batch bad = {1, &tk, &p0, &s0, &lg};
        ck_assert_int_eq(model_forward(m, ring, &bad, c, flash, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.msg, "sliding window"));
        ck_assert_int_eq(kv_seq_keep(ring, 0, p0), 0);
    }
    printf("%-34s %-5s rings on %d layers of %d: %zu bytes (full %zu), max rel diff %.2e\n", f->name,
           flash ? "flash" : "plain", rings, m->hp.n_layer, kv_cache_bytes(ring), kv_cache_bytes(full), worst);
    free(a);
    free(b);
    free(c);
    free(t);
    kv_cache_free(full);
    kv_cache_free(ring);
    model_free(m);
}
END_TEST

/* mkmodel's Gemma shapes, scaled down, load and run: their keys and tensors are what
 * the family reads (gemma3 as q4_0 like the QAT releases, gemma4 dense and MoE as
 * llama.cpp's Q4_K_M mix) */
START_TEST(mkmodel_gemma_shapes)
{
    static const char *const shapes[] = {"gemma3-12b", "gemma4-31b", "gemma4-26b-a4b"};
    static const char *const types[] = {"q4_0", "q4_k_m", "q4_k_m"};
    mkmodel_shape sh;
    ck_assert(mkmodel_shape_find(shapes[_i], &sh));
    sh.n_embd = 256;
    sh.n_layer = 6;
    sh.n_head = 4;
    sh.n_head_kv = sh.head_dim_swa ? 1 : 2;
    sh.head_dim = sh.head_dim_swa ? 128 : 64;
    if (sh.head_dim_swa) {
        sh.head_dim_swa = 64;
        sh.n_head_kv_swa = 2;
    }
    sh.n_ff = 512;
    if (sh.n_expert) {
        sh.n_expert = 8;
        sh.n_expert_used = 2;
        sh.n_ff_exp = 256;
    }
    sh.n_vocab = 512;
    sh.n_swa = 4;
    char dst[64];
    snprintf(dst, sizeof dst, "/tmp/llmfs-test-mkgemma-%d.gguf", (int)getpid());
    llmfs_error err = {0};
    ck_assert_msg(mkmodel_shape_check(&sh, &err) == 0, "%s", err.msg);
    mkmodel_opts mo = {.seed = 3, .n_threads = 2, .quiet = true};
    ck_assert_msg(mkmodel_write(&sh, mkmodel_ftype_from_name(types[_i]), &mo, dst, &err) == 0, "%s", err.msg);
    model *m = load(dst, 0);
    unlink(dst);
    ck_assert_str_eq(m->hp.arch, sh.arch);
    ck_assert_int_eq(m->layers[0].n_swa, 4);
    ck_assert_int_eq(m->layers[5].n_swa, 0);
    ck_assert_int_eq(m->layers[0].head_dim, sh.head_dim_swa ? 64 : 64);
    ck_assert_int_eq(m->layers[5].head_dim, sh.head_dim);
    kv_cache *kv = test_kv_cache(m, 32, 1, T_F16, T_F16);
    int32_t tok[12];
    for (int i = 0; i < 12; i++)
        tok[i] = 3 + 37 * i % 500;
    float *out = malloc(sizeof(float) * 12 * (size_t)m->hp.n_vocab);
    fixture_eval(m, kv, tok, 12, 0, 0, 12, false, out);
    for (size_t i = 0; i < 12 * (size_t)m->hp.n_vocab; i++)
        ck_assert_msg(isfinite(out[i]) && (m->hp.logit_softcap == 0 || fabsf(out[i]) <= m->hp.logit_softcap),
                      "%s: logit %zu is %g", shapes[_i], i, out[i]);
    printf("mkmodel %s (%s): loads and runs, %s\n", shapes[_i], types[_i], model_file_type_name(m));
    free(out);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* Gemma 4 files whose metadata disagrees with itself or the tensors: refused at load
 * with a one-line reason naming what is wrong */
START_TEST(malformed_gemma)
{
    static const char *const why[] = {"sliding_window_pattern has 5 entries for 6 layers",
                                      "blk.0.attn_q.weight", "rope_freqs", "shared-KV"};
    char src[1024], dst[64];
    shared_model("gemma4-tiny-q8_0.gguf", src, sizeof src);
    snprintf(dst, sizeof dst, "/tmp/llmfs-test-gemma-%d.gguf", (int)getpid());
    for (int v = 0; v < 5; v++) {
        write_gemma_variant(src, dst, v);
        llmfs_error err = {0};
        model *m = model_load(dst, NULL, &err);
        unlink(dst);
        if (v == 4) {
            ck_assert_msg(m, "the unedited copy: %s", err.msg);
            model_free(m);
            break;
        }
        ck_assert_msg(!m, "gemma variant %d accepted", v);
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, why[v]) && !strchr(err.msg, '\n'), "variant %d: %s", v, err.msg);
        printf("malformed gemma (%d): %s\n", v, err.msg);
    }
}
END_TEST

/* (6) malformed models are refused with -EINVAL naming the tensor */
START_TEST(malformed_models)
{
    static const edit edits[] = {
        {"blk.1.attn_k.weight", 0, 0},      {"output_norm.weight", 0, 0},  {"token_embd.weight", 0, 0},
        {"blk.0.ffn_down.weight", 1, 0},    {"blk.4.attn_q.weight", 1, 0}, {"blk.2.ffn_norm.weight", 2, 0},
        {"blk.0.ffn_up.weight", 3, 0},
    };
    char src[1024], dst[64];
    shared_model("stories260K.gguf", src, sizeof src);
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        snprintf(dst, sizeof dst, "/tmp/llmfs-test-model-%d.gguf", (int)getpid());
        write_edited(src, dst, &edits[i]);
        llmfs_error err = {0};
        model *m = model_load(dst, NULL, &err);
        unlink(dst);
        ck_assert_msg(!m, "edit %zu of %s accepted", i, edits[i].name);
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, edits[i].name), "message for %s: %s", edits[i].name, err.msg);
        printf("malformed (%s, %d): %s\n", edits[i].name, edits[i].mode, err.msg);
    }
    /* the untouched copy loads: the refusals above come from the edits */
    snprintf(dst, sizeof dst, "/tmp/llmfs-test-model-%d.gguf", (int)getpid());
    edit none = {"no such tensor", 0, 0};
    write_edited(src, dst, &none);
    llmfs_error err = {0};
    model *m = model_load(dst, NULL, &err);
    unlink(dst);
    ck_assert_msg(m, "%s", err.msg);
    model_free(m);
    ck_assert_ptr_null(model_load("/nonexistent/model.gguf", NULL, &err));
    ck_assert_int_eq(err.code, ENOENT);
    model_opts bad = {.override_tensor = "ffn_(=CPU"};
    ck_assert_ptr_null(model_load(src, &bad, &err));
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_msg(strstr(err.msg, "override_tensor"), "message: %s", err.msg);
}
END_TEST

/* Hybrid models: a missing conv or decay tensor, an inner size that is not the state
 * size times the V heads, V heads not a multiple of K heads: refused, one line naming it. */
START_TEST(malformed_hybrid)
{
    static const edit edits[] = {
        {"blk.0.ssm_conv1d.weight", 0, 0}, {"blk.0.ssm_a", 0, 0}, {"blk.2.ssm_dt.bias", 0, 0},
        {"blk.2.ssm_conv1d.weight", 3, 0}, {"blk.1.attn_q.weight", 1, 0},
    };
    static const struct {
        const char *key, *says;
        uint32_t value;
    } keys[] = {
        {"qwen35moe.ssm.inner_size", "inner_size 192 is not state size", 192},
        {"qwen35moe.ssm.time_step_rank", "3 V heads are not a multiple of 2 K heads", 3},
    };
    char src[1024], dst[64];
    shared_model("qwen35moe-tiny-q8_0.gguf", src, sizeof src);
    snprintf(dst, sizeof dst, "/tmp/llmfs-test-hybrid-%d.gguf", (int)getpid());
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        write_edited(src, dst, &edits[i]);
        llmfs_error err = {0};
        model *m = model_load(dst, NULL, &err);
        unlink(dst);
        ck_assert_msg(!m, "edit %zu of %s accepted", i, edits[i].name);
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, edits[i].name) && !strchr(err.msg, '\n'), "message for %s: %s",
                      edits[i].name, err.msg);
        printf("malformed (%s, %d): %s\n", edits[i].name, edits[i].mode, err.msg);
    }
    edit none = {"no such tensor", 0, 0};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        edit_key = keys[i].key;
        edit_value = keys[i].value;
        write_edited(src, dst, &none);
        edit_key = NULL;
        llmfs_error err = {0};
        model *m = model_load(dst, NULL, &err);
        unlink(dst);
        ck_assert_msg(!m, "%s = %u accepted", keys[i].key, keys[i].value);
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, keys[i].says), "message for %s: %s", keys[i].key, err.msg);
        printf("malformed (%s = %u): %s\n", keys[i].key, keys[i].value, err.msg);
    }
    /* the per-layer key attention.recurrent_layers decides over full_attention_interval:
     * one that agrees with the tensors loads; one entry short, or one that makes layer 1
     * (attention tensors) recurrent, is refused */
    static const bool same[4] = {true, false, true, false}, shorter[3] = {true, false, true},
                      wrong[4] = {true, true, true, false};
    static const struct {
        const bool *v;
        int n;
        const char *says;
    } arrs[] = {{same, 4, NULL}, {shorter, 3, "no entry for layer 3"}, {wrong, 4, "blk.1."}};
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++) {
        add_bools_key = "qwen35moe.attention.recurrent_layers";
        add_bools = arrs[i].v;
        add_bools_n = arrs[i].n;
        write_edited(src, dst, &none);
        add_bools_key = NULL;
        llmfs_error err = {0};
        model *m = model_load(dst, NULL, &err);
        unlink(dst);
        if (!arrs[i].says) {
            ck_assert_msg(m, "%s", err.msg);
            ck_assert_int_eq(m->hp.n_recurrent, 2);
            model_free(m);
            continue;
        }
        ck_assert_msg(!m, "recurrent_layers %zu accepted", i);
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, arrs[i].says) && !strchr(err.msg, '\n'), "recurrent_layers %zu: %s", i, err.msg);
        printf("malformed (recurrent_layers %zu): %s\n", i, err.msg);
    }
    /* the untouched copy loads, with its MTP block bound and the trunk one block shorter */
    write_edited(src, dst, &none);
    llmfs_error err = {0};
    model *m = model_load(dst, NULL, &err);
    unlink(dst);
    ck_assert_msg(m, "%s", err.msg);
    ck_assert_int_eq(m->hp.n_layer, 4);
    ck_assert_int_eq(m->hp.n_layer_mtp, 1);
    ck_assert_int_eq(m->hp.n_recurrent, 2);
    ck_assert(m->layers[0].recurrent && !m->layers[1].recurrent && m->layers[2].recurrent);
    kv_cache *kv = kv_cache_alloc(m, 64, 2, T_F16, T_F16, &err);
    ck_assert_ptr_nonnull(kv);
    /* 2 DeltaNet layers x (3 x 512 conv + 4 x 64 x 64 delta) floats: llama.cpp's 143,360 B */
    ck_assert_uint_eq(kv_state_bytes(kv), 143360);
    ck_assert_ptr_null(kv->layer[0].k);
    ck_assert_ptr_nonnull(kv->layer[1].k);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* gpt-oss files missing what the architecture needs are refused at load, with one line
 * naming what is wrong */
START_TEST(malformed_gptoss)
{
    static const struct {
        edit e;
        const char *says;
    } cases[] = {
        {{"blk.2.attn_sinks.weight", 0, 0}, "blk.2.attn_sinks.weight"},
        {{"blk.1.ffn_down_exps.bias", 0, 0}, "blk.1.ffn_down_exps.bias"},
        {{"gpt-oss.attention.sliding_window", 4, 0}, "sliding_window"},
        {{"gpt-oss.expert_count", 4, 4}, "ffn_gate_inp.weight"},
    };
    char src[1024], dst[64];
    shared_model("gptoss-tiny-mxfp4.gguf", src, sizeof src);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(dst, sizeof dst, "/tmp/llmfs-test-gptoss-%d.gguf", (int)getpid());
        write_edited(src, dst, &cases[i].e);
        llmfs_error err = {0};
        model *m = model_load(dst, NULL, &err);
        unlink(dst);
        ck_assert_msg(!m, "edit of %s accepted", cases[i].e.name);
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, cases[i].says) && !strchr(err.msg, '\n'), "message for %s: %s",
                      cases[i].e.name, err.msg);
        printf("malformed gpt-oss (%s): %s\n", cases[i].e.name, err.msg);
    }
    snprintf(dst, sizeof dst, "/tmp/llmfs-test-gptoss-%d.gguf", (int)getpid());
    edit none = {"no such tensor", 0, 0};
    write_edited(src, dst, &none);
    llmfs_error err = {0};
    model *m = model_load(dst, NULL, &err);
    ck_assert_msg(m, "%s", err.msg);
    model_free(m);

    /* MXFP4 rows of 48 (no writer makes one): the header's ne[0] patched in place */
    size_t len;
    char *bytes = test_read_file(dst, &len);
    ck_assert(bytes);
    const char *name = "blk.0.ffn_gate_exps.weight";
    char *at = memmem(bytes, len, name, strlen(name));
    ck_assert(at);
    int64_t ne0;
    memcpy(&ne0, at + strlen(name) + 4, sizeof ne0); /* after the name: u32 n_dims, i64 ne[] */
    ck_assert_int_eq(ne0, 64);
    ne0 = 48;
    memcpy(at + strlen(name) + 4, &ne0, sizeof ne0);
    FILE *fp = fopen(dst, "wb");
    ck_assert(fp && fwrite(bytes, 1, len, fp) == len);
    fclose(fp);
    free(bytes);
    m = model_load(dst, NULL, &err);
    ck_assert_msg(!m && err.code == EINVAL && strstr(err.msg, name) && !strchr(err.msg, '\n'), "%s", err.msg);
    printf("malformed gpt-oss (MXFP4 rows of 48): %s\n", err.msg);

    write_edited(src, dst, &none);
    m = model_load(dst, NULL, &err);
    unlink(dst);
    ck_assert_msg(m, "%s", err.msg);
    ck_assert_int_eq(m->hp.n_swa, 8);
    ck_assert(model_layer_swa(&m->hp, 0) && !model_layer_swa(&m->hp, 1) && model_layer_swa(&m->hp, 2));
    ck_assert(m->hp.rope.yarn_ext_factor == 1 && m->hp.rope.yarn_orig_ctx == 4096);
    model_free(m);
}
END_TEST

/* ---------------------------------------------------------------- metadata, memory */

START_TEST(metadata)
{
    static const struct {
        const char *file, *ftype, *arch;
        bool tied;
    } want[] = {
        {"stories260K.gguf", NULL, "llama", false},     {"llama-tiny-q8_0.gguf", "Q8_0", "llama", false},
        {"llama-tiny-f16.gguf", "F16", "llama", false}, {"qwen3-tiny-q4_k.gguf", "Q4_K_M", "qwen3", true},
        {"qwen2-tiny-q8_0.gguf", "Q8_0", "qwen2", true},
        {"qwen3moe-tiny-q8_0.gguf", "Q8_0", "qwen3moe", true},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char p[1024];
        model *m = load(shared_model(want[i].file, p, sizeof p), 0);
        ck_assert_str_eq(m->hp.arch, want[i].arch);
        ck_assert_int_eq(m->hp.tied_output, want[i].tied);
        if (want[i].ftype)
            ck_assert_str_eq(model_file_type_name(m), want[i].ftype);
        uint64_t n = 0;
        for (int t = 0; t < gguf_n_tensors(m->file); t++) {
            const gguf_tensor *g = gguf_tensor_at(m->file, t);
            n += (uint64_t)(g->ne[0] * g->ne[1] * g->ne[2] * g->ne[3]);
        }
        ck_assert_uint_eq(m->n_params, n);
        ck_assert_uint_gt(m->n_params, 200000);
        printf("%-26s %-8s %-9s params %llu, n_embd %d, layers %d, heads %d/%d, head %d\n",
               want[i].file, m->hp.arch, model_file_type_name(m), (unsigned long long)m->n_params,
               m->hp.n_embd, m->hp.n_layer, m->hp.n_head, m->hp.n_head_kv, m->hp.head_dim);
        model_free(m);
    }
    char p[1024];
    model *m = load(shared_model("qwen3-tiny-q4_k.gguf", p, sizeof p), 0);
    ck_assert_int_eq(m->hp.head_dim, 128);
    ck_assert_int_eq(m->hp.n_embd, 256);
    ck_assert(m->hp.rope.neox);
    ck_assert(m->hp.qk_norm);
    model_free(m);
    m = load(shared_model("stories260K.gguf", p, sizeof p), 0);
    ck_assert(!m->hp.rope.neox);
    ck_assert_int_eq(m->hp.n_head_kv, 4);
    /* weights are read where they lie in the file */
    const gguf_tensor *g = gguf_find_tensor(m->file, "blk.0.attn_q.weight");
    ck_assert_ptr_eq(m->layers[0].wq->data, g->data);
    model_free(m);
}
END_TEST

static long vm_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = atol(line + 6);
    fclose(f);
    return kb;
}

/* A llama model of ~150 MB of Q8_0 zeros with stories260K's vocabulary. */
static void write_big_model(const char *dst)
{
    char src[1024];
    llmfs_error err = {0};
    gguf_file *f = gguf_open(shared_model("stories260K.gguf", src, sizeof src), NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    gguf_writer *w = gguf_writer_new();
    for (int i = 0; i < gguf_n_kv(f); i++)
        if (!strncmp(gguf_kv_key(f, i), "tokenizer.", 10))
            gguf_w_copy_kv(w, f, i);
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_u32(w, "general.file_type", 7);
    const int E = 2048, F = 8192, NL = 2, V = 512;
    gguf_w_u32(w, "llama.embedding_length", E);
    gguf_w_u32(w, "llama.block_count", NL);
    gguf_w_u32(w, "llama.attention.head_count", 16);
    gguf_w_u32(w, "llama.attention.head_count_kv", 8);
    gguf_w_u32(w, "llama.feed_forward_length", F);
    gguf_w_u32(w, "llama.context_length", 2048);
    gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    int64_t ne[4];
    ne[0] = E, ne[1] = V;
    gguf_w_tensor(w, "token_embd.weight", T_Q8_0, 2, ne, fill_zero, NULL);
    gguf_w_tensor(w, "output.weight", T_Q8_0, 2, ne, fill_zero, NULL);
    ne[0] = E;
    gguf_w_tensor(w, "output_norm.weight", T_F32, 1, ne, fill_zero, NULL);
    for (int il = 0; il < NL; il++) {
        char n[64];
        struct {
            const char *s;
            int64_t a, b;
        } ts[] = {{"attn_q", E, E}, {"attn_k", E, E / 2}, {"attn_v", E, E / 2}, {"attn_output", E, E},
                  {"ffn_gate", E, F}, {"ffn_up", E, F}, {"ffn_down", F, E}};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            snprintf(n, sizeof n, "blk.%d.%s.weight", il, ts[i].s);
            ne[0] = ts[i].a, ne[1] = ts[i].b;
            gguf_w_tensor(w, n, T_Q8_0, 2, ne, fill_zero, NULL);
        }
        ne[0] = E;
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", il);
        gguf_w_tensor(w, n, T_F32, 1, ne, fill_zero, NULL);
        snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", il);
        gguf_w_tensor(w, n, T_F32, 1, ne, fill_zero, NULL);
    }
    ck_assert_msg(gguf_writer_write(w, dst, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    gguf_close(f);
}

/* Loading maps the weights without reading them: resident memory grows by a small
 * fraction of the file (the scratch for a 512-token micro-batch included). */
START_TEST(rss_after_load)
{
    char dst[64];
    snprintf(dst, sizeof dst, "/tmp/llmfs-test-big-%d.gguf", (int)getpid());
    write_big_model(dst);
    FILE *fp = fopen(dst, "rb");
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fclose(fp);
    long before = vm_rss_kb();
    llmfs_error err = {0};
    model_opts o = {.n_threads = 2, .n_ubatch = 32};
    model *m = model_load(dst, &o, &err);
    ck_assert_msg(m, "%s", err.msg);
    long after = vm_rss_kb();
    long grew = (after - before) * 1024;
    printf("model of %ld bytes: RSS grew by %ld bytes (%.2f%%)\n", size, grew, 100.0 * grew / size);
    ck_assert_msg(grew < size / 20, "RSS grew by %ld bytes for a %ld byte model", grew, size);
    /* and it runs: zero weights give zero logits */
    kv_cache *kv = test_kv_cache(m, 16, 1, T_F16, T_F16);
    int32_t tok[2] = {1, 5}, pos[2] = {0, 1}, seq[2] = {0, 0};
    float *out = malloc(sizeof(float) * 512);
    fwd_batch b = {2, tok, pos, seq, NULL};
    ck_assert_int_eq(model_forward(m, kv, &b, out, false, &err), 0);
    for (int i = 0; i < 512; i++)
        ck_assert_float_eq(out[i], 0.0f);
    free(out);
    kv_cache_free(kv);
    model_free(m);
    unlink(dst);
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *make_suite(void)
{
    Suite *s = suite_create("model");
    TCase *t = tcase_create("fixtures");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, teacher_forced, 0, 2 * n_cases);
    tcase_add_loop_test(t, greedy_one_pass, 0, n_cases);
    tcase_add_loop_test(t, decode_and_ubatch, 0, n_cases);
    tcase_add_loop_test(t, two_sequences, 0, n_cases);
    tcase_add_loop_test(t, kv_q4_0, 0, n_cases);
    tcase_add_loop_test(t, split_placement, 0, 5);
    tcase_add_loop_test(t, sliding_window_ring, 0, 2 * n_cases);
    suite_add_tcase(s, t);
    TCase *e = tcase_create("errors");
    tcase_set_timeout(e, 600);
    tcase_add_test(e, context_overflow);
    tcase_add_test(e, malformed_models);
    tcase_add_test(e, malformed_hybrid);
    tcase_add_test(e, malformed_gemma);
    tcase_add_test(e, kv_per_layer_gemma);
    tcase_add_loop_test(e, hidden_states, 0, 2);
    tcase_add_loop_test(e, mkmodel_gemma_shapes, 0, 3);
    tcase_add_test(e, malformed_gptoss);
    tcase_add_test(e, metadata);
    tcase_add_test(e, rss_after_load);
    suite_add_tcase(s, e);
    return s;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("test_model");
    setvbuf(stdout, NULL, _IOLBF, 0);
    load_fixtures();
    if (n_cases == 0) {
        fprintf(stderr, "no fixtures found\n");
        return 1;
    }
    return test_run_suite_each_isa(make_suite);
}
