/* Sampler: greedy, determinism, the support and distribution of each filter, penalties. */
#include "sampler.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static sampler_params plain(float temp)
{
    return (sampler_params){.temp = temp, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                            .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 1234};
}

/* Logits whose softmax at temperature 1 is exactly probs (up to rounding). */
static void logits_from_probs(const double *probs, int n, float *l)
{
    for (int i = 0; i < n; i++)
        l[i] = probs[i] > 0 ? (float)log(probs[i]) : -INFINITY;
}

/* Draws n times and compares the frequencies with want (renormalised expected
 * probabilities, 0 = must never appear) within 5 standard deviations. */
static void check_distribution(sampler *s, const float *l, int nv, const double *want, int draws)
{
    int *count = calloc((size_t)nv, sizeof *count);
    for (int d = 0; d < draws; d++) {
        int32_t t = sampler_sample(s, l, NULL, 0);
        ck_assert_int_ge(t, 0);
        ck_assert_int_lt(t, nv);
        count[t]++;
    }
    for (int i = 0; i < nv; i++) {
        double f = (double)count[i] / draws;
        if (want[i] == 0) {
            ck_assert_msg(count[i] == 0, "token %d drawn %d times but is outside the support", i, count[i]);
            continue;
        }
        double sd = sqrt(want[i] * (1 - want[i]) / draws);
        ck_assert_msg(fabs(f - want[i]) < 5 * sd + 1e-4, "token %d: frequency %.4f, expected %.4f", i, f,
                      want[i]);
    }
    free(count);
}

START_TEST(greedy_is_argmax_lowest_id_on_ties)
{
    enum { NV = 5000 };
    float *l = malloc(sizeof *l * NV);
    srand(7);
    for (int rep = 0; rep < 20; rep++) {
        int best = 0;
        for (int i = 0; i < NV; i++) {
            l[i] = (float)rand() / RAND_MAX * 10 - 5;
            if (l[i] > l[best])
                best = i;
        }
        sampler_params p = plain(0);
        p.top_k = 40;
        sampler *s = sampler_new(&p, NV);
        ck_assert(sampler_is_argmax(s));
        ck_assert_int_eq(sampler_sample(s, l, NULL, 0), best);
        ck_assert_int_eq(sampler_argmax(l, NV), best);
        sampler_free(s);
    }
    /* anything that can move the choice away from the argmax says so */
    sampler_params p = plain(0.7f);
    sampler *s = sampler_new(&p, NV);
    ck_assert(!sampler_is_argmax(s));
    sampler_free(s);
    p = plain(0);
    p.repeat_penalty = 1.3f;
    p.repeat_last_n = 64;
    s = sampler_new(&p, NV);
    ck_assert(!sampler_is_argmax(s));
    sampler_free(s);
    for (int i = 0; i < NV; i++)
        l[i] = 1.0f;
    l[17] = l[4000] = 3.0f;
    ck_assert_int_eq(sampler_argmax(l, NV), 17);
    free(l);
}
END_TEST

START_TEST(same_seed_same_tokens)
{
    enum { NV = 2000, N = 300 };
    float *l = malloc(sizeof *l * NV);
    srand(3);
    for (int i = 0; i < NV; i++)
        l[i] = (float)rand() / RAND_MAX * 4;
    sampler_params p = plain(1.0f);
    p.top_k = 50;
    p.top_p = 0.9f;
    p.seed = 42;
    sampler *a = sampler_new(&p, NV), *b = sampler_new(&p, NV);
    p.seed = 43;
    sampler *c = sampler_new(&p, NV);
    int32_t ta[N], tc[N];
    int differ = 0;
    for (int i = 0; i < N; i++) {
        ta[i] = sampler_sample(a, l, ta, i);
        ck_assert_int_eq(sampler_sample(b, l, ta, i), ta[i]);
        tc[i] = sampler_sample(c, l, tc, i);
        differ += ta[i] != tc[i];
    }
    ck_assert_int_gt(differ, N / 2);
    /* reseeding restarts the sequence */
    sampler_reseed(a, 42);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(sampler_sample(a, l, ta, i), ta[i]);
    sampler_free(a);
    sampler_free(b);
    sampler_free(c);
    free(l);
}
END_TEST

START_TEST(temperature_one_follows_softmax)
{
    double probs[6] = {0.4, 0.25, 0.15, 0.1, 0.06, 0.04};
    float l[6];
    logits_from_probs(probs, 6, l);
    sampler_params p = plain(1.0f);
    sampler *s = sampler_new(&p, 6);
    check_distribution(s, l, 6, probs, 200000);
    sampler_free(s);
}
END_TEST

START_TEST(temperature_sharpens)
{
    double probs[4] = {0.5, 0.3, 0.15, 0.05}, want[4], z = 0;
    float l[4];
    logits_from_probs(probs, 4, l);
    for (int i = 0; i < 4; i++)
        z += want[i] = probs[i] * probs[i]; /* temp 0.5: p^2 renormalised */
    for (int i = 0; i < 4; i++)
        want[i] /= z;
    sampler_params p = plain(0.5f);
    sampler *s = sampler_new(&p, 4);
    check_distribution(s, l, 4, want, 200000);
    sampler_free(s);
}
END_TEST

START_TEST(top_k_restricts_and_renormalises)
{
    double probs[6] = {0.1, 0.4, 0.05, 0.25, 0.15, 0.05};
    float l[6];
    logits_from_probs(probs, 6, l);
    sampler_params p = plain(1.0f);
    p.top_k = 3; /* ids 1, 3, 4 */
    double want[6] = {0, 0.4 / 0.8, 0, 0.25 / 0.8, 0.15 / 0.8, 0};
    sampler *s = sampler_new(&p, 6);
    check_distribution(s, l, 6, want, 200000);
    sampler_free(s);
}
END_TEST

START_TEST(top_p_keeps_the_smallest_nucleus)
{
    double probs[5] = {0.25, 0.5, 0.15, 0.06, 0.04};
    float l[5];
    logits_from_probs(probs, 5, l);
    sampler_params p = plain(1.0f);
    p.top_p = 0.7f; /* 0.5 + 0.25 = 0.75 >= 0.7: ids 1 and 0 */
    double want[5] = {0.25 / 0.75, 0.5 / 0.75, 0, 0, 0};
    sampler *s = sampler_new(&p, 5);
    check_distribution(s, l, 5, want, 200000);
    sampler_free(s);
    /* after top-k the nucleus is measured on the renormalised top k */
    p.top_k = 3; /* 0.5, 0.25, 0.15 -> 0.556, 0.278, 0.167 */
    p.top_p = 0.8f; /* 0.556 + 0.278 = 0.833 >= 0.8 */
    s = sampler_new(&p, 5);
    check_distribution(s, l, 5, want, 200000);
    sampler_free(s);
    p.top_p = 0.85f; /* now the third is needed too */
    double want3[5] = {0.25 / 0.9, 0.5 / 0.9, 0.15 / 0.9, 0, 0};
    s = sampler_new(&p, 5);
    check_distribution(s, l, 5, want3, 200000);
    sampler_free(s);
}
END_TEST

START_TEST(min_p_drops_the_unlikely)
{
    double probs[6] = {0.05, 0.4, 0.2, 0.11, 0.09, 0.15};
    float l[6];
    logits_from_probs(probs, 6, l);
    sampler_params p = plain(1.0f);
    p.min_p = 0.25f; /* keep p >= 0.1: 0.4, 0.2, 0.11, 0.15 */
    double z = 0.4 + 0.2 + 0.11 + 0.15;
    double want[6] = {0, 0.4 / z, 0.2 / z, 0.11 / z, 0, 0.15 / z};
    sampler *s = sampler_new(&p, 6);
    check_distribution(s, l, 6, want, 200000);
    sampler_free(s);
    /* the same through the top-k path, and combined with top-p */
    p.top_k = 5;
    p.top_p = 0.7f; /* within top-5 (z5 = 0.95): 0.421 + 0.211 + 0.158 = 0.789 >= 0.7 */
    double z2 = 0.4 + 0.2 + 0.15;
    double want2[6] = {0, 0.4 / z2, 0.2 / z2, 0, 0, 0.15 / z2};
    s = sampler_new(&p, 6);
    check_distribution(s, l, 6, want2, 200000);
    sampler_free(s);
}
END_TEST

static int float_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

START_TEST(large_vocab_top_k_is_the_true_top_k)
{
    enum { NV = 151936, K = 40 };
    float *l = malloc(sizeof *l * NV);
    srand(11);
    for (int i = 0; i < NV; i++)
        l[i] = (float)rand() / RAND_MAX * 20;
    /* the k-th largest value, from a full sort */
    float *sorted = malloc(sizeof *sorted * NV);
    memcpy(sorted, l, sizeof *sorted * NV);
    qsort(sorted, NV, sizeof *sorted, float_desc);
    float kth = sorted[K - 1];
    sampler_params p = plain(1000.0f); /* nearly uniform over the kept set */
    p.top_k = K;
    sampler *s = sampler_new(&p, NV);
    uint32_t seen[NV / 32 + 1];
    memset(seen, 0, sizeof seen);
    int distinct = 0;
    for (int d = 0; d < 2000; d++) {
        int32_t t = sampler_sample(s, l, NULL, 0);
        ck_assert_msg(l[t] >= kth, "token %d (%.4f) is below the %d-th largest %.4f", t, l[t], K, kth);
        if (!(seen[t / 32] & (1u << (t % 32)))) {
            seen[t / 32] |= 1u << (t % 32);
            distinct++;
        }
    }
    ck_assert_int_eq(distinct, K);
    sampler_free(s);
    free(sorted);
    free(l);
}
END_TEST

START_TEST(repeat_penalty_divides_positive_multiplies_negative)
{
    sampler_params p = plain(0);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 3;
    /* positive: 3 / 2 = 1.5 < 2 */
    float a[3] = {3.0f, 2.0f, -1.0f};
    int32_t h1[] = {0};
    sampler *s = sampler_new(&p, 3);
    ck_assert_int_eq(sampler_sample(s, a, h1, 1), 1);
    ck_assert_int_eq(sampler_sample(s, a, NULL, 0), 0);
    /* once per distinct token: three 0s still give 3 / 2 = 1.5 > 1.4 */
    float b[2] = {3.0f, 1.4f};
    int32_t h3[] = {0, 0, 0};
    sampler_free(s);
    s = sampler_new(&p, 2);
    ck_assert_int_eq(sampler_sample(s, b, h3, 3), 0);
    sampler_free(s);
    /* negative: -1 * 1.5 = -1.5 < -1.2 (dividing would raise it to -0.67) */
    p.repeat_penalty = 1.5f;
    float c[3] = {-1.0f, -1.2f, -5.0f};
    s = sampler_new(&p, 3);
    ck_assert_int_eq(sampler_sample(s, c, h1, 1), 1);
    /* only the last repeat_last_n tokens count: 0 is outside the window */
    int32_t h4[] = {0, 2, 2, 2};
    ck_assert_int_eq(sampler_sample(s, c, h4, 4), 0);
    /* the logits passed in are not modified */
    ck_assert(c[0] == -1.0f && c[1] == -1.2f);
    sampler_free(s);
    /* with sampling: the penalised distribution, exactly */
    double probs[3] = {0.5, 0.3, 0.2};
    float l[3];
    logits_from_probs(probs, 3, l);
    for (int i = 0; i < 3; i++)
        l[i] += 2.0f; /* all positive */
    p = plain(1.0f);
    p.repeat_penalty = 1.3f;
    p.repeat_last_n = 8;
    int32_t h[] = {0, 0};
    s = sampler_new(&p, 3);
    double w[3], z = 0;
    for (int i = 0; i < 3; i++)
        z += w[i] = exp(i == 0 ? l[i] / 1.3 : l[i]);
    for (int i = 0; i < 3; i++)
        w[i] /= z;
    int cnt[3] = {0};
    const int N = 200000;
    for (int d = 0; d < N; d++)
        cnt[sampler_sample(s, l, h, 2)]++;
    for (int i = 0; i < 3; i++)
        ck_assert_msg(fabs((double)cnt[i] / N - w[i]) < 5 * sqrt(w[i] * (1 - w[i]) / N),
                      "token %d: %.4f vs %.4f", i, (double)cnt[i] / N, w[i]);
    sampler_free(s);
}
END_TEST

START_TEST(family_defaults)
{
    sampler_params p;
    sampler_defaults("qwen3moe", "", &p);
    ck_assert(p.temp == 1.0f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.01f);
    sampler_defaults("gemma3", "Gemma 3", &p);
    ck_assert(p.top_k == 64 && p.min_p == 0.0f);
    sampler_defaults("gpt-oss", "", &p);
    ck_assert(p.top_k == 100 && p.top_p == 1.0f);
    sampler_defaults("llama", "TinyLlama", &p);
    ck_assert(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f);
    ck_assert(p.repeat_penalty == 1.0f);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, greedy_is_argmax_lowest_id_on_ties);
    tcase_add_test(tc, same_seed_same_tokens);
    tcase_add_test(tc, temperature_one_follows_softmax);
    tcase_add_test(tc, temperature_sharpens);
    tcase_add_test(tc, top_k_restricts_and_renormalises);
    tcase_add_test(tc, top_p_keeps_the_smallest_nucleus);
    tcase_add_test(tc, min_p_drops_the_unlikely);
    tcase_add_test(tc, large_vocab_top_k_is_the_true_top_k);
    tcase_add_test(tc, repeat_penalty_divides_positive_multiplies_negative);
    tcase_add_test(tc, family_defaults);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
