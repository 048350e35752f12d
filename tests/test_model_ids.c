/* test_model_ids.c — model_forward_ids: the greedy choices of a forward call are the
 * argmax (lowest id on ties) of the logits model_forward returns for the same batch,
 * for every position asked for, for the last one by default, across micro-batches. */
#include "testutil.h"

#include "kv.h"
#include "model.h"
#include "quant.h"
#include "sampler.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void check_model(const char *rel, int n_ubatch)
{
    char path[1024];
    test_shared_path(rel, path, sizeof path);
    model_opts o = {.n_threads = 2, .n_threads_batch = 2, .n_ubatch = n_ubatch};
    llmfs_error err = {0};
    model *m = model_load(path, &o, &err);
    ck_assert_msg(m, "%s: %s", path, err.msg);
    const int V = m->hp.n_vocab, n = 13;
    int32_t tok[13], pos[13], seq[13], ids[13];
    int8_t want[13];
    for (int i = 0; i < n; i++) {
        tok[i] = (i * 37 + 5) % V;
        pos[i] = i;
        seq[i] = 0;
        want[i] = i % 3 != 1; /* some positions only */
    }
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    kv_cache *kv = kv_cache_alloc(m, 64, 1, T_F16, T_F16, &err);
    ck_assert_msg(kv, "%s", err.msg);
    fwd_batch b = {n, tok, pos, seq, want};
    ck_assert_int_eq(model_forward(m, kv, &b, lg, false, &err), 0);
    kv_seq_keep(kv, 0, 0);
    memset(ids, 0xff, sizeof ids);
    ck_assert_int_eq(model_forward_ids(m, kv, &b, ids, false, &err), 0);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (want[i]) {
            ck_assert_msg(ids[k] == sampler_argmax(lg + (size_t)k * V, V), "%s: position %d: id %d, argmax %d", rel, i,
                          ids[k], sampler_argmax(lg + (size_t)k * V, V));
            k++;
        }
    ck_assert_int_eq(ids[k], -1); /* nothing written past the positions asked for */

    /* no flags: the last position only */
    kv_seq_keep(kv, 0, 0);
    fwd_batch last = {n, tok, pos, seq, NULL};
    ck_assert_int_eq(model_forward(m, kv, &last, lg, false, &err), 0);
    kv_seq_keep(kv, 0, 0);
    memset(ids, 0xff, sizeof ids);
    ck_assert_int_eq(model_forward_ids(m, kv, &last, ids, false, &err), 0);
    ck_assert_int_eq(ids[0], sampler_argmax(lg, V));
    ck_assert_int_eq(ids[1], -1);
    ck_assert_int_eq(model_forward_ids(m, kv, &last, NULL, false, &err), -EINVAL);
    free(lg);
    kv_cache_free(kv);
    model_free(m);
}

START_TEST(ids_are_argmax)
{
    check_model("models/stories260K.gguf", 512);
    check_model("models/qwen2-tiny-q8_0.gguf", 4); /* several micro-batches */
    check_model("models/qwen3moe-tiny-q8_0.gguf", 512);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("model_ids");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, ids_are_argmax);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("test_model_ids");
    return test_run_suite(make_suite());
}
