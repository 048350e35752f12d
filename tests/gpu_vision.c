/* gpu_vision.c — images with the text model on a GPU (a real one, or the simulated
 * device of tests/cudasim), against llama.cpp's vision fixtures: every vision-* case's
 * stored logits and greedy continuation with all text layers on the device, the image
 * batch attending non-causally there. $LLMFS_FIXTURES (an extended regular expression
 * over "<model>/<case>") keeps only the matching cases. Exits 77 (skip) without a
 * usable GPU or without the test assets. */
#include "testutil.h"

#include "backend.h"
#include "clip.h"
#include "vision_cases.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* (1) the text model on the GPU, fed the CPU tower's image rows */
START_TEST(text_logits_gpu)
{
    const vcase *c = &vcases[_i];
    clip_model *cm = vcase_clip(c->mmproj, NULL);
    float *embd = vcase_encode(c, cm);
    clip_free(cm);
    vcase_check_text(c, embd, 99);
    free(embd);
}
END_TEST

/* Keeps the cases $LLMFS_FIXTURES selects. */
static void select_cases(void)
{
    const char *pat = getenv("LLMFS_FIXTURES");
    if (!pat || !*pat)
        return;
    regex_t re;
    if (regcomp(&re, pat, REG_EXTENDED | REG_NOSUB)) {
        fprintf(stderr, "LLMFS_FIXTURES: not an extended regular expression: %s\n", pat);
        exit(1);
    }
    int k = 0;
    for (int i = 0; i < n_vcases; i++)
        if (!regexec(&re, vcases[i].name, 0, NULL, 0))
            vcases[k++] = vcases[i];
    regfree(&re);
    fprintf(stderr, "*** gpu_vision: %d of %d cases kept by LLMFS_FIXTURES=%s\n", k, n_vcases, pat);
    n_vcases = k;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("gpu_vision");
    char err[256] = "";
    backend *probe = backend_gpu_new(0, err, sizeof err);
    if (!probe) {
        /* a device that is there but unusable is a failure, not a skip */
        if (backend_gpu_count() > 0) {
            fprintf(stderr, "\n*** FAILED gpu_vision: %d CUDA device(s) present, but: %s ***\n\n",
                    backend_gpu_count(), err);
            return 1;
        }
        fprintf(stderr, "\n*** SKIPPED gpu_vision: no usable GPU (%s) ***\n\n", err);
        return test_skip_code();
    }
    backend_free(probe);
    vcase_find();
    select_cases();
    if (n_vcases == 0) {
        fprintf(stderr, "\n*** SKIPPED gpu_vision: no vision fixture cases ***\n\n");
        return test_skip_code();
    }
    fprintf(stderr, "*** gpu_vision: %d fixture cases\n", n_vcases);
    /* CUDA state does not survive fork: run the tests in this process */
    setenv("CK_FORK", "no", 1);
    Suite *s = suite_create("gpu_vision");
    TCase *tc = tcase_create("gpu_vision");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, text_logits_gpu, 0, n_vcases);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
