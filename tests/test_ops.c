/* test_ops.c — the CPU backend's Gemma ops against plain double-precision references:
 * GeGLU (tanh GELU), scale, logit soft-capping, per-expert weight scales, strided row
 * copies, and the routed experts with GELU and with gate and up fused in one tensor. */
#include "testutil.h"

#include "backend.h"
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double gelu_exact(double g) { return 0.5 * g * (1 + tanh(sqrt(2 / M_PI) * (g + 0.044715 * g * g * g))); }

/* llama.cpp's CPU GELU: f16 in, f16 out, identity beyond +-10 */
static double gelu_ref(double g)
{
    if (g <= -10)
        return 0;
    if (g >= 10)
        return g;
    return f16_to_f32(f32_to_f16((float)gelu_exact(f16_to_f32(f32_to_f16((float)g)))));
}

static float *randv(int64_t n, float s)
{
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        x[i] = s * (float)test_normal();
    return x;
}

START_TEST(elementwise)
{
    backend *be = backend_cpu_new(2, 2);
    test_rand_seed(5);
    const int64_t n = 1000;
    float *g = randv(n, 3), *u = randv(n, 1), *out = malloc(sizeof(float) * n), *x = malloc(sizeof(float) * n);
    int32_t dummy = 0;
    fwd_batch b = {1, &dummy, &dummy, &dummy, NULL};
    be->ops->begin(be, &b);

    be->ops->geglu(be, out, g, u, n);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(out[i] - gelu_ref(g[i]) * u[i]) < 1e-5 * (1 + fabs(gelu_ref(g[i]) * u[i])),
                      "geglu %lld: %g vs %g", (long long)i, out[i], gelu_ref(g[i]) * u[i]);
    /* GELU, not SiLU: they differ by far more than rounding at g = 1 */
    ck_assert(fabs(gelu_exact(1.0) - 1.0 / (1.0 + exp(-1.0))) > 0.1);
    /* and within f16 rounding of the exact function */
    for (int64_t i = 0; i < n; i++)
        ck_assert(fabs(gelu_ref(g[i]) - gelu_exact(g[i])) < 2e-3 * (1 + fabs(g[i])));

    memcpy(x, g, sizeof(float) * n);
    be->ops->scale(be, x, 0.25f, n);
    for (int64_t i = 0; i < n; i++)
        ck_assert(x[i] == g[i] * 0.25f);

    memcpy(x, g, sizeof(float) * n);
    be->ops->scale(be, x, 10.0f, n);   /* logits up to ~100 */
    be->ops->softcap(be, x, 30.0f, n);
    for (int64_t i = 0; i < n; i++) {
        double r = 30.0 * tanh(g[i] * 10.0 / 30.0);
        ck_assert_msg(fabs(x[i] - r) < 1e-5 * (1 + fabs(r)), "softcap %g vs %g", x[i], r);
        ck_assert(fabs(x[i]) < 30.0f + 1e-4f);
    }

    float s[4] = {0.5f, 2.0f, 3.0f, 0.25f}, w[6] = {1, 1, 1, 1, 1, 2};
    int32_t ids[6] = {0, 1, 2, 3, 1, 3};
    be->ops->scale_ids(be, w, ids, s, 6);
    const float want[6] = {0.5f, 2.0f, 3.0f, 0.25f, 2.0f, 0.5f};
    for (int i = 0; i < 6; i++)
        ck_assert(w[i] == want[i]);

    /* rows of 5 out of rows of 12 starting at column 3 */
    be->ops->copy2d(be, out, 5, g + 3, 12, 7, 5);
    for (int r = 0; r < 7; r++)
        for (int i = 0; i < 5; i++)
            ck_assert(out[r * 5 + i] == g[r * 12 + 3 + i]);
    ck_assert_int_eq(be->ops->check(be, NULL), 0);
    free(g);
    free(u);
    free(out);
    free(x);
    backend_free(be);
}
END_TEST

/* The routed experts: _i 0 separate gate and up with SiLU, 1 with GELU, 2 fused with GELU */
START_TEST(experts)
{
    enum { NT = 5, E = 64, F = 32, X = 4, K = 2 };
    const bool gelu = _i >= 1, fused = _i == 2;
    backend *be = backend_cpu_new(2, 2);
    test_rand_seed(11 + (uint64_t)_i);
    float *wg = randv((int64_t)X * F * E, 0.2f), *wu = randv((int64_t)X * F * E, 0.2f),
          *wd = randv((int64_t)X * E * F, 0.2f), *x = randv(NT * E, 1), *out = malloc(sizeof(float) * NT * E);
    float *gu = malloc(sizeof(float) * X * 2 * F * E);
    for (int e = 0; e < X; e++) { /* each expert's gate rows, then its up rows */
        memcpy(gu + (size_t)e * 2 * F * E, wg + (size_t)e * F * E, sizeof(float) * F * E);
        memcpy(gu + (size_t)e * 2 * F * E + F * E, wu + (size_t)e * F * E, sizeof(float) * F * E);
    }
    tensor tg = {"g", T_F32, {E, F, X}, sizeof(float) * E, sizeof(float) * E * F, wg, be};
    tensor tu = {"u", T_F32, {E, F, X}, sizeof(float) * E, sizeof(float) * E * F, wu, be};
    tensor tgu = {"gu", T_F32, {E, 2 * F, X}, sizeof(float) * E, sizeof(float) * E * 2 * F, gu, be};
    tensor td = {"d", T_F32, {F, E, X}, sizeof(float) * F, sizeof(float) * F * E, wd, be};
    int32_t ids[NT * K], tok[NT] = {0}, pos[NT] = {0}, seq[NT] = {0};
    float wts[NT * K];
    for (int i = 0; i < NT * K; i++) {
        ids[i] = (i * 3 + i / K) % X;
        wts[i] = 0.3f + 0.1f * (float)i;
    }
    for (int t = 0; t < NT; t++)
        if (ids[t * K] == ids[t * K + 1])
            ids[t * K + 1] = (ids[t * K + 1] + 1) % X;
    fwd_batch b = {NT, tok, pos, seq, NULL};
    be->ops->begin(be, &b);
    be->ops->moe_ffn(be, out, x, fused ? &tgu : &tg, fused ? NULL : &tu, &td, ids, wts, NT, K,
                     gelu ? FFN_GELU : FFN_SILU, NULL);
    ck_assert_int_eq(be->ops->check(be, NULL), 0);
    for (int t = 0; t < NT; t++) {
        double ref[E] = {0};
        for (int j = 0; j < K; j++) {
            const int e = ids[t * K + j];
            double h[F];
            for (int r = 0; r < F; r++) {
                double a = 0, c = 0;
                for (int i = 0; i < E; i++) {
                    a += (double)wg[((size_t)e * F + r) * E + i] * x[t * E + i];
                    c += (double)wu[((size_t)e * F + r) * E + i] * x[t * E + i];
                }
                h[r] = (gelu ? gelu_ref(a) : a / (1 + exp(-a))) * c;
            }
            for (int i = 0; i < E; i++) {
                double y = 0;
                for (int r = 0; r < F; r++)
                    y += (double)wd[((size_t)e * E + i) * F + r] * h[r];
                ref[i] += wts[t * K + j] * y;
            }
        }
        double err = 0, nr = 0;
        for (int i = 0; i < E; i++) {
            err += (out[t * E + i] - ref[i]) * (out[t * E + i] - ref[i]);
            nr += ref[i] * ref[i];
        }
        ck_assert_msg(sqrt(err / nr) < 1e-3, "token %d: relative error %g", t, sqrt(err / nr));
    }
    free(wg);
    free(wu);
    free(wd);
    free(gu);
    free(x);
    free(out);
    backend_free(be);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ops");
    TCase *t = tcase_create("gemma");
    tcase_add_test(t, elementwise);
    tcase_add_loop_test(t, experts, 0, 3);
    suite_add_tcase(s, t);
    return test_run_suite(s);
}
