/* test_attention.c — the CPU attention op against a plain double-precision reference:
 * causal, sliding-window (n_swa) and with attention sinks, in both the materialised and
 * the online-softmax (flash) paths, over an f32 cache so the reference is exact. */
#include "testutil.h"

#include "backend.h"
#include "kv.h"
#include "model.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N = 150, H = 8, HK = 4, D = 32 }; /* 150 tokens: more than two flash tiles */

/* out[t][h][i] for every token t over cells max(0, t - n_swa + 1) .. t */
static void reference(const float *q, const float *k, const float *v, const float *sinks, int n_swa,
                      float scale, double *out)
{
    const int g = H / HK;
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++) {
            const int kh = h / g, first = n_swa > 0 && t >= n_swa ? t - n_swa + 1 : 0;
            double mx = sinks ? sinks[h] : -INFINITY, s[N];
            for (int j = first; j <= t; j++) {
                double d = 0;
                for (int i = 0; i < D; i++)
                    d += (double)q[((size_t)t * H + h) * D + i] * k[((size_t)j * HK + kh) * D + i];
                s[j] = d * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            double sum = sinks ? exp(sinks[h] - mx) : 0;
            for (int j = first; j <= t; j++)
                sum += s[j] = exp(s[j] - mx);
            for (int i = 0; i < D; i++) {
                double a = 0;
                for (int j = first; j <= t; j++)
                    a += s[j] * v[((size_t)j * HK + kh) * D + i];
                out[((size_t)t * H + h) * D + i] = a / sum;
            }
        }
}

START_TEST(window_and_sinks)
{
    const int n_swa = (int[]){0, 7, 100, 0, 7}[_i / 2];
    const bool with_sinks = _i / 2 >= 3, flash = _i % 2;
    /* a one-layer model shape is all the cache needs */
    backend *be = backend_cpu_new(2, 2);
    model_layer layer = {.be = be, .n_head_kv = HK, .head_dim = D};
    model m = {.hp = {.n_layer = 1, .n_head = H, .n_head_kv = HK, .head_dim = D}, .layers = &layer};
    llmfs_error err = {0};
    kv_cache *kv = kv_cache_alloc(&m, N, 1, T_F32, T_F32, &err);
    ck_assert_msg(kv, "%s", err.msg);
    test_rand_seed(17 + (uint64_t)_i);
    float *q = malloc(sizeof(float) * N * H * D), *k = malloc(sizeof(float) * N * HK * D),
          *v = malloc(sizeof(float) * N * HK * D), *out = malloc(sizeof(float) * N * H * D);
    double *ref = malloc(sizeof(double) * N * H * D);
    float sinks[H];
    for (int i = 0; i < N * H * D; i++)
        q[i] = test_normal();
    for (int i = 0; i < N * HK * D; i++) {
        k[i] = test_normal();
        v[i] = test_normal();
    }
    for (int h = 0; h < H; h++) /* large enough to take a good share of the weight */
        sinks[h] = 1.0f + 2.0f * test_uniform();
    int32_t tok[N], pos[N], seq[N];
    for (int i = 0; i < N; i++) {
        tok[i] = 0;
        pos[i] = i;
        seq[i] = 0;
    }
    fwd_batch b = {N, tok, pos, seq, NULL};
    ck_assert_int_eq(be->ops->begin(be, &b), 0);
    be->ops->kv_store(be, kv, 0, k, v, N);
    const attn_params ap = {H, HK, D, 1.0f / sqrtf((float)D), flash, n_swa, with_sinks ? sinks : NULL};
    be->ops->attention(be, out, q, kv, 0, N, &ap);
    reference(q, k, v, with_sinks ? sinks : NULL, n_swa, ap.scale, ref);
    double worst = 0;
    for (int i = 0; i < N * H * D; i++) {
        double e = fabs(out[i] - ref[i]);
        worst = e > worst ? e : worst;
    }
    ck_assert_msg(worst < 1e-4, "n_swa %d, sinks %d, flash %d: largest error %g", n_swa, with_sinks, flash,
                  worst);
    free(q);
    free(k);
    free(v);
    free(out);
    free(ref);
    kv_cache_free(kv);
    backend_free(be);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("cpu");
    tcase_add_loop_test(tc, window_and_sinks, 0, 10);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
