/* test_quant_models.c — dequantizing the tensors of the test models, which catches
 * block-layout mistakes that self-consistency tests cannot: the llama-tiny files hold
 * the same random-normal weights at twelve precisions, so each must decode to the F16
 * file's values within its quantization error, with the standard deviations the
 * generator used (1/sqrt(fan_in); 16/sqrt(fan_in) for attn_output and ffn_down). */
#include "backend.h"
#include "gguf.h"
#include "quant.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* All rows of a 2D tensor as floats. */
static float *dequant_all(const gguf_tensor *t)
{
    int64_t rows = t->ne[1];
    float *x = malloc(sizeof *x * (size_t)(rows * t->ne[0]));
    size_t rb = type_row_bytes(t->type, t->ne[0]);
    for (int64_t r = 0; r < rows; r++)
        dequantize_row(t->type, (const uint8_t *)t->data + (size_t)r * rb, x + r * t->ne[0], t->ne[0]);
    return x;
}

/* The generator's standard deviation for a weight, or 0 when it set row norms instead. */
static double expected_std(const char *name, int64_t fan_in)
{
    if (strstr(name, "attn_output") || strstr(name, "ffn_down"))
        return 16 / sqrt((double)fan_in);
    if (strcmp(name, "output.weight") == 0)
        return 0;
    return 1 / sqrt((double)fan_in);
}

static void check_stats(const char *model, const gguf_tensor *t, const float *x, double std_want,
                        bool tied_embd)
{
    int64_t n = t->ne[0] * t->ne[1];
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    double mean = s / n, sd = sqrt(s2 / n - mean * mean);
    if (std_want > 0 && !tied_embd) {
        ck_assert_msg(fabs(sd / std_want - 1) < 0.2, "%s %s: std %g, expected %g", model, t->name, sd,
                      std_want);
        ck_assert_msg(fabs(mean) < 0.05 * std_want, "%s %s: mean %g (std %g)", model, t->name, mean,
                      std_want);
    } else {
        /* rows scaled to one common length: every row's norm near the average */
        double avg = 0, *norm = malloc(sizeof *norm * (size_t)t->ne[1]);
        for (int64_t r = 0; r < t->ne[1]; r++) {
            double q = 0;
            for (int64_t i = 0; i < t->ne[0]; i++)
                q += (double)x[r * t->ne[0] + i] * x[r * t->ne[0] + i];
            norm[r] = sqrt(q);
            avg += norm[r] / (double)t->ne[1];
        }
        ck_assert(avg > 0);
        for (int64_t r = 0; r < t->ne[1]; r++)
            ck_assert_msg(fabs(norm[r] / avg - 1) < 0.15, "%s %s row %lld: norm %g, average %g", model,
                          t->name, (long long)r, norm[r], avg);
        ck_assert_msg(fabs(mean) < 0.05 * sd, "%s %s: mean %g (std %g)", model, t->name, mean, sd);
        free(norm);
    }
}

/* stats: whether the decoded weights keep the generator's statistics (the 1- and 2-bit
 * types' rounding moves them too far for the checks) */
static const struct { const char *file; double max_rel_err; bool stats; } llama_tiny[] = {
    {"llama-tiny-f16", 0, true}, /* the reference itself */
    {"llama-tiny-bf16", 0.003, true}, {"llama-tiny-q8_0", 0.008, true}, {"llama-tiny-q6_k", 0.025, true},
    {"llama-tiny-q5_k", 0.05, true},  {"llama-tiny-q5_1", 0.05, true}, {"llama-tiny-q5_0", 0.055, true},
    {"llama-tiny-q4_k", 0.10, true},  {"llama-tiny-q4_1", 0.10, true}, {"llama-tiny-q4_0", 0.11, true},
    {"llama-tiny-q3_k", 0.20, true},  {"llama-tiny-q2_k", 0.40, true},
    /* llama-quantize's output (imatrix-weighted for the grid types), ../shared/notes/quants.md */
    {"llama-tiny-iq4_nl", 0.10, true}, {"llama-tiny-iq4_xs", 0.10, true},
    {"llama-tiny-mxfp4", 0.14, true},  {"llama-tiny-iq3_s", 0.21, true},
    {"llama-tiny-iq3_xxs", 0.27, true}, {"llama-tiny-iq2_s", 0.33, false},
    {"llama-tiny-iq2_xs", 0.40, false}, {"llama-tiny-iq2_xxs", 0.45, false},
    {"llama-tiny-iq1_m", 0.73, false}, {"llama-tiny-iq1_s", 0.64, false},
    /* ternary: d = the block's largest magnitude, so most weights round to 0 */
    {"llama-tiny-tq2_0", 1.0, false},  {"llama-tiny-tq1_0", 1.0, false},
};
#define N_LLAMA_TINY ((int)(sizeof llama_tiny / sizeof llama_tiny[0]))

START_TEST(test_llama_tiny)
{
    char path[4096], rel[128];
    snprintf(rel, sizeof rel, "models/%s.gguf", llama_tiny[_i].file);
    test_shared_path(rel, path, sizeof path);
    snprintf(rel, sizeof rel, "models/%s.gguf", llama_tiny[0].file);
    char ref_path[4096];
    test_shared_path(rel, ref_path, sizeof ref_path);
    llmfs_error err = {0};
    gguf_file *f = gguf_open(path, NULL, &err), *ref = gguf_open(ref_path, NULL, &err);
    ck_assert_msg(f && ref, "cannot read %s: %s", path, err.msg);
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (t->n_dims != 2)
            continue;
        const gguf_tensor *rt = gguf_find_tensor(ref, t->name);
        ck_assert_ptr_nonnull(rt);
        ck_assert(rt->ne[0] == t->ne[0] && rt->ne[1] == t->ne[1]);
        float *x = dequant_all(t), *y = dequant_all(rt);
        double std_want = strcmp(t->name, "token_embd.weight") == 0 ? 1.0
                                                                    : expected_std(t->name, t->ne[0]);
        if (llama_tiny[_i].stats)
            check_stats(llama_tiny[_i].file, t, x, std_want, false);
        int64_t n = t->ne[0] * t->ne[1];
        double e = 0, s = 0;
        for (int64_t k = 0; k < n; k++) {
            e += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
            s += (double)y[k] * y[k];
        }
        double rel_err = sqrt(e / s);
        worst = fmax(worst, rel_err);
        ck_assert_msg(rel_err <= llama_tiny[_i].max_rel_err,
                      "%s %s (%s): differs from f16 by %g (bound %g)", llama_tiny[_i].file, t->name,
                      type_info(t->type)->name, rel_err, llama_tiny[_i].max_rel_err);
        if (llama_tiny[_i].max_rel_err > 0)
            ck_assert_msg(rel_err > llama_tiny[_i].max_rel_err / 50,
                          "%s %s: suspiciously equal to f16", llama_tiny[_i].file, t->name);
        free(x);
        free(y);
        checked++;
    }
    ck_assert_int_eq(checked, 16); /* token_embd, output, 7 matrices x 2 layers */
    fprintf(stderr, "%-16s largest difference from f16: %.4f (bound %.4f)\n", llama_tiny[_i].file,
            worst, llama_tiny[_i].max_rel_err);
    gguf_close(f);
    gguf_close(ref);
}
END_TEST

START_TEST(test_qwen3_tiny_q4_k)
{
    char path[4096];
    test_shared_path("models/qwen3-tiny-q4_k.gguf", path, sizeof path);
    llmfs_error err = {0};
    gguf_file *f = gguf_open(path, NULL, &err);
    ck_assert_msg(f, "cannot read %s: %s", path, err.msg);
    int q6 = 0, q4 = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (t->n_dims != 2)
            continue;
        q6 += t->type == T_Q6_K;
        q4 += t->type == T_Q4_K;
        float *x = dequant_all(t);
        bool tied = strcmp(t->name, "token_embd.weight") == 0;
        check_stats("qwen3-tiny-q4_k", t, x, expected_std(t->name, t->ne[0]), tied);
        free(x);
    }
    ck_assert_int_eq(q6, 3); /* token_embd, and layer 1's attn_v and ffn_down */
    ck_assert_int_eq(q4, 12);
    gguf_close(f);
}
END_TEST

/* Every instruction set decodes every row of the IQ/TQ/MXFP4 models bit for bit like the
 * scalar decoder (the fixture logits check that one against llama.cpp: token_embd rows
 * are looked up, not multiplied). */
START_TEST(test_fast_dequant_models)
{
    static const char *const isas[] = {"scalar", "avx2", "avx512"};
    int checked = 0;
    for (int m = 0; m < N_LLAMA_TINY; m++) {
        if (llama_tiny[m].file[11] != 'i' && llama_tiny[m].file[11] != 't' &&
            llama_tiny[m].file[11] != 'm')
            continue; /* llama-tiny-<iq|tq|mxfp4> */
        char path[4096], rel[128];
        snprintf(rel, sizeof rel, "models/%s.gguf", llama_tiny[m].file);
        test_shared_path(rel, path, sizeof path);
        llmfs_error err = {0};
        gguf_file *f = gguf_open(path, NULL, &err);
        ck_assert_msg(f, "cannot read %s: %s", path, err.msg);
        for (int i = 0; i < gguf_n_tensors(f); i++) {
            const gguf_tensor *t = gguf_tensor_at(f, i);
            if (t->n_dims != 2)
                continue;
            size_t rb = type_row_bytes(t->type, t->ne[0]), n = (size_t)t->ne[0];
            float *ref = malloc(sizeof *ref * n), *got = malloc(sizeof *got * n);
            for (int64_t r = 0; r < t->ne[1]; r++) {
                const uint8_t *row = (const uint8_t *)t->data + (size_t)r * rb;
                quant_ref_dequantize_row(t->type, row, ref, t->ne[0]);
                for (int k = 1; k < 3; k++) {
                    if (!quant_force_isa(isas[k]))
                        continue;
                    dequantize_row(t->type, row, got, t->ne[0]);
                    ck_assert_msg(memcmp(ref, got, sizeof *ref * n) == 0, "%s %s row %lld: %s differs",
                                  llama_tiny[m].file, t->name, (long long)r, isas[k]);
                }
                quant_force_isa(NULL);
            }
            free(ref);
            free(got);
            checked++;
        }
        gguf_close(f);
    }
    ck_assert_int_eq(checked, 12 * 16);
}
END_TEST

/* llama-tiny-tq1_0 and -tq2_0 hold the same ternary weights in two encodings. */
START_TEST(test_tq_models_agree)
{
    char p1[4096], p2[4096];
    test_shared_path("models/llama-tiny-tq1_0.gguf", p1, sizeof p1);
    test_shared_path("models/llama-tiny-tq2_0.gguf", p2, sizeof p2);
    llmfs_error err = {0};
    gguf_file *f1 = gguf_open(p1, NULL, &err), *f2 = gguf_open(p2, NULL, &err);
    ck_assert_msg(f1 && f2, "cannot read the TQ models: %s", err.msg);
    int checked = 0;
    for (int i = 0; i < gguf_n_tensors(f1); i++) {
        const gguf_tensor *a = gguf_tensor_at(f1, i);
        if (a->n_dims != 2)
            continue;
        const gguf_tensor *b = gguf_find_tensor(f2, a->name);
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(a->type, T_TQ1_0);
        ck_assert_int_eq(b->type, T_TQ2_0);
        float *x = dequant_all(a), *y = dequant_all(b);
        ck_assert_msg(memcmp(x, y, sizeof *x * (size_t)(a->ne[0] * a->ne[1])) == 0, "%s differs", a->name);
        free(x);
        free(y);
        checked++;
    }
    ck_assert_int_eq(checked, 16);
    gguf_close(f1);
    gguf_close(f2);
}
END_TEST

/* MXFP4 experts (3D tensors, as gpt-oss ships them) through the CPU backend's MoE path:
 * the same as F32 experts holding the dequantized MXFP4 values, up to the rounding of
 * the activations to Q8_0 (about 1e-2). */
static void weight3(tensor *t, int type, int64_t ne0, int64_t ne1, int64_t ne2, const float *x)
{
    memset(t, 0, sizeof *t);
    size_t rb = type_row_bytes(type, ne0);
    t->type = type;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->nb1 = rb;
    t->nb2 = rb * (size_t)ne1;
    t->data = malloc(t->nb2 * (size_t)ne2);
    for (int64_t r = 0; r < ne1 * ne2; r++)
        quantize_row(type, x + r * ne0, (char *)t->data + rb * (size_t)r, ne0);
}

START_TEST(test_moe_mxfp4_experts)
{
    const int E = 8, K = 2, d = 160, ff = 96, n = 6;
    backend *be = backend_cpu_new(2, 2);
    ck_assert_ptr_nonnull(be);
    test_rand_seed(77);
    tensor q[3], f[3];
    const int64_t ne0[3] = {d, d, ff}, ne1[3] = {ff, ff, d};
    for (int k = 0; k < 3; k++) {
        int64_t cnt = ne0[k] * ne1[k] * E;
        float *x = malloc(sizeof *x * (size_t)cnt);
        for (int64_t i = 0; i < cnt; i++)
            x[i] = test_normal() / sqrtf((float)ne0[k]);
        weight3(&q[k], T_MXFP4, ne0[k], ne1[k], E, x);
        /* the F32 twin holds exactly what the MXFP4 rows decode to */
        for (int64_t r = 0; r < ne1[k] * E; r++)
            dequantize_row(T_MXFP4, (const char *)q[k].data + q[k].nb1 * (size_t)r, x + r * ne0[k], ne0[k]);
        weight3(&f[k], T_F32, ne0[k], ne1[k], E, x);
        q[k].be = f[k].be = be;
        free(x);
    }
    float x[6 * 160], logits[6 * 8], w[6 * 2], out_q[6 * 160], out_f[6 * 160];
    int32_t ids[6 * 2], tok[6], pos[6], seq[6] = {0};
    for (int i = 0; i < n * d; i++)
        x[i] = test_normal();
    for (int i = 0; i < n * E; i++)
        logits[i] = 2 * test_normal();
    for (int i = 0; i < n; i++)
        tok[i] = pos[i] = i;
    fwd_batch b = {n, tok, pos, seq, NULL};
    ck_assert_int_eq(be->ops->begin(be, &b), 0);
    be->ops->topk_softmax(be, ids, w, logits, n, E, K, true);
    be->ops->moe_ffn(be, out_q, x, &q[0], &q[1], &q[2], ids, w, n, K, FFN_SILU, NULL);
    be->ops->moe_ffn(be, out_f, x, &f[0], &f[1], &f[2], ids, w, n, K, FFN_SILU, NULL);
    for (int t = 0; t < n; t++) {
        double e = 0, s = 0;
        for (int i = 0; i < d; i++) {
            double dd = (double)out_q[t * d + i] - out_f[t * d + i];
            e += dd * dd;
            s += (double)out_f[t * d + i] * out_f[t * d + i];
        }
        ck_assert(s > 0);
        ck_assert_msg(sqrt(e / s) < 2.5e-2, "token %d: MXFP4 experts differ by %g", t, sqrt(e / s));
    }
    for (int k = 0; k < 3; k++) {
        free(q[k].data);
        free(f[k].data);
    }
    backend_free(be);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("quant_models");
    TCase *tc = tcase_create("models");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_llama_tiny, 0, N_LLAMA_TINY);
    tcase_add_test(tc, test_qwen3_tiny_q4_k);
    tcase_add_test(tc, test_fast_dequant_models);
    tcase_add_test(tc, test_tq_models_agree);
    tcase_add_test(tc, test_moe_mxfp4_experts);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("test_quant_models");
    return test_run_suite(make_suite());
}
