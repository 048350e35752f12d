/* test_gptoss_ops.c — the CPU ops gpt-oss adds, against plain double-precision
 * references written from the formulas (../shared/notes/gptoss.md):
 *   - rope with YaRN (NEOX pairs, correction dims 8 and 18 for head_dim 64, base 150000,
 *     original context 4096, factor 32; cos and sin times 1 + 0.1 ln 32);
 *   - the routed experts with per-expert biases and the clamped SwiGLU. */
#include "testutil.h"

#include "backend.h"
#include "llmfs.h"
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NT = 6, RH = 3, RD = 64 };

START_TEST(rope_yarn)
{
    backend *be = backend_cpu_new(2, 2);
    const int32_t pos[NT] = {0, 1, 7, 300, 4097, 100000};
    int32_t tok[NT] = {0}, seq[NT] = {0};
    fwd_batch b = {NT, tok, pos, seq, NULL};
    ck_assert_int_eq(be->ops->begin(be, &b), 0);
    test_rand_seed(5);
    float x[NT * RH * RD], x0[NT * RH * RD];
    for (int i = 0; i < NT * RH * RD; i++)
        x0[i] = x[i] = test_normal();
    const rope_params p = {.n_rot = RD, .neox = true, .freq_base = 150000, .freq_scale = 1.0f / 32,
                           .yarn_ext_factor = 1, .yarn_attn_factor = 1, .yarn_beta_fast = 32,
                           .yarn_beta_slow = 1, .yarn_orig_ctx = 4096};
    be->ops->rope(be, x, NT, RH, RD, &p);
    /* the reference: pairs 0-8 keep their frequency, 9-17 ramp, 18-31 are divided by 32 */
    const double lo = 8, hi = 18, mscale = 1 + 0.1 * log(32.0);
    double worst = 0;
    for (int t = 0; t < NT; t++)
        for (int h = 0; h < RH; h++)
            for (int i = 0; i < RD / 2; i++) {
                double extrap = pos[t] * pow(150000.0, -2.0 * i / RD), interp = extrap / 32;
                double ramp = 1 - fmin(1, fmax(0, (i - lo) / (hi - lo)));
                double th = interp * (1 - ramp) + extrap * ramp;
                const float *a = x0 + ((size_t)t * RH + h) * RD;
                double r0 = (a[i] * cos(th) - a[i + RD / 2] * sin(th)) * mscale;
                double r1 = (a[i] * sin(th) + a[i + RD / 2] * cos(th)) * mscale;
                const float *o = x + ((size_t)t * RH + h) * RD;
                worst = fmax(worst, fmax(fabs(o[i] - r0), fabs(o[i + RD / 2] - r1)));
            }
    ck_assert_msg(worst < 1e-4, "YaRN rope: largest error %g", worst);

    /* the same op without YaRN is plain NEOX rope at freq_scale: no mscale */
    memcpy(x, x0, sizeof x);
    const rope_params plain = {.n_rot = RD, .neox = true, .freq_base = 150000, .freq_scale = 1};
    be->ops->rope(be, x, NT, RH, RD, &plain);
    double th = pos[5] * pow(150000.0, -2.0 * 3 / RD);
    double r = x0[5 * RH * RD + 3] * cos(th) - x0[5 * RH * RD + 3 + RD / 2] * sin(th);
    ck_assert_msg(fabs(x[5 * RH * RD + 3] - r) < 1e-4, "plain rope: %g vs %g", x[5 * RH * RD + 3], r);
    backend_free(be);
}
END_TEST

enum { N = 7, E = 64, FE = 32, X = 4, K = 2 };

static tensor f32_tensor(backend *be, float *data, int64_t ne0, int64_t ne1, int64_t ne2)
{
    tensor t = {.type = T_F32, .ne = {ne0, ne1, ne2}, .data = data, .be = be};
    t.nb1 = sizeof(float) * (size_t)ne0;
    t.nb2 = t.nb1 * (size_t)ne1;
    return t;
}

static double oai(double g, double u)
{
    g = fmin(g, 7);
    u = fmax(-7, fmin(7, u));
    return g / (1 + exp(-1.702 * g)) * (u + 1);
}

START_TEST(moe_biases_and_clamp)
{
    const bool with_extra = _i == 1;
    backend *be = backend_cpu_new(2, 2);
    int32_t tok[N] = {0}, pos[N], seq[N] = {0};
    for (int i = 0; i < N; i++)
        pos[i] = i;
    fwd_batch b = {N, tok, pos, seq, NULL};
    ck_assert_int_eq(be->ops->begin(be, &b), 0);
    test_rand_seed(11 + (uint64_t)_i);
    float *wg = malloc(sizeof(float) * X * FE * E), *wu = malloc(sizeof(float) * X * FE * E),
          *wd = malloc(sizeof(float) * X * E * FE);
    float bg[X * FE], bu[X * FE], bd[X * E], x[N * E], w[N * K], out[N * E];
    int32_t ids[N * K];
    /* gate and up of std ~5: the clamp at 7 bites on a good share of them */
    for (int i = 0; i < X * FE * E; i++) {
        wg[i] = 5 * test_normal() / sqrtf(E);
        wu[i] = 5 * test_normal() / sqrtf(E);
        wd[i] = test_normal() / sqrtf(FE);
    }
    for (int i = 0; i < X * FE; i++) {
        bg[i] = test_normal();
        bu[i] = test_normal();
    }
    for (int i = 0; i < X * E; i++)
        bd[i] = test_normal();
    for (int i = 0; i < N * E; i++)
        x[i] = test_normal();
    for (int t = 0; t < N; t++) {
        ids[t * K] = t % X;
        ids[t * K + 1] = (t + 1 + t / X) % X;
        w[t * K] = 0.3f + 0.05f * t;
        w[t * K + 1] = 1 - w[t * K];
    }
    tensor g = f32_tensor(be, wg, E, FE, X), u = f32_tensor(be, wu, E, FE, X), d = f32_tensor(be, wd, FE, E, X);
    tensor tbg = f32_tensor(be, bg, FE, X, 0), tbu = f32_tensor(be, bu, FE, X, 0), tbd = f32_tensor(be, bd, E, X, 0);
    const moe_extra ex = {&tbg, &tbu, &tbd, 1.702f, 7.0f};
    be->ops->moe_ffn(be, out, x, &g, &u, &d, ids, w, N, K, FFN_SILU, with_extra ? &ex : NULL);
    llmfs_error err = {0};
    ck_assert_msg(be->ops->check(be, &err) == 0, "%s", err.msg);

    double worst = 0, clamped = 0;
    for (int t = 0; t < N; t++)
        for (int r = 0; r < E; r++) {
            double acc = 0;
            for (int j = 0; j < K; j++) {
                int e = ids[t * K + j];
                double y = with_extra ? bd[e * E + r] : 0;
                for (int f = 0; f < FE; f++) {
                    double gv = with_extra ? bg[e * FE + f] : 0, uv = with_extra ? bu[e * FE + f] : 0;
                    for (int i = 0; i < E; i++) {
                        gv += (double)wg[((size_t)e * FE + f) * E + i] * x[t * E + i];
                        uv += (double)wu[((size_t)e * FE + f) * E + i] * x[t * E + i];
                    }
                    if (r == 0 && (gv > 7 || fabs(uv) > 7))
                        clamped++;
                    double act = with_extra ? oai(gv, uv) : gv / (1 + exp(-gv)) * uv;
                    y += wd[((size_t)e * E + r) * FE + f] * act;
                }
                acc += w[t * K + j] * y;
            }
            worst = fmax(worst, fabs(out[t * E + r] - acc) / (1 + fabs(acc)));
        }
    ck_assert_msg(clamped > 10, "only %g clamped pairs: the test would not see the clamp", clamped);
    ck_assert_msg(worst < 1e-4, "moe_ffn (extra %d): largest relative error %g", with_extra, worst);
    free(wg);
    free(wu);
    free(wd);
    backend_free(be);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("gptoss_ops");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, rope_yarn);
    tcase_add_loop_test(tc, moe_biases_and_clamp, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
