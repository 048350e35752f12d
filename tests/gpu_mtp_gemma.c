/* gpu_mtp_gemma.c — Gemma 4's MTP drafter with the target and the drafter on the GPU (a
 * real one, or the simulated device of tests/cudasim): the teacher-forced rows of each
 * gemma4 mtp-* fixture case against llama.cpp and against the same rows on the CPU, and
 * the server flow (tests/mtp_gemma_check.c) with full caches and with rings. A drafter
 * on the CPU beside a target whose cache is on the GPU is refused. Exits 77 (skip)
 * without a usable GPU. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>

#ifdef LLMFS_HAVE_CUDA
#include "backend.h"
#include "fixture.h"
#include "kv.h"
#include "quant.h"
#include "mtp_gemma_check.h"

#include <errno.h>
#include <string.h>

static mtp_case cases[16];
static int n_cases;

/* the GPU's rows against llama.cpp (both attention paths), then against the CPU's: the devices round apart
 * (0.025 on the simulated device), within the reference's tolerance of each other */
START_TEST(rows_on_gpu)
{
    const mtp_case *k = &cases[_i];
    float *gpu, *cpu;
    int n_gpu, n_cpu;
    mtp_gemma_check_rows(k, 99, T_F16, false, &gpu, &n_gpu);
    mtp_gemma_check_rows(k, 99, T_F16, true, NULL, NULL);
    mtp_gemma_check_rows(k, 0, T_F16, false, &cpu, &n_cpu);
    ck_assert_int_eq(n_gpu, n_cpu);
    char p[1700];
    snprintf(p, sizeof p, "%s/mtp_logits.f32", k->dir);
    size_t bytes;
    float *ref = (float *)test_read_file(p, &bytes);
    ck_assert(ref && bytes % ((size_t)n_gpu * sizeof(float)) == 0);
    const int V = (int)(bytes / sizeof(float) / (size_t)n_gpu);
    double worst = 0;
    for (int r = 0; r < n_gpu; r++) {
        double e = logits_rel_rms(gpu + (size_t)r * V, cpu + (size_t)r * V, V);
        worst = e > worst ? e : worst;
    }
    printf("%-28s GPU rows against the CPU's: max rel diff %.4f\n", k->name, worst);
    ck_assert_msg(worst < 8e-2, "%s: GPU and CPU rows differ by %.4f", k->name, worst);
    free(gpu), free(cpu), free(ref);
}
END_TEST

/* _i: case * 2 + rings */
START_TEST(flow_on_gpu)
{
    mtp_gemma_check_flow(&cases[_i / 2], 99, _i % 2);
}
END_TEST

/* the drafter's attention runs where the target's cache is: a drafter on the CPU beside
 * a target on the GPU is refused at the first row, with the reason */
START_TEST(placement_mismatch)
{
    const mtp_case *k = &cases[0];
    model *t = mtp_gemma_load_target(k->target, 99);
    gemma4_assistant *a = mtp_gemma_load_drafter(k->drafter, t, 0);
    llmfs_error err = {0};
    kv_cache *kv = kv_cache_alloc(t, 64, 1, T_F16, T_F16, &err);
    ck_assert_msg(kv, "%s", err.msg);
    const int32_t tok[2] = {2, 3}, pos[2] = {0, 1}, seq[2] = {0, 0};
    float h[2 * 512];
    ck_assert_int_le(t->hp.n_embd, 512);
    fwd_batch b = {2, tok, pos, seq, NULL};
    ck_assert_int_eq(model_forward_hidden(t, kv, &b, NULL, h, false, &err), 0);
    int32_t id;
    ck_assert_int_eq(gemma4_assistant_step(a, t, kv, 0, 3, 2, h + t->hp.n_embd, false, NULL, &id, NULL, &err),
                     -EINVAL);
    ck_assert_msg(strstr(err.msg, "CUDA"), "%s", err.msg);
    printf("drafter on the CPU, target's cache on the GPU: %s\n", err.msg);
    kv_cache_free(kv);
    gemma4_assistant_free(a);
    model_free(t);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("gpu_mtp_gemma");
    TCase *c = tcase_create("fixtures");
    tcase_set_timeout(c, 900);
    tcase_add_loop_test(c, rows_on_gpu, 0, n_cases);
    tcase_add_loop_test(c, flow_on_gpu, 0, 2 * n_cases);
    tcase_add_test(c, placement_mismatch);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    char err[256] = "";
    backend *probe = backend_gpu_new(0, err, sizeof err);
    if (!probe) {
        /* a device that is there but unusable is a failure, not a skip */
        if (backend_gpu_count() > 0) {
            fprintf(stderr, "\n*** FAILED gpu_mtp_gemma: %d CUDA device(s) present, but: %s ***\n\n",
                    backend_gpu_count(), err);
            return 1;
        }
        fprintf(stderr, "\n*** SKIPPED gpu_mtp_gemma: no usable GPU (%s) ***\n\n", err);
        return test_skip_code();
    }
    backend_free(probe);
    if (!test_shared_dir())
        test_skip_no_shared("gpu_mtp_gemma");
    n_cases = mtp_gemma_cases(cases, 16);
    if (n_cases == 0) {
        fprintf(stderr, "\n*** SKIPPED gpu_mtp_gemma: no gemma4 mtp-* fixture case names a drafter ***\n\n");
        return test_skip_code();
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* CUDA state does not survive fork: run the tests in this process */
    setenv("CK_FORK", "no", 1);
    return test_run_suite(make_suite());
}

#else

int main(void)
{
    fprintf(stderr, "\n*** SKIPPED gpu_mtp_gemma: llmfs was built without CUDA ***\n\n");
    return test_skip_code();
}
#endif
